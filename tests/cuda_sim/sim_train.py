"""The "cuda" device end to end: fastbp.backprop and fastbp.train against the
NumPy reference, on blocks of 4 threads. Run in a subprocess by
``tests/test_cuda_train.py`` (simulator) and by ``scripts/gpu_check.sh`` (GPU).
"""

import numba
import numpy as np
import pytest

import fastbp
from fastbp import backends
from fastbp.kernels import cuda as kernels

from conftest import ACTIVATIONS, LOSSES, RTOL, check_backprop, rel_err, targets_for


@pytest.fixture(autouse=True)
def few_threads(monkeypatch):
    """Blocks of 4 threads, so that tiny inputs span several blocks."""
    monkeypatch.setattr(kernels, "THREADS", 4)


def test_cuda_is_the_automatic_choice():
    assert backends.cuda_status() == (True, "")
    assert backends.resolve_device("auto") == "cuda"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("sizes", [[3, 7, 2], [7, 1, 3, 2], [3, 2]])
def test_backprop_cuda_matches_reference(sizes, n, act, loss, dtype):
    check_backprop(sizes, n, act, loss, dtype, "cuda")


def train_both(sizes, act, loss, dtype, n=11, **kwargs):
    """The same short run on "cuda" and on the NumPy reference: both nets and
    both histories. 11 samples in batches of 5: the last batch holds one."""
    rng = np.random.default_rng(len(sizes))
    X = rng.normal(size=(n, sizes[0]))
    y = targets_for(loss, rng, n, sizes[-1])
    out = []
    for device in ("cuda", "numpy"):
        net = fastbp.Network(sizes, activation=act, loss=loss, dtype=dtype, seed=3)
        rate = {} if "optimizer" in kwargs else {"lr": 0.1}
        hist = fastbp.train(net, X, y, batch_size=5, epochs=2, seed=1, device=device,
                            **rate, **kwargs)
        out += [net, hist]
    return out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("sizes,act,loss", [([3, 7, 2], "relu", "cross_entropy"),
                                            ([3, 7, 1, 3], "sigmoid", "cross_entropy"),
                                            ([2, 3, 1], "tanh", "squared_error"),
                                            ([3, 2], "identity", "squared_error"),
                                            ([3, 7, 3], "relu", "binary_cross_entropy"),
                                            ([3, 1], "identity", "binary_cross_entropy")])
def test_training_matches_the_reference(sizes, act, loss, dtype):
    net, hist, ref, ref_hist = train_both(sizes, act, loss, dtype)
    for index, ((W, b), (W_ref, b_ref)) in enumerate(zip(net.layers, ref.layers)):
        assert rel_err(W, W_ref) <= RTOL[dtype], f"W of layer {index}"
        assert rel_err(b, b_ref) <= RTOL[dtype], f"b of layer {index}"
    assert hist.iterations == ref_hist.iterations == 6
    assert rel_err(hist.batch_cost, ref_hist.batch_cost) <= RTOL[dtype]
    np.testing.assert_array_equal(hist.batch_error, ref_hist.batch_error)  # NaN == NaN


@pytest.mark.parametrize("threads", [8, 40, 128])
def test_training_does_not_depend_on_the_block_size(threads, monkeypatch):
    """Odd and wide blocks: the reduction trees, the thread groups of the
    forward pass (8: groups of 2; 40: of 10; 128: of 32 threads, all busy on 37 inputs)."""
    monkeypatch.setattr(kernels, "THREADS", threads)
    net, hist, ref, ref_hist = train_both([37, 7, 2], "tanh", "cross_entropy", "float64")
    for (W, b), (W_ref, b_ref) in zip(net.layers, ref.layers):
        assert rel_err(W, W_ref) <= RTOL["float64"] and rel_err(b, b_ref) <= RTOL["float64"]
    assert rel_err(hist.batch_cost, ref_hist.batch_cost) <= RTOL["float64"]
    assert hist.batch_error == ref_hist.batch_error


def spying(device_function, weights_at, seen):
    """device_function, noting the units of each layer it runs (its argument
    ``weights_at`` is W or dW: (U, P))."""
    def spy(*args):
        seen.add(args[weights_at].shape[0])
        return device_function(*args)
    return spy


@pytest.mark.parametrize("threads,dtype", [(16, "float64"), (48, "float32")])
def test_wide_layers_forward_on_shared_memory_tiles(threads, dtype, monkeypatch):
    """Layers of CUDA_TILE_MIN_UNITS units or more run their forward pass and
    their weight gradient on block tiles (_forward_smem, _weights_smem;
    blocks of 16 and 48 threads: tiles of 4 and 12 rows by 32 columns): 35
    and 33 units and 37 inputs leave part-empty tiles and chunks, batches of
    5 and 1 part-empty chunks of samples; the 2-unit output layer keeps the
    thread groups and items (under the simulator spies check which layers
    took the tiles)."""
    monkeypatch.setattr(kernels, "THREADS", threads)
    assert kernels.CUDA_TILE_MIN_UNITS <= 33
    tiled = {"_forward_smem": set(), "_weights_smem": set()}
    if numba.config.ENABLE_CUDASIM:  # device functions are Python there
        for (name, seen), weights_at in zip(tiled.items(), (3, 0)):
            monkeypatch.setattr(kernels, name, spying(getattr(kernels, name), weights_at, seen))
    net, hist, ref, ref_hist = train_both([37, 35, 33, 2], "tanh", "cross_entropy", dtype)
    expected = {35, 33} if numba.config.ENABLE_CUDASIM else set()
    assert tiled == {"_forward_smem": expected, "_weights_smem": expected}
    for index, ((W, b), (W_ref, b_ref)) in enumerate(zip(net.layers, ref.layers)):
        assert rel_err(W, W_ref) <= RTOL[dtype], f"W of layer {index}"
        assert rel_err(b, b_ref) <= RTOL[dtype], f"b of layer {index}"
    assert rel_err(hist.batch_cost, ref_hist.batch_cost) <= RTOL[dtype]


def test_validation_and_checkpoints_see_the_device_weights(tmp_path):
    """Weights live on the device: evaluations and checkpoints must sync first."""
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(11, 3)), rng.integers(0, 2, 11)
    Xv, yv = rng.normal(size=(4, 3)), rng.integers(0, 2, 4)
    nets, runs = [], []
    for device in ("cuda", "cpu"):
        net = fastbp.Network([3, 7, 2], dtype="float64", seed=3)
        runs.append(fastbp.train(net, X, y, lr=0.1, batch_size=5, epochs=2,
                                 validation=(Xv, yv), eval_every=2, device=device,
                                 checkpoint=tmp_path / f"{device}.npz"))
        nets.append(net)
    assert runs[0].val_iteration == runs[1].val_iteration == [2, 4, 6]
    assert rel_err(runs[0].val_cost, runs[1].val_cost) <= RTOL["float64"]
    saved = fastbp.load(tmp_path / "cuda.npz")
    for (W, b), (W_s, b_s), (W_c, b_c) in zip(nets[0].layers, saved.layers, nets[1].layers):
        assert np.array_equal(W, W_s) and np.array_equal(b, b_s)
        assert rel_err(W, W_c) <= RTOL["float64"] and rel_err(b, b_c) <= RTOL["float64"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # float32 overflow in the simulator
def test_divergence_keeps_the_last_finite_weights():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(11, 3)) * 1e3, rng.normal(size=11) * 1e3
    outcomes = []
    for device in ("cuda", "cpu"):
        net = fastbp.Network([3, 7, 1], loss="squared_error", dtype="float32", seed=0)
        with pytest.raises(fastbp.DivergenceError) as caught:
            fastbp.train(net, X, y, lr=1e3, batch_size=5, epochs=3, device=device)
        assert all(np.isfinite(W).all() and np.isfinite(b).all() for W, b in net.layers)
        outcomes.append((caught.value.iteration, net))
    (it_cuda, net_cuda), (it_cpu, net_cpu) = outcomes
    assert it_cuda == it_cpu
    for (W, b), (W_ref, b_ref) in zip(net_cuda.layers, net_cpu.layers):
        assert rel_err(W, W_ref) <= 1e-3 and rel_err(b, b_ref) <= 1e-3


def test_weights_that_turn_non_finite_behind_a_finite_cost_are_caught_on_the_device():
    """lr = 1e300 overflows float32: the first update makes the weights
    infinite while that step's cost was finite. train_steps' flag, not a
    copy of the weights, says so; the network keeps its start."""
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(12, 5)), rng.integers(0, 3, 12)
    net = fastbp.Network([5, 3], dtype="float32", seed=0)
    start = [(W.copy(), b.copy()) for W, b in net.layers]
    with pytest.raises(fastbp.DivergenceError, match="iteration 1: its update made the "
                                                     "weights non-finite.*initial ones"):
        fastbp.train(net, X, y, lr=1e300, batch_size=4, epochs=1, device="cuda")
    for (W0, b0), (W1, b1) in zip(start, net.layers):
        assert np.array_equal(W0, W1) and np.array_equal(b0, b1)


def test_an_epoch_is_one_launch_and_the_weights_come_back_once(monkeypatch):
    """No host round trip inside an epoch: one train_steps launch per epoch
    (CUDA_CHUNK_MACS), the weights copied back once, at the end; with an
    evaluation every 4 steps, a launch per 4 steps and a copy per evaluation."""
    from fastbp.backends import cuda as device
    calls = {"run": [], "sync": 0}
    real_run, real_sync = device.CudaStepper.run, device.CudaStepper.sync

    def run(self, order, first_step, n_steps, *rest):
        calls["run"].append(n_steps)
        return real_run(self, order, first_step, n_steps, *rest)

    def sync(self):
        calls["sync"] += 1
        return real_sync(self)
    monkeypatch.setattr(device.CudaStepper, "run", run)
    monkeypatch.setattr(device.CudaStepper, "sync", sync)
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(30, 4)), rng.integers(0, 2, 30)
    net = fastbp.Network([4, 5, 2], dtype="float64", seed=2)
    fastbp.train(net, X, y, lr=0.1, batch_size=3, epochs=2, eval_every=0, device="cuda")
    assert calls == {"run": [10, 10], "sync": 1}
    calls["run"], calls["sync"] = [], 0
    fastbp.train(net, X, y, lr=0.1, batch_size=3, epochs=1, eval_every=4, device="cuda",
                 validation=(X, y))
    assert calls == {"run": [4, 4, 2], "sync": 2 + 1}  # evaluations at 4 and 8


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", [
    fastbp.SGD(lr=0.1, momentum=0.9), fastbp.SGD(lr=0.1, momentum=0.8, nesterov=True, alpha=0.3),
    fastbp.Adam(lr=0.05), fastbp.Adam(lr=0.05, alpha=0.1), fastbp.SGD(lr=0.1, alpha=0.5)],
    ids=["momentum", "nesterov+alpha", "adam", "adam+alpha", "sgd+alpha"])
def test_optimizers_match_the_reference(optimizer, dtype):
    net, hist, ref, ref_hist = train_both([3, 7, 2], "tanh", "cross_entropy", dtype,
                                          optimizer=optimizer)
    for index, ((W, b), (W_ref, b_ref)) in enumerate(zip(net.layers, ref.layers)):
        assert rel_err(W, W_ref) <= RTOL[dtype], f"W of layer {index}"
        assert rel_err(b, b_ref) <= RTOL[dtype], f"b of layer {index}"
    assert rel_err(hist.batch_cost, ref_hist.batch_cost) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("optimizer", [fastbp.SGD(lr=0.1), fastbp.Adam(lr=0.05, alpha=0.1)],
                         ids=["sgd", "adam+alpha"])
def test_weighted_training_matches_the_reference(optimizer, loss, dtype):
    """Sample weights (zeros among them): the batch's row factors and the
    penalty's divisor, summed by a block, as the reference has them."""
    w = np.random.default_rng(5).random(11) * (np.arange(11) % 4 != 2)
    net, hist, ref, ref_hist = train_both([3, 7, 2], "tanh", loss, dtype, optimizer=optimizer,
                                          sample_weight=w)
    for index, ((W, b), (W_ref, b_ref)) in enumerate(zip(net.layers, ref.layers)):
        assert rel_err(W, W_ref) <= RTOL[dtype], f"W of layer {index}"
        assert rel_err(b, b_ref) <= RTOL[dtype], f"b of layer {index}"
    assert rel_err(hist.batch_cost, ref_hist.batch_cost) <= RTOL[dtype]


def test_early_stopping_stops_where_the_reference_does():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)  # random labels: it stops
    hists = []
    for device in ("cuda", "numpy"):
        net = fastbp.Network([3, 7, 2], dtype="float64", seed=1)
        hists.append(fastbp.train(net, X, y, lr=0.5, batch_size=8, epochs=40, device=device,
                                  eval_every=0, early_stopping=fastbp.EarlyStopping(patience=2)))
    assert hists[0].stopped_epoch == hists[1].stopped_epoch is not None
    assert rel_err(hists[0].val_scores, hists[1].val_scores) <= 1e-10
