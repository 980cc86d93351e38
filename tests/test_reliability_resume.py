"""Checkpoint and resume: bitwise the same weights and History as one run."""

import importlib
import json
import os
import signal

import numpy as np
import pytest

import fastbp
from fastbp import storage

TRAIN = importlib.import_module("fastbp.trainer")
RNG = np.random.default_rng(0)
N, P = 301, 6  # 301 / 20 -> 16 steps per epoch, the last one of 1 sample
X = RNG.normal(size=(N, P)) * 3
Y = RNG.integers(0, 3, N)
XV, YV = RNG.normal(size=(50, P)), RNG.integers(0, 3, 50)
ARGS = {"lr": 0.05, "batch_size": 20, "validation": (XV, YV), "eval_every": 7, "seed": 3}


def new_net(dtype="float64", sizes=(P, 9, 3)):
    return fastbp.Network(list(sizes), dtype=dtype, seed=5)


def run(epochs, device, dtype="float64", **kw):
    net = new_net(dtype)
    hist = fastbp.train(net, X, Y, epochs=epochs, device=device, **{**ARGS, **kw})
    return net, hist


def assert_same_run(a, b):
    (net0, h0), (net1, h1) = a, b
    for (W0, b0), (W1, b1) in zip(net0.layers, net1.layers):
        assert np.array_equal(W0, W1) and np.array_equal(b0, b1)
    assert h0.steps_per_epoch == h1.steps_per_epoch
    assert h0.batch_cost == h1.batch_cost and h0.batch_error == h1.batch_error
    assert h0.val_iteration == h1.val_iteration
    assert h0.val_cost == h1.val_cost and h0.val_error == h1.val_error
    assert len(h0.epoch_seconds) == len(h1.epoch_seconds)  # timings differ, their count not


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("device", ["cpu", "numpy"])
def test_resume_equals_one_uninterrupted_run(tmp_path, device, dtype):
    whole = run(5, device, dtype)
    path = tmp_path / "ckpt.npz"
    run(2, device, dtype, checkpoint=path)
    net = new_net(dtype)  # a fresh process would start from a fresh network
    hist = fastbp.train(net, X, Y, epochs=5, device=device, checkpoint=path, resume=True,
                        **ARGS)
    assert_same_run((net, hist), whole)
    assert hist.val_iteration == list(range(7, 5 * 16 + 1, 7))  # 7 does not divide 16
    # Resuming again from epoch 5 onwards, in two more steps, still matches.
    fastbp.train(new_net(dtype), X, Y, epochs=6, device=device, checkpoint=path, resume=True,
                 **ARGS)
    net7 = new_net(dtype)
    hist7 = fastbp.train(net7, X, Y, epochs=7, device=device, checkpoint=path, resume=True,
                         **ARGS)
    assert_same_run((net7, hist7), run(7, device, dtype))


def interrupt_at(at_epoch, at_step):
    """A progress callback that sends this process SIGINT (a Ctrl-C) once."""
    sent = []

    def progress(epoch, step, steps_per_epoch, history):
        if (epoch, step) >= (at_epoch, at_step) and not sent:
            sent.append((epoch, step))
            os.kill(os.getpid(), signal.SIGINT)
    return progress, sent


def saved_position(path):
    with np.load(path) as data:
        meta = json.loads(str(data[storage.META_KEY]))
    return meta["epoch"], meta["step"]


@pytest.mark.usefixtures("ctrl_c_raises")
@pytest.mark.parametrize("device", ["cpu", "numpy"])
@pytest.mark.parametrize("at", [(0, 3), (1, 9), (2, 16), (3, 15)],
                         ids=["epoch0-mid", "epoch1-mid", "epoch-end", "last-step"])
def test_resume_after_ctrl_c_mid_epoch_equals_one_run(tmp_path, monkeypatch, device, at):
    monkeypatch.setattr(TRAIN, "MAX_CHUNK", 4)  # chunk ends at 4, 8, ...
    monkeypatch.setattr(TRAIN, "CHUNK_MACS", 0)  # ... for any step size
    whole = run(4, device)
    path = tmp_path / "ckpt.npz"
    progress, sent = interrupt_at(*at)
    with pytest.raises(KeyboardInterrupt):
        run(4, device, checkpoint=path, progress=progress)
    epoch, step = sent[0]
    # Saved where it stopped: mid-epoch, or at the start of the next epoch.
    assert saved_position(path) == ((epoch, step) if step < 16 else (epoch + 1, 0))
    net = new_net()
    hist = fastbp.train(net, X, Y, epochs=4, device=device, checkpoint=path, resume=True,
                        **ARGS)
    assert_same_run((net, hist), whole)


@pytest.mark.usefixtures("ctrl_c_raises")
def test_a_second_ctrl_c_is_not_deferred(tmp_path):
    """The first Ctrl-C waits for a consistent checkpoint; a second one does not."""
    calls = []

    def progress(epoch, step, steps_per_epoch, history):
        calls.append(step)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
    path = tmp_path / "ckpt.npz"
    with pytest.raises(KeyboardInterrupt):
        run(3, "cpu", checkpoint=path, progress=progress)
    assert len(calls) == 1


def test_ctrl_c_restores_the_previous_sigint_handler(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    run(1, "cpu", checkpoint=tmp_path / "c.npz")
    assert signal.getsignal(signal.SIGINT) is before


def test_an_ignored_sigint_stays_ignored(tmp_path):
    """A background job of a script inherits SIGINT ignored: a checkpointing
    run must not start catching it."""
    seen = []
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run(1, "cpu", checkpoint=tmp_path / "c.npz",
            progress=lambda *args: seen.append(signal.getsignal(signal.SIGINT)))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen and all(handler is signal.SIG_IGN for handler in seen)


@pytest.mark.parametrize("change, culprit", [
    ({"lr": 0.06}, "lr=0.05.*lr=0.06"),
    ({"batch_size": 21}, "batch_size=20.*batch_size=21"),
    ({"seed": 4}, "seed=3.*seed=4"),
    ({"eval_every": 8}, "eval_every=7.*eval_every=8"),
    ({"X": X[:-1], "Y": Y[:-1]}, "n_samples=301.*n_samples=300"),
    ({"X": X + 1}, r"training data \(X, y\) of CRC-32='\w{8}', this run asks for training"),
    ({"Y": np.roll(Y, 1)}, r"training data \(X, y\) of CRC-32"),
    ({"validation": None},
     r"validation data of CRC-32='\w{8}', this run asks for no validation data"),
    ({"validation": (XV[:-1], YV[:-1])},
     r"validation data of CRC-32='\w{8}', this run asks for validation data of CRC-32"),
    ({"sizes": (P, 8, 3)}, r"sizes is \[6, 9, 3\].*\[6, 8, 3\]"),
    ({"dtype": "float32"}, "dtype is float64.*float32"),
    ({"activation": "tanh"}, "activation is 'relu'.*'tanh'"),
], ids=["lr", "batch_size", "seed", "eval_every", "n_samples", "X", "y", "no-validation",
        "validation", "sizes", "dtype", "activation"])
def test_resuming_with_other_settings_is_refused_naming_the_setting(tmp_path, change, culprit):
    path = tmp_path / "ckpt.npz"
    run(1, "cpu", checkpoint=path)
    before = path.read_bytes()
    change = dict(change)
    net = fastbp.Network(list(change.pop("sizes", (P, 9, 3))), seed=5,
                         dtype=change.pop("dtype", "float64"),
                         activation=change.pop("activation", "relu"))
    Xr, Yr = change.pop("X", X), change.pop("Y", Y)
    with pytest.raises(ValueError, match=culprit) as info:
        fastbp.train(net, Xr, Yr, epochs=3, checkpoint=path, resume=True,
                     **{**ARGS, **change})
    assert str(path) in str(info.value) and "resume" in str(info.value)
    assert path.read_bytes() == before  # the refused run wrote nothing


def test_a_capped_batch_size_is_explained_when_resuming_is_refused(tmp_path):
    """batch_size=100 on 50 samples is stored as 50, the size used: the
    refusal says why it names a number the user never gave."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 4)), rng.integers(0, 2, 50)
    path = tmp_path / "c.npz"
    fastbp.train(fastbp.Network([4, 3, 2]), X, y, batch_size=100, epochs=1, checkpoint=path)
    with pytest.raises(ValueError, match=r"batch_size=50, this run asks for batch_size=10 "
                                         r"\(a batch_size above the number of samples"):
        fastbp.train(fastbp.Network([4, 3, 2]), X, y, batch_size=10, epochs=2,
                     checkpoint=path, resume=True)
    path = tmp_path / "d.npz"  # nothing capped: no such note
    fastbp.train(fastbp.Network([4, 3, 2]), X, y, batch_size=20, epochs=1, checkpoint=path)
    with pytest.raises(ValueError, match=r"batch_size=20, this run asks for batch_size=10$"):
        fastbp.train(fastbp.Network([4, 3, 2]), X, y, batch_size=10, epochs=2,
                     checkpoint=path, resume=True)


def test_resuming_from_a_missing_checkpoint_says_so(tmp_path):
    path = tmp_path / "nothing-here.npz"
    with pytest.raises(ValueError, match="nothing-here.npz.*does not exist"):
        fastbp.train(new_net(), X, Y, epochs=2, checkpoint=path, resume=True, **ARGS)


def test_resuming_from_a_damaged_checkpoint_is_a_data_error(tmp_path):
    path = tmp_path / "ckpt.npz"
    run(1, "cpu", checkpoint=path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(fastbp.DataError, match="ckpt.npz"):
        fastbp.train(new_net(), X, Y, epochs=2, checkpoint=path, resume=True, **ARGS)


def test_resuming_from_a_model_file_is_a_data_error(tmp_path):
    path = tmp_path / "model.npz"
    new_net().save(path)
    with pytest.raises(fastbp.DataError, match="model.npz.*fastbp.checkpoint"):
        fastbp.train(new_net(), X, Y, epochs=2, checkpoint=path, resume=True, **ARGS)


def edit_checkpoint(path, **meta_changes):
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop(storage.META_KEY)))
    meta.update(meta_changes)
    np.savez(path, **arrays, **{storage.META_KEY: np.array(json.dumps(meta))})


@pytest.mark.parametrize("changes", [{"epoch": 3}, {"step": 5}, {"step": 16},
                                     {"epoch": -1}, {"epoch": 1.0}, {"version": 9},
                                     {"steps_per_epoch": 15}],
                         ids=["epoch", "step", "step-past-end", "negative", "float",
                              "version", "steps"])
def test_an_inconsistent_checkpoint_is_a_data_error(tmp_path, changes):
    path = tmp_path / "ckpt.npz"
    run(2, "cpu", checkpoint=path)
    edit_checkpoint(path, **changes)
    with pytest.raises(fastbp.DataError, match="ckpt.npz"):
        fastbp.train(new_net(), X, Y, epochs=4, checkpoint=path, resume=True, **ARGS)


def test_a_checkpoint_from_before_the_per_set_crcs_resumes_and_still_checks_the_data(tmp_path):
    path = tmp_path / "ckpt.npz"
    whole = run(3, "cpu")
    run(1, "cpu", checkpoint=path)
    with np.load(path) as data:
        settings = json.loads(str(data[storage.META_KEY]))["settings"]
    del settings["train_crc32"], settings["val_crc32"]  # as written by fastbp <= 2026-11-27
    edit_checkpoint(path, settings=settings)
    with pytest.raises(ValueError, match="training/validation data of CRC-32"):
        fastbp.train(new_net(), X + 1, Y, epochs=3, checkpoint=path, resume=True, **ARGS)
    net = new_net()
    hist = fastbp.train(net, X, Y, epochs=3, checkpoint=path, resume=True, **ARGS)
    assert_same_run((net, hist), whole)


def test_epochs_already_reached_returns_the_saved_run_at_once(tmp_path):
    path = tmp_path / "ckpt.npz"
    whole = run(3, "cpu", checkpoint=path)
    calls = []
    net = new_net()
    hist = fastbp.train(net, X, Y, epochs=3, checkpoint=path, resume=True,
                        progress=lambda *a: calls.append(a), **ARGS)
    assert calls == []
    assert_same_run((net, hist), whole)
    assert hist.epoch_seconds == whole[1].epoch_seconds  # the saved timings, untouched


def test_resuming_past_the_checkpoint_s_epochs_is_refused(tmp_path):
    path = tmp_path / "ckpt.npz"
    run(3, "cpu", checkpoint=path)
    with pytest.raises(ValueError, match="it has already run 3 epochs, more than epochs=2"):
        fastbp.train(new_net(), X, Y, epochs=2, checkpoint=path, resume=True, **ARGS)


def test_a_checkpoint_is_written_after_every_epoch(tmp_path, monkeypatch):
    monkeypatch.setattr(TRAIN, "MAX_CHUNK", 1)  # a progress call after every step
    monkeypatch.setattr(TRAIN, "CHUNK_MACS", 0)  # ... for any step size
    path = tmp_path / "ckpt.npz"
    positions = []

    def progress(epoch, step, steps_per_epoch, history):
        if step == 1 or step == 2:
            positions.append(saved_position(path) if path.exists() else None)
    run(3, "cpu", checkpoint=path, progress=progress, batch_size=150)  # 3 steps per epoch
    assert positions == [None, None, (1, 0), (1, 0), (2, 0), (2, 0)]
    assert saved_position(path) == (3, 0)


def test_a_fresh_run_never_overwrites_an_existing_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    path = tmp_path / "night.npz"
    fastbp.train(fastbp.Network([5, 4, 3]), X, y, epochs=1, batch_size=10, checkpoint=path,
                 device="cpu")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="already exists.*resume=True"):
        fastbp.train(fastbp.Network([5, 4, 3]), X, y, epochs=2, batch_size=10,
                     checkpoint=path, device="cpu")
    assert path.read_bytes() == before
