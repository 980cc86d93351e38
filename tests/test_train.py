"""fastbp.train: SGD, its schedule, History, determinism and devices."""

import time

import numpy as np
import pytest

import fastbp
from fastbp import reference
from fastbp.trainer import epoch_order

from conftest import LOSSES, rel_err, targets_for


def blobs(n=301, p=5, m=3, seed=0):
    """Separable-ish Gaussian clusters: a quick classification problem."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, m, n)
    centres = rng.normal(size=(m, p)) * 3
    return centres[y] + rng.normal(size=(n, p)), y


@pytest.mark.parametrize("f", [np.square, np.sin, np.abs], ids=["x^2", "sin", "abs"])
def test_regression_fits_the_seeds_functions_with_3_tanh_units(f):
    """Figure 5.3: N = 50 points on (-1, 1), 3 tanh hidden units, linear output."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(50, 1))
    y = f(x)
    net = fastbp.Network([1, 3, 1], activation="tanh", loss="squared_error",
                         dtype="float64", seed=0)
    start, _ = net.evaluate(x, y)
    hist = fastbp.train(net, x, y, lr=0.2, batch_size=10, epochs=1000, eval_every=0,
                        device="cpu")
    end, _ = net.evaluate(x, y)
    assert end < 0.01 * start  # mean squared error down a hundredfold
    assert np.mean(hist.batch_cost[-50:]) < np.mean(hist.batch_cost[:50])


def test_history_follows_the_schedule():
    X, y = blobs(n=301)
    net = fastbp.Network([5, 8, 3], seed=1)
    hist = fastbp.train(net, X, y, lr=0.1, batch_size=20, epochs=3, validation=(X, y),
                        eval_every=7, seed=0, device="cpu")
    assert hist.steps_per_epoch == 16  # ceil(301 / 20): the last batch holds 1 sample
    assert hist.iterations == 48 == len(hist.batch_error)
    assert hist.val_iteration == list(range(7, 49, 7))
    assert len(hist.val_cost) == len(hist.val_error) == 6
    assert hist.epochs == 3 and all(t > 0 for t in hist.epoch_seconds)
    errors = np.array(hist.batch_error)
    assert ((errors >= 0) & (errors <= 1)).all()
    assert hist.val_error[-1] < 0.2


def test_epoch_seconds_leave_out_the_time_spent_compiling():
    """A first run compiles for minutes inside its first epoch: that is not
    the epoch's speed. Here a stand-in compilation of 1.5 s in epoch 1."""
    from fastbp import compile_lock

    def progress(epoch, step, steps, history):
        if epoch == 0 and step == steps:
            with compile_lock.compiling():
                time.sleep(1.5)

    X, y = blobs(n=60)
    before = compile_lock.seconds_spent()
    hist = fastbp.train(fastbp.Network([5, 8, 3], seed=1), X, y, lr=0.1, batch_size=20,
                        epochs=2, seed=0, device="cpu", progress=progress)
    assert compile_lock.seconds_spent() - before >= 1.5
    assert 0 < hist.epoch_seconds[0] < 1 and 0 < hist.epoch_seconds[1] < 1


def test_every_sample_is_used_once_per_epoch():
    order = epoch_order(seed=3, epoch=2, n=301)
    assert sorted(order.tolist()) == list(range(301))
    assert not np.array_equal(order, epoch_order(3, 1, 301))
    assert np.array_equal(order, epoch_order(3, 2, 301))


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh", "identity"])
def test_cpu_training_matches_the_numpy_reference(act):
    """Same seed, same batches: the kernels' SGD trajectory is the reference's."""
    X, y = blobs(n=97, p=4)
    nets = [fastbp.Network([4, 6, 3], activation=act, dtype="float64", seed=2) for _ in "ab"]
    hists = [fastbp.train(net, X, y, lr=0.3, batch_size=10, epochs=2, validation=(X, y),
                          eval_every=5, device=device)
             for net, device in zip(nets, ["cpu", "numpy"])]
    for (W, b), (W_ref, b_ref) in zip(nets[0].layers, nets[1].layers):
        assert rel_err(W, W_ref) <= 1e-10 and rel_err(b, b_ref) <= 1e-10
    assert rel_err(hists[0].batch_cost, hists[1].batch_cost) <= 1e-10
    assert hists[0].batch_error == hists[1].batch_error
    assert rel_err(hists[0].val_cost, hists[1].val_cost) <= 1e-10


@pytest.mark.parametrize("density", [0.1, 1.0], ids=["sparse-input", "dense-input"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("sizes", [[20, 3], [20, 17], [20, 6, 3], [20, 6, 5, 3], [20, 6, 17],
                                   [20, 40, 3], [20, 40, 5, 3], [20, 40, 17], [20, 40, 32, 3],
                                   [20, 40, 40, 32]],
                         ids=lambda s: "-".join(map(str, s)))
def test_every_path_of_the_compiled_loop_follows_the_reference(sizes, loss, density, panels):
    """One, two and three layers; output layers narrow enough to run fused
    (<= 16) and wider; first layers that skip zero inputs (>= 32 units on
    sparse data) and dense ones, on W or on panels (even where panels are
    not worthwhile: the first layer is the output layer); hidden layers on
    panels (the last two nets: a hidden layer of 32 or 40 units, and a wide
    output layer); every loss: the trajectory is the reference's."""
    rng = np.random.default_rng(len(sizes) + sizes[-1])
    X = rng.normal(size=(97, 20)) * (rng.random((97, 20)) < density)
    y = targets_for(loss, rng, 97, sizes[-1])
    nets = [fastbp.Network(sizes, loss=loss, dtype="float64", seed=2) for _ in "ab"]
    hists = [fastbp.train(net, X, y, lr=0.05, batch_size=10, epochs=2, device=device)
             for net, device in zip(nets, ["cpu", "numpy"])]
    for (W, b), (W_ref, b_ref) in zip(nets[0].layers, nets[1].layers):
        assert rel_err(W, W_ref) <= 1e-10 and rel_err(b, b_ref) <= 1e-10
    assert rel_err(hists[0].batch_cost, hists[1].batch_cost) <= 1e-10
    np.testing.assert_array_equal(hists[0].batch_error, hists[1].batch_error)
    held = fastbp.kernels.cpu_panels.hidden_layers(sizes, "float64", 10)
    assert any(held) == (panels and sizes in ([20, 40, 32, 3], [20, 40, 40, 32])), held


def test_each_epoch_runs_over_its_own_shuffle_as_in_6_21():
    """Three epochs of mini-batches (the last one short) done by hand with the
    reference, each over epoch_order(seed, epoch): a loop that reused one
    shuffle, or lost a batch, follows another trajectory. (The cpu-vs-numpy
    comparisons cannot tell: both run through the same loop.)"""
    X, y = blobs(n=10, p=4)
    net = fastbp.Network([4, 5, 3], dtype="float64", seed=0)
    layers = [(W.copy(), b.copy()) for W, b in net.layers]
    for epoch in range(3):
        order = epoch_order(7, epoch, 10)
        for start in range(0, 10, 4):
            rows = order[start:start + 4]
            _, grads = reference.backprop(layers, X[rows], y[rows], "relu", "cross_entropy")
            reference.sgd_step(layers, grads, 0.5)
    fastbp.train(net, X, y, lr=0.5, batch_size=4, epochs=3, seed=7, device="cpu")
    for (W, b), (W_ref, b_ref) in zip(net.layers, layers):
        assert rel_err(W, W_ref) <= 1e-12 and rel_err(b, b_ref) <= 1e-12


def test_one_sgd_step_is_exactly_equation_6_23():
    X, y = blobs(n=10, p=4)
    net = fastbp.Network([4, 5, 3], dtype="float64", seed=0)
    layers = [(W.copy(), b.copy()) for W, b in net.layers]
    rows = epoch_order(0, 0, 10)
    _, grads = reference.backprop(layers, X[rows], y[rows], "relu", "cross_entropy")
    reference.sgd_step(layers, grads, 0.5)
    fastbp.train(net, X, y, lr=0.5, batch_size=10, epochs=1, device="cpu")
    for (W, b), (W_ref, b_ref) in zip(net.layers, layers):
        assert rel_err(W, W_ref) <= 1e-12 and rel_err(b, b_ref) <= 1e-12


def test_training_is_reproducible_bit_for_bit():
    X, y = blobs(n=500, p=30)
    weights = []
    for _ in range(2):
        net = fastbp.Network([30, 33, 3], seed=4)
        fastbp.train(net, X, y, lr=0.2, batch_size=32, epochs=2, device="cpu", seed=9)
        weights.append([W.copy() for W, _ in net.layers])
    assert all(np.array_equal(a, b) for a, b in zip(*weights))


def test_batch_larger_than_the_data_is_full_batch_descent():
    X, y = blobs(n=40)
    net = fastbp.Network([5, 3], dtype="float64")
    hist = fastbp.train(net, X, y, lr=0.1, batch_size=1000, epochs=3, device="cpu")
    assert hist.steps_per_epoch == 1 and hist.iterations == 3


def test_cuda_without_a_gpu_says_what_is_missing():
    if fastbp.backends.cuda_status()[0]:
        pytest.skip("a CUDA GPU is present")
    net = fastbp.Network([5, 3])
    X, y = blobs(n=20)
    with pytest.raises(RuntimeError, match="cuda"):
        fastbp.train(net, X, y, epochs=1, device="cuda")


@pytest.mark.parametrize("density", [0.1, 0.9], ids=["sparse-first-layer", "dense-first-layer"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_both_first_layer_paths_match_the_reference(density, dtype):
    """The compiled loop switches the first layer between W^T with the
    input's non-zeros and W with dense products by batch density: both
    must follow the reference's trajectory."""
    rng = np.random.default_rng(5)
    X = rng.random((130, 33)) * (rng.random((130, 33)) < density)
    y = rng.integers(0, 7, 130)
    nets = [fastbp.Network([33, 129, 7], dtype=dtype, seed=1) for _ in "ab"]
    for net, device in zip(nets, ["cpu", "numpy"]):
        fastbp.train(net, X, y, lr=0.2, batch_size=13, epochs=2, device=device)
    tol = 1e-10 if dtype == "float64" else 1e-4
    for (W, b), (W_ref, b_ref) in zip(nets[0].layers, nets[1].layers):
        assert rel_err(W, W_ref) <= tol and rel_err(b, b_ref) <= tol


def test_first_layer_switches_path_when_density_changes():
    """Sparse and dense batches in one epoch: the weights move between W and
    W^T in the middle of the compiled loop and still match the reference."""
    rng = np.random.default_rng(6)
    X = rng.random((60, 20))
    X[:48] *= rng.random((48, 20)) < 0.1  # 0.28 dense overall: rows get compressed
    y = rng.integers(0, 3, 60)
    order = np.arange(60)
    density = [(X[s:s + 10] != 0).mean() for s in range(0, 60, 10)]
    assert min(density) <= 0.3 < max(density)  # batches 1-5 sparse, batch 6 dense
    nets = [fastbp.Network([20, 40, 3], dtype="float64", seed=3) for _ in "ab"]  # >= 32 units
    for net, device in zip(nets, ["cpu", "numpy"]):
        stepper = fastbp.backends.make_stepper(device, net, *net.checked_layers(),
                                               np.ascontiguousarray(X), y, 10)
        if device == "cpu":
            assert stepper.plan.rows_csr[0].shape == (61,)
        stepper.run(order, 0, 6, 0.3, np.empty(6), np.empty(6))
    for (W, _), (W_ref, _) in zip(nets[0].layers, nets[1].layers):
        assert rel_err(W, W_ref) <= 1e-10
