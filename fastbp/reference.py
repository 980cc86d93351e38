"""The NumPy oracle: Algorithm 6.1 of the textbook (Lindholm et al., ch. 6) written plainly.

Every kernel is tested against this module. It favours clarity over speed:
one line per equation, equation numbers in the comments, no in-place tricks.
"""

import math

import numpy as np

from . import checks as check

ACTIVATIONS = ("relu", "sigmoid", "tanh", "identity")
LOSSES = ("cross_entropy", "squared_error", "binary_cross_entropy")


def activation(Z, name):
    """h(Z) element-wise (6.3)."""
    if name == "relu":
        return np.maximum(Z, 0)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-Z))
    if name == "tanh":
        return np.tanh(Z)
    if name == "identity":
        return Z
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def activation_derivative(Z, name):
    """h'(Z) element-wise, as used in (6.27a)."""
    if name == "relu":
        return (Z > 0).astype(Z.dtype)
    if name == "sigmoid":
        s = 1 / (1 + np.exp(-Z))
        return s * (1 - s)
    if name == "tanh":
        return 1 - np.tanh(Z) ** 2
    if name == "identity":
        return np.ones_like(Z)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def forward(layers, X, activation_name):
    """Forward propagation (6.24), batched as in Alg. 6.1 lines 1-6.

    Returns (Zs, Qs): Zs[l] = Q_{l-1} W_l^T + b_l, Qs[0] = X, Qs[l] = h(Zs[l-1]).
    The last Z is the network's output (logits or regression outputs).
    """
    Qs = [X]
    Zs = []
    for index, (W, b) in enumerate(layers):
        Z = Qs[-1] @ W.T + b  # Alg. 6.1 line 4
        Zs.append(Z)
        if index < len(layers) - 1:
            Qs.append(activation(Z, activation_name))  # line 5, not for l = L
    return Zs, Qs


def softmax(Z):
    """softmax (6.15) row-wise, max-shifted so large logits do not overflow."""
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def cost_and_output_gradient(Z, y, loss, sample_weight=None):
    """J and dZ_L for a batch (Alg. 6.1 lines 7-13).

    cross_entropy: y holds integer labels (n,); J = mean(-z_y + log sum exp z)
    (6.20), dZ = softmax(Z) - onehot(y) (6.26b).
    squared_error: y holds targets (n,) or (n, M); J = mean ||y - z||^2 (6.19),
    dZ = -2 (y - Z) (6.26a).
    binary_cross_entropy: y holds targets in [0, 1], (n,) or (n, M), each
    output a logistic unit; J = mean sum_j -y log s(z) - (1 - y) log(1 - s(z))
    with s the sigmoid, dZ = s(Z) - y.

    sample_weight (n,), non-negative: J becomes the weighted mean
    sum_i w_i J_i / sum_i w_i and row i of dZ is scaled by n w_i / sum w, so
    that (6.27c/d)'s 1/n turns the gradient into the weighted mean too
    (scikit-learn's MLP semantics).
    """
    n = Z.shape[0]
    if loss == "cross_entropy":
        m = Z.max(axis=1, keepdims=True)
        log_sum_exp = m[:, 0] + np.log(np.exp(Z - m).sum(axis=1))
        rows = log_sum_exp - Z[np.arange(n), y]  # line 12, per sample
        dZ = softmax(Z)
        dZ[np.arange(n), y] -= 1  # line 13
    elif loss == "squared_error":
        R = np.asarray(y, dtype=Z.dtype).reshape(n, -1) - Z
        rows = np.sum(R * R, axis=1)  # line 9
        dZ = -2 * R  # line 10
    elif loss == "binary_cross_entropy":
        Y = np.asarray(y, dtype=Z.dtype).reshape(n, -1)
        # -log s(z) = log(1 + e^-z) and -log(1 - s(z)) = log(1 + e^z), overflow-free
        rows = np.sum(Y * np.logaddexp(0, -Z) + (1 - Y) * np.logaddexp(0, Z), axis=1)
        dZ = 1 / (1 + np.exp(-Z)) - Y
    else:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if sample_weight is None:
        return np.mean(rows), dZ
    w = np.asarray(sample_weight, dtype=np.float64)
    if not w.any():  # a batch of weight 0 changes nothing
        return 0.0, np.zeros_like(dZ)
    J = np.sum(w * rows) / np.sum(w)
    return J, dZ * (n * w / np.sum(w))[:, None].astype(Z.dtype)


def error_rate(Z, y, loss):
    """The fraction of rows misclassified: argmax against the label
    (cross_entropy), any logistic output on the wrong side of 1/2 against its
    0/1 target (binary_cross_entropy); NaN for squared_error."""
    if loss == "cross_entropy":
        return float(np.mean(Z.argmax(axis=1) != y))
    if loss == "binary_cross_entropy":
        Y = np.asarray(y).reshape(Z.shape[0], -1)
        return float(np.mean(((Z > 0) != (Y > 0.5)).any(axis=1)))
    return math.nan


def backprop(layers, X, y, activation, loss, sample_weight=None):
    """Algorithm 6.1: cost J and gradients of one mini-batch.

    Parameters
    ----------
    layers : list of (W, b), W : (U_l, U_{l-1}), b : (U_l,)
    X : (n_b, p) inputs, one row per sample (6.13)
    y : (n_b,) int labels for cross_entropy; (n_b,) or (n_b, M) targets
        for squared_error and binary_cross_entropy
    activation : "relu" | "sigmoid" | "tanh" | "identity" (hidden layers)
    loss : "cross_entropy" | "squared_error" | "binary_cross_entropy"
    sample_weight : (n_b,) non-negative weights, or None (all 1); see
        ``cost_and_output_gradient``

    Returns
    -------
    J : float, the mean cost over the batch
    grads : list of (dW, db) per layer, shaped like ``layers``

    Raises ValueError naming the argument for names, shapes or labels that do
    not fit (NumPy would wrap a label of -1, or broadcast mismatched targets,
    and return a wrong answer).
    """
    X, y = _checked(layers, X, y, activation, loss)
    if sample_weight is not None:
        sample_weight = check.sample_weight("sample_weight", sample_weight, X.shape[0])
    J, grads, _ = backprop_with_output(layers, X, y, activation, loss, sample_weight)
    return J, grads


def _checked(layers, X, y, activation, loss):
    """(X, y) as arrays once everything fits together, else ValueError."""
    check.choice("activation", activation, ACTIVATIONS)
    check.choice("loss", loss, LOSSES)
    if not layers:
        raise ValueError("layers must hold at least one (W, b) pair")
    width = None
    for index, layer in enumerate(layers):
        W, b = (np.asarray(a) for a in layer)
        if W.ndim != 2 or b.shape != (W.shape[0],):
            raise ValueError(f"layers[{index}] must be (W, b) with W 2-D and b of shape "
                             f"(W.shape[0],); got shapes {W.shape} and {b.shape}")
        if width is not None and W.shape[1] != width:
            raise ValueError(f"layers[{index}] W has {W.shape[1]} columns but the layer "
                             f"below has {width} units")
        width = W.shape[0]
    X = np.asarray(X)
    n_inputs = np.shape(layers[0][0])[1]
    if X.ndim != 2 or X.shape[1] != n_inputs:
        raise ValueError(f"X must be 2-D (n_samples, {n_inputs}); got shape {X.shape}")
    if loss == "cross_entropy":
        return X, check.labels("y", y, X.shape[0], width)
    dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float64
    if loss == "binary_cross_entropy":
        return X, check.binary_targets("y", y, X.shape[0], width, dtype)
    return X, check.targets("y", y, X.shape[0], width, dtype)


def backprop_with_output(layers, X, y, activation, loss, sample_weight=None):
    """``backprop`` that also returns Z_L, the output of the forward pass."""
    act_name = activation
    n = X.shape[0]
    Zs, Qs = forward(layers, X, act_name)
    J, dZ = cost_and_output_gradient(Zs[-1], y, loss, sample_weight)
    grads = [None] * len(layers)
    dQ = None  # dQ of the layer being visited; the layer above sets it
    for index in range(len(layers) - 1, -1, -1):
        W, _ = layers[index]
        if index < len(layers) - 1:
            dZ = dQ * activation_derivative(Zs[index], act_name)  # (6.27a), line 16
        dW = dZ.T @ Qs[index] / n  # (6.27c), line 18
        db = dZ.sum(axis=0) / n  # (6.27d), line 19
        grads[index] = (dW, db)
        if index > 0:
            dQ = dZ @ W  # (6.27b), line 17; never for the input layer
    return float(J), grads, Zs[-1]


def sgd_step(layers, grads, lr):
    """Parameter update (6.23a/b) in place: W -= lr dW, b -= lr db."""
    for (W, b), (dW, db) in zip(layers, grads):
        W -= lr * dW
        b -= lr * db


# --- optimizers, L2 penalty (scikit-learn's MLP semantics) ------------------

def penalty(layers, alpha, n_b):
    """The L2 penalty's cost, alpha / (2 n_b) * sum of every W's squares
    (biases are not penalised), added to J of (6.19)/(6.20). With sample
    weights, n_b is their sum (scikit-learn's sw_sum)."""
    return alpha / (2 * n_b) * sum(float(np.sum(W * W)) for W, _ in layers)


def penalized(layers, grads, alpha, n_b):
    """The penalty's gradient added: dW + alpha W / n_b; db unchanged."""
    return [(dW + alpha * W / n_b, db) for (W, _), (dW, db) in zip(layers, grads)]


def new_state(layers, optimizer):
    """Per-parameter optimizer state, zeros shaped like each (W, b):
    [] for plain SGD, one set (velocities) for momentum, two (first and
    second moments) for Adam."""
    sets = {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2}[optimizer]
    return [[(np.zeros_like(W), np.zeros_like(b)) for W, b in layers] for _ in range(sets)]


def optimizer_step(layers, grads, state, optimizer, lr, momentum=0.9, beta1=0.9,
                   beta2=0.999, eps=1e-8, t=1):
    """One update of every parameter in place, as scikit-learn's
    SGDOptimizer / AdamOptimizer define it (state from ``new_state``, updated
    in place; t: this update's number, from 1, for Adam's bias correction):

    sgd       p -= lr g
    momentum  v = momentum v - lr g;  p += v
    nesterov  v = momentum v - lr g;  p += momentum v - lr g
    adam      m = b1 m + (1 - b1) g;  s = b2 s + (1 - b2) g^2;
              p -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(s) + eps)
    """
    if optimizer == "sgd":
        sgd_step(layers, grads, lr)
        return
    if optimizer == "adam":
        lr_t = lr * np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
    for i, ((W, b), (dW, db)) in enumerate(zip(layers, grads)):
        for p, g, which in ((W, dW, 0), (b, db, 1)):
            if optimizer == "adam":
                m, s = state[0][i][which], state[1][i][which]
                m[...] = beta1 * m + (1 - beta1) * g
                s[...] = beta2 * s + (1 - beta2) * g * g
                p += -lr_t * m / (np.sqrt(s) + eps)
            else:
                v = state[0][i][which]
                v[...] = momentum * v - lr * g
                p += momentum * v - lr * g if optimizer == "nesterov" else v
