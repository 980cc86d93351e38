"""Compile every CUDA kernel to PTX on a machine without a GPU.

    pip install "numba-cuda[cu12]"      # NVVM comes with the toolkit wheels
    python scripts/cuda_ptx_check.py [--cc 9.0]

Numba's simulator (the CUDA tests in CI) runs kernels as Python, so it cannot
show that numba-cuda compiles them; this does, for float32 and float64, at
the argument types fastbp launches them with. Where the toolkit wheels hold
ptxas, it also prints train_steps' registers per thread and spills, which
decide how many blocks fit on a multiprocessor (see TRAIN_STEPS_REGISTERS in
kernels/cuda.py). Exit status 1 if any kernel fails to compile.
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
from numba import cuda, typeof

import numba.cuda.dispatcher as cuda_dispatcher

from fastbp.kernels.arguments import CudaFirstLayer, CudaWork, Data, Model, Out, Params, Steps


def pretend_device(cc):
    """numba-cuda compiles a device function called by a kernel for the
    current device's compute capability, which needs a GPU; answer for one.
    (An internal name of numba-cuda 0.30: stop with a clear message if gone.)"""
    if not hasattr(cuda_dispatcher, "get_current_device"):
        sys.exit("cuda_ptx_check.py: this numba-cuda has no dispatcher.get_current_device; "
                 "the check needs updating")

    class Device:
        compute_capability = cc

    cuda_dispatcher.get_current_device = lambda: Device()


def kernel_args(dt):
    """{kernel name: one argument tuple} as fastbp launches them (tiny shapes)."""
    n, P, U = 5, 7, 3
    Q_prev, W, b, Z = np.zeros((n, P), dt), np.zeros((U, P), dt), np.zeros(U, dt), np.zeros((n, U), dt)
    labels, cost, row_loss = np.zeros(n, np.int64), np.zeros(1), np.zeros(n, dt)
    sizes = [7, 3, 2]
    Ws = tuple(np.zeros((u, p), dt) for p, u in zip(sizes, sizes[1:]))
    bs = tuple(np.zeros(u, dt) for u in sizes[1:])
    Zs = tuple(np.zeros((n, u), dt) for u in sizes[1:])
    X, T = np.zeros((n, 7), dt), np.zeros((1, 2), dt)
    return {
        "dense_forward": (Z, Z, Q_prev, W, b, 1),
        "activation_backward": (Z, Z, Z, Z, 1),
        "dense_backward_weights": (W, b, Z, Q_prev),
        "dense_backward_input": (Q_prev, Z, W),
        "softmax_cross_entropy": (Z, row_loss, Z, labels, row_loss, cost),
        "squared_error": (Z, row_loss, Z, Z, row_loss, cost),
        "binary_cross_entropy": (Z, row_loss, Z, Z, row_loss, cost),
        "count_misclassified": (Z, labels, np.zeros(1, np.int64)),
        "count_label_misses": (Z, Z, np.zeros(1, np.int64)),
        "sgd_update": (W, b, W, b, 0.3),
        "gather_rows": (Q_prev, Q_prev, labels),
        "forward_all": (Zs, Zs, X, Ws, bs, 1),
        "backprop_all": (Ws, bs, Zs, Zs, Zs, Zs, row_loss, X, labels, T, row_loss, Ws, bs, 1, 1,
                         cost),
        "train_steps": (Params(Ws, bs, Ws, bs, Ws, bs), Model(1, 1),
                        CudaWork(Zs, Zs, Zs, Zs, row_loss, X, labels, T, np.zeros(n + 1, dt),
                                 Ws, bs),
                        CudaFirstLayer(0), Data(np.zeros((20, 7), dt), np.zeros(20, np.int64), T,
                                                np.zeros(20, dt)),
                        Steps(np.arange(20), 0, 4, 5, 0.1, 3, 0.9, 0.9, 0.999, 1e-8, 1e-4, 0),
                        Out(np.zeros(4), np.zeros(4)),
                        np.zeros(2, np.int64)),
    }


def ptxas_report(ptx, cc, max_registers):
    """ptxas -v's register and spill lines for one PTX text, or None without ptxas."""
    found = glob.glob(os.path.join(sys.prefix, "lib", "python*", "site-packages", "nvidia",
                                   "cuda_nvcc", "bin", "ptxas"))
    if not found:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        command = [found[0], "-c", f"-arch=sm_{cc[0]}{cc[1]}", "-v", path,
                   "-o", os.path.join(tmp, "k.cubin")]
        if max_registers:
            command.insert(2, f"--maxrregcount={max_registers}")
        done = subprocess.run(command, capture_output=True, text=True)
    return [line.strip() for line in done.stderr.splitlines()
            if "registers" in line or "spill" in line]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cc", default="9.0", help="compute capability, e.g. 8.0 or 9.0")
    args = parser.parse_args()
    cc = tuple(int(part) for part in args.cc.split("."))
    pretend_device(cc)
    from fastbp.kernels import cuda as kernels

    failed = 0
    for dt in (np.float32, np.float64):
        for name, launch_args in kernel_args(dt).items():
            signature = tuple(typeof(a) for a in launch_args)
            try:
                ptx, _ = cuda.compile_ptx(getattr(kernels, name).py_func, signature, cc=cc)
            except Exception as exc:  # report every kernel, then fail
                failed += 1
                print(f"FAIL {np.dtype(dt).name} {name}: {type(exc).__name__}: {exc}")
                continue
            print(f"ok   {np.dtype(dt).name} {name}: {len(ptx)} characters of PTX")
            if name == "train_steps":
                report = ptxas_report(ptx, cc, kernels.TRAIN_STEPS_REGISTERS)
                for line in report or ["(no ptxas in the toolkit wheels: no register report)"]:
                    print(f"       {line}")
    missing = set(kernels.__all__) - set(kernel_args(np.float32))
    if missing:
        failed += 1
        print(f"FAIL no argument types here for: {', '.join(sorted(missing))}")
    print("all CUDA kernels compile" if not failed else f"{failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
