"""The "numpy" device: the reference, Algorithm 6.1 in NumPy, a Python loop
over batches (``fastbp.reference``)."""

import math

import numpy as np

from .. import reference


def backprop(net, Ws, bs, X, y):
    """Algorithm 6.1 on one batch with the reference: (J, [(dW, db), ...])."""
    return reference.backprop(list(zip(Ws, bs)), X, y, net.activation, net.loss)


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
