"""Seconds per epoch of plain-SGD training on many network shapes: fastbp
against JAX and PyTorch (issue #24).

Synthetic dense data, one row of the table at a time: X ~ N(0, 1), labels
drawn uniformly for the cross-entropy (softmax) rows, N(0, 1) targets for the
squared-error rows. Every contender starts from the same weights (those of
fastbp.Network(sizes, activation, loss, dtype, seed=0)), trains with the same
learning rate, batch size and shuffles, and runs in its own process (as in
scripts/bench_train.py: no two thread pools spin against each other), one
process per contender for the whole run. Per row, each contender first runs
one untimed round (compiles kernels, traces graphs, lets fastbp's thread tuner
measure), one contender after the other; then every round runs one timed round
of each contender, the order rotated every round.

A round is two epochs, timed whole from NumPy arrays to trained weights, and
reported as wall time / 2:

* fastbp: one fastbp.train(net, X, y, epochs=2, eval_every=0, seed=s) call,
  its set-up (checks, buffers, shuffles) included;
* JAX: the shuffles drawn, X, y and the orders put on the device, and a jitted
  whole-epoch function (lax.scan over the full batches, then the last short
  batch when n_b does not divide n, as fastbp does) called twice;
* PyTorch: the shuffles drawn and a plain loop of torch.optim.SGD steps.

Round k's two epochs (k = 0 the warm-up) are fastbp.train(seed=seed + 1000 k)'s:
epoch e shuffles with fastbp.trainer.epoch_order(seed + 1000 k, e, n), the
others use the same orders. Weights carry on from round to round, so each
contender has run 2 (rounds + 1) epochs of the same SGD at the end; the check
table compares the final weights with fastbp's and gives each contender's
cost on (up to 4096 of) the training samples, in float64. float64 rows agree
to about 1e-14; float32 ones drift apart with the steps (a ReLU that flips in
one run and not in another splits the two paths: gaps of 1e-6 to 1e-1 were
seen after 4-8 epochs, JAX and PyTorch often closer to each other than to
fastbp), so only a float64 run checks that all three train the same network.

The table gives each contender's median over the rounds, and fastbp / JAX as
the ratio of medians and as the median of the ratios within each round; then
the worst ratio, the issue's targets (fastbp / JAX at most 0.5 on its two
smallest rows, at most 1.0 on every row), the CPU model and the thread count.

    python scripts/bench_shapes.py [--rounds 3] [--more] [--rows 0,2,7]
                                   [--only fastbp,jax,pytorch] [--dtype float64]
                                   [--lr 0.01] [--threads N] [--scale 10] [--list]

--rows counts the issue's six rows 0-5, then the --more rows (6 on; --list
shows them all); naming a --more row runs it without --more. --dtype float64
runs every row in float64 but those that name their own dtype. --lr replaces
every row's own rate (0.01 on every row now: none diverges in 8 epochs).
--threads N (default: every core this process may use) pins every contender to
N cores and gives Numba (fastbp's tuner then picks 1 or N threads per chunk),
PyTorch and XLA that many threads. --scale S divides every row's sample count
by S (at least one batch), for short checks; the tables' numbers are for S = 1.
"""

import argparse
import multiprocessing
import os
import platform
import statistics
import time
from dataclasses import dataclass

import numpy as np

import fastbp
from fastbp.trainer import epoch_order
from bench_train import SETTLE_SECONDS, torch_network  # (SETTLE: idle pools spin a while)

LR = 0.01  # every row's rate unless the row names its own
CHECK_ROWS = 4096  # training samples the check table's costs are computed on
TARGET_SMALL, TARGET_ALL = 0.5, 1.0  # fastbp / JAX targets of issue #24


@dataclass(frozen=True)
class Row:
    label: str  # the shape, as the table shows it
    sizes: tuple
    activation: str
    loss: str
    batch: int
    samples: int
    dtype: str = None  # None: --dtype's
    lr: float = LR
    small: bool = False  # one of the two smallest rows (target TARGET_SMALL)


def hidden(width, depth):
    return (width,) * depth


# The table, in its order (keep these first: --rows counts them 0-5).
ROWS = [
    Row("20-64-64-2 relu (tabular)", (20, 64, 64, 2), "relu", "cross_entropy", 32, 50_000,
        small=True),
    Row("13-32-1 tanh, squared error (regression)", (13, 32, 1), "tanh", "squared_error", 16,
        50_000, small=True),
    Row("784-1024-1024-10 relu", (784, 1024, 1024, 10), "relu", "cross_entropy", 256, 20_000),
    Row("3072-512-10 relu", (3072, 512, 10), "relu", "cross_entropy", 128, 10_000),
    Row("64-128-128-128-128-10 relu (deep, narrow)", (64, *hidden(128, 4), 10), "relu",
        "cross_entropy", 64, 50_000),
    Row("784-200-10 relu, dense inputs", (784, 200, 10), "relu", "cross_entropy", 1000, 60_000),
]
# --more: the corners (widths 16..4096, depths 1..6, batches 1..2048, float64,
# sigmoid and tanh, several regression outputs).
MORE = [
    Row("10-16-2 sigmoid", (10, 16, 2), "sigmoid", "cross_entropy", 1, 2_000),
    Row("100-4096-10 relu", (100, 4096, 10), "relu", "cross_entropy", 512, 10_000),
    Row("256-256x6-10 tanh", (256, *hidden(256, 6), 10), "tanh", "cross_entropy", 128, 20_000),
    Row("512-2048-10 sigmoid", (512, 2048, 10), "sigmoid", "cross_entropy", 2048, 20_480),
    Row("50-512-512-8 tanh, squared error", (50, 512, 512, 8), "tanh", "squared_error", 32,
        20_000),
    Row("784-200-10 relu, float64", (784, 200, 10), "relu", "cross_entropy", 100, 20_000,
        dtype="float64"),
]
ALL = ROWS + MORE


def row_dtype(row, args):
    return row.dtype or args.dtype


def row_samples(row, args):
    return max(row.batch, row.samples // args.scale)


def row_lr(row, args):
    return row.lr if args.lr is None else args.lr


def make_data(index, row, args):
    """Row ``index``'s (X, y, net): the same in every process (seeded by the row)."""
    dtype, n = row_dtype(row, args), row_samples(row, args)
    rng = np.random.default_rng([args.seed, index])
    X = rng.standard_normal((n, row.sizes[0]), dtype=np.dtype(dtype))
    if row.loss == "cross_entropy":
        y = rng.integers(0, row.sizes[-1], n, dtype=np.int64)
    else:
        y = rng.standard_normal((n, row.sizes[-1]), dtype=np.dtype(dtype))
    net = fastbp.Network(list(row.sizes), activation=row.activation, loss=row.loss,
                         dtype=dtype, seed=0)
    return X, y, net


def round_orders(seed, k, n):
    """Round k's two epochs' shuffles: fastbp.train(seed=seed + 1000 k)'s."""
    return [epoch_order(seed + 1000 * k, epoch, n) for epoch in (0, 1)]


class FastBP:
    name = "fastbp"

    def __init__(self, threads):
        self.version = fastbp.__version__

    def setup(self, row, X, y, net, lr, seed):
        self.row, self.X, self.y, self.net, self.lr, self.seed = row, X, y, net, lr, seed

    def run_round(self, k):
        start = time.perf_counter()
        fastbp.train(self.net, self.X, self.y, lr=self.lr, batch_size=self.row.batch, epochs=2,
                     eval_every=0, seed=self.seed + 1000 * k, device="cpu")
        return (time.perf_counter() - start) / 2

    def weights(self):
        return [(W.copy(), b.copy()) for W, b in self.net.layers]


class Jax:
    name = "jax"

    def __init__(self, threads):
        import jax
        import jax.numpy as jnp
        self.jax, self.jnp = jax, jnp
        self.version = jax.__version__

    def setup(self, row, X, y, net, lr, seed):
        jax, jnp = self.jax, self.jnp
        jax.config.update("jax_enable_x64", net.dtype == np.float64)
        self.row, self.Xh, self.yh, self.seed = row, X, y, seed
        act = {"relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}[row.activation]

        def cost(params, xb, yb):
            q = xb
            for W, b in params[:-1]:
                q = act(q @ W.T + b)
            W, b = params[-1]
            z = q @ W.T + b
            if row.loss == "cross_entropy":
                return jnp.mean(jax.nn.logsumexp(z, axis=1)
                                - jnp.take_along_axis(z, yb[:, None], axis=1)[:, 0])
            return jnp.mean(jnp.sum((z - yb) ** 2, axis=1))  # (6.19), as fastbp's

        def step(params, X, Y, rows):
            g = jax.grad(cost)(params, X[rows], Y[rows])
            return jax.tree_util.tree_map(lambda p, d: p - lr * d, params, g)

        def epoch(params, X, Y, full, tail):
            params = jax.lax.scan(lambda p, rows: (step(p, X, Y, rows), None), params, full)[0]
            return step(params, X, Y, tail) if tail.shape[0] else params

        self.epoch_fn = jax.jit(epoch)
        self.params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in net.layers]

    def run_round(self, k):
        jnp, B = self.jnp, self.row.batch
        start = time.perf_counter()
        n = len(self.yh)
        X, Y = jnp.asarray(self.Xh), jnp.asarray(self.yh)
        params = self.params
        for order in round_orders(self.seed, k, n):
            cut = n - n % B
            params = self.epoch_fn(params, X, Y, jnp.asarray(order[:cut].reshape(-1, B)),
                                   jnp.asarray(order[cut:]))
        self.params = self.jax.block_until_ready(params)
        return (time.perf_counter() - start) / 2

    def weights(self):
        return [(np.asarray(W), np.asarray(b)) for W, b in self.params]


class Torch:
    name = "pytorch"

    def __init__(self, threads):
        import torch
        self.torch = torch
        torch.set_num_threads(threads)
        self.version = torch.__version__

    def setup(self, row, X, y, net, lr, seed):
        torch = self.torch
        act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}
        self.model = torch_network(torch, net, act[row.activation])
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr)
        if row.loss == "cross_entropy":
            self.loss = torch.nn.functional.cross_entropy
        else:
            self.loss = lambda z, t: ((z - t) ** 2).sum(1).mean()  # (6.19), as fastbp's
        self.row, self.Xh, self.yh, self.seed = row, X, y, seed

    def run_round(self, k):
        torch, B = self.torch, self.row.batch
        start = time.perf_counter()
        X, Y = torch.from_numpy(self.Xh), torch.from_numpy(self.yh)
        for order in round_orders(self.seed, k, len(self.yh)):
            order = torch.from_numpy(order)
            for s in range(0, len(order), B):
                rows = order[s:s + B]
                self.opt.zero_grad(set_to_none=True)
                self.loss(self.model(X[rows]), Y[rows]).backward()
                self.opt.step()
        return (time.perf_counter() - start) / 2

    def weights(self):
        lins = [m for m in self.model if isinstance(m, self.torch.nn.Linear)]
        return [(m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy()) for m in lins]


PEERS = [FastBP, Jax, Torch]
NAMES = {peer.name: label for peer, label in zip(PEERS, ("fastbp", "JAX", "PyTorch"))}


def check_cost(layers, X, y, row):
    """The training cost of ``layers`` on X's first CHECK_ROWS samples, in float64."""
    X, y = X[:CHECK_ROWS], y[:CHECK_ROWS]
    wide = [(W.astype(np.float64), b.astype(np.float64)) for W, b in layers]
    Zs, _ = fastbp.reference.forward(wide, X.astype(np.float64), row.activation)
    target = y if row.loss == "cross_entropy" else y.astype(np.float64)
    return float(fastbp.reference.cost_and_output_gradient(Zs[-1], target, row.loss)[0])


def weight_gap(layers, ours):
    """max |a - b| / max |b| over every weight and bias array, b fastbp's."""
    pairs = [(a, b) for (Wa, ba), (Wb, bb) in zip(layers, ours) for a, b in ((Wa, Wb), (ba, bb))]
    return max(float(np.max(np.abs(a.astype(np.float64) - b)))
               / max(float(np.max(np.abs(b))), 1e-300) for a, b in pairs)


def worker(peer, args, conn):
    """One contender in its own process for the whole run: sets a row up and
    warms it up on ("row", i), times a round on ("round", k), reports its
    weights and cost on "check"."""
    try:
        contender = peer(args.threads)
    except ImportError as exc:
        conn.send(("skip", str(exc)))
        return
    conn.send(("ready", contender.version))
    while True:
        command, value = conn.recv()
        try:
            if command == "row":
                row = ALL[value]
                X, y, net = make_data(value, row, args)
                start_cost = check_cost(net.layers, X, y, row)
                contender.setup(row, X, y, net, row_lr(row, args), args.seed)
                contender.run_round(0)  # untimed: compiles, traces, tunes threads
                conn.send(("ready", start_cost))
            elif command == "round":
                conn.send(("ok", contender.run_round(value)))
            elif command == "check":
                layers = contender.weights()
                conn.send(("ok", (check_cost(layers, X, y, row), layers)))
            else:
                return
        except Exception as exc:  # a diverged or broken row: reported, the next row goes on
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def cpu_model():
    """The CPU's model name, with its family and model numbers: a VM's name
    can be the vendor's alone ("AMD EPYC"), and family 25 (Zen 4, 512-bit
    multiply-adds at half rate) and 26 (Zen 5, full rate) differ in what
    bounds the kernels."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or "unknown CPU"
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return name


def limit_threads(threads):
    """Pin this process (and the workers it spawns) to ``threads`` cores and
    tell Numba, OpenMP, OpenBLAS and XLA, before any worker imports them."""
    cores = sorted(os.sched_getaffinity(0))
    if threads < len(cores):
        os.sched_setaffinity(0, cores[:threads])
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if threads == 1:  # XLA's CPU thread pool otherwise follows the cores it may use
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()


def parse_rows(text):
    try:
        rows = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        rows = None
    if not rows or any(not 0 <= r < len(ALL) for r in rows):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give comma-separated row numbers 0-{len(ALL) - 1} (--list shows them)")
    return list(dict.fromkeys(rows))


def fmt(seconds):
    return "-" if seconds is None else (seconds if isinstance(seconds, str) else f"{seconds:.4f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=parse_rows, default=None,
                        help="comma-separated row numbers (--list shows them)")
    parser.add_argument("--more", action="store_true", help="the issue's rows and more")
    parser.add_argument("--only", default="", help="comma-separated: fastbp,jax,pytorch")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--lr", type=float, default=None,
                        help=f"one rate for every row (default: each row's, {LR} now)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--scale", type=int, default=1,
                        help="divide every row's sample count by this (short checks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    args = parser.parse_args()
    if args.rounds < 1 or args.threads < 1 or args.scale < 1:
        parser.error("--rounds, --threads and --scale must be at least 1")
    wanted = set(filter(None, args.only.split(",")))
    if wanted - set(NAMES):
        parser.error(f"--only: unknown {', '.join(sorted(wanted - set(NAMES)))}; "
                     f"give some of {', '.join(NAMES)}")
    if args.list:
        for i, row in enumerate(ALL):
            print(f"{i:2d} {row.label:44s} n_b {row.batch:5d} {row.samples:7d} samples "
                  f"{row.dtype or 'float32/--dtype':16s} lr {row.lr}"
                  f"{'  (--more)' if i >= len(ROWS) else ''}")
        return
    indices = args.rows or list(range(len(ALL) if args.more else len(ROWS)))

    limit_threads(args.threads)
    print(f"CPU: {cpu_model()}; threads: {args.threads} "
          f"(of {os.cpu_count()} cores; pinned to {sorted(os.sched_getaffinity(0))})")

    ctx = multiprocessing.get_context("spawn")
    workers, versions = {}, {}
    for peer in PEERS:
        if wanted and peer.name not in wanted:
            continue
        parent, child = ctx.Pipe()
        ctx.Process(target=worker, args=(peer, args, child), daemon=True).start()
        child.close()  # a worker that dies then ends recv with EOFError, not a hang
        status, detail = parent.recv()
        if status == "skip":
            print(f"skipping {peer.name}: {detail}")
            continue
        workers[peer.name], versions[peer.name] = parent, detail
    print("contenders: " + ", ".join(f"{NAMES[n]} {v}" for n, v in versions.items())
          + f"; {args.rounds} timed rounds of 2 epochs per row after one untimed round"
          + (f"; samples / {args.scale}" if args.scale > 1 else ""), flush=True)

    results = []  # per row: (index, row, {name: [seconds]}, {name: error}, {name: check})
    for index in indices:
        row = ALL[index]
        times, errors, checks, start_cost = {}, {}, {}, None
        for name, conn in workers.items():  # warm-ups one at a time, as the rounds
            time.sleep(SETTLE_SECONDS)
            conn.send(("row", index))
            status, detail = conn.recv()
            if status == "error":
                errors[name] = detail
            else:
                times[name], start_cost = [], detail
        names = list(times)
        for k in range(1, args.rounds + 1 if names else 1):
            # One round of each per round, the order rotated each round (a fixed
            # order favoured the later slots: scripts/bench_train.py).
            for name in names[k % len(names):] + names[:k % len(names)]:
                if name in errors:
                    continue
                time.sleep(SETTLE_SECONDS)
                workers[name].send(("round", k))
                status, detail = workers[name].recv()
                if status == "error":
                    errors[name] = detail
                else:
                    times[name].append(detail)
        for name, conn in workers.items():
            if name in errors:
                continue
            conn.send(("check", None))
            status, detail = conn.recv()
            if status == "error":
                errors[name] = detail
            else:
                checks[name] = detail
        for name, detail in errors.items():
            print(f"row {index} ({row.label}), {name}: {detail}", flush=True)
        results.append((index, row, times, errors, checks, start_cost))
        print(f"row {index} done: " + ", ".join(
            f"{name} {statistics.median(t):.4f}" for name, t in times.items()
            if t and name not in errors), flush=True)

    # The table.
    def median(times, errors, name):
        if name in errors:
            return "failed"
        return statistics.median(times[name]) if times.get(name) else None

    print(f"\nPlain SGD, seconds per epoch (median of {args.rounds} rounds of a 2-epoch call, "
          f"wall time / 2), {args.threads} threads, CPU: {cpu_model()}"
          + (f", samples / {args.scale} (not the table's sizes)" if args.scale > 1 else ""))
    print("\n| shape | batch | samples | dtype | fastbp | JAX | PyTorch | fastbp/JAX | per round |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    ratios = []  # (ratio of medians, index, row)
    for index, row, times, errors, checks, _ in results:
        cells = {name: median(times, errors, name) for name in NAMES}
        ratio = paired = None
        if all(isinstance(cells[name], float) for name in ("fastbp", "jax")):
            ratio = cells["fastbp"] / cells["jax"]
            paired = statistics.median(a / b for a, b in zip(times["fastbp"], times["jax"]))
            ratios.append((ratio, index, row))
        print(f"| {row.label} | {row.batch} | {row_samples(row, args):,} "
              f"| {row_dtype(row, args)} | " + " | ".join(fmt(cells[name]) for name in NAMES)
              + f" | {'-' if ratio is None else f'{ratio:.2f}'}"
              f" | {'-' if paired is None else f'{paired:.2f}'} |")
    rates = sorted({row_lr(row, args) for _, row, *_ in results})
    print(f"\nlr {', '.join(map(str, rates))}; fastbp/JAX: ratio of medians, and the median "
          "of the ratios within each round (per round)")

    if ratios:
        worst = max(ratios, key=lambda item: item[0])
        print(f"\nworst fastbp/JAX: {worst[0]:.2f} (row {worst[1]}, {worst[2].label})")
        for ratio, index, row in ratios:
            if row.small:
                print(f"target fastbp/JAX <= {TARGET_SMALL} (the issue's two smallest rows): "
                      f"row {index} {row.label}: {ratio:.2f} "
                      f"{'met' if ratio <= TARGET_SMALL else 'MISSED'}")
        over = [(ratio, index) for ratio, index, _ in ratios if ratio > TARGET_ALL]
        print(f"target fastbp/JAX <= {TARGET_ALL} (every row): {len(ratios) - len(over)} of "
              f"{len(ratios)} rows met"
              + (("; missed: " + ", ".join(f"row {i} {r:.2f}" for r, i in over)) if over else ""))

    # Did every contender train the same network? Costs and weights after all rounds.
    print(f"\nCheck: training cost (float64, first {CHECK_ROWS} samples) at the start and "
          f"after {2 * (args.rounds + 1)} epochs each, and max |W - W_fastbp| / max |W_fastbp| "
          "over the layers' weights and biases (float32 ones drift apart with the steps)")
    print("\n| row | cost at start | " + " | ".join(f"cost {NAMES[n]}" for n in NAMES)
          + " | JAX vs fastbp | PyTorch vs fastbp |")
    print("|---|" + "---:|" * (len(NAMES) + 3))
    for index, row, times, errors, checks, start_cost in results:
        cost = [f"{start_cost:.6g}" if start_cost is not None else "-"]
        cost += [f"{checks[n][0]:.6g}" if n in checks else "-" for n in NAMES]
        diffs = [f"{weight_gap(checks[name][1], checks['fastbp'][1]):.1e}"
                 if name in checks and "fastbp" in checks else "-" for name in ("jax", "pytorch")]
        print(f"| {index} {row.label} | " + " | ".join(cost + diffs) + " |")

    for conn in workers.values():
        conn.send(("stop", None))


if __name__ == "__main__":
    main()
