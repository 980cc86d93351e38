"""Every kernel of fastbp, marked once.

* ``TWINS``: the public kernels, each in ``kernels/cpu.py`` and
  ``kernels/cuda.py`` under the same name, with the same arguments and
  meaning (both modules' ``__all__``; tests/test_cuda_kernels.py checks);
* ``CPU_MODULES``: the modules of ``@njit`` kernels. ``cpu_dispatchers()``
  lists every dispatcher in them once: what ``fastbp.compile_lock`` wraps
  (one compilation at a time across processes) and ``fastbp.cache_stamp``
  extends (a cached kernel goes stale with any kernel source), and what
  scripts/bench_kernels.py may time. A kernel needs no other mark: defining
  it in one of these modules is registering it.
"""

import importlib

from numba.core.dispatcher import Dispatcher

TWINS = ("dense_forward", "activation_backward", "dense_backward_weights",
         "dense_backward_input", "softmax_cross_entropy", "squared_error",
         "binary_cross_entropy", "count_misclassified", "count_label_misses", "sgd_update",
         "gather_rows", "forward_all",
         "backprop_all", "train_steps")

CPU_MODULES = ("cpu_math", "cpu_common", "cpu_panels", "cpu_tile_lists", "cpu_sparse", "cpu", "cpu_serial")


def cpu_dispatchers():
    """{module.name: dispatcher} of every ``@njit`` dispatcher in the
    namespaces of CPU_MODULES (imported here if need be; the bodies they
    compile from activations.py, losses.py and optim.py included), each once,
    under the first module that has it."""
    found, seen = {}, set()
    for name in CPU_MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        for attr, value in vars(module).items():
            if isinstance(value, Dispatcher) and id(value) not in seen:
                seen.add(id(value))
                found[f"{name}.{attr}"] = value
    return found
