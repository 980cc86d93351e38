"""The training set's non-zeros, for the first layer: listed once per run,
or a test that each batch's lists will pay.

When the inputs are mostly zeros (MNIST: 81 % of pixels), each batch's
first-layer products skip them. Over W^T they read compressed rows of the
whole training set in place (``compressed_rows``), built only where
``kernels.cpu.train_steps`` can use them: a first layer at least
SPARSE_MIN_UNITS wide, and data at most SPARSE_DENSITY dense overall (so the
lists take at most 60 % of the float32 data's memory; each batch is still
checked on its own). The zero-skipping panel tiles list each batch from its
dense rows instead (``tiles_pay`` says where they run): nothing is built
from the training set, and nothing need be checked again when partial_fit
passes the same X.
"""

import numpy as np

from .kernels import config, cpu_sparse, cpu_tile_lists
from .kernels.config import BALANCE_ROWS, MAX_UNION_RATIO, RATIO_BATCHES



def compressed_rows(X, first_units):
    """(indptr, indices, values, colcum) of X (n, p): compressed sparse rows
    and the running sum of non-zeros per column; four empty arrays where
    the first layer will not skip zeros."""
    n, p = X.shape
    counts = np.empty(n, np.int64)
    if first_units >= config.SPARSE_MIN_UNITS and X.size:
        cpu_sparse.row_nonzeros(counts, X)
        total = int(counts.sum())
        if total <= config.SPARSE_DENSITY * X.size:
            indptr = np.zeros(n + 1, np.int64)
            np.cumsum(counts, out=indptr[1:])
            indices, values = np.empty(total, np.int32), np.empty(total, X.dtype)
            cpu_sparse.compress_rows(indices, values, indptr, X)
            # Column counts only balance the update's chunks: a sample of rows will do.
            sample = indices[:indptr[min(n, BALANCE_ROWS)]]
            colcum = np.zeros(p + 1, np.int64)
            np.cumsum(np.bincount(sample, minlength=p), out=colcum[1:])
            return indptr, indices, values, colcum
    return (np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, X.dtype),
            np.zeros(0, np.int64))


def tiles_pay(X, first_units, batch_rows):
    """Whether X's sparse batches of ``batch_rows`` rows should take the
    zero-skipping tiles, which list each batch from its dense rows
    (``kernels.cpu_tile_lists.list_rows``) and need no compressed rows: a
    first layer at least SPARSE_MIN_UNITS wide, X at most SPARSE_DENSITY
    dense overall, and non-zeros that cluster (``union_ratio`` at most
    MAX_UNION_RATIO). Each batch is still checked on its own."""
    return (first_units >= config.SPARSE_MIN_UNITS and X.size > 0
            and cpu_sparse.count_nonzero(X) <= config.SPARSE_DENSITY * X.size
            and union_ratio(X, batch_rows) <= MAX_UNION_RATIO)


def union_ratio(X, batch_rows):
    """How much more than X's non-zeros the zero-skipping tiles would work
    on: the mean share of pixels that any of a forward tile's 4 samples has
    and of samples that have any of an update tile's 4 pixels, over the density, in
    RATIO_BATCHES batches of ``batch_rows`` random rows (a fixed seed: the
    same X always gets the same answer)."""
    n, p = X.shape
    rng = np.random.default_rng(0)
    rows = cols = cpu_tile_lists.SKIP_ROWS
    shares, density = 0.0, 0.0
    for _ in range(RATIO_BATCHES):
        nonzero = X[rng.choice(n, min(batch_rows, n), replace=False)] != 0
        nb = nonzero.shape[0]
        padded = np.zeros((-(-nb // rows) * rows, -(-p // cols) * cols), bool)
        padded[:nb, :p] = nonzero
        samples = padded.reshape(-1, rows, padded.shape[1]).any(axis=1)[:, :p]
        pixels = padded.reshape(padded.shape[0], -1, cols).any(axis=2)[:nb]
        shares += (samples.mean() + pixels.mean()) / 2
        density += nonzero.mean()
    return shares / density if density else np.inf
