"""The "cpu" device: many SGD steps per call of the compiled loop
(``kernels.cpu.train_steps``)."""

import numba
import numpy as np

from .. import first_layer
from ..buffers import (batch_buffers, first_layer_buffers, gradient_buffers, hidden_panel_buffers,
                       list_scratch)
from ..kernels import codes
from ..kernels import cpu as kernels
from ..kernels import cpu_panels, cpu_serial
from ..kernels.config import SERIAL_STEP_MACS
from ..kernels.arguments import CpuWork, Data, Model, Out, Params, Steps
from ..network import forward_macs, split_targets
from ..weights import row_factors
from ..optimizers import kernel_settings, state_sets
from ..threads import ThreadTuner
from .host import HostStepper, changed_arrays

_TUNERS = {}


def backprop(net, Ws, bs, X, y, sample_weight=None):
    """Algorithm 6.1 on one batch with the CPU kernels: (J, [(dW, db), ...])."""
    Zs, Qs, dZs, dQs, row_loss = batch_buffers(net.sizes, X.shape[0], net.dtype)
    dWs, dbs = gradient_buffers(zip(Ws, bs))
    labels, targets = split_targets(net, y)
    J = kernels.backprop_all(dWs, dbs, dZs, dQs, Zs, Qs, row_loss, X, labels, targets,
                             row_factors(sample_weight, net.dtype), Ws, bs,
                             codes.ACTIVATIONS[net.activation], codes.LOSSES[net.loss])
    return float(J), list(zip(dWs, dbs))


class CpuStepper(HostStepper):
    """Runs many SGD iterations per call inside one compiled loop.

    Everything the loop needs for this network and data is built here, once:
    the first layer's plan (``first_layer.plan``, unless one is given) and
    its layouts, and the work buffers; ``run`` then only names the steps.
    """

    def __init__(self, net, Ws, bs, X, y, batch_size, plan, optimizer, state, weights=None):
        rows = min(batch_size, X.shape[0])
        self.plan = plan if plan is not None else first_layer.plan(net.sizes, net.dtype, X, rows)
        self.params = Params(Ws, bs, *state)
        self.Ws, self.bs, self.changed = Ws, bs, changed_arrays(Ws, bs, state)
        self.rule = kernel_settings(optimizer)
        self.model = Model(codes.ACTIVATIONS[net.activation], codes.LOSSES[net.loss])
        Zs, Qs, dZs, dQs, row_loss = batch_buffers(net.sizes, rows, net.dtype)
        labels, targets = split_targets(net, y)
        # Complete gradients only for rules other than plain SGD (which fuses them).
        dWs, dbs = (state[0], state[1]) if optimizer.plain else gradient_buffers(zip(Ws, bs))
        self.work = CpuWork(Zs, Qs, dZs, dQs, row_loss, np.zeros((rows, X.shape[1]), net.dtype),
                            np.zeros(rows, np.int64),
                            np.zeros((rows, targets.shape[1]), net.dtype),
                            np.zeros(rows if weights is not None else 0, net.dtype), dWs, dbs,
                            *list_scratch(net.sizes, rows, net.dtype),
                            *hidden_panel_buffers(
                                cpu_panels.hidden_layers(net.sizes, net.dtype, rows),
                                net.sizes, rows, net.dtype, state_sets(optimizer),
                                self.plan.on_panels))
        self.first = first_layer_buffers(self.plan, net.sizes, rows, net.dtype,
                                         state_sets(optimizer))
        self.data = Data(X, labels, targets,
                         weights if weights is not None else np.zeros(0, net.dtype))
        self.batch_size = batch_size
        # One tuner per network shape for the whole process: repeated train()
        # calls (an epoch each, say) keep what earlier ones measured. And per
        # numba.set_num_threads() setting: the tuner chooses between one
        # thread and the caller's count, never more than the caller set.
        key = (tuple(net.sizes), net.dtype.name, rows, numba.get_num_threads())
        self.threads = _TUNERS.setdefault(key, ThreadTuner())
        # A small step runs on the calling thread, without parallel regions
        # (kernels/cpu_serial.py). Decided by the shape alone, so a run's bits
        # never depend on the thread count or on timing: the two builds round
        # differently (fastmath may reorder a sum), each the same every time.
        self.small = forward_macs(net.sizes, rows) <= SERIAL_STEP_MACS

    def run(self, order, first_step, n_steps, lr, costs, errors, t0=0):
        """Run steps ``first_step .. first_step + n_steps - 1`` of this epoch's
        ``order`` at rate lr, t0 updates done before; write each step's cost
        and error; return steps completed."""
        def part(first, count, train_steps=kernels.train_steps):
            """Steps first .. first + count - 1 of these (the tuner may split them)."""
            steps = Steps(order, first_step + first, count, self.batch_size, lr, *self.rule,
                          t0 + first)
            return train_steps(self.params, self.model, self.work, self.first, self.data, steps,
                               Out(costs[first:], errors[first:]))

        if self.small:
            return part(0, n_steps, cpu_serial.train_steps)
        return self.threads.run(part, n_steps)
