"""One Numba compilation at a time across processes.

Numba's on-disk cache (``cache=True``) is not safe when two processes fill
it at once with different signatures: both may pick the same data-file
number, one index then points at the other's machine code, and a later
process that loads it crashes. Every kernel dispatcher's ``compile`` (which
also loads from the cache) is therefore wrapped to hold an exclusive file
lock, per user, in the temporary folder. Compiled calls never take it.
"""

import contextlib
import functools
import os
import tempfile
import threading

from numba.core.dispatcher import Dispatcher

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, no cross-process lock
    fcntl = None

_thread_lock = threading.RLock()
_depth = 0
_fd = None


def lock_path():
    """The lock file shared by every fastbp process of this user."""
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"fastbp-numba-compile-{uid}.lock")


@contextlib.contextmanager
def compiling():
    """Hold the cross-process compile lock (re-entrant within a process:
    compiling a kernel compiles the kernels it calls)."""
    global _depth, _fd
    with _thread_lock:
        if _depth == 0 and fcntl is not None:
            try:
                _fd = os.open(lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(_fd, fcntl.LOCK_EX)
            except OSError:  # unwritable temp folder: compile unlocked, as Numba would
                _fd = None
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
            if _depth == 0 and _fd is not None:
                fcntl.flock(_fd, fcntl.LOCK_UN)
                os.close(_fd)
                _fd = None


def guard(module):
    """Wrap the ``compile`` of every Numba dispatcher in ``module`` with the lock."""
    for value in vars(module).values():
        if isinstance(value, Dispatcher) and not getattr(value.compile, "_fastbp_locked", False):
            value.compile = _locked(value.compile)


def _locked(compile_method):
    @functools.wraps(compile_method)
    def compile(sig):
        with compiling():
            return compile_method(sig)

    compile._fastbp_locked = True
    return compile
