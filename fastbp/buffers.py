"""Work buffers for the compiled kernels, allocated once per call or run.

Kernels never allocate; this module sizes everything they write into.
"""

import numpy as np

from .kernels import cpu_panels, cpu_tile_lists


def batch_buffers(sizes, n_rows, dtype):
    """Per-layer buffers for batches of up to ``n_rows`` samples.

    Returns tuples (Zs, Qs, dZs, dQs) with one (n_rows, U_l) array per layer
    and row_loss (n_rows,). Qs[-1] is Zs[-1] (the last layer has no h) and
    dQs[-1] is an unused empty array, so that all tuples have L entries.
    """
    outs = sizes[1:]
    Zs = tuple(np.zeros((n_rows, u), dtype) for u in outs)
    Qs = tuple(np.zeros((n_rows, u), dtype) for u in outs[:-1]) + (Zs[-1],)
    dZs = tuple(np.zeros((n_rows, u), dtype) for u in outs)
    dQs = tuple(np.zeros((n_rows, u), dtype) for u in outs[:-1]) + (np.zeros((0, 0), dtype),)
    return Zs, Qs, dZs, dQs, np.zeros(n_rows, dtype)


def gradient_buffers(layers):
    """(dWs, dbs): one zeroed array shaped like each W and b."""
    layers = list(layers)
    return (tuple(np.zeros_like(W) for W, _ in layers),
            tuple(np.zeros_like(b) for _, b in layers))


def training_buffers(sizes, n_rows, dtype, masks=None):
    """Scratch of ``kernels.cpu.train_steps`` beyond ``batch_buffers``.

    Returns (WT, panels, idx, val, count): the first layer's transposed
    weights (p, U_1); panels, where those are worthwhile
    (``kernels.cpu_panels``): its weights and dZ packed in panels of units,
    the lists of the zero-skipping tiles and ``masks``, the training rows'
    bit masks (``sparse_rows.tile_masks``; None or empty: sparse batches
    stay on W^T), else empty arrays of the same kinds; and flat scratch for
    one set of non-zero lists (int32 indices, values, counts) of any matrix
    the step lists: batch rows x a layer width, either way round.
    """
    dtype = np.dtype(dtype)
    widest = max(sizes)
    WT = np.zeros((sizes[0], sizes[1]), dtype)
    if masks is None:
        masks = (np.zeros((0, 0), np.uint64), np.zeros((0, 0), np.uint64))
    if cpu_panels.worthwhile(sizes, dtype):
        panels = (np.zeros(cpu_panels.panel_shape(sizes[1], sizes[0], dtype), dtype),
                  np.zeros(cpu_panels.panel_shape(sizes[1], n_rows, dtype), dtype),
                  *cpu_tile_lists.skip_lists(sizes[0], n_rows), *masks)
    else:  # (masks unused: train_steps takes sparse batches to the tiles only on panels)
        panels = (np.zeros((0, 0, 0), dtype), np.zeros((0, 0, 0), dtype),
                  *cpu_tile_lists.skip_lists(0, 0), *masks)
    return (WT, panels, np.zeros(n_rows * widest, np.int32), np.zeros(n_rows * widest, dtype),
            np.zeros(max(n_rows, widest), np.int64))
