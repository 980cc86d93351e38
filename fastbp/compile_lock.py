"""One Numba compilation at a time across processes.

Numba's on-disk cache (``cache=True``) is not safe when two processes fill
it at once with different signatures: both may pick the same data-file
number, one index then points at the other's machine code, and a later
process that loads it crashes. Every kernel dispatcher's ``compile`` (which
also loads from the cache) is therefore wrapped to hold an exclusive file
lock, per user, in the temporary folder. Compiled calls never take it.

The lock is also where a thread learns what compiling costs it: the
seconds it spends under the lock or waiting for it (loading, compiling) add
up in ``seconds_spent()``, which training subtracts from its epoch times, and
``watch()`` tells a caller when a kernel really compiles (a minute or two
on a first run) or waits for another process, so a command line can say
why nothing seems to happen.
"""

import contextlib
import functools
import os
import tempfile
import threading
import time

from numba.core import event
from numba.core.dispatcher import Dispatcher

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, no cross-process lock
    fcntl = None

_thread_lock = threading.RLock()
_depth = 0
_fd = None
_spent = threading.local()  # per thread: another thread's compile is not this one's
_watchers = []


def lock_path():
    """The lock file shared by every fastbp process of this user."""
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"fastbp-numba-compile-{uid}.lock")


@contextlib.contextmanager
def compiling():
    """Hold the cross-process compile lock (re-entrant within a process:
    compiling a kernel compiles the kernels it calls)."""
    global _depth, _fd
    started = time.perf_counter()  # waiting for another thread's compile included
    with _thread_lock:
        if _depth == 0 and fcntl is not None:
            _fd = _acquire()
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
            if _depth == 0:
                if _fd is not None:
                    fcntl.flock(_fd, fcntl.LOCK_UN)
                    os.close(_fd)
                    _fd = None
                _spent.seconds = seconds_spent() + time.perf_counter() - started


def _acquire():
    """The locked file descriptor, or None where the lock cannot be had."""
    try:
        fd = os.open(lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:  # unwritable temp folder: compile unlocked, as Numba would
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process compiles: say so, then wait for it
            _notify("wait")
            fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        os.close(fd)
        return None
    except BaseException:  # Ctrl-C while waiting, or a watcher that failed
        os.close(fd)
        raise
    return fd


def seconds_spent():
    """Seconds the calling thread has spent compiling or loading fastbp's CPU
    kernels, waits for the lock included (CUDA kernels compile outside it)."""
    return getattr(_spent, "seconds", 0.0)


@contextlib.contextmanager
def watch(callback):
    """Within the block, ``callback("compile")`` when Numba starts compiling
    a function (not when it loads one from its cache), ``callback("wait")``
    when another process holds the lock. It may be called many times."""
    _watchers.append(callback)
    try:
        yield
    finally:
        _watchers.remove(callback)


def _notify(what):
    for callback in list(_watchers):
        callback(what)


class _CompileListener(event.Listener):
    """Numba's "numba:compile" event fires only for a real compilation."""

    def on_start(self, event):
        _notify("compile")

    def on_end(self, event):
        pass


event.register("numba:compile", _CompileListener())


def guard(dispatchers):
    """Wrap the ``compile`` of each Numba dispatcher in ``dispatchers`` with the lock."""
    for value in dispatchers:
        if isinstance(value, Dispatcher) and not getattr(value.compile, "_fastbp_locked", False):
            value.compile = _locked(value.compile)


def _locked(compile_method):
    @functools.wraps(compile_method)
    def compile(sig):
        with compiling():
            return compile_method(sig)

    compile._fastbp_locked = True
    return compile
