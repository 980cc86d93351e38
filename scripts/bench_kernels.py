"""Microbenchmarks: each CPU kernel against its NumPy equivalent.

Shapes: Example 6.2's (n_b 100, 784 -> 200 -> 10) on real MNIST rows when
$FASTBP_DATA_DIR (or --data-dir) has them, else on 81 %-zero random rows,
and two larger dense layers. Every kernel is checked against NumPy first
(the run stops on a mismatch), then timed alternately: median microseconds,
GFLOP/s (of the dense product, so zero-skipping kernels can exceed the
machine's peak) and the ratio NumPy time / kernel time. The two sides run
in two processes, alternating, so their thread pools do not collide.

    python scripts/bench_kernels.py [--repeat 200] [--dtype float32]
"""

import argparse
import multiprocessing
import os
import statistics
import time

import numpy as np

import fastbp
from fastbp import reference
from fastbp.kernels import codes, cpu, cpu_panels, cpu_sparse, cpu_tile_lists
from fastbp.sparse_rows import compressed_rows

RELU = codes.RELU


def inputs(n, P, U, dtype, X=None, seed=0):
    rng = np.random.default_rng(seed)
    if X is None:
        X = rng.normal(size=(n, P))
    W = rng.normal(0, np.sqrt(2 / P), size=(U, P))
    dZ = rng.normal(size=(n, U)) * (rng.random((n, U)) < 0.5)  # ReLU-like zeros
    return (np.ascontiguousarray(X, dtype), W.astype(dtype), np.zeros(U, dtype),
            dZ.astype(dtype))


def cases(n, P, U, X, dtype):
    """(name, flops, kernel call, numpy call, check) for one layer shape."""
    X, W, b, dZ = inputs(n, P, U, dtype, X)
    WT = np.ascontiguousarray(W.T)
    Z, Q = np.empty((n, U), dtype), np.empty((n, U), dtype)
    dW, db = np.zeros_like(W), np.zeros_like(b)
    dQ = np.empty((n, P), dtype)
    side = max(n, P, U)
    idx, val = np.empty((side, side), np.int32), np.empty((side, side), dtype)
    count = np.empty(side, np.int64)
    W1, b1 = W.copy(), b.copy()
    W3 = W.copy()
    WT1 = WT.copy()
    mm = 2 * n * P * U
    # The dense first layer on W^T in panels (train_steps' choice where AVX-512 is).
    WP = np.zeros(cpu_panels.panel_shape(U, P, dtype), dtype)
    cpu_panels.pack_panels(WP, W)
    dZP = np.zeros(cpu_panels.panel_shape(U, n, dtype), dtype)
    # X packed in blocks of columns where its rows alias in L1, as train_steps does.
    XP = np.zeros(cpu_panels.input_blocks_shape(P, n) if cpu_panels.rows_alias(P, dtype)
                  else (0, 0, 0), dtype)
    W4 = W.copy()

    def panel_update():
        cpu_panels.panel_sgd_update(WP, b, dZP, XP, dZ, X, 0.0, n)  # lr 0: weights stay

    def panel_weights():
        cpu_panels.unpack_panels(W4, WP)
        return W4

    def sparse_forward():
        cpu_sparse.nonzero_rows(idx, val, count, X)
        cpu_sparse.sparse_forward(Z, Q, idx, val, count, WT, b, RELU)

    def sparse_update_t():  # first layer on W^T: lists of the input's columns
        cpu_sparse.nonzero_cols(idx, val, count, X)
        cpu_sparse.sparse_sgd_update(WT1, idx, val, count, dZ, 0.0, n)  # lr 0: weights stay

    # The training loop's first layer: the batch read in place from the
    # compressed training rows (here the batch is the whole "training set").
    indptr, indices, values, colcum = compressed_rows(X, U)  # empty unless X is sparse
    listed = indptr.shape[0] == n + 1
    order = np.arange(n)
    WT2 = WT.copy()

    def csr_forward():
        cpu_sparse.csr_forward(Z, Q, indptr, indices, values, order, WT, b, RELU)

    def csr_update():
        cpu_sparse.csr_sgd_update(WT2, idx, val, count, indptr, indices, values, order, dZ, 0.0, n,
                           colcum)

    # Sparse batches on panels: the batch's rows and its tiles' lists, then
    # the tiles over the lists (train_steps' choice where AVX-512 is).
    lists = cpu_tile_lists.skip_lists(P, n)
    Xb = np.empty_like(X)
    if listed:
        cpu_tile_lists.list_rows(Xb, *lists, X, order)
    WP5 = WP.copy()

    def list_rows():
        cpu_tile_lists.list_rows(Xb, *lists, X, order)

    def pixel_lists(pixels, counts):  # each 4-sample block's pixels, one after another
        return np.concatenate([pixels[b, :counts[b]] for b in range(counts.shape[0])])

    def np_pixel_lists():
        nonzero = X[order] != 0
        return np.concatenate([np.flatnonzero(nonzero[i:i + 4].any(axis=0))
                               for i in range(0, n, 4)])

    def listed_update():
        cpu_panels.panel_sgd_update_listed(WP5, b, dZP, dZ, Xb, 0.0, n, lists[2], lists[3])

    def listed_weights():
        cpu_panels.unpack_panels(W4, WP5)
        return W4

    def sparse_update():  # other layers on W: lists of dZ's columns
        cpu_sparse.nonzero_cols(idx, val, count, dZ)
        cpu_sparse.sparse_sgd_update(W1, idx, val, count, X, 0.0, n)

    dZS = np.zeros(cpu_panels.sample_panel_shape(U, n, dtype), dtype)

    def panel_input():  # a hidden layer held in panels (cpu_panels.hidden_layers)
        cpu_panels.pack_dz_by_samples(dZS, dZ, n)
        cpu_panels.panel_backward_input(dQ, dZS, WP, n)

    def sparse_input():
        cpu_sparse.nonzero_rows(idx, val, count, dZ)
        cpu_sparse.sparse_backward_input(dQ, idx, val, count, W)

    def np_forward():
        return np.maximum(X @ W.T + b, 0)

    return [
        ("dense_forward (relu)", mm, lambda: cpu.dense_forward(Z, Q, X, W, b, RELU),
         np_forward, lambda: Q),
        ("panel_forward (relu, 8 x 2 zmm tiles)", mm,
         lambda: cpu_panels.panel_forward(Z, Q, X, WP, b, RELU), np_forward, lambda: Q),
        ("nonzero_rows + sparse_forward", mm, sparse_forward, np_forward, lambda: Q),
        *([("csr_forward (compressed rows)", mm, csr_forward, np_forward, lambda: Q),
           ("list_rows (rows + the tiles' lists)", n * P, list_rows,
            np_pixel_lists, lambda: pixel_lists(lists[0], lists[1])),
           ("panel_forward_listed (zero-skipping tiles)", mm,
            lambda: cpu_panels.panel_forward_listed(Z, Q, Xb, WP, b, RELU, lists[0], lists[1]),
            np_forward, lambda: Q)]
          if listed else []),
        ("dense_backward_weights", mm, lambda: cpu.dense_backward_weights(dW, db, dZ, X),
         lambda: dZ.T @ X / n, lambda: dW),
        ("nonzero_cols(X) + sparse_sgd_update", mm, sparse_update_t,
         lambda: W1 - 0.0 * (dZ.T @ X / n), lambda: WT1.T),
        *([("csr_sgd_update (compressed rows)", mm, csr_update,
            lambda: W1 - 0.0 * (dZ.T @ X / n), lambda: WT2.T)] if listed else []),
        ("nonzero_cols(dZ) + sparse_sgd_update", mm, sparse_update,
         lambda: W1 - 0.0 * (dZ.T @ X / n), lambda: W1),
        ("dense_sgd_update (4 x 4 blocks)", mm, lambda: cpu.dense_sgd_update(W3, dZ, X, 0.0, n),
         lambda: W1 - 0.0 * (dZ.T @ X / n), lambda: W3),
        ("panel_sgd_update (8 x 2 zmm tiles)", mm, panel_update,
         lambda: W1 - 0.0 * (dZ.T @ X / n), panel_weights),
        *([("panel_sgd_update_listed (zero-skipping tiles)", mm, listed_update,
            lambda: W1 - 0.0 * (dZ.T @ X / n), listed_weights)] if listed else []),
        ("dense_backward_input", mm, lambda: cpu.dense_backward_input(dQ, dZ, W),
         lambda: dZ @ W, lambda: dQ),
        ("nonzero_rows + sparse_backward_input", mm, sparse_input, lambda: dZ @ W,
         lambda: dQ),
        ("pack_dz_by_samples + panel_backward_input", mm, panel_input, lambda: dZ @ W,
         lambda: dQ),
        ("activation_backward (relu)", n * U,
         lambda: cpu.activation_backward(Z, dZ, Q, Q, RELU),
         lambda: dZ * reference.activation_derivative(Q, "relu"), lambda: Z),
        ("sgd_update", 2 * P * U, lambda: cpu.sgd_update(W1, b1, dW, db, 0.0),
         lambda: W1 - 0.0 * dW, lambda: W1),
    ]


def loss_cases(n, M, dtype, H=200):
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(n, M)).astype(dtype) * 3
    y = rng.integers(0, M, n)
    dZ, row_loss = np.empty_like(Z), np.empty(n, dtype)
    # The fused last layer: its forward from (n, H) ReLU outputs, the loss
    # and dZ, and dZ of the layer below.
    Z_prev = rng.normal(size=(n, H)).astype(dtype)
    Q_prev = np.maximum(Z_prev, 0)
    W = rng.normal(0, 0.1, size=(M, H)).astype(dtype)
    b = np.zeros(M, dtype)
    Z2, dZ2, dZ_prev = np.empty_like(Z), np.empty_like(Z), np.empty_like(Z_prev)
    wrong, targets = np.empty(n, np.int64), np.empty((0, M), dtype)

    def fused():
        cpu.output_layer_rows(Z2, dZ2, row_loss, wrong, dZ_prev, Z_prev, Q_prev, W, b, y,
                              targets, targets[:0, 0], RELU, codes.CROSS_ENTROPY, True)

    def np_fused():
        _, g = reference.cost_and_output_gradient(Q_prev @ W.T + b, y, "cross_entropy")
        return (g @ W) * (Z_prev > 0)

    return [("softmax_cross_entropy", 5 * n * M,
             lambda: cpu.softmax_cross_entropy(dZ, row_loss, Z, y, targets[:0, 0]),
             lambda: reference.cost_and_output_gradient(Z, y, "cross_entropy")[1],
             lambda: dZ),
            ("output_layer_rows (fused last layer)", 4 * n * M * H, fused, np_fused,
             lambda: dZ_prev)]


def shapes(data_dir):
    """(title, n, P, U, X or None) of the layers benchmarked."""
    folder = data_dir or os.environ.get("FASTBP_DATA_DIR")
    if folder:
        X_mnist, label = fastbp.datasets.mnist(folder)[0][:100], "MNIST rows"
    else:
        rng = np.random.default_rng(2)
        X_mnist = rng.random((100, 784)) * (rng.random((100, 784)) < 0.19)
        label = "random rows, 81 % zeros"
    return [(f"n 100, 784 -> 200 ({label})", 100, 784, 200, X_mnist),
            ("n 100, 200 -> 10 (Example 6.2, layer 2)", 100, 200, 10, None),
            ("n 256, 1024 -> 512 (dense)", 256, 1024, 512, None),
            ("n 100, 2048 -> 1024 (dense)", 100, 2048, 1024, None),
            ("n 256, 1024 -> 1024 (dense; 784-1024-1024-10's hidden layer)", 256, 1024, 1024,
             None)]


def all_cases(args):
    """[(title, [(name, flops, kernel, numpy_fn, result), ...]), ...]"""
    dtype = np.dtype(args.dtype)
    out = []
    for title, n, P, U, X in shapes(args.data_dir):
        rows = cases(n, P, U, X, dtype)
        if U == 10:
            rows += loss_cases(n, U, dtype, H=P)
        out.append((title, rows))
    return out


# Idle thread pools spin for a while before they sleep (OpenBLAS ~0.1 s):
# each side waits this long so that the other side's pool is asleep.
SETTLE_SECONDS = 0.3


def worker(side, args, conn):
    """Times one side (0: the kernels, 1: NumPy) in its own process, so that
    Numba's and OpenBLAS's thread pools never spin against each other."""
    table = all_cases(args)
    fns = [row[2 + side] for _, rows in table for row in rows]
    for fn in fns:
        fn()  # compile / warm up
    conn.send("ready")
    while True:
        index = conn.recv()
        if index is None:
            return
        time.sleep(SETTLE_SECONDS)
        conn.send(median_us(fns[index], args.repeat))


def median_us(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    tol = 1e-4 if args.dtype == "float32" else 1e-10

    table = all_cases(args)
    for _, rows in table:  # correctness first: no timing of a wrong kernel
        for name, _, kernel, numpy_fn, result in rows:
            kernel()
            expected, got = numpy_fn(), result()
            err = np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-30)
            if not err <= tol:  # NaN fails too
                raise SystemExit(f"{name}: relative error {err:.2e} > {tol:g}; not timing")
    print(f"all kernels agree with NumPy ({args.dtype}, relative error <= {tol:g})")

    ctx = multiprocessing.get_context("spawn")
    conns = []
    for side in (0, 1):
        parent, child = ctx.Pipe()
        ctx.Process(target=worker, args=(side, args, child), daemon=True).start()
        conns.append(parent)
    for conn in conns:
        conn.recv()
    print(f"{'kernel':40s} {'us':>9s} {'numpy us':>9s} {'GFLOP/s':>8s} {'x numpy':>8s}")
    index = 0
    for title, rows in table:
        print(f"-- {title}, {args.dtype}")
        for name, flops, *_ in rows:
            best = [1e99, 1e99]
            for _ in range(3):  # alternate the two sides, keep each one's best median
                for side, conn in enumerate(conns):
                    conn.send(index)
                    best[side] = min(best[side], conn.recv())
            t_kernel, t_numpy = best
            print(f"{name:40s} {t_kernel:9.1f} {t_numpy:9.1f} {flops / t_kernel / 1e3:8.1f} "
                  f"{t_numpy / t_kernel:8.2f}")
            index += 1
    for conn in conns:
        conn.send(None)


if __name__ == "__main__":
    main()
