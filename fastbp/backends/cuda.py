"""The "cuda" device: launches the ``kernels.cuda`` kernels through numba-cuda.

Imported only once ``backends.cuda_status()`` says CUDA is usable (a GPU, or
Numba's simulator under NUMBA_ENABLE_CUDASIM=1), so ``import fastbp`` never
needs numba-cuda. Weights live on the device while training; ``sync`` copies
them back into the caller's host arrays.
"""

import numpy as np
from numba import config, cuda

from ..buffers import batch_buffers
from ..kernels import codes
from ..kernels import cuda as kernels
from ..kernels.arguments import CudaFirstLayer, CudaWork, Data, Model, Out, Params, Steps
from ..kernels.config import CUDA_CHUNK_MACS
from ..optimizers import kernel_settings
from ..weights import row_factors


def launch(kernel, n_items, *args):
    """Launch ``kernel`` with ``args`` on ``grid(kernel, n_items, args)`` blocks."""
    kernel[grid(kernel, n_items, args), kernels.THREADS](*args)


def grid(kernel, n_items, args):
    """Blocks of ``kernels.THREADS`` threads enough for ``n_items`` work items,
    capped for the cooperative (grid-synchronising) kernels at what the
    device holds resident at once (their threads then take several items)."""
    if not 1 <= kernels.THREADS <= kernels.MAX_THREADS:
        raise ValueError(f"fastbp.kernels.cuda.THREADS must be in 1..{kernels.MAX_THREADS}; "
                         f"got {kernels.THREADS!r}")
    blocks = max(1, -(-n_items // kernels.THREADS))
    if kernel.py_func.__name__ not in kernels.COOPERATIVE:
        return blocks
    if config.ENABLE_CUDASIM:
        return 1  # the simulator runs cooperative grids of one block only
    compiled = kernel.compile(tuple(kernel.typeof_pyval(a) for a in args))
    resident = compiled.max_cooperative_grid_blocks(kernels.THREADS)
    if resident < 1:  # seen on an H100: train_steps at 512 threads (registers)
        raise ValueError(
            f"fastbp.kernels.cuda.THREADS = {kernels.THREADS} is too many for "
            f"{kernel.py_func.__name__} on this GPU: not one block of that many threads fits "
            "on a multiprocessor at once (registers or shared memory); use fewer, "
            "e.g. the default 128")
    return min(blocks, resident)


def most_items(sizes, n_rows):
    """The largest work-item count of any phase for a net of ``sizes`` on
    batches of ``n_rows``: a grid this big gives every thread one item."""
    layer_items = [max(u * (p + 1), n_rows * max(u, p)) for p, u in zip(sizes, sizes[1:])]
    return max(layer_items)


def device_batch_buffers(sizes, n_rows, dtype):
    """``buffers.batch_buffers`` on the device, keeping Qs[-1] = Zs[-1]; the
    unused dQs[-1] holds one dummy element (empty device arrays are avoided)."""
    Zs, Qs, dZs, dQs, row_loss = batch_buffers(sizes, n_rows, dtype)
    Zd = tuple(cuda.to_device(a) for a in Zs)
    Qd = tuple(cuda.to_device(a) for a in Qs[:-1]) + (Zd[-1],)
    dZd = tuple(cuda.to_device(a) for a in dZs)
    dQd = tuple(cuda.to_device(a) for a in dQs[:-1]) + (cuda.to_device(np.zeros((1, 1), dtype)),)
    return Zd, Qd, dZd, dQd, cuda.to_device(row_loss)


def device_targets(net, y):
    """(labels, targets) on the device; the unused one is a one-row dummy."""
    if net.takes_labels:
        return cuda.to_device(y), cuda.to_device(np.zeros((1, net.n_outputs), net.dtype))
    return cuda.to_device(np.zeros(1, np.int64)), cuda.to_device(y)


def device_weights(weights, dtype):
    """Sample weights on the device, or the one-element dummy that means none."""
    return cuda.to_device(weights if weights is not None else np.ones(1, dtype))


def backprop(net, Ws, bs, X, y, sample_weight=None):
    """Algorithm 6.1 on one batch on the GPU: (J, [(dW, db), ...]) on the host."""
    Zs, Qs, dZs, dQs, row_loss = device_batch_buffers(net.sizes, X.shape[0], net.dtype)
    Wd = tuple(cuda.to_device(W) for W in Ws)
    bd = tuple(cuda.to_device(b) for b in bs)
    dWs = tuple(cuda.device_array_like(W) for W in Ws)
    dbs = tuple(cuda.device_array_like(b) for b in bs)
    labels, targets = device_targets(net, y)
    cost = cuda.device_array(1, np.float64)
    launch(kernels.backprop_all, most_items(net.sizes, X.shape[0]),
           dWs, dbs, dZs, dQs, Zs, Qs, row_loss, cuda.to_device(X), labels, targets,
           device_weights(None if sample_weight is None
                          else row_factors(sample_weight, net.dtype), net.dtype), Wd, bd,
           codes.ACTIVATIONS[net.activation], codes.LOSSES[net.loss], cost)
    grads = [(dW.copy_to_host(), db.copy_to_host()) for dW, db in zip(dWs, dbs)]
    return float(cost.copy_to_host()[0]), grads


class CudaStepper:
    """Runs a chunk of SGD iterations per launch of ``kernels.cuda.train_steps``.

    The training data is copied to the device once, here; the weights stay
    there between calls and come back to ``Ws``, ``bs`` on ``sync()``; each
    epoch's shuffle ``order`` is copied when a new one arrives. A chunk's
    snapshot, its restore and the finiteness check happen on the device:
    a chunk's end brings back only the steps' costs and errors and two
    integers.
    """

    chunk_macs = CUDA_CHUNK_MACS

    def __init__(self, net, Ws, bs, X, y, batch_size, optimizer, state, weights=None):
        self.host = (Ws, bs) + tuple(state)
        # A rule's unused state: one dummy element (empty device arrays are avoided).
        self.params = Params(*(tuple(cuda.to_device(a if a.size else np.zeros((1,) * a.ndim,
                                                                               a.dtype))
                                     for a in part) for part in self.host))
        self.rule = kernel_settings(optimizer)
        self.model = Model(codes.ACTIVATIONS[net.activation], codes.LOSSES[net.loss])
        rows = min(batch_size, X.shape[0])
        self.work = CudaWork(*device_batch_buffers(net.sizes, rows, net.dtype),
                             cuda.device_array((rows, X.shape[1]), net.dtype),
                             cuda.device_array(rows, np.int64),
                             cuda.device_array((rows, net.n_outputs), net.dtype),
                             cuda.device_array(rows + 1, net.dtype),
                             tuple(cuda.device_array_like(W) for W in Ws),
                             tuple(cuda.device_array_like(b) for b in bs))
        self.first = CudaFirstLayer(codes.FIRST_W)  # dense products: no zeros skipped
        self.X = cuda.to_device(X)
        self.labels, self.targets = device_targets(net, y)
        self.weights = device_weights(weights, net.dtype)
        self.batch_size = batch_size
        self.items = most_items(net.sizes, rows)
        self.order_host, self.order = None, None
        self.results = cuda.device_array((2, 0), np.float64)  # batch cost, error
        self.done = cuda.device_array(2, np.int64)  # steps completed; a weight not finite
        self.finite = True
        self.blocks = None  # computed at the first launch, from its arguments

    def run(self, order, first_step, n_steps, lr, costs, errors, t0=0):
        """Run steps ``first_step .. first_step + n_steps - 1`` of this epoch's
        ``order``; write each step's cost and error; return steps completed."""
        if order is not self.order_host:  # a new epoch: a new shuffle
            self.order_host, self.order = order, cuda.to_device(order)
        if self.results.shape[1] < n_steps:
            self.results = cuda.device_array((2, n_steps), np.float64)
        args = (self.params, self.model, self.work, self.first,
                Data(self.X, self.labels, self.targets, self.weights),
                Steps(self.order, first_step, n_steps, self.batch_size, lr, *self.rule, t0),
                Out(self.results[0, :n_steps], self.results[1, :n_steps]), self.done)
        if self.blocks is None:
            self.blocks = grid(kernels.train_steps, self.items, args)
        kernels.train_steps[self.blocks, kernels.THREADS](*args)
        results = self.results.copy_to_host()
        costs[:] = results[0, :n_steps]
        errors[:] = results[1, :n_steps]
        done, not_finite = self.done.copy_to_host()
        self.finite = not not_finite
        return int(done)

    def weights_finite(self):
        """Whether every weight and bias was finite after the last ``run``
        that completed all its steps (its kernel checked them)."""
        return self.finite

    def snapshot(self):
        """A device copy of everything a step changes."""
        copies = []
        for device, _ in self._pairs():
            copy = cuda.device_array_like(device)
            copy.copy_to_device(device)
            copies.append(copy)
        return copies

    def restore(self, saved):
        """Put a ``snapshot`` back on the device (``sync`` brings it to the host)."""
        for (device, _), kept in zip(self._pairs(), saved):
            device.copy_to_device(kept)

    def sync(self):
        """Copy the device weights and optimizer state back into the host arrays."""
        for device, host in self._pairs():
            device.copy_to_host(host)

    def push(self):
        """Copy the host weights and optimizer state to the device (after a restore)."""
        for device, host in self._pairs():
            device.copy_to_device(host)

    def _pairs(self):
        return [(d, h) for dpart, hpart in zip(self.params, self.host)
                for d, h in zip(dpart, hpart) if h.size]
