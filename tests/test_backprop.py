"""Algorithm 6.1 end to end: kernels against the reference, and both against
central finite differences."""

import numpy as np
import pytest

import fastbp
from fastbp import reference

from conftest import ACTIVATIONS, BATCHES, LOSSES, SIZES, check_backprop, rel_err, targets_for


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("sizes", [[1, 7, 2], [7, 1, 33], [33, 129, 7], [129, 33, 7, 1 + 1],
                                   [7, 2], [SIZES[2], SIZES[3], SIZES[1], SIZES[0], 3]])
def test_backprop_cpu_matches_reference(sizes, n, act, loss, dtype):
    check_backprop(sizes, n, act, loss, dtype, "cpu")


def _numeric_gradient(cost, layers, eps=1e-6):
    """Central differences of cost() over every parameter of ``layers``."""
    grads = []
    for W, b in layers:
        pair = []
        for a in (W, b):
            g = np.zeros_like(a)
            flat, gflat = a.reshape(-1), g.reshape(-1)
            for k in range(flat.size):
                old = flat[k]
                flat[k] = old + eps
                up = cost()
                flat[k] = old - eps
                down = cost()
                flat[k] = old
                gflat[k] = (up - down) / (2 * eps)
            pair.append(g)
        grads.append(tuple(pair))
    return grads


@pytest.mark.parametrize("device", ["numpy", "cpu"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_gradient_matches_finite_differences(act, loss, device):
    sizes = [3, 5, 4, 3]
    net = fastbp.Network(sizes, activation=act, loss=loss, dtype="float64", seed=1)
    rng = np.random.default_rng(7)
    for W, b in net.layers:
        b[:] = rng.normal(size=b.shape) * 0.1
    X = rng.normal(size=(9, 3))
    y = targets_for(loss, rng, 9, 3)
    J, grads = fastbp.backprop(net, X, y, device=device)
    numeric = _numeric_gradient(lambda: fastbp.backprop(net, X, y, device=device)[0],
                                net.layers)
    for index, ((dW, db), (nW, nb)) in enumerate(zip(grads, numeric)):
        assert rel_err(dW, nW) <= 1e-6, f"dW of layer {index}"
        assert rel_err(db, nb) <= 1e-6, f"db of layer {index}"


def test_gradient_check_detects_a_wrong_gradient():
    """The finite-difference check is able to fail: a perturbed gradient is caught."""
    net = fastbp.Network([3, 4, 2], activation="tanh", dtype="float64", seed=2)
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(5, 3)), rng.integers(0, 2, 5)
    _, grads = fastbp.backprop(net, X, y)
    numeric = _numeric_gradient(lambda: fastbp.backprop(net, X, y)[0], net.layers)
    wrong = grads[0][0] * 1.001
    assert rel_err(wrong, numeric[0][0]) > 1e-6


@pytest.mark.parametrize("case,message", [
    ("label -1", r"y\[1\] = -1 is not a class label in 0..2"),
    ("label 7", r"y\[0\] = 7 is not a class label in 0..2"),
    ("targets (n,) for 3 outputs", r"y must have shape \(n_samples, 3\)"),
    ("X with 5 features", r"X must be 2-D \(n_samples, 4\)"),
    ("layers that do not chain", r"layers\[1\] W has 2 columns but the layer below has 3"),
    ("activation softmax", "activation must be one of"),
])
def test_the_reference_refuses_what_does_not_fit(case, message):
    """NumPy would wrap -1 to the last class or broadcast the targets, and
    the oracle would return a wrong answer instead of an error."""
    rng = np.random.default_rng(0)
    layers = [(rng.normal(size=(3, 4)), np.zeros(3)), (rng.normal(size=(3, 3)), np.zeros(3))]
    X, y = rng.normal(size=(2, 4)), np.array([0, 2])
    loss, act = "cross_entropy", "relu"
    if case == "label -1":
        y = np.array([0, -1])
    elif case == "label 7":
        y = np.array([7, 0])
    elif case.startswith("targets"):
        loss, y = "squared_error", np.ones(2)
    elif case.startswith("X"):
        X = rng.normal(size=(2, 5))
    elif case.startswith("layers"):
        layers[1] = (rng.normal(size=(3, 2)), np.zeros(3))
    else:
        act = "softmax"
    with pytest.raises(ValueError, match=message):
        reference.backprop(layers, X, y, act, loss)
