"""Chooses, chunk by chunk, how many threads the compiled SGD loop uses.

A step is a handful of short parallel regions (tens of microseconds each).
On a busy machine a thread that the OS has descheduled holds every region up
for a time slice, and two threads were seen 10 to 100 times slower than one
(one CPU-bound process beside a 2-core run). The kernels give bitwise the
same result for any thread count, so the choice is free: measure both, keep
the faster, and now and then measure the other again.

A shared virtual machine adds noise of tens of percent to one chunk's time,
sometimes for several chunks in a row (and never takes any away), so each
choice is judged by the least of its last SAMPLES measurements, and after
the lead changes hands the old leader is measured again soon (LOOK_AFTER
chunks): a burst of noise that hands two threads' 50 % lead to one thread
costs a few chunks, not an epoch. Other looks back off (twice the interval
each time), and a choice measured much slower waits longer for its look,
up to MAX_WAIT chunks: two threads measured 80 x slower while other
processes started up (seen: two benchmark workers warming up at once) get
another chance after 16 chunks, not after hundreds.

A look need not take a whole chunk: where a step is long (a chunk of 50
steps of 784-1024-1024-10 at batch 256 takes 0.35 s, 0.7 s on one thread) it
runs about PROBE_SECONDS' worth of steps, and the rest of the chunk goes on
with the leader. The first measurements are such probes too: the first
chunk runs one step untimed (it loads or compiles the kernels), a probe on
one thread sized by that step, and the rest on all threads; until both
choices have their samples, each chunk probes the choice it measures and
goes on with the one ``preferred`` names (all threads until both are
measured, then the faster so far), or runs whole on it where that is the
same choice. So a first train() call on a large net spends a few steps, not
its first chunks, on the slower choice: a 2-epoch call of 784-1024-1024-10
on 20 000 samples (4 chunks) had run 3 of them on one thread. The steps are
the same either way; only their threads differ.
"""

import collections
import math
import time

import numba

LOOK_AFTER = 2  # chunks after the lead changes before the other choice is measured again
SAMPLES = 2  # measurements kept per choice; its estimate is their minimum
EXPLORE_SHARE = 0.25  # the most time that looks at the slower choice may add ...
MAX_WAIT = 16  # ... unless that means waiting longer than this many chunks
PROBE_SECONDS = 0.05  # a look runs about this long (at least one step), if the chunk is longer


class ThreadTuner:
    """Seconds per step with one thread and with all of Numba's; runs each
    chunk with the faster, and re-measures the slower with back-off."""

    def __init__(self):
        full = numba.get_num_threads()
        self.choices = (1, full) if full > 1 else (1,)  # one first: it never stalls
        self.samples = {threads: collections.deque(maxlen=SAMPLES) for threads in self.choices}
        self.chunks = 0
        self.interval = LOOK_AFTER
        self.next_look = None
        self.best = None
        self.warm = False  # run() has made its untimed first call

    def pick(self):
        self.chunks += 1
        fewest = min(self.choices, key=lambda threads: len(self.samples[threads]))
        if len(self.samples[fewest]) < SAMPLES:  # still measuring: alternate
            return fewest
        best = min(self.choices, key=self.estimate)
        if best != self.best:  # the lead changed hands: look at the other again soon
            self.best = best
            self._schedule_look(LOOK_AFTER)
        if self.chunks >= self.next_look:
            self._schedule_look(2 * self.interval)
            return self._slower()
        return best

    def _slower(self):
        return max(self.choices, key=self.estimate)

    def _schedule_look(self, chunks):
        """Look at the slower choice after ``chunks`` chunks, or later where a
        look would cost more than EXPLORE_SHARE of the time (a look at a
        choice r times slower costs r - 1 chunks of the faster one), but
        not later than MAX_WAIT on that account: a choice measured slow
        while the machine was busy for a moment gets another chance."""
        ratio = self.estimate(self._slower()) / self.estimate(self.best)
        affordable = min(math.ceil((ratio - 1) / EXPLORE_SHARE), MAX_WAIT)
        self.interval = max(chunks, affordable)
        self.next_look = self.chunks + self.interval

    def estimate(self, threads):
        """Seconds per step with ``threads``: the least recent measurement."""
        return min(self.samples[threads], default=float("inf"))

    def record(self, threads, seconds, steps):
        # The first chunk compiles or loads kernels: not a timing, unless
        # run() took that out in a step of its own.
        if self.chunks > 1 or self.warm:
            self.samples[threads].append(max(seconds, 1e-9) / max(steps, 1))

    def preferred(self):
        """The thread count measured faster so far (all threads until measured)."""
        if any(not self.samples[threads] for threads in self.choices):
            return self.choices[-1]
        return min(self.choices, key=self.estimate)

    def run(self, fn, steps):
        """Run a chunk of ``steps`` steps, ``fn(first, count)`` running steps
        first .. first + count - 1 of it and returning how many completed
        (fewer stop the chunk): all with the chosen thread count, or, for a
        measurement or a look at the slower choice, PROBE_SECONDS' worth with
        it and the rest with the leader (while there is none, ``preferred``'s
        choice). The first chunk's first step runs alone, untimed. Returns
        the steps completed."""
        threads = self.pick()
        other = self.best if self.best is not None else self.preferred()
        # A step's time on ``threads``, else on the other choice, else (the
        # first chunk) that of the untimed step, which is longer.
        first, guess = 0, self.estimate(threads)
        if not math.isfinite(guess):
            guess = min(self.estimate(t) for t in self.choices)
        if not self.warm:
            started = time.perf_counter()
            first = self._call(fn, threads, 0, 1)
            self.warm = True
            if first < 1 or steps == 1:
                return first
            guess = max(time.perf_counter() - started, 1e-9)
        count = steps - first
        if other != threads and math.isfinite(guess):
            count = min(count, max(1, math.ceil(PROBE_SECONDS / guess)))
        done = self._timed(fn, threads, first, count)
        if done < count or first + count == steps:
            return first + done
        return first + done + self._timed(fn, other, first + count, steps - first - count)

    def _timed(self, fn, threads, first, count):
        """fn(first, count) on ``threads`` threads, recorded where all
        ``count`` steps ran: a call cut short by a non-finite cost is no
        measure of a step's time."""
        start = time.perf_counter()
        done = self._call(fn, threads, first, count)
        if done == count:
            self.record(threads, time.perf_counter() - start, count)
        return done

    @staticmethod
    def _call(fn, threads, first, count):
        """fn(first, count) on ``threads`` threads."""
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            return fn(first, count)
        finally:
            numba.set_num_threads(previous)
