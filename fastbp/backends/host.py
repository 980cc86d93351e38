"""What the steppers whose weights are the caller's own host arrays ("cpu"
and "numpy") share: a chunk's snapshot and restore, and the finiteness
check, are done on those arrays; sync and push have nothing to move.

The "cuda" stepper does the same on its device copies
(``backends.cuda.CudaStepper``), so that a chunk needs no weights brought
back to the host.
"""

import numpy as np


class HostStepper:
    """Base of the CpuStepper and NumpyStepper: set ``self.changed`` (every
    array a step changes: the weights, biases and optimizer state) and
    ``self.Ws``, ``self.bs``."""

    chunk_macs = None  # the trainer's CHUNK_MACS: a chunk of a few milliseconds

    def snapshot(self):
        """A copy of everything a step changes."""
        return [a.copy() for a in self.changed]

    def restore(self, saved):
        """Put a ``snapshot`` back."""
        for a, kept in zip(self.changed, saved):
            a[...] = kept

    def weights_finite(self):
        """Whether every weight and bias is finite after the last ``run``
        that completed all its steps."""
        return all(np.isfinite(W).all() and np.isfinite(b).all()
                   for W, b in zip(self.Ws, self.bs))

    def sync(self):
        """Nothing to do: the weights are the host arrays themselves."""

    def push(self):
        """Nothing to do: the weights are the host arrays themselves."""


def changed_arrays(Ws, bs, state):
    """Every non-empty array a step changes, in a fixed order."""
    return [a for part in ((Ws, bs) + tuple(state)) for a in part if a.size]
