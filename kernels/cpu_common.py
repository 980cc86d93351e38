"""What every CPU kernel module shares: compile options and scalar helpers."""

import types

from llvmlite import ir
from numba import njit
from numba.core import cgutils
from numba.core import types as nbtypes
from numba.extending import intrinsic

from . import activations, cpu_math, numba_cache, optim, vector_width
from .codes import RULE_ADAM, RULE_SGD

# Before this module's first @njit, which fixes the process's target features
# and, for each cached kernel, where its cache lives (done already by
# cpu_math, imported above; both calls do nothing the second time).
vector_width.allow_512_bit()
numba_cache.install()

# fastmath without nnan/ninf: lets LLVM reassociate and vectorise the
# dot-product reductions, but keeps NaN/inf semantics so divergence is seen.
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
# error_model="numpy": a float division by zero gives inf or NaN instead of
# raising, as NumPy does. Python's model tests every divisor for zero, and
# that branch kept LLVM from vectorising any loop that divides (Adam's
# update, tanh, sigmoid: 8x slower per element; docs/speed-log.md).
PARALLEL = dict(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=True, nogil=True)
SERIAL = dict(fastmath=FASTMATH, error_model="numpy", cache=True, nogil=True)



def with_vector_math(function):
    """``function`` reading cpu_math's exp and tanh for its globals of those
    names (vectorisable in float32; math's in float64)."""
    namespace = dict(function.__globals__, exp=cpu_math.exp, tanh=cpu_math.tanh)
    clone = types.FunctionType(function.__code__, namespace, function.__name__,
                               function.__defaults__, function.__closure__)
    clone.__qualname__, clone.__doc__ = function.__qualname__, function.__doc__
    return clone


# h and h' (6.3) and the update rule (6.23): the bodies cuda.py compiles too.
activate = njit(inline="always", fastmath=FASTMATH)(with_vector_math(activations.activate))
derivative = njit(inline="always", fastmath=FASTMATH)(activations.derivative)
sgd = njit(inline="always", fastmath=FASTMATH)(optim.sgd)
step = njit(inline="always", fastmath=FASTMATH)(optim.step)
adam_rate = njit(inline="always")(optim.adam_rate)  # float64, as scikit-learn computes it


def element_pointer(context, builder, signature, args):
    """For an intrinsic's codegen whose first two arguments are an array and
    an index: the address of array[index]."""
    aryty = signature.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])


@intrinsic
def prefetch(typingctx, array, index):
    """Ask the CPU to start loading ``array[index]``'s cache line into L1
    (LLVM's prefetch: read, high locality); no result, never faults."""
    def codegen(context, builder, signature, args):
        ptr = element_pointer(context, builder, signature, args)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = builder.module.declare_intrinsic(
            "llvm.prefetch", [i8p], ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]))
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return nbtypes.void(array, index), codegen


@njit(inline="always")
def prefetch_row(indptr, indices, values, s):
    """prefetch every 64-byte line of compressed row s (its ``indices`` and
    ``values``, ``indptr[s]`` .. ``indptr[s + 1]``)."""
    a, e = indptr[s], indptr[s + 1]
    if a < e:
        per_line = 64 // values.itemsize  # 16 float32, 8 float64 (and 16 int32 indices)
        for m in range(a, e, 16):
            prefetch(indices, m)
        for m in range(a, e, per_line):
            prefetch(values, m)
        prefetch(indices, e - 1)  # the last line, where the row starts mid-line
        prefetch(values, e - 1)


@njit(**SERIAL)
def mean(values):
    """Mean in a fixed order (deterministic, unlike a threaded reduction)."""
    s = values.dtype.type(0)
    for i in range(values.shape[0]):
        s += values[i]
    return s / values.shape[0]


@njit(inline="always", fastmath=FASTMATH)
def rule_row(w, m, v, g, scale, decay, rule, lr, hyper):
    """``w, m, v = step(w, g scale + decay w, m, v)`` along a row: the update
    ``rule`` (plain SGD with a penalty, momentum, Nesterov or Adam) of
    weights w from their gradient's sums g (scale: 1 / n_b) and the L2
    penalty's decay = alpha / n_b, as ``cpu.optimizer_update`` does on W.
    m and v are read only by the rules that keep them (another row may stand
    in for them). One loop per rule, so that each vectorises."""
    zero = w.dtype.type(0)
    if rule == RULE_SGD:
        for c in range(w.shape[0]):
            w[c] = sgd(w[c], g[c] * scale + decay * w[c], lr)
    elif rule == RULE_ADAM:
        for c in range(w.shape[0]):
            w[c], m[c], v[c] = step(w[c], g[c] * scale + decay * w[c], m[c], v[c], rule, lr,
                                    hyper)
    else:
        for c in range(w.shape[0]):
            w[c], m[c], _ = step(w[c], g[c] * scale + decay * w[c], m[c], zero, rule, lr, hyper)
