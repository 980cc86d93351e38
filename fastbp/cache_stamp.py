"""Cached kernels go stale when a kernel they call changes in another file.

Numba's on-disk cache (``cache=True``) checks only the source file of the
function it loads: ``train_steps`` (kernels/cpu.py) cached before an edit of
``csr_sgd_update`` (kernels/cpu_sparse.py), which it calls and compiles into
itself, keeps running the old code, and tests pass against it (seen while
measuring). So every kernel's cache stamp is extended with a fingerprint of
all the kernel sources: any edit there recompiles every kernel once.
"""

import hashlib
import pathlib

from numba.core.dispatcher import Dispatcher


def sources_fingerprint(folder):
    """SHA-256 (hex) of the names and contents of the ``*.py`` files in ``folder``."""
    digest = hashlib.sha256()
    for path in sorted(pathlib.Path(folder).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def stamp(dispatchers, fingerprint):
    """Make each cached dispatcher of ``dispatchers`` accept its on-disk cache
    only if it was saved with ``fingerprint`` too. Uses Numba internals
    (``_cache._cache_file._source_stamp``); where they are missing, it does
    nothing and Numba's own check stays."""
    for value in dispatchers:
        cache_file = getattr(getattr(value, "_cache", None), "_cache_file", None)
        if not isinstance(value, Dispatcher) or not hasattr(cache_file, "_source_stamp"):
            continue
        own = cache_file._source_stamp
        if not (isinstance(own, tuple) and len(own) == 2 and own[1] == fingerprint):
            cache_file._source_stamp = (own, fingerprint)
