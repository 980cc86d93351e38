"""What every CPU kernel module shares: compile options and scalar helpers."""

from numba import njit

from . import activations, numba_cache, optim, vector_width

# Before this module's first @njit, which fixes the process's target features
# and, for each cached kernel, where its cache lives.
vector_width.allow_512_bit()
numba_cache.install()

# fastmath without nnan/ninf: lets LLVM reassociate and vectorise the
# dot-product reductions, but keeps NaN/inf semantics so divergence is seen.
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
PARALLEL = dict(parallel=True, fastmath=FASTMATH, cache=True, nogil=True)
SERIAL = dict(fastmath=FASTMATH, cache=True, nogil=True)


# h and h' (6.3) and the update rule (6.23): the bodies cuda.py compiles too.
activate = njit(inline="always", fastmath=FASTMATH)(activations.activate)
derivative = njit(inline="always", fastmath=FASTMATH)(activations.derivative)
sgd = njit(inline="always", fastmath=FASTMATH)(optim.sgd)
step = njit(inline="always", fastmath=FASTMATH)(optim.step)
adam_rate = njit(inline="always")(optim.adam_rate)  # float64, as scikit-learn computes it


@njit(**SERIAL)
def mean(values):
    """Mean in a fixed order (deterministic, unlike a threaded reduction)."""
    s = values.dtype.type(0)
    for i in range(values.shape[0]):
        s += values[i]
    return s / values.shape[0]
