"""The "numpy" device: the reference, Algorithm 6.1 in NumPy, a Python loop
over batches (``fastbp.reference``)."""

import math

import numpy as np

from .. import reference
from ..optimizers import state_sets
from .host import HostStepper, changed_arrays


def backprop(net, Ws, bs, X, y, sample_weight=None):
    """Algorithm 6.1 on one batch with the reference: (J, [(dW, db), ...])."""
    return reference.backprop(list(zip(Ws, bs)), X, y, net.activation, net.loss,
                              sample_weight)


class NumpyStepper(HostStepper):
    """The reference: Algorithm 6.1 in NumPy, a Python loop over batches."""

    def __init__(self, net, Ws, bs, X, y, batch_size, optimizer, state, weights=None):
        self.layers = list(zip(Ws, bs))
        self.Ws, self.bs, self.changed = Ws, bs, changed_arrays(Ws, bs, state)
        self.X, self.y, self.net, self.batch_size = X, y, net, batch_size
        self.weights = weights
        self.optimizer = optimizer
        # reference.new_state's layout: per set, per layer (W state, b state).
        self.state = [list(zip(state[2 * i], state[2 * i + 1]))
                      for i in range(state_sets(optimizer))]

    def run(self, order, first_step, n_steps, lr, costs, errors, t0=0):
        o = self.optimizer
        for s in range(n_steps):
            start = (first_step + s) * self.batch_size
            rows = order[start:start + self.batch_size]
            X, y = self.X[rows], self.y[rows]
            w = None if self.weights is None else self.weights[rows]
            J, grads, Z = reference.backprop_with_output(
                self.layers, X, y, self.net.activation, self.net.loss, w)
            if o.alpha:
                n_b = X.shape[0] if w is None or not w.any() else float(np.sum(w, dtype=float))
                J += reference.penalty(self.layers, o.alpha, n_b)
                grads = reference.penalized(self.layers, grads, o.alpha, n_b)
            costs[s] = J
            errors[s] = reference.error_rate(Z, y, self.net.loss)
            if not math.isfinite(J):
                return s
            reference.optimizer_step(self.layers, grads, self.state, o.rule, lr, o.momentum,
                                     getattr(o, "beta1", 0.9), getattr(o, "beta2", 0.999),
                                     getattr(o, "eps", 1e-8), t0 + s + 1)
        return n_steps
