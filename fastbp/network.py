"""Network: the L-layer fully connected model of (6.11) and (6.16)."""

import itertools
import math
import numbers

import numpy as np

from . import checks
from .errors import DataError
from .inference import forward_chunks
from .kernels import codes, cpu
from .kernels.config import CHUNK_ROWS
from .storage import CHECKPOINT_FORMAT, NETWORK_FORMAT, atomic_save_npz, load_npz

DTYPES = ("float32", "float64")
FORMAT_VERSION = 1


class Network:
    """A fully connected network trained with Algorithm 6.1.

    Parameters
    ----------
    sizes : sequence of int
        ``[p, U_1, ..., U_{L-1}, M]``: inputs, hidden units per layer, outputs.
        ``[784, 10]`` is logistic regression, ``[784, 200, 10]`` Example 6.2.
    activation : "relu" | "sigmoid" | "tanh" | "identity"
        h of every hidden layer (the last layer has none, (6.24c)).
    loss : "cross_entropy" | "squared_error" | "binary_cross_entropy"
        Softmax cross-entropy for M-class classification (6.20; M >= 2),
        squared error for regression with M outputs (6.19), or binary
        cross-entropy of M logistic outputs: binary classification (M = 1)
        or M independent labels (multi-label, y an indicator matrix).
    dtype : "float32" | "float64"
    seed : int
        Seed of the initial weights.

    Initialisation: small random weights, zero biases. Layers followed by a
    ReLU use He-normal, std sqrt(2 / fan_in), which keeps the variance of
    activations constant through ReLUs; the others (sigmoid, tanh, identity
    and the output layer) use Glorot-normal, std sqrt(2 / (fan_in + fan_out)),
    which keeps sigmoid and tanh in their non-saturated range. Weights are
    drawn in float64 and then cast, so float32 and float64 nets start alike.
    """

    def __init__(self, sizes, activation="relu", loss="cross_entropy",
                 dtype="float32", seed=0):
        self.sizes = _check_sizes(sizes)
        self.activation = checks.choice("activation", activation, tuple(codes.ACTIVATIONS))
        self.loss = checks.choice("loss", loss, tuple(codes.LOSSES))
        self.dtype = np.dtype(checks.choice("dtype", _dtype_name(dtype), DTYPES))
        if self.loss == "cross_entropy" and self.sizes[-1] < 2:
            raise ValueError(
                f"sizes[-1] = {self.sizes[-1]}: cross_entropy needs at least 2 classes"
            )
        self.seed = checks.positive_int("seed", seed, minimum=0)
        self.layers = self._initial_layers()

    def _initial_layers(self):
        rng = np.random.default_rng(self.seed)
        layers = []
        last = len(self.sizes) - 2
        for index, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            if self.activation == "relu" and index < last:
                std = math.sqrt(2.0 / fan_in)
            else:
                std = math.sqrt(2.0 / (fan_in + fan_out))
            W = rng.normal(0.0, std, size=(fan_out, fan_in)).astype(self.dtype)
            layers.append((W, np.zeros(fan_out, self.dtype)))
        return layers

    # --- description -------------------------------------------------------

    @property
    def n_params(self):
        """Number of trainable parameters: sum of U_l (U_{l-1} + 1)."""
        return sum(a * b + b for a, b in zip(self.sizes[:-1], self.sizes[1:]))

    @property
    def n_inputs(self):
        return self.sizes[0]

    @property
    def n_outputs(self):
        return self.sizes[-1]

    @property
    def is_classifier(self):
        """True for both classification losses (an error rate is defined)."""
        return self.loss != "squared_error"

    @property
    def takes_labels(self):
        """True when y holds class labels (cross_entropy); else (n, M) targets."""
        return self.loss == "cross_entropy"

    def __repr__(self):
        return (f"Network({self.sizes}, activation={self.activation!r}, "
                f"loss={self.loss!r}, dtype={self.dtype.name!r})")

    def checked_layers(self):
        """(Ws, bs) tuples for the kernels, after checking that ``layers`` still
        has the right shapes, dtype, contiguity and finite values."""
        n_layers = len(self.sizes) - 1
        if not isinstance(self.layers, (list, tuple)) or len(self.layers) != n_layers:
            got = (f"{len(self.layers)} layers" if isinstance(self.layers, (list, tuple))
                   else type(self.layers).__name__)
            raise ValueError(f"net.layers must be a list of {n_layers} (W, b) pairs for "
                             f"sizes {self.sizes}; got {got}")
        Ws, bs = [], []
        for index, pair in enumerate(self.layers):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(f"net.layers[{index}] must be a (W, b) pair; got "
                                 f"{type(pair).__name__} of length {_length(pair)}")
            W, b = pair
            shape_W = (self.sizes[index + 1], self.sizes[index])
            shape_b = (self.sizes[index + 1],)
            for name, a, shape in ((f"layers[{index}] W", W, shape_W),
                                   (f"layers[{index}] b", b, shape_b)):
                if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != self.dtype:
                    got = (a.shape, a.dtype) if isinstance(a, np.ndarray) else type(a).__name__
                    raise ValueError(
                        f"net.{name} must be a {self.dtype.name} array of shape {shape}; got {got}"
                    )
                if not a.flags.c_contiguous or not a.flags.writeable:
                    raise ValueError(f"net.{name} must be a C-contiguous writable array")
                if not np.isfinite(a).all():
                    raise ValueError(f"net.{name} contains non-finite values")
            Ws.append(W)
            bs.append(b)
        return tuple(Ws), tuple(bs)

    # --- inference ---------------------------------------------------------

    def forward(self, X):
        """Z_L, the network's output (6.24): logits, or regression outputs.

        X : (n, p) numbers (any real dtype, any memory order). Returns (n, M).
        """
        X = checks.features("X", X, self.n_inputs, self.dtype)
        Ws, bs = self.checked_layers()
        out = np.empty((X.shape[0], self.n_outputs), self.dtype)
        for start, Z in forward_chunks(self, Ws, bs, X, CHUNK_ROWS):
            out[start:start + Z.shape[0]] = Z
        return out

    def predict_proba(self, X):
        """softmax(Z_L) (6.16d): class probabilities, (n, M); for logistic
        outputs each output's sigmoid(Z_L), (n, M). Classification only."""
        if not self.is_classifier:
            raise ValueError("predict_proba needs a classification loss (cross_entropy or "
                             "binary_cross_entropy); this net does "
                             "regression")
        Z = self.forward(X)
        if not self.takes_labels:
            return 1 / (1 + np.exp(-Z))
        E = np.exp(Z - Z.max(axis=1, keepdims=True))
        return E / E.sum(axis=1, keepdims=True)

    def predict(self, X):
        """Classes (argmax of the logits, int64 (n,)); for logistic outputs
        the 0/1 labels (sigmoid above 1/2), int64 (n,) for one output or (n, M);
        or Z_L (n, M) for regression."""
        Z = self.forward(X)
        if self.takes_labels:
            return Z.argmax(axis=1)
        if self.is_classifier:
            labels = (Z > 0).astype(np.int64)
            return labels[:, 0] if self.n_outputs == 1 else labels
        return Z

    def evaluate(self, X, y):
        """(cost, error) on a data set: the mean cost J (6.18) and the
        misclassification rate (NaN for regression)."""
        X = checks.features("X", X, self.n_inputs, self.dtype)
        Ws, bs = self.checked_layers()
        y = self.check_targets("y", y, X.shape[0])
        return evaluate_prepared(self, Ws, bs, X, y)

    def check_targets(self, name, y, n_samples):
        """Labels (cross_entropy) or targets (the other losses), checked and converted."""
        if self.takes_labels:
            return checks.labels(name, y, n_samples, self.n_outputs)
        if self.is_classifier:
            return checks.binary_targets(name, y, n_samples, self.n_outputs, self.dtype)
        return checks.targets(name, y, n_samples, self.n_outputs, self.dtype)

    # --- persistence -------------------------------------------------------

    def metadata(self):
        return {"format": NETWORK_FORMAT, "version": FORMAT_VERSION, "sizes": self.sizes,
                "activation": self.activation, "loss": self.loss,
                "dtype": self.dtype.name, "seed": self.seed}

    def weight_arrays(self):
        """name -> array for every parameter: W0, b0, W1, b1, ..."""
        arrays = {}
        for index, (W, b) in enumerate(self.layers):
            arrays[f"W{index}"] = W
            arrays[f"b{index}"] = b
        return arrays

    def save(self, path):
        """Write the network to ``path`` (.npz + JSON metadata), atomically."""
        path = checks.file_path("path", path)
        self.checked_layers()
        atomic_save_npz(path, self.weight_arrays(), self.metadata())


def evaluate_prepared(net, Ws, bs, X, y, plan=None):
    """(cost, error) for checked, converted X and y, in CHUNK_ROWS pieces;
    plan : X's first-layer plan, if kept (see ``inference.forward_chunks``)."""
    n = X.shape[0]
    dZ = np.empty((min(CHUNK_ROWS, n), net.n_outputs), net.dtype)
    row_loss = np.empty(dZ.shape[0], net.dtype)
    unweighted = np.zeros(0, net.dtype)
    loss = codes.LOSSES[net.loss]
    total_cost, wrong = 0.0, 0
    for start, Z in forward_chunks(net, Ws, bs, X, CHUNK_ROWS, plan):
        m = Z.shape[0]
        yc = y[start:start + m]
        labels, targets = split_targets(net, yc)
        J = cpu.output_loss(dZ[:m], row_loss[:m], Z, labels, targets, unweighted, loss)
        if net.takes_labels:
            wrong += cpu.count_misclassified(Z, yc)
        elif net.is_classifier:
            wrong += cpu.count_label_misses(Z, yc)
        total_cost += float(J) * m
    error = wrong / n if net.is_classifier else math.nan
    return total_cost / n, error


def forward_macs(sizes, rows):
    """Multiply-adds of a forward pass of ``rows`` samples through layers of
    these ``sizes``: rows times the sum of the layers' U_l U_{l-1} (what
    decides a step's build and its chunk's length)."""
    return rows * sum(a * b for a, b in itertools.pairwise(sizes))


def split_targets(net, y):
    """(labels, targets) for the kernels: the unused one is an empty array."""
    if net.takes_labels:
        return y, np.zeros((0, net.n_outputs), net.dtype)
    return np.zeros(0, np.int64), y


def load(path):
    """Read a network written by ``Network.save``, or the weights of a
    training checkpoint; raises DataError naming the file if it is damaged."""
    path = checks.path_like("path", path)
    arrays, meta = load_npz(path, (NETWORK_FORMAT, CHECKPOINT_FORMAT))
    if meta["format"] == CHECKPOINT_FORMAT:
        meta = meta.get("network")
        if not isinstance(meta, dict):
            raise DataError(f"{path}: checkpoint has no network metadata")
    return network_from(arrays, meta, path)


def network_from(arrays, meta, path):
    """Rebuild a Network from saved arrays and metadata, validating both.

    The arrays are checked against the sizes in the metadata before the
    Network is built, so a file claiming huge layers fails without allocating.
    """
    if not isinstance(meta, dict) or meta.get("version") != FORMAT_VERSION:
        found = meta.get("version") if isinstance(meta, dict) else None
        raise DataError(f"{path}: unsupported format version {found!r} "
                        f"(this fastbp reads version {FORMAT_VERSION})")
    try:
        sizes = _check_sizes(meta["sizes"])
        dtype = np.dtype(checks.choice("dtype", meta["dtype"], DTYPES))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: invalid network metadata ({exc})") from None
    layers = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        pair = []
        for name, shape in ((f"W{index}", (fan_out, fan_in)), (f"b{index}", (fan_out,))):
            a = arrays.get(name)
            if a is None or a.shape != shape or a.dtype != dtype:
                got = None if a is None else f"{a.dtype.name} {a.shape}"
                raise DataError(f"{path}: array {name} should be {dtype.name} {shape}; "
                                f"found {got}")
            if not np.isfinite(a).all():
                raise DataError(f"{path}: array {name} contains non-finite values")
            pair.append(np.ascontiguousarray(a))
        layers.append(tuple(pair))
    try:
        net = Network(sizes, meta["activation"], meta["loss"], dtype.name, meta.get("seed", 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: invalid network metadata ({exc})") from None
    net.layers = layers
    return net


def _check_sizes(sizes):
    if (not isinstance(sizes, (list, tuple, range, np.ndarray))
            or isinstance(sizes, np.ndarray) and sizes.ndim != 1):
        raise ValueError(f"sizes must be a list of layer widths like [784, 200, 10]; got {sizes!r}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least an input and an output width; got {sizes!r}")
    for index, u in enumerate(sizes):
        if isinstance(u, bool) or not isinstance(u, numbers.Integral) or u < 1:
            raise ValueError(f"sizes[{index}] must be a positive integer; got {u!r}")
    return [int(u) for u in sizes]


def _dtype_name(dtype):
    """numpy's name for ``dtype`` ("f4" -> "float32"); the value itself when it
    names no dtype, so the error shows what the user passed. None is refused
    (numpy would read it as float64)."""
    if dtype is None:
        return None
    try:
        return np.dtype(dtype).name
    except (TypeError, ValueError):
        return dtype


def _length(value):
    try:
        return len(value)
    except TypeError:
        return None
