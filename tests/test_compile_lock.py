"""Kernel compilation (and cache loading) is serialised across processes."""

import fcntl
import os
import subprocess
import sys
import threading
import time

from numba.core.dispatcher import Dispatcher

from fastbp import compile_lock
from fastbp.kernels import cpu, registry

CHILD = """
import numpy as np
import fastbp
from fastbp.kernels import cpu
print("imported", flush=True)
out = np.zeros((3, 2), np.float32)
cpu.transpose(out, np.ones((2, 3), np.float32))
print("done", out.sum(), flush=True)
"""


def test_every_kernel_dispatcher_compiles_under_the_lock():
    dispatchers = [v for v in vars(cpu).values() if isinstance(v, Dispatcher)]
    assert len(dispatchers) >= 10
    dispatchers += list(registry.cpu_dispatchers().values())
    assert all(getattr(d.compile, "_fastbp_locked", False) for d in dispatchers)


def test_the_lock_is_reentrant():
    with compile_lock.compiling():
        with compile_lock.compiling():
            pass
    assert compile_lock._depth == 0 and compile_lock._fd is None


def test_another_process_waits_for_the_lock_before_compiling(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))  # empty cache: must compile
    with compile_lock.compiling():
        child = subprocess.Popen([sys.executable, "-c", CHILD], env=env,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "imported"
        time.sleep(2)
        assert child.poll() is None, "the child compiled while this process held the lock"
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0 and out.startswith("done 6.0")


def test_a_run_waiting_for_another_process_s_compilation_says_so():
    seen = []
    fd = os.open(compile_lock.lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as another process compiling

        def compile_something():
            with compile_lock.watch(seen.append), compile_lock.compiling():
                seen.append("locked")
        waiter = threading.Thread(target=compile_something)
        waiter.start()
        time.sleep(0.5)
        assert seen == ["wait"]  # said so, and still waiting
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    waiter.join(timeout=30)
    assert seen == ["wait", "locked"]


def test_compile_time_is_counted_for_the_thread_that_spent_it():
    """Training in one thread must not subtract another thread's compile."""
    before = compile_lock.seconds_spent()

    def compile_elsewhere():
        with compile_lock.compiling():
            time.sleep(0.5)
    other = threading.Thread(target=compile_elsewhere)
    other.start()
    other.join()
    assert compile_lock.seconds_spent() == before
    with compile_lock.compiling(), compile_lock.compiling():  # nested: counted once
        time.sleep(0.2)
    assert 0.2 <= compile_lock.seconds_spent() - before < 0.4
