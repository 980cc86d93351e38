"""Where Numba caches fastbp's compiled kernels: a per-user folder, never
the installed package.

Numba's default for ``cache=True`` is a ``__pycache__`` beside the source,
here ``site-packages/fastbp/kernels/__pycache__``. pip does not own those
files, so an uninstall left them behind, and the left-over folder then
shadowed a later editable install as a namespace package (``import fastbp``
without ``Network``). So fastbp's kernels cache in
``${XDG_CACHE_HOME:-~/.cache}/fastbp/numba`` instead; ``NUMBA_CACHE_DIR``
still wins (Numba's own locator, first in its list, takes it), and where the
folder cannot be written Numba's usual places are tried. Other code of the
process keeps Numba's defaults: the locator serves only this folder's files.
Uses Numba internals (``CacheImpl._locator_classes``); where they are
missing, nothing changes.
"""

import os

from numba.core import caching

_KERNELS = os.path.dirname(os.path.abspath(__file__))


def folder():
    """``${XDG_CACHE_HOME:-~/.cache}/fastbp/numba``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastbp", "numba")


class KernelCacheLocator(caching.UserProvidedCacheLocator):
    """Numba's locator for a user-chosen folder, for fastbp's kernel files only."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = os.path.join(folder(), self.get_suitable_cache_subpath(py_file))

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != _KERNELS:
            return None
        locator = cls(py_func, py_file)
        try:
            locator.ensure_cache_path()
        except OSError:  # read-only home, say: Numba's other places
            return None
        return locator


def install():
    """Put KernelCacheLocator right after Numba's NUMBA_CACHE_DIR locator
    (before any kernel is decorated: the locator is chosen then)."""
    classes = getattr(getattr(caching, "CacheImpl", None), "_locator_classes", None)
    if not isinstance(classes, list) or KernelCacheLocator in classes:
        return
    after = caching.UserProvidedCacheLocator
    classes.insert(classes.index(after) + 1 if after in classes else 0, KernelCacheLocator)
