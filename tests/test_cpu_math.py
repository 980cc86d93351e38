"""kernels/cpu_math.py: the CPU's vectorisable float32 exp and tanh, as the
kernels see them through ``activate`` and the losses: exp within one
float32 rounding, tanh within TANH_ULPS, everywhere (extremes, signed
zeros, inf, NaN); float64 untouched; compiled without calls into the C
library."""

import math
import re

import numpy as np
import pytest
from numba import from_dtype, njit

from fastbp.kernels import cpu_math
from fastbp.kernels.codes import SIGMOID, TANH
from fastbp.kernels.cpu_common import FASTMATH, SERIAL, activate

TANH_ULPS = 6.0  # cpu_math's float32 tanh: 5.1 measured over every float32 argument


@njit(**SERIAL)
def _activate_all(Q, Z, act):
    zero, one = Z.dtype.type(0), Z.dtype.type(1)
    for i in range(Z.shape[0]):
        Q[i] = activate(Z[i], act, zero, one)


@njit(fastmath=FASTMATH, error_model="numpy")
def _exp_all(out, z):
    for i in range(z.shape[0]):
        out[i] = cpu_math.exp(z[i])


@njit(fastmath=FASTMATH, error_model="numpy")
def _tanh_all(out, z):
    for i in range(z.shape[0]):
        out[i] = cpu_math.tanh(z[i])


@njit(fastmath=FASTMATH, error_model="numpy")
def _exp_f64_all(out, y):
    for i in range(y.shape[0]):
        out[i] = cpu_math.exp_f64(y[i])


def _arguments(dtype):
    rng = np.random.default_rng(7)
    spread = np.concatenate([rng.standard_normal(4001) * 3, rng.uniform(-120, 120, 2001),
                             np.geomspace(1e-38, 1e3, 3001)])
    spread = np.concatenate([spread, -spread])
    special = [0.0, -0.0, 1e-45, -1e-45, 1e-3, 1e-3 * (1 + 1e-7), 9.0, 20.0, 88.7, -87.3,
               -103.0, 89.0, np.inf, -np.inf]
    return np.concatenate([spread, special]).astype(dtype)


def _exact(act, z):
    x = z.astype(np.float64)
    if act == TANH:
        return np.tanh(x)
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("act", [TANH, SIGMOID])
def test_float32_activations_within_a_few_ulps(act):
    """sigmoid's exp is computed in float64 and rounded once (within 1 ulp),
    then divided in float32, adding up to 1 more; tanh is a rational
    function evaluated in float32 (within TANH_ULPS)."""
    z = _arguments(np.float32)
    q = np.empty_like(z)
    _activate_all(q, z, act)
    exact = _exact(act, z)
    # Below float32's smallest normal number sigmoid's float32 formula gives
    # 0 (1 / (1 + inf)), as it did with the C library's expf.
    tiny = np.finfo(np.float32).tiny
    normal = np.abs(exact) >= tiny
    ulp = np.spacing(np.abs(exact[normal]).astype(np.float32)).astype(np.float64)
    error = np.abs(q[normal].astype(np.float64) - exact[normal]) / ulp
    assert error.max() <= (TANH_ULPS if act == TANH else 2.0), z[normal][np.argmax(error)]
    assert np.all(np.abs(q[~normal]) <= tiny)
    assert q.dtype == np.float32


@njit(fastmath=FASTMATH, error_model="numpy")
def _tanh_ulps(first_bits, last_bits, stride):
    """The largest error of float32 tanh, in units in the last place of the
    exact value rounded to float32, over the float32 arguments whose bit
    patterns run from first_bits to last_bits in steps of stride; and where."""
    worst, where = 0.0, 0.0
    bits = np.empty(1, np.int32)
    for b in range(first_bits, last_bits, stride):
        bits[0] = b
        x = bits.view(np.float32)[0]
        exact = math.tanh(np.float64(x))
        rounded = np.float32(exact)
        if rounded == 1:
            ulp = 2.0 ** -24  # the spacing below 1
        else:
            ulp = np.float64(np.nextafter(rounded, np.float32(2))) - np.float64(rounded)
        error = abs(np.float64(cpu_math.tanh(x)) - exact) / ulp
        if error > worst:
            worst, where = error, x
    return worst, where


def test_float32_tanh_within_its_bound_over_a_sweep_of_every_binade():
    """Every 13th float32 from 2^-30 to 16 (22 million arguments, every
    binade where the approximation works, and past its limit), in the
    build the kernels use: contracted to FMA where the CPU has it."""
    first, last = np.array([2.0 ** -30, 16.0], np.float32).view(np.int32)
    worst, where = _tanh_ulps(int(first), int(last), 13)
    assert worst <= TANH_ULPS, (worst, where)
    assert worst > 1.0  # the sweep reaches the approximation's error (measured 5.1)


def test_float32_tanh_keeps_signs_nan_and_limits():
    z = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30], np.float32)
    q = np.empty_like(z)
    _activate_all(q, z, TANH)
    assert np.signbit(q[1]) and not np.signbit(q[0])
    assert q[2] == 1 and q[3] == -1 and np.isnan(q[4])
    assert q[5] == np.float32(1e-30) and q[6] == np.float32(-1e-30)
    # Exactly +-1 from the limit on.
    past = np.array([cpu_math.TANH_LIMIT, 9.2, 1e30, -9.2], np.float32)
    out = np.empty_like(past)
    _activate_all(out, past, TANH)
    np.testing.assert_array_equal(out, [1, 1, 1, -1])
    _activate_all(q, z, SIGMOID)
    assert q[2] == 1 and q[3] == 0 and np.isnan(q[4])


def test_float32_exp_within_one_ulp_and_overflows_like_exp():
    z = _arguments(np.float32)
    out = np.empty_like(z)
    _exp_all(out, z)
    with np.errstate(over="ignore"):
        exact = np.exp(z.astype(np.float64))
    finite = exact < np.finfo(np.float32).max
    rounded = exact[finite].astype(np.float32)
    ulp = np.spacing(rounded).astype(np.float64)
    assert (np.abs(out[finite] - exact[finite]) / ulp).max() <= 1.0
    assert np.all(np.isinf(out[~finite]))
    nan = np.array([np.nan], np.float32)
    _exp_all(nan, nan.copy())
    assert np.isnan(nan[0])


def test_exp_f64_relative_error_and_clamp():
    """Within 4e-15 relative where float32's arguments lie; the reduction by
    one float64 ln 2 adds up to 4e-17 |y| further out. On a CPU without FMA
    every product rounds once more: 1.2e-14 and 1.2e-16 |y| (1.04e-14 and
    8.0e-14 at |y| = 700 measured under NUMBA_CPU_NAME=generic)."""
    y = np.concatenate([np.linspace(-700, 700, 100001), [-0.0, 1e-300, 0.5 * math.log(2)]])
    out = np.empty_like(y)
    _exp_f64_all(out, y)
    fused = "fmadd" in _exp_f64_all.inspect_asm(_exp_f64_all.signatures[0])
    bound, slope = (4e-15, 4e-17) if fused else (1.2e-14, 1.2e-16)
    error = np.abs(out / np.exp(y) - 1)
    assert error[np.abs(y) <= 110].max() < bound
    assert error.max() < slope * 700 + bound
    clamped = np.empty(2)
    _exp_f64_all(clamped, np.array([800.0, -800.0]))
    np.testing.assert_array_equal(clamped, out[[-4, 0]])  # exp(700), exp(-700)


@pytest.mark.parametrize("act", [TANH, SIGMOID])
def test_float64_activations_are_the_c_librarys(act):
    z = _arguments(np.float64)
    q = np.empty_like(z)
    _activate_all(q, z, act)
    np.testing.assert_array_equal(q, [_c_library(act, v) for v in z])


def _c_library(act, v):
    if act == TANH:
        return math.tanh(v)
    try:
        return 1 / (1 + math.exp(-v))
    except OverflowError:  # where the kernel's exp gives inf
        return 0.0


def test_float32_loop_calls_no_c_library_function_and_vectorises():
    """The point of cpu_math: a float32 tanh loop holds no call to tanhf or
    expf (which would run one element at a time), where float64's calls tanh;
    exp's float64 arithmetic runs on packed vectors (``...pd``), tanh's
    float32 arithmetic too (``...ps``)."""
    fresh = njit(**dict(SERIAL, cache=False))(_activate_all.py_func)  # (cached: no asm)
    for dtype, present, absent in ((np.float64, "$tanh", None), (np.float32, None, "$tanhf")):
        z = np.zeros(8, dtype)
        fresh(z, z, TANH)
        signature, = [s for s in fresh.signatures if s[0].dtype == from_dtype(dtype)]
        asm = fresh.inspect_asm(signature)
        if present:
            assert present in asm
        else:
            assert absent not in asm and "$expf" not in asm and "$tanh" not in asm
            assert re.search(r"\b(v?fmadd\d*|v?mul|v?div)pd\s", asm)
    # tanh alone: its Horner steps are packed float32 arithmetic (multiply-adds
    # on ymm or zmm where the CPU has FMA; mulps and addps on any x86-64),
    # no float64 in sight.
    tanh_only = njit(**dict(SERIAL, cache=False))(_tanh_all.py_func)
    z = np.zeros(8, np.float32)
    tanh_only(z, z)
    asm = tanh_only.inspect_asm(tanh_only.signatures[0])
    assert "$tanhf" not in asm and "$expf" not in asm
    assert re.search(r"\b(vfmadd\d+ps\s+%?[yz]mm|v?mulps\s)", asm)
    assert not re.search(r"\bv?(fmadd\d*|mul|div|add)[ps]d\s", asm)
