"""On the CPU: where kernels.cpu.train_steps spends its time, by variants
compiled from kernels/cpu.py's own source with one phase's calls removed.

    python scripts/cpu_profile.py [--rounds 5] [--threads 2,1] [--dense] [--only list,output]
                                  [--hidden 200] [--batch 100] [--optimizer sgd|adam]
                                  [--sizes 20-64-64-2]

Example 6.2's shapes (784-200-10 ReLU, batch 100, an epoch in chunks of 50
steps, as fastbp.train runs them; or another hidden width and batch, and
Adam at lr 0.001 with scikit-learn's alpha 1e-4: ``--hidden 100 --batch
200 --optimizer adam`` is scikit-learn's default MLPClassifier) on MNIST from $FASTBP_DATA_DIR (else random data
with MNIST's share of zeros; --dense adds N(0, 0.1^2) noise to every pixel),
through fastbp.backends.cpu.CpuStepper with the variant module in place of
kernels.cpu, at each fixed thread count. Every round runs one epoch of every
variant in turn (this machine's speed drifts within minutes, so variants are
compared within rounds); it prints the median us/step and, per phase, the
median over rounds of (full - variant): that phase's cost inside the loop.
A dropped phase leaves garbage behind (the loop's stop on a non-finite cost
is dropped too), so only the times mean anything; and where a later phase's
path depends on the data, dropping a phase can change it (with --dense, a
dZ left at zero by a dropped forward or output layer sends the first
layer's update down the cheap list path, so those rows count both). Variants compile without
Numba's cache (about half a minute each), so the real kernels' cache is
never touched.

``--sizes`` profiles another ReLU network (e.g. 20-64-64-2 at ``--batch
32``) on dense N(0, 1) inputs and random labels. Where its step is small
enough for the serial build (``config.SERIAL_STEP_MACS``), each variant
runs as its own serial twin (``kernels.cpu_serial``), as fastbp would, and
the thread counts change nothing.
"""

import argparse
import os
import re
import statistics
import time
from types import SimpleNamespace

import numba
import numpy as np

import fastbp
from fastbp import optimizers
from fastbp.backends import cpu as cpu_backend
from fastbp.kernels import cpu as kernels
from fastbp.kernels import cpu_serial
from fastbp.trainer import epoch_order
from kernel_variants import fresh_weights, module_from, variant_source  # scripts/, beside this one

with open(kernels.__file__) as source_file:
    SOURCE = source_file.read()
CHUNK = 50

# (name, call prefixes dropped from train_steps); the sparse first layer's
# calls on panels (where AVX-512 is), then on W^T, then the dense path's
# (which only a --dense run takes).
VARIANTS = [
    ("full", []),
    ("batch rows and tile lists (list_rows)", ["list_rows("]),
    ("first-layer forward (panel_forward_listed)", ["panel_forward_listed("]),
    ("first-layer update (panel_sgd_update_listed)", ["panel_sgd_update_listed("]),
    ("first-layer rule (panel_rule_update_listed)", ["panel_rule_update_listed("]),
    ("first-layer rule, dense batch (panel_rule_update)", ["panel_rule_update("]),
    ("first-layer rule on W^T (csr_rule_update)", ["csr_rule_update("]),
    ("output layer's gradient (dense_backward_weights)", ["dense_backward_weights("]),
    ("output layer's rule (optimizer_update)", ["optimizer_update("]),
    ("first layer's bias rule (bias_rule_update)", ["bias_rule_update("]),
    ("L2 penalty's cost (penalty_norm)", ["penalty_norm("]),
    ("first-layer forward (csr_forward)", ["csr_forward("]),
    ("output layer (output_layer_rows)", ["output_layer_rows("]),
    ("next rows' prefetch", ["prefetch_rows("]),
    ("dense_sgd_update (output layer; + first if dense)", ["dense_sgd_update(Ws[l]"]),
    ("first-layer update (csr_sgd_update)", ["csr_sgd_update("]),
    ("bias updates (layers off panels: the panel updates step theirs)", ["bias_sgd_update("]),
    ("batch gather (gather_rows)", ["gather_rows(Xb"]),
    ("first-layer forward (dense_forward)", ["dense_forward("]),
    ("first-layer forward (panel_forward)", ["panel_forward(Zs[0]"]),
    ("first-layer update (panel_sgd_update)", ["panel_sgd_update(WP,"]),
    ("hidden forward (panel_forward, layers past the first)", ["panel_forward(Zs[l]"]),
    ("hidden dQ (pack_dz_by_samples, panel_backward_input)",
     ["pack_dz_by_samples(", "panel_backward_input("]),
    ("hidden update (panel_sgd_update, layers past the first)", ["panel_sgd_update(WPs[l]"]),
    ("h' of hidden layers (activation_backward)", ["activation_backward("]),
]
# Rebinds the compile options right after train_steps' module imports them:
# a variant compiled with the original's file name must not share its cache.
OPTIONS = re.compile(r"^from \.cpu_common import \([^)]*\bPARALLEL\b[^)]*\bSERIAL\b[^)]*\)$",
                     re.MULTILINE)
UNCACHED = "PARALLEL = dict(PARALLEL, cache=False)\nSERIAL = dict(SERIAL, cache=False)"


class FixedThreads:
    """Stands in for fastbp.threads.ThreadTuner: always ``threads`` threads."""

    def __init__(self, threads):
        self.threads = threads

    def run(self, fn, steps):
        previous = numba.get_num_threads()
        numba.set_num_threads(self.threads)
        try:
            return fn(0, steps)
        finally:
            numba.set_num_threads(previous)


def training_data(dense, sizes, other_shape=False):
    """(X, y): MNIST's training set, or random data of its shape, 81 % zeros;
    for ``other_shape``, 60 000 dense N(0, 1) rows of sizes[0] inputs."""
    data_dir = os.environ.get("FASTBP_DATA_DIR")
    if other_shape:
        rng = np.random.default_rng(0)
        return (rng.normal(size=(60000, sizes[0])).astype(np.float32),
                rng.integers(0, sizes[-1], 60000))
    if data_dir:
        X, y = fastbp.datasets.mnist(data_dir)[:2]
    else:
        rng = np.random.default_rng(0)
        X = rng.random((60000, sizes[0]), dtype=np.float32)
        X[X < 0.81] = 0
        y = rng.integers(0, sizes[-1], X.shape[0])
    if dense:
        X = X + np.random.default_rng(1).normal(0, 0.1, X.shape).astype(X.dtype)
    return X, y


def variant(index, patterns):
    """kernels/cpu.py compiled without the calls ``patterns``, uncached."""
    if not OPTIONS.search(SOURCE):
        raise SystemExit("kernels/cpu.py no longer imports PARALLEL, SERIAL from cpu_common")
    source = OPTIONS.sub(lambda m: m.group(0) + "\n" + UNCACHED, SOURCE)
    return module_from(f"profile{index}", variant_source(source, patterns), kernels)


def rule_of(name):
    """(optimizer, rate): Example 6.2's plain SGD, or scikit-learn's default Adam."""
    if name == "adam":
        return fastbp.Adam(lr=0.001, alpha=1e-4), 0.001
    return fastbp.SGD(lr=0.5), 0.5


def epoch_us_per_step(module, threads, X, y, epoch, args):
    """us per step of one epoch of a fresh 784-hidden-10 net (or --sizes)
    with ``module`` as the CPU kernels, at ``threads`` threads."""
    cpu_backend.kernels = module
    serial = cpu_backend.cpu_serial
    try:
        net, Ws, bs = fresh_weights(args.sizes or [X.shape[1], args.hidden, 10])
        optimizer, lr = rule_of(args.optimizer)
        state = optimizers.state_arrays(optimizer, Ws, bs)
        stepper = cpu_backend.CpuStepper(net, Ws, bs, X, y, args.batch, None, optimizer, state)
        stepper.threads = FixedThreads(threads)
        if stepper.small:  # the variant's serial twin, made once per variant
            if not hasattr(module, "serial_train_steps"):
                module.serial_train_steps = cpu_serial._serial(module.train_steps, {})
            cpu_backend.cpu_serial = SimpleNamespace(train_steps=module.serial_train_steps)
        costs, errors = np.empty(CHUNK), np.empty(CHUNK)
        order = epoch_order(0, epoch, X.shape[0])
        steps = -(-X.shape[0] // args.batch)
        started = time.perf_counter()
        for first in range(0, steps, CHUNK):
            stepper.run(order, first, min(CHUNK, steps - first), lr, costs, errors, first)
        return (time.perf_counter() - started) / steps * 1e6
    finally:
        cpu_backend.kernels = kernels
        cpu_backend.cpu_serial = serial


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", default="2,1", help="thread counts, comma-separated")
    parser.add_argument("--dense", action="store_true", help="every pixel plus N(0, 0.1^2)")
    parser.add_argument("--only", default="", help="variants whose names contain one of "
                        "these words, comma-separated (and full)")
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    parser.add_argument("--sizes", default="", help="another ReLU network, e.g. 20-64-64-2, "
                        "on dense random data (--hidden is then unused)")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split("-")] if args.sizes else None
    words = [w for w in args.only.split(",") if w]
    variants = [(name, patterns) for name, patterns in VARIANTS
                if not patterns or not words or any(w in name for w in words)]
    threads = [int(t) for t in args.threads.split(",")]
    if args.rounds < 1 or any(t < 1 or t > numba.config.NUMBA_NUM_THREADS for t in threads):
        raise SystemExit(f"need --rounds >= 1 and thread counts in 1..{numba.config.NUMBA_NUM_THREADS}")
    X, y = training_data(args.dense, args.sizes or [784, args.hidden, 10], bool(args.sizes))
    modules = []
    for index, (name, patterns) in enumerate(variants):
        started = time.perf_counter()
        module = variant(index, patterns)
        for t in threads:  # compiles, and warms this thread count up
            epoch_us_per_step(module, t, X, y, 0, args)
        modules.append(module)
        print(f"compiled and warmed: {name} ({time.perf_counter() - started:.0f} s)", flush=True)
    times = {(index, t): [] for index in range(len(variants)) for t in threads}
    for r in range(args.rounds):
        for t in threads:
            for index, module in enumerate(modules):
                times[index, t].append(epoch_us_per_step(module, t, X, y, 1 + r, args))
    print(f"\nus/step (median of {args.rounds} rounds); phase = median over rounds of full - variant")
    print(f"{'variant: without':50s}" + "".join(f"{f'{t} thr':>10s}{'phase':>8s}" for t in threads))
    for index, (name, _) in enumerate(variants):
        row = f"{name:50s}"
        for t in threads:
            full, mine = times[0, t], times[index, t]
            row += f"{statistics.median(mine):10.1f}"
            row += f"{statistics.median(a - b for a, b in zip(full, mine)):8.1f}" if index else " " * 8
        print(row)


if __name__ == "__main__":
    main()
