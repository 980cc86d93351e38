import os

import numpy as np
import pytest

import fastbp

SIZES = (1, 7, 33, 129)  # awkward layer widths: one, odd, just past 32, just past 128
BATCHES = (1, 7, 100)  # one sample, odd, Example 6.2's n_b
ACTIVATIONS = ("relu", "sigmoid", "tanh", "identity")
LOSSES = ("cross_entropy", "squared_error")
# Norm-wise relative error allowed against the float64 reference.
RTOL = {"float64": 1e-10, "float32": 1e-4}


def rel_err(actual, expected):
    """max |actual - expected| / max |expected| (norm-wise relative error)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    scale = max(np.abs(expected).max(initial=0.0), 1e-30)
    return np.abs(actual - expected).max(initial=0.0) / scale


def targets_for(loss, rng, n, m):
    if loss == "cross_entropy":
        return rng.integers(0, m, n)
    return rng.normal(size=(n, m))


@pytest.fixture(scope="session")
def mnist():
    """The real MNIST through $FASTBP_DATA_DIR; skipped with a reason if absent."""
    folder = os.environ.get("FASTBP_DATA_DIR")
    if not folder or fastbp.datasets.missing_files(folder):
        pytest.skip("real MNIST not found: set FASTBP_DATA_DIR to a folder with the four "
                    "IDX files (CI sets it to ../shared/data/mnist)")
    return fastbp.datasets.mnist(folder)
