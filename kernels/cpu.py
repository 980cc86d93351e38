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


@njit(**_PARALLEL)
def dense_forward(Z, Q, Q_prev, W, b, act):
    """Fused dense layer: ``Z = Q_prev W^T + b`` and ``Q = h(Z)`` (Alg. 6.1 l. 4-5).

    Z, Q : (n_b, U) outputs; Q may be the same array as Z (last layer,
    ``act = IDENTITY``). Q_prev : (n_b, P), W : (U, P), b : (U,).
    """
    n, P = Q_prev.shape
    U = W.shape[0]
    zero, one = Z.dtype.type(0), Z.dtype.type(1)
    # Race-free: iteration i writes only row i of Z and Q.
    for i in prange(n):
        for j in range(U):
            acc = b[j]
            for k in range(P):
                acc += Q_prev[i, k] * W[j, k]
            Z[i, j] = acc
            Q[i, j] = _activate(acc, act, zero, one)


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
    inv_n = dW.dtype.type(1) / n
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


@njit(**_SERIAL)
def train_steps(Ws, bs, dWs, dbs, Zs, Qs, dZs, dQs, row_loss, Xb, yb, Tb,
                X, labels, targets, order, first_step, n_steps, batch_size,
                lr, act, loss, batch_cost, batch_error):
    """Run ``n_steps`` SGD iterations (6.21/6.23) over the shuffled ``order``.

    Step s uses the rows ``order[s*batch_size : (s+1)*batch_size]`` (the last
    batch of an epoch may be shorter). Ws, bs are updated in place.
    Xb : (batch_size, p), yb : (batch_size,), Tb : (batch_size, M) gather
    buffers; batch_cost, batch_error : (n_steps,) outputs per iteration
    (batch_error is the misclassification rate; NaN for regression).
    Returns the number of steps completed: fewer than n_steps when a cost
    turned non-finite, in which case that step's update is not applied.
    """
    L = len(Ws)
    n = order.shape[0]
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
        J = backprop_all(dWs, dbs, dZs, dQs, Zs, Qs, row_loss, Xb[:nb], yb[:nb],
                         Tb[:nb], Ws, bs, act, loss)
        batch_cost[s] = J
        if loss == CROSS_ENTROPY:
            batch_error[s] = count_misclassified(Zs[L - 1][:nb], yb[:nb]) / nb
        else:
            batch_error[s] = math.nan
        if not math.isfinite(J):
            return s
        for l in range(L):
            sgd_update(Ws[l], bs[l], dWs[l], dbs[l], lr)
    return n_steps
