"""The training set's non-zeros, listed once per run for the first layer.

When the inputs are mostly zeros (MNIST: 81 % of pixels), each batch's
first-layer products read these compressed rows in place instead of
scanning, gathering and listing dense rows every step. Built only where
``kernels.cpu.train_steps`` can use them: a first layer at least
SPARSE_MIN_UNITS wide, and data at most SPARSE_DENSITY dense overall (so the
lists take at most 60 % of the float32 data's memory; each batch is still
checked on its own).
"""

import numpy as np

from .kernels import cpu

BALANCE_ROWS = 4096  # rows whose non-zeros per column split the update into chunks


def compressed_rows(X, first_units):
    """(indptr, indices, values, colcum) of X (n, p): compressed sparse rows
    and the running sum of non-zeros per column; four empty arrays where
    the first layer will not skip zeros."""
    n, p = X.shape
    counts = np.empty(n, np.int64)
    if first_units >= cpu.SPARSE_MIN_UNITS and X.size:
        cpu.row_nonzeros(counts, X)
        total = int(counts.sum())
        if total <= cpu.SPARSE_DENSITY * X.size:
            indptr = np.zeros(n + 1, np.int64)
            np.cumsum(counts, out=indptr[1:])
            indices, values = np.empty(total, np.int32), np.empty(total, X.dtype)
            cpu.compress_rows(indices, values, indptr, X)
            # Column counts only balance the update's chunks: a sample of rows will do.
            sample = indices[:indptr[min(n, BALANCE_ROWS)]]
            colcum = np.zeros(p + 1, np.int64)
            np.cumsum(np.bincount(sample, minlength=p), out=colcum[1:])
            return indptr, indices, values, colcum
    return (np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, X.dtype),
            np.zeros(0, np.int64))
