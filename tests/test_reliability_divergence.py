"""A cost that turns non-finite stops training with DivergenceError, the
network at its last finite weights."""

import importlib
import math

import numpy as np
import pytest
from conftest import rel_err

import fastbp
from fastbp import storage

TRAIN = importlib.import_module("fastbp.trainer")
RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, size=(500, 20)).astype(np.uint8)  # unnormalised on purpose
LABELS = RNG.integers(0, 3, 500)
TARGETS = RNG.normal(size=(500, 2))


def finite(net):
    return all(np.isfinite(W).all() and np.isfinite(b).all() for W, b in net.layers)


def weights(net):
    return [(W.copy(), b.copy()) for W, b in net.layers]


def diverge(device, dtype):
    net = fastbp.Network([20, 16, 2], activation="tanh", loss="squared_error", dtype=dtype,
                         seed=0)
    with pytest.raises(fastbp.DivergenceError) as info:
        fastbp.train(net, PIXELS, TARGETS, lr=1e6, batch_size=10, epochs=3, device=device,
                     validation=(PIXELS, TARGETS), eval_every=7)
    return net, info.value


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("device", ["cpu", "numpy"])
def test_a_huge_learning_rate_raises_divergence_with_finite_weights(device, dtype):
    net, error = diverge(device, dtype)
    message = str(error)
    assert f"iteration {error.iteration}" in message and "learning rate" in message
    assert "lr=1000000.0" in message
    assert error.iteration >= 2
    assert finite(net)
    net.forward(PIXELS)  # the network is still usable


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_devices_diverge_at_the_same_iteration_with_the_same_weights(dtype):
    cpu_net, cpu_error = diverge("cpu", dtype)
    np_net, np_error = diverge("numpy", dtype)
    assert cpu_error.iteration == np_error.iteration
    if dtype == "float64":  # the reference and the kernels agree to rounding
        for (W0, b0), (W1, b1) in zip(cpu_net.layers, np_net.layers):
            assert rel_err(W0, W1) < 1e-10 and rel_err(b0, b1) < 1e-10


@pytest.mark.parametrize("device", ["cpu", "numpy"])
def test_the_history_records_up_to_the_bad_iteration(device, monkeypatch):
    monkeypatch.setattr(TRAIN, "MAX_CHUNK", 3)  # the bad step falls inside a chunk
    monkeypatch.setattr(TRAIN, "CHUNK_MACS", 0)  # ... for any step size
    net = fastbp.Network([20, 16, 2], activation="tanh", loss="squared_error",
                         dtype="float64", seed=0)
    captured = {}

    def progress(epoch, step, steps_per_epoch, history):
        captured["history"] = history
    with pytest.raises(fastbp.DivergenceError) as info:
        fastbp.train(net, PIXELS, TARGETS, lr=1e6, batch_size=10, epochs=3, device=device,
                     progress=progress)
    n = info.value.iteration
    hist = captured["history"]
    assert info.value.history is hist  # also there without a progress callback
    assert hist.iterations == n == len(hist.batch_error)
    assert not math.isfinite(hist.batch_cost[-1])
    assert all(math.isfinite(c) for c in hist.batch_cost[:-1])


def test_the_weights_are_exactly_those_before_the_bad_step():
    """Running the first n - 1 steps from the same start gives these weights."""
    net, error = diverge("cpu", "float64")
    n = error.iteration
    assert 2 <= n <= 50  # within epoch 0 (50 batches of 10)
    again = fastbp.Network([20, 16, 2], activation="tanh", loss="squared_error",
                           dtype="float64", seed=0)
    Ws, bs = again.checked_layers()
    stepper = fastbp.backends.make_stepper("cpu", again, Ws, bs, PIXELS.astype(np.float64),
                                           TARGETS, 10)
    costs, errors = np.empty(n - 1), np.empty(n - 1)
    assert stepper.run(TRAIN.epoch_order(0, 0, 500), 0, n - 1, 1e6, costs, errors) == n - 1
    for (W0, b0), (W1, b1) in zip(net.layers, again.layers):
        assert np.array_equal(W0, W1) and np.array_equal(b0, b1)


def test_weights_that_turn_non_finite_behind_a_finite_cost_are_caught():
    """lr = 1e300 overflows float32 to inf: the first update makes the weights
    infinite while that step's cost was finite. The network keeps its start."""
    net = fastbp.Network([20, 3], dtype="float32", seed=0)
    start = weights(net)
    with pytest.raises(fastbp.DivergenceError, match="iteration 1: its update made the "
                                                     "weights non-finite.*initial ones"):
        fastbp.train(net, PIXELS, LABELS, lr=1e300, batch_size=10, epochs=1, device="cpu")
    for (W0, b0), (W1, b1) in zip(start, net.layers):
        assert np.array_equal(W0, W1) and np.array_equal(b0, b1)


@pytest.mark.parametrize("chunk_macs, calls_per_epoch", [(0, [50, 50]), (1 << 22, [100])],
                         ids=["MAX_CHUNK", "small-steps"])
def test_the_check_runs_inside_the_compiled_loop(monkeypatch, chunk_macs, calls_per_epoch):
    """One compiled call per chunk of MAX_CHUNK steps, or more where steps are
    small (20-16-2 on batches of 5: 1 760 multiply-adds, so the whole epoch
    fits CHUNK_MACS), not a Python pass per batch."""
    monkeypatch.setattr(TRAIN, "CHUNK_MACS", chunk_macs)
    calls = []
    real = fastbp.backends.cpu.CpuStepper.run

    def counting(self, order, first_step, n_steps, *rest):
        calls.append(n_steps)
        return real(self, order, first_step, n_steps, *rest)
    monkeypatch.setattr(fastbp.backends.cpu.CpuStepper, "run", counting)
    net = fastbp.Network([20, 16, 2], activation="tanh", loss="squared_error", seed=0)
    fastbp.train(net, PIXELS / 255, TARGETS, lr=0.01, batch_size=5, epochs=2, eval_every=0)
    assert calls == calls_per_epoch * 2  # 100 steps per epoch


def test_chunks_hold_a_few_milliseconds_of_work():
    assert TRAIN.chunk_steps((784, 200, 10), 100) == TRAIN.MAX_CHUNK  # Example 6.2
    assert TRAIN.chunk_steps((13, 32, 1), 16) == (1 << 22) // (16 * 13 * 32 + 16 * 32)
    assert TRAIN.chunk_steps((2, 1), 1) == (1 << 22) // 2


def test_divergence_keeps_the_last_checkpoint(tmp_path):
    """The divergent epoch is not saved: the checkpoint stays at the last good epoch."""
    path = tmp_path / "ckpt.npz"
    net = fastbp.Network([20, 16, 2], activation="tanh", loss="squared_error",
                         dtype="float64", seed=0)
    fastbp.train(net, PIXELS, TARGETS, lr=1e-9, batch_size=10, epochs=1, checkpoint=path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="already exists"):  # a fresh run may not overwrite it
        fastbp.train(net, PIXELS, TARGETS, lr=1e6, batch_size=10, epochs=3, checkpoint=path)
    assert path.read_bytes() == before
    diverging = tmp_path / "diverging.npz"
    with pytest.raises(fastbp.DivergenceError) as caught:
        fastbp.train(net, PIXELS, TARGETS, lr=1e6, batch_size=10, epochs=3,
                     checkpoint=diverging)
    steps_per_epoch = -(-len(PIXELS) // 10)
    bad_epoch = (caught.value.iteration - 1) // steps_per_epoch
    if bad_epoch == 0:
        assert not diverging.exists()  # nothing finished, nothing saved
    else:
        _, meta = storage.load_npz(diverging, (storage.CHECKPOINT_FORMAT,))
        assert meta["epoch"] == bad_epoch and meta["step"] == 0  # the last good epoch
