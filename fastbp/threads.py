"""Chooses, chunk by chunk, how many threads the compiled SGD loop uses.

A step is a dozen short parallel regions (tens of microseconds each). On a
busy machine a thread that the OS has descheduled holds every region up for
a time slice, and two threads were seen 10 to 100 times slower than one
(one CPU-bound process beside a 2-core run). The kernels give bitwise the
same result for any thread count, so the choice is free: measure both,
keep the faster, and re-measure the other after 16 chunks, then after
twice as many each time it loses again.
"""

import time

import numba

FIRST_LOOK = 16  # chunks before the slower choice is measured again


class ThreadTuner:
    """Seconds per step with one thread and with all of Numba's; runs each
    chunk with the faster, and re-measures the slower with back-off."""

    def __init__(self):
        full = numba.get_num_threads()
        self.choices = (1, full) if full > 1 else (1,)  # one first: it never stalls
        self.seconds_per_step = {}
        self.chunks = 0
        self.interval = FIRST_LOOK
        self.next_look = None
        self.best = None

    def pick(self):
        self.chunks += 1
        for threads in self.choices:
            if threads not in self.seconds_per_step:
                return threads
        best = min(self.choices, key=self.seconds_per_step.get)
        if best != self.best:  # the ranking changed: look again soon
            self.best, self.interval = best, FIRST_LOOK
            self.next_look = self.chunks + self.interval
        if self.chunks >= self.next_look:
            self.interval *= 2
            self.next_look = self.chunks + self.interval
            return max(self.choices, key=self.seconds_per_step.get)
        return best

    def record(self, threads, seconds, steps):
        if self.chunks > 1:  # the first chunk compiles or loads kernels: not a timing
            self.seconds_per_step[threads] = seconds / max(steps, 1)

    def preferred(self):
        """The thread count measured faster so far (all threads until measured)."""
        if len(self.seconds_per_step) < len(self.choices):
            return self.choices[-1]
        return min(self.choices, key=self.seconds_per_step.get)

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
