"""Zero-skipping CPU kernels: lists of non-zeros and the products that use them.

MNIST pixels are 81 % zeros and ReLU zeroes about half of each dZ, so the
first layer's forward product and weight gradient, and every dQ_prev = dZ W,
run over lists of non-zeros instead of whole rows. Two list formats:

* per-row (or per-column) lists in (rows, width) arrays ``idx`` (int32
  positions), ``val`` (values) with ``count`` entries used per row, built per
  batch by ``nonzero_rows`` / ``nonzero_cols``;
* compressed sparse rows of the whole training set, ``indptr``, ``indices``,
  ``values`` (``compress_rows``), built once per training run, from which each
  batch's first layer reads its rows in place.

The conventions of ``kernels/cpu.py`` hold here too (outputs first, no
allocation, results independent of the thread count).
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import cgutils, types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

from .cpu_common import FASTMATH, PARALLEL, SERIAL, activate, prefetch_row, rule_row
from .cpu_tile_lists import GROUP, nonzero_bits16


@njit(inline="always", fastmath=FASTMATH)
def _add_scaled_rows(out, M, rows, values, count, scale):
    """``out += scale * sum_m values[m] * M[rows[m], :]`` for m < count.

    Eight rows per pass (then one pass of four), so each element of ``out``
    is loaded and stored once per eight multiply-adds: an axpy is bound by
    L1 traffic, not arithmetic. A tail of 1-3 rows runs as one pass of four
    whose missing rows repeat the last real row with a zero factor.
    """
    U = out.shape[0]
    m = 0
    while m + 8 <= count:
        k0, k1, k2, k3 = rows[m], rows[m + 1], rows[m + 2], rows[m + 3]
        k4, k5, k6, k7 = rows[m + 4], rows[m + 5], rows[m + 6], rows[m + 7]
        x0, x1 = scale * values[m], scale * values[m + 1]
        x2, x3 = scale * values[m + 2], scale * values[m + 3]
        x4, x5 = scale * values[m + 4], scale * values[m + 5]
        x6, x7 = scale * values[m + 6], scale * values[m + 7]
        for j in range(U):
            out[j] += (((x0 * M[k0, j] + x1 * M[k1, j]) + (x2 * M[k2, j] + x3 * M[k3, j]))
                       + ((x4 * M[k4, j] + x5 * M[k5, j]) + (x6 * M[k6, j] + x7 * M[k7, j])))
        m += 8
    while m < count:
        last = count - 1
        zero = scale - scale
        k0, x0 = rows[m], scale * values[m]
        k1, x1 = (rows[m + 1], scale * values[m + 1]) if m + 1 <= last else (k0, zero)
        k2, x2 = (rows[m + 2], scale * values[m + 2]) if m + 2 <= last else (k0, zero)
        k3, x3 = (rows[m + 3], scale * values[m + 3]) if m + 3 <= last else (k0, zero)
        for j in range(U):
            out[j] += (x0 * M[k0, j] + x1 * M[k1, j]) + (x2 * M[k2, j] + x3 * M[k3, j])
        m += 4


@njit(**PARALLEL)
def nonzero_rows(idx, val, count, A):
    """Per-row lists of A's non-zero entries (compressed sparse rows).

    idx : int32 and val : outputs of at least (n, P), of which row i's first
    count[i] entries are the column indices and values of A[i]'s non-zeros
    (NaN counts as non-zero); count : (>= n,) output; A : (n, P).
    """
    n, P = A.shape
    # Race-free: iteration i writes only row i of idx, val and entry i of count.
    for i in prange(n):
        c = 0
        for k in range(P):
            a = A[i, k]
            idx[i, c] = k  # written unconditionally: no branch to mispredict
            val[i, c] = a
            c += a != 0
        count[i] = c


@njit(**PARALLEL)
def nonzero_cols(idx, val, count, A):
    """Per-column lists of A's non-zero entries (compressed sparse columns).

    idx : int32 and val : outputs of at least (P, n), of which row k's first
    count[k] entries are the row indices and values of A[:, k]'s non-zeros;
    count : (>= P,) output; A : (n, P).
    """
    n, P = A.shape
    # Race-free: iteration k writes only row k of idx, val and entry k of count.
    for k in prange(P):
        c = 0
        for i in range(n):
            a = A[i, k]
            idx[k, c] = i
            val[k, c] = a
            c += a != 0
        count[k] = c


@njit(**PARALLEL)
def sparse_forward(Z, Q, idx, val, count, WT, b, act):
    """``dense_forward`` from the non-zeros of Q_prev and W^T: zero inputs
    (81 % of MNIST pixels) cost nothing.

    Z, Q : (n_b, U) outputs (Q may be Z); idx, val, count : ``nonzero_rows``
    of Q_prev (n_b, P); WT : (P, U), W transposed; b : (U,).
    """
    n, U = Z.shape
    zero, one = Z.dtype.type(0), Z.dtype.type(1)
    # Race-free: iteration i writes only row i of Z and Q.
    for i in prange(n):
        for j in range(U):
            Z[i, j] = b[j]
        _add_scaled_rows(Z[i], WT, idx[i], val[i], count[i], one)
        for j in range(U):
            Q[i, j] = activate(Z[i, j], act, zero, one)


@njit(**PARALLEL)
def sparse_backward_input(dQ_prev, idx, val, count, W):
    """``dQ_prev = dZ W`` (6.27b) from the non-zeros of dZ (ReLU zeroes many).

    dQ_prev : (n_b, P) output; idx, val, count : ``nonzero_rows`` of dZ
    (n_b, U); W : (U, P).
    """
    n, P = dQ_prev.shape
    one = dQ_prev.dtype.type(1)
    # Race-free: iteration i writes only row i of dQ_prev.
    for i in prange(n):
        for k in range(P):
            dQ_prev[i, k] = 0
        _add_scaled_rows(dQ_prev[i], W, idx[i], val[i], count[i], one)


@njit(**PARALLEL)
def sparse_sgd_update(T, idx, val, count, S, lr, n):
    """A weight gradient (6.27c) fused with its SGD step (6.23a), no dW stored:
    ``T[r] -= lr / n * sum_m val[r, m] * S[idx[r, m]]`` for every row r of T.

    Two uses: T = W^T (P, U) with ``nonzero_cols`` of Q_prev and S = dZ, or
    T = W (U, P) with ``nonzero_cols`` of dZ and S = Q_prev; n = n_b.
    """
    step = T.dtype.type(-lr / n)  # in T's dtype: float64 here would halve the vectors
    # Race-free: iteration r writes only row r of T; samples are summed in
    # list order, which is fixed.
    for r in prange(T.shape[0]):
        _add_scaled_rows(T[r], S, idx[r], val[r], count[r], step)


@njit(**PARALLEL)
def count_nonzero(A):
    """Number of non-zero entries of A (n, P); an exact integer reduction."""
    n = A.shape[0]
    total = 0
    # Race-free: the only shared value is an integer prange reduction.
    for i in prange(n):
        total += _row_nonzero_count(A[i])
    return total


@njit(inline="never")
def _row_nonzero_count(row):
    """Non-zeros of one row (NaN counts), for count_nonzero and row_nonzeros.
    Its own function so that count_nonzero's prange body holds no inner
    loop (numba#10132, Python >= 3.12: see cpu._row_is_wrong)."""
    c = 0
    for k in range(row.shape[0]):
        c += row[k] != 0
    return c


# --- the training set's compressed rows (built once per run) ----------------

@njit(**PARALLEL)
def row_nonzeros(counts, X):
    """counts[i] = number of non-zeros of X[i] (NaN counts). counts : (n,) int64."""
    # Race-free: iteration i writes only counts[i].
    for i in prange(X.shape[0]):
        counts[i] = _row_nonzero_count(X[i])


@njit(**PARALLEL)
def rows_differ(X, indptr, indices, values):
    """How many rows of X its compressed rows (``compress_rows``, made
    earlier) no longer hold exactly: 0 where every non-zero is listed, with
    its value, and nothing else is. X : (n, p); indptr : (n + 1,)."""
    total = 0
    # Race-free: the only shared value is an integer prange reduction.
    for i in prange(X.shape[0]):
        total += _row_differs(X[i], indices, values, indptr[i], indptr[i + 1])
    return total


@njit(inline="never")
def _row_differs(row, indices, values, a, e):
    """1 where row's non-zeros are not exactly indices[a:e], values[a:e],
    else 0 (its own function: see _row_nonzero_count). As many non-zeros as
    listed, each listed column holding its value: then there is no other
    (the listed columns are distinct). Counting is vectorised; the listed
    columns are then read one at a time, stopping at the first that differs
    (an ``&=`` over them became gathers: slower on AMD Zen 4,
    docs/speed-log.md)."""
    if _row_nonzero_count(row) != e - a:
        return 1
    for m in range(a, e):
        if row[indices[m]] != values[m]:
            return 1
    return 0


@njit(**PARALLEL)
def compress_rows(indices, values, indptr, X):
    """X in compressed sparse rows: row i's non-zeros are
    ``values[indptr[i]:indptr[i+1]]`` at columns ``indices[...]``, ascending.

    indices (int32), values : (nnz,) outputs; indptr : (n + 1,) int64, the
    running sum of ``row_nonzeros``; X : (n, P).
    """
    n, P = X.shape
    edge = P - P % GROUP
    one = np.uint16(1)
    # Race-free: iteration i writes only positions indptr[i] .. indptr[i+1]-1.
    for i in prange(n):
        row = X[i]
        c = indptr[i]
        # GROUP columns at a time: their non-zeros as bits (one vector
        # compare), then one write per set bit, lowest first; all-zero
        # groups cost one test.
        for k0 in range(0, edge, GROUP):
            bits = nonzero_bits16(row, k0)
            while bits:
                k = k0 + trailing_zeros(bits)
                indices[c] = k
                values[c] = row[k]
                c += 1
                bits &= bits - one
        for k in range(edge, P):
            a = row[k]
            if a != 0:
                indices[c] = k
                values[c] = a
                c += 1


@njit(inline="never")
def _row_nonfinite_count(row):
    """Entries of one row that are NaN or infinite (x - x is NaN just for
    them); its own function for the reason of _row_nonzero_count."""
    c = 0
    for k in range(row.shape[0]):
        a = row[k]
        c += (a - a) != 0
    return c


@njit(**PARALLEL)
def count_nonfinite(A):
    """Number of NaN or infinite entries of A (n, P); an exact integer reduction."""
    total = 0
    # Race-free: the only shared value is an integer prange reduction.
    for i in prange(A.shape[0]):
        total += _row_nonfinite_count(A[i])
    return total


@intrinsic
def _active_threads(typingctx):
    """numba.get_num_threads() for compiled code that stays cacheable: Numba's
    own overload calls through a ctypes pointer, which disables cache=True;
    this calls the same runtime symbol that parallel loops use, by name."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(types.intp.bitwidth), []),
            "get_num_threads")
        return builder.call(fn, [])
    return types.intp(), codegen


@njit(**SERIAL)
def prefetch_rows(indptr, indices, values, rows):
    """Start loading the compressed rows ``rows`` (the next batch's) into the
    cache, one request per 64-byte line: issued after a step's forward, they
    arrive while its updates run, and the next forward finds them there
    instead of waiting on memory for each row."""
    for r in range(rows.shape[0]):
        prefetch_row(indptr, indices, values, rows[r])


@njit(inline="always")
def _first_at_least(sorted_values, a, e, target):
    """First position m in [a, e) with sorted_values[m] >= target (else e)."""
    while a < e:
        mid = (a + e) // 2
        if sorted_values[mid] < target:
            a = mid + 1
        else:
            e = mid
    return a


@njit(**PARALLEL)
def csr_forward(Z, Q, indptr, indices, values, rows, WT, b, act):
    """``sparse_forward`` for the batch ``rows`` of a compressed training set:
    ``Z = X[rows] W^T + b`` and ``Q = h(Z)`` from each row's non-zeros, read in place.

    Z, Q : (n_b, U) outputs (Q may be Z); indptr, indices, values : the
    training set's ``compress_rows``; rows : (n_b,) int; WT : (P, U); b : (U,).
    """
    n, U = Z.shape
    zero, one = Z.dtype.type(0), Z.dtype.type(1)
    # Race-free: iteration i writes only row i of Z and Q.
    for i in prange(n):
        a, e = indptr[rows[i]], indptr[rows[i] + 1]
        for j in range(U):
            Z[i, j] = b[j]
        _add_scaled_rows(Z[i], WT, indices[a:], values[a:], e - a, one)
        for j in range(U):
            Q[i, j] = activate(Z[i, j], act, zero, one)


@njit(**PARALLEL)
def csr_sgd_update(WT, idx, val, count, indptr, indices, values, rows, dZ, lr, n, colcum):
    """The first layer's weight gradient fused with its SGD step, on W^T, from
    the batch's compressed rows: ``WT[k] -= lr / n * sum_r X[rows[r], k] dZ[r]``.

    idx (int32), val : (P, >= n_b) and count : (>= P,) scratch for per-column
    lists; indptr, indices, values : the training set's ``compress_rows``;
    rows : (n_b,); dZ : (n_b, U); colcum : (P + 1,) int64, running sum of the
    training set's non-zeros per column, to split the columns into chunks of
    about equal work. Each chunk lists, per column, the batch rows that have
    it (in batch order, so the sum order is fixed), then applies them.
    """
    step = WT.dtype.type(-lr / n)
    P = WT.shape[0]
    chunks = _active_threads()
    total = colcum[P]
    # Race-free: chunk c writes only rows k_lo .. k_hi-1 of WT, idx, val and
    # those entries of count; the chunks' column ranges do not overlap.
    for c in prange(chunks):
        k_lo = _first_at_least(colcum, 0, P, total * c // chunks) if c > 0 else 0
        k_hi = _first_at_least(colcum, 0, P, total * (c + 1) // chunks) if c + 1 < chunks else P
        _list_columns(idx, val, count, indptr, indices, values, rows, k_lo, k_hi)
        for k in range(k_lo, k_hi):
            _add_scaled_rows(WT[k], dZ, idx[k], val[k], count[k], step)


@njit(inline="always")
def _list_columns(idx, val, count, indptr, indices, values, rows, k_lo, k_hi):
    """Per column k in [k_lo, k_hi), the batch rows that have it (in batch
    order, so that each column's sum order is fixed) and their values."""
    for k in range(k_lo, k_hi):
        count[k] = 0
    for r in range(rows.shape[0]):
        s = rows[r]
        e = indptr[s + 1]
        m = _first_at_least(indices, indptr[s], e, k_lo)
        while m < e and indices[m] < k_hi:
            k = indices[m]
            j = count[k]
            idx[k, j] = r
            val[k, j] = values[m]
            count[k] = j + 1
            m += 1


@njit(**PARALLEL)
def csr_rule_update(WT, mT, vT, gT, idx, val, count, indptr, indices, values, rows, dZ, n,
                    rule, lr, hyper, decay):
    """The first layer's weight gradient fused with the update ``rule``, on
    W^T, from the batch's compressed rows: per column k, g = sum_r
    X[rows[r], k] dZ[r] / n + decay WT[k], then ``cpu_common.rule_row`` on
    WT[k] and its state mT[k], vT[k] (W^T's layout; empty where the rule
    keeps none), for every column, those no row of the batch has included.

    gT : (>= threads, U) scratch, a column's gradient sum per chunk; the
    rest as csr_sgd_update. The chunks split the columns evenly: each pays
    the rule's pass over its columns, whatever their non-zeros.
    """
    P = WT.shape[0]
    scale = WT.dtype.type(1 / n)
    one = WT.dtype.type(1)
    chunks = min(_active_threads(), gT.shape[0])
    m = mT if mT.size else WT  # stand-ins for state the rule does not keep
    v = vT if vT.size else WT
    # Race-free: chunk c writes only rows k_lo .. k_hi-1 of WT, mT, vT, idx,
    # val, those entries of count and row c of gT.
    for c in prange(chunks):
        k_lo, k_hi = P * c // chunks, P * (c + 1) // chunks
        _list_columns(idx, val, count, indptr, indices, values, rows, k_lo, k_hi)
        g = gT[c]
        for k in range(k_lo, k_hi):
            g[:] = 0
            _add_scaled_rows(g, dZ, idx[k], val[k], count[k], one)
            rule_row(WT[k], m[k], v[k], g, scale, decay, rule, lr, hyper)
