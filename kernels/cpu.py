"""Hand-written CPU kernels: Algorithm 6.1 as ``@njit(parallel=True)`` loops.

Conventions (shared with ``kernels/cuda.py``, which has the same names):

* outputs come first in every signature, then inputs, then scalars;
* shapes follow the textbook's (Lindholm et al.) row-per-sample notation (6.14):
  ``Q_prev : (n_b, U_{l-1})``, ``W : (U_l, U_{l-1})``, ``b : (U_l,)``,
  ``Z, Q, dZ, dQ : (n_b, U_l)``;
* kernels write into preallocated arrays and never allocate;
* float32 and float64 both work (Numba compiles one version per dtype);
* every parallel loop gives each thread whole rows that it alone writes, and
  every reduction runs in a fixed serial order, so results do not depend on
  the number of threads.

Activation and loss names are resolved to the integer codes of
``kernels.codes`` in Python before these kernels run. Compile options and
scalar helpers live in ``cpu_common.py``; the zero-skipping kernels (lists of
non-zeros, compressed training rows) in ``cpu_sparse.py``; the first layer's
tiles for 512-bit vectors (dense or zero-skipping) in ``cpu_panels.py``;
tuning constants in ``config.py``. The public kernels are
``registry.TWINS``, each with a CUDA twin; the rest are CPU-only pieces of
``train_steps`` and of inference.
"""

import math

from numba import njit, prange

from . import losses, optim
from .codes import (
    CROSS_ENTROPY,
    SQUARED_ERROR,
    RULE_ADAM,
    RULE_SGD,
    FIRST_PANELS,
    FIRST_PANELS_OR_CSR,
    FIRST_PANELS_OR_TILES,
    FIRST_W_OR_CSR,
    IDENTITY,
    RELU,
    SIGMOID,
    TANH,
)
from .config import (
    DENSE_UPDATE_DENSITY,
    FUSED_OUTPUT_MAX,
    OUTPUT_ROWS,
    PREFETCH_BATCH_BYTES,
    SPARSE_DENSITY,
    UNIT_SPLIT_BLOCKS,
    UNIT_SPLIT_BYTES,
)
from .cpu_common import (
    FASTMATH,
    PARALLEL,
    SERIAL,
    activate,
    adam_rate,
    derivative,
    mean,
    prefetch,
    rule_row,
    sgd,
    step,
    with_vector_math,
)
from .cpu_panels import (
    pack_dz_by_samples,
    pack_panels,
    panel_backward_input,
    panel_forward,
    panel_forward_listed,
    panel_rule_update,
    panel_rule_update_listed,
    panel_sgd_update,
    panel_sgd_update_listed,
    panels_from_transposed,
    transposed_from_panels,
    unpack_panels,
)
from .cpu_sparse import (
    _active_threads,
    count_nonzero,
    csr_forward,
    csr_rule_update,
    csr_sgd_update,
    nonzero_cols,
    nonzero_rows,
    prefetch_rows,
    sparse_backward_input,
    sparse_sgd_update,
)
from .cpu_math import exp as vector_exp
from .cpu_tile_lists import list_rows
from .registry import TWINS

__all__ = list(TWINS)


@njit(inline="always", fastmath=FASTMATH)
def _dot4x4(A, i, B, j):
    """The 4 x 4 block of dot products A[i:i+4] . B[j:j+4] over their rows."""
    return _dot4x4_at(A, i, i + 1, i + 2, i + 3, B, j, j + 1, j + 2, j + 3)


@njit(inline="always", fastmath=FASTMATH)
def _dot4x4_at(A, i0, i1, i2, i3, B, j0, j1, j2, j3):
    """The 4 x 4 block of dot products of rows i0..i3 of A with rows j0..j3
    of B (any rows, repeats allowed).

    Sixteen accumulators stay in registers while the k loop streams four
    rows of each operand: 8 loads per 16 multiply-adds, which LLVM
    vectorises along k (fastmath reassoc), so the loop is compute-bound.
    """
    z = A.dtype.type(0)
    a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = z
    a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = z
    for k in range(A.shape[1]):
        x0, x1, x2, x3 = A[i0, k], A[i1, k], A[i2, k], A[i3, k]
        w0, w1, w2, w3 = B[j0, k], B[j1, k], B[j2, k], B[j3, k]
        a00 += x0 * w0
        a01 += x0 * w1
        a02 += x0 * w2
        a03 += x0 * w3
        a10 += x1 * w0
        a11 += x1 * w1
        a12 += x1 * w2
        a13 += x1 * w3
        a20 += x2 * w0
        a21 += x2 * w1
        a22 += x2 * w2
        a23 += x2 * w3
        a30 += x3 * w0
        a31 += x3 * w1
        a32 += x3 * w2
        a33 += x3 * w3
    return ((a00, a01, a02, a03), (a10, a11, a12, a13),
            (a20, a21, a22, a23), (a30, a31, a32, a33))


@njit(inline="always", fastmath=FASTMATH)
def _dot4x1_at(A, i0, i1, i2, i3, B, j):
    """Rows i0..i3 of A dotted with row j of B: 5 loads per 4 multiply-adds."""
    z = A.dtype.type(0)
    a0 = a1 = a2 = a3 = z
    for k in range(A.shape[1]):
        w = B[j, k]
        a0 += A[i0, k] * w
        a1 += A[i1, k] * w
        a2 += A[i2, k] * w
        a3 += A[i3, k] * w
    return a0, a1, a2, a3


@njit(inline="always", fastmath=FASTMATH)
def _dot(A, i, B, j):
    """A[i] . B[j], for the edges that do not fill a 4 x 4 block."""
    acc = A.dtype.type(0)
    for k in range(A.shape[1]):
        acc += A[i, k] * B[j, k]
    return acc


@njit(inline="always")
def split_by_units(input_bytes, U, threads):
    """Whether dense_forward splits an input of ``input_bytes`` into a layer
    of U units between ``threads`` by blocks of units (else of samples)."""
    return input_bytes <= UNIT_SPLIT_BYTES and (U + 3) // 4 >= UNIT_SPLIT_BLOCKS * threads


@njit(inline="always", fastmath=FASTMATH)
def _forward_edges(Z, Q, Q_prev, W, b, act, i_lo, i_hi, j_lo, j_hi):
    """Z[i, j] and Q[i, j] one dot product each, for the edges of the grid
    of 4 x 4 blocks (rows or units past the last whole block)."""
    zero, one = Z.dtype.type(0), Z.dtype.type(1)
    for i in range(i_lo, i_hi):
        for j in range(j_lo, j_hi):
            z = _dot(Q_prev, i, W, j) + b[j]
            Z[i, j] = z
            Q[i, j] = activate(z, act, zero, one)


@njit(inline="always", fastmath=FASTMATH)
def _forward_block(Z, Q, Q_prev, W, b, act, i0, j0):
    """The 4 x 4 block of Z and Q at rows i0.., units j0.."""
    zero, one = Z.dtype.type(0), Z.dtype.type(1)
    block = _dot4x4(Q_prev, i0, W, j0)
    for a in range(4):
        for c in range(4):
            z = block[a][c] + b[j0 + c]
            Z[i0 + a, j0 + c] = z
            Q[i0 + a, j0 + c] = activate(z, act, zero, one)


@njit(**PARALLEL)
def dense_forward(Z, Q, Q_prev, W, b, act):
    """Fused dense layer: ``Z = Q_prev W^T + b`` and ``Q = h(Z)`` (Alg. 6.1 l. 4-5).

    Z, Q : (n_b, U) outputs; Q may be the same array as Z (last layer,
    ``act = IDENTITY``). Q_prev : (n_b, P), W : (U, P), b : (U,).
    Register-blocked 4 x 4; bias and ReLU are applied in the epilogue, a
    sigmoid or tanh in a pass over whole rows after it, where they vectorise
    (in the epilogue each was a scalar call per element: 3.5x slower on
    16 x 13 -> 32, docs/speed-log.md).
    Every element is computed the same way (a 4 x 4 block where one fits,
    else one dot product) however the threads share the work, so results
    do not depend on the split. A mini-batch is split by blocks of units,
    as ``dense_sgd_update`` splits W: each thread then reads the rows of W
    that it updated itself, from its own core's cache, instead of fetching
    the other core's freshly written half every step (docs/speed-log.md);
    the batch, read by every thread, is the smaller operand. Larger inputs
    (inference) are split by blocks of samples, each read once.
    """
    n, P = Q_prev.shape
    U = W.shape[0]
    i_edge, j_edge = n - n % 4, U - U % 4
    h = act if act == RELU else IDENTITY  # in the epilogue; others after it
    if split_by_units(n * P * Q_prev.itemsize, U, _active_threads()):
        # Race-free: iteration t writes only columns 4t .. 4t+3 of Z and Q.
        for t in prange((U + 3) // 4):
            j0 = 4 * t
            if j0 < j_edge:
                for i0 in range(0, i_edge, 4):
                    _forward_block(Z, Q, Q_prev, W, b, h, i0, j0)
                _forward_edges(Z, Q, Q_prev, W, b, h, i_edge, n, j0, j0 + 4)
            else:
                _forward_edges(Z, Q, Q_prev, W, b, h, 0, n, j0, U)
    else:
        # Race-free: iteration t writes only rows 4t .. 4t+3 of Z and Q.
        for t in prange((n + 3) // 4):
            i0 = 4 * t
            if i0 < i_edge:
                for j0 in range(0, j_edge, 4):
                    _forward_block(Z, Q, Q_prev, W, b, h, i0, j0)
                _forward_edges(Z, Q, Q_prev, W, b, h, i0, i0 + 4, j_edge, U)
            else:
                _forward_edges(Z, Q, Q_prev, W, b, h, i0, n, 0, U)
    if h != act:
        zero, one = Z.dtype.type(0), Z.dtype.type(1)
        # Race-free: iteration i writes only row i of Q.
        for i in prange(n):
            for j in range(U):
                Q[i, j] = activate(Z[i, j], act, zero, one)


@njit(**PARALLEL)
def activation_backward(dZ, dQ, Z, Q, act):
    """``dZ = dQ * h'(Z)`` element-wise (6.27a, Alg. 6.1 line 16).

    dZ : (n_b, U) output; dQ, Z, Q : (n_b, U). dZ may alias dQ.
    """
    n, U = dZ.shape
    zero, one = dZ.dtype.type(0), dZ.dtype.type(1)
    # Race-free: iteration i writes only row i of dZ.
    for i in prange(n):
        for j in range(U):
            dZ[i, j] = dQ[i, j] * derivative(Z[i, j], Q[i, j], act, zero, one)


@njit(**PARALLEL)
def dense_backward_weights(dW, db, dZ, Q_prev):
    """``dW = dZ^T Q_prev / n_b`` and ``db = sum_i dZ_i / n_b`` (6.27c/d, l. 18-19).

    dW : (U, P), db : (U,) outputs; dZ : (n_b, U), Q_prev : (n_b, P).
    """
    n, U = dZ.shape
    P = Q_prev.shape[1]
    inv_n = dW.dtype.type(1 / n)
    # Race-free: iteration j writes only row j of dW and entry j of db; the
    # sum over samples i runs in order, so it is deterministic.
    for j in prange(U):
        for k in range(P):
            dW[j, k] = 0
        s = dW.dtype.type(0)
        for i in range(n):
            g = dZ[i, j]
            s += g
            if g != 0:  # ReLU zeroes many entries of dZ: skip their rows
                for k in range(P):
                    dW[j, k] += g * Q_prev[i, k]
        for k in range(P):
            dW[j, k] *= inv_n
        db[j] = s * inv_n


@njit(**PARALLEL)
def dense_backward_input(dQ_prev, dZ, W):
    """``dQ_prev = dZ W`` (6.27b, Alg. 6.1 line 17); never called for the input.

    dQ_prev : (n_b, P) output; dZ : (n_b, U), W : (U, P).
    """
    n, U = dZ.shape
    P = W.shape[1]
    # Race-free: iteration i writes only row i of dQ_prev.
    for i in prange(n):
        for k in range(P):
            dQ_prev[i, k] = 0
        for j in range(U):
            g = dZ[i, j]
            if g != 0:
                for k in range(P):
                    dQ_prev[i, k] += g * W[j, k]


# A row's loss and output gradient, and whether it is misclassified: the
# bodies cuda.py compiles too (kernels/losses.py).
_softmax_cross_entropy_row = njit(inline="always", fastmath=FASTMATH)(
    with_vector_math(losses.softmax_cross_entropy_row))
_squared_error_row = njit(inline="always", fastmath=FASTMATH)(losses.squared_error_row)
_binary_cross_entropy_row = njit(inline="always", fastmath=FASTMATH)(
    with_vector_math(losses.binary_cross_entropy_row))
_weigh_row = njit(inline="always", fastmath=FASTMATH)(losses.weigh_row)
# Never inlined into a prange: on Python >= 3.12 Numba's reduction analysis
# fails ("unexpected cycle in lookup()", numba#10132) when a reduced loop's
# body holds a branch; LLVM still inlines it.
_row_is_wrong = njit(inline="never")(losses.row_is_wrong)
_row_misses_a_label = njit(inline="never")(losses.row_misses_a_label)

# Every loss kernel below takes ``weights``: (n_b,) factors c_i that scale row
# i's loss and gradient (sample weights normalised so that c sums to n_b: the
# mean is then scikit-learn's weighted mean), or an array of another length
# (empty) for none.


@njit(**PARALLEL)
def softmax_cross_entropy(dZ, row_loss, Z, labels, weights):
    """Cost and output gradient for M-class classification (6.20, 6.26b).

    dZ : (n_b, M) output ``softmax(Z) - onehot(labels)``; row_loss : (n_b,)
    output, each row's loss; Z : (n_b, M) logits; labels : (n_b,) int;
    weights : (n_b,) or empty. Returns J, the mean loss, computed with the
    max-shift (log-sum-exp).
    """
    # Race-free: iteration i writes only row i of dZ and entry i of row_loss.
    for i in prange(Z.shape[0]):
        row_loss[i] = _softmax_cross_entropy_row(dZ, Z, i, labels[i])
        _weigh_row(dZ, row_loss, i, weights)
    return mean(row_loss)


@njit(**PARALLEL)
def squared_error(dZ, row_loss, Z, targets, weights):
    """Cost and output gradient for regression (6.19, 6.26a).

    dZ : (n_b, M) output ``-2 (targets - Z)``; row_loss : (n_b,) output,
    ``||targets_i - Z_i||^2``; Z, targets : (n_b, M); weights : (n_b,) or
    empty. Returns their mean J.
    """
    # Race-free: iteration i writes only row i of dZ and entry i of row_loss.
    for i in prange(Z.shape[0]):
        row_loss[i] = _squared_error_row(dZ, Z, i, targets)
        _weigh_row(dZ, row_loss, i, weights)
    return mean(row_loss)


@njit(**PARALLEL)
def binary_cross_entropy(dZ, row_loss, Z, targets, weights):
    """Cost and output gradient for logistic outputs: one unit (binary) or M
    independent labels (multi-label).

    dZ : (n_b, M) output ``sigmoid(Z) - targets``; row_loss : (n_b,) output,
    each row's binary cross-entropy summed over its M outputs; Z : (n_b, M)
    logits; targets : (n_b, M) in [0, 1]; weights : (n_b,) or empty.
    Returns their mean J.
    """
    # Race-free: iteration i writes only row i of dZ and entry i of row_loss.
    for i in prange(Z.shape[0]):
        row_loss[i] = _binary_cross_entropy_row(dZ, Z, i, targets)
        _weigh_row(dZ, row_loss, i, weights)
    return mean(row_loss)


@njit(**SERIAL)
def output_loss(dZ, row_loss, Z, labels, targets, weights, loss):
    """The loss kernel that ``loss`` (a codes value) names; returns J."""
    if loss == CROSS_ENTROPY:
        return softmax_cross_entropy(dZ, row_loss, Z, labels, weights)
    if loss == SQUARED_ERROR:
        return squared_error(dZ, row_loss, Z, targets, weights)
    return binary_cross_entropy(dZ, row_loss, Z, targets, weights)


@njit(**PARALLEL)
def count_misclassified(Z, labels):
    """Number of rows whose argmax (first maximum) differs from the label.

    Z : (n_b, M) logits; labels : (n_b,) int. Integer sums are exact, so the
    threaded reduction is deterministic.
    """
    wrong = 0
    # Race-free: the only shared value is an integer prange reduction.
    for i in prange(Z.shape[0]):
        wrong += _row_is_wrong(Z, labels, i)
    return wrong


@njit(**PARALLEL)
def count_label_misses(Z, targets):
    """Number of rows with any logistic output on the wrong side of 1/2.

    Z : (n_b, M) logits; targets : (n_b, M) 0/1. As count_misclassified, exact.
    """
    wrong = 0
    # Race-free: the only shared value is an integer prange reduction.
    for i in prange(Z.shape[0]):
        wrong += _row_misses_a_label(Z, targets, i)
    return wrong


@njit(inline="always")
def _four_from(i, last):
    """i .. i + 3, each past ``last`` replaced by ``last`` (a block's edge repeats its last row)."""
    return i, min(i + 1, last), min(i + 2, last), min(i + 3, last)


@njit(inline="always", fastmath=FASTMATH)
def _output_forward(Z, Q_prev, W, b, i0, i1):
    """``Z[i] = W Q_prev[i] + b`` for rows i0 .. i1-1 of a narrow output layer,
    in 4 x 4 blocks of (samples, units): 8 loads per 16 multiply-adds, where
    one sample's four dot products at a time loaded 5 per 4 (the blocked
    forward took 0.55 of the time, docs/speed-log.md). Past the last row a
    block repeats it and drops what the repeat computes; the units past the
    last block of four take blocks of 4 samples x 1 unit."""
    M = Z.shape[1]
    whole = M - M % 4
    for i in range(i0, i1, 4):
        r0, r1, r2, r3 = _four_from(i, i1 - 1)
        for j in range(0, whole, 4):
            block = _dot4x4_at(Q_prev, r0, r1, r2, r3, W, j, j + 1, j + 2, j + 3)
            for a in range(4):
                if i + a < i1:
                    for c in range(4):
                        Z[i + a, j + c] = block[a][c] + b[j + c]
        for j in range(whole, M):  # the 1-3 units past the last block: 4 x 1
            z = _dot4x1_at(Q_prev, r0, r1, r2, r3, W, j)
            for a in range(4):
                if i + a < i1:
                    Z[i + a, j] = z[a] + b[j]


@njit(inline="always")
def _factors(g, i, j, M):
    """g[i, j .. j + 3], zero past unit M - 1 (their rows of W are repeats)."""
    zero = g.dtype.type(0)
    return (g[i, j], g[i, j + 1] if j + 1 < M else zero, g[i, j + 2] if j + 2 < M else zero,
            g[i, j + 3] if j + 3 < M else zero)


@njit(inline="always", fastmath=FASTMATH)
def _row_times(out, g, W, i):
    """``out[i] = g[i] W`` for g : (n, M), W : (M, H), four rows of W per pass,
    so out is loaded and stored once per four rows instead of once per row
    (the sum still runs over rows in order). A last pass with fewer than
    four rows repeats its last row with a zero factor. The first pass writes
    out, so no zeroing pass is needed."""
    M, H = W.shape
    for j in range(0, M, 4):
        _, j1, j2, j3 = _four_from(j, M - 1)
        g0, g1, g2, g3 = _factors(g, i, j, M)
        if j == 0:
            for k in range(H):
                out[i, k] = (g0 * W[j, k] + g1 * W[j1, k]) + (g2 * W[j2, k] + g3 * W[j3, k])
        else:
            for k in range(H):
                out[i, k] += (g0 * W[j, k] + g1 * W[j1, k]) + (g2 * W[j2, k] + g3 * W[j3, k])


@njit(inline="always", fastmath=FASTMATH)
def _rows_times(out, g, W, i):
    """``_row_times`` for the four rows from i at once, the same sums written
    in the same order (the same bits where LLVM vectorises both alike: with
    AVX2 or AVX-512, not with SSE only): each load of W's four rows serves
    four rows of out (4 loads of W per 16 multiply-adds instead of 16; 0.6
    of the time, docs/speed-log.md). Which rows take which depends on n
    alone, so results still do not depend on the threads."""
    M, H = W.shape
    i1, i2, i3 = i + 1, i + 2, i + 3
    for j in range(0, M, 4):
        _, j1, j2, j3 = _four_from(j, M - 1)
        g00, g01, g02, g03 = _factors(g, i, j, M)
        g10, g11, g12, g13 = _factors(g, i1, j, M)
        g20, g21, g22, g23 = _factors(g, i2, j, M)
        g30, g31, g32, g33 = _factors(g, i3, j, M)
        if j == 0:
            for k in range(H):
                w0, w1, w2, w3 = W[j, k], W[j1, k], W[j2, k], W[j3, k]
                out[i, k] = (g00 * w0 + g01 * w1) + (g02 * w2 + g03 * w3)
                out[i1, k] = (g10 * w0 + g11 * w1) + (g12 * w2 + g13 * w3)
                out[i2, k] = (g20 * w0 + g21 * w1) + (g22 * w2 + g23 * w3)
                out[i3, k] = (g30 * w0 + g31 * w1) + (g32 * w2 + g33 * w3)
        else:
            for k in range(H):
                w0, w1, w2, w3 = W[j, k], W[j1, k], W[j2, k], W[j3, k]
                out[i, k] += (g00 * w0 + g01 * w1) + (g02 * w2 + g03 * w3)
                out[i1, k] += (g10 * w0 + g11 * w1) + (g12 * w2 + g13 * w3)
                out[i2, k] += (g20 * w0 + g21 * w1) + (g22 * w2 + g23 * w3)
                out[i3, k] += (g30 * w0 + g31 * w1) + (g32 * w2 + g33 * w3)


@njit(**PARALLEL)
def output_layer_rows(Z, dZ, row_loss, wrong, dZ_prev, Z_prev, Q_prev, W, b, labels,
                      targets, weights, act, loss, back):
    """The last layer's forward, loss and backward to the layer before, fused
    per block of at most OUTPUT_ROWS samples (a narrow output layer is too
    small to block by units; one pass keeps the block's rows in L1): for
    each row i,

    ``Z[i] = W Q_prev[i] + b`` (6.11), the loss row and ``dZ[i]`` (6.26),
    ``wrong[i]`` = 1 if the argmax misses the label (classification), and,
    if ``back``, ``dZ_prev[i] = (dZ[i] W) * h'(Z_prev[i])`` (6.27b, then
    6.27a of the layer below).

    Z, dZ : (n_b, M) outputs; row_loss (n_b,), wrong (>= n_b,) int64 outputs;
    dZ_prev : (n_b, H) output, written only if back; Z_prev, Q_prev : (n_b, H),
    the layer below (for a one-layer net Q_prev is the input X and back is
    False); W : (M, H); b : (M,); labels (n_b,) or targets (n_b, M) and
    weights (n_b,) or empty as in backprop_all.
    """
    n, M = Z.shape
    # Blocks of equal rows (+-1), as many as a multiple of 4: every thread of
    # 1, 2 or 4 gets the same share (7 blocks of 16 of 100 rows gave one of
    # two threads 64).
    blocks = (n + OUTPUT_ROWS - 1) // OUTPUT_ROWS
    blocks += -blocks % 4
    # Race-free: block q writes only its rows of Z, dZ, dZ_prev and their
    # entries of row_loss and wrong.
    for q in prange(blocks):
        i0 = q * n // blocks
        i1 = (q + 1) * n // blocks
        _output_forward(Z, Q_prev, W, b, i0, i1)
        if loss == CROSS_ENTROPY:
            _softmax_rows(dZ, row_loss, wrong, Z, labels, i0, i1)
        else:
            _regression_rows(dZ, row_loss, wrong, Z, targets, loss, i0, i1)
        if weights.shape[0] == n:  # tested once per block: per row it cost as much as a softmax
            for i in range(i0, i1):
                _weigh_row(dZ, row_loss, i, weights)
        if back:
            whole = i1 - (i1 - i0) % 4
            for i in range(i0, whole, 4):
                _rows_times(dZ_prev, dZ, W, i)
            for i in range(whole, i1):
                _row_times(dZ_prev, dZ, W, i)
            _times_derivative(dZ_prev, Z_prev, Q_prev, act, i0, i1)


@njit(inline="never", fastmath=FASTMATH)
def _softmax_rows(dZ, row_loss, wrong, Z, labels, i0, i1):
    """losses.softmax_cross_entropy_row and row_is_wrong for rows i0 .. i1-1,
    to the same bits, with the exps of all the rows in one loop over their
    contiguous dZ (a row of 10 classes alone is too short to vectorise:
    a scalar exp per class). Its own function: see _row_nonzero_count."""
    M = Z.shape[1]
    for i in range(i0, i1):
        m = Z[i, 0]
        best = 0  # the first maximum, as np.argmax and row_is_wrong
        for j in range(1, M):
            if Z[i, j] > m:
                m = Z[i, j]
                best = j
        wrong[i] = 1 if best != labels[i] else 0
        row_loss[i] = m  # kept here until the loss replaces it
        for j in range(M):
            dZ[i, j] = Z[i, j] - m
    shifted = dZ[i0:i1].reshape((i1 - i0) * M)
    for e in range(shifted.shape[0]):
        shifted[e] = vector_exp(shifted[e])
    for i in range(i0, i1):
        s = Z.dtype.type(0)
        for j in range(M):
            s += dZ[i, j]
        inv_s = 1 / s
        for j in range(M):
            dZ[i, j] *= inv_s
        y = labels[i]
        dZ[i, y] -= 1
        row_loss[i] = math.log(s) + row_loss[i] - Z[i, y]


@njit(inline="always", fastmath=FASTMATH)
def _regression_rows(dZ, row_loss, wrong, Z, targets, loss, i0, i1):
    """The loss rows of squared error or logistic outputs, for rows i0 .. i1-1."""
    for i in range(i0, i1):
        if loss == SQUARED_ERROR:
            row_loss[i] = _squared_error_row(dZ, Z, i, targets)
            wrong[i] = 0
        else:
            row_loss[i] = _binary_cross_entropy_row(dZ, Z, i, targets)
            wrong[i] = _row_misses_a_label(Z, targets, i)


@njit(inline="always", fastmath=FASTMATH)
def _times_derivative(dZ, Z, Q, act, i0, i1):
    """``dZ[i] *= h'(Z[i])`` for rows i0 .. i1-1, one loop per activation so
    that each vectorises (with act a constant in it, h' is branch-free)."""
    if act == RELU:
        _rows_times_derivative(dZ, Z, Q, RELU, i0, i1)
    elif act == SIGMOID:
        _rows_times_derivative(dZ, Z, Q, SIGMOID, i0, i1)
    elif act == TANH:
        _rows_times_derivative(dZ, Z, Q, TANH, i0, i1)
    # (the identity's h' is 1: nothing to do)


@njit(inline="always", fastmath=FASTMATH)
def _rows_times_derivative(dZ, Z, Q, act, i0, i1):
    zero, one = dZ.dtype.type(0), dZ.dtype.type(1)
    for i in range(i0, i1):
        for k in range(dZ.shape[1]):
            dZ[i, k] *= derivative(Z[i, k], Q[i, k], act, zero, one)


@njit(**PARALLEL)
def sgd_update(W, b, dW, db, lr):
    """One SGD step (6.23a/b): ``W -= lr dW``, ``b -= lr db``, in place.

    W, dW : (U, P); b, db : (U,); lr : learning rate gamma.
    """
    U, P = W.shape
    step = W.dtype.type(lr)
    # Race-free: iteration j writes only row j of W and entry j of b.
    for j in prange(U):
        for k in range(P):
            W[j, k] = sgd(W[j, k], dW[j, k], step)
        b[j] = sgd(b[j], db[j], step)


@njit(inline="always", fastmath=FASTMATH)
def _add_outer_block(W, j, units, dZ, Q_prev, i, step):
    """``W[j + a] += step * sum_c dZ[i + c, j + a] * Q_prev[i + c]`` for the
    ``units`` (1-4) rows a and the four samples c from i: each load of a
    Q_prev element feeds four rows of W, and each W element is loaded and
    stored once per four samples. Samples past the batch repeat sample i
    with a zero factor."""
    n, P = dZ.shape[0], W.shape[1]
    zero = step - step
    i1, f1 = (i + 1, step) if i + 1 < n else (i, zero)
    i2, f2 = (i + 2, step) if i + 2 < n else (i, zero)
    i3, f3 = (i + 3, step) if i + 3 < n else (i, zero)
    if units == 4:
        g00, g01, g02, g03 = step * dZ[i, j], f1 * dZ[i1, j], f2 * dZ[i2, j], f3 * dZ[i3, j]
        j1, j2, j3 = j + 1, j + 2, j + 3
        g10, g11, g12, g13 = step * dZ[i, j1], f1 * dZ[i1, j1], f2 * dZ[i2, j1], f3 * dZ[i3, j1]
        g20, g21, g22, g23 = step * dZ[i, j2], f1 * dZ[i1, j2], f2 * dZ[i2, j2], f3 * dZ[i3, j2]
        g30, g31, g32, g33 = step * dZ[i, j3], f1 * dZ[i1, j3], f2 * dZ[i2, j3], f3 * dZ[i3, j3]
        for k in range(P):
            q0, q1, q2, q3 = Q_prev[i, k], Q_prev[i1, k], Q_prev[i2, k], Q_prev[i3, k]
            W[j, k] += (g00 * q0 + g01 * q1) + (g02 * q2 + g03 * q3)
            W[j1, k] += (g10 * q0 + g11 * q1) + (g12 * q2 + g13 * q3)
            W[j2, k] += (g20 * q0 + g21 * q1) + (g22 * q2 + g23 * q3)
            W[j3, k] += (g30 * q0 + g31 * q1) + (g32 * q2 + g33 * q3)
    else:
        for ja in range(j, j + units):
            g0, g1, g2, g3 = step * dZ[i, ja], f1 * dZ[i1, ja], f2 * dZ[i2, ja], f3 * dZ[i3, ja]
            for k in range(P):
                W[ja, k] += (g0 * Q_prev[i, k] + g1 * Q_prev[i1, k]) + (g2 * Q_prev[i2, k]
                                                                      + g3 * Q_prev[i3, k])


@njit(**PARALLEL)
def dense_sgd_update(W, dZ, Q_prev, lr, n):
    """A weight gradient (6.27c) fused with its SGD step (6.23a), no dW stored:
    ``W -= lr / n * dZ^T Q_prev``, register-blocked four units by four samples.

    The dense twin of ``sparse_sgd_update`` for a dZ with few zeros (the loss
    gradient, or a hidden layer past DENSE_UPDATE_DENSITY). W : (U, P);
    dZ : (n_b, U); Q_prev : (n_b, P); n = n_b.
    """
    U = W.shape[0]
    step = W.dtype.type(-lr / n)
    # Race-free: iteration t writes only rows 4t .. 4t+3 of W; samples are
    # added in order, four at a time.
    for t in prange((U + 3) // 4):
        j = 4 * t
        units = min(4, U - j)
        for i in range(0, dZ.shape[0], 4):
            _add_outer_block(W, j, units, dZ, Q_prev, i, step)


@njit(**SERIAL)
def prefetch_batch(X, labels, targets, weights, rows, loss):
    """Start loading the rows ``rows`` (the next batch's) of X, and their
    labels or targets and sample weights, into the cache, one request per
    64-byte line: issued after a step's forward, they arrive while its
    updates run, and gather_rows finds them there instead of waiting on
    memory for each row (as cpu_sparse.prefetch_rows for compressed rows)."""
    per_line = 64 // X.itemsize
    weighted = weights.shape[0] == X.shape[0]
    for r in range(rows.shape[0]):
        s = rows[r]
        x = X[s]
        for k in range(0, x.shape[0], per_line):
            prefetch(x, k)
        prefetch(x, x.shape[0] - 1)  # the last line, where the row starts mid-line
        if loss == CROSS_ENTROPY:
            prefetch(labels, s)
        else:
            t = targets[s]
            prefetch(t, 0)
            prefetch(t, t.shape[0] - 1)
        if weighted:
            prefetch(weights, s)


@njit(**PARALLEL)
def gather_rows(out, src, rows):
    """``out[r] = src[rows[r]]``: the rows of one shuffled mini-batch.

    out : (n_b, P) output; src : (n, P); rows : (n_b,) int indices into src.
    """
    n, P = out.shape
    # Race-free: iteration r writes only row r of out.
    for r in prange(n):
        s = rows[r]
        for k in range(P):
            out[r, k] = src[s, k]


@njit(**SERIAL)
def forward_all(Zs, Qs, X, Ws, bs, act):
    """Forward pass through every layer (6.24): Zs[-1] holds the output Z_L.

    Zs[l], Qs[l] : (n_b, U_l) outputs (Qs[-1] may be Zs[-1]); X : (n_b, p);
    Ws[l] : (U_l, U_{l-1}); bs[l] : (U_l,); act : hidden-layer activation.
    """
    L = len(Ws)
    n = X.shape[0]
    for l in range(L):
        Q_prev = X if l == 0 else Qs[l - 1][:n]
        h = act if l < L - 1 else IDENTITY
        dense_forward(Zs[l][:n], Qs[l][:n], Q_prev, Ws[l], bs[l], h)


@njit(**SERIAL)
def backprop_all(dWs, dbs, dZs, dQs, Zs, Qs, row_loss, X, labels, targets, weights,
                 Ws, bs, act, loss):
    """Algorithm 6.1 for one mini-batch: forward, cost, backward; returns J.

    dWs[l], dbs[l] : gradient outputs shaped like Ws[l], bs[l];
    dZs[l], dQs[l], Zs[l], Qs[l] : (>= n_b, U_l) work buffers (dQs[-1] is
    unused); row_loss : (>= n_b,); X : (n_b, p); labels : (n_b,) int for
    cross-entropy, targets : (n_b, M) for the other losses (the unused one
    may be empty); weights : (n_b,) row factors or empty (see
    softmax_cross_entropy); loss : a ``codes`` loss.
    """
    L = len(Ws)
    n = X.shape[0]
    forward_all(Zs, Qs, X, Ws, bs, act)
    J = output_loss(dZs[L - 1][:n], row_loss[:n], Zs[L - 1][:n], labels, targets, weights,
                    loss)
    for l in range(L - 1, -1, -1):
        if l < L - 1:
            activation_backward(dZs[l][:n], dQs[l][:n], Zs[l][:n], Qs[l][:n], act)
        Q_prev = X if l == 0 else Qs[l - 1][:n]
        dense_backward_weights(dWs[l], dbs[l], dZs[l][:n], Q_prev)
        if l > 0:
            dense_backward_input(dQs[l - 1][:n], dZs[l][:n], Ws[l])
    return J


@njit(**SERIAL)
def bias_sgd_update(b, dZ, lr):
    """``b -= lr * db`` with db = sum_i dZ_i / n_b (6.27d, 6.23b). b : (U,), dZ : (n_b, U)."""
    n, U = dZ.shape
    step = b.dtype.type(lr / n)
    for i in range(n):  # dZ_i / n_b: the batch's gradient in parts (SGD's step is linear)
        for j in range(U):
            b[j] = sgd(b[j], dZ[i, j], step)


@njit(**PARALLEL)
def optimizer_update(W, b, mW, mb, vW, vb, dW, db, rule, lr, hyper, decay):
    """One update of a layer's parameters from their complete gradients by
    ``rule`` (``optim.step``: momentum, Nesterov or Adam), the L2 penalty's
    gradient ``decay * W`` (decay = alpha / n_b) added to dW's weights.

    W, mW, vW : (U, P), b, mb, vb : (U,), updated in place (vW, vb unused
    and may be empty unless Adam); dW, db : the gradients; lr : the step's
    rate (Adam: bias-corrected); hyper : ``optim.hyperparameters``, all in
    W's dtype.
    """
    U, P = W.shape
    zero = W.dtype.type(0)
    # Race-free: iteration j writes only row j of W, mW, vW and entry j of b, mb, vb.
    for j in prange(U):
        if rule == RULE_SGD:  # plain SGD with the penalty: no state
            for k in range(P):
                W[j, k] = sgd(W[j, k], dW[j, k] + decay * W[j, k], lr)
            b[j] = sgd(b[j], db[j], lr)
        elif rule == RULE_ADAM:
            for k in range(P):
                W[j, k], mW[j, k], vW[j, k] = step(W[j, k], dW[j, k] + decay * W[j, k],
                                                   mW[j, k], vW[j, k], rule, lr, hyper)
            b[j], mb[j], vb[j] = step(b[j], db[j], mb[j], vb[j], rule, lr, hyper)
        else:
            for k in range(P):
                W[j, k], mW[j, k], _ = step(W[j, k], dW[j, k] + decay * W[j, k], mW[j, k],
                                            zero, rule, lr, hyper)
            b[j], mb[j], _ = step(b[j], db[j], mb[j], zero, rule, lr, hyper)


squared_norm = njit(**SERIAL)(optim.squared_norm)  # the body cuda.py compiles too


@njit(**SERIAL)
def bias_rule_update(b, mb, vb, db, dZ, rule, lr, hyper):
    """``db = sum_i dZ_i`` (6.27d without its 1 / n_b), then the update
    ``rule`` on b (``rule_row``; no penalty on biases): what
    ``dense_backward_weights`` and ``optimizer_update`` do to b, for a layer
    whose weights a fused rule update changes.

    b, mb, vb : (U,) updated in place (mb, vb empty where the rule keeps
    none); db : (U,) output.
    """
    n, U = dZ.shape
    for j in range(U):
        db[j] = 0
    for i in range(n):  # the sum over samples in order, as dense_backward_weights
        for j in range(U):
            db[j] += dZ[i, j]
    rule_row(b, mb if mb.size else b, vb if vb.size else b, db, db.dtype.type(1 / n),
             db.dtype.type(0), rule, lr, hyper)


@njit(**SERIAL)
def penalty_norm(Ws, WT, WP, held, WPs):
    """squared_norm(Ws) with each layer read where train_steps holds it: the
    first (``held``: Ws[0], W^T or panels) and the hidden layers in panels
    (``WPs[l]`` not empty); panels' padding is zeros."""
    hidden = 0
    for l in range(1, len(Ws)):
        hidden += WPs[l].shape[0]
    if held == ON_W and hidden == 0:
        return squared_norm(Ws)
    total = _sum_squares(Ws[0]) if held == ON_W else (
        _sum_squares(WT) if held == ON_WT else _sum_squares(WP))
    for l in range(1, len(Ws)):
        total += _sum_squares(WPs[l]) if WPs[l].shape[0] > 0 else _sum_squares(Ws[l])
    return total


@njit(inline="always")
def _sum_squares(A):
    """The sum of a contiguous array's squares, in memory order."""
    flat = A.reshape(A.size)
    total = A.dtype.type(0)
    for k in range(flat.shape[0]):
        total += flat[k] * flat[k]
    return total


@njit(**PARALLEL)
def transpose(out, A):
    """``out = A^T``. out : (P, n) output; A : (n, P)."""
    n, P = A.shape
    # Race-free: iteration k writes only row k of out.
    for k in prange(P):
        for i in range(n):
            out[k, i] = A[i, k]


@njit(inline="always")
def _lists(idx, val, rows, cols):
    """(rows, cols) views of the flat list scratch, for nonzero_rows/cols."""
    size = rows * cols
    return idx[:size].reshape((rows, cols)), val[:size].reshape((rows, cols))


@njit(**SERIAL)
def train_steps(params, model, work, first, data, steps, out):
    """Run ``steps.n_steps`` SGD iterations (6.21/6.23) over the shuffled
    ``steps.order``; return the number completed.

    params : ``arguments.Params``, the weights and the optimizer's state,
    updated in place; model : ``Model`` (act, loss codes); work :
    ``CpuWork``, buffers of batch_size
    rows and flat scratch of batch_size * max(widths) entries for the
    non-zero lists (count: max(batch_size, widths)); first : ``CpuFirstLayer``,
    the plan (``codes.FIRST_*``) and the layouts it needs; data : ``Data``,
    the training set; steps : ``Steps``; out : ``Out``, each step's cost and
    error rate (NaN for regression).

    Step s uses the rows ``order[s*batch_size : (s+1)*batch_size]`` (the last
    batch of an epoch may be shorter). Under plain SGD without a penalty each
    weight gradient is applied as it is computed (no dW is stored), after
    dQ_prev has used the old weights; every other rule (``steps.rule``,
    ``steps.alpha``) gets each layer's complete gradient in work.dWs, dbs
    (``optimizer_update``), and its cost the L2 penalty; off W, its first
    layer's gradient applies the rule to every weight as it completes
    (``panel_rule_update``, ``csr_rule_update``; the state moves between
    layouts with the weights, into first.mP, vP or mT, vT).
    The first layer runs as ``first.plan`` says: dense batches on W
    (register-blocked) or on W^T in panels (``cpu_panels``); sparse batches
    (at most SPARSE_DENSITY dense) on W^T over the plan's compressed rows,
    or on panel tiles that skip their zeros, listed from each batch's dense
    rows (``list_rows``; the plan has no compressed rows then). Wide layers past
    the first are held in panels for the whole call, with their rule's
    state (``work.WPs``, mPs, vPs, as ``cpu_panels.hidden_layers`` chose):
    all three of their products run as register tiles there, the update
    fused with the gradient under every rule. Other layers
    skip the zeros that ReLU leaves in dZ, except in weight gradients whose
    dZ is dense enough for a blocked product (the output layer's always); a
    narrow output layer runs fused with its loss and backward
    (output_layer_rows). Fewer than n_steps complete when a cost turns
    non-finite, and that step is not applied.
    """
    Ws, bs, mWs, mbs, vWs, vbs = params
    act, loss = model
    (Zs, Qs, dZs, dQs, row_loss, Xb, yb, Tb, wb, dWs, dbs, idx, val, count, WPs, mPs, vPs, dZPs,
     dZSs, XPs) = work
    X, labels, targets, weights = data
    order, first_step, n_steps, batch_size, lr, rule, momentum, beta1, beta2, eps, alpha, t0 = steps
    batch_cost, batch_error = out
    general = rule != RULE_SGD or alpha != 0
    dtype = Ws[0].dtype.type
    hyper = (dtype(momentum), dtype(beta1), dtype(1.0 - beta1), dtype(beta2), dtype(1.0 - beta2),
             dtype(eps))
    indptr, indices, values, colcum = first.indptr, first.indices, first.values, first.colcum
    WT, WP, dZP = first.WT, first.WP, first.dZP
    mT, vT, gT, mP, vP = first.mT, first.vT, first.gT, first.mP, first.vP
    pixels, pixel_counts = first.pixels, first.pixel_counts
    samples, sample_counts = first.samples, first.sample_counts
    L = len(Ws)
    n = order.shape[0]
    p = X.shape[1]
    plan = first.plan
    listed = plan == FIRST_W_OR_CSR or plan == FIRST_PANELS_OR_CSR  # over compressed rows
    on_panels = plan == FIRST_PANELS or plan == FIRST_PANELS_OR_CSR or plan == FIRST_PANELS_OR_TILES
    masked = plan == FIRST_PANELS_OR_TILES
    fused = Ws[L - 1].shape[0] <= FUSED_OUTPUT_MAX
    held = ON_W  # which array holds the first layer now: Ws[0], WT or WP
    # Wide hidden layers and their state in panels (cpu_panels.hidden_layers)
    # for the whole chunk: nothing else reads their W meanwhile.
    _hold_hidden(WPs, mPs, vPs, Ws, mWs, vWs, True)
    cached_batches = batch_size * p * X.itemsize <= PREFETCH_BATCH_BYTES
    done = n_steps
    for s in range(n_steps):
        start = (first_step + s) * batch_size
        nb = min(batch_size, n - start)
        rows = order[start:start + nb]
        if masked:  # the batch's dense rows, and the lists of its zero-skipping tiles
            nonzeros = list_rows(Xb[:nb], pixels, pixel_counts, samples, sample_counts,
                                 first.column_bits, X, rows)
            sparse = nonzeros <= SPARSE_DENSITY * nb * p
        else:
            sparse = listed and _batch_nonzeros(indptr, rows) <= SPARSE_DENSITY * nb * p
            if not sparse:
                gather_rows(Xb[:nb], X, rows)
        if loss == CROSS_ENTROPY:
            for r in range(nb):
                yb[r] = labels[rows[r]]
        else:
            gather_rows(Tb[:nb], targets, rows)
        wts, n_eff = batch_weights(wb, weights, rows)
        Xs = Xb[:nb]
        if sparse:
            wanted = ON_PANELS if masked else ON_WT
        else:
            wanted = ON_PANELS if on_panels else ON_W
        if wanted != held:
            _hold_with_state(Ws[0], WT, WP, mWs[0], mT, mP, vWs[0], vT, vP, held, wanted)
            held = wanted
        # Forward (6.24), up to the output layer if that runs fused.
        for l in range(L - 1 if fused else L):
            h = act if l < L - 1 else IDENTITY
            if l == 0 and held == ON_PANELS and sparse:
                panel_forward_listed(Zs[0][:nb], Qs[0][:nb], Xs, WP, bs[0], h, pixels,
                                     pixel_counts)
            elif l == 0 and held == ON_PANELS:
                panel_forward(Zs[0][:nb], Qs[0][:nb], Xs, WP, bs[0], h)
            elif l == 0 and sparse:
                csr_forward(Zs[0][:nb], Qs[0][:nb], indptr, indices, values, rows, WT,
                            bs[0], h)
            elif l > 0 and WPs[l].shape[0] > 0:
                panel_forward(Zs[l][:nb], Qs[l][:nb], Qs[l - 1][:nb], WPs[l], bs[l], h)
            else:
                Q_prev = Xs if l == 0 else Qs[l - 1][:nb]
                dense_forward(Zs[l][:nb], Qs[l][:nb], Q_prev, Ws[l], bs[l], h)
        # Cost and output gradient (Alg. 6.1 lines 7-13).
        Z = Zs[L - 1][:nb]
        if fused:  # ... with the output layer's forward and dZ of the layer below
            below = L - 2 if L > 1 else 0
            Q_prev = Xs if L == 1 else Qs[below][:nb]
            output_layer_rows(Z, dZs[L - 1][:nb], row_loss[:nb], count, dZs[below][:nb],
                              Zs[below][:nb], Q_prev, Ws[L - 1], bs[L - 1], yb[:nb], Tb[:nb],
                              wts, act, loss, L > 1)
            J = mean(row_loss[:nb])
            wrong = 0
            for r in range(nb):
                wrong += count[r]
        else:
            J = output_loss(dZs[L - 1][:nb], row_loss[:nb], Z, yb[:nb], Tb[:nb], wts, loss)
            if loss == CROSS_ENTROPY:
                wrong = count_misclassified(Z, yb[:nb])
            elif loss == SQUARED_ERROR:
                wrong = 0
            else:
                wrong = count_label_misses(Z, Tb[:nb])
        if alpha != 0:  # the L2 penalty on the weights the forward pass used
            J += alpha / (2 * n_eff) * penalty_norm(Ws, WT, WP, held, WPs)
        batch_error[s] = wrong / nb if loss != SQUARED_ERROR else math.nan
        batch_cost[s] = J
        if not math.isfinite(J):
            done = s
            break
        # The next batch's rows load during the updates, for csr_forward. Not for
        # list_rows, which reads them on every thread: the tiles were faster
        # without the prefetch (docs/speed-log.md).
        if listed and s + 1 < n_steps:
            prefetch_rows(indptr, indices, values, order[start + nb:start + nb + batch_size])
        # ... and for gather_rows, where the batch is small enough to stay in cache.
        if not listed and not masked and s + 1 < n_steps and cached_batches:
            prefetch_batch(X, labels, targets, weights, order[start + nb:start + nb + batch_size],
                           loss)
        # Backward (6.27) with the update (6.23), layer L down to 1.
        for l in range(L - 1, -1, -1):
            dZ = dZs[l][:nb]
            U = dZ.shape[1]
            if l < L - 1 and not (fused and l == L - 2):
                activation_backward(dZ, dQs[l][:nb], Zs[l][:nb], Qs[l][:nb], act)
            on_panels_l = l > 0 and WPs[l].shape[0] > 0
            if on_panels_l:  # dQ_prev with this step's old weights
                pack_dz_by_samples(dZSs[l], dZ, nb)
                panel_backward_input(dQs[l - 1][:nb], dZSs[l], WPs[l], nb)
            elif l > 0 and not (fused and l == L - 1):
                ri, rv = _lists(idx, val, nb, U)
                nonzero_rows(ri, rv, count, dZ)
                sparse_backward_input(dQs[l - 1][:nb], ri, rv, count, Ws[l])
            if general:  # the complete gradient, then the rule
                rate = dtype(adam_rate(lr, beta1, beta2, t0 + s + 1) if rule == RULE_ADAM
                             else lr)
                decay = dtype(alpha / n_eff)
                if l == 0 and held != ON_W:  # the rule fused with the gradient, every weight
                    if held == ON_WT:
                        ci, cv = _lists(idx, val, p, nb)
                        csr_rule_update(WT, mT, vT, gT, ci, cv, count, indptr, indices, values,
                                        rows, dZ, nb, rule, rate, hyper, decay)
                    elif sparse:
                        panel_rule_update_listed(WP, mP, vP, dZP, dZ, Xs, nb, rule, rate, hyper,
                                                 decay, samples, sample_counts)
                    else:
                        panel_rule_update(WP, mP, vP, dZP, XPs[0], dZ, Xs, nb, rule, rate, hyper,
                                          decay)
                    bias_rule_update(bs[0], mbs[0], vbs[0], dbs[0], dZ, rule, rate, hyper)
                    continue
                if on_panels_l:
                    panel_rule_update(WPs[l], mPs[l], vPs[l], dZPs[l], XPs[l], dZ, Qs[l - 1][:nb],
                                      nb, rule, rate, hyper, decay)
                    bias_rule_update(bs[l], mbs[l], vbs[l], dbs[l], dZ, rule, rate, hyper)
                    continue
                Q_prev = Xs if l == 0 else Qs[l - 1][:nb]
                dense_backward_weights(dWs[l], dbs[l], dZ, Q_prev)
                optimizer_update(Ws[l], bs[l], mWs[l], mbs[l], vWs[l], vbs[l], dWs[l], dbs[l],
                                 rule, rate, hyper, decay)
                continue
            # (the panel updates step the biases too, while they pack dZ)
            if l == 0 and held == ON_PANELS and sparse:
                panel_sgd_update_listed(WP, bs[0], dZP, dZ, Xs, lr, nb, samples, sample_counts)
                continue
            if l == 0 and held == ON_PANELS:
                panel_sgd_update(WP, bs[0], dZP, XPs[0], dZ, Xs, lr, nb)
                continue
            if on_panels_l:
                panel_sgd_update(WPs[l], bs[l], dZPs[l], XPs[l], dZ, Qs[l - 1][:nb], lr, nb)
                continue
            if l == 0 and sparse:
                ci, cv = _lists(idx, val, p, nb)
                csr_sgd_update(WT, ci, cv, count, indptr, indices, values, rows, dZ, lr, nb,
                               colcum)
            else:
                Q_prev = Xs if l == 0 else Qs[l - 1][:nb]
                # The loss gradient has no structural zeros; a hidden dZ has ReLU's.
                if l == L - 1 or count_nonzero(dZ) >= DENSE_UPDATE_DENSITY * nb * U:
                    dense_sgd_update(Ws[l], dZ, Q_prev, lr, nb)
                else:
                    ci, cv = _lists(idx, val, U, nb)
                    nonzero_cols(ci, cv, count, dZ)
                    sparse_sgd_update(Ws[l], ci, cv, count, Q_prev, lr, nb)
            bias_sgd_update(bs[l], dZ, lr)
    _hold_with_state(Ws[0], WT, WP, mWs[0], mT, mP, vWs[0], vT, vP, held, ON_W)
    _hold_hidden(WPs, mPs, vPs, Ws, mWs, vWs, False)
    return done


@njit(**SERIAL)
def batch_weights(wb, weights, rows):
    """The batch's row factors and the divisor of its L2 penalty.

    Unweighted (``weights`` empty): (an empty array, n_b). Else wb[:n_b] gets
    c_i = w_i n_b / sum(w), so that the mean of weighted rows is
    sum(w_i loss_i) / sum(w), and the divisor is sum(w): scikit-learn's
    weighted cost and gradient. A batch whose weights are all 0 changes
    nothing but its penalty step (c = 0, divisor n_b).
    """
    nb = rows.shape[0]
    if weights.shape[0] == 0:
        return wb[:0], float(nb)
    total = 0.0
    for r in range(nb):
        total += weights[rows[r]]
    if total <= 0:
        wb[:nb] = 0
        return wb[:nb], float(nb)
    scale = nb / total
    for r in range(nb):
        wb[r] = weights[rows[r]] * scale
    return wb[:nb], total


# Where train_steps holds the first layer's weights: Ws[0], W^T or panels.
ON_W, ON_WT, ON_PANELS = 0, 1, 2


@njit(**SERIAL)
def _hold(W, WT, WP, held, wanted):
    """Move the first layer's weights from the array ``held`` names to the
    one ``wanted`` names (ON_W, ON_WT or ON_PANELS): between W^T and panels
    directly (rows of W^T are rows of panels), else through W."""
    if held == wanted:
        return
    if held == ON_WT and wanted == ON_PANELS:
        panels_from_transposed(WP, WT)
        return
    if held == ON_PANELS and wanted == ON_WT:
        transposed_from_panels(WT, WP)
        return
    if held == ON_WT:
        transpose(W, WT)
    elif held == ON_PANELS:
        unpack_panels(W, WP)
    if wanted == ON_WT:
        transpose(WT, W)
    elif wanted == ON_PANELS:
        pack_panels(WP, W)


@njit(**SERIAL)
def _hold_hidden(WPs, mPs, vPs, Ws, mWs, vWs, into_panels):
    """Move the hidden layers that have panels (``WPs[l]`` not empty), and the
    state their rule keeps, into their panels or back to W."""
    for l in range(1, len(Ws)):
        if WPs[l].shape[0] == 0:
            continue
        for P, W in ((WPs[l], Ws[l]), (mPs[l], mWs[l]), (vPs[l], vWs[l])):
            if P.shape[0] > 0:
                if into_panels:
                    pack_panels(P, W)
                else:
                    unpack_panels(W, P)


@njit(**SERIAL)
def _hold_with_state(W, WT, WP, mW, mT, mP, vW, vT, vP, held, wanted):
    """_hold for the first layer's weights and the update rule's state
    beside them (mW, vW: empty where the rule keeps no such state)."""
    _hold(W, WT, WP, held, wanted)
    if mW.size:
        _hold(mW, mT, mP, held, wanted)
    if vW.size:
        _hold(vW, vT, vP, held, wanted)


@njit(**SERIAL)
def _batch_nonzeros(indptr, rows):
    """Non-zeros of the compressed training set's rows ``rows``, together."""
    total = 0
    for r in range(rows.shape[0]):
        total += indptr[rows[r] + 1] - indptr[rows[r]]
    return total
