"""Saved files are never half-written; damaged or foreign ones get DataError."""

import io
import json
import os
import pathlib
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastbp
from fastbp import storage


def small_net(seed=0, dtype="float32"):
    return fastbp.Network([4, 3, 2], dtype=dtype, seed=seed)


def same_weights(a, b):
    return all(np.array_equal(W0, W1) and np.array_equal(b0, b1) and W0.dtype == W1.dtype
               for (W0, b0), (W1, b1) in zip(a.layers, b.layers))


def temp_files(folder):
    return sorted(p.name for p in pathlib.Path(folder).iterdir()
                  if p.name.startswith(storage.TEMP_PREFIX))


# --- interrupted saves ---------------------------------------------------------------

def savez_then_fail(error):
    """np.savez that writes a good part of the file, then fails like a crash."""
    real = np.savez

    def broken(file, **arrays):
        buffer = io.BytesIO()
        real(buffer, **arrays)
        file.write(buffer.getvalue()[: buffer.tell() // 2])
        raise error
    return broken


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()],
                         ids=["disk-full", "ctrl-c"])
def test_a_save_interrupted_mid_write_keeps_the_previous_file(tmp_path, monkeypatch, error):
    path = tmp_path / "model.npz"
    old = small_net(seed=1)
    old.save(path)
    before = path.read_bytes()
    monkeypatch.setattr(storage.np, "savez", savez_then_fail(error))
    with pytest.raises(type(error)):
        small_net(seed=2).save(path)
    assert path.read_bytes() == before
    assert same_weights(fastbp.load(path), old)
    assert temp_files(tmp_path) == []


def test_a_failed_rename_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    old = small_net(seed=1)
    old.save(path)

    def no_replace(src, dst):
        assert os.path.getsize(src) > 0  # the new file was fully written first
        raise PermissionError("rename refused")
    monkeypatch.setattr(storage.os, "replace", no_replace)
    with pytest.raises(PermissionError):
        small_net(seed=2).save(path)
    assert same_weights(fastbp.load(path), old)
    assert temp_files(tmp_path) == []


def test_an_interrupted_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 2, 40)
    path = tmp_path / "ckpt.npz"
    net = small_net()
    fastbp.train(net, X, y, epochs=1, batch_size=8, checkpoint=path)
    before = path.read_bytes()
    monkeypatch.setattr(storage.np, "savez", savez_then_fail(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        fastbp.train(net, X, y, epochs=3, batch_size=8, checkpoint=path, resume=True)
    assert path.read_bytes() == before
    assert temp_files(tmp_path) == []


def test_a_first_save_that_fails_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(storage.np, "savez", savez_then_fail(OSError("disk full")))
    with pytest.raises(OSError):
        small_net().save(tmp_path / "model.npz")
    assert list(tmp_path.iterdir()) == []


def test_saved_files_get_the_usual_permissions(tmp_path):
    """Not mkstemp's 0600: what open() would give under the current umask."""
    umask = os.umask(0o022)
    try:
        small_net().save(tmp_path / "model.npz")
    finally:
        os.umask(umask)
    assert (tmp_path / "model.npz").stat().st_mode & 0o777 == 0o644


def test_saving_into_a_missing_folder_says_so(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        small_net().save(tmp_path / "no" / "model.npz")


@pytest.mark.parametrize("path,message", [
    (".", "is a folder"), ("", "empty name"), (3, "must be a path"),
    (None, "must be a path")])
def test_saving_to_what_is_not_a_file_name_says_so(tmp_path, monkeypatch, path, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        small_net().save(path)
    assert os.listdir(tmp_path) == []  # no temporary file left behind


def test_bytes_paths_save_load_and_checkpoint(tmp_path):
    net = small_net()
    path = os.fsencode(tmp_path / "model.npz")
    net.save(path)
    assert same_weights(fastbp.load(path), net)
    X = np.random.default_rng(0).normal(size=(8, 4))
    ckpt = os.fsencode(tmp_path / "ckpt.npz")
    fastbp.train(net, X, np.arange(8) % net.sizes[-1], epochs=1, batch_size=4, checkpoint=ckpt)
    assert os.path.isfile(tmp_path / "ckpt.npz")


def test_a_folder_as_checkpoint_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        fastbp.train(small_net(), np.ones((4, 4)), np.zeros(4, int), checkpoint=tmp_path)


def test_loading_what_is_not_a_path_says_so():
    with pytest.raises(ValueError, match="path must be a path"):
        fastbp.load(None)


# --- loading damaged or foreign files ------------------------------------------------

def saved(tmp_path, name="model.npz", net=None):
    path = tmp_path / name
    (net or small_net()).save(path)
    return path


def rewrite(path, change_arrays=None, change_meta=None):
    """Re-save ``path`` with altered arrays or metadata, as a foreign tool might."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop(storage.META_KEY)))
    if change_arrays:
        change_arrays(arrays)
    if change_meta:
        change_meta(meta)
    np.savez(path, **arrays, **{storage.META_KEY: np.array(json.dumps(meta))})
    return path


def set_key(key, value):
    return lambda d: d.__setitem__(key, value)


BAD_FILES = [
    ("version", lambda p: rewrite(p, change_meta=set_key("version", 2)), "version 2"),
    ("no-version", lambda p: rewrite(p, change_meta=lambda m: m.pop("version")), "version None"),
    ("format", lambda p: rewrite(p, change_meta=set_key("format", "other.thing")),
     "'other.thing'"),
    ("sizes", lambda p: rewrite(p, change_meta=set_key("sizes", [4, 5, 2])),
     "W0 should be float32 \\(5, 4\\); found float32 \\(3, 4\\)"),
    ("bad-sizes", lambda p: rewrite(p, change_meta=set_key("sizes", "abc")), "sizes"),
    ("huge-sizes", lambda p: rewrite(p, change_meta=set_key("sizes", [10**6, 10**6])),
     "W0 should be float32 \\(1000000, 1000000\\); found float32 \\(3, 4\\)"),
    ("activation", lambda p: rewrite(p, change_meta=set_key("activation", "gelu")),
     "activation.*'gelu'"),
    ("dtype-meta", lambda p: rewrite(p, change_meta=set_key("dtype", "float16")),
     "dtype.*'float16'"),
    ("dtype-array", lambda p: rewrite(p, change_arrays=lambda a: a.update(
        W1=a["W1"].astype(np.float64))), "W1 should be float32.*found float64"),
    ("shape", lambda p: rewrite(p, change_arrays=lambda a: a.update(W0=a["W0"].T.copy())),
     "W0 should be float32 \\(3, 4\\); found float32 \\(4, 3\\)"),
    ("missing-array", lambda p: rewrite(p, change_arrays=lambda a: a.pop("b1")),
     "b1 should be.*found None"),
    ("nan", lambda p: rewrite(p, change_arrays=lambda a: a["b0"].__setitem__(0, np.nan)),
     "b0 contains non-finite"),
    ("meta-not-json", lambda p: rewrite_meta_raw(p, np.array("{not json")), "not valid JSON"),
    ("meta-not-text", lambda p: rewrite_meta_raw(p, np.arange(3)), "no metadata"),
    ("meta-list", lambda p: rewrite_meta_raw(p, np.array("[1, 2]")), "found None"),
    ("no-meta", lambda p: np.savez(p, W0=np.zeros((3, 4))), "no metadata"),
    ("empty", lambda p: p.write_bytes(b""), "not a readable fastbp file"),
    ("text", lambda p: p.write_text("hello\n"), "not a readable fastbp file"),
    ("npy", lambda p: p.write_bytes(npy_bytes(np.zeros(3))), "not a readable fastbp file"),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
     "not a readable fastbp file"),
    ("truncated-end", lambda p: p.write_bytes(p.read_bytes()[:-1]), "not a readable"),
    ("zip-member", lambda p: add_member(p, "readme.txt", b"hi"), "unexpected member"),
    ("structured", lambda p: rewrite(p, change_arrays=lambda a: a.update(
        W0=np.zeros(3, dtype=[("a", "f4"), ("b", "i4")]))), "dtype"),
    ("compressed-corrupt", lambda p: corrupt_compressed(p), "not a readable fastbp file"),
]


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def rewrite_meta_raw(path, meta_array):
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k != storage.META_KEY}
    np.savez(path, **arrays, **{storage.META_KEY: meta_array})


def add_member(path, name, data):
    with zipfile.ZipFile(path, "a") as z:
        z.writestr(name, data)


def corrupt_compressed(path):
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    np.savez_compressed(path, **arrays)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("W0.npy")
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + info.compress_size // 2] ^= 0xFF  # inside W0's deflate stream
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage, message", [c[1:] for c in BAD_FILES],
                         ids=[c[0] for c in BAD_FILES])
def test_a_damaged_model_file_is_a_data_error_naming_it(tmp_path, damage, message):
    path = saved(tmp_path)
    damage(path)
    with pytest.raises(fastbp.DataError, match=message) as info:
        fastbp.load(path)
    assert str(path) in str(info.value)


def test_a_pickled_object_is_refused_without_unpickling(tmp_path):
    """An object array would run code on load; it must never be unpickled."""
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    path = saved(tmp_path)
    rewrite(path, change_arrays=lambda a: a.update(W0=np.array([Evil()], dtype=object)))
    with pytest.raises(fastbp.DataError, match="pickled objects are refused") as info:
        fastbp.load(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    assert np.load(path, allow_pickle=True)["W0"] is not None and marker.exists()  # it was live


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_an_array_header_claiming_terabytes_is_refused_before_allocating(tmp_path):
    """A .npy member whose header claims (10^6, 10^6) float64 but stores 16 bytes."""
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    member = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(16)
    path = saved(tmp_path)
    add_member(path, "W0.npy", member)  # a second W0 member, read after the first
    with pytest.raises(fastbp.DataError, match="claims shape \\(1000000, 1000000\\)"):
        fastbp.load(path)


def test_a_missing_file_is_file_not_found_and_a_folder_is_a_data_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        fastbp.load(tmp_path / "absent.npz")
    with pytest.raises(fastbp.DataError, match="not a file"):
        fastbp.load(tmp_path)


def test_a_fortran_order_array_in_a_file_loads_as_c_contiguous(tmp_path):
    net = small_net(dtype="float64")
    path = saved(tmp_path, net=net)
    rewrite(path, change_arrays=lambda a: a.update(W0=np.asfortranarray(a["W0"])))
    back = fastbp.load(path)
    assert same_weights(back, net) and back.layers[0][0].flags.c_contiguous
    back.forward(np.ones((2, 4)))


def test_a_checkpoint_loads_as_its_network(tmp_path):
    rng = np.random.default_rng(0)
    net = small_net()
    fastbp.train(net, rng.normal(size=(20, 4)), rng.integers(0, 2, 20), epochs=1,
                 checkpoint=tmp_path / "c.npz")
    assert same_weights(fastbp.load(tmp_path / "c.npz"), net)


# --- fuzzing: whatever the bytes, DataError or a valid network ---------------------

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,  # forward may compile
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
EDITS = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert"]),
                           st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4)


@FUZZ
@given(edits=EDITS, compressed=st.booleans())
def test_fuzz_mutated_model_files(tmp_path, edits, compressed):
    path = tmp_path / "fuzz.npz"
    small_net().save(path)
    if compressed:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        np.savez_compressed(path, **arrays)
    data = bytearray(path.read_bytes())
    for op, pos, value in edits:
        pos %= max(len(data), 1)
        if op == "flip":
            if data:  # an earlier cut may have emptied the file
                data[pos] ^= value
        elif op == "cut":
            del data[pos:]
        else:
            data[pos:pos] = bytes([value])
    path.write_bytes(bytes(data))
    try:
        net = fastbp.load(path)
    except fastbp.DataError as exc:
        assert str(path) in str(exc)
    else:
        net.forward(np.ones((1, net.n_inputs)))  # whatever loaded is usable


# --- what a save replaces --------------------------------------------------------------

def test_a_save_through_a_symbolic_link_writes_its_target(tmp_path):
    """The link stays a link (``latest.npz -> run-7.npz``), its target gets the file."""
    target, link = tmp_path / "run-7.npz", tmp_path / "latest.npz"
    small_net(seed=1).save(target)
    link.symlink_to(target.name)
    net = small_net(seed=2)
    net.save(link)
    assert link.is_symlink() and os.readlink(link) == target.name
    assert same_weights(fastbp.load(target), net)
    assert temp_files(tmp_path) == []


def test_a_save_keeps_the_replaced_files_permissions(tmp_path):
    """A private file stays private (the rename would carry the new file's bits)."""
    path = tmp_path / "model.npz"
    small_net(seed=1).save(path)
    path.chmod(0o600)
    umask = os.umask(0o022)
    try:
        small_net(seed=2).save(path)
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_save_onto_what_is_not_a_regular_file_is_refused(tmp_path):
    """Renaming onto a FIFO (or a device such as /dev/null) would destroy it."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "link.npz"
    link.symlink_to(fifo.name)
    for path in (fifo, link):
        with pytest.raises(ValueError, match="not a regular file"):
            small_net().save(path)
        with pytest.raises(ValueError, match="checkpoint: .*not a regular file"):
            fastbp.train(small_net(), np.ones((4, 4)), np.zeros(4, int), checkpoint=path)
    assert fifo.is_fifo() and sorted(os.listdir(tmp_path)) == ["link.npz", "pipe"]


@pytest.mark.parametrize("fails", ["temporary-file", "rename"])
def test_a_failed_save_names_the_users_path_not_the_temporary_file(tmp_path, monkeypatch,
                                                                   fails):
    path = tmp_path / "model.npz"

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".fastbp-1-2.tmp"))
    monkeypatch.setattr(storage, "new_temporary_file" if fails == "temporary-file"
                        else "_place", refuse)
    with pytest.raises(PermissionError, match=f"cannot write {path}: Permission denied") as info:
        small_net().save(path)
    assert ".fastbp-" not in str(info.value)
    assert temp_files(tmp_path) == [] and not path.exists()


def test_a_save_through_a_link_into_a_missing_folder_is_refused_before_training(tmp_path):
    """The check looks where the save will write: the link's target's folder."""
    link = tmp_path / "latest.npz"
    link.symlink_to(tmp_path / "gone" / "run.npz")
    with pytest.raises(ValueError, match="checkpoint: .*gone' does not exist"):
        fastbp.train(small_net(), np.ones((4, 4)), np.zeros(4, int), checkpoint=link)
    with pytest.raises(ValueError, match="gone' does not exist"):
        small_net().save(link)
    assert sorted(os.listdir(tmp_path)) == ["latest.npz"]


def test_a_private_file_is_never_readable_by_others_while_it_is_rewritten(tmp_path,
                                                                         monkeypatch):
    path = tmp_path / "model.npz"
    small_net(seed=1).save(path)
    path.chmod(0o600)
    real, modes = np.savez, []

    def spy(file, **arrays):
        modes.append(os.fstat(file.fileno()).st_mode & 0o777)
        real(file, **arrays)
    monkeypatch.setattr(storage.np, "savez", spy)
    umask = os.umask(0o022)
    try:
        small_net(seed=2).save(path)
    finally:
        os.umask(umask)
    assert modes == [0o600]


def test_a_file_descriptor_s_link_is_refused(tmp_path):
    """/dev/stdout and the like name whatever a descriptor is open on (a
    log redirected to a file): the rename would replace that file."""
    with open(tmp_path / "log.txt", "w") as log:
        log.write("keep me\n")
        log.flush()
        for path in (f"/proc/self/fd/{log.fileno()}", f"/dev/fd/{log.fileno()}"):
            with pytest.raises(ValueError, match="file descriptor's link"):
                small_net().save(path)
        link = tmp_path / "out.npz"
        link.symlink_to(f"/proc/{os.getpid()}/fd/{log.fileno()}")
        with pytest.raises(ValueError, match="file descriptor's link"):
            small_net().save(link)
    assert (tmp_path / "log.txt").read_text() == "keep me\n"


def test_bytes_and_str_paths_save_the_same(tmp_path):
    arrays = {"a": np.arange(3)}
    storage.atomic_save_npz(os.fsencode(tmp_path / "b.npz"), arrays, {"format": "x"})
    storage.atomic_save_npz(str(tmp_path / "s.npz"), arrays, {"format": "x"})
    assert storage.load_npz(tmp_path / "b.npz", ("x",))[1] == {"format": "x"}
    assert (tmp_path / "b.npz").read_bytes() == (tmp_path / "s.npz").read_bytes()


def test_metadata_nested_too_deep_for_json_is_a_data_error(tmp_path):
    path = tmp_path / "deep.npz"
    np.savez(path, **{storage.META_KEY: np.array("[" * 100000)})
    with pytest.raises(fastbp.DataError, match=f"{path}: metadata is not valid JSON"):
        fastbp.load(path)


# --- a checkpoint path shared by two runs -----------------------------------------------

def two_class_data(n=40):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 4)), rng.integers(0, 2, n)


def foreign_checkpoint(path):
    """Another run's checkpoint at ``path``: its bytes, to check they survive."""
    X, y = two_class_data(16)
    other = path.parent / "elsewhere.npz"
    fastbp.train(small_net(seed=9), X, y, epochs=1, batch_size=4, checkpoint=other)
    os.replace(other, path)
    return path.read_bytes()


@pytest.mark.parametrize("at_epoch, message", [
    (1, "replaced, changed or removed since this run wrote it"),
    (0, "exists now .written by another run.*not overwritten"),
], ids=["after-its-first-save", "before-its-first-save"])
def test_a_checkpoint_another_run_wrote_is_left_alone(tmp_path, at_epoch, message):
    """Run B writes the path run A checkpoints to, after A's first save or
    before it (A started when the path was free): A stops at its next save
    instead of destroying B's checkpoint."""
    X, y = two_class_data()
    path = tmp_path / "ckpt.npz"
    theirs = []

    def other_run_writes(epoch, step, steps, history):
        if epoch == at_epoch and not theirs:
            theirs.append(foreign_checkpoint(path))
    with pytest.raises(ValueError, match=message):
        fastbp.train(small_net(), X, y, epochs=3, batch_size=8, checkpoint=path,
                     progress=other_run_writes)
    assert path.read_bytes() == theirs[0]
    assert temp_files(tmp_path) == []


def test_a_checkpoint_replaced_right_after_this_run_saved_it_is_left_alone(tmp_path,
                                                                        monkeypatch):
    """The run's own file is known by what it wrote (fstat before the
    rename), not by a look at the path afterwards, which could find the
    other run's file already there."""
    X, y = two_class_data()
    path = tmp_path / "ckpt.npz"
    real, theirs, started = storage._sync_folder, [], []

    def other_run_writes_just_after(folder):
        real(folder)
        if not started:  # once (the other run's own save passes here too)
            started.append(True)
            theirs.append(foreign_checkpoint(path))
    monkeypatch.setattr(storage, "_sync_folder", other_run_writes_just_after)
    with pytest.raises(ValueError, match="replaced, changed or removed"):
        fastbp.train(small_net(), X, y, epochs=3, batch_size=8, checkpoint=path)
    assert path.read_bytes() == theirs[0]


def test_a_resumed_run_replaces_its_own_checkpoint(tmp_path):
    X, y = two_class_data()
    path = tmp_path / "ckpt.npz"
    fastbp.train(small_net(), X, y, epochs=1, batch_size=8, checkpoint=path)
    fastbp.train(small_net(), X, y, epochs=3, batch_size=8, checkpoint=path, resume=True)
    assert fastbp.storage.load_npz(path, (storage.CHECKPOINT_FORMAT,))[1]["epoch"] == 3


def test_a_checkpoint_that_cannot_be_written_says_what_is_left(tmp_path, monkeypatch):
    X, y = two_class_data()
    path = tmp_path / "ckpt.npz"
    real, saves = np.savez, []

    def full_disk_from_the_second_save(file, **arrays):
        saves.append(1)
        if len(saves) >= 2:
            raise OSError(28, "No space left on device")
        real(file, **arrays)
    monkeypatch.setattr(storage.np, "savez", full_disk_from_the_second_save)
    with pytest.raises(OSError, match=f"cannot write {path}: No space left on device; the "
                                      "checkpoint saved after epoch 1 is unchanged"):
        fastbp.train(small_net(), X, y, epochs=3, batch_size=8, checkpoint=path)
    assert fastbp.storage.load_npz(path, (storage.CHECKPOINT_FORMAT,))[1]["epoch"] == 1
    saves.clear()
    other = tmp_path / "other.npz"
    monkeypatch.setattr(storage.np, "savez", lambda *a, **k: (_ for _ in ()).throw(
        OSError(28, "No space left on device")))
    with pytest.raises(OSError, match="no checkpoint was saved yet"):
        fastbp.train(small_net(), X, y, epochs=1, batch_size=8, checkpoint=other)
    assert not other.exists() and temp_files(tmp_path) == []
