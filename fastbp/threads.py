"""Chooses, chunk by chunk, how many threads the compiled SGD loop uses.

A step is a dozen short parallel regions (tens of microseconds each). On a
busy machine a thread that the OS has descheduled holds every region up for
a time slice, and two threads can then be ten times slower than one. The
kernels give bitwise the same result for any thread count, so the choice
is free: measure both, keep the faster, re-measure the other now and then.
"""

import time

import numba

EXPLORE_EVERY = 16  # chunks between re-measurements of the slower choice


class ThreadTuner:
    """Seconds per step for all of Numba's threads and for one; runs each
    chunk with the faster, and every EXPLORE_EVERY-th with the other."""

    def __init__(self):
        full = numba.get_num_threads()
        self.choices = (full, 1) if full > 1 else (1,)
        self.seconds_per_step = {}
        self.chunks = 0

    def pick(self):
        self.chunks += 1
        for threads in self.choices:
            if threads not in self.seconds_per_step:
                return threads
        ranked = sorted(self.choices, key=self.seconds_per_step.get)
        return ranked[-1] if self.chunks % EXPLORE_EVERY == 0 else ranked[0]

    def record(self, threads, seconds, steps):
        if self.chunks > 1:  # the first chunk compiles or loads kernels: not a timing
            self.seconds_per_step[threads] = seconds / max(steps, 1)

    def run(self, fn, steps):
        """Call ``fn()`` with the chosen thread count; return its result."""
        threads = self.pick()
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.record(threads, time.perf_counter() - start, steps)
            numba.set_num_threads(previous)
