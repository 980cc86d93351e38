"""exp and tanh that LLVM can vectorise, for float32 activations on the CPU.

Numba compiles ``math.exp`` and ``math.tanh`` to calls into the C library,
one element at a time: tanh took 16 ns an element, 8 of the 12 us of a
13-32-1 tanh step on batches of 16 (docs/speed-log.md). exp computes a
float32 argument in float64 from a polynomial, floor and a bit shift, all
of which vectorise, and rounds once to float32: within one float32
rounding of the exact value. tanh is a rational function evaluated in
float32, 16 lanes to a 512-bit vector and no float64 division: 7 times
faster than tanh through the float64 exp, within 6 units in the last place
(5.1 measured over every float32 argument). float64 arguments still get the
C library's functions (the float64 kernels are the ones tested tightly).

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
# tanh(a) = a P(a^2) / Q(a^2) for 0 <= a < TANH_LIMIT, and 1 past it (float32's
# tanh is 1 from 9.011): coefficients lowest first, Q's constant 1, fitted
# by scripts/fit_tanh.py (relative error 7.5e-9 in exact arithmetic).
TANH_LIMIT = np.float32(9.1)
TANH_P = tuple(np.float32(c) for c in (
    0.9999999925558289, 0.13079729875126958, 0.0030991684275488017, 1.1103991314969746e-05,
    -2.001938734950333e-08, 5.17779748700019e-11, -8.228718033514148e-14))
TANH_Q = tuple(np.float32(c) for c in (
    1.0, 0.4641305625056387, 0.02447613137547453, 0.00025391599985276575))


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
    float64 ln 2 adds up to 4e-17 |y| further out. Without FMA (CPUs before
    AVX2), 1.2e-14 and 1.2e-16 |y|: still far below float32's rounding."""
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
    """float32 tanh: the rational function in Horner form, 1 past
    TANH_LIMIT (a 0/1 weight through max: conditional expressions here
    break Numba's inlining into the kernels), the sign copied back, so
    -0.0 stays -0.0. NaN stays NaN (min and max pass their first
    argument's NaN on)."""
    a = min(abs(z), TANH_LIMIT)
    s = a * a
    p0, p1, p2, p3, p4, p5, p6 = TANH_P
    _, q1, q2, q3 = TANH_Q
    p = ((((((p6 * s + p5) * s + p4) * s + p3) * s + p2) * s + p1) * s + p0)
    q = ((q3 * s + q2) * s + q1) * s + np.float32(1)
    r = min(a * p / q, np.float32(1))
    return math.copysign(max(r, np.float32(a >= TANH_LIMIT)), z)


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
