"""Forward passes over whole data sets, in chunks, skipping zero inputs.

Prediction and the validation of Example 6.2 (10 000 images every 100
iterations) run through here: when the inputs are sparse (MNIST: 81 % zero
pixels) the first layer uses W^T and the non-zeros of each chunk, as the
training loop does, instead of the dense product; dense inputs take W^T in
panels where the training loop would (``kernels.cpu_panels``), and so do
the wide hidden layers that it holds in panels (``hidden_layers``), packed
once per pass.
"""

import numpy as np

from . import first_layer
from .buffers import batch_buffers
from .kernels import codes, cpu, cpu_panels, cpu_sparse


def forward_chunks(net, Ws, bs, X, chunk_rows, plan=None):
    """Yield (start, Z) for consecutive chunks of X: Z (rows, M) is Z_L of
    X[start:start + rows]. Z is a view into a reused buffer: copy it or use
    it before the next chunk. Ws, bs : checked layers; X : (n, p) checked;
    chunk_rows bounds work memory (the non-zero lists take rows x p);
    plan : X's ``first_layer.plan``, where the caller keeps one for repeated
    passes (validation: the first layer reads X's compressed rows in place
    instead of listing each chunk's non-zeros again); else one is chosen for
    a single pass."""
    n, p = X.shape
    rows = min(chunk_rows, n)
    if plan is None:
        plan = first_layer.plan(net.sizes, net.dtype, X, rows, purpose="once")
    Zs, Qs, _, _, _ = batch_buffers(net.sizes, rows, net.dtype)
    act = codes.ACTIVATIONS[net.activation]
    L = len(Ws)
    listed = plan.rows_csr[0].shape[0] == n + 1  # the plan's compressed rows, for every chunk
    lists = plan.code == codes.FIRST_WT_LISTS
    panels = not listed and plan.on_panels
    if listed or lists:
        WT = np.empty((p, net.sizes[1]), net.dtype)
        cpu.transpose(WT, Ws[0])
        if lists:
            idx, val = np.empty((rows, p), np.int32), np.empty((rows, p), net.dtype)
            count = np.empty(rows, np.int64)
    elif panels:
        WP = np.empty(cpu_panels.panel_shape(net.sizes[1], p, net.dtype), net.dtype)
        cpu_panels.pack_panels(WP, Ws[0])
    WPs = {}  # the hidden layers on panels
    for layer, held in enumerate(cpu_panels.hidden_layers(net.sizes, net.dtype, rows)):
        if held:
            WPs[layer] = np.empty(cpu_panels.panel_shape(net.sizes[layer + 1], net.sizes[layer],
                                                         net.dtype), net.dtype)
            cpu_panels.pack_panels(WPs[layer], Ws[layer])
    for start in range(0, n, rows):
        chunk = X[start:start + rows]
        m = chunk.shape[0]
        if not (listed or lists or panels or WPs):
            cpu.forward_all(Zs, Qs, chunk, Ws, bs, act)
            yield start, Zs[-1][:m]
            continue
        for layer in range(L):
            h = act if layer < L - 1 else codes.IDENTITY
            if layer == 0 and panels:
                cpu_panels.panel_forward(Zs[0][:m], Qs[0][:m], chunk, WP, bs[0], h)
            elif layer == 0 and listed:
                indptr, indices, values, _ = plan.rows_csr
                cpu_sparse.csr_forward(Zs[0][:m], Qs[0][:m], indptr, indices, values,
                                np.arange(start, start + m), WT, bs[0], h)
            elif layer == 0 and lists:
                cpu_sparse.nonzero_rows(idx, val, count, chunk)
                cpu_sparse.sparse_forward(Zs[0][:m], Qs[0][:m], idx, val, count, WT, bs[0], h)
            elif layer in WPs:
                cpu_panels.panel_forward(Zs[layer][:m], Qs[layer][:m], Qs[layer - 1][:m],
                                         WPs[layer], bs[layer], h)
            else:
                Q_prev = chunk if layer == 0 else Qs[layer - 1][:m]
                cpu.dense_forward(Zs[layer][:m], Qs[layer][:m], Q_prev, Ws[layer], bs[layer], h)
        yield start, Zs[-1][:m]
