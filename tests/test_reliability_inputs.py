"""Bad input at every public entry: a clear ValueError naming the culprit.

And the inputs that are merely unusual (integer pixels, Fortran order,
strided views, oversized batches) give exactly the result of the plain ones.
"""

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastbp

RNG = np.random.default_rng(0)
X = RNG.normal(size=(30, 4))
Y = RNG.integers(0, 3, 30)
T = RNG.normal(size=(30, 2))


def clf():
    return fastbp.Network([4, 5, 3], dtype="float64", seed=0)


def reg():
    return fastbp.Network([4, 5, 2], loss="squared_error", dtype="float64", seed=0)


def with_value(a, index, value):
    a = np.array(a, dtype=float)
    a[index] = value
    return a


def train(net=None, X=X, y=Y, **kw):
    kw.setdefault("epochs", 1)
    kw.setdefault("device", "cpu")
    return fastbp.train(clf() if net is None else net, X, y, **kw)


def layers_set(layers):
    net = clf()
    net.layers = layers(net)
    return net


# (id, call, [regex fragments that the message must contain, in order])
BAD = [
    # --- Network ------------------------------------------------------------
    ("sizes-str", lambda: fastbp.Network("784,10"), ["sizes", "'784,10'"]),
    ("sizes-int", lambda: fastbp.Network(784), ["sizes", "784"]),
    ("sizes-dict", lambda: fastbp.Network({4: 0, 3: 0}), ["sizes", r"\{4: 0"]),
    ("sizes-2d", lambda: fastbp.Network(np.array([[4, 3]])), ["sizes", r"\[\[4, 3\]\]"]),
    ("sizes-one", lambda: fastbp.Network([784]), ["sizes", r"\[784\]"]),
    ("sizes-zero", lambda: fastbp.Network([784, 0]), [r"sizes\[1\]", "0"]),
    ("sizes-neg", lambda: fastbp.Network([784, -5, 10]), [r"sizes\[1\]", "-5"]),
    ("sizes-float", lambda: fastbp.Network([784.0, 10]), [r"sizes\[0\]", "784.0"]),
    ("sizes-bool", lambda: fastbp.Network([4, True]), [r"sizes\[1\]", "True"]),
    ("sizes-none", lambda: fastbp.Network(None), ["sizes", "None"]),
    ("one-class", lambda: fastbp.Network([4, 1]), [r"sizes\[-1\] = 1", "2 classes"]),
    ("activation", lambda: fastbp.Network([4, 3], activation="softmax"),
     ["activation", "identity", "relu", "sigmoid", "tanh", "'softmax'"]),
    ("activation-none", lambda: fastbp.Network([4, 3], activation=None),
     ["activation", "relu", "None"]),
    ("loss", lambda: fastbp.Network([4, 3], loss="mse"),
     ["loss", "cross_entropy", "squared_error", "'mse'"]),
    ("dtype", lambda: fastbp.Network([4, 3], dtype="float16"),
     ["dtype", "float32", "float64", "'float16'"]),
    ("dtype-int", lambda: fastbp.Network([4, 3], dtype=np.int32), ["dtype", "'int32'"]),
    ("dtype-none", lambda: fastbp.Network([4, 3], dtype=None), ["dtype", "None"]),
    ("dtype-junk", lambda: fastbp.Network([4, 3], dtype="banana"), ["dtype", "'banana'"]),
    ("net-seed-neg", lambda: fastbp.Network([4, 3], seed=-1), ["seed", "-1"]),
    ("net-seed-float", lambda: fastbp.Network([4, 3], seed=1.5), ["seed", "1.5"]),
    ("net-seed-str", lambda: fastbp.Network([4, 3], seed="0"), ["seed", "'0'"]),
    # --- train: scalars -------------------------------------------------------
    ("net-type", lambda: fastbp.train("net", X, Y), ["net", "Network", "str"]),
    ("lr-zero", lambda: train(lr=0), ["lr", "0"]),
    ("lr-neg", lambda: train(lr=-0.1), ["lr", r"-0\.1"]),
    ("lr-nan", lambda: train(lr=float("nan")), ["lr", "nan"]),
    ("lr-inf", lambda: train(lr=float("inf")), ["lr", "inf"]),
    ("lr-str", lambda: train(lr="0.1"), ["lr", "'0.1'"]),
    ("lr-bool", lambda: train(lr=True), ["lr", "True"]),
    ("lr-and-optimizer", lambda: train(lr=0.1, optimizer=fastbp.SGD()), ["lr", "optimizer"]),
    ("lr-underflows", lambda: fastbp.train(fastbp.Network([4, 5, 3], seed=0), X, Y, lr=1e-46,
                                           batch_size=10, epochs=1),
     ["lr=1e-46", "float32", "rounds to 0"]),
    ("batch-zero", lambda: train(batch_size=0), ["batch_size", "0"]),
    ("batch-neg", lambda: train(batch_size=-10), ["batch_size", "-10"]),
    ("batch-float", lambda: train(batch_size=2.5), ["batch_size", "2.5"]),
    ("batch-str", lambda: train(batch_size="100"), ["batch_size", "'100'"]),
    ("batch-bool", lambda: train(batch_size=True), ["batch_size", "True"]),
    ("batch-nan", lambda: train(batch_size=float("nan")), ["batch_size", "nan"]),
    ("epochs-zero", lambda: train(epochs=0), ["epochs", "0"]),
    ("epochs-float", lambda: train(epochs=1.5), ["epochs", "1.5"]),
    ("epochs-inf", lambda: train(epochs=float("inf")), ["epochs", "inf"]),
    ("epochs-none", lambda: train(epochs=None), ["epochs", "None"]),
    ("eval-neg", lambda: train(eval_every=-1), ["eval_every", "-1"]),
    ("eval-float", lambda: train(eval_every=2.5), ["eval_every", "2.5"]),
    ("seed-neg", lambda: train(seed=-3), ["seed", "-3"]),
    ("seed-float", lambda: train(seed=0.5), ["seed", "0.5"]),
    ("device", lambda: train(device="gpu"), ["device", "auto", "cpu", "cuda", "numpy", "'gpu'"]),
    ("device-case", lambda: train(device="CPU"), ["device", "'CPU'"]),
    ("device-none", lambda: train(device=None), ["device", "None"]),
    ("progress", lambda: train(progress=3), ["progress", "3"]),
    ("checkpoint-type", lambda: train(checkpoint=123), ["checkpoint", "123"]),
    ("checkpoint-folder", lambda: train(checkpoint="/no/such/folder/c.npz"),
     ["checkpoint", "/no/such/folder"]),
    ("resume-str", lambda: train(checkpoint="c.npz", resume="no"), ["resume", "'no'"]),
    ("resume-alone", lambda: train(resume=True), ["resume", "checkpoint"]),
    # --- train: validation ----------------------------------------------------
    ("val-one", lambda: train(validation=(X,)), ["validation", "pair"]),
    ("val-three", lambda: train(validation=(X, Y, X)), ["validation", "pair"]),
    ("val-str", lambda: train(validation="xy"), ["validation", "pair"]),
    ("val-array", lambda: train(validation=X), ["validation", "pair"]),
    ("val-features", lambda: train(validation=(X[:, :3], Y)),
     ["validation X", "3 features", "expects 4"]),
    ("val-length", lambda: train(validation=(X, Y[:-1])),
     ["validation y", "29 labels", "validation X has 30 samples"]),
    ("val-nan", lambda: train(validation=(with_value(X, (4, 2), np.nan), Y)),
     [r"validation X\[4, 2\] = nan"]),
    ("val-label", lambda: train(validation=(X, np.r_[Y[:-1], 3])),
     [r"validation y\[29\] = 3", r"0\.\.2"]),
    ("val-empty", lambda: train(validation=(X[:0], Y[:0])), ["validation X", "empty"]),
    # --- train: X ---------------------------------------------------------------
    ("X-1d", lambda: train(X=X[:, 0]), ["X", "2-D", r"\(30,\)"]),
    ("X-3d", lambda: train(X=X[:, :, None]), ["X", "2-D", r"\(30, 4, 1\)"]),
    ("X-features", lambda: train(X=np.zeros((30, 5))), ["X", "5 features", "expects 4"]),
    ("X-empty", lambda: train(X=X[:0], y=Y[:0]), ["X", "empty"]),
    ("X-nan", lambda: train(X=with_value(X, (7, 1), np.nan)), [r"X\[7, 1\] = nan"]),
    ("X-inf", lambda: train(X=with_value(X, (3, 0), -np.inf)), [r"X\[3, 0\] = -inf"]),
    ("X-overflow", lambda: fastbp.train(fastbp.Network([4, 3]), with_value(X, (2, 3), 1e300),
                                        Y, epochs=1),
     [r"X\[2, 3\] = 1e\+300", "float32"]),
    ("X-object", lambda: train(X=np.array([[1, 2, 3, None]] * 30, dtype=object)),
     ["X", "numbers", "object"]),
    ("X-str", lambda: train(X=X.astype(str)), ["X", "numbers", "<U"]),
    ("X-complex", lambda: train(X=X + 1j), ["X", "real", "complex"]),
    ("X-ragged", lambda: train(X=[[1, 2, 3, 4], [1, 2]], y=[0, 1]), ["X", "array"]),
    ("X-none", lambda: train(X=None), ["X", "object"]),
    # --- train: y (labels) ------------------------------------------------------
    ("y-length", lambda: train(y=Y[:-2]), ["y", "28 labels", "30 samples"]),
    ("y-2d", lambda: train(y=Y[:, None]), ["y", "1-D", r"\(30, 1\)"]),
    ("y-negative", lambda: train(y=np.r_[Y[:5], -1, Y[6:]]), [r"y\[5\] = -1", r"0\.\.2"]),
    ("y-too-big", lambda: train(y=np.r_[Y[:-1], 3]), [r"y\[29\] = 3", r"0\.\.2"]),
    ("y-fraction", lambda: train(y=with_value(Y, 11, 2.5)), ["integer", r"y\[11\] = 2\.5"]),
    ("y-nan", lambda: train(y=with_value(Y, 0, np.nan)), ["integer", r"y\[0\] = nan"]),
    ("y-str", lambda: train(y=Y.astype(str)), ["y", "integer", "<U"]),
    ("y-bool", lambda: train(y=Y > 0), ["y", "booleans", "bool"]),
    ("y-none", lambda: train(y=None), ["y", "1-D", r"\(\)"]),
    ("y-ragged", lambda: train(y=[[0], [1, 2]]), ["y", "array"]),
    # --- train: regression targets ----------------------------------------------
    ("T-shape", lambda: fastbp.train(reg(), X, T[:, :1], epochs=1),
     ["y", r"\(n_samples, 2\)", r"\(30, 1\)"]),
    ("T-length", lambda: fastbp.train(reg(), X, T[:-1], epochs=1), ["y", "29 rows", "30"]),
    ("T-nan", lambda: fastbp.train(reg(), X, with_value(T, (9, 1), np.nan), epochs=1),
     [r"y\[9, 1\] = nan"]),
    ("T-str", lambda: fastbp.train(reg(), X, T.astype(str), epochs=1), ["y", "real", "<U"]),
    # --- backprop ---------------------------------------------------------------
    ("bp-net", lambda: fastbp.backprop(None, X, Y), ["net", "Network", "NoneType"]),
    ("bp-features", lambda: fastbp.backprop(clf(), X[:, :2], Y), ["X", "2 features"]),
    ("bp-label", lambda: fastbp.backprop(clf(), X, np.r_[Y[:-1], 7]), [r"y\[29\] = 7"]),
    ("bp-device", lambda: fastbp.backprop(clf(), X, Y, device="tpu"), ["device", "'tpu'"]),
    ("bp-empty", lambda: fastbp.backprop(clf(), X[:0], Y[:0]), ["X", "empty"]),
    # --- inference ---------------------------------------------------------------
    ("forward-features", lambda: clf().forward(X[:, :3]), ["X", "3 features", "expects 4"]),
    ("forward-1d", lambda: clf().forward(X[0]), ["X", "2-D", r"\(4,\)"]),
    ("forward-nan", lambda: clf().forward(with_value(X, (0, 0), np.nan)), [r"X\[0, 0\] = nan"]),
    ("predict-features", lambda: clf().predict(np.zeros((2, 9))), ["X", "9 features"]),
    ("predict-empty", lambda: clf().predict(np.zeros((0, 4))), ["X", "empty"]),
    ("proba-features", lambda: clf().predict_proba(np.zeros((2, 1))), ["X", "1 features"]),
    ("proba-regression", lambda: reg().predict_proba(X), ["predict_proba", "cross_entropy"]),
    ("evaluate-label", lambda: clf().evaluate(X, np.r_[Y[:-1], 3]), [r"y\[29\] = 3"]),
    ("evaluate-length", lambda: clf().evaluate(X, Y[:3]), ["y", "3 labels", "30 samples"]),
    # --- a network whose layers were replaced by hand ---------------------------
    ("layers-none", lambda: layers_set(lambda n: None).forward(X),
     ["net.layers", "2 \\(W, b\\) pairs", "NoneType"]),
    ("layers-count", lambda: layers_set(lambda n: n.layers[:1]).forward(X),
     ["net.layers", "1 layers"]),
    ("layers-triple", lambda: layers_set(lambda n: [(1, 2, 3), n.layers[1]]).forward(X),
     [r"net.layers\[0\]", "pair", "length 3"]),
    ("layers-shape", lambda: layers_set(lambda n: [(n.layers[0][0].T, n.layers[0][1]),
                                                   n.layers[1]]).forward(X),
     [r"layers\[0\] W", r"\(5, 4\)", r"\(4, 5\)"]),
    ("layers-dtype", lambda: layers_set(lambda n: [(W.astype(np.float32), b)
                                                   for W, b in n.layers]).predict(X),
     [r"layers\[0\] W", "float64", "float32"]),
    ("layers-nan", lambda: layers_set(lambda n: [n.layers[0], (n.layers[1][0],
                                                               n.layers[1][1] * np.nan)]
                                      ).evaluate(X, Y),
     [r"layers\[1\] b", "non-finite"]),
    ("layers-strided", lambda: layers_set(lambda n: [(np.asfortranarray(n.layers[0][0]),
                                                      n.layers[0][1]), n.layers[1]]).forward(X),
     [r"layers\[0\] W", "C-contiguous"]),
    # --- datasets ---------------------------------------------------------------
    ("mnist-dir", lambda: fastbp.datasets.mnist(123), ["data_dir", "123"]),
    ("folder-none", lambda: fastbp.datasets.load_folder(None), ["folder", "None"]),
    ("read-idx-fd", lambda: fastbp.datasets.read_idx(0), ["path", "0"]),
]


@pytest.mark.parametrize("call, fragments", [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_bad_input_is_a_value_error_naming_the_culprit(call, fragments):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    pattern = ".*".join(fragments)
    assert re.search(pattern, message, re.DOTALL), f"{pattern!r} not in {message!r}"
    assert not isinstance(info.value, fastbp.DataError)  # nothing is wrong with a file


def test_the_smallest_learning_rates_a_dtype_can_hold_are_accepted():
    """Only a step lr / batch_size that is exactly 0 in the dtype is refused:
    a float32 subnormal one still moves the (zero) biases; float64 holds far
    smaller ones."""
    for dtype, lr in (("float32", 1e-44), ("float64", 1e-300)):
        net = fastbp.Network([4, 5, 3], dtype=dtype, seed=0)
        before = [p.copy() for layer in net.layers for p in layer]
        fastbp.train(net, X, Y, lr=lr, batch_size=1, epochs=1)
        after = [p for layer in net.layers for p in layer]
        assert any(not np.array_equal(a, b) for a, b in zip(after, before))


def test_bad_input_is_refused_before_any_weight_changes():
    net = clf()
    before = [W.copy() for W, _ in net.layers]
    with pytest.raises(ValueError):
        fastbp.train(net, X, np.r_[Y[:-1], 3], epochs=1)
    assert all(np.array_equal(W, W0) for (W, _), W0 in zip(net.layers, before))


# --- unusual but valid inputs give bitwise the same results ---------------------

PIXELS = RNG.integers(0, 256, size=(64, 6)).astype(np.uint8)
LABELS = RNG.integers(0, 3, 64)


def variants(pixels):
    """The same values as uint8, int64, float, Fortran order and strided views."""
    wide = np.zeros((pixels.shape[0] * 2, pixels.shape[1] * 3), np.float64)
    wide[::2, ::3] = pixels
    return {
        "uint8": pixels,
        "int64": pixels.astype(np.int64),
        "float64": pixels.astype(np.float64),
        "fortran": np.asfortranarray(pixels.astype(np.float32)),
        "strided": wide[::2, ::3],
        "reversed": np.ascontiguousarray(pixels[::-1])[::-1],  # negative strides
        "list": pixels.tolist(),
    }


def label_variants(labels):
    return {"int64": labels, "int32": labels.astype(np.int32),
            "uint8": labels.astype(np.uint8), "float": labels.astype(np.float64),
            "strided": np.repeat(labels, 2)[::2], "list": labels.tolist()}


def reference_input(dtype):
    return np.ascontiguousarray(PIXELS, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", list(variants(PIXELS)))
def test_unusual_inputs_give_bitwise_the_same_inference(kind, dtype):
    net = fastbp.Network([6, 5, 3], dtype=dtype, seed=1)
    X0, X1 = reference_input(dtype), variants(PIXELS)[kind]
    if kind in ("fortran", "strided", "reversed"):
        assert not X1.flags.c_contiguous
    assert np.array_equal(net.forward(X1), net.forward(X0))
    assert np.array_equal(net.predict(X1), net.predict(X0))
    assert np.array_equal(net.predict_proba(X1), net.predict_proba(X0))
    assert net.evaluate(X1, LABELS) == net.evaluate(X0, LABELS)


@pytest.mark.parametrize("device", ["cpu", "numpy"])
@pytest.mark.parametrize("kind", list(variants(PIXELS)))
def test_unusual_inputs_give_bitwise_the_same_backprop(kind, device):
    net = fastbp.Network([6, 5, 3], dtype="float32", seed=1)
    J0, g0 = fastbp.backprop(net, reference_input("float32"), LABELS, device=device)
    J1, g1 = fastbp.backprop(net, variants(PIXELS)[kind], LABELS, device=device)
    assert J0 == J1
    assert all(np.array_equal(a, b) for pair0, pair1 in zip(g0, g1)
               for a, b in zip(pair0, pair1))


def trained(X, y, device="cpu", **kw):
    net = fastbp.Network([6, 5, 3], dtype="float32", seed=1)
    hist = fastbp.train(net, X, y, lr=0.001, batch_size=10, epochs=2, device=device,
                        validation=(X, y), eval_every=3, **kw)
    return net, hist


def same_run(a, b):
    (net0, h0), (net1, h1) = a, b
    return (all(np.array_equal(W0, W1) and np.array_equal(b0, b1)
                for (W0, b0), (W1, b1) in zip(net0.layers, net1.layers))
            and h0.batch_cost == h1.batch_cost and h0.val_cost == h1.val_cost
            and h0.batch_error == h1.batch_error)


@pytest.mark.parametrize("device", ["cpu", "numpy"])
@pytest.mark.parametrize("kind", list(variants(PIXELS)))
def test_unusual_inputs_give_bitwise_the_same_training(kind, device):
    base = trained(reference_input("float32"), LABELS, device)
    assert same_run(trained(variants(PIXELS)[kind], LABELS, device), base)


@pytest.mark.parametrize("kind", list(label_variants(LABELS)))
def test_unusual_labels_give_bitwise_the_same_training(kind):
    X0 = reference_input("float32")
    assert same_run(trained(X0, label_variants(LABELS)[kind]), trained(X0, LABELS))


def test_regression_targets_as_1d_column_or_fortran_are_the_same():
    net = fastbp.Network([6, 4, 1], loss="squared_error", dtype="float64", seed=0)
    X0 = reference_input("float64") / 255
    t = np.sin(X0.sum(axis=1))
    results = []
    for target in (t, t[:, None], np.asfortranarray(np.c_[t, t])[:, :1]):
        net2 = fastbp.Network([6, 4, 1], loss="squared_error", dtype="float64", seed=0)
        fastbp.train(net2, X0, target, lr=0.1, batch_size=16, epochs=2)
        results.append(net2.layers[0][0])
    assert np.array_equal(results[0], results[1]) and np.array_equal(results[0], results[2])
    assert net.n_outputs == 1


@pytest.mark.parametrize("device", ["cpu", "numpy"])
def test_a_batch_larger_than_the_data_is_exactly_full_batch_descent(device):
    """batch_size > n is clamped to n (documented in train): one step per epoch."""
    X0 = reference_input("float32")
    runs = []
    for batch_size in (64, 65, 10**6):
        net = fastbp.Network([6, 5, 3], dtype="float32", seed=1)
        hist = fastbp.train(net, X0, LABELS, lr=0.001, batch_size=batch_size, epochs=3,
                            device=device)
        assert hist.steps_per_epoch == 1 and hist.iterations == 3
        runs.append((net, hist))
    assert same_run(runs[0], runs[1]) and same_run(runs[0], runs[2])


# --- fuzzing: odd arrays anywhere give a result or a ValueError, nothing else ----

DTYPES = st.sampled_from(["uint8", "int8", "int32", "int64", "float16", "float32", "float64",
                          "bool", "complex64", "U3", "O"])
SPECIALS = st.sampled_from([0.0, 1.0, -1.0, 2.5, 3.0, np.nan, np.inf, -np.inf, 1e300, 255.0])


def odd_array(shape, dtype, fill, order):
    with np.errstate(over="ignore", invalid="ignore"):
        a = np.full(shape, fill).astype(dtype)
    if order == "F":
        a = np.asfortranarray(a)
    elif order == "strided" and a.ndim:
        a = np.repeat(a, 2, axis=0)[::2]
    return a


@st.composite
def odd_pairs(draw):
    """(X, y) that are often nearly right: n rows of 3 features and n labels."""
    n = draw(st.integers(0, 6))
    random_shape = st.lists(st.integers(0, 6), max_size=3).map(tuple)
    x_shape = draw(st.one_of(st.just((n, 3)), random_shape))
    y_shape = draw(st.one_of(st.just((n,)), random_shape))
    order = st.sampled_from(["C", "F", "strided"])
    X = odd_array(x_shape, draw(DTYPES), draw(SPECIALS), draw(order))
    y = odd_array(y_shape, draw(DTYPES), draw(st.sampled_from([0, 1, 2, 1.5, -1, np.nan])),
                  draw(order))
    return X, y


@settings(max_examples=300, deadline=None, derandomize=True,  # 1st call may compile
          suppress_health_check=[HealthCheck.too_slow])
@given(pair=odd_pairs(), device=st.sampled_from(["cpu", "numpy"]))
def test_fuzz_odd_inputs_give_a_result_or_a_clear_error(pair, device):
    """Only ValueError (bad input) or DivergenceError (e.g. X of 1e300); the
    network's weights stay finite either way."""
    X, y = pair
    net = fastbp.Network([3, 2], dtype="float64", seed=0)
    for call in (lambda: fastbp.train(net, X, y, epochs=1, batch_size=4, device=device),
                 lambda: fastbp.backprop(net, X, y, device=device),
                 lambda: net.evaluate(X, y), lambda: net.predict(X)):
        try:
            call()
        except (ValueError, fastbp.DivergenceError) as exc:
            assert str(exc)
        assert all(np.isfinite(W).all() and np.isfinite(b).all() for W, b in net.layers)
