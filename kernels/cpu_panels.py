"""The first layer, and wide hidden layers (``hidden_layers``), on W^T
packed in panels of units: register tiles sized for 512-bit vectors, over
every pixel of a dense batch or only the non-zero blocks of a sparse one
(CPU-only pieces of ``train_steps`` and of inference, fastbp/inference.py).
A hidden layer's third product, dQ = dZ W, is ``panel_backward_input``.

A dense product blocked 4 x 4 along its common axis (``cpu.dense_forward``,
``cpu.dense_sgd_update``) loads 8 vectors per 16 multiply-adds, half of them
from L2, which bounds it near the 256-bit multiply-add rate whatever the
vector width. Here both first-layer products are tiles of 8 rows x 2 vectors
of units (16 accumulators in registers, 8 broadcast scalars and 2 vector
loads per 16 multiply-adds), the BLAS form, on W^T packed so that each panel
of units is contiguous:

    WP[t, k, c] = W[t * PW + c, k]     (PW = panel_width, zero past the last unit)

* forward: ``Z[i, panel t] = sum_k X[i, k] WP[t, k, :]`` for 8 samples i;
* update: ``WP[t, k, :] -= lr / n sum_i X[i, k] dZP[t, i, :]`` for 8 pixels k,
  with dZ first packed the same way (dZP) so that its rows are whole vectors.

A sparse batch (MNIST) takes tiles of 4 rows x 2 vectors (8 accumulators)
over lists of what each tile needs (``cpu_tile_lists.list_rows``): 39 % of
the pixels for a forward tile of 4 MNIST samples (47 % for 8), 28 % of the
samples for an update tile of 4 pixels (39 % for 8).

Work items are (panel, block of 8 rows), panel-major, so each thread works on
about the same panels in both products and finds them in its own cache. Each
element is one item's sum in a fixed order: results do not depend on the
number of threads. The conventions of ``kernels/cpu.py`` hold (outputs first,
no allocation). Used where ``worthwhile``, which needs AVX-512: each product
asks for 512-bit vectors for itself (``_wide_vectors``), whatever the process's
setting; with 256-bit ones these tiles were slower than the 4 x 4 blocks
(docs/speed-log.md).
"""

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic, overload
from numba.np.numpy_support import carray

from . import vector_width
from .codes import RULE_ADAM, RULE_SGD
from .config import FUSED_OUTPUT_MAX, HIDDEN_PANEL_BYTES, HIDDEN_PANEL_ROWS, MAX_PADDING
from .cpu_common import FASTMATH, PARALLEL, SERIAL, activate, sgd, step

PANEL_ROWS = 8  # rows of a register tile: samples (forward) or pixels (update)
# Rows of the zero-skipping tiles: fewer rows, less to visit. An update tile
# of 4 pixels visits the samples that have any of them (MNIST: 28 %; of 8
# pixels: 39 %), a forward tile of 4 samples the pixels that any of them has
# (39 %; of 8 samples: 47 %). Still 8 multiply-adds per load (4 rows x 2
# vectors).
SKIP_ROWS = 4
PANEL_BYTES = 128  # a panel row: two 512-bit vectors
# The tile kernels sum in the order they are written, without "reassoc":
# given it, LLVM split a half-wide float64 tile's sum over the samples into
# interleaved partial sums, so the zero-skipping tiles stopped giving the
# dense tiles' bits (the tiles hold their accumulators in registers
# already; reassociation buys them nothing).
TILES = dict(PARALLEL, fastmath=FASTMATH - {"reassoc"})
_CELLS = PANEL_ROWS * PANEL_BYTES // 4  # a tile's elements at float32, the narrowest dtype


def input_blocks_shape(columns, rows):
    """The shape of ``rows`` rows of ``columns`` inputs in blocks of
    PANEL_ROWS columns (``pack_inputs``): (ceil(columns / 8), rows, 8)."""
    return ((columns + PANEL_ROWS - 1) // PANEL_ROWS, rows, PANEL_ROWS)


def rows_alias(columns, dtype):
    """Whether rows of ``columns`` elements of dtype lie a multiple of 4 KiB
    apart (1024, 2048, 3072 ... inputs at float32): an update tile's column
    of them (PANEL_ROWS inputs, one line in each of the batch's rows) then
    falls in one of L1's 64 sets, whose 12 or 16 ways hold a few of the
    batch's 64-1024 lines, and the rest come from L2 on every tile. Such
    inputs are packed first (``pack_inputs``). Rows 1-3 KiB apart (256-768
    inputs) spread over 2-4 sets, and packing them cost more than it saved
    (docs/speed-log.md)."""
    return columns * np.dtype(dtype).itemsize % 4096 == 0


def panel_width(dtype):
    """Units per panel for a NumPy dtype: 32 at float32, 16 at float64."""
    return PANEL_BYTES // dtype.itemsize


def worthwhile(sizes, dtype):
    """Whether train_steps (and inference) should run the first layer of a
    net of these layer sizes on panels (dense batches; sparse ones too where
    ``fastbp.sparse_rows.tiles_pay``): where Numba may use 512-bit
    vectors (``vector_width.available``: the tiles ask for them per function,
    ``_wide_vectors``), when the net has a hidden layer (the first layer is
    not the output layer), and when padding its units to the tiles'
    columns (``padded_units``) adds at most MAX_PADDING - 1 of them."""
    padded = padded_units(sizes[1], dtype) if len(sizes) > 1 else 0
    return (vector_width.available() and len(sizes) > 2
            and padded <= MAX_PADDING * sizes[1])


def hidden_layers(sizes, dtype, rows):
    """Which layers past the first train_steps holds in panels: (L,) bools,
    for batches (or inference chunks) of ``rows`` rows. Where the first
    layer's panels run (``worthwhile``), for the layers whose W takes at
    least HIDDEN_PANEL_BYTES, or any W where rows is at least
    HIDDEN_PANEL_ROWS, and whose units pad as little as the first layer's
    must; never the first layer (it has its own layouts) nor a narrow output
    layer (fused with its loss, on W)."""
    dtype = np.dtype(dtype)
    L = len(sizes) - 1
    on = [False] * L
    if not worthwhile(sizes, dtype):
        return tuple(on)
    for l in range(1, L):
        U, P = sizes[l + 1], sizes[l]
        fused = l == L - 1 and U <= FUSED_OUTPUT_MAX
        big = U * P * dtype.itemsize >= HIDDEN_PANEL_BYTES or rows >= HIDDEN_PANEL_ROWS
        on[l] = not fused and big and padded_units(U, dtype) <= MAX_PADDING * U
    return tuple(on)


def padded_units(units, dtype):
    """The units that the tiles compute for ``units`` real ones: whole panels,
    the last one half wide where its units fit in half (``_columns``)."""
    width = panel_width(np.dtype(dtype))
    whole, rest = divmod(units, width)
    return whole * width + (0 if rest == 0 else width // 2 if rest <= width // 2 else width)


def panel_count(units, dtype):
    """Panels that hold ``units`` units."""
    width = panel_width(np.dtype(dtype))
    return (units + width - 1) // width


def panel_shape(units, rows, dtype):
    """The shape of ``units`` units' panels with ``rows`` rows each: (T, rows,
    PW), for W^T's panels (rows = inputs) or dZ's (rows = batch rows)."""
    return (panel_count(units, dtype), rows, panel_width(np.dtype(dtype)))


@intrinsic
def _wide_vectors(typingctx):
    """Let LLVM use 512-bit vectors in the function this is called from (a
    parallel loop's body: call it inside the loop), whatever the process's
    setting (kernels/vector_width.py): the "prefer-vector-width" function
    attribute overrides the CPU's 256-bit preference for that function only.
    Emits no instructions. llvmlite lists only valueless attributes, so the
    key="value" one is added to its set directly."""
    def codegen(context, builder, signature, args):
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()
    return types.none(), codegen


@intrinsic
def stack_buffer(typingctx, n, dtype_ref):
    """A stack array of n elements: LLVM promotes it to registers when every
    access has a constant index (the tile loops are fully unrolled)."""
    if not isinstance(n, types.IntegerLiteral):
        return None
    dtype = dtype_ref.dtype

    def codegen(context, builder, signature, args):
        with builder.goto_entry_block():
            buffer = builder.alloca(context.get_value_type(dtype),
                                    size=context.get_constant(types.intp, n.literal_value))
        # On a cache line: where LLVM keeps the tile in memory (before and
        # after its sums), a misaligned one split every vector access in two,
        # and the same kernel ran up to 2x slower from one call site to another.
        buffer.align = 64
        return buffer
    return types.CPointer(dtype)(n, dtype_ref), codegen


def _width_of(A):
    """panel_width of A's dtype, as a compile-time constant."""


@overload(_width_of, inline="always")
def _width_of_impl(A):
    width = PANEL_BYTES // (A.dtype.bitwidth // 8)
    return lambda A: width


@njit(inline="always", fastmath=FASTMATH)
def _tile(dtype_of, rows=PANEL_ROWS):
    """A zeroed rows x panel-width register tile for dtype_of's dtype (rows:
    a constant, PANEL_ROWS or SKIP_ROWS, so the inlined loops unroll)."""
    width = _width_of(dtype_of)
    acc = carray(stack_buffer(_CELLS, dtype_of.dtype), (rows, width))
    for r in range(rows):
        for c in range(width):
            acc[r, c] = 0
    return acc


@njit(inline="always", fastmath=FASTMATH)
def _add_outer4(acc, x0, x1, x2, x3, V, t, row, cols):
    """_add_outer for a tile of 4 rows: one load per 4 multiply-adds."""
    for c in range(cols):
        v = V[t, row, c]
        acc[0, c] += x0 * v
        acc[1, c] += x1 * v
        acc[2, c] += x2 * v
        acc[3, c] += x3 * v


@njit(inline="always", fastmath=FASTMATH)
def _add_outer(acc, x0, x1, x2, x3, x4, x5, x6, x7, V, t, row, cols):
    """acc[r, :cols] += x_r * V[t, row, :cols] for the tile's 8 rows: one load
    of the panel row per 8 multiply-adds (a row of W^T's panel, or of dZ's)."""
    for c in range(cols):
        v = V[t, row, c]
        acc[0, c] += x0 * v
        acc[1, c] += x1 * v
        acc[2, c] += x2 * v
        acc[3, c] += x3 * v
        acc[4, c] += x4 * v
        acc[5, c] += x5 * v
        acc[6, c] += x6 * v
        acc[7, c] += x7 * v


@njit(inline="always")
def _columns(A, t, units):
    """The columns that panel t's tiles compute, each a compile-time constant
    in its branch of the caller's ``if``: half the panel width where the
    panel's real units (``units - t * PW``; only the last panel can have
    fewer than PW) fit in half, else all of it. Returns (half, PW / 2, PW).
    A 100-unit float32 layer then computes 112 columns, not 128: its last
    panel's rows are one 512-bit vector instead of two. The updates' steps
    follow both branches, one copy (``_real_units``): every branch is
    compiled code of its own, and with whole-tile copies in both the rules'
    kernels took twice as long to compile."""
    width = _width_of(A)
    return units - t * width <= width // 2, width // 2, width


@njit(inline="always")
def _real_units(A, t, units):
    """The units of panel t that are not padding, a bound known only at run
    time: an update's epilogue over the panel width, a constant, was
    unrolled whole by LLVM before its vectoriser ran, then done one float at
    a time (a 32 x 64 x 64 update took 2.1x as long, docs/speed-log.md).
    Padding columns need no step: their sums are zero, and so their weights
    and state stay zero under every rule."""
    width = _width_of(A)
    return max(0, min(width, units - t * width))  # (0 past the last real panel)


@njit(inline="always")
def _listed_groups(A, units):
    """(items' column groups, merged) for panel_forward_listed over
    ``units`` units: one group per panel, except that where the last panel
    is half wide (``_columns``) and follows a whole one, the two make one
    group of 1.5 panels (``merged``; its tiles hold 3 vectors a row). A
    tile of SKIP_ROWS rows and one vector has 4 accumulators, each waiting
    on its own last multiply-add: it ran no faster than a tile of two
    vectors, so a 100-unit layer's forward took as long as a 128-unit
    one's. (The listed updates, the same way, gained nothing: docs/speed-log.md.)"""
    width = _width_of(A)
    T = (units + width - 1) // width
    merged = T >= 2 and units - (T - 1) * width <= width // 2
    return (T - 1 if merged else T), merged


@njit(inline="always", fastmath=FASTMATH)
def _tile_and_half(dtype_of):
    """A zeroed SKIP_ROWS x 1.5-panel-width tile (``_listed_groups``)."""
    width = _width_of(dtype_of)
    acc = carray(stack_buffer(_CELLS, dtype_of.dtype), (SKIP_ROWS, width + width // 2))
    for r in range(SKIP_ROWS):
        for c in range(width + width // 2):
            acc[r, c] = 0
    return acc


@njit(inline="always", fastmath=FASTMATH)
def _add_outer4_and_half(acc, x0, x1, x2, x3, V, t, row):
    """_add_outer4 over panel t's row and the first half of panel t + 1's,
    side by side in a 1.5-panel tile (panel_forward_listed's last group)."""
    width = _width_of(V)
    _add_outer4(acc, x0, x1, x2, x3, V, t, row, width)
    for c in range(width // 2):
        v = V[t + 1, row, c]
        acc[0, width + c] += x0 * v
        acc[1, width + c] += x1 * v
        acc[2, width + c] += x2 * v
        acc[3, width + c] += x3 * v


@njit(inline="always")
def _clamped(i0, last):
    """Eight row indices from i0, those past ``last`` repeating it: a tile at
    the edge computes padding rows from real data, and its epilogue drops them."""
    return (min(i0, last), min(i0 + 1, last), min(i0 + 2, last), min(i0 + 3, last),
            min(i0 + 4, last), min(i0 + 5, last), min(i0 + 6, last), min(i0 + 7, last))


@njit(inline="always")
def _u(i):
    """i (>= 0) as an unsigned index, which Numba uses without its test for
    a negative one. Signed, that test on every element of a tile's
    epilogue (``Z[i0 + r, j0 + c]``) made LLVM store the tile with gathers
    and scatters: 8 x 32 tiles of 20-64-64-2 spent more time there than in
    their sums (docs/speed-log.md)."""
    return np.uintp(i)


@njit(inline="always", fastmath=FASTMATH)
def _forward_tile(acc, X, WP, t, i0, pixels, cols):
    """acc[r, :cols] = sum_k X[i0 + r, k] WP[t, k, :cols] for the 8 samples
    from i0, over ``pixels``: range(P), or a tile's list (panel_forward_listed)."""
    i_0, i_1, i_2, i_3, i_4, i_5, i_6, i_7 = _clamped(i0, X.shape[0] - 1)
    for k in pixels:
        _add_outer(acc, X[i_0, k], X[i_1, k], X[i_2, k], X[i_3, k], X[i_4, k], X[i_5, k],
                   X[i_6, k], X[i_7, k], WP, t, k, cols)


@njit(inline="always", fastmath=FASTMATH)
def _forward_tile4(acc, X, WP, t, i0, pixels, cols):
    """_forward_tile for the SKIP_ROWS (4) samples from i0 (panel_forward_listed)."""
    last = X.shape[0] - 1
    i_0, i_1, i_2, i_3 = min(i0, last), min(i0 + 1, last), min(i0 + 2, last), min(i0 + 3, last)
    for k in pixels:
        _add_outer4(acc, X[i_0, k], X[i_1, k], X[i_2, k], X[i_3, k], WP, t, k, cols)


@njit(inline="always", fastmath=FASTMATH)
def _forward_tile4_and_half(acc, X, WP, t, i0, pixels):
    """_forward_tile4 over panels t and t + 1 (half), in a 1.5-panel tile."""
    last = X.shape[0] - 1
    i_0, i_1, i_2, i_3 = min(i0, last), min(i0 + 1, last), min(i0 + 2, last), min(i0 + 3, last)
    for k in pixels:
        _add_outer4_and_half(acc, X[i_0, k], X[i_1, k], X[i_2, k], X[i_3, k], WP, t, k)


@njit(**TILES)
def panel_forward(Z, Q, X, WP, b, act):
    """The dense first layer on panels: ``Z = X W^T + b``, ``Q = h(Z)`` (6.11).

    Z, Q : (n, U) outputs; X : (n, P); WP : (T, P, PW), W^T in panels
    (``pack_panels``); b : (U,). Computes what ``cpu.dense_forward`` does.
    """
    blocks = (Z.shape[0] + PANEL_ROWS - 1) // PANEL_ROWS
    # Race-free: item w writes only the rows of its block in its panel's columns.
    for w in prange(WP.shape[0] * blocks):
        _wide_vectors()
        _forward_item(Z, Q, X, WP, b, act, w // blocks, (w % blocks) * PANEL_ROWS,
                      range(X.shape[1]))


@njit(inline="always", fastmath=FASTMATH)
def _forward_item(Z, Q, X, WP, b, act, t, i0, pixels, tile_rows=PANEL_ROWS):
    """A forward work item: the tile of the ``tile_rows`` (a constant: 8, or
    SKIP_ROWS for a listed tile) samples from i0 in panel t over ``pixels``
    (every pixel, or the block's list), then its epilogue."""
    n, U = Z.shape
    width = _width_of(WP)
    j0 = t * width
    acc = _tile(WP, tile_rows)
    half, narrow, wide = _columns(WP, t, U)
    if tile_rows == SKIP_ROWS:
        if half:
            _forward_tile4(acc, X, WP, t, i0, pixels, narrow)
        else:
            _forward_tile4(acc, X, WP, t, i0, pixels, wide)
    elif half:
        _forward_tile(acc, X, WP, t, i0, pixels, narrow)
    else:
        _forward_tile(acc, X, WP, t, i0, pixels, wide)
    _store_forward(Z, Q, acc, b, act, i0, min(tile_rows, n - i0), j0, min(width, U - j0),
                   tile_rows)


@njit(inline="always", fastmath=FASTMATH)
def _store_forward(Z, Q, acc, b, act, i0, rows, j0, units, tile_rows=PANEL_ROWS):
    """The epilogue: Z = acc + b and Q = h(Z) for the first ``rows`` rows of
    a tile of ``tile_rows`` and its first ``units`` columns (the rest are
    padding). A whole tile takes a copy with constant bounds, which LLVM
    unrolls and vectorises."""
    width = _width_of(Z)
    if rows == tile_rows and units == width:
        _store_rows(Z, Q, acc, b, act, i0, tile_rows, j0, width)
    else:
        _store_rows(Z, Q, acc, b, act, i0, rows, j0, units)


@njit(inline="always", fastmath=FASTMATH)
def _store_rows(Z, Q, acc, b, act, i0, rows, j0, units):
    zero, one = Z.dtype.type(0), Z.dtype.type(1)
    for r in range(rows):
        i = _u(i0 + r)
        for c in range(units):
            j = _u(j0 + c)
            z = acc[r, c] + b[j]
            Z[i, j] = z
            Q[i, j] = activate(z, act, zero, one)


@njit(**PARALLEL)
def pack_inputs(XP, X, n):
    """``XP[q, i, r] = X[i, q * PANEL_ROWS + r]`` for the first n rows, zero
    past the last column: the update tiles' inputs with each tile's 8
    columns of a sample contiguous (``rows_alias``). XP : (Q, >= n, 8)
    output (``input_blocks_shape``); X : (>= n, P)."""
    P = X.shape[1]
    # Race-free: iteration q writes only block q.
    for q in prange(XP.shape[0]):
        k0, block = q * PANEL_ROWS, _u(q)
        if k0 + PANEL_ROWS <= P:
            for i in range(n):
                for r in range(PANEL_ROWS):
                    XP[block, i, _u(r)] = X[i, _u(k0 + r)]
        else:
            for i in range(n):
                for r in range(PANEL_ROWS):
                    XP[block, i, _u(r)] = X[i, _u(k0 + r)] if k0 + r < P else 0


@njit(inline="always")
def _tile_inputs(XP, X, q, k0):
    """(rows, first column) of an update tile's inputs: block q of the packed
    inputs from its column 0 where they are packed (XP not empty), else X
    from column k0. Both are 2-d C arrays, so one copy of the tile serves both."""
    if XP.shape[0] > 0:
        return XP[q], 0
    return X, k0


@njit(inline="always", fastmath=FASTMATH)
def _update_tile(acc, X, dZP, t, k0, n, cols):
    """acc[r, :cols] = sum_{i < n} X[i, k0 + r] dZP[t, i, :cols] for the 8 pixels from k0."""
    k_0, k_1, k_2, k_3, k_4, k_5, k_6, k_7 = _clamped(k0, X.shape[1] - 1)
    for i in range(n):
        _add_outer(acc, X[i, _u(k_0)], X[i, _u(k_1)], X[i, _u(k_2)], X[i, _u(k_3)],
                   X[i, _u(k_4)], X[i, _u(k_5)], X[i, _u(k_6)], X[i, _u(k_7)], dZP, _u(t), i,
                   cols)


@njit(**TILES)
def panel_sgd_update(WP, b, dZP, XP, dZ, X, lr, n):
    """The first layer's weight gradient fused with its SGD step, on panels:
    ``W -= lr / n dZ^T X`` (6.27c, 6.23a), no dW stored, and the biases'
    ``b -= lr / n sum_i dZ_i`` (6.27d, 6.23b) while dZ is packed.

    WP : (T, P, PW) updated in place; b : (U,) updated in place, or empty
    to leave the biases to the caller; dZP : (T, >= n, PW) work buffer (dZ in
    panels); XP : (Q, >= n, 8) work buffer for X in blocks of columns
    (``pack_inputs``, where ``rows_alias``), or empty to read X as it is;
    dZ : (>= n, U); X : (>= n, P); n = n_b, the rows of dZ and X that count
    (packed and summed alike). Computes what ``cpu.dense_sgd_update`` does,
    the same bits with XP or without.
    """
    T, P = WP.shape[0], WP.shape[1]
    step = WP.dtype.type(-lr / n)
    pack_dz(dZP, dZ, n, b, lr)
    if XP.shape[0] > 0:
        pack_inputs(XP, X, n)
    blocks = (P + PANEL_ROWS - 1) // PANEL_ROWS
    # Race-free: item w writes only the pixel rows of its block in its panel.
    for w in prange(T * blocks):
        _wide_vectors()
        t = w // blocks
        k0 = (w % blocks) * PANEL_ROWS
        rows = min(PANEL_ROWS, P - k0)
        Xt, kt = _tile_inputs(XP, X, w % blocks, k0)
        acc = _tile(WP)
        half, narrow, wide = _columns(WP, t, dZ.shape[1])
        if half:
            _update_tile(acc, Xt, dZP, t, kt, n, narrow)
        else:
            _update_tile(acc, Xt, dZP, t, kt, n, wide)
        _step_rows(WP, acc, step, t, k0, rows, _real_units(WP, t, dZ.shape[1]))


@njit(**PARALLEL)
def pack_dz(dZP, dZ, n, b, lr):
    """dZP[t, i, c] = dZ[i, t * PW + c] for the first n rows, zero past the
    last unit; and, where b is not empty, b's SGD step ``b -= lr / n
    sum_i dZ_i`` from those rows while each panel is in L1, one step per
    sample as ``cpu.bias_sgd_update`` takes them (which read all of dZ
    again, on one thread)."""
    U = dZ.shape[1]
    width = _width_of(dZP)
    bias_step = dZP.dtype.type(lr / n)
    # Race-free: iteration t writes only panel t of dZP and its units of b.
    for t in prange(dZP.shape[0]):
        j0, real, p = t * width, _real_units(dZP, t, U), _u(t)
        for i in range(n):
            for c in range(real):
                dZP[p, i, _u(c)] = dZ[i, _u(j0 + c)]
            for c in range(real, width):
                dZP[p, i, _u(c)] = 0
        if b.shape[0] > 0:
            for i in range(n):  # in order, one step per sample, as bias_sgd_update
                for c in range(real):
                    j = _u(j0 + c)
                    b[j] = sgd(b[j], dZP[p, i, _u(c)], bias_step)


@njit(**PARALLEL)
def pack_dz_by_samples(dZS, dZ, n):
    """``dZS[s, j, c] = dZ[s * PW + c, j]`` for the first n rows, zero past n
    and past the last unit: dZ in panels of samples, so that one unit's
    gradient for a panel of samples is one vector row. dZS : (S, T * PW, PW)
    output (``sample_panel_shape``); dZ : (>= n, U). Copied in PW x PW blocks,
    each read and written within L1."""
    U = dZ.shape[1]
    width = _width_of(dZS)
    # Race-free: iteration s writes only panel s.
    for s in prange(dZS.shape[0]):
        i0, p = s * width, _u(s)
        for j0 in range(0, dZS.shape[1], width):
            if i0 + width <= n and j0 + width <= U:  # a whole block: no tests inside
                for c in range(width):
                    for jj in range(width):
                        dZS[p, _u(j0 + jj), _u(c)] = dZ[_u(i0 + c), _u(j0 + jj)]
                continue
            for c in range(width):
                for jj in range(width):
                    i, j = i0 + c, j0 + jj
                    dZS[p, _u(j), _u(c)] = dZ[_u(i), _u(j)] if i < n and j < U else 0


def sample_panel_shape(units, rows, dtype):
    """The shape of dZ (``rows`` x ``units``) in panels of samples: (S, T * PW, PW)."""
    width = panel_width(np.dtype(dtype))
    return ((rows + width - 1) // width, panel_count(units, dtype) * width, width)


@njit(**TILES)
def panel_backward_input(dQ, dZS, WP, n):
    """``dQ = dZ W`` (6.27b) on panels, for a hidden layer held in panels:
    tiles of 8 inputs k x one panel of samples, each the BLAS form (per unit
    j, 8 broadcast weights ``WP[t, k, c]`` and one row ``dZS[s, j, :]``), the
    sum over units in order, so the result does not depend on the threads.

    dQ : (>= n, P) output, its first n rows written; dZS : (S, T * PW, PW),
    dZ in panels of samples (``pack_dz_by_samples``); WP : (T, P, PW).
    """
    T, P = WP.shape[0], WP.shape[1]
    width = _width_of(WP)
    S = dZS.shape[0]
    blocks = (P + PANEL_ROWS - 1) // PANEL_ROWS
    # Race-free: item w writes only its block's inputs for its panel's samples.
    for w in prange(blocks * S):
        _wide_vectors()
        k0 = (w // S) * PANEL_ROWS
        s = w % S
        k_0, k_1, k_2, k_3, k_4, k_5, k_6, k_7 = _clamped(k0, P - 1)
        acc = _tile(WP)
        for t in range(T):
            for c in range(width):
                _add_outer(acc, WP[t, k_0, c], WP[t, k_1, c], WP[t, k_2, c], WP[t, k_3, c],
                           WP[t, k_4, c], WP[t, k_5, c], WP[t, k_6, c], WP[t, k_7, c], dZS, s,
                           t * width + c, width)
        # Constant indices into the tile (its loops unroll), so it stays in registers.
        for c in range(width):
            i = s * width + c
            if i < n:
                for r in range(PANEL_ROWS):
                    if k0 + r < P:
                        dQ[_u(i), _u(k0 + r)] = acc[r, c]


@njit(inline="always", fastmath=FASTMATH)
def _step_rows(WP, acc, step, t, k0, rows, cols):
    """The SGD step: WP[t, k0 + r, :cols] += step * acc[r, :cols] for the
    tile's first ``rows`` rows; cols are the panel's real units
    (``_real_units``: the padding stays zero)."""
    for r in range(rows):
        k = _u(k0 + r)
        for c in range(cols):
            WP[_u(t), k, _u(c)] += step * acc[r, c]


# Zero-skipping tiles (sparse batches: MNIST pixels are 81 % zeros). A tile
# of 4 samples needs only the pixels that any of them has (39 % of MNIST's;
# 47 % for 8); a tile of 4 pixels only the samples that have any of them
# (28 %; 39 % for 8). Each batch lists both (cpu_tile_lists.list_rows), then the tiles
# run over the lists: the same sums in the same order minus terms that are
# exactly zero, so the results are bitwise those of panel_forward and
# panel_sgd_update (for finite weights and dZ: a skipped 0 x inf would be NaN).

@njit(**TILES)
def panel_forward_listed(Z, Q, X, WP, b, act, pixels, pixel_counts):
    """panel_forward skipping the pixels that none of a tile's samples has
    (``list_rows``): bitwise the same Z and Q."""
    n, U = Z.shape
    width = _width_of(WP)
    blocks = (n + SKIP_ROWS - 1) // SKIP_ROWS
    groups, merged = _listed_groups(WP, U)
    # Race-free: item w writes only the rows of its block in its group's columns.
    for w in prange(groups * blocks):
        _wide_vectors()
        t, blk = w // blocks, w % blocks
        listed = pixels[blk, :pixel_counts[blk]]
        if merged and t == groups - 1:
            i0 = blk * SKIP_ROWS
            acc = _tile_and_half(WP)
            _forward_tile4_and_half(acc, X, WP, t, i0, listed)
            _store_rows(Z, Q, acc, b, act, i0, min(SKIP_ROWS, n - i0), t * width, U - t * width)
        else:
            _forward_item(Z, Q, X, WP, b, act, t, blk * SKIP_ROWS, listed, SKIP_ROWS)


@njit(inline="always", fastmath=FASTMATH)
def _update_tile_listed(acc, X, dZP, t, k0, samples, count, cols):
    """_update_tile for the SKIP_ROWS pixels from k0, over the listed samples only."""
    last = X.shape[1] - 1
    k_0, k_1, k_2, k_3 = min(k0, last), min(k0 + 1, last), min(k0 + 2, last), min(k0 + 3, last)
    for m in range(count):
        i = samples[m]
        _add_outer4(acc, X[i, k_0], X[i, k_1], X[i, k_2], X[i, k_3], dZP, t, i, cols)


@njit(**TILES)
def panel_sgd_update_listed(WP, b, dZP, dZ, X, lr, n, samples, sample_counts):
    """panel_sgd_update skipping the samples that have none of a tile's
    pixels (``list_rows``), and tiles with none at all: bitwise the same WP.
    Tiles of SKIP_ROWS pixels: each element's sum is the same whatever the
    tile's height, and 4 pixels leave fewer samples to visit than 8."""
    T, P = WP.shape[0], WP.shape[1]
    step = WP.dtype.type(-lr / n)
    pack_dz(dZP, dZ, n, b, lr)
    blocks = (P + SKIP_ROWS - 1) // SKIP_ROWS
    # Race-free: item w writes only the pixel rows of its block in its panel.
    for w in prange(T * blocks):
        _wide_vectors()
        t = w // blocks
        q = w % blocks
        if sample_counts[q] == 0:
            continue
        k0 = q * SKIP_ROWS
        rows = min(SKIP_ROWS, P - k0)
        acc = _tile(WP, SKIP_ROWS)
        half, narrow, wide = _columns(WP, t, dZ.shape[1])
        if half:
            _update_tile_listed(acc, X, dZP, t, k0, samples[q], sample_counts[q], narrow)
        else:
            _update_tile_listed(acc, X, dZP, t, k0, samples[q], sample_counts[q], wide)
        _step_rows(WP, acc, step, t, k0, rows, _real_units(WP, t, dZ.shape[1]))


# The same tiles under a rule that changes every weight (momentum, Nesterov,
# Adam, or any rule with an L2 penalty): a tile's gradient is complete once
# its sum over the batch is, so the tile applies the rule to its weights and
# their state (mP, vP, in the same panels) while they are in registers and
# L1. No gradient is stored and the rule's pass over every weight costs no
# pass of its own. Tiles with no listed sample still apply the rule, with a
# zero gradient: their state decays and their weights move.

@njit(**TILES)
def panel_rule_update(WP, mP, vP, dZP, XP, dZ, X, n, rule, lr, hyper, decay):
    """The first layer's weight gradient fused with the update ``rule``, on
    panels: g = dZ^T X / n + decay W (6.27c and the L2 penalty), then
    ``optim.step`` (``cpu.optimizer_update`` on W's layout).

    WP, mP, vP : (T, P, PW), the weights and the rule's state (mP, vP may be
    empty where the rule has none) updated in place; dZP : (T, >= n, PW)
    work buffer; XP : as panel_sgd_update's; dZ : (>= n, U); X : (>= n, P);
    lr : the step's rate (Adam: bias-corrected); hyper : ``optim.step``'s;
    decay = alpha / n_b.
    """
    T, P = WP.shape[0], WP.shape[1]
    scale = WP.dtype.type(1 / n)
    pack_dz(dZP, dZ, n, dZP[0, 0, :0], 0.0)  # (biases: bias_rule_update)
    if XP.shape[0] > 0:
        pack_inputs(XP, X, n)
    blocks = (P + PANEL_ROWS - 1) // PANEL_ROWS
    # Race-free: item w writes only the pixel rows of its block in its panel.
    for w in prange(T * blocks):
        _wide_vectors()
        t = w // blocks
        k0 = (w % blocks) * PANEL_ROWS
        rows = min(PANEL_ROWS, P - k0)
        Xt, kt = _tile_inputs(XP, X, w % blocks, k0)
        acc = _tile(WP)
        half, narrow, wide = _columns(WP, t, dZ.shape[1])
        if half:
            _update_tile(acc, Xt, dZP, t, kt, n, narrow)
        else:
            _update_tile(acc, Xt, dZP, t, kt, n, wide)
        _rule_rows(WP, mP, vP, acc, scale, decay, rule, lr, hyper, t, k0, rows,
                   _real_units(WP, t, dZ.shape[1]))


@njit(**TILES)
def panel_rule_update_listed(WP, mP, vP, dZP, dZ, X, n, rule, lr, hyper, decay, samples,
                             sample_counts):
    """panel_rule_update skipping the samples that have none of a tile's
    pixels (``list_rows``): the same sums, and WP, mP, vP equal to
    rounding (LLVM may contract the rule's arithmetic differently in each
    kernel: Nesterov's is seen to). Every tile applies the rule, those with
    no sample at all with a zero gradient sum."""
    T, P = WP.shape[0], WP.shape[1]
    scale = WP.dtype.type(1 / n)
    pack_dz(dZP, dZ, n, dZP[0, 0, :0], 0.0)  # (biases: bias_rule_update)
    blocks = (P + SKIP_ROWS - 1) // SKIP_ROWS
    # Race-free: item w writes only the pixel rows of its block in its panel.
    for w in prange(T * blocks):
        _wide_vectors()
        t = w // blocks
        q = w % blocks
        k0 = q * SKIP_ROWS
        rows = min(SKIP_ROWS, P - k0)
        acc = _tile(WP, SKIP_ROWS)
        half, narrow, wide = _columns(WP, t, dZ.shape[1])
        if half:
            _update_tile_listed(acc, X, dZP, t, k0, samples[q], sample_counts[q], narrow)
        else:
            _update_tile_listed(acc, X, dZP, t, k0, samples[q], sample_counts[q], wide)
        _rule_rows(WP, mP, vP, acc, scale, decay, rule, lr, hyper, t, k0, rows,
                   _real_units(WP, t, dZ.shape[1]))


@njit(inline="always", fastmath=FASTMATH)
def _rule_rows(WP, mP, vP, acc, scale, decay, rule, lr, hyper, t, k0, rows, cols):
    """w, m, v = step(w, acc * scale + decay * w, m, v) for the tile's rows:
    ``cpu_common.rule_row`` over the tile's 3-d indices and its ``cols``
    real units (``_real_units``), one loop per rule so that each vectorises
    without the others' state (through rule_row's 1-d row views, the Adam
    update over MNIST's tiles took 190 instead of 149 us: docs/speed-log.md)."""
    zero = WP.dtype.type(0)
    t = _u(t)
    for r in range(rows):
        k = _u(k0 + r)
        if rule == RULE_SGD:
            for c in range(cols):
                w = WP[t, k, c]
                WP[t, k, c] = sgd(w, acc[r, c] * scale + decay * w, lr)
        elif rule == RULE_ADAM:
            for c in range(cols):
                w = WP[t, k, c]
                WP[t, k, c], mP[t, k, c], vP[t, k, c] = step(
                    w, acc[r, c] * scale + decay * w, mP[t, k, c], vP[t, k, c], rule, lr,
                    hyper)
        else:
            for c in range(cols):
                w = WP[t, k, c]
                WP[t, k, c], mP[t, k, c], _ = step(w, acc[r, c] * scale + decay * w,
                                                   mP[t, k, c], zero, rule, lr, hyper)


@njit(**SERIAL)
def pack_panels(WP, W):
    """``WP[t, k, c] = W[t * PW + c, k]``, zero past the last unit.
    WP : (T, P, PW) output; W : (U, P). It is panels_from_transposed on W's
    transposed view (the same reads, strided)."""
    panels_from_transposed(WP, W.T)


@njit(**PARALLEL)
def unpack_panels(W, WP):
    """``W[j, k] = WP[j // PW, k, j % PW]``, the inverse of pack_panels.
    W : (U, P) output; WP : (T, P, PW)."""
    U, P = W.shape
    width = _width_of(WP)
    # Race-free: iteration j writes only row j of W.
    for j in prange(U):
        for k in range(P):
            W[j, k] = WP[j // width, k, j % width]


@njit(**PARALLEL)
def panels_from_transposed(WP, WT):
    """``WP[t, k, c] = WT[k, t * PW + c]``, zero past the last unit: pack_panels
    from W^T (p, U), a contiguous copy per panel row instead of a transpose.
    WP : (T, P, PW) output; WT : (P, U)."""
    P, U = WT.shape
    width = _width_of(WP)
    # Race-free: iteration t writes only panel t.
    for t in prange(WP.shape[0]):
        for k in range(P):
            for c in range(width):
                j = t * width + c
                WP[t, k, c] = WT[k, j] if j < U else 0


@njit(**PARALLEL)
def transposed_from_panels(WT, WP):
    """``WT[k, j] = WP[j // PW, k, j % PW]``, the inverse of
    panels_from_transposed. WT : (P, U) output; WP : (T, P, PW)."""
    P, U = WT.shape
    width = _width_of(WP)
    # Race-free: iteration k writes only row k of WT.
    for k in prange(P):
        for j in range(U):
            WT[k, j] = WP[j // width, k, j % width]
