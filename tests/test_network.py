"""Network: sizes, parameter counts, the textbook's XOR net, predictions, save/load."""

import numpy as np
import pytest

import fastbp
from fastbp import reference


def test_parameter_counts_of_example_6_1():
    assert fastbp.Network([784, 10]).n_params == 7850
    assert fastbp.Network([784, 200, 10]).n_params == 159010
    net = fastbp.Network([784, 200, 10])
    assert net.n_params == sum(W.size + b.size for W, b in net.layers)


def test_layer_shapes_follow_the_seed():
    net = fastbp.Network([5, 4, 3, 2], dtype="float64")
    assert [(W.shape, b.shape) for W, b in net.layers] == [((4, 5), (4,)), ((3, 4), (3,)),
                                                           ((2, 3), (2,))]
    assert all(W.dtype == np.float64 for W, _ in net.layers)


def test_initialisation_is_seeded_and_scaled():
    a, b = fastbp.Network([784, 200, 10], seed=3), fastbp.Network([784, 200, 10], seed=3)
    c = fastbp.Network([784, 200, 10], seed=4)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a.layers, b.layers))
    assert not np.array_equal(a.layers[0][0], c.layers[0][0])
    W1 = a.layers[0][0]
    assert abs(W1.std() - np.sqrt(2 / 784)) < 0.05 * np.sqrt(2 / 784)  # He for ReLU
    W2 = a.layers[1][0]
    assert abs(W2.std() - np.sqrt(2 / 210)) < 0.1 * np.sqrt(2 / 210)  # Glorot for the output
    assert all((bias == 0).all() for _, bias in a.layers)


XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])


def xor_net(dtype):
    """The textbook's hand-set XOR weights: a two-layer ReLU net."""
    net = fastbp.Network([2, 2, 1], activation="relu", loss="squared_error", dtype=dtype)
    net.layers = [(np.array([[1, 1], [1, 1]], dtype), np.array([0, -1], dtype)),
                  (np.array([[1, -2]], dtype), np.array([0], dtype))]
    return net


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_xor_network_outputs_exactly_0_1_1_0(dtype):
    net = xor_net(dtype)
    assert net.forward(XOR_X)[:, 0].tolist() == [0, 1, 1, 0]
    assert net.predict(XOR_X)[:, 0].tolist() == [0, 1, 1, 0]
    Z_ref = reference.forward(net.layers, XOR_X.astype(dtype), "relu")[0][-1]
    assert Z_ref[:, 0].tolist() == [0, 1, 1, 0]


def test_xor_hidden_layer_maps_01_and_10_to_the_same_point():
    net = xor_net("float64")
    _, Qs = reference.forward(net.layers, XOR_X.astype(float), "relu")
    assert Qs[1].tolist() == [[0, 0], [1, 0], [1, 0], [2, 1]]


def test_predict_proba_is_softmax_of_forward():
    net = fastbp.Network([7, 5, 3], dtype="float64", seed=1)
    X = np.random.default_rng(0).normal(size=(33, 7))
    P = net.predict_proba(X)
    assert np.allclose(P, reference.softmax(net.forward(X)), rtol=1e-12, atol=0)
    assert np.allclose(P.sum(axis=1), 1)
    assert np.array_equal(net.predict(X), P.argmax(axis=1))


@pytest.mark.parametrize("density", [1.0, 0.1], ids=["dense", "sparse"])
def test_forward_spans_several_chunks(monkeypatch, density):
    monkeypatch.setattr(fastbp.network, "CHUNK_ROWS", 7)
    net = fastbp.Network([4, 33, 2], dtype="float64")  # 33 units: wide enough to go sparse
    rng = np.random.default_rng(1)
    X = rng.normal(size=(33, 4)) * (rng.random((33, 4)) < density)
    Z_ref = reference.forward(net.layers, X, "relu")[0][-1]
    assert np.allclose(net.forward(X), Z_ref, rtol=1e-12)
    J_ref, _ = reference.cost_and_output_gradient(Z_ref, np.arange(33) % 2, "cross_entropy")
    # As predict and evaluate run it, and as validation during training runs
    # it: from the data's compressed rows, kept for the run (sparse data only).
    plan = fastbp.first_layer.plan(net.sizes, net.dtype, X, 7, purpose="repeat")
    assert (plan.rows_csr[0].shape == (34,)) == (density < 0.3)
    for kept in (None, plan):
        cost, error = fastbp.network.evaluate_prepared(net, *net.checked_layers(), X,
                                                       np.arange(33) % 2, kept)
        assert cost == pytest.approx(J_ref, rel=1e-12)
        assert error == np.mean(Z_ref.argmax(axis=1) != np.arange(33) % 2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_and_load_round_trip(tmp_path, dtype):
    net = fastbp.Network([6, 4, 3], activation="tanh", loss="squared_error", dtype=dtype,
                         seed=5)
    net.layers[0][1][:] = 0.25
    path = tmp_path / "model.npz"
    net.save(path)
    back = fastbp.load(path)
    assert (back.sizes, back.activation, back.loss, back.dtype) == (
        net.sizes, net.activation, net.loss, net.dtype)
    for (W, b), (W2, b2) in zip(net.layers, back.layers):
        assert np.array_equal(W, W2) and np.array_equal(b, b2) and W2.dtype == W.dtype
    assert not list(tmp_path.glob(".fastbp-*"))  # no temporary file left behind


def test_load_refuses_a_foreign_file(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(fastbp.DataError, match="other.npz"):
        fastbp.load(path)
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(fastbp.DataError, match="other.npz"):
        fastbp.load(path)
