"""h(z) and h'(z) for one scalar (6.3), as plain Python: both targets compile
these same bodies (cpu_common.py with @njit, cuda.py as device functions), so
the CPU and CUDA kernels cannot drift apart in, say, how ReLU treats NaN.

zero and one carry the dtype, so float32 stays float32. exp and tanh are
global names so that the CPU can compile these bodies with its vectorisable
ones (cpu_math.py) in their place.
"""

from math import exp, tanh

from .codes import RELU, SIGMOID, TANH


def activate(z, act, zero, one):
    """h(z): ReLU, logistic sigmoid, tanh or identity."""
    if act == RELU:
        return z if z > zero or z != z else zero  # z != z: NaN stays visible
    if act == SIGMOID:
        return one / (one + exp(-z))
    if act == TANH:
        return tanh(z)
    return z


def derivative(z, q, act, zero, one):
    """h'(z), reusing q = h(z) from the forward pass where that is cheaper."""
    if act == RELU:
        return one if z > zero else zero
    if act == SIGMOID:
        return q * (one - q)
    if act == TANH:
        return one - q * q
    return one
