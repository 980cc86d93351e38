"""The update rule for one parameter, as plain Python: both targets compile
this same body (cpu_common.py with @njit, cuda.py as a device function), as
they do activations.py and losses.py, so the CPU and the GPU cannot drift
apart in how a gradient changes a weight.

Today's rule is plain SGD (6.23): ``w - lr * g``. The kernels that apply a
gradient as they compute it (the fused first-layer, dense and sparse
updates, the bias updates) add each partial sum of the gradient straight
into the weight: for SGD, whose step is linear in the gradient, that is the
same rule, and it is what keeps SGD bitwise as it was and as fast (no
gradient is stored). A rule with per-parameter state (momentum, Adam: the
optimizers issue) needs the complete gradient of each weight: its kernels
hand that to ``step`` with the state kept beside the weight in every layout
the weight has (W, W^T, panels), and save it in checkpoints.
"""


def sgd(w, g, lr):
    """One SGD step of one parameter w with gradient g (6.23): w - lr g."""
    return w - lr * g
