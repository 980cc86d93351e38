"""The update rule for one parameter, as plain Python: both targets compile
this same body (cpu_common.py with @njit, cuda.py as a device function), as
they do activations.py and losses.py, so the CPU and the GPU cannot drift
apart in how a gradient changes a weight.

The rules are scikit-learn's MLP optimizers (``kernels.codes.RULE_*``):

* SGD (6.23): ``w - lr g``;
* momentum: ``m = momentum m - lr g``, then ``w + m``;
* Nesterov: ``m = momentum m - lr g``, then ``w + (momentum m - lr g)``;
* Adam: ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``, then
  ``w - lr_t m / (sqrt(v) + eps)``, lr_t the step's bias-corrected rate.

The kernels that apply plain SGD as they compute a gradient (the fused
first-layer, dense and sparse updates, the bias updates) add each partial
sum of the gradient straight into the weight: for SGD, linear in the
gradient, that is the same rule, and it keeps SGD fast (no gradient is
stored). Every other rule, and any L2 penalty, gets each weight's complete
gradient, with its state (m, v) kept beside the weight.
"""

import math

from .codes import RULE_ADAM, RULE_NESTEROV


def sgd(w, g, lr):
    """One SGD step of one parameter w with gradient g (6.23): w - lr g."""
    return w - lr * g


def step(w, g, m, v, rule, lr, hyper):
    """One step of parameter w with its complete gradient g and its state
    (m, v) under ``rule`` (momentum, Nesterov or Adam; v is Adam's only);
    returns the new (w, m, v). hyper : (momentum, beta1, 1 - beta1, beta2,
    1 - beta2, eps) and lr in w's dtype (1 - beta taken in float64 first, as
    scikit-learn does); for Adam, lr is the step's bias-corrected rate."""
    momentum, beta1, rest1, beta2, rest2, eps = hyper
    if rule == RULE_ADAM:
        m = beta1 * m + rest1 * g
        v = beta2 * v + rest2 * g * g
        return w - lr * m / (math.sqrt(v) + eps), m, v
    m = momentum * m - lr * g
    if rule == RULE_NESTEROV:
        return w + (momentum * m - lr * g), m, v
    return w + m, m, v


def adam_rate(lr, beta1, beta2, t):
    """Adam's bias-corrected rate for update number t (from 1), in float64:
    lr sqrt(1 - beta2^t) / (1 - beta1^t)."""
    return lr * math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)


def squared_norm(Ws):
    """The sum of every W's squares (the L2 penalty's sum), in a fixed order."""
    total = Ws[0].dtype.type(0)
    for l in range(len(Ws)):
        W = Ws[l]
        for j in range(W.shape[0]):
            for k in range(W.shape[1]):
                total += W[j, k] * W[j, k]
    return total
