"""Damaged IDX files and MNIST folders: always fastbp.DataError naming the file."""

import gzip
import os
import struct
import subprocess
import sys
import textwrap
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastbp
from fastbp.datasets import FILES, load_folder, read_idx


def idx_bytes(array, kind=0x08):
    """An IDX file holding ``array`` (uint8)."""
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, kind, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write(path, data, compress=False):
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


IMAGES = np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3)
LABELS = np.array([0, 9, 3, 3, 1], np.uint8)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_a_good_file_reads_back(tmp_path, compress):
    path = write(tmp_path / "f", idx_bytes(IMAGES), compress)
    assert np.array_equal(read_idx(path), IMAGES)
    assert np.array_equal(read_idx(write(tmp_path / "g", idx_bytes(LABELS), compress)), LABELS)


def header(kind, dims):
    return bytes([0, 0, 0x08, kind]) + struct.pack(f">{len(dims)}I", *dims)


BAD_IDX = [
    ("empty", b"", "truncated IDX header"),
    ("short-magic", b"\x00\x00\x08", "truncated IDX header"),
    ("magic-type", bytes([0, 0, 0x09, 1]) + struct.pack(">I", 2) + b"ab", "magic number 0x00000901"),
    ("magic-zero", bytes([1, 0, 0x08, 1]) + struct.pack(">I", 2) + b"ab", "magic number 0x01000801"),
    ("magic-ndim0", bytes([0, 0, 0x08, 0]), "magic number 0x00000800"),
    ("magic-ndim9", bytes([0, 0, 0x08, 9]), "magic number 0x00000809"),
    ("text", b"hello, world\n", "magic number"),
    ("short-dims", header(3, (5, 4))[:-2], "truncated IDX header"),
    ("truncated", idx_bytes(IMAGES)[:-7], "truncated.*53"),
    ("no-body", header(3, (5, 4, 3)), "truncated.*found 0"),
    ("too-long", idx_bytes(IMAGES) + b"\x00", "longer than its header says"),
    ("huge-claim", header(3, (2_000_000_000, 28, 28)) + b"\x00" * 100, "truncated"),
    ("max-claim", header(4, (2**32 - 1,) * 4) + b"\x00" * 10, "truncated"),
]


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("data, message", [c[1:] for c in BAD_IDX], ids=[c[0] for c in BAD_IDX])
def test_a_damaged_idx_file_is_a_data_error_naming_it(tmp_path, data, message, compress):
    path = write(tmp_path / "train-images-idx3-ubyte", data, compress)
    with pytest.raises(fastbp.DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def gzip_cases():
    good = gzip.compress(idx_bytes(IMAGES), mtime=0)
    bad_crc = bytearray(good)
    bad_crc[-8] ^= 0xFF  # the CRC-32 in the trailer
    bad_size = bytearray(good)
    bad_size[-4] ^= 0x01  # the length in the trailer
    bad_body = bytearray(good)
    bad_body[len(good) // 2] ^= 0x55
    rng = np.random.default_rng(0)
    return {
        "bad-crc": bytes(bad_crc),
        "bad-length": bytes(bad_size),
        "flipped-body": bytes(bad_body),
        "cut-trailer": good[:-3],
        "cut-stream": good[: len(good) // 2],
        "header-only": good[:10],
        "garbage-after-header": good[:10] + rng.integers(0, 256, 200, np.uint8).tobytes(),
        "garbage-member-after": good + b"\x1f\x8bjunk",
        "magic-only": b"\x1f\x8b",
    }


@pytest.mark.parametrize("name", list(gzip_cases()))
def test_a_corrupt_gzip_is_a_data_error_naming_it(tmp_path, name):
    path = write(tmp_path / "t10k-labels-idx1-ubyte.gz", gzip_cases()[name])
    with pytest.raises(fastbp.DataError) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_missing_or_unreadable_paths_are_data_errors(tmp_path):
    for path in (tmp_path / "absent", tmp_path):
        with pytest.raises(fastbp.DataError, match=str(path)):
            read_idx(path)


def test_a_data_dir_that_is_a_file_or_empty_says_so(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(fastbp.DataError, match="is a file, not a folder"):
        fastbp.datasets.mnist(tmp_path / "file")
    with pytest.raises(ValueError, match="data_dir must be a path; got an empty name"):
        fastbp.datasets.mnist("")


MEMORY_LIMITED = textwrap.dedent("""
    import resource, struct, sys, time
    import fastbp
    from fastbp.datasets import read_idx
    # Allow this process only ~200 MB more address space than it has now.
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize"))
    limit = vm * 1024 + 200 * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    started = time.perf_counter()
    for path in sys.argv[1:]:
        try:
            read_idx(path)
        except fastbp.DataError as exc:
            print("DataError", exc)
        else:
            print("no error")
    print("seconds", time.perf_counter() - started)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and RLIMIT_AS")
def test_a_header_claiming_billions_of_images_fails_at_once_without_allocating(tmp_path):
    """1.5 TB claimed (2e9 images) and 784 MB claimed (1e6 images, more than
    the 200 MB the process may still allocate): both fail fast, as DataError."""
    claims = [(2_000_000_000, 28, 28), (1_000_000, 28, 28)]
    paths = []
    for i, dims in enumerate(claims):
        data = header(3, dims) + b"\x07" * 5000
        paths.append(write(tmp_path / f"raw{i}", data))
        paths.append(write(tmp_path / f"gz{i}.gz", data, compress=True))
    out = subprocess.run([sys.executable, "-c", MEMORY_LIMITED, *map(str, paths)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(paths) + 1
    for path, line in zip(paths, lines):
        assert line.startswith("DataError") and str(path) in line and "truncated" in line
    assert float(lines[-1].split()[1]) < 1.0


def test_a_huge_claim_is_refused_fast_in_process(tmp_path):
    path = write(tmp_path / "big", header(3, (2_000_000_000, 28, 28)) + b"\x00" * 10**6)
    started = time.perf_counter()
    with pytest.raises(fastbp.DataError, match="1568000000000 bytes"):
        read_idx(path)
    assert time.perf_counter() - started < 0.5


# --- whole folders ------------------------------------------------------------------

def make_folder(folder, compress=True, **override):
    """Four tiny MNIST-format files; ``override`` replaces a file's bytes."""
    arrays = {"train_images": IMAGES, "train_labels": LABELS,
              "test_images": IMAGES[:3], "test_labels": LABELS[:3]}
    folder.mkdir(exist_ok=True)
    for key, stem in FILES.items():
        data = override.get(key, idx_bytes(arrays[key]) if key in arrays else None)
        name = stem + (".gz" if compress else "")
        write(folder / name, data, compress)
    return folder


def test_a_tiny_folder_loads(tmp_path):
    Xtr, ytr, Xte, yte = load_folder(make_folder(tmp_path / "d"))
    assert Xtr.shape == (5, 12) and Xtr.dtype == np.float32 and Xtr.max() <= 1
    assert ytr.tolist() == LABELS.tolist() and ytr.dtype == np.int64
    assert np.allclose(Xtr * 255, IMAGES.reshape(5, -1), rtol=0, atol=1e-4)
    assert Xte.shape == (3, 12) and yte.shape == (3,)


BAD_FOLDERS = [
    ("count-mismatch", {"train_labels": idx_bytes(LABELS[:4])},
     "train-images.*5 images.*train-labels.*4 labels"),
    ("label-range", {"test_labels": idx_bytes([0, 10, 2])},
     "t10k-labels.*label 10 at index 1.*0..9"),
    ("label-255", {"train_labels": idx_bytes([0, 1, 2, 3, 255])}, "train-labels.*255 at index 4"),
    ("labels-as-images", {"train_images": idx_bytes(LABELS)},
     "train-images.*3 dimensions.*found 1"),
    ("images-as-labels", {"test_labels": idx_bytes(IMAGES[:3])},
     "t10k-labels.*1 dimension.*found 3"),
    ("labels-claiming-4-dims", {"test_labels": b"\x00\x00\x08\x04" + idx_bytes(LABELS[:3])[4:]},
     r"t10k-labels.*expected 1 dimension \(n,\), found 4"),
    ("shape-mismatch", {"test_images": idx_bytes(np.zeros((3, 3, 4)))},
     r"t10k-images.*\(3, 4\).*\(4, 3\)"),
    ("no-images", {"train_images": idx_bytes(np.zeros((0, 4, 3))),
                   "train_labels": idx_bytes(np.zeros(0))}, "train-images.*no images"),
    ("no-pixels", {"train_images": idx_bytes(np.zeros((5, 0, 3)))}, "train-images.*no pixels"),
    ("truncated", {"test_images": idx_bytes(IMAGES[:3])[:-1]}, "t10k-images.*truncated"),
    ("magic", {"train_labels": b"\x00\x00\x0c\x01" + idx_bytes(LABELS)[4:]},
     "train-labels.*magic number"),
]


@pytest.mark.parametrize("override, message", [c[1:] for c in BAD_FOLDERS],
                         ids=[c[0] for c in BAD_FOLDERS])
def test_an_inconsistent_folder_is_a_data_error_naming_the_file(tmp_path, override, message):
    folder = make_folder(tmp_path / "d", **override)
    with pytest.raises(fastbp.DataError, match=message) as info:
        fastbp.datasets.mnist(folder)
    assert str(folder) in str(info.value)


def test_a_folder_missing_files_names_them(tmp_path):
    folder = make_folder(tmp_path / "d")
    os.remove(folder / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(fastbp.DataError, match=r"missing MNIST file\(s\) t10k-labels-idx1-ubyte"):
        load_folder(folder)
    with pytest.raises(fastbp.DataError, match="does not exist"):
        fastbp.datasets.mnist(tmp_path / "nowhere")


# --- fuzzing: whatever the bytes, only DataError ------------------------------------

FUZZ = settings(max_examples=150, deadline=1000, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def read_or_data_error(path, size):
    """read_idx must either succeed consistently or raise DataError."""
    try:
        a = read_idx(path)
    except fastbp.DataError as exc:
        assert str(path) in str(exc)
        return
    assert a.dtype == np.uint8 and 1 <= a.ndim <= 4
    assert size is None or a.size + 4 + 4 * a.ndim == size  # raw: header + body, exactly


def headers():
    """IDX-like headers: mostly plausible magic, random dims (small and huge)."""
    dims = st.lists(st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1)),
                    min_size=0, max_size=5)
    magic = st.tuples(st.sampled_from([0, 0, 0, 1]), st.sampled_from([0, 0, 0, 255]),
                      st.sampled_from([8, 8, 8, 9, 13]), st.integers(0, 6))
    return st.builds(lambda m, d: bytes(m) + b"".join(struct.pack(">I", x) for x in d),
                     magic, dims)


@FUZZ
@given(head=headers(), body=st.binary(max_size=300), compress=st.booleans())
def test_fuzz_random_headers_and_bodies(tmp_path, head, body, compress):
    path = write(tmp_path / "fuzz", head + body, compress)
    read_or_data_error(path, None if compress else len(head + body))


def mutate(data, edits):
    data = bytearray(data)
    for op, pos, value in edits:
        if not data:
            break
        pos %= len(data)
        if op == "flip":
            data[pos] ^= value or 1
        elif op == "set":
            data[pos] = value
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = bytes([value])
        elif op == "delete":
            del data[pos]
    return bytes(data)


EDITS = st.lists(st.tuples(st.sampled_from(["flip", "set", "cut", "insert", "delete"]),
                           st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6)
VALID = {"images": idx_bytes(IMAGES), "labels": idx_bytes(LABELS)}


@FUZZ
@given(which=st.sampled_from(sorted(VALID)), edits=EDITS, compress_first=st.booleans())
def test_fuzz_mutated_valid_files(tmp_path, which, edits, compress_first):
    """Mutate a valid file, raw or its gzip bytes (headers, CRCs, streams)."""
    data = VALID[which]
    if compress_first:
        data = mutate(gzip.compress(data, mtime=0), edits)
        path = write(tmp_path / "fuzz.gz", data)
        size = None
    else:
        data = mutate(data, edits)
        path = write(tmp_path / "fuzz", data)
        size = None if data[:2] == b"\x1f\x8b" else len(data)
    read_or_data_error(path, size)


def test_zlib_level_damage_is_a_data_error(tmp_path):
    """A gzip header followed by a deflate stream that zlib rejects."""
    head = gzip.compress(b"", mtime=0)[:10]
    stream = zlib.compressobj(wbits=-15)
    body = bytearray(stream.compress(idx_bytes(LABELS)) + stream.flush())
    body[0] = 0xFF  # invalid block type
    path = write(tmp_path / "z.gz", head + bytes(body))
    with pytest.raises(fastbp.DataError, match="z.gz"):
        read_idx(path)
