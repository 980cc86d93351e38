import os
import signal

# One Numba cache for the suite and every process it starts, whatever
# XDG_CACHE_HOME a test sets (the CLI tests set a private one): the default
# folder of kernels/numba_cache.py, named before Numba reads its settings.
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
    "fastbp", "numba"))

import numpy as np
import pytest

import fastbp

SIZES = (1, 7, 33, 129)  # awkward layer widths: one, odd, just past 32, just past 128
BATCHES = (1, 7, 100)  # one sample, odd, Example 6.2's n_b
ACTIVATIONS = ("relu", "sigmoid", "tanh", "identity")
LOSSES = ("cross_entropy", "squared_error", "binary_cross_entropy")
# Norm-wise relative error allowed against the float64 reference.
RTOL = {"float64": 1e-10, "float32": 1e-4}


def rel_err(actual, expected):
    """max |actual - expected| / max |expected| (norm-wise relative error)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    scale = max(np.abs(expected).max(initial=0.0), 1e-30)
    return np.abs(actual - expected).max(initial=0.0) / scale


def data(seed, *shapes, dtype="float64"):
    """Seeded standard-normal arrays of the given shapes."""
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype(dtype) for shape in shapes]


def check_backprop(sizes, n, act, loss, dtype, device):
    """fastbp.backprop on ``device`` against the float64 reference, with
    non-zero biases so that their gradient path is exercised."""
    net = fastbp.Network(sizes, activation=act, loss=loss, dtype=dtype, seed=n)
    rng = np.random.default_rng(sum(sizes) + n)
    for W, b in net.layers:
        b[:] = rng.normal(size=b.shape) * 0.1
    X = rng.normal(size=(n, sizes[0]))
    y = targets_for(loss, rng, n, sizes[-1])
    J, grads = fastbp.backprop(net, X, y, device=device)
    layers64 = [(W.astype(np.float64), b.astype(np.float64)) for W, b in net.layers]
    X64 = X.astype(dtype).astype(np.float64)
    J_ref, grads_ref = fastbp.reference.backprop(layers64, X64, y, act, loss)
    assert rel_err(J, J_ref) <= RTOL[dtype]
    for index, ((dW, db), (dW_ref, db_ref)) in enumerate(zip(grads, grads_ref)):
        assert dW.shape == dW_ref.shape and db.shape == db_ref.shape
        assert rel_err(dW, dW_ref) <= RTOL[dtype], f"dW of layer {index}"
        assert rel_err(db, db_ref) <= RTOL[dtype], f"db of layer {index}"


def targets_for(loss, rng, n, m):
    """Labels (cross_entropy), 0/1 indicators (binary_cross_entropy) or
    real targets (squared_error) for n samples and m outputs."""
    if loss == "cross_entropy":
        return rng.integers(0, m, n)
    if loss == "binary_cross_entropy":
        return rng.integers(0, 2, (n, m)).astype(np.float64)
    return rng.normal(size=(n, m))


@pytest.fixture
def ctrl_c_raises():
    """A SIGINT raises KeyboardInterrupt, as in an interactive shell, even when
    pytest runs as a script's background job: such a job inherits SIGINT
    ignored, and a test's real Ctrl-C would then do nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def mnist():
    """The real MNIST through $FASTBP_DATA_DIR; skipped with a reason if absent."""
    folder = os.environ.get("FASTBP_DATA_DIR")
    if not folder or fastbp.datasets.missing_files(folder):
        pytest.skip("real MNIST not found: set FASTBP_DATA_DIR to a folder with the four "
                    "IDX files (CI sets it to ../shared/data/mnist)")
    return fastbp.datasets.mnist(folder)


@pytest.fixture(params=[False, True], ids=["blocks", "panels"])
def panels(request, monkeypatch):
    """Train (and infer) with the first layer on panels (kernels/cpu_panels.py),
    sparse batches too however their non-zeros spread, and under plain SGD
    every hidden layer that pads little (``hidden_layers``) however small,
    the updates on panels (the first layer's dense batches' and the hidden
    layers') reading inputs of an odd width packed (``pack_inputs``), of an
    even width as they are; or every layer on W and W^T; whatever the vector
    width in effect."""
    from fastbp.kernels import cpu_panels
    monkeypatch.setattr(cpu_panels, "worthwhile", lambda sizes, dtype: request.param)
    monkeypatch.setattr(cpu_panels, "rows_alias", lambda columns, dtype: columns % 2 == 1)
    monkeypatch.setattr(cpu_panels, "HIDDEN_PANEL_BYTES", 0)
    monkeypatch.setattr(cpu_panels, "HIDDEN_PANEL_ROWS", 0)  # however small the batch
    monkeypatch.setattr(fastbp.sparse_rows, "MAX_UNION_RATIO", np.inf)
    return request.param
