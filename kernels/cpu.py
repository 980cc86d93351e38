"""Hand-written CPU kernels: Algorithm 6.1 as ``@njit(parallel=True)`` loops.

Conventions (shared with ``kernels/cuda.py``, which has the same names):

* outputs come first in every signature, then inputs, then scalars;
* shapes follow the seed's row-per-sample notation (6.14):
  ``Q_prev : (n_b, U_{l-1})``, ``W : (U_l, U_{l-1})``, ``b : (U_l,)``,
  ``Z, Q, dZ, dQ : (n_b, U_l)``;
* kernels write into preallocated arrays and never allocate;
* float32 and float64 both work (Numba compiles one version per dtype);
* every parallel loop gives each thread whole rows that it alone writes, and
  every reduction runs in a fixed serial order, so results do not depend on
  the number of threads.

Activation and loss names are resolved to the integer codes of
``kernels.codes`` in Python before these kernels run.
"""

import math

from numba import njit, prange

from .codes import CROSS_ENTROPY, IDENTITY, RELU, SIGMOID, TANH

__all__ = ["dense_forward", "activation_backward", "dense_backward_weights",
           "dense_backward_input", "softmax_cross_entropy", "squared_error",
           "count_misclassified", "sgd_update", "gather_rows", "forward_all",
           "backprop_all", "train_steps"]

# fastmath without nnan/ninf: lets LLVM reassociate and vectorise the
# dot-product reductions, but keeps NaN/inf semantics so divergence is seen.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
_PARALLEL = dict(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
_SERIAL = dict(fastmath=_FASTMATH, cache=True, nogil=True)


@njit(inline="always", fastmath=_FASTMATH)
def _activate(z, act, zero, one):
    """h(z) for one scalar (6.3): ReLU, logistic sigmoid, tanh or identity.

    zero and one carry the dtype, so float32 stays float32.
    """
    if act == RELU:
        return z if z > zero or z != z else zero  # z != z: NaN stays visible
    if act == SIGMOID:
        return one / (one + math.exp(-z))
    if act == TANH:
        return math.tanh(z)
    return z


@njit(inline="always", fastmath=_FASTMATH)
def _derivative(z, q, act, zero, one):
    """h'(z), reusing q = h(z) from the forward pass where that is cheaper."""
    if act == RELU:
        return one if z > zero else zero
    if act == SIGMOID:
        return q * (one - q)
    if act == TANH:
        return one - q * q
    return one


@njit(inline="always", fastmath=_FASTMATH)
def _dot4x4(A, i, B, j):
    """The 4 x 4 block of dot products A[i:i+4] . B[j:j+4] over their rows.

    Sixteen accumulators stay in registers while the k loop streams four
    rows of each operand: 8 loads per 16 multiply-adds, which LLVM
    vectorises along k (fastmath reassoc), so the loop is compute-bound.
    """
    z = A.dtype.type(0)
    a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = z
    a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = z
    for k in range(A.shape[1]):
        x0, x1, x2, x3 = A[i, k], A[i + 1, k], A[i + 2, k], A[i + 3, k]
        w0, w1, w2, w3 = B[j, k], B[j + 1, k], B[j + 2, k], B[j + 3, k]
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


@njit(inline="always", fastmath=_FASTMATH)
def _dot(A, i, B, j):
    """A[i] . B[j], for the edges that do not fill a 4 x 4 block."""
    acc = A.dtype.type(0)
    for k in range(A.shape[1]):
        acc += A[i, k] * B[j, k]
    return acc


@njit(**_PARALLEL)
def dense_forward(Z, Q, Q_prev, W, b, act):
    """Fused dense layer: ``Z = Q_prev W^T + b`` and ``Q = h(Z)`` (Alg. 6.1 l. 4-5).

    Z, Q : (n_b, U) outputs; Q may be the same array as Z (last layer,
    ``act = IDENTITY``). Q_prev : (n_b, P), W : (U, P), b : (U,).
    Register-blocked 4 x 4; bias and activation are applied in the epilogue.
    """
    n = Q_prev.shape[0]
    U = W.shape[0]
    zero, one = Z.dtype.type(0), Z.dtype.type(1)
    row_blocks = (n + 3) // 4
    # Race-free: iteration t writes only rows 4t .. 4t+3 of Z and Q.
    for t in prange(row_blocks):
        i0 = 4 * t
        if i0 + 4 <= n:
            for j0 in range(0, U - 3, 4):
                block = _dot4x4(Q_prev, i0, W, j0)
                for a in range(4):
                    for c in range(4):
                        z = block[a][c] + b[j0 + c]
                        Z[i0 + a, j0 + c] = z
                        Q[i0 + a, j0 + c] = _activate(z, act, zero, one)
            j_edge = U - U % 4
        else:
            j_edge = 0
        for i in range(i0, min(i0 + 4, n)):
            for j in range(j_edge, U):
                z = _dot(Q_prev, i, W, j) + b[j]
                Z[i, j] = z
                Q[i, j] = _activate(z, act, zero, one)


@njit(**_PARALLEL)
def activation_backward(dZ, dQ, Z, Q, act):
    """``dZ = dQ * h'(Z)`` element-wise (6.27a, Alg. 6.1 line 16).

    dZ : (n_b, U) output; dQ, Z, Q : (n_b, U). dZ may alias dQ.
    """
    n, U = dZ.shape
    zero, one = dZ.dtype.type(0), dZ.dtype.type(1)
    # Race-free: iteration i writes only row i of dZ.
    for i in prange(n):
        for j in range(U):
            dZ[i, j] = dQ[i, j] * _derivative(Z[i, j], Q[i, j], act, zero, one)


@njit(**_PARALLEL)
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


@njit(**_PARALLEL)
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


@njit(**_PARALLEL)
def softmax_cross_entropy(dZ, row_loss, Z, labels):
    """Cost and output gradient for M-class classification (6.20, 6.26b).

    dZ : (n_b, M) output ``softmax(Z) - onehot(labels)``; row_loss : (n_b,)
    output, each row's loss; Z : (n_b, M) logits; labels : (n_b,) int.
    Returns J, the mean loss, computed with the max-shift (log-sum-exp).
    """
    n, M = Z.shape
    # Race-free: iteration i writes only row i of dZ and entry i of row_loss.
    for i in prange(n):
        m = Z[i, 0]
        for j in range(1, M):
            if Z[i, j] > m:
                m = Z[i, j]
        s = Z.dtype.type(0)
        for j in range(M):
            e = math.exp(Z[i, j] - m)
            dZ[i, j] = e
            s += e
        inv_s = 1 / s
        for j in range(M):
            dZ[i, j] *= inv_s
        y = labels[i]
        dZ[i, y] -= 1
        row_loss[i] = math.log(s) + m - Z[i, y]
    return _mean(row_loss)


@njit(**_PARALLEL)
def squared_error(dZ, row_loss, Z, targets):
    """Cost and output gradient for regression (6.19, 6.26a).

    dZ : (n_b, M) output ``-2 (targets - Z)``; row_loss : (n_b,) output,
    ``||targets_i - Z_i||^2``; Z, targets : (n_b, M). Returns their mean J.
    """
    n, M = Z.shape
    # Race-free: iteration i writes only row i of dZ and entry i of row_loss.
    for i in prange(n):
        s = Z.dtype.type(0)
        for j in range(M):
            r = targets[i, j] - Z[i, j]
            dZ[i, j] = -2 * r
            s += r * r
        row_loss[i] = s
    return _mean(row_loss)


@njit(**_SERIAL)
def _mean(values):
    """Mean in a fixed order (deterministic, unlike a threaded reduction)."""
    s = values.dtype.type(0)
    for i in range(values.shape[0]):
        s += values[i]
    return s / values.shape[0]


@njit(**_PARALLEL)
def count_misclassified(Z, labels):
    """Number of rows whose argmax (first maximum) differs from the label.

    Z : (n_b, M) logits; labels : (n_b,) int. Integer sums are exact, so the
    threaded reduction is deterministic.
    """
    n, M = Z.shape
    wrong = 0
    # Race-free: the only shared value is an integer prange reduction.
    for i in prange(n):
        best = 0
        for j in range(1, M):
            if Z[i, j] > Z[i, best]:
                best = j
        wrong += best != labels[i]
    return wrong


@njit(**_PARALLEL)
def sgd_update(W, b, dW, db, lr):
    """One SGD step (6.23a/b): ``W -= lr dW``, ``b -= lr db``, in place.

    W, dW : (U, P); b, db : (U,); lr : learning rate gamma.
    """
    U, P = W.shape
    step = W.dtype.type(lr)
    # Race-free: iteration j writes only row j of W and entry j of b.
    for j in prange(U):
        for k in range(P):
            W[j, k] -= step * dW[j, k]
        b[j] -= step * db[j]


@njit(**_PARALLEL)
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


@njit(**_SERIAL)
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


@njit(**_SERIAL)
def backprop_all(dWs, dbs, dZs, dQs, Zs, Qs, row_loss, X, labels, targets,
                 Ws, bs, act, loss):
    """Algorithm 6.1 for one mini-batch: forward, cost, backward; returns J.

    dWs[l], dbs[l] : gradient outputs shaped like Ws[l], bs[l];
    dZs[l], dQs[l], Zs[l], Qs[l] : (>= n_b, U_l) work buffers (dQs[-1] is
    unused); row_loss : (>= n_b,); X : (n_b, p); labels : (n_b,) int for
    cross-entropy, targets : (n_b, M) for squared error (the unused one may
    be empty); loss : ``codes.CROSS_ENTROPY`` or ``codes.SQUARED_ERROR``.
    """
    L = len(Ws)
    n = X.shape[0]
    forward_all(Zs, Qs, X, Ws, bs, act)
    if loss == CROSS_ENTROPY:
        J = softmax_cross_entropy(dZs[L - 1][:n], row_loss[:n], Zs[L - 1][:n], labels)
    else:
        J = squared_error(dZs[L - 1][:n], row_loss[:n], Zs[L - 1][:n], targets)
    for l in range(L - 1, -1, -1):
        if l < L - 1:
            activation_backward(dZs[l][:n], dQs[l][:n], Zs[l][:n], Qs[l][:n], act)
        Q_prev = X if l == 0 else Qs[l - 1][:n]
        dense_backward_weights(dWs[l], dbs[l], dZs[l][:n], Q_prev)
        if l > 0:
            dense_backward_input(dQs[l - 1][:n], dZs[l][:n], Ws[l])
    return J


@njit(inline="always", fastmath=_FASTMATH)
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


@njit(**_PARALLEL)
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


@njit(**_PARALLEL)
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


@njit(**_PARALLEL)
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
            Q[i, j] = _activate(Z[i, j], act, zero, one)


@njit(**_PARALLEL)
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


@njit(**_PARALLEL)
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


@njit(**_SERIAL)
def bias_sgd_update(b, dZ, lr):
    """``b -= lr * db`` with db = sum_i dZ_i / n_b (6.27d, 6.23b). b : (U,), dZ : (n_b, U)."""
    n, U = dZ.shape
    step = b.dtype.type(lr / n)
    for i in range(n):
        for j in range(U):
            b[j] -= step * dZ[i, j]


@njit(**_PARALLEL)
def count_nonzero(A):
    """Number of non-zero entries of A (n, P); an exact integer reduction."""
    n, P = A.shape
    total = 0
    # Race-free: the only shared value is an integer prange reduction.
    for i in prange(n):
        c = 0
        for k in range(P):
            c += A[i, k] != 0
        total += c
    return total


@njit(**_PARALLEL)
def transpose(out, A):
    """``out = A^T``. out : (P, n) output; A : (n, P)."""
    n, P = A.shape
    # Race-free: iteration k writes only row k of out.
    for k in prange(P):
        for i in range(n):
            out[k, i] = A[i, k]


# Inputs at most this dense (fraction of non-zeros) take the sparse first
# layer, if it is at least SPARSE_MIN_UNITS wide: its axpys run along the
# layer's units, too short below that to fill the vector registers.
SPARSE_DENSITY = 0.3
SPARSE_MIN_UNITS = 32


@njit(inline="always")
def _lists(idx, val, rows, cols):
    """(rows, cols) views of the flat list scratch, for nonzero_rows/cols."""
    size = rows * cols
    return idx[:size].reshape((rows, cols)), val[:size].reshape((rows, cols))


@njit(**_SERIAL)
def train_steps(Ws, bs, WT, Zs, Qs, dZs, dQs, row_loss, idx, val, count, Xb, yb, Tb,
                X, labels, targets, order, first_step, n_steps, batch_size, lr, act, loss,
                batch_cost, batch_error):
    """Run ``n_steps`` SGD iterations (6.21/6.23) over the shuffled ``order``.

    Step s uses the rows ``order[s*batch_size : (s+1)*batch_size]`` (the last
    batch of an epoch may be shorter); Ws, bs are updated in place. Each
    weight gradient is applied as it is computed (no dW is stored), after
    dQ_prev has used the old weights. The first layer runs on W^T and the
    non-zeros of its input when the batch is sparse (MNIST: 19 % non-zero),
    else on W with register-blocked products; other layers skip the zeros
    that ReLU leaves in dZ.

    WT : (p, U_1) work copy of Ws[0]^T; idx (int32), val : flat scratch of
    batch_size * max(widths) entries, count : (max(batch_size, widths),)
    for the non-zero lists; Xb, yb, Tb :
    gather buffers (batch_size rows); batch_cost, batch_error : (n_steps,)
    outputs per iteration (batch_error is the misclassification rate; NaN
    for regression). Returns the number of steps completed: fewer than
    n_steps when a cost turned non-finite, and that step is not applied.
    """
    L = len(Ws)
    n = order.shape[0]
    p = X.shape[1]
    transposed = False  # whether WT, not Ws[0], holds the first layer now
    done = n_steps
    for s in range(n_steps):
        start = (first_step + s) * batch_size
        nb = min(batch_size, n - start)
        rows = order[start:start + nb]
        gather_rows(Xb[:nb], X, rows)
        if loss == CROSS_ENTROPY:
            for r in range(nb):
                yb[r] = labels[rows[r]]
        else:
            gather_rows(Tb[:nb], targets, rows)
        Xs = Xb[:nb]
        # Forward (6.24).
        sparse = (WT.shape[1] >= SPARSE_MIN_UNITS
                  and count_nonzero(Xs) <= SPARSE_DENSITY * nb * p)
        if sparse:
            ri, rv = _lists(idx, val, nb, p)
            nonzero_rows(ri, rv, count, Xs)
        if sparse != transposed:
            if sparse:
                transpose(WT, Ws[0])
            else:
                transpose(Ws[0], WT)
            transposed = sparse
        for l in range(L):
            h = act if l < L - 1 else IDENTITY
            if l == 0 and sparse:
                sparse_forward(Zs[0][:nb], Qs[0][:nb], ri, rv, count, WT, bs[0], h)
            else:
                Q_prev = Xs if l == 0 else Qs[l - 1][:nb]
                dense_forward(Zs[l][:nb], Qs[l][:nb], Q_prev, Ws[l], bs[l], h)
        # Cost and output gradient (Alg. 6.1 lines 7-13).
        Z = Zs[L - 1][:nb]
        if loss == CROSS_ENTROPY:
            J = softmax_cross_entropy(dZs[L - 1][:nb], row_loss[:nb], Z, yb[:nb])
            batch_error[s] = count_misclassified(Z, yb[:nb]) / nb
        else:
            J = squared_error(dZs[L - 1][:nb], row_loss[:nb], Z, Tb[:nb])
            batch_error[s] = math.nan
        batch_cost[s] = J
        if not math.isfinite(J):
            done = s
            break
        # Backward (6.27) with the update (6.23), layer L down to 1.
        for l in range(L - 1, -1, -1):
            dZ = dZs[l][:nb]
            U = dZ.shape[1]
            if l < L - 1:
                activation_backward(dZ, dQs[l][:nb], Zs[l][:nb], Qs[l][:nb], act)
            if l > 0:  # dQ_prev with the weights before this step's update
                ri, rv = _lists(idx, val, nb, U)
                nonzero_rows(ri, rv, count, dZ)
                sparse_backward_input(dQs[l - 1][:nb], ri, rv, count, Ws[l])
            if l == 0 and sparse:
                ci, cv = _lists(idx, val, p, nb)
                nonzero_cols(ci, cv, count, Xs)
                sparse_sgd_update(WT, ci, cv, count, dZ, lr, nb)
            else:
                Q_prev = Xs if l == 0 else Qs[l - 1][:nb]
                ci, cv = _lists(idx, val, U, nb)
                nonzero_cols(ci, cv, count, dZ)
                sparse_sgd_update(Ws[l], ci, cv, count, Q_prev, lr, nb)
            bias_sgd_update(bs[l], dZ, lr)
    if transposed:
        transpose(Ws[0], WT)
    return done
