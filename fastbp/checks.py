"""Argument checks shared by every public entry point.

They run in Python before any compiled code, so bad input gets a clear
``ValueError`` that names the argument and the offending value, never a
crash or a silent wrong answer inside a kernel.
"""

import math
import numbers
import os

import numpy as np

from .kernels import cpu_sparse
from .storage import save_problem


def choice(name, value, choices):
    """Return ``value`` if it is one of ``choices``, else raise naming them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def positive_int(name, value, minimum=1):
    """An integer >= minimum (bools and floats such as 2.5 are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def flag(name, value):
    """A bool (numpy bools too); refuses truthy strings such as "no"."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def path_like(name, value):
    """A str / bytes / os.PathLike path, as a non-empty str (bytes decoded as
    the file system does)."""
    if not isinstance(value, (str, bytes, os.PathLike)):
        raise ValueError(f"{name} must be a path (str, bytes or os.PathLike); got {value!r}")
    path = os.fsdecode(os.fspath(value))
    if not path:
        raise ValueError(f"{name} must be a path; got an empty name")
    return path


def file_path(name, value):
    """A path to write: a file (not a folder) whose folder exists, as a str."""
    path = path_like(name, value)
    if os.path.isdir(path):
        raise ValueError(f"{name}: {path!r} is a folder, not a file name")
    # Its folder (links followed), and not a device, FIFO or other non-file a save would destroy.
    problem = save_problem(path)[1]
    if problem:
        raise ValueError(f"{name}: cannot save to {path!r}: {problem}")
    return path


def positive_float(name, value):
    """A finite real number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a positive number; got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return value


class UsageError(ValueError):
    """Arguments that contradict each other (fastbp-train: exit status 2)."""


# How the shared checks name what they refuse: as fastbp's Python API takes
# it, or as fastbp-train's options (the command line passes CLI), so that
# both run the very same checks and each reads in its caller's words.
API = {"lr=": "lr={!r}", "lr": "lr", "batch_size": "batch_size", "resume": "resume=True",
       "checkpoint": "checkpoint=PATH", "device=": "device={!r}",
       "fallback": "device='cpu' (or 'auto')"}
CLI = {"lr=": "--lr {:g}", "lr": "--lr", "batch_size": "--batch-size", "resume": "--resume",
       "checkpoint": "--checkpoint CKPT.npz", "device=": "--device {}",
       "fallback": "--device cpu (or auto)"}


def sgd_step(lr, batch_size, dtype, names=API):
    """Refuse an lr whose step lr / batch_size rounds to 0 in ``dtype``:
    SGD would silently train nothing."""
    with np.errstate(over="ignore"):  # a huge lr overflows: the divergence check's case
        vanishes = np.dtype(dtype).type(lr / batch_size) == 0
    if vanishes:
        raise ValueError(f"{names['lr='].format(lr)} is too small for {np.dtype(dtype).name}: "
                         f"{names['lr']} / {names['batch_size']} rounds to 0, so SGD would "
                         "never change the weights")


def features(name, X, n_features, dtype, unchanged=None):
    """Inputs as a C-contiguous (n, n_features) array of ``dtype``.

    Integer, Fortran-order and strided arrays are accepted and converted, so
    they give exactly the result of the equivalent contiguous float array.
    unchanged : None, or a test of the converted array that is True where it
    holds exactly values checked before (Trainer.set_data: a plan's
    compressed rows, made from finite data); then the scan for non-finite
    values is skipped.
    """
    try:
        A = np.asarray(X)
    except Exception as exc:  # e.g. ragged nested lists
        raise ValueError(f"{name} could not be read as an array: {exc}") from None
    if A.dtype == object or not (np.issubdtype(A.dtype, np.number) or A.dtype == bool):
        raise ValueError(f"{name} must hold numbers; got dtype {A.dtype}")
    if np.issubdtype(A.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real; got dtype {A.dtype}")
    if A.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, {n_features}); got shape {A.shape}")
    if A.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    if A.shape[1] != n_features:
        raise ValueError(
            f"{name} has {A.shape[1]} features per sample but the network expects {n_features}"
        )
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, by position
        converted = np.ascontiguousarray(A, dtype=dtype)
    if unchanged is not None and unchanged(converted):
        return converted
    return _finite(name, A, converted)


def labels(name, y, n_samples, n_classes):
    """Class labels as a C-contiguous int64 (n,) array with values in [0, n_classes)."""
    try:
        a = np.asarray(y)
    except Exception as exc:  # e.g. ragged nested lists
        raise ValueError(f"{name} could not be read as an array: {exc}") from None
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D class labels; got shape {a.shape}")
    if a.shape[0] != n_samples:
        raise ValueError(f"{name} has {a.shape[0]} labels but {_inputs_of(name)} has "
                         f"{n_samples} samples")
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or not (a == np.round(a)).all():
            bad = int(np.flatnonzero(~np.isfinite(a) | (a != np.round(a)))[0])
            raise ValueError(
                f"{name} must hold integer class labels; {name}[{bad}] = {a[bad].item()!r}"
            )
    elif a.dtype == bool:  # True/False are not class indices; be explicit
        raise ValueError(f"{name} must hold integer class labels, not booleans "
                         f"(use {name}.astype(int)); got dtype bool")
    elif not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class labels; got dtype {a.dtype}")
    out_of_range = (a < 0) | (a >= n_classes)
    if out_of_range.any():
        bad = int(np.flatnonzero(out_of_range)[0])
        raise ValueError(
            f"{name}[{bad}] = {a[bad].item()!r} is not a class label in 0..{n_classes - 1}"
        )
    return np.ascontiguousarray(a, dtype=np.int64)


def targets(name, y, n_samples, n_outputs, dtype):
    """Regression targets as a C-contiguous (n, n_outputs) array of ``dtype``."""
    try:
        a = np.asarray(y)
    except Exception as exc:  # e.g. ragged nested lists
        raise ValueError(f"{name} could not be read as an array: {exc}") from None
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
        raise ValueError(f"{name} must hold real numbers; got dtype {a.dtype}")
    if a.ndim == 1 and n_outputs == 1:
        a = a.reshape(-1, 1)
    if a.ndim != 2 or a.shape[1] != n_outputs:
        raise ValueError(
            f"{name} must have shape (n_samples, {n_outputs}); got shape {a.shape}"
        )
    if a.shape[0] != n_samples:
        raise ValueError(f"{name} has {a.shape[0]} rows but {_inputs_of(name)} has "
                         f"{n_samples} samples")
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, by position
        converted = np.ascontiguousarray(a, dtype=dtype)
    return _finite(name, a, converted)


def binary_targets(name, y, n_samples, n_outputs, dtype):
    """Targets of logistic outputs: ``targets`` whose values lie in [0, 1]
    (0/1 labels, an indicator matrix, or probabilities)."""
    a = targets(name, y, n_samples, n_outputs, dtype)
    outside = (a < 0) | (a > 1)
    if outside.any():
        index = tuple(int(i) for i in np.argwhere(outside)[0])
        raise ValueError(f"{name}[{', '.join(map(str, index))}] = {a[index].item()!r}: "
                         "binary_cross_entropy needs targets in [0, 1] (0/1 labels or an "
                         "indicator matrix)")
    return a


def sample_weight(name, w, n_samples, dtype=np.float64):
    """Per-sample weights as a C-contiguous (n,) array of ``dtype``: finite,
    non-negative, not all zero."""
    try:
        a = np.asarray(w)
    except Exception as exc:
        raise ValueError(f"{name} could not be read as an array: {exc}") from None
    if not np.issubdtype(a.dtype, np.number) or a.dtype == bool or np.iscomplexobj(a):
        raise ValueError(f"{name} must hold real numbers; got dtype {a.dtype}")
    if a.ndim != 1 or a.shape[0] != n_samples:
        raise ValueError(f"{name} must have shape ({n_samples},), one weight per sample; got "
                         f"shape {a.shape}")
    a = np.ascontiguousarray(a, dtype=dtype)
    bad = ~np.isfinite(a) | (a < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{i}] = {a[i].item()!r}: sample weights must be finite and "
                         "non-negative")
    if n_samples and not a.any():
        raise ValueError(f"{name} is all zeros: no sample would count")
    return a


def _inputs_of(name):
    """The inputs that go with labels or targets ``name``: "validation y" ->
    "validation X"."""
    return name[:-1] + "X" if name.endswith("y") else "X"


def _finite(name, original, converted):
    """``converted`` if all its values are finite, else raise naming the first
    bad entry, and whether it was non-finite already or overflowed the dtype."""
    if converted.ndim == 2 and converted.size and converted.dtype in (np.float32, np.float64):
        if cpu_sparse.count_nonfinite(converted) == 0:  # one parallel pass, no (n, p) temporary
            return converted
    bad = ~np.isfinite(converted)
    if not bad.any():
        return converted
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    value = original[index].item()
    where = f"{name}[{', '.join(map(str, index))}]"
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} contains a non-finite value (NaN or inf): {where} = {value}")
    raise ValueError(f"{where} = {value!r} does not fit in {converted.dtype.name} "
                     "(it overflows to inf)")
