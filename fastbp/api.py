"""``fastbp.backprop``: Algorithm 6.1 on one batch, through a chosen device."""

from . import backends
from . import validation as check
from .network import Network


def backprop(net, X, y, device="cpu"):
    """Cost J and gradients of ``net`` on the batch (X, y) (Algorithm 6.1).

    Parameters
    ----------
    net : Network
    X : (n_b, p) inputs; y : (n_b,) labels or (n_b,) / (n_b, M) targets.
    device : "cpu" (Numba kernels) | "cuda" | "numpy" (the reference) | "auto"

    Returns
    -------
    J : float; grads : list of (dW, db) per layer, shaped like ``net.layers``.
    """
    if not isinstance(net, Network):
        raise ValueError(f"net must be a fastbp.Network; got {type(net).__name__}")
    device = backends.resolve_device(device)
    X = check.features("X", X, net.n_inputs, net.dtype)
    y = net.check_targets("y", y, X.shape[0])
    Ws, bs = net.checked_layers()
    return backends.backprop(net, Ws, bs, X, y, device)
