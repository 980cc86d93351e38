"""fastbp: fully connected networks trained with backpropagation and SGD.

Algorithm 6.1 of Lindholm et al. (ch. 6) on hand-written Numba kernels.
"""

import os as _os

import numba as _numba

from . import cache_stamp, compile_lock, datasets, reference
from .kernels import registry as _registry
from .errors import DataError, DivergenceError
from .history import History
from .network import Network, load
from .optimizers import SGD, Adam
from .stopping import EarlyStopping
from .trainer import Trainer, train
from .backends import backprop

# Both before any kernel compiles or loads from the cache:
_kernels = list(_registry.cpu_dispatchers().values())
compile_lock.guard(_kernels)
cache_stamp.stamp(_kernels, cache_stamp.sources_fingerprint(_os.path.dirname(_registry.__file__)))
# Start Numba's thread pool now: parallel code loaded from the on-disk cache
# before the pool exists crashed the process (numba issue 8578; seen here with
# load() then predict() in a fresh process).
_numba.set_num_threads(_numba.get_num_threads())

__version__ = "0.1.0"

__all__ = ["Network", "load", "train", "Trainer", "SGD", "Adam", "EarlyStopping", "backprop",
           "History", "DataError", "DivergenceError", "datasets", "reference", "__version__"]


def __getattr__(name):
    """The scikit-learn estimators, fastbp.MLPClassifier and MLPRegressor,
    imported when first used: ``import fastbp`` (and ``from fastbp import *``,
    so they are not in __all__) needs no scikit-learn; without it they raise
    an ImportError naming the extra to install."""
    if name in ("MLPClassifier", "MLPRegressor"):
        from . import sklearn as estimators
        return getattr(estimators, name)
    raise AttributeError(f"module 'fastbp' has no attribute {name!r}")
