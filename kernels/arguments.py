"""The named structures that ``train_steps`` takes, on both targets.

Numba's ``@njit`` and numba-cuda's ``@cuda.jit`` both accept namedtuples of
arrays, tuples and scalars (numba-cuda flattens any tuple argument), so the
compiled loop's arguments are a few of these instead of dozens of
positional ones; each field is named as in the kernels' docstrings.

The fields every target shares come first; ``Work`` and ``FirstLayer``
hold what each target's loop needs for itself (the CPU's layouts of the
first layer and non-zero lists; the GPU's gradient arrays).
"""

from collections import namedtuple

# The network's parameters, updated in place: Ws[l] (U_l, U_{l-1}), bs[l] (U_l,).
Params = namedtuple("Params", "Ws bs")

# What the network computes: the hidden activation and the loss (kernels.codes).
Model = namedtuple("Model", "act loss")

# The whole training set: X (n, p); labels (n,) int for classification or
# targets (n, M) for regression (the unused one may be empty, or one dummy row
# on a GPU).
Data = namedtuple("Data", "X labels targets")

# Which steps to run: those from ``first_step`` over the shuffled ``order``
# (n,), ``n_steps`` of them, in batches of ``batch_size`` rows, with the
# learning rate ``lr``.
Steps = namedtuple("Steps", "order first_step n_steps batch_size lr")

# Per-step outputs, (n_steps,) each: the mini-batch cost and error rate.
Out = namedtuple("Out", "batch_cost batch_error")

# Work buffers of batch_size rows: Zs, Qs, dZs, dQs per layer, row_loss, the
# gathered batch Xb, yb, Tb; on the CPU flat non-zero lists (idx int32, val,
# count int64), on the GPU the gradients dWs, dbs.
CpuWork = namedtuple("CpuWork", "Zs Qs dZs dQs row_loss Xb yb Tb idx val count")
CudaWork = namedtuple("CudaWork", "Zs Qs dZs dQs row_loss Xb yb Tb dWs dbs")

# How the first layer runs (``plan``, a kernels.codes FIRST_* code, chosen once
# by fastbp.first_layer) and, on the CPU, the layouts and data it needs: W^T
# (p, U_1); W^T and dZ in panels (kernels.cpu_panels); the zero-skipping
# tiles' lists and the training rows' bit masks (kernels.cpu_tile_lists); the
# compressed training rows (indptr, indices, values) and the running sum of
# non-zeros per column (colcum). Parts a plan does not use are empty arrays.
CpuFirstLayer = namedtuple("CpuFirstLayer", "plan WT WP dZP pixels pixel_counts samples "
                           "sample_counts pixel_words block_words indptr indices values colcum")
CudaFirstLayer = namedtuple("CudaFirstLayer", "plan")
