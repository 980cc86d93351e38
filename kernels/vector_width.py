"""Optionally let LLVM use 512-bit vectors on CPUs with AVX-512.

LLVM tunes Intel's AVX-512 server cores (Skylake-X to Emerald Rapids) to
prefer 256-bit vectors (the "prefer-256-bit" tuning feature), so Numba's
vectorised loops use ymm registers even where zmm ones would do twice the
work per instruction: on the 2-core Emerald Rapids VM of README's tables,
16 vector accumulators with their operands in L1 run 165-171 GFLOP/s per core
with zmm against 73-88 with ymm (scripts/fma_peak.py). Most of fastbp's
kernels wait on L1/L2 more than on multiply-adds, and whole epochs measured
within noise of each other (per round 0.91-1.04x, README), so the default
stays LLVM's: FASTBP_VECTOR_BITS=512 asks for the wide vectors. The kernels that do gain from them, the dense first
layer's register tiles (kernels/cpu_panels.py), ask for them per function,
where ``available``, and use them under either setting.

Numba reads its target features once, when its CPU target context is made
(at the first ``@njit`` decoration of the process), and all Numba code of the
process shares them. So ``allow_512_bit`` must run before that; it changes
nothing if it comes later or if the user chose features or a CPU model
(NUMBA_CPU_FEATURES / NUMBA_CPU_NAME). The setting is part of Numba's cache
key: code cached with either width stays valid, each for its own setting.
Like Numba with its own variables, a value it cannot use is a RuntimeWarning
naming the variable, and the default holds: a typo in the environment must
not stop every import of fastbp (and ``fastbp-train --help``) with a traceback.
"""

import os
import warnings

import llvmlite.binding as llvm
from numba.core import config, registry

ENV = "FASTBP_VECTOR_BITS"
TUNING = "prefer-256-bit"


def allow_512_bit():
    """If FASTBP_VECTOR_BITS=512, drop LLVM's 256-bit preference for this
    process's Numba code, where the CPU has AVX-512 and nothing else decided.
    Returns whether it did."""
    bits = os.environ.get(ENV, "256").strip()
    if bits not in ("256", "512"):
        warnings.warn(f"{ENV} must be 256 or 512, not {bits!r}: using 256", RuntimeWarning,
                      stacklevel=2)
        return False
    if bits == "256" or config.CPU_FEATURES is not None or config.CPU_NAME is not None:
        return False
    if "_toplevel_target_context" in vars(registry.cpu_target):  # too late: it is made
        return False
    features = llvm.get_host_cpu_features().flatten()
    if "+avx512f" not in features.split(","):
        return False
    config.CPU_FEATURES = f"{features},-{TUNING}"
    return True


def _features():
    """The features this process's Numba CPU code is compiled for (part of
    Numba's cache key): the host's, or what the user or allow_512_bit chose."""
    return registry.cpu_target.target_context.codegen().magic_tuple()[2].split(",")


def in_effect():
    """Whether this process's Numba CPU code is compiled without the 256-bit
    preference."""
    return f"-{TUNING}" in _features()


def available():
    """Whether Numba's CPU code may use 512-bit vectors at all (AVX-512 in
    its target features), so that a function can ask for them for itself
    (kernels/cpu_panels.py) whatever this process's preference."""
    return "+avx512f" in _features()
