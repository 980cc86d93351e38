"""exp and tanh that LLVM can vectorise, for float32 activations on the CPU.

Numba compiles ``math.exp`` and ``math.tanh`` to calls into the C library,
one element at a time: tanh took 16 ns an element, 8 of the 12 us of a
13-32-1 tanh step on batches of 16 (docs/speed-log.md). These compute a
float32 argument in float64 from a polynomial, floor and a bit shift, all
of which vectorise, and round once to float32: the result is within one
float32 rounding of the exact value. float64 arguments still get the C
library's functions (the float64 kernels are the ones tested tightly).

``activations.activate`` calls the names ``exp`` and ``tanh``; cpu_common
compiles it with these in their place, cuda.py with math's (the GPU's own
functions are fast already).
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from . import numba_cache, vector_width

# Before the first @njit of the package's kernels (cpu_common imports this
# module first): they fix the process's target features and cache locator.
vector_width.allow_512_bit()
numba_cache.install()

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
EXP_LIMIT = 700.0  # |y| past which exp(y) is clamped: 2^k stays a normal double
TANH_LIMIT = 20.0  # tanh(20) rounds to 1 in float64 as in float32
TANH_SERIES = 1e-3  # below it, a - a^3/3 + 2 a^5/15 is exact to float64's rounding


@intrinsic
def _double_from_bits(typingctx, bits):
    """The float64 whose IEEE bits are the int64 ``bits``."""
    if bits != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@njit(inline="always")
def exp_f64(y):
    """exp(y) for float64 y, |y| <= EXP_LIMIT (clamped past it; NaN stays NaN): y = k ln2 + r,
    |r| <= ln2 / 2, exp(r) from its Taylor series to r^13 (error below
    5e-18), times 2^k built from bits. Within 4e-15 relative for |y| <= 110
    (every float32 argument that does not overflow); the reduction by one
    float64 ln 2 adds up to 4e-17 |y| further out."""
    y = min(max(y, -EXP_LIMIT), EXP_LIMIT)
    k = math.floor(y * LOG2E + 0.5)
    r = y - k * LN2
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _double_from_bits((np.int64(k) + 1023) << 52)


@njit(inline="always")
def tanh_f64(x):
    """tanh(x) from exp_f64: (1 - e^{-2a}) / (1 + e^{-2a}) with a = |x|,
    whose cancellation near 0 costs under 1e-12 relative for a >= TANH_SERIES;
    below it, the odd series, blended in by a 0/1 weight: conditional
    expressions here break Numba's inlining into the kernels. NaN stays NaN
    (min and exp_f64 pass it on)."""
    a = min(abs(x), TANH_LIMIT)
    t = exp_f64(-2.0 * a)
    big = (1.0 - t) / (1.0 + t)
    a2 = a * a
    small = a * (1.0 - a2 * (1.0 / 3.0 - a2 * (2.0 / 15.0)))
    return math.copysign(big + np.float64(a < TANH_SERIES) * (small - big), x)


def exp(z):
    """exp(z): vectorisable for float32 z, the C library's for float64."""
    return math.exp(z)


def tanh(z):
    """tanh(z): vectorisable for float32 z, the C library's for float64."""
    return math.tanh(z)


@njit(inline="always")
def _exp_f32(z):
    return np.float32(exp_f64(np.float64(z)))  # (NaN stays NaN: min passes it on)


@njit(inline="always")
def _tanh_f32(z):
    return np.float32(tanh_f64(np.float64(z)))


# inline="always" (Numba's own inlining, not LLVM's): inside train_steps,
# whose size exhausts LLVM's inlining budget, a tanh left to LLVM stayed a
# call per element (8.4 against 5.0 us a 13-32-1 tanh step).
@overload(exp, inline="always")
def _exp(z):
    if z == types.float32:
        return lambda z: _exp_f32(z)
    return lambda z: math.exp(z)


@overload(tanh, inline="always")
def _tanh(z):
    if z == types.float32:
        return lambda z: _tanh_f32(z)
    return lambda z: math.tanh(z)
