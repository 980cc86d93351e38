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

from .kernels import cpu, cpu_tile_lists

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


# Sparse batches take the zero-skipping panel tiles only where the non-zeros
# cluster: a forward tile works on every pixel that any of its 8 samples has,
# an update tile on every sample that has any of its 4 pixels. Measured
# (784-200-10, n_b 100, 2 threads, whole epochs, the tiles against the W^T
# path, one process each, 12-16 rounds): MNIST (ratio 1.95) 0.947x the time;
# MNIST with 20 % of its non-zeros dropped (2.30) 1.19x; uniformly random
# non-zeros (4-7) 1.7-2.0x (2.9x at 4096 inputs, density 0.01).
MAX_UNION_RATIO = 2.05
RATIO_BATCHES = 8  # random batches the ratio is estimated on


def union_ratio(X, batch_rows):
    """How much more than X's non-zeros the zero-skipping tiles would work
    on: the mean share of pixels that any of a forward tile's 8 samples has
    and of samples that have any of an update tile's 4 pixels, over the density, in
    RATIO_BATCHES batches of ``batch_rows`` random rows (a fixed seed: the
    same X always gets the same answer)."""
    n, p = X.shape
    rng = np.random.default_rng(0)
    rows, cols = cpu_tile_lists.PANEL_ROWS, cpu_tile_lists.SKIP_ROWS
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


def tile_masks(X, rows_csr, batch_rows):
    """``kernels.cpu_tile_lists.mask_rows`` of X's compressed rows where its
    sparse batches should take the zero-skipping tiles (``union_ratio`` at
    most MAX_UNION_RATIO), else two empty arrays (they stay on W^T)."""
    indptr, indices = rows_csr[0], rows_csr[1]
    if indptr.shape[0] == 0 or union_ratio(X, batch_rows) > MAX_UNION_RATIO:
        return np.zeros((0, 0), np.uint64), np.zeros((0, 0), np.uint64)
    masks = tuple(np.empty(shape, np.uint64)
                  for shape in cpu_tile_lists.mask_shapes(X.shape[0], X.shape[1]))
    cpu.mask_rows(*masks, indptr, indices)  # through cpu: locked and stamped (fastbp/__init__.py)
    return masks
