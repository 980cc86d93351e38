"""Chooses, chunk by chunk, how many threads the compiled SGD loop uses.

A step is a dozen short parallel regions (tens of microseconds each). On a
busy machine a thread that the OS has descheduled holds every region up for
a time slice, and two threads were seen 10 to 100 times slower than one
(one CPU-bound process beside a 2-core run). The kernels give bitwise the
same result for any thread count, so the choice is free: measure both,
keep the faster, and re-measure the other after 16 chunks, then after
twice as many each time it loses again.

A shared virtual machine adds noise of tens of percent to one chunk's time
(and never takes any away), so each choice is judged by the least of its
last SAMPLES measurements: one unlucky chunk does not hand two threads'
50 % lead to one thread for hundreds of chunks.
"""

import collections
import time

import numba

FIRST_LOOK = 16  # chunks before the slower choice is measured again
SAMPLES = 2  # measurements kept per choice; its estimate is their minimum


class ThreadTuner:
    """Seconds per step with one thread and with all of Numba's; runs each
    chunk with the faster, and re-measures the slower with back-off."""

    def __init__(self):
        full = numba.get_num_threads()
        self.choices = (1, full) if full > 1 else (1,)  # one first: it never stalls
        self.samples = {threads: collections.deque(maxlen=SAMPLES) for threads in self.choices}
        self.chunks = 0
        self.interval = FIRST_LOOK
        self.next_look = None
        self.best = None

    def pick(self):
        self.chunks += 1
        fewest = min(self.choices, key=lambda threads: len(self.samples[threads]))
        if len(self.samples[fewest]) < SAMPLES:  # still measuring: alternate
            return fewest
        best = min(self.choices, key=self.estimate)
        if best != self.best:  # the ranking changed: look again soon
            self.best, self.interval = best, FIRST_LOOK
            self.next_look = self.chunks + self.interval
        if self.chunks >= self.next_look:
            self.interval *= 2
            self.next_look = self.chunks + self.interval
            return max(self.choices, key=self.estimate)
        return best

    def estimate(self, threads):
        """Seconds per step with ``threads``: the least recent measurement."""
        return min(self.samples[threads], default=float("inf"))

    def record(self, threads, seconds, steps):
        if self.chunks > 1:  # the first chunk compiles or loads kernels: not a timing
            self.samples[threads].append(seconds / max(steps, 1))

    def preferred(self):
        """The thread count measured faster so far (all threads until measured)."""
        if any(not self.samples[threads] for threads in self.choices):
            return self.choices[-1]
        return min(self.choices, key=self.estimate)

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
