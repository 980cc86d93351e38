"""fastbp.first_layer.plan: one choice per network and data, an explicit code
that the training loop and inference follow."""

import numpy as np
import pytest
from conftest import rel_err
from fastbp.kernels import codes
from test_panels import clustered_rows

import fastbp
from fastbp import first_layer


def sparse(n=200, p=40, density=0.1, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, p)) * (rng.random((n, p)) < density)).astype(np.float32)


@pytest.mark.parametrize("data, sizes, without, with_panels", [
    ("dense", [40, 64, 5], codes.FIRST_W, codes.FIRST_PANELS),
    ("random sparse", [40, 64, 5], codes.FIRST_W_OR_CSR, codes.FIRST_PANELS_OR_CSR),
    ("clustered sparse", [40, 64, 5], codes.FIRST_W_OR_CSR, codes.FIRST_PANELS_OR_TILES),
    ("sparse, narrow layer", [40, 16, 5], codes.FIRST_W, codes.FIRST_PANELS),
    ("sparse, no hidden layer", [40, 5], codes.FIRST_W, codes.FIRST_W),
])
def test_training_plans(data, sizes, without, with_panels, panels, monkeypatch):
    from fastbp import sparse_rows
    monkeypatch.setattr(sparse_rows, "MAX_UNION_RATIO", 2.05)  # the fixture lifts it
    X = {"dense": np.random.default_rng(1).normal(size=(200, 40)).astype(np.float32),
         "random sparse": sparse(), "clustered sparse": clustered_rows(200, 40),
         "sparse, narrow layer": sparse(), "sparse, no hidden layer": sparse()}[data]
    plan = first_layer.plan(sizes, np.float32, X, 32)
    assert plan.code == (with_panels if panels else without), plan.name
    # The tiles list each batch from its dense rows: only W^T reads compressed ones.
    compressed = plan.code in (codes.FIRST_W_OR_CSR, codes.FIRST_PANELS_OR_CSR)
    assert plan.rows_csr[0].shape == ((201,) if compressed else (0,))


def test_inference_plans_and_the_training_loop_follow_the_code(panels):
    X = sparse()
    assert first_layer.plan([40, 64, 5], np.float32, X, 32, "once").code == codes.FIRST_WT_LISTS
    assert first_layer.plan([40, 64, 5], np.float32, X, 32, "repeat").code == codes.FIRST_W_OR_CSR
    dense = np.ones((10, 40), np.float32)
    expected = codes.FIRST_PANELS if panels else codes.FIRST_W
    assert first_layer.plan([40, 64, 5], np.float32, dense, 32, "once").code == expected
    # A stepper given a plan runs that one: W alone, no compressed rows, on sparse data.
    net = fastbp.Network([40, 64, 5], seed=1)
    plan = first_layer.Plan(codes.FIRST_W, first_layer._no_rows(np.float32))
    y = np.arange(200) % 5
    stepper = fastbp.backends.make_stepper("cpu", net, *net.checked_layers(), X, y, 32, plan)
    assert stepper.first.plan == codes.FIRST_W and stepper.first.indptr.shape == (0,)
    stepper.run(np.arange(200), 0, 7, 0.1, np.empty(7), np.empty(7))
    ref = fastbp.Network([40, 64, 5], seed=1)
    fastbp.backends.make_stepper("numpy", ref, *ref.checked_layers(), X, y, 32).run(
        np.arange(200), 0, 7, 0.1, np.empty(7), np.empty(7))
    for (W, _), (W_ref, _) in zip(net.layers, ref.layers):
        assert rel_err(W, W_ref) <= 1e-4
