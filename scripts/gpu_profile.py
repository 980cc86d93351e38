"""On a GPU: where kernels.cuda.train_steps spends its time, by variants
compiled from kernels/cuda.py's own source.

    python scripts/gpu_profile.py phases      # us/step with one phase removed
    python scripts/gpu_profile.py registers   # s/epoch by register cap x block size
    python scripts/gpu_profile.py tiles       # s/epoch, shared-memory tiles as set, all, off

Both run Example 6.2's shapes (784-200-10, batch 100, 600 steps in chunks of
50, as fastbp.train runs them; the median after a compiling epoch) through
fastbp.backends.cuda.CudaStepper with the variant module in place of
kernels.cuda. ``registers`` reads MNIST from $FASTBP_DATA_DIR (else random data
with MNIST's share of zeros) and says whether the weights are bitwise those of
the first cap at that block size (they should be: a cap changes no arithmetic).
``phases`` drops the named device-function calls from train_steps (and its
stop on a non-finite cost, so garbage from a dropped phase does not end the
run early): the variants' results are meaningless, only their times are read.
Under NUMBA_ENABLE_CUDASIM=1 both run a tiny net, to check the script itself.
"""

import argparse
import ast
import hashlib
import os
import re
import statistics
import time

import numpy as np

import fastbp
from fastbp.backends import cuda as cuda_backend
from fastbp.backends import make_stepper
from fastbp.kernels import cuda as kernels
from fastbp.trainer import epoch_order
from kernel_variants import fresh_weights, module_from, variant_source  # scripts/, beside this one

SOURCE = open(kernels.__file__).read()
SMALL = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
SIZES = [37, 7, 2] if SMALL else [784, 200, 10]
BATCH, STEPS, CHUNK = (10, 4, 2) if SMALL else (100, 600, 50)


def training_data(use_mnist):
    """(X, y): MNIST's training set, or random data of its shape, 81 % zeros."""
    data_dir = os.environ.get("FASTBP_DATA_DIR")
    if use_mnist and data_dir and not SMALL:
        return fastbp.datasets.mnist(data_dir)[:2]
    n = 4 * BATCH if SMALL else 60000
    rng = np.random.default_rng(0)
    X = rng.random((n, SIZES[0]), dtype=np.float32)
    X[X < 0.81] = 0
    return X, rng.integers(0, SIZES[-1], n)


def weights_digest(weights):
    """A short hash of the weights' bytes: equal digests, bitwise equal weights."""
    return hashlib.sha256(b"".join(a.tobytes() for a in weights)).hexdigest()[:10]


def time_epochs(module, threads, X, y, epochs=3):
    """Train a fresh net for ``epochs`` epochs with ``module`` as the CUDA
    kernels; return (seconds per epoch, the stepper, its weights Ws + bs)."""
    module.THREADS = 8 if SMALL else threads
    cuda_backend.kernels = module
    try:
        net, Ws, bs = fresh_weights(SIZES)
        stepper = make_stepper("cuda", net, Ws, bs, X, y, BATCH)  # plain SGD
        costs, errors = np.empty(CHUNK), np.empty(CHUNK)
        seconds = []
        for epoch in range(epochs):
            order = epoch_order(0, epoch, X.shape[0])
            started = time.perf_counter()
            for first in range(0, STEPS, CHUNK):
                stepper.run(order, first, CHUNK, 0.5, costs, errors)
            seconds.append(time.perf_counter() - started)
        stepper.sync()
        return seconds, stepper, Ws + bs
    finally:
        cuda_backend.kernels = kernels


PHASES = ["_forward_layer(", "_loss_block(", "_weights_layer(", "_input_activation_items(",
          "_rule_items("]
# Not "no gather": its labels would be uninitialised device memory, an index
# out of bounds in the loss, which poisons the CUDA context for what follows.
PHASE_VARIANTS = [
    ("full", [], {}),
    ("no forward layer 0", ["_forward_layer(Zs[0]"], {}),
    ("no forward layer 1", ["_forward_layer(Zs[l]"], {}),
    ("no loss block", ["_loss_block("], {}),
    ("no dW layer 0", ["_weights_layer(dWs[0]"], {}),
    ("no dW layer 1", ["_weights_layer(dWs[l]"], {}),
    ("no dQ/dZ layer 0", ["_input_activation_items("], {}),
    ("no updates", ["_rule_items("], {}),
    ("barriers only", PHASES, {}),
    ("forward layer 0 by _forward_items", [],
     {"_forward_layer(Zs[0]": "_forward_items(Zs[0][:nb], Qs[0][:nb], Xb[:nb], Ws[0], bs[0], "
                              "h, t0, stride)"}),
]


def phases():
    X, y = training_data(use_mnist=False)
    full = ast.unparse(variant_source(SOURCE, [], {}, stop="isfinite(batch_cost[s])"))
    for index, (name, patterns, replace) in enumerate(PHASE_VARIANTS):
        try:
            tree = variant_source(SOURCE, patterns, replace, stop="isfinite(batch_cost[s])")
            if (patterns or replace) and ast.unparse(tree) == full:
                raise ValueError("its patterns match no call of train_steps: rename them")
            module = module_from(f"phases{index}", tree, kernels)
            seconds, _, _ = time_epochs(module, 128, X, y, epochs=1 if SMALL else 3)
            median = statistics.median(seconds[1:] or seconds)
            print(f"{name:36s} {median * 1e6 / STEPS:8.1f} us/step  "
                  f"epochs {[round(s, 4) for s in seconds]}", flush=True)
        except Exception as exc:  # report and go on to the next variant
            print(f"{name:36s} FAILED {type(exc).__name__}: {str(exc)[:300]}", flush=True)


# The register cap reaches train_steps' decorator through _TRAIN_STEPS_OPTIONS
# (made from config.TRAIN_STEPS_REGISTERS when the module runs): a variant
# sets the name again just before.
SETTING = re.compile(r"^_TRAIN_STEPS_OPTIONS = ", re.M)
REGISTER_VARIANTS = [(128, None), (128, 128), (128, 96), (128, 80), (128, 64), (128, 48),
                     (256, None), (256, 64), (64, 64), (64, None)]


def registers():
    if not SETTING.search(SOURCE):
        raise SystemExit("kernels/cuda.py lost its _TRAIN_STEPS_OPTIONS setting")
    X, y = training_data(use_mnist=True)
    first = {}
    for threads, cap in REGISTER_VARIANTS[:2] if SMALL else REGISTER_VARIANTS:
        try:
            capped = SETTING.sub(f"TRAIN_STEPS_REGISTERS = {cap}\n_TRAIN_STEPS_OPTIONS = ",
                                 SOURCE, count=1)
            module = module_from(f"r{cap}", capped, kernels)
            seconds, stepper, weights = time_epochs(module, threads, X, y)
            digest = weights_digest(weights)
            first.setdefault(threads, digest)
            try:
                compiled = next(iter(module.train_steps.overloads.values()))
                info = f"regs {compiled.regs_per_thread} local {compiled.local_mem_per_thread} B"
            except Exception as exc:  # the simulator has no compiled kernels
                info = f"(no register info: {type(exc).__name__})"
            print(f"threads {threads:4d} cap {str(cap):5s} {info} blocks {stepper.blocks}  "
                  f"{statistics.median(seconds[1:]):.4f} s/epoch {[round(s, 4) for s in seconds]} "
                  f"weights {digest} same {digest == first[threads]}", flush=True)
        except Exception as exc:  # report and go on to the next variant
            print(f"threads {threads:4d} cap {cap}: FAILED {type(exc).__name__}: "
                  f"{str(exc)[:300]}", flush=True)


# CUDA_TILE_MIN_UNITS: the module's own (None), 0 (every layer tiled, the
# 10-unit output layer too), or past every width (tiles off).
TILE_VARIANTS = [(threads, units) for threads in (128, 64, 256) for units in (None, 0, 10**9)]


def tiles():
    """The shared-memory tiles (kernels.cuda._forward_smem, _weights_smem)
    against the thread-group dot products and per-thread items they replace
    on the layers at least CUDA_TILE_MIN_UNITS wide: s/epoch at each block
    size, tiles as set, on every layer, and off."""
    X, y = training_data(use_mnist=True)
    for threads, units in TILE_VARIANTS[:2] if SMALL else TILE_VARIANTS:
        label = {None: "set", 0: "all"}.get(units, "off")
        try:
            module = module_from(f"t{threads}{label}", SOURCE, kernels)
            if units is not None:  # read when train_steps compiles, in this fresh module
                module.CUDA_TILE_MIN_UNITS = units
            seconds, stepper, weights = time_epochs(module, threads, X, y)
            print(f"threads {threads:4d} tiles {label:3s} blocks {stepper.blocks}  "
                  f"{statistics.median(seconds[1:] or seconds):.4f} s/epoch "
                  f"{[round(s, 4) for s in seconds]} weights {weights_digest(weights)}",
                  flush=True)
        except Exception as exc:  # report and go on to the next variant
            print(f"threads {threads:4d} tiles {label}: FAILED {type(exc).__name__}: "
                  f"{str(exc)[:300]}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["phases", "registers", "tiles"])
    {"phases": phases, "registers": registers, "tiles": tiles}[parser.parse_args().what]()


if __name__ == "__main__":
    main()
