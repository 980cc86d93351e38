"""A row's loss and output gradient (6.19/6.20, 6.26), and whether it is
misclassified, as plain Python: both targets compile these same bodies (cpu.py
with @njit, cuda.py as device functions), so the CPU and CUDA costs agree.

Each takes the whole (n_b, M) arrays and a row index i, and writes only row i.
They call no other function of this module: a plain Python function is not
callable from compiled code, so each body stands alone.
"""

import math


def softmax_cross_entropy_row(dZ, Z, i, y):
    """``dZ[i] = softmax(Z[i]) - onehot(y)`` (max-shifted); returns row i's loss."""
    M = Z.shape[1]
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
