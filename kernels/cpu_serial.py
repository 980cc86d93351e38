"""``train_steps`` compiled once more without parallel regions, for small steps.

A step of a small network (13-32-1 on batches of 16: about 7 000
multiply-adds) costs less than the fork and join of one parallel region, and
a step has several: ``kernels.cpu.train_steps`` spent 23 us per step there at
one thread, against 12 us for the same code compiled with ``parallel=False``
(docs/speed-log.md). This module compiles the very bodies of
``kernels.cpu.train_steps`` and of every kernel it calls again, each under
its own name (``<name>__serial``, so that Numba's on-disk cache keeps the two
builds apart), with ``prange`` running as ``range`` on the calling thread.

The results equal the parallel build's to rounding (fastmath lets LLVM
vectorize a sum in another order in either build), and each build is
bitwise the same run to run and for any thread count. So that a run's bits
never depend on timing, ``fastbp.backends.cpu`` chooses the build by the
step's size alone (``config.SERIAL_STEP_MACS``), not by measurement.
"""

import types

from numba import njit
from numba.core.dispatcher import Dispatcher

from . import cpu

SUFFIX = "__serial"


def _serial(dispatcher, clones):
    """The serial twin of ``dispatcher``: its Python function with a copy of
    its globals in which every dispatcher is replaced by its own twin,
    compiled with the same options but ``parallel``. ``clones`` maps
    id(original) -> (name, twin), shared by the whole call graph."""
    if id(dispatcher) in clones:
        return clones[id(dispatcher)][1]
    py_func = dispatcher.py_func
    namespace = dict(py_func.__globals__)
    function = types.FunctionType(py_func.__code__, namespace, py_func.__name__,
                                  py_func.__defaults__, py_func.__closure__)
    function.__qualname__ = py_func.__qualname__ + SUFFIX  # its own cache index
    function.__doc__ = py_func.__doc__
    options = {k: v for k, v in dispatcher.targetoptions.items()
               if k not in ("parallel", "nopython")}  # (njit implies nopython)
    # cache=True is the dispatcher's, not a target option: cached where the original is.
    cached = type(dispatcher._cache).__name__ != "NullCache"
    twin = njit(cache=cached, **options)(function)
    module = py_func.__module__.rsplit(".", 1)[-1]
    clones[id(dispatcher)] = (f"{module}_{py_func.__name__}", twin)
    for name, value in py_func.__globals__.items():
        if isinstance(value, Dispatcher):
            namespace[name] = _serial(value, clones)
    return twin


_clones = {}
train_steps = _serial(cpu.train_steps, _clones)
# Every twin under a name of this module, so that kernels.registry lists them
# (the compile lock and the cache stamp cover them as every other kernel).
globals().update({f"twin_{name}": twin for name, twin in _clones.values()})
del _clones
