"""Forward passes over whole data sets, in chunks, skipping zero inputs.

Prediction and the validation of Example 6.2 (10 000 images every 100
iterations) run through here: when the inputs are sparse (MNIST: 81 % zero
pixels) the first layer uses W^T and the non-zeros of each chunk, as the
training loop does, instead of the dense product; dense inputs take W^T in
panels where the training loop would (``kernels.cpu_panels``).
"""

import numpy as np

from .buffers import batch_buffers
from .kernels import codes, cpu, cpu_panels


def forward_chunks(net, Ws, bs, X, chunk_rows, rows_csr=None):
    """Yield (start, Z) for consecutive chunks of X: Z (rows, M) is Z_L of
    X[start:start + rows]. Z is a view into a reused buffer: copy it or use
    it before the next chunk. Ws, bs : checked layers; X : (n, p) checked;
    chunk_rows bounds work memory (the non-zero lists take rows x p);
    rows_csr : X's ``sparse_rows.compressed_rows``, where the caller keeps
    them for repeated passes (validation), so the first layer reads them in
    place instead of listing each chunk's non-zeros again."""
    n, p = X.shape
    rows = min(chunk_rows, n)
    Zs, Qs, _, _, _ = batch_buffers(net.sizes, rows, net.dtype)
    act = codes.ACTIVATIONS[net.activation]
    L = len(Ws)
    listed = rows_csr is not None and rows_csr[0].shape[0] == n + 1
    sparse = listed or (net.sizes[1] >= cpu.SPARSE_MIN_UNITS
                        and cpu.count_nonzero(X) <= cpu.SPARSE_DENSITY * X.size)
    panels = not sparse and cpu_panels.worthwhile(net.sizes, net.dtype)
    if sparse:
        WT = np.empty((p, net.sizes[1]), net.dtype)
        cpu.transpose(WT, Ws[0])
        if not listed:
            idx, val = np.empty((rows, p), np.int32), np.empty((rows, p), net.dtype)
            count = np.empty(rows, np.int64)
    elif panels:  # evaluating 10 000 dense 784-pixel rows: 0.76-0.97x the time
        WP = np.empty(cpu_panels.panel_shape(net.sizes[1], p, net.dtype), net.dtype)
        cpu.pack_panels(WP, Ws[0])
    for start in range(0, n, rows):
        chunk = X[start:start + rows]
        m = chunk.shape[0]
        if not (sparse or panels):
            cpu.forward_all(Zs, Qs, chunk, Ws, bs, act)
            yield start, Zs[-1][:m]
            continue
        for layer in range(L):
            h = act if layer < L - 1 else codes.IDENTITY
            if layer == 0 and panels:
                cpu.panel_forward(Zs[0][:m], Qs[0][:m], chunk, WP, bs[0], h)
            elif layer == 0 and listed:
                indptr, indices, values, _ = rows_csr
                cpu.csr_forward(Zs[0][:m], Qs[0][:m], indptr, indices, values,
                                np.arange(start, start + m), WT, bs[0], h)
            elif layer == 0:
                cpu.nonzero_rows(idx, val, count, chunk)
                cpu.sparse_forward(Zs[0][:m], Qs[0][:m], idx, val, count, WT, bs[0], h)
            else:
                cpu.dense_forward(Zs[layer][:m], Qs[layer][:m], Qs[layer - 1][:m],
                                  Ws[layer], bs[layer], h)
        yield start, Zs[-1][:m]
