"""Work buffers for the compiled kernels, allocated once per call or run.

Kernels never allocate; this module sizes everything they write into.
"""

import numba
import numpy as np

from .kernels import codes, cpu_panels, cpu_tile_lists
from .kernels.arguments import CpuFirstLayer


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


def list_scratch(sizes, n_rows, dtype):
    """Flat scratch for one set of non-zero lists (int32 indices, values,
    int64 counts) of any matrix the training step lists: batch rows x a
    layer width, either way round."""
    widest = max(sizes)
    return (np.zeros(n_rows * widest, np.int32), np.zeros(n_rows * widest, dtype),
            np.zeros(max(n_rows, widest), np.int64))


def hidden_panel_buffers(held, sizes, n_rows, dtype, moments=0, first_on_panels=False):
    """(WPs, mPs, vPs, dZPs, dZSs, XPs): for each layer l that ``held[l]``
    says runs in panels (``kernels.cpu_panels.hidden_layers``), its W and the
    first ``moments`` of the rule's state arrays (m, v) in panels, and its dZ
    for batches of ``n_rows`` in panels of units and of samples; (0, 0, 0)
    arrays for the others. XPs: for those layers, and the first where
    ``first_on_panels`` (its dense batches update on panels), their inputs
    in blocks of columns where the rows alias (``cpu_panels.rows_alias``)."""
    dtype = np.dtype(dtype)
    none = np.zeros((0, 0, 0), dtype)
    parts = ([], [], [], [], [], [])
    for l, on in enumerate(held):
        P, U = sizes[l], sizes[l + 1]
        weights = cpu_panels.panel_shape(U, P, dtype)
        packed = (on or (l == 0 and first_on_panels)) and cpu_panels.rows_alias(P, dtype)
        shapes = (weights, weights if moments >= 1 else None, weights if moments >= 2 else None,
                  cpu_panels.panel_shape(U, n_rows, dtype),
                  cpu_panels.sample_panel_shape(U, n_rows, dtype))
        for part, shape in zip(parts, shapes):
            part.append(np.zeros(shape, dtype) if on and shape is not None else none)
        parts[5].append(np.zeros(cpu_panels.input_blocks_shape(P, n_rows), dtype) if packed
                        else none)
    return tuple(tuple(part) for part in parts)


def first_layer_buffers(plan, sizes, n_rows, dtype, moments=0):
    """``kernels.arguments.CpuFirstLayer`` for ``plan`` (fastbp.first_layer):
    the first layer's transposed weights (p, U_1); where the plan runs on
    panels, its weights and dZ packed in panels of units and the lists of the
    zero-skipping tiles (sized for batches of ``n_rows``); the first
    ``moments`` of the update rule's state arrays (m, v: 0 for plain SGD, 1
    for momentum, 2 for Adam) in each layout the plan moves the weights to,
    and where it updates W^T over compressed rows, a scratch row per thread;
    else empty arrays; the plan's compressed rows."""
    dtype = np.dtype(dtype)
    p, U = sizes[0], sizes[1]
    WT = np.zeros((p, U), dtype)
    none = np.zeros((0, 0, 0), dtype)
    if plan.on_panels:
        shape = cpu_panels.panel_shape(U, p, dtype)
        WP = np.zeros(shape, dtype)
        dZP = np.zeros(cpu_panels.panel_shape(U, n_rows, dtype), dtype)
        lists = cpu_tile_lists.skip_lists(p, n_rows)
        state_panels = [np.zeros(shape, dtype) if i < moments else none for i in range(2)]
    else:
        WP, dZP, state_panels = none, none, [none, none]
        lists = cpu_tile_lists.skip_lists(0, 0)
    on_wt = plan.code in (codes.FIRST_W_OR_CSR, codes.FIRST_PANELS_OR_CSR)
    state_wt = [np.zeros((p, U) if on_wt and i < moments else (0, 0), dtype) for i in range(2)]
    gT = np.zeros((numba.config.NUMBA_NUM_THREADS, U) if on_wt else (0, 0), dtype)
    return CpuFirstLayer(plan.code, WT, WP, dZP, *lists, *plan.rows_csr,
                         *state_wt, gT, *state_panels)
