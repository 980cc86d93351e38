"""Which vector width LLVM may use on CPUs with AVX-512.

LLVM's choice depends on the CPU, not only on its instruction set: it tunes
Intel's AVX-512 server cores (Skylake-X to Emerald Rapids) to prefer 256-bit
vectors (the "prefer-256-bit" tuning feature), so Numba's vectorised loops
use ymm registers there even where zmm ones would do twice the work per
instruction, while on AMD Zen 4 and later it emits zmm by default. zmm
doubles the multiply-add rate of register-bound loops (scripts/fma_peak.py),
but most of fastbp's kernels wait on L1/L2 more than on multiply-adds, and
whole epochs measured within noise of each other (docs/speed-log.md), so by
default the process keeps LLVM's preference, and only the kernels that gain from zmm,
the dense first layer's register tiles (kernels/cpu_panels.py), ask for it
per function, where ``available``. FASTBP_VECTOR_BITS changes that:

* unset (the default): as above: LLVM's own choice for this CPU (ymm on
  Intel's AVX-512 cores, zmm on AMD Zen 4), the tiles zmm where available;
* 512: 512-bit vectors for every Numba function of the process;
* 256: 256-bit vectors everywhere, on every vendor's AVX-512 CPU (the
  "prefer-256-bit" feature is added), the tiles included (they are not
  used: the 4 x 4 blocks run instead), for CPUs that slow down under
  512-bit work.

Without AVX-512 (e.g. ``NUMBA_CPU_NAME=haswell``) none of this applies:
every setting compiles for 256-bit AVX2 vectors and the tiles stay off.

Numba reads its target features once, when its CPU target context is made
(at the first ``@njit`` decoration of the process), and all Numba code of the
process shares them. So ``allow_512_bit`` must run before that; it changes
nothing if it comes later or if the user chose features or a CPU model
(NUMBA_CPU_FEATURES / NUMBA_CPU_NAME; a "+prefer-256-bit" among the user's
features declines the tiles' zmm too). The setting is part of Numba's cache
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
_declined = False  # FASTBP_VECTOR_BITS=256: no 512-bit vectors anywhere


def setting():
    """FASTBP_VECTOR_BITS as "256", "512", or "" (unset, empty, or a value
    that cannot be used, which warns)."""
    bits = os.environ.get(ENV, "").strip()
    if bits not in ("", "256", "512"):
        warnings.warn(f"{ENV} must be 256 or 512, not {bits!r}: using the default",
                      RuntimeWarning, stacklevel=3)
        return ""
    return bits


def allow_512_bit():
    """Apply FASTBP_VECTOR_BITS to this process's Numba code, where the CPU
    has AVX-512 and nothing else decided: 512 drops LLVM's 256-bit
    preference, 256 adds it (whatever LLVM would choose for this CPU).
    Returns whether it changed the target features."""
    global _declined
    bits = setting()
    _declined = bits == "256"
    if not bits or config.CPU_FEATURES is not None or config.CPU_NAME is not None:
        return False
    if "_toplevel_target_context" in vars(registry.cpu_target):  # too late: it is made
        return False
    features = llvm.get_host_cpu_features().flatten()
    if "+avx512f" not in features.split(","):
        return False
    config.CPU_FEATURES = f"{features},{'-' if bits == '512' else '+'}{TUNING}"
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
    """Whether a kernel may ask for 512-bit vectors for itself
    (kernels/cpu_panels.py), whatever this process's preference: AVX-512 is
    in Numba's target features, and neither FASTBP_VECTOR_BITS=256 (read by
    ``allow_512_bit``, at import) nor the user's "+prefer-256-bit" declines it."""
    features = _features()
    return not _declined and "+avx512f" in features and f"+{TUNING}" not in features
