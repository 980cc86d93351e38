"""A row's loss and output gradient (6.19/6.20, 6.26), and whether it is
misclassified, as plain Python: both targets compile these same bodies (cpu.py
with @njit, cuda.py as device functions), so the CPU and CUDA costs agree.

Each takes the whole (n_b, M) arrays and a row index i, and writes only row i.
They call no other function of this module: a plain Python function is not
callable from compiled code, so each body stands alone. exp is a global name
so that the CPU can compile these bodies with its vectorisable one
(cpu_math.py) in its place.
"""

import math
from math import exp


def softmax_cross_entropy_row(dZ, Z, i, y):
    """``dZ[i] = softmax(Z[i]) - onehot(y)`` (max-shifted); returns row i's loss."""
    M = Z.shape[1]
    m = Z[i, 0]
    for j in range(1, M):
        if Z[i, j] > m:
            m = Z[i, j]
    s = Z.dtype.type(0)
    for j in range(M):
        e = exp(Z[i, j] - m)
        dZ[i, j] = e
        s += e
    inv_s = 1 / s
    for j in range(M):
        dZ[i, j] *= inv_s
    dZ[i, y] -= 1
    return math.log(s) + m - Z[i, y]


def squared_error_row(dZ, Z, i, targets):
    """``dZ[i] = -2 (targets[i] - Z[i])``; returns ``||targets[i] - Z[i]||^2``."""
    s = Z.dtype.type(0)
    for j in range(Z.shape[1]):
        r = targets[i, j] - Z[i, j]
        dZ[i, j] = -2 * r
        s += r * r
    return s


def row_is_wrong(Z, labels, i):
    """1 when row i's argmax (its first maximum, as np.argmax) differs from
    labels[i], else 0."""
    best = 0
    for j in range(1, Z.shape[1]):
        if Z[i, j] > Z[i, best]:
            best = j
    return 1 if best != labels[i] else 0


def binary_cross_entropy_row(dZ, Z, i, targets):
    """Logistic outputs: ``dZ[i] = sigmoid(Z[i]) - targets[i]``; returns the
    row's summed binary cross-entropy, sum_j softplus(z_j) - t_j z_j, written
    as max(z, 0) - t z + log1p(exp(-|z|)) so that no exp overflows."""
    s = Z.dtype.type(0)
    for j in range(Z.shape[1]):
        z = Z[i, j]
        t = targets[i, j]
        e = exp(-abs(z))  # in (0, 1]
        if z >= 0:
            dZ[i, j] = 1 / (1 + e) - t
            s += z - t * z + math.log1p(e)
        else:
            dZ[i, j] = e / (1 + e) - t
            s += -t * z + math.log1p(e)
    return s


def row_misses_a_label(Z, targets, i):
    """1 when any output of row i is on the wrong side of 0 (probability 1/2)
    for its 0/1 target, else 0: the multi-label (subset) error, and the plain
    error for one logistic output."""
    for j in range(Z.shape[1]):
        if (Z[i, j] > 0) != (targets[i, j] > 0.5):
            return 1
    return 0


def weigh_row(dZ, row_loss, i, weights):
    """Scale row i's gradient and loss by ``weights[i]`` (sample weights,
    already normalised so that the batch's mean is their weighted mean).
    ``weights`` of any length other than the batch's (empty; a one-element
    dummy on a GPU) means every row weighs 1, and nothing changes."""
    if weights.shape[0] == dZ.shape[0]:
        c = weights[i]
        for j in range(dZ.shape[1]):
            dZ[i, j] *= c
        row_loss[i] *= c
