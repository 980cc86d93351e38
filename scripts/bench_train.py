"""End-to-end seconds per epoch of Example 6.2 (784-200-10 ReLU, lr 0.5, n_b 100).

fastbp against the NumPy reference and, when importable, PyTorch, JAX and
scikit-learn: all start from the same initial weights and see the same
shuffles (scikit-learn shuffles itself), each in its own process, run
alternating (one epoch each per round, the order rotated every round, since
later slots ran faster) after a warm-up that compiles
everything; the median (and minimum) over the rounds is reported, with the
ratio of medians to JAX (or to NumPy without JAX), the median of the
ratios within each round, and the test error each reached.

    python scripts/bench_train.py [--rounds 5] [--dense] [--dtype float32]
                                  [--only fastbp,numpy,jax] [--data-dir DIR]

--dense adds N(0, 0.1^2) noise to every pixel, so no input is zero.
"""

import argparse
import multiprocessing
import statistics
import time

import numpy as np

import fastbp
try:
    from fastbp.trainer import epoch_order
except ImportError:  # a build from before the Trainer (scripts/ab_epochs.py compares builds)
    from fastbp.train import epoch_order

SIZES = [784, 200, 10]
LR, BATCH = 0.5, 100


def shuffle(seed, epoch, n):
    """The benchmark's epoch-e order; fastbp.train(seed=seed + 1000 e) draws
    this very permutation for its single epoch, so every contender agrees."""
    return epoch_order(seed + 1000 * epoch, 0, n)


class FastBP:
    name = "fastbp"

    def __init__(self, net, X, y, seed, device="cpu"):
        self.net, self.X, self.y, self.seed, self.device = net, X, y, seed, device
        self.epoch = 0

    def run_epoch(self):
        hist = fastbp.train(self.net, self.X, self.y, lr=LR, batch_size=BATCH,
                            epochs=1, eval_every=0, seed=self.seed + 1000 * self.epoch,
                            device=self.device)
        self.epoch += 1
        return hist.epoch_seconds[0]

    def predict(self, X):
        return self.net.predict(X)


class NumpyRef(FastBP):
    name = "numpy"

    def __init__(self, net, X, y, seed):
        super().__init__(net, X, y, seed, device="numpy")


class Torch:
    name = "pytorch"

    def __init__(self, net, X, y, seed):
        import torch
        self.torch = torch
        torch.set_num_threads(2)
        dtype = getattr(torch, net.dtype.name)
        layers = []
        for index, (W, b) in enumerate(net.layers):
            lin = torch.nn.Linear(W.shape[1], W.shape[0], dtype=dtype)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(W))
                lin.bias.copy_(torch.from_numpy(b))
            layers.append(lin)
            if index < len(net.layers) - 1:
                layers.append(torch.nn.ReLU())
        self.model = torch.nn.Sequential(*layers)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.loss = torch.nn.CrossEntropyLoss()
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)
        self.seed, self.epoch = seed, 0

    def run_epoch(self):
        torch = self.torch
        order = torch.from_numpy(shuffle(self.seed, self.epoch, len(self.y)))
        self.epoch += 1
        start = time.perf_counter()
        for s in range(0, len(order), BATCH):
            rows = order[s:s + BATCH]
            self.opt.zero_grad(set_to_none=True)
            self.loss(self.model(self.X[rows]), self.y[rows]).backward()
            self.opt.step()
        return time.perf_counter() - start

    def predict(self, X):
        with self.torch.no_grad():
            return self.model(self.torch.from_numpy(X)).argmax(1).numpy()


class Jax:
    name = "jax"

    def __init__(self, net, X, y, seed):
        import jax
        import jax.numpy as jnp
        self.jax, self.jnp = jax, jnp
        if net.dtype == np.float64:
            jax.config.update("jax_enable_x64", True)
        self.params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in net.layers]
        self.X, self.y = jnp.asarray(X), jnp.asarray(y)
        self.seed, self.epoch = seed, 0

        def cost(params, xb, yb):
            q = xb
            for W, b in params[:-1]:
                q = jax.nn.relu(q @ W.T + b)
            W, b = params[-1]
            z = q @ W.T + b
            return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(
                z, yb[:, None], axis=1)[:, 0])

        def step(params, rows):
            g = jax.grad(cost)(params, self.X[rows], self.y[rows])
            return [(W - LR * dW, b - LR * db) for (W, b), (dW, db) in zip(params, g)], None

        self.epoch_fn = jax.jit(lambda params, order: jax.lax.scan(step, params, order)[0])

    def run_epoch(self):
        n = len(self.y) - len(self.y) % BATCH
        order = self.jnp.asarray(
            shuffle(self.seed, self.epoch, len(self.y))[:n].reshape(-1, BATCH))
        self.epoch += 1
        start = time.perf_counter()
        self.params = self.epoch_fn(self.params, order)
        self.jax.block_until_ready(self.params)
        return time.perf_counter() - start

    def predict(self, X):
        q = self.jnp.asarray(X)
        for W, b in self.params[:-1]:
            q = self.jax.nn.relu(q @ W.T + b)
        W, b = self.params[-1]
        return np.asarray((q @ W.T + b).argmax(1))


class Sklearn:
    name = "scikit-learn"

    def __init__(self, net, X, y, seed):
        from sklearn.neural_network import MLPClassifier
        self.model = MLPClassifier(hidden_layer_sizes=tuple(net.sizes[1:-1]), solver="sgd",
                                   learning_rate_init=LR, momentum=0, nesterovs_momentum=False,
                                   alpha=0, batch_size=BATCH, shuffle=True, random_state=seed)
        self.model.partial_fit(X[:BATCH], y[:BATCH], classes=np.arange(net.sizes[-1]))
        self.model.coefs_ = [W.T.copy() for W, _ in net.layers]
        self.model.intercepts_ = [b.copy() for _, b in net.layers]
        self.X, self.y = X, y

    def run_epoch(self):
        start = time.perf_counter()
        self.model.partial_fit(self.X, self.y)
        return time.perf_counter() - start

    def predict(self, X):
        return self.model.predict(X)


PEERS = [FastBP, NumpyRef, Torch, Jax, Sklearn]
# Idle thread pools spin for a while before they sleep: wait this long between
# contenders so that none starts while the previous one's threads still spin.
SETTLE_SECONDS = 0.5


def load_data(args):
    Xtr, ytr, Xte, yte = fastbp.datasets.mnist(args.data_dir)
    if args.dense:
        rng = np.random.default_rng(args.seed)
        Xtr = Xtr + rng.normal(0, 0.1, Xtr.shape).astype(np.float32)
        Xte = Xte + rng.normal(0, 0.1, Xte.shape).astype(np.float32)
    return Xtr.astype(args.dtype), ytr, Xte.astype(args.dtype), yte


def worker(peer, args, conn):
    """One contender in its own process, so that no two thread pools (Numba's,
    PyTorch's OpenMP, XLA's, OpenBLAS's) spin against each other; it runs
    one epoch whenever the parent asks."""
    try:
        Xtr, ytr, Xte, yte = load_data(args)
        contender = peer(fastbp.Network(SIZES, dtype=args.dtype, seed=args.seed), Xtr, ytr,
                         args.seed)
        # One untimed epoch on the real data: compiles kernels and traces graphs
        # for the very shapes timed (JAX compiles per shape; fastbp's thread
        # tuner takes its first measurements).
        contender.run_epoch()
    except ImportError as exc:
        conn.send(("skip", str(exc)))
        return
    conn.send(("ready", None))
    while True:
        command = conn.recv()
        if command == "epoch":
            conn.send(contender.run_epoch())
        elif command == "error":
            conn.send(float(np.mean(contender.predict(Xte) != yte)))
        else:
            return


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dense", action="store_true")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--only", default="", help="comma-separated names to run")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    wanted = set(filter(None, args.only.split(",")))

    ctx = multiprocessing.get_context("spawn")
    workers = {}
    for peer in PEERS:
        if wanted and peer.name not in wanted:
            continue
        parent, child = ctx.Pipe()
        process = ctx.Process(target=worker, args=(peer, args, child), daemon=True)
        process.start()
        status, detail = parent.recv()
        if status == "skip":
            print(f"skipping {peer.name}: {detail}")
            continue
        workers[peer.name] = parent

    times = {name: [] for name in workers}
    names = list(workers)
    for r in range(args.rounds):
        # One epoch of each per round, the order rotated each round: a fixed
        # order favoured the later slots (an A/A run of one contender in two
        # processes gave the second 0.87x the first's time per round).
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(SETTLE_SECONDS)
            workers[name].send("epoch")
            times[name].append(workers[name].recv())
    errors = {}
    for name, conn in workers.items():
        conn.send("error")
        errors[name] = conn.recv()
        conn.send("stop")

    base = "jax" if "jax" in times else "numpy" if "numpy" in times else None
    med = {name: statistics.median(t) for name, t in times.items()}
    variant = "dense (pixels + N(0, 0.1^2))" if args.dense else "MNIST"
    print(f"\nExample 6.2, {variant}, {args.dtype}, {SIZES}, lr {LR}, n_b {BATCH}; "
          f"median of {args.rounds} epochs, alternating in rotated order, one process per "
          "contender")
    print(f"{'contender':14s} {'s/epoch':>8s} {'min':>7s} {'vs ' + (base or '-'):>9s} "
          f"{'per round':>9s} {'test error':>10s} (after {args.rounds + 1} epochs, one untimed)")
    for name in workers:
        ratio = med[name] / med[base] if base else float("nan")
        # The median of the ratios within each round: the machine's slow and
        # fast moments hit both contenders of a round alike.
        paired = (statistics.median(a / b for a, b in zip(times[name], times[base]))
                  if base else float("nan"))
        print(f"{name:14s} {med[name]:8.3f} {min(times[name]):7.3f} {ratio:9.2f} {paired:9.2f} "
              f"{errors[name]:10.2%}")


if __name__ == "__main__":
    main()
