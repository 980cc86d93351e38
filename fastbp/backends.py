"""Picks the compute for a device: "cpu" (Numba kernels), "cuda", "numpy".

A backend's ``Stepper`` runs a number of SGD iterations over a shuffled order
and reports per-iteration cost and error; ``fastbp.train`` orchestrates it.
"""

import importlib.util
import math

import numba
import numpy as np

from . import reference
from .buffers import batch_buffers, gradient_buffers, training_buffers
from .sparse_rows import compressed_rows, tile_masks
from .kernels import codes, cpu, cpu_panels
from .threads import ThreadTuner
from .validation import choice

DEVICES = ("auto", "cpu", "cuda", "numpy")
_TUNERS = {}


def cuda_status():
    """(available, reason): whether device="cuda" can run, and if not, why.

    A GPU needs numba-cuda (the ``cuda`` extra) and a working driver; Numba's
    CUDA simulator counts only when NUMBA_ENABLE_CUDASIM=1 is set (tests).
    """
    from numba import config
    if not config.ENABLE_CUDASIM and importlib.util.find_spec("numba_cuda") is None:
        return False, "numba-cuda is not installed (pip install 'numba-cuda[cu12]>=0.30')"
    try:
        from numba import cuda
        if not cuda.is_available():
            return False, "no CUDA GPU was found (numba.cuda.is_available() is False)"
    except Exception as exc:  # driver or toolkit problems
        return False, f"CUDA is not usable: {exc}"
    return True, ""


def resolve_device(device):
    """Map "auto" to "cuda" when a GPU is usable, else "cpu"; check the rest."""
    choice("device", device, DEVICES)
    if device == "auto":
        return "cuda" if cuda_status()[0] else "cpu"
    if device == "cuda":
        ok, reason = cuda_status()
        if not ok:
            raise RuntimeError(f"device='cuda' is unavailable: {reason}. "
                               "Use device='cpu' (or 'auto').")
    return device


def backprop(net, Ws, bs, X, y, device):
    """Algorithm 6.1 on one batch with the chosen device: (J, [(dW, db), ...])."""
    if device == "numpy":
        return reference.backprop(list(zip(Ws, bs)), X, y, net.activation, net.loss)
    if device == "cuda":
        from . import cuda_backend  # imported only when CUDA is usable
        return cuda_backend.backprop(net, Ws, bs, X, y)
    Zs, Qs, dZs, dQs, row_loss = batch_buffers(net.sizes, X.shape[0], net.dtype)
    dWs, dbs = gradient_buffers(zip(Ws, bs))
    labels, targets = _split_targets(net, y)
    J = cpu.backprop_all(dWs, dbs, dZs, dQs, Zs, Qs, row_loss, X, labels, targets,
                         Ws, bs, codes.ACTIVATIONS[net.activation], codes.LOSSES[net.loss])
    return float(J), list(zip(dWs, dbs))


def make_stepper(device, net, Ws, bs, X, y, batch_size):
    """The object that runs SGD steps for ``device`` ("cpu", "cuda" or "numpy")."""
    if device == "numpy":
        return NumpyStepper(net, Ws, bs, X, y, batch_size)
    if device == "cuda":
        from . import cuda_backend  # imported only when CUDA is usable
        return cuda_backend.CudaStepper(net, Ws, bs, X, y, batch_size)
    return CpuStepper(net, Ws, bs, X, y, batch_size)


class CpuStepper:
    """Runs many SGD iterations per call inside one compiled loop."""

    def __init__(self, net, Ws, bs, X, y, batch_size):
        self.Ws, self.bs, self.X = Ws, bs, X
        self.labels, self.targets = _split_targets(net, y)
        rows = min(batch_size, X.shape[0])
        Zs, Qs, dZs, dQs, row_loss = batch_buffers(net.sizes, rows, net.dtype)
        self.rows_csr = compressed_rows(X, net.sizes[1])
        masks = (tile_masks(X, self.rows_csr, rows)
                 if cpu_panels.worthwhile(net.sizes, net.dtype) else None)
        self.buffers = (Zs, Qs, dZs, dQs, row_loss) + training_buffers(net.sizes, rows,
                                                                        net.dtype, masks)
        self.Xb = np.zeros((rows, X.shape[1]), net.dtype)
        self.yb = np.zeros(rows, np.int64)
        self.Tb = np.zeros((rows, self.targets.shape[1]), net.dtype)
        self.batch_size = batch_size
        self.act = codes.ACTIVATIONS[net.activation]
        self.loss = codes.LOSSES[net.loss]
        # One tuner per network shape for the whole process: repeated train()
        # calls (an epoch each, say) keep what earlier ones measured. And per
        # numba.set_num_threads() setting: the tuner chooses between one
        # thread and the caller's count, never more than the caller set.
        key = (tuple(net.sizes), net.dtype.name, rows, numba.get_num_threads())
        self.threads = _TUNERS.setdefault(key, ThreadTuner())

    def run(self, order, first_step, n_steps, lr, costs, errors):
        """Run steps ``first_step .. first_step + n_steps - 1`` of this epoch's
        ``order``; write each step's cost and error; return steps completed."""
        Zs, Qs, dZs, dQs, row_loss, WT, panels, idx, val, count = self.buffers
        return self.threads.run(lambda: cpu.train_steps(
            self.Ws, self.bs, WT, panels, Zs, Qs, dZs, dQs, row_loss, idx, val, count,
            self.rows_csr, self.Xb, self.yb, self.Tb, self.X, self.labels, self.targets, order,
            first_step, n_steps, self.batch_size, lr, self.act, self.loss, costs, errors),
            n_steps)

    def sync(self):
        """Nothing to do: the weights are the host arrays themselves."""

    def push(self):
        """Nothing to do: the weights are the host arrays themselves."""


class NumpyStepper:
    """The reference: Algorithm 6.1 in NumPy, a Python loop over batches."""

    def __init__(self, net, Ws, bs, X, y, batch_size):
        self.layers = list(zip(Ws, bs))
        self.X, self.y, self.net, self.batch_size = X, y, net, batch_size

    def run(self, order, first_step, n_steps, lr, costs, errors):
        for s in range(n_steps):
            start = (first_step + s) * self.batch_size
            rows = order[start:start + self.batch_size]
            X, y = self.X[rows], self.y[rows]
            J, grads, Z = reference.backprop_with_output(
                self.layers, X, y, self.net.activation, self.net.loss)
            costs[s] = J
            if self.net.is_classifier:
                errors[s] = np.mean(Z.argmax(axis=1) != y)
            else:
                errors[s] = math.nan
            if not math.isfinite(J):
                return s
            reference.sgd_step(self.layers, grads, lr)
        return n_steps

    def sync(self):
        """Nothing to do: the weights are the host arrays themselves."""

    def push(self):
        """Nothing to do: the weights are the host arrays themselves."""


def _split_targets(net, y):
    """(labels, targets) for the kernels: the unused one is an empty array."""
    if net.is_classifier:
        return y, np.zeros((0, net.n_outputs), net.dtype)
    return np.zeros(0, np.int64), y
