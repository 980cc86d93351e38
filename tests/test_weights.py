"""Sample and class weights and logistic outputs: the reference against
scikit-learn's MLP (its _backprop is the oracle), the compiled loop against
the reference on every path, and what weights must and must not change."""

import re
import warnings

import numpy as np
import pytest
from conftest import RTOL, rel_err, targets_for

import fastbp
from fastbp import reference
from fastbp.weights import sample_weights

LOSSES = ("cross_entropy", "squared_error", "binary_cross_entropy")
OPTIMIZERS = {"sgd": fastbp.SGD(lr=0.05), "momentum+alpha": fastbp.SGD(lr=0.02, momentum=0.9,
                                                                      alpha=1e-2),
              "adam+alpha": fastbp.Adam(lr=0.01, alpha=1e-3)}


def problem(loss, seed=0, n=203, p=40, M=4, sparse=False):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    if sparse:  # compressed rows: the zero-skipping first layer where plain SGD runs
        X = np.abs(X) * (rng.random((n, p)) < 0.12)
    y = targets_for(loss, rng, n, M)
    w = rng.random(n) * 3 * (rng.random(n) < 0.8)  # a fifth weigh 0
    return X, y, w


@pytest.mark.parametrize("alpha", [0.0, 1e-2])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel"])
def test_the_reference_is_scikit_learn_s_backprop(kind, weighted, alpha):
    """Cost and gradients of one batch, sample weights and L2 penalty
    included, equal scikit-learn's MLPClassifier._backprop (softmax for
    several classes; logistic outputs for two, and for an indicator matrix)."""
    nn = pytest.importorskip("sklearn.neural_network")
    rng = np.random.default_rng(len(kind))
    n, p, H = 31, 6, 5
    X = rng.normal(size=(n, p))
    M = {"multiclass": 3, "binary": 1, "multilabel": 4}[kind]
    if kind == "multiclass":
        y = rng.integers(0, 3, n)
        Y = np.eye(3)[y]  # scikit-learn's binarized targets
    else:
        y = Y = rng.integers(0, 2, (n, M)).astype(np.float64)
    w = rng.random(n) * (rng.random(n) < 0.7) if weighted else None
    loss = "cross_entropy" if kind == "multiclass" else "binary_cross_entropy"
    layers = [(rng.normal(size=(H, p)), rng.normal(size=H)),
              (rng.normal(size=(M, H)), rng.normal(size=M))]
    clf = nn.MLPClassifier(hidden_layer_sizes=(H,), activation="tanh", alpha=alpha, max_iter=1)
    with warnings.catch_warnings():  # one epoch, to set up its attributes: not converged
        warnings.simplefilter("ignore")
        clf.fit(X, y if kind != "binary" else y[:, 0])
    clf.coefs_ = [W.T.copy() for W, _ in layers]
    clf.intercepts_ = [b.copy() for _, b in layers]
    coef_grads = [np.empty_like(c) for c in clf.coefs_]
    intercept_grads = [np.empty_like(b) for b in clf.intercepts_]
    J_sk, coef_grads, intercept_grads = clf._backprop(
        X, Y, w, [X, None, None], [None, None], coef_grads, intercept_grads)
    J, grads = reference.backprop(layers, X, y, "tanh", loss, sample_weight=w)
    divisor = n if w is None else w.sum()
    J += reference.penalty(layers, alpha, divisor)
    grads = reference.penalized(layers, grads, alpha, divisor)
    assert rel_err(J, J_sk) <= 1e-12
    for (dW, db), cg, ig in zip(grads, coef_grads, intercept_grads):
        assert rel_err(dW, cg.T) <= 1e-12 and rel_err(db, ig) <= 1e-12


@pytest.mark.parametrize("device", ["cpu", "numpy"])
@pytest.mark.parametrize("loss", LOSSES)
def test_weighted_gradients_match_finite_differences(loss, device):
    net = fastbp.Network([3, 5, 3], activation="tanh", loss=loss, dtype="float64", seed=1)
    rng = np.random.default_rng(7)
    X = rng.normal(size=(9, 3))
    y = targets_for(loss, rng, 9, 3)
    w = rng.random(9) * (np.arange(9) != 4)
    J, grads = fastbp.backprop(net, X, y, device=device, sample_weight=w)
    eps = 1e-6
    for (dW, _), (W, _) in zip(grads, net.layers):
        for k in range(W.size):
            old = W.flat[k]
            W.flat[k] = old + eps
            up = fastbp.backprop(net, X, y, device=device, sample_weight=w)[0]
            W.flat[k] = old - eps
            down = fastbp.backprop(net, X, y, device=device, sample_weight=w)[0]
            W.flat[k] = old
            assert abs(dW.flat[k] - (up - down) / (2 * eps)) <= 1e-6 * max(1, abs(dW).max())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("sizes", [[40, 48, 4], [40, 36, 20, 4], [40, 4], [40, 48, 20]],
                         ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("loss", LOSSES)
def test_weighted_training_follows_the_reference_on_every_path(loss, name, sizes, sparse,
                                                               dtype):
    """Fused and blocked output layers (4 and 20 outputs), one to three
    layers, the zero-skipping first layer (plain SGD on sparse rows) and the
    complete-gradient rules, a short last batch: the reference's trajectory."""
    X, y, w = problem(loss, M=sizes[-1], sparse=sparse)
    nets, hists = [], []
    for device in ("cpu", "numpy"):
        net = fastbp.Network(sizes, loss=loss, dtype=dtype, seed=2)
        hists.append(fastbp.train(net, X, y, optimizer=OPTIMIZERS[name], batch_size=32,
                                  epochs=2, device=device, eval_every=0, sample_weight=w))
        nets.append(net)
    for index, ((W, b), (W_ref, b_ref)) in enumerate(zip(nets[0].layers, nets[1].layers)):
        assert rel_err(W, W_ref) <= RTOL[dtype], f"W of layer {index}"
        assert rel_err(b, b_ref) <= RTOL[dtype], f"b of layer {index}"
    assert rel_err(hists[0].batch_cost, hists[1].batch_cost) <= RTOL[dtype]
    if loss != "squared_error":
        np.testing.assert_array_equal(hists[0].batch_error, hists[1].batch_error)


@pytest.mark.parametrize("loss", LOSSES)
def test_a_sample_of_weight_0_changes_nothing(loss):
    """Whatever (finite) values a weight-0 sample holds, the run is bitwise
    the same. (On dense data: other values change sparse batches' density,
    and so which first-layer kernel runs, and the rounding.)"""
    X, y, w = problem(loss)
    zero = w == 0
    other_X, other_y = X.copy(), y.copy()
    other_X[zero] = np.random.default_rng(9).normal(size=other_X[zero].shape) * 5
    other_y[zero] = targets_for(loss, np.random.default_rng(9), zero.sum(), 4)
    nets = []
    for data in ((X, y), (other_X, other_y)):
        net = fastbp.Network([40, 48, 4], loss=loss, seed=2)
        fastbp.train(net, *data, lr=0.02, batch_size=32, epochs=2, device="cpu",
                     sample_weight=w)
        nets.append(net)
    for (W, b), (V, c) in zip(*(n.layers for n in nets)):
        assert np.array_equal(W, V) and np.array_equal(b, c)


def test_unit_weights_are_bitwise_no_weights():
    X, y, _ = problem("cross_entropy", sparse=True)
    a, b = fastbp.Network([40, 48, 4], seed=2), fastbp.Network([40, 48, 4], seed=2)
    fastbp.train(a, X, y, lr=0.3, batch_size=32, epochs=2, device="cpu")
    fastbp.train(b, X, y, lr=0.3, batch_size=32, epochs=2, device="cpu",
                 sample_weight=np.ones(len(y)))
    assert all(np.array_equal(p, q) for (W, c), (V, d) in zip(a.layers, b.layers)
               for p, q in ((W, V), (c, d)))


@pytest.mark.parametrize("class_weight", ["balanced", {0: 2.0, 3: 0.5}])
def test_class_weight_is_scikit_learn_s_sample_weight(class_weight):
    utils = pytest.importorskip("sklearn.utils.class_weight")
    X, y, w = problem("cross_entropy")
    y[:150] = 1  # unbalanced
    net = fastbp.Network([40, 4])
    theirs = utils.compute_sample_weight(class_weight, y)
    assert rel_err(sample_weights(net, y, None, class_weight), theirs) <= 1e-14
    assert rel_err(sample_weights(net, y, w, class_weight), theirs * w) <= 1e-14
    # multi-label: per output, multiplied (scikit-learn's multi-output rule)
    Y = problem("binary_cross_entropy")[1]
    multi = fastbp.Network([40, 4], loss="binary_cross_entropy")
    assert rel_err(sample_weights(multi, Y, None, "balanced"),
                   utils.compute_sample_weight("balanced", Y.astype(int))) <= 1e-14


def test_weighted_training_with_class_weight_and_early_stopping_runs_and_resumes(tmp_path):
    X, y, w = problem("binary_cross_entropy", M=1)
    kwargs = dict(optimizer=fastbp.Adam(lr=0.01), batch_size=32, device="cpu",
                  sample_weight=w, class_weight="balanced",
                  early_stopping=fastbp.EarlyStopping(patience=2))
    whole = fastbp.Network([40, 16, 1], loss="binary_cross_entropy", seed=2)
    hist = fastbp.train(whole, X, y[:, 0], epochs=4, **kwargs)
    path = tmp_path / "run.npz"
    part = fastbp.Network([40, 16, 1], loss="binary_cross_entropy", seed=2)
    fastbp.train(part, X, y[:, 0], epochs=2, checkpoint=path, **kwargs)
    again = fastbp.Network([40, 16, 1], loss="binary_cross_entropy", seed=5)
    resumed = fastbp.train(again, X, y[:, 0], epochs=4, checkpoint=path, resume=True, **kwargs)
    assert resumed.batch_cost == hist.batch_cost
    assert all(np.array_equal(p, q) for (W, c), (V, d) in zip(again.layers, whole.layers)
               for p, q in ((W, V), (c, d)))
    with pytest.raises(ValueError, match="sample and class weights"):
        fastbp.train(fastbp.Network([40, 16, 1], loss="binary_cross_entropy"), X, y[:, 0],
                     epochs=4, checkpoint=path, resume=True,
                     **dict(kwargs, sample_weight=w * 2))


def test_logistic_outputs_learn_a_multi_label_problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 10))
    Y = np.stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0, X[:, 3] * X[:, 4] > 0], axis=1)
    net = fastbp.Network([10, 32, 3], loss="binary_cross_entropy", seed=1)
    hist = fastbp.train(net, X, Y, optimizer=fastbp.Adam(lr=0.01), batch_size=32, epochs=40,
                        validation=(X, Y), eval_every=19, device="cpu")
    assert hist.val_error[-1] < 0.1  # subset error: all three labels right
    assert net.predict(X).shape == (600, 3) and set(np.unique(net.predict(X))) <= {0, 1}
    proba = net.predict_proba(X)
    assert ((proba > 0.5) == net.predict(X).astype(bool)).all()
    assert net.evaluate(X, Y)[1] == pytest.approx(np.mean((net.predict(X) != Y).any(axis=1)))
    binary = fastbp.Network([10, 1], loss="binary_cross_entropy")
    assert binary.predict(X).shape == (600,)


@pytest.mark.parametrize("call,words", [
    (lambda X, y: fastbp.train(fastbp.Network([3, 2]), X, y, sample_weight=[1, 2]),
     ["sample_weight", "(4,)", "(2,)"]),
    (lambda X, y: fastbp.train(fastbp.Network([3, 2]), X, y, sample_weight=[1, -1, 1, 1]),
     ["sample_weight[1] = -1.0", "non-negative"]),
    (lambda X, y: fastbp.train(fastbp.Network([3, 2]), X, y, sample_weight=[0, 0, 0, 0]),
     ["sample_weight", "all zeros"]),
    (lambda X, y: fastbp.train(fastbp.Network([3, 2]), X, y,
                               sample_weight=[1, np.nan, 1, 1]), ["sample_weight[1]"]),
    (lambda X, y: fastbp.train(fastbp.Network([3, 2]), X, y, class_weight="even"),
     ["class_weight", "balanced", "even"]),
    (lambda X, y: fastbp.train(fastbp.Network([3, 2]), X, y, class_weight={5: 1.0}),
     ["class_weight", "label 5", "0..1"]),
    (lambda X, y: fastbp.train(fastbp.Network([3, 2]), X, y, class_weight={1: -2}),
     ["class_weight[1] = -2"]),
    (lambda X, y: fastbp.train(fastbp.Network([3, 2]), X, y, class_weight={0: 0, 1: 0}),
     ["every sample the weight 0"]),
    (lambda X, y: fastbp.train(fastbp.Network([3, 2], loss="squared_error"), X,
                               np.ones((4, 2)), class_weight="balanced"),
     ["class_weight", "regression"]),
    (lambda X, y: fastbp.train(fastbp.Network([3, 2], loss="binary_cross_entropy"), X,
                               [[0, 1], [1, 1], [0, 2], [1, 0]]),
     ["y[2, 1] = 2.0", "[0, 1]"]),
    (lambda X, y: fastbp.train(fastbp.Network([3, 2], loss="binary_cross_entropy"), X,
                               [[0, 1], [1, 1], [0, 0], [1, 0]], class_weight={0: 1.0}),
     ["dict", "multi-label"]),
    (lambda X, y: fastbp.train(fastbp.Network([3, 1], loss="binary_cross_entropy"), X,
                               [0, 0.5, 1, 1], class_weight="balanced"), ["0/1 targets"]),
])
def test_bad_weights_and_targets_are_value_errors_naming_them(call, words):
    X, y = np.ones((4, 3)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError) as info:
        call(X, y)
    message = str(info.value)
    assert all(word in message for word in words), message


def test_a_missing_class_weight_key_is_named_plainly():
    with pytest.raises(ValueError, match=re.escape("class_weight has the label 'a'")):
        sample_weights(fastbp.Network([3, 2]), np.array([0, 1]), None, {"a": 1.0})
