"""The one place that decides how the first layer runs: its plan.

The first layer is most of the work, and it can run on several layouts
(``kernels.codes.FIRST_*``): W in 4 x 4 register blocks, W^T in panels for
512-bit tiles, W^T over compressed rows for sparse batches, panel tiles that
skip the zeros of sparse batches. ``plan`` chooses once per (network, data,
batch size) and builds the data the choice needs; the compiled training loop
and inference both follow its code instead of inferring it again.
"""

from dataclasses import dataclass

import numpy as np

from .kernels import codes, config, cpu, cpu_panels, cpu_sparse
from .sparse_rows import compressed_rows, tiles_pay


def _no_rows(dtype):
    return (np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, dtype),
            np.zeros(0, np.int64))


@dataclass(frozen=True)
class Plan:
    """code : a ``kernels.codes.FIRST_*`` code; rows_csr : (indptr, indices,
    values, colcum), X's compressed rows where the code runs sparse batches
    over them, else four empty arrays (the zero-skipping tiles,
    FIRST_PANELS_OR_TILES, list each batch from its dense rows)."""

    code: int
    rows_csr: tuple

    @property
    def on_panels(self):
        return self.code in (codes.FIRST_PANELS, codes.FIRST_PANELS_OR_CSR,
                             codes.FIRST_PANELS_OR_TILES)

    @property
    def name(self):
        return next(name for name, code in codes.FIRST_PLANS.items() if code == self.code)


def panels_worthwhile(sizes, dtype):
    """Whether the first layer runs on panels (``cpu_panels.worthwhile``),
    except where it is a narrow output layer, which runs fused with its loss."""
    fused_output = len(sizes) == 2 and sizes[-1] <= cpu.FUSED_OUTPUT_MAX
    return cpu_panels.worthwhile(sizes, dtype) and not fused_output


def plan(sizes, dtype, X, batch_rows, purpose="train"):
    """The first layer's plan for a network of layer ``sizes`` in ``dtype``
    on the checked data X (n, p), in batches (or chunks) of ``batch_rows``.

    purpose : "train" (the compiled loop: the zero-skipping tiles where the
    panels run and X's non-zeros cluster, else compressed rows where X is sparse),
    "repeat" (inference over the same X many times, e.g. validation:
    compressed once) or "once" (one inference pass: sparse X listed chunk by
    chunk, nothing built). Every update rule trains on the same plan: those
    that change every weight apply the rule to every weight inside each
    layout's fused gradient (kernels.cpu.train_steps)."""
    panels = panels_worthwhile(sizes, dtype)
    if purpose == "once":
        sparse = cpu_sparse.count_nonzero(X) <= config.SPARSE_DENSITY * X.size
        if sizes[1] >= config.SPARSE_MIN_UNITS and sparse:
            return Plan(codes.FIRST_WT_LISTS, _no_rows(X.dtype))
        return Plan(codes.FIRST_PANELS if panels else codes.FIRST_W, _no_rows(X.dtype))
    if purpose == "train" and panels and tiles_pay(X, sizes[1], batch_rows):
        return Plan(codes.FIRST_PANELS_OR_TILES, _no_rows(X.dtype))
    rows = compressed_rows(X, sizes[1])
    compressed = rows[0].shape[0] == X.shape[0] + 1
    if purpose == "repeat":
        if compressed:
            return Plan(codes.FIRST_W_OR_CSR, rows)
        return Plan(codes.FIRST_PANELS if panels else codes.FIRST_W, rows)
    if not panels:
        return Plan(codes.FIRST_W_OR_CSR if compressed else codes.FIRST_W, rows)
    return Plan(codes.FIRST_PANELS_OR_CSR if compressed else codes.FIRST_PANELS, rows)


def holds(plan, X):
    """Whether ``plan``'s compressed rows are exactly X's: one pass over X
    (partial_fit passes the same X each epoch) instead of compressing it
    again (about 50 ms on MNIST), and X is then known finite (the rows were
    made from checked data; NaN or inf where they list a value, or any
    non-zero where they do not, differs). Plans without compressed rows:
    False (``reusable`` says which of them may stay)."""
    indptr, indices, values, _ = plan.rows_csr
    return (indptr.shape[0] == X.shape[0] + 1 and values.dtype == X.dtype
            and indptr[-1] == indices.shape[0]
            and cpu_sparse.rows_differ(X, indptr, indices, values) == 0)


def reusable(plan):
    """Whether ``plan`` may run other data of the same width than it was
    made for, unchecked: the zero-skipping tiles' plan holds nothing of its
    data (each batch is listed, and tested for sparsity, on its own), so it
    stays right for any X; only the choice of it was made on its data, and
    is not made again (a dense X then lists each batch for nothing before
    its dense path: a cost, not an error)."""
    return plan.code == codes.FIRST_PANELS_OR_TILES
