"""GFLOP/s of a hidden layer's three products on panels, over widths and
batches (issue #24's item 3: at least 80 % of the multiply-add ceiling at
batch 64..1024 and widths 256..4096).

    python scripts/sweep_products.py [--widths 256,1024,4096] [--batches 64,256,1024]
                                     [--peak GFLOPS_PER_CORE] [--dtype float32]

Each product is timed alone, as train_steps calls it, on all of Numba's
threads: the forward (``panel_forward``, bias and ReLU in its epilogue),
dQ = dZ W (``pack_dz_by_samples`` then ``panel_backward_input``) and the
update (``panel_sgd_update``: dZ packed, the inputs too where their rows
alias, the biases stepped), a layer of width x width. Median of --reps calls
after a warm-up call; GFLOP/s counts 2 n P U flops per product. --peak is
one core's rate from scripts/fma_peak.py (its "best" for 512-bit vectors
where the panels run); the table then gives each product's share of the
threads' ceiling, threads x peak.
"""

import argparse
import statistics
import time

import numba
import numpy as np

from fastbp.kernels import codes, cpu_panels


def timed(call, reps):
    call()  # compiles or loads, and warms the caches
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def products(n, width, dtype, reps):
    """Seconds per call of the forward, dQ and update at n x width -> width."""
    rng = np.random.default_rng(n + width)
    P = U = width
    W = (rng.normal(size=(U, P)) / np.sqrt(P)).astype(dtype)
    X = np.maximum(rng.normal(size=(n, P)), 0).astype(dtype)
    dZ = (rng.normal(size=(n, U)) * (rng.random((n, U)) < 0.5)).astype(dtype)
    b = np.zeros(U, dtype)
    WP = np.zeros(cpu_panels.panel_shape(U, P, dtype), dtype)
    cpu_panels.pack_panels(WP, W)
    Z, Q, dQ = np.empty((n, U), dtype), np.empty((n, U), dtype), np.empty((n, P), dtype)
    dZS = np.empty(cpu_panels.sample_panel_shape(U, n, dtype), dtype)
    dZP = np.empty((WP.shape[0], n, WP.shape[2]), dtype)
    XP = (np.empty(cpu_panels.input_blocks_shape(P, n), dtype)
          if cpu_panels.rows_alias(P, np.dtype(dtype)) else np.zeros((0, 0, 0), dtype))

    def backward_input():
        cpu_panels.pack_dz_by_samples(dZS, dZ, n)
        cpu_panels.panel_backward_input(dQ, dZS, WP, n)

    return (timed(lambda: cpu_panels.panel_forward(Z, Q, X, WP, b, codes.RELU), reps),
            timed(backward_input, reps),
            timed(lambda: cpu_panels.panel_sgd_update(WP, b, dZP, XP, dZ, X, 0.0, n), reps))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="256,1024,4096")
    parser.add_argument("--batches", default="64,256,1024")
    parser.add_argument("--peak", type=float, default=None,
                        help="one core's GFLOP/s from scripts/fma_peak.py")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--reps", type=int, default=0, help="default: about 0.3 s per product")
    args = parser.parse_args()
    threads = numba.get_num_threads()
    ceiling = args.peak * threads if args.peak else None
    print(f"{args.dtype}, {threads} threads" + (f", ceiling {ceiling:.0f} GFLOP/s" if ceiling
                                                 else ""))
    print("| n | width | forward | dQ (with packing) | update (with packing) |")
    print("|---:|---:|---|---|---|")
    for width in (int(w) for w in args.widths.split(",")):
        for n in (int(b) for b in args.batches.split(",")):
            flops = 2.0 * n * width * width
            reps = args.reps or max(5, min(200, int(0.3 / (flops / 300e9))))
            cells = []
            for seconds in products(n, width, args.dtype, reps):
                rate = flops / seconds / 1e9
                share = f" ({rate / ceiling:.0%})" if ceiling else ""
                cells.append(f"{rate:.0f}{share}")
            print(f"| {n} | {width} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
