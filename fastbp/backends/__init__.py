"""Picks the compute for a device: "cpu" (Numba kernels), "cuda", "numpy".

Each device has its stepper in a module of its own here (``cpu``, ``cuda``,
``numpy``): it runs a number of SGD iterations over a shuffled order and
reports per-iteration cost and error; ``fastbp.trainer`` orchestrates it.
"""

import importlib.util

from .. import checks as check
from ..network import Network
from ..optimizers import SGD, state_arrays

DEVICES = ("auto", "cpu", "cuda", "numpy")


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


def resolve_device(device, names=check.API):
    """Map "auto" to "cuda" when a GPU is usable, else "cpu"; check the rest
    (names: how the message names the device, ``checks.API`` or ``CLI``)."""
    check.choice("device", device, DEVICES)
    if device == "auto":
        return "cuda" if cuda_status()[0] else "cpu"
    if device == "cuda":
        ok, reason = cuda_status()
        if not ok:
            raise RuntimeError(f"{names['device='].format(device)} is unavailable: {reason}. "
                               f"Use {names['fallback']}.")
    return device


def backprop(net, X, y, device="cpu", sample_weight=None):
    """Cost J and gradients of ``net`` on the batch (X, y) (Algorithm 6.1).

    Parameters
    ----------
    net : Network
    X : (n_b, p) inputs; y : (n_b,) labels or (n_b,) / (n_b, M) targets.
    device : "cpu" (Numba kernels) | "cuda" | "numpy" (the reference) | "auto"
    sample_weight : (n_b,) non-negative or None: J and the gradients become
        weighted means (``reference.cost_and_output_gradient``).

    Returns
    -------
    J : float; grads : list of (dW, db) per layer, shaped like ``net.layers``.
    """
    if not isinstance(net, Network):
        raise ValueError(f"net must be a fastbp.Network; got {type(net).__name__}")
    device = resolve_device(device)
    X = check.features("X", X, net.n_inputs, net.dtype)
    y = net.check_targets("y", y, X.shape[0])
    if sample_weight is not None:
        sample_weight = check.sample_weight("sample_weight", sample_weight, X.shape[0])
    Ws, bs = net.checked_layers()
    return _device(device).backprop(net, Ws, bs, X, y, sample_weight)


def make_stepper(device, net, Ws, bs, X, y, batch_size, plan=None, optimizer=None, state=None,
                 weights=None):
    """The object that runs training steps for ``device`` ("cpu", "cuda" or
    "numpy"); plan : the CPU's first-layer plan for X, if already made (else
    made here); optimizer : a fastbp.SGD or Adam (None: plain SGD), with its
    state (mWs, mbs, vWs, vbs) shaped like the parameters, updated in place
    (None: fresh zeros); weights : (n,) sample weights in the network's
    dtype, or None."""
    optimizer = optimizer if optimizer is not None else SGD()
    if state is None:
        state = state_arrays(optimizer, Ws, bs)
    args = (net, Ws, bs, X, y, batch_size)
    if device == "cpu":
        return _device(device).CpuStepper(*args, plan, optimizer, state, weights)
    if device == "cuda":
        return _device(device).CudaStepper(*args, optimizer, state, weights)
    return _device(device).NumpyStepper(*args, optimizer, state, weights)



def _device(device):
    """The module of ``device``: cuda's is imported only when CUDA is usable."""
    return importlib.import_module(f"{__name__}.{device}")


from . import cpu, numpy  # noqa: F401 - importable as backends.cpu; cuda stays lazy
