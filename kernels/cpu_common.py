"""What every CPU kernel module shares: compile options and scalar helpers."""

import math

from numba import njit

from .codes import RELU, SIGMOID, TANH

# fastmath without nnan/ninf: lets LLVM reassociate and vectorise the
# dot-product reductions, but keeps NaN/inf semantics so divergence is seen.
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
PARALLEL = dict(parallel=True, fastmath=FASTMATH, cache=True, nogil=True)
SERIAL = dict(fastmath=FASTMATH, cache=True, nogil=True)


@njit(inline="always", fastmath=FASTMATH)
def activate(z, act, zero, one):
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


@njit(inline="always", fastmath=FASTMATH)
def derivative(z, q, act, zero, one):
    """h'(z), reusing q = h(z) from the forward pass where that is cheaper."""
    if act == RELU:
        return one if z > zero else zero
    if act == SIGMOID:
        return q * (one - q)
    if act == TANH:
        return one - q * q
    return one


@njit(**SERIAL)
def mean(values):
    """Mean in a fixed order (deterministic, unlike a threaded reduction)."""
    s = values.dtype.type(0)
    for i in range(values.shape[0]):
        s += values[i]
    return s / values.shape[0]
