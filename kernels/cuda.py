"""Hand-written CUDA kernels: the ``@cuda.jit`` twins of ``kernels/cpu.py``.

Every public kernel of ``kernels.cpu`` has a twin here with the same name, the
same argument names in the same order, and the same meaning (outputs first,
then inputs, then scalars; shapes as in ``kernels/cpu.py``). A test
(``tests/test_cuda_kernels.py``) keeps the two modules in step.

The one rule where the twins differ: a kernel cannot return a value, so where
a CPU kernel returns a scalar, its twin takes one more, LAST, argument, a
1-element device array that it writes the scalar into:

* ``out_cost`` (float64) for J: ``softmax_cross_entropy``, ``squared_error``,
  ``binary_cross_entropy``, ``backprop_all``;
* ``out_wrong`` (int64) for ``count_misclassified``, ``count_label_misses``;
* ``out_done`` (int64) for ``train_steps``, the number of steps completed.

And one exception to "same arguments": ``train_steps`` takes the work buffers
its device needs (here the gradient arrays ``dWs``, ``dbs``; on the CPU the
transposed first layer ``WT`` and the non-zero lists ``idx``, ``val``,
``count``); all its other arguments agree.

Launching. Each thread takes the work items ``cuda.grid(1)``, then every
``cuda.gridsize(1)``-th one after it (a grid-stride loop), so any grid size
gives the same result (``train_steps`` instead gives whole blocks tiles of
a wide layer's forward pass and weight gradient, ``_forward_smem`` and
``_weights_smem``, and spreads a narrow layer's dot products over groups of
a block's threads). ``THREADS`` is the block
size the host uses (tests patch it small so that tiny inputs span several
blocks). Kernels that produce a scalar and the three orchestrators
(``forward_all``, ``backprop_all``, ``train_steps``) separate their phases
with grid-wide barriers (``cuda.cg.this_grid().sync()``), so numba-cuda
launches them cooperatively and their grid must not exceed the kernel's
``max_cooperative_grid_blocks`` (``fastbp.backends.cuda`` sizes it; Numba's
simulator runs such grids with one block). ``train_steps`` runs a whole chunk
of SGD iterations in one launch: launches cost 17-38 us, more than a step.

Determinism: every output element is written by one thread, and every sum
runs in a fixed order (serial, or a fixed tree over a block's threads), so
results do not depend on the grid size (the block size may change rounding).
The dense products skip no zeros (unlike the CPU kernels): on a GPU the
branch costs more than the multiply.

Arrays may be NumPy arrays (copied by Numba around each launch) or device
arrays. Nothing here needs a GPU to import: ``@cuda.jit`` compiles lazily.
"""

import math

from numba import config, cuda, float64, int64

from . import activations, losses, optim
from .codes import (BINARY_CROSS_ENTROPY, CROSS_ENTROPY, IDENTITY, RULE_ADAM, RULE_SGD,
                    SQUARED_ERROR)
from .config import (CUDA_TILE_MIN_UNITS, THREADS,  # noqa: F401 - THREADS: the host reads it
                     TRAIN_STEPS_REGISTERS)
from .registry import TWINS

__all__ = list(TWINS)

# The kernels with grid-wide barriers: they need a cooperative launch.
COOPERATIVE = frozenset({"softmax_cross_entropy", "squared_error", "binary_cross_entropy",
                         "count_misclassified", "count_label_misses", "forward_all",
                         "backprop_all", "train_steps"})

# Size of the per-block shared arrays of train_steps' reductions: the most
# threads per block (config.THREADS, read at launch time, must not exceed it).
MAX_THREADS = 1024
# Numba's simulator takes no register cap.
_TRAIN_STEPS_OPTIONS = ({} if config.ENABLE_CUDASIM or TRAIN_STEPS_REGISTERS is None
                        else {"max_registers": TRAIN_STEPS_REGISTERS})


# --- device functions: one phase's share of work for thread t0 -------------

# h and h' (6.3): the bodies cpu_common.py compiles too.
_activate = cuda.jit(device=True)(activations.activate)
_sgd = cuda.jit(device=True)(optim.sgd)
_step = cuda.jit(device=True)(optim.step)
_adam_rate = cuda.jit(device=True)(optim.adam_rate)
_derivative = cuda.jit(device=True)(activations.derivative)


@cuda.jit(device=True)
def _forward_items(Z, Q, Q_prev, W, b, act, t0, stride):
    """Items (i, j) of ``Z = Q_prev W^T + b``, ``Q = h(Z)``."""
    n = Q_prev.shape[0]
    P = Q_prev.shape[1]
    U = W.shape[0]
    zero, one = Z.dtype.type(0), Z.dtype.type(1)
    for t in range(t0, n * U, stride):
        i = t // U
        j = t - i * U
        acc = b[j]
        for k in range(P):
            acc += Q_prev[i, k] * W[j, k]
        Z[i, j] = acc
        Q[i, j] = _activate(acc, act, zero, one)


@cuda.jit(device=True)
def _forward_tiles(Z, Q, Q_prev, W, b, act, part):
    """``_forward_items`` with each dot product split over a group of threads
    of one block (32 of a block of 128 or more; a quarter of a smaller one):
    coalesced loads and chains 32 times shorter, for the long products of
    the first layer (784 terms on MNIST). The group's partial sums meet by a
    fixed tree in the shared array ``part`` (float64, >= blockDim.x). Every
    thread of the block must call it."""
    n = Q_prev.shape[0]
    P = Q_prev.shape[1]
    U = W.shape[0]
    width = cuda.blockDim.x
    tid = cuda.threadIdx.x
    group = max(1, min(32, width // 4))
    per_block = width // group  # outputs per block at a time; spare threads idle
    g = tid // group
    lane = tid - g * group
    zero, one = Z.dtype.type(0), Z.dtype.type(1)
    n_tiles = (n * U + per_block - 1) // per_block
    for tile in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):  # uniform per block
        o = tile * per_block + g
        active = g < per_block and o < n * U
        i = o // U
        j = o - i * U
        acc = zero
        if active:
            for k in range(lane, P, group):
                acc += Q_prev[i, k] * W[j, k]
        if group > 1:  # the same for the whole block: the barriers are uniform
            part[tid] = acc
            cuda.syncthreads()
            half = 1
            while half < group:
                if active and lane % (2 * half) == 0 and lane + half < group:
                    part[tid] += part[tid + half]
                cuda.syncthreads()
                half *= 2
            acc = Z.dtype.type(part[tid])
            cuda.syncthreads()  # part is reused by the next tile
        if active and lane == 0:
            z = acc + b[j]
            Z[i, j] = z
            Q[i, j] = _activate(z, act, zero, one)


# _forward_smem's tile: 16 threads across its columns, each with 2 of them
# (TILE_COLS), and blockDim / 16 threads down its rows, each with 4
# (TILE_ROWS_PER_THREAD); the common axis staged TILE_K at a time.
TILE_COLS = 32
TILE_ROWS_PER_THREAD = 4
TILE_K = 16
TILE_MAX_THREADS = 256  # a block of 256 threads: a tile of 64 rows
# The shared arrays' shapes, as constants (+1 column: no bank conflicts).
_TILE_A = (TILE_ROWS_PER_THREAD * TILE_MAX_THREADS // 16, TILE_K + 1)
_TILE_W = (TILE_COLS, TILE_K + 1)


@cuda.jit(device=True)
def _tiles_fit(units):
    """Whether a layer of ``units`` units takes the block tiles
    (_forward_smem, _weights_smem) in this launch: the same answer for every
    thread of the grid."""
    width = cuda.blockDim.x
    return (units >= CUDA_TILE_MIN_UNITS and width % 16 == 0
            and width <= TILE_MAX_THREADS)


@cuda.jit(device=True)
def _forward_smem(Z, Q, Q_prev, W, b, act):
    """``Z = Q_prev W^T + b``, ``Q = h(Z)`` as block tiles of (4 blockDim / 16)
    rows x TILE_COLS units: each k-chunk of Q_prev's and W's tile rows is
    staged in shared memory by the whole block (loads along k, coalesced),
    then each thread adds the chunk to its 4 x 2 outputs in registers, 6
    shared loads per 8 multiply-adds instead of 2 global loads per one. Each
    output is one thread's sum over k in order, plus b: the same for any
    grid. Every thread of the block must call it (block-wide barriers).
    The eight sums are scalars, not a local array, which ptxas kept in
    memory (the stack frame grew by them)."""
    n = Q_prev.shape[0]
    P = Q_prev.shape[1]
    U = W.shape[0]
    width = cuda.blockDim.x
    tid = cuda.threadIdx.x
    down = width // 16  # threads down the rows
    rows = TILE_ROWS_PER_THREAD * down
    tx = tid % 16
    ty = tid // 16
    sA = cuda.shared.array(_TILE_A, Z.dtype)
    sW = cuda.shared.array(_TILE_W, Z.dtype)
    zero = Z.dtype.type(0)
    col_tiles = (U + TILE_COLS - 1) // TILE_COLS
    n_tiles = ((n + rows - 1) // rows) * col_tiles
    for tile in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):  # uniform per block
        i0 = (tile // col_tiles) * rows
        j0 = (tile % col_tiles) * TILE_COLS
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = zero
        for k0 in range(0, P, TILE_K):
            _stage_rows(sA, Q_prev, i0, k0, rows)
            _stage_rows(sW, W, j0, k0, TILE_COLS)
            cuda.syncthreads()
            c00, c01, c10, c11, c20, c21, c30, c31 = _chunk_products(
                sA, sW, tx, ty, down, c00, c01, c10, c11, c20, c21, c30, c31)
            cuda.syncthreads()  # the chunk is overwritten next
        i = i0 + ty
        j = j0 + tx
        _store_output(Z, Q, b, act, i, j, c00)
        _store_output(Z, Q, b, act, i, j + 16, c01)
        _store_output(Z, Q, b, act, i + down, j, c10)
        _store_output(Z, Q, b, act, i + down, j + 16, c11)
        _store_output(Z, Q, b, act, i + 2 * down, j, c20)
        _store_output(Z, Q, b, act, i + 2 * down, j + 16, c21)
        _store_output(Z, Q, b, act, i + 3 * down, j, c30)
        _store_output(Z, Q, b, act, i + 3 * down, j + 16, c31)


@cuda.jit(device=True)
def _stage_rows(tile, src, r0, k0, rows):
    """tile[r, c] = src[r0 + r, k0 + c] for r < rows, c < TILE_K (zero past
    src), loaded by the whole block along src's rows (coalesced)."""
    zero = tile.dtype.type(0)
    for e in range(cuda.threadIdx.x, rows * TILE_K, cuda.blockDim.x):
        r = e // TILE_K
        c = e - r * TILE_K
        inside = r0 + r < src.shape[0] and k0 + c < src.shape[1]
        tile[r, c] = src[r0 + r, k0 + c] if inside else zero


@cuda.jit(device=True)
def _stage_columns(tile, src, i0, c0, cols):
    """tile[c, m] = src[i0 + m, c0 + c] for c < cols, m < TILE_K (zero past
    src): TILE_K rows of src transposed, loaded by the whole block along
    src's rows (coalesced)."""
    zero = tile.dtype.type(0)
    for e in range(cuda.threadIdx.x, cols * TILE_K, cuda.blockDim.x):
        m = e // cols
        c = e - m * cols
        inside = i0 + m < src.shape[0] and c0 + c < src.shape[1]
        tile[c, m] = src[i0 + m, c0 + c] if inside else zero


@cuda.jit(device=True)
def _chunk_products(sA, sW, tx, ty, down, c00, c01, c10, c11, c20, c21, c30, c31):
    """A thread's 4 x 2 register tile after one staged chunk: c_rh +=
    sum_m sA[ty + r down, m] sW[tx + 16 h, m], m in order (past the data:
    zeros times zeros)."""
    for m in range(TILE_K):
        w0 = sW[tx, m]
        w1 = sW[tx + 16, m]
        a = sA[ty, m]
        c00 += a * w0
        c01 += a * w1
        a = sA[ty + down, m]
        c10 += a * w0
        c11 += a * w1
        a = sA[ty + 2 * down, m]
        c20 += a * w0
        c21 += a * w1
        a = sA[ty + 3 * down, m]
        c30 += a * w0
        c31 += a * w1
    return c00, c01, c10, c11, c20, c21, c30, c31


@cuda.jit(device=True)
def _weights_smem(dW, db, dZ, Q_prev, t0, stride):
    """``_weights_items`` as block tiles of (4 blockDim / 16) units x
    TILE_COLS inputs of dW, the batch staged TILE_K samples at a time in
    shared memory (dZ's tile rows transposed on the way in, so that both
    operands are read along the samples): each dW element one thread's sum
    over the samples in order, times 1 / n_b, the same for any grid. Then
    db by a grid-stride loop. Every thread of the block must call it."""
    n = dZ.shape[0]
    U = dZ.shape[1]
    P = Q_prev.shape[1]
    width = cuda.blockDim.x
    tid = cuda.threadIdx.x
    down = width // 16
    rows = TILE_ROWS_PER_THREAD * down
    tx = tid % 16
    ty = tid // 16
    sA = cuda.shared.array(_TILE_A, dW.dtype)  # sA[r, m] = dZ[i0 + m, j0 + r]
    sW = cuda.shared.array(_TILE_W, dW.dtype)  # sW[c, m] = Q_prev[i0 + m, k0 + c]
    zero = dW.dtype.type(0)
    inv_n = dW.dtype.type(1) / dW.dtype.type(n)
    col_tiles = (P + TILE_COLS - 1) // TILE_COLS
    n_tiles = ((U + rows - 1) // rows) * col_tiles
    for tile in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):  # uniform per block
        j0 = (tile // col_tiles) * rows
        k0 = (tile % col_tiles) * TILE_COLS
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = zero
        for i0 in range(0, n, TILE_K):
            _stage_columns(sA, dZ, i0, j0, rows)
            _stage_columns(sW, Q_prev, i0, k0, TILE_COLS)
            cuda.syncthreads()
            c00, c01, c10, c11, c20, c21, c30, c31 = _chunk_products(
                sA, sW, tx, ty, down, c00, c01, c10, c11, c20, c21, c30, c31)
            cuda.syncthreads()
        j = j0 + ty
        k = k0 + tx
        _store_gradient(dW, j, k, c00 * inv_n)
        _store_gradient(dW, j, k + 16, c01 * inv_n)
        _store_gradient(dW, j + down, k, c10 * inv_n)
        _store_gradient(dW, j + down, k + 16, c11 * inv_n)
        _store_gradient(dW, j + 2 * down, k, c20 * inv_n)
        _store_gradient(dW, j + 2 * down, k + 16, c21 * inv_n)
        _store_gradient(dW, j + 3 * down, k, c30 * inv_n)
        _store_gradient(dW, j + 3 * down, k + 16, c31 * inv_n)
    for j in range(t0, U, stride):
        acc = zero
        for i in range(n):
            acc += dZ[i, j]
        db[j] = acc * inv_n


@cuda.jit(device=True)
def _store_gradient(dW, j, k, value):
    if j < dW.shape[0] and k < dW.shape[1]:
        dW[j, k] = value


@cuda.jit(device=True)
def _weights_layer(dW, db, dZ, Q_prev, t0, stride):
    """One layer's weight gradient by the whole grid: _weights_smem where the
    layer is wide enough and the block's shape suits it, else
    _weights_items. Every thread must call it."""
    if _tiles_fit(dW.shape[0]):
        _weights_smem(dW, db, dZ, Q_prev, t0, stride)
    else:
        _weights_items(dW, db, dZ, Q_prev, t0, stride)


@cuda.jit(device=True)
def _store_output(Z, Q, b, act, i, j, acc):
    """The forward epilogue of one output, where (i, j) is inside Z."""
    if i < Z.shape[0] and j < Z.shape[1]:
        z = acc + b[j]
        Z[i, j] = z
        Q[i, j] = _activate(z, act, Z.dtype.type(0), Z.dtype.type(1))


@cuda.jit(device=True)
def _forward_layer(Z, Q, Q_prev, W, b, act, part):
    """One layer's forward pass by the whole grid: _forward_smem where the
    layer is wide enough and the block's shape suits it, else
    _forward_tiles. Every thread must call it."""
    if _tiles_fit(W.shape[0]):
        _forward_smem(Z, Q, Q_prev, W, b, act)
    else:
        _forward_tiles(Z, Q, Q_prev, W, b, act, part)


@cuda.jit(device=True)
def _activation_items(dZ, dQ, Z, Q, act, t0, stride):
    """Items (i, j) of ``dZ = dQ * h'(Z)``."""
    n = dZ.shape[0]
    U = dZ.shape[1]
    zero, one = dZ.dtype.type(0), dZ.dtype.type(1)
    for t in range(t0, n * U, stride):
        i = t // U
        j = t - i * U
        dZ[i, j] = dQ[i, j] * _derivative(Z[i, j], Q[i, j], act, zero, one)


@cuda.jit(device=True)
def _weights_items(dW, db, dZ, Q_prev, t0, stride):
    """Items (j, k) of ``dW = dZ^T Q_prev / n_b``; item (j, P) is ``db[j]``."""
    n = dZ.shape[0]
    U = dZ.shape[1]
    P = Q_prev.shape[1]
    inv_n = dW.dtype.type(1) / dW.dtype.type(n)
    for t in range(t0, U * (P + 1), stride):
        j = t // (P + 1)
        k = t - j * (P + 1)
        acc = dW.dtype.type(0)
        if k < P:
            for i in range(n):
                acc += dZ[i, j] * Q_prev[i, k]
            dW[j, k] = acc * inv_n
        else:
            for i in range(n):
                acc += dZ[i, j]
            db[j] = acc * inv_n


@cuda.jit(device=True)
def _input_dot(dZ, W, i, k):
    """``(dZ W)[i, k]``: one entry of dQ_prev (6.27b)."""
    acc = W.dtype.type(0)
    for j in range(W.shape[0]):
        acc += dZ[i, j] * W[j, k]
    return acc


@cuda.jit(device=True)
def _input_items(dQ_prev, dZ, W, t0, stride):
    """Items (i, k) of ``dQ_prev = dZ W``."""
    n = dZ.shape[0]
    P = W.shape[1]
    for t in range(t0, n * P, stride):
        i = t // P
        k = t - i * P
        dQ_prev[i, k] = _input_dot(dZ, W, i, k)


@cuda.jit(device=True)
def _input_activation_items(dZ_prev, dQ_prev, Z_prev, Q_prev, dZ, W, act, t0, stride):
    """Items (i, k) of ``dQ_prev = dZ W`` and, fused, ``dZ_prev = dQ_prev * h'``."""
    n = dZ.shape[0]
    P = W.shape[1]
    zero, one = W.dtype.type(0), W.dtype.type(1)
    for t in range(t0, n * P, stride):
        i = t // P
        k = t - i * P
        g = _input_dot(dZ, W, i, k)
        dQ_prev[i, k] = g
        dZ_prev[i, k] = g * _derivative(Z_prev[i, k], Q_prev[i, k], act, zero, one)


# A row's loss, gradient and error: the bodies cpu.py compiles too.
_softmax_row = cuda.jit(device=True)(losses.softmax_cross_entropy_row)
_squared_row = cuda.jit(device=True)(losses.squared_error_row)
_binary_row = cuda.jit(device=True)(losses.binary_cross_entropy_row)
_weigh_row = cuda.jit(device=True)(losses.weigh_row)
_is_wrong = cuda.jit(device=True)(losses.row_is_wrong)
_misses_a_label = cuda.jit(device=True)(losses.row_misses_a_label)


@cuda.jit(device=True)
def _loss_rows(dZ, row_loss, Z, labels, targets, weights, loss, t0, stride):
    """Rows i of whichever loss ``loss`` names: dZ[i] and row_loss[i], scaled
    by weights[i] (see kernels.cpu.softmax_cross_entropy)."""
    for i in range(t0, Z.shape[0], stride):
        if loss == CROSS_ENTROPY:
            row_loss[i] = _softmax_row(dZ, Z, i, labels[i])
        elif loss == SQUARED_ERROR:
            row_loss[i] = _squared_row(dZ, Z, i, targets)
        else:
            row_loss[i] = _binary_row(dZ, Z, i, targets)
        _weigh_row(dZ, row_loss, i, weights)


@cuda.jit(device=True)
def _row_wrong(Z, labels, targets, loss, i):
    """1 if row i is misclassified (0 for regression)."""
    if loss == CROSS_ENTROPY:
        return _is_wrong(Z, labels, i)
    if loss == SQUARED_ERROR:
        return 0
    return _misses_a_label(Z, targets, i)


@cuda.jit(device=True)
def _mean(values):
    """Mean in a fixed serial order (run by one thread)."""
    s = values.dtype.type(0)
    for i in range(values.shape[0]):
        s += values[i]
    return s / values.shape[0]


@cuda.jit(device=True)
def _update_items(W, b, dW, db, lr, t0, stride):
    """Items (j, k) of ``W -= lr dW``; item (j, P) is ``b[j] -= lr db[j]``."""
    U = W.shape[0]
    P = W.shape[1]
    step = W.dtype.type(lr)
    for t in range(t0, U * (P + 1), stride):
        j = t // (P + 1)
        k = t - j * (P + 1)
        if k < P:
            W[j, k] = _sgd(W[j, k], dW[j, k], step)
        else:
            b[j] = _sgd(b[j], db[j], step)


@cuda.jit(device=True)
def _rule_items(W, b, mW, mb, vW, vb, dW, db, rule, lr, hyper, decay, t0, stride):
    """Items (j, k) of one update by ``rule`` (``optim.step``), the L2
    penalty's gradient ``decay * W`` added to the weights'; item (j, P) is
    b[j]'s. The twin of ``kernels.cpu.optimizer_update``."""
    U = W.shape[0]
    P = W.shape[1]
    zero = W.dtype.type(0)
    for t in range(t0, U * (P + 1), stride):
        j = t // (P + 1)
        k = t - j * (P + 1)
        if k < P:
            g = dW[j, k] if decay == 0 else dW[j, k] + decay * W[j, k]
            if rule == RULE_SGD:
                W[j, k] = _sgd(W[j, k], g, lr)
            elif rule == RULE_ADAM:
                W[j, k], mW[j, k], vW[j, k] = _step(W[j, k], g, mW[j, k], vW[j, k], rule, lr,
                                                    hyper)
            else:
                W[j, k], mW[j, k], _ = _step(W[j, k], g, mW[j, k], zero, rule, lr, hyper)
        elif rule == RULE_SGD:
            b[j] = _sgd(b[j], db[j], lr)
        elif rule == RULE_ADAM:
            b[j], mb[j], vb[j] = _step(b[j], db[j], mb[j], vb[j], rule, lr, hyper)
        else:
            b[j], mb[j], _ = _step(b[j], db[j], mb[j], zero, rule, lr, hyper)


_squared_norm = cuda.jit(device=True)(optim.squared_norm)  # run by one thread


@cuda.jit(device=True)
def _any_not_finite(W, b, t0, stride):
    """Whether any of this thread's items (j, k) of W, or (j, P) of b, is
    NaN or infinite."""
    U = W.shape[0]
    P = W.shape[1]
    bad = False
    for t in range(t0, U * (P + 1), stride):
        j = t // (P + 1)
        k = t - j * (P + 1)
        bad |= not math.isfinite(W[j, k] if k < P else b[j])
    return bad


@cuda.jit(device=True)
def _gather_items(out, src, rows, t0, stride):
    """Items (r, k) of ``out[r] = src[rows[r]]``."""
    n = out.shape[0]
    P = out.shape[1]
    for t in range(t0, n * P, stride):
        r = t // P
        k = t - r * P
        out[r, k] = src[rows[r], k]


@cuda.jit(device=True)
def _block_sum(part, tid, width):
    """Sum part[:width] into part[0] by a fixed tree (every thread of the
    block calls this; part[0] is read after its last barrier)."""
    cuda.syncthreads()
    half = 1
    while half < width:
        if tid % (2 * half) == 0 and tid + half < width:
            part[tid] += part[tid + half]
        cuda.syncthreads()
        half *= 2


@cuda.jit(device=True)
def _batch_weights_block(wb, weights, rows, part_cost, tid, width):
    """Run by one whole block: ``kernels.cpu.batch_weights`` (wb[:n_b] the row
    factors, wb[n_b] the penalty's divisor), the weights summed by a fixed
    tree in the shared part_cost."""
    nb = rows.shape[0]
    total = float64(0)
    for r in range(tid, nb, width):
        total += weights[rows[r]]
    part_cost[tid] = total
    _block_sum(part_cost, tid, width)
    total = part_cost[0]
    scale = nb / total if total > 0 else 0.0
    for r in range(tid, nb, width):
        wb[r] = weights[rows[r]] * scale
    if tid == 0:
        wb[nb] = total if total > 0 else nb
    cuda.syncthreads()  # part_cost is the loss's next


@cuda.jit(device=True)
def _loss_block(dZ, row_loss, Z, labels, targets, weights, loss, part_cost, part_wrong,
                batch_cost, batch_error, s):
    """Run by one whole block: the loss rows, then their mean cost and error
    rate into batch_cost[s], batch_error[s], summed by a fixed tree in the
    shared arrays part_cost, part_wrong (so no thread sums all rows alone)."""
    tid = cuda.threadIdx.x
    width = cuda.blockDim.x
    n = Z.shape[0]
    _loss_rows(dZ, row_loss, Z, labels, targets, weights, loss, tid, width)
    cost = float64(0)
    wrong = 0
    for i in range(tid, n, width):  # the rows this thread just wrote
        cost += row_loss[i]
        wrong += _row_wrong(Z, labels, targets, loss, i)
    part_cost[tid] = cost
    part_wrong[tid] = wrong
    _block_sum(part_cost, tid, width)
    _block_sum(part_wrong, tid, width)
    if tid == 0:
        batch_cost[s] = part_cost[0] / n
        batch_error[s] = part_wrong[0] / n if loss != SQUARED_ERROR else math.nan


@cuda.jit(device=True)
def _gather_batch(Xb, yb, Tb, X, labels, targets, order, step, batch_size, loss, t0, stride):
    """Items of step ``step``'s mini-batch: Xb, and yb or Tb, from ``order``."""
    start = step * batch_size
    nb = min(batch_size, order.shape[0] - start)
    rows = order[start:start + nb]
    _gather_items(Xb[:nb], X, rows, t0, stride)
    if loss == CROSS_ENTROPY:
        for r in range(t0, nb, stride):
            yb[r] = labels[rows[r]]
    else:
        _gather_items(Tb[:nb], targets, rows, t0, stride)


# --- kernels: the twins of kernels/cpu.py ----------------------------------

@cuda.jit
def dense_forward(Z, Q, Q_prev, W, b, act):
    """Fused dense layer: ``Z = Q_prev W^T + b`` and ``Q = h(Z)`` (Alg. 6.1 l. 4-5).

    Z, Q : (n_b, U) outputs (Q may be Z); Q_prev : (n_b, P), W : (U, P), b : (U,).
    """
    _forward_items(Z, Q, Q_prev, W, b, act, cuda.grid(1), cuda.gridsize(1))


@cuda.jit
def activation_backward(dZ, dQ, Z, Q, act):
    """``dZ = dQ * h'(Z)`` (6.27a). dZ : (n_b, U) output (may alias dQ)."""
    _activation_items(dZ, dQ, Z, Q, act, cuda.grid(1), cuda.gridsize(1))


@cuda.jit
def dense_backward_weights(dW, db, dZ, Q_prev):
    """``dW = dZ^T Q_prev / n_b``, ``db = sum_i dZ_i / n_b`` (6.27c/d).

    dW : (U, P), db : (U,) outputs; dZ : (n_b, U), Q_prev : (n_b, P).
    """
    _weights_items(dW, db, dZ, Q_prev, cuda.grid(1), cuda.gridsize(1))


@cuda.jit
def dense_backward_input(dQ_prev, dZ, W):
    """``dQ_prev = dZ W`` (6.27b). dQ_prev : (n_b, P) output; dZ : (n_b, U), W : (U, P)."""
    _input_items(dQ_prev, dZ, W, cuda.grid(1), cuda.gridsize(1))


@cuda.jit
def softmax_cross_entropy(dZ, row_loss, Z, labels, weights, out_cost):
    """Classification cost and output gradient (6.20, 6.26b). Cooperative.

    dZ : (n_b, M) output; row_loss : (n_b,) output; Z : (n_b, M); labels :
    (n_b,) int; weights : (n_b,) or another length for none; out_cost : (1,)
    float64 output, J = mean(row_loss).
    """
    _cost(dZ, row_loss, Z, labels, Z, weights, CROSS_ENTROPY, out_cost)


@cuda.jit
def squared_error(dZ, row_loss, Z, targets, weights, out_cost):
    """Regression cost and output gradient (6.19, 6.26a). Cooperative.

    dZ : (n_b, M) output; row_loss : (n_b,) output; Z, targets : (n_b, M);
    weights as in softmax_cross_entropy; out_cost : (1,) float64 output.
    """
    no_labels = cuda.local.array(1, int64)  # typed, never read
    _cost(dZ, row_loss, Z, no_labels, targets, weights, SQUARED_ERROR, out_cost)


@cuda.jit
def binary_cross_entropy(dZ, row_loss, Z, targets, weights, out_cost):
    """Logistic outputs' cost and output gradient. Cooperative.

    dZ : (n_b, M) output; row_loss : (n_b,) output; Z, targets : (n_b, M);
    weights as in softmax_cross_entropy; out_cost : (1,) float64 output.
    """
    no_labels = cuda.local.array(1, int64)  # typed, never read
    _cost(dZ, row_loss, Z, no_labels, targets, weights, BINARY_CROSS_ENTROPY, out_cost)


@cuda.jit(device=True)
def _cost(dZ, row_loss, Z, labels, targets, weights, loss, out_cost):
    """The loss kernels' body: rows, a grid barrier, the mean by one thread."""
    t0 = cuda.grid(1)
    _loss_rows(dZ, row_loss, Z, labels, targets, weights, loss, t0, cuda.gridsize(1))
    cuda.cg.this_grid().sync()
    if t0 == 0:
        out_cost[0] = _mean(row_loss)


@cuda.jit
def count_misclassified(Z, labels, out_wrong):
    """Rows whose argmax (first maximum) differs from the label. Cooperative.

    Z : (n_b, M); labels : (n_b,) int; out_wrong : (1,) int64 output. Integer
    atomic adds are exact, so the count does not depend on their order.
    """
    _count_wrong(Z, labels, Z, CROSS_ENTROPY, out_wrong)


@cuda.jit
def count_label_misses(Z, targets, out_wrong):
    """Rows with any logistic output on the wrong side of 1/2. Cooperative.

    Z, targets : (n_b, M); out_wrong : (1,) int64 output, exact as above.
    """
    no_labels = cuda.local.array(1, int64)  # typed, never read
    _count_wrong(Z, no_labels, targets, BINARY_CROSS_ENTROPY, out_wrong)


@cuda.jit(device=True)
def _count_wrong(Z, labels, targets, loss, out_wrong):
    """The counting kernels' body: one atomic add per thread."""
    t0 = cuda.grid(1)
    if t0 == 0:
        out_wrong[0] = 0
    cuda.cg.this_grid().sync()
    wrong = 0
    for i in range(t0, Z.shape[0], cuda.gridsize(1)):
        wrong += _row_wrong(Z, labels, targets, loss, i)
    if wrong:
        cuda.atomic.add(out_wrong, 0, wrong)


@cuda.jit
def sgd_update(W, b, dW, db, lr):
    """One SGD step (6.23a/b) in place. W, dW : (U, P); b, db : (U,); lr : gamma."""
    _update_items(W, b, dW, db, lr, cuda.grid(1), cuda.gridsize(1))


@cuda.jit
def gather_rows(out, src, rows):
    """``out[r] = src[rows[r]]``. out : (n_b, P) output; src : (n, P); rows : (n_b,) int."""
    _gather_items(out, src, rows, cuda.grid(1), cuda.gridsize(1))


@cuda.jit
def forward_all(Zs, Qs, X, Ws, bs, act):
    """Forward pass through every layer (6.24); Zs[-1] holds Z_L. Cooperative.

    Zs[l], Qs[l] : (>= n_b, U_l) outputs (Qs[-1] may be Zs[-1]); X : (n_b, p);
    Ws[l] : (U_l, U_{l-1}); bs[l] : (U_l,); act : hidden-layer activation.
    """
    grid = cuda.cg.this_grid()
    t0, stride = cuda.grid(1), cuda.gridsize(1)
    L = len(Ws)
    n = X.shape[0]
    for l in range(L):
        h = act if l < L - 1 else IDENTITY
        if l == 0:
            _forward_items(Zs[0][:n], Qs[0][:n], X, Ws[0], bs[0], h, t0, stride)
        else:
            _forward_items(Zs[l][:n], Qs[l][:n], Qs[l - 1][:n], Ws[l], bs[l], h, t0, stride)
        grid.sync()


@cuda.jit
def backprop_all(dWs, dbs, dZs, dQs, Zs, Qs, row_loss, X, labels, targets, weights,
                 Ws, bs, act, loss, out_cost):
    """Algorithm 6.1 for one mini-batch: forward, cost, backward. Cooperative.

    Arguments as in ``kernels.cpu.backprop_all`` (the unused one of labels /
    targets may hold any one dummy row); out_cost : (1,) float64 output, J.
    """
    grid = cuda.cg.this_grid()
    t0, stride = cuda.grid(1), cuda.gridsize(1)
    L = len(Ws)
    n = X.shape[0]
    for l in range(L):
        h = act if l < L - 1 else IDENTITY
        if l == 0:
            _forward_items(Zs[0][:n], Qs[0][:n], X, Ws[0], bs[0], h, t0, stride)
        else:
            _forward_items(Zs[l][:n], Qs[l][:n], Qs[l - 1][:n], Ws[l], bs[l], h, t0, stride)
        grid.sync()
    _loss_rows(dZs[L - 1][:n], row_loss[:n], Zs[L - 1][:n], labels, targets, weights, loss, t0,
               stride)
    grid.sync()
    if t0 == 0:
        out_cost[0] = _mean(row_loss[:n])
    for l in range(L - 1, -1, -1):
        # Phase l: layer l's gradient, and dQ, dZ of layer l - 1 (reads W_l only).
        if l == 0:
            _weights_items(dWs[0], dbs[0], dZs[0][:n], X, t0, stride)
        else:
            _weights_items(dWs[l], dbs[l], dZs[l][:n], Qs[l - 1][:n], t0, stride)
            _input_activation_items(dZs[l - 1][:n], dQs[l - 1][:n], Zs[l - 1][:n],
                                    Qs[l - 1][:n], dZs[l][:n], Ws[l], act, t0, stride)
        grid.sync()


@cuda.jit(**_TRAIN_STEPS_OPTIONS)
def train_steps(params, model, work, first, data, steps, out, out_done):
    """Run ``steps.n_steps`` SGD iterations (6.21/6.23) in one launch. Cooperative.

    Arguments as in ``kernels.cpu.train_steps`` (``kernels.arguments``), with
    this target's own ``CudaWork`` (gradient arrays dWs, dbs) and
    ``CudaFirstLayer`` (the plan: the first layer always runs dense here);
    out_done : (2,) int64 output: [0] the number of steps completed (fewer
    than n_steps when a cost turned non-finite; that step's update is not
    applied), and [1] 1 where, after all n_steps, a weight or bias is not
    finite (an update can overflow behind a finite cost), else 0: the host
    learns both from one copy, without bringing the weights back to check
    them.

    Per step, phases separated by grid barriers: forward per layer (dot
    products split over groups of threads, ``_forward_tiles``); the loss
    rows with the batch's cost and error (block 0 alone); then for l = L-1 ..
    0 one phase computing layer l's gradient and layer l-1's dQ, dZ while
    applying layer l+1's update (its gradient is complete, and nothing in the
    phase reads W_{l+1}); a last phase updates layer 0 and gathers the next
    step's batch. After the loss phase every thread reads the cost and stops,
    uniformly, if it is not finite, before any update.
    """
    Ws, bs, mWs, mbs, vWs, vbs = params
    act, loss = model
    Zs, Qs, dZs, dQs, row_loss, Xb, yb, Tb, wb, dWs, dbs = work
    X, labels, targets, weights = data
    order, first_step, n_steps, batch_size, lr, rule = steps[:6]
    momentum, beta1, beta2, eps, alpha, t_0 = steps[6:]
    batch_cost, batch_error = out
    dtype = Ws[0].dtype.type
    hyper = (dtype(momentum), dtype(beta1), dtype(1.0 - beta1), dtype(beta2), dtype(1.0 - beta2),
             dtype(eps))
    grid = cuda.cg.this_grid()
    t0, stride = cuda.grid(1), cuda.gridsize(1)
    part_cost = cuda.shared.array(MAX_THREADS, float64)  # also the forward's partials
    part_wrong = cuda.shared.array(MAX_THREADS, int64)
    L = len(Ws)
    n = order.shape[0]
    weighted = weights.shape[0] == n  # else a one-element dummy
    _gather_batch(Xb, yb, Tb, X, labels, targets, order, first_step, batch_size, loss,
                  t0, stride)
    if t0 == 0:
        out_done[1] = 0  # before the barrier: every later store of 1 comes after it
    grid.sync()
    for s in range(n_steps):
        start = (first_step + s) * batch_size
        nb = min(batch_size, n - start)
        for l in range(L):
            h = act if l < L - 1 else IDENTITY
            if l == 0:
                _forward_layer(Zs[0][:nb], Qs[0][:nb], Xb[:nb], Ws[0], bs[0], h, part_cost)
            else:
                _forward_layer(Zs[l][:nb], Qs[l][:nb], Qs[l - 1][:nb], Ws[l], bs[l], h,
                               part_cost)
            grid.sync()
        wts = wb[:nb] if weighted else wb[:0]
        if cuda.blockIdx.x == 0:  # a small phase: one block, no thread sums alone
            if weighted:
                _batch_weights_block(wb, weights, order[start:start + nb], part_cost,
                                     cuda.threadIdx.x, cuda.blockDim.x)
            _loss_block(dZs[L - 1][:nb], row_loss[:nb], Zs[L - 1][:nb], yb[:nb], Tb[:nb], wts,
                        loss, part_cost, part_wrong, batch_cost, batch_error, s)
            if alpha != 0 and cuda.threadIdx.x == 0:  # the L2 penalty, after the loss rows
                batch_cost[s] += alpha / (2 * (wb[nb] if weighted else nb)) * _squared_norm(Ws)
        grid.sync()
        rate = _adam_rate(lr, beta1, beta2, t_0 + s + 1) if rule == RULE_ADAM else lr
        decay = dtype(alpha / (wb[nb] if weighted else nb))
        if not math.isfinite(batch_cost[s]):  # every thread sees it: all stop here
            if t0 == 0:
                out_done[0] = s
            return
        for l in range(L - 1, -1, -1):
            if l == 0:
                _weights_layer(dWs[0], dbs[0], dZs[0][:nb], Xb[:nb], t0, stride)
            else:
                _weights_layer(dWs[l], dbs[l], dZs[l][:nb], Qs[l - 1][:nb], t0, stride)
                _input_activation_items(dZs[l - 1][:nb], dQs[l - 1][:nb], Zs[l - 1][:nb],
                                        Qs[l - 1][:nb], dZs[l][:nb], Ws[l], act, t0, stride)
            if l < L - 1:
                _rule_items(Ws[l + 1], bs[l + 1], mWs[l + 1], mbs[l + 1], vWs[l + 1], vbs[l + 1],
                            dWs[l + 1], dbs[l + 1], rule, dtype(rate), hyper, decay, t0, stride)
            grid.sync()
        _rule_items(Ws[0], bs[0], mWs[0], mbs[0], vWs[0], vbs[0], dWs[0], dbs[0], rule,
                    dtype(rate), hyper, decay, t0, stride)
        if s + 1 < n_steps:
            _gather_batch(Xb, yb, Tb, X, labels, targets, order, first_step + s + 1,
                          batch_size, loss, t0, stride)
        grid.sync()
    for l in range(L):  # the last barrier above ended every update
        if _any_not_finite(Ws[l], bs[l], t0, stride):
            out_done[1] = 1  # every writer stores the same value: no atomic needed
    if t0 == 0:
        out_done[0] = n_steps
