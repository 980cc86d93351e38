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

# What the loop updates in place: the network's parameters Ws[l] (U_l, U_{l-1}),
# bs[l] (U_l,), and the optimizer's state shaped like them: mWs, mbs (momentum's
# velocities, Adam's first moments) and vWs, vbs (Adam's second moments); a
# rule's unused sets are (0, 0) and (0,) arrays.
Params = namedtuple("Params", "Ws bs mWs mbs vWs vbs")

# What the network computes: the hidden activation and the loss (kernels.codes).
Model = namedtuple("Model", "act loss")

# The whole training set: X (n, p); labels (n,) int for softmax classification
# or targets (n, M) for the other losses (the unused one may be empty, or one
# dummy row on a GPU); weights (n,), each sample's weight, or of another
# length (empty; a one-element dummy on a GPU) when every sample weighs 1.
Data = namedtuple("Data", "X labels targets weights")

# Which steps to run, and how they update: those from ``first_step`` over the
# shuffled ``order`` (n,), ``n_steps`` of them, in batches of ``batch_size``
# rows, with the learning rate ``lr`` under the update ``rule``
# (kernels.codes.RULE_*) and its momentum, beta1, beta2, eps; ``alpha`` the
# L2 penalty on weights; ``t0`` the updates done before (Adam's bias correction).
Steps = namedtuple("Steps", "order first_step n_steps batch_size lr rule momentum beta1 beta2 "
                   "eps alpha t0")

# Per-step outputs, (n_steps,) each: the mini-batch cost and error rate.
Out = namedtuple("Out", "batch_cost batch_error")

# Work buffers of batch_size rows: Zs, Qs, dZs, dQs per layer, row_loss, the
# gathered batch Xb, yb, Tb; wb, the batch's row factors when samples are
# weighted (kernels.cpu.batch_weights; on a GPU batch_size + 1 entries, the
# last the penalty's divisor); the gradients dWs, dbs (on the CPU used only by
# rules other than plain SGD: (0, 0) and (0,) arrays otherwise); on the CPU
# flat non-zero lists (idx int32, val, count int64); per layer, on the CPU, W
# and the rule's state (m, v; (0, 0, 0) where the rule has none) in panels
# while a chunk runs, and dZ in panels of units and of samples, for the
# hidden layers that kernels.cpu_panels.hidden_layers holds there ((0, 0, 0)
# arrays for the others); and per layer whose update runs on panels, its
# inputs in blocks of columns where their rows alias in L1
# (cpu_panels.pack_inputs; (0, 0, 0) where they do not).
CpuWork = namedtuple("CpuWork", "Zs Qs dZs dQs row_loss Xb yb Tb wb dWs dbs idx val count "
                     "WPs mPs vPs dZPs dZSs XPs")
CudaWork = namedtuple("CudaWork", "Zs Qs dZs dQs row_loss Xb yb Tb wb dWs dbs")

# How the first layer runs (``plan``, a kernels.codes FIRST_* code, chosen once
# by fastbp.first_layer) and, on the CPU, the layouts and data it needs: W^T
# (p, U_1); W^T and dZ in panels (kernels.cpu_panels); the zero-skipping
# tiles' lists and the batch rows' bits they are made from (kernels.cpu_tile_lists); the
# compressed training rows (indptr, indices, values) and the running sum of
# non-zeros per column (colcum); the update rule's state (m, v) laid out as
# W^T (mT, vT) and as panels (mP, vP) for rules that keep it, and gT, scratch
# rows (one per thread) for csr_rule_update's column sums. Parts a plan or a
# rule does not use are empty arrays.
CpuFirstLayer = namedtuple("CpuFirstLayer", "plan WT WP dZP pixels pixel_counts samples "
                           "sample_counts column_bits indptr indices values colcum "
                           "mT vT gT mP vP")
CudaFirstLayer = namedtuple("CudaFirstLayer", "plan")
