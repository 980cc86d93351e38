"""This CPU's multiply-add ceiling for Numba code, with 256- and 512-bit vectors.

One core runs a tile of 16 vector accumulators (4 rows x 64 float32 with
512-bit vectors, 4 x 32 with 256-bit; a stack buffer LLVM keeps in registers)
over operands that stay in L1, so nothing but the
multiply-adds bounds it: the rate a dense kernel could reach at best. Each
width runs in its own process (Numba fixes its target features per process;
FASTBP_VECTOR_BITS, see kernels/vector_width.py). Prints GFLOP/s per core
(a kernel on n threads compares with n times it) and which registers the
multiply-adds used.

    python scripts/fma_peak.py [--reps N]
"""

import argparse
import os
import re
import subprocess
import sys
import time

ROWS = 4
K = 64  # operand rows: at most 4 x 64 and 64 x 64 floats, 17 KB, in L1


def child(reps):
    import numpy as np
    from fastbp.kernels import vector_width
    from fastbp.kernels.cpu_common import FASTMATH

    # Four vector registers of columns per row: 16 accumulators either way.
    TILE = 64 if vector_width.in_effect() else 32
    CELLS = ROWS * TILE  # frozen into the kernel: the buffer size must be a constant
    from numba import njit
    from numba.np.numpy_support import carray

    import fastbp  # noqa: F401  (applies FASTBP_VECTOR_BITS before anything compiles)
    from fastbp.kernels.cpu_panels import stack_buffer

    @njit(fastmath=FASTMATH)
    def tile(out, X, WT, reps):
        acc = carray(stack_buffer(CELLS, X.dtype), (ROWS, TILE))
        for r in range(ROWS):
            for j in range(TILE):
                acc[r, j] = 0
        for _ in range(reps):
            for k in range(X.shape[1]):
                x0, x1, x2, x3 = X[0, k], X[1, k], X[2, k], X[3, k]
                for j in range(TILE):
                    w = WT[k, j]
                    acc[0, j] += x0 * w
                    acc[1, j] += x1 * w
                    acc[2, j] += x2 * w
                    acc[3, j] += x3 * w
        for r in range(ROWS):
            for j in range(TILE):
                out[r, j] = acc[r, j]

    rng = np.random.default_rng(0)
    X = (rng.random((ROWS, K)) * 1e-3).astype(np.float32)
    WT = (rng.random((K, TILE)) * 1e-3).astype(np.float32)
    out = np.zeros((ROWS, TILE), np.float32)
    tile(out, X, WT, 1)  # compile
    expected = X.astype(np.float64) @ WT.astype(np.float64)
    if not np.allclose(out, expected, rtol=1e-4, atol=0):
        raise SystemExit("fma_peak: the tile's result is wrong")
    asm = next(iter(tile.inspect_asm().values()))
    registers = "".join(sorted(set(re.findall(r"vfmadd\w+\s+[^\n]*?%([xyz])mm", asm))))
    times = []
    for _ in range(7):
        start = time.perf_counter()
        tile(out, X, WT, reps)
        times.append(time.perf_counter() - start)
    flops = 2 * ROWS * TILE * K * reps
    print(vector_width.in_effect(), registers, flops / min(times) / 1e9,
          flops / sorted(times)[3] / 1e9)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.reps)
    print(f"{'FASTBP_VECTOR_BITS':>18}  {'wide':>5}  {'FMA regs':>8}  {'GFLOP/s best':>12}  {'median':>7}")
    for bits in ("256", "512"):
        env = dict(os.environ, FASTBP_VECTOR_BITS=bits)
        done = subprocess.run([sys.executable, __file__, "--child", "--reps", str(args.reps)],
                              env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(done.stderr or done.stdout)
        wide, registers, best, median = done.stdout.split()
        print(f"{bits:>18}  {wide:>5}  {registers:>8}  {float(best):12.1f}  {float(median):7.1f}")
    # The rates above are one core's: a kernel on every core compares with their sum.
    cores = len(os.sched_getaffinity(0))
    print(f"one core each; x {cores} cores: compare a {cores}-thread kernel with {cores} x best")


if __name__ == "__main__":
    main()
