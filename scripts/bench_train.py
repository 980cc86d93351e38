"""End-to-end seconds per epoch of Example 6.2 (784-200-10 ReLU, n_b 100).

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
                                  [--optimizer sgd|momentum|adam|all|sgd,adam,...]

--dense adds N(0, 0.1^2) noise to every pixel, so no input is zero.

--optimizer (default sgd, Example 6.2's plain SGD at lr 0.5): momentum is SGD
with momentum 0.9 at lr 0.1, adam is Adam at lr 0.001 (betas 0.9, 0.999, eps
1e-8), both as scikit-learn (and fastbp) define them. PyTorch's SGD momentum is
the same update at a constant rate; its Adam adds eps to sqrt(v / (1 -
beta2^t)), not to sqrt(v), so weights of rarely lit pixels (tiny gradients)
move differently, at the same cost per step. A comma-separated list,
or all, runs every selected contender once per optimizer in one alternating
run (labels gain the optimizer's name), and also prints each optimizer's
fastbp epoch over fastbp's plain SGD epoch: e.g. --optimizer all --only fastbp.

Shuffles: plain SGD calls fastbp.train for one epoch at a time with seed
seed + 1000 e, as this script always has; the other optimizers' state must
outlive an epoch, so fastbp keeps one Trainer(seed=seed), whose epoch e draws
(seed, e). Every contender of one optimizer sees the same shuffles; those of
plain SGD differ from the others'.
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
BATCH = 100
# Every contender's settings of each optimizer (constant rates, no L2 penalty).
OPTIMIZERS = {
    "sgd": {"lr": 0.5},
    "momentum": {"lr": 0.1, "momentum": 0.9},
    "adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
}


def shuffle(seed, epoch, n, optimizer):
    """The benchmark's epoch-e order, the one fastbp draws: with plain SGD,
    fastbp.train(seed=seed + 1000 e)'s single epoch; otherwise epoch e of one
    Trainer(seed=seed)."""
    if optimizer == "sgd":
        return epoch_order(seed + 1000 * epoch, 0, n)
    return epoch_order(seed, epoch, n)


def torch_network(torch, net, activation):
    """A torch.nn.Sequential of Linear layers holding ``net``'s weights (in its
    dtype), the module class ``activation`` between them."""
    layers = []
    for index, (W, b) in enumerate(net.layers):
        lin = torch.nn.Linear(W.shape[1], W.shape[0], dtype=getattr(torch, net.dtype.name))
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if index < len(net.layers) - 1:
            layers.append(activation())
    return torch.nn.Sequential(*layers)


class FastBP:
    name = "fastbp"

    def __init__(self, net, X, y, seed, optimizer, device="cpu"):
        self.net, self.X, self.y, self.seed, self.device = net, X, y, seed, device
        self.epoch = 0
        self.trainer = None  # plain SGD: one train() call per epoch, as before optimizers
        if optimizer != "sgd":
            # One Trainer for the whole run, so that the optimizer's state
            # (velocities, Adam's moments and step count) carries across epochs.
            settings = OPTIMIZERS[optimizer]
            rule = fastbp.Adam(**settings) if optimizer == "adam" else fastbp.SGD(**settings)
            self.trainer = fastbp.Trainer(net, X, y, optimizer=rule, batch_size=BATCH,
                                          eval_every=0, seed=seed, device=device)

    def run_epoch(self):
        if self.trainer is None:
            hist = fastbp.train(self.net, self.X, self.y, lr=OPTIMIZERS["sgd"]["lr"],
                                batch_size=BATCH, epochs=1, eval_every=0,
                                seed=self.seed + 1000 * self.epoch, device=self.device)
        else:
            hist = self.trainer.fit(self.epoch + 1)  # fit's epochs count the whole run
        self.epoch += 1
        return hist.epoch_seconds[-1]

    def predict(self, X):
        return self.net.predict(X)


class NumpyRef(FastBP):
    name = "numpy"

    def __init__(self, net, X, y, seed, optimizer):
        super().__init__(net, X, y, seed, optimizer, device="numpy")


class Torch:
    name = "pytorch"

    def __init__(self, net, X, y, seed, optimizer):
        import torch
        self.torch = torch
        torch.set_num_threads(2)
        self.model = torch_network(torch, net, torch.nn.ReLU)
        s = OPTIMIZERS[optimizer]
        if optimizer == "adam":
            self.opt = torch.optim.Adam(self.model.parameters(), lr=s["lr"],
                                        betas=(s["beta1"], s["beta2"]), eps=s["eps"])
        else:
            self.opt = torch.optim.SGD(self.model.parameters(), lr=s["lr"],
                                       momentum=s.get("momentum", 0))
        self.loss = torch.nn.CrossEntropyLoss()
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)
        self.seed, self.optimizer, self.epoch = seed, optimizer, 0

    def run_epoch(self):
        torch = self.torch
        order = torch.from_numpy(shuffle(self.seed, self.epoch, len(self.y), self.optimizer))
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


def jax_rule(optimizer, jax, jnp):
    """(init(params) -> state, update(params, grads, state) -> (params, state)):
    the optimizer's step written out, as scikit-learn's and fastbp's."""
    s, tree = OPTIMIZERS[optimizer], jax.tree_util.tree_map
    lr = s["lr"]
    if optimizer == "sgd":
        return lambda params: (), lambda params, g, state: (
            tree(lambda p, d: p - lr * d, params, g), ())
    if optimizer == "momentum":
        def update(params, g, v):
            v = tree(lambda v, d: s["momentum"] * v - lr * d, v, g)
            return tree(jnp.add, params, v), v
        return lambda params: tree(jnp.zeros_like, params), update

    b1, b2, eps = s["beta1"], s["beta2"], s["eps"]

    def update(params, g, state):
        t, m, v = state
        t = t + 1
        m = tree(lambda m, d: b1 * m + (1 - b1) * d, m, g)
        v = tree(lambda v, d: b2 * v + (1 - b2) * d * d, v, g)
        rate = lr * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        return tree(lambda p, m, v: p - rate * m / (jnp.sqrt(v) + eps), params, m, v), (t, m, v)

    def init(params):
        zeros = tree(jnp.zeros_like, params)
        return jnp.zeros((), jnp.int32), zeros, zeros
    return init, update


class Jax:
    name = "jax"

    def __init__(self, net, X, y, seed, optimizer):
        import jax
        import jax.numpy as jnp
        self.jax, self.jnp = jax, jnp
        if net.dtype == np.float64:
            jax.config.update("jax_enable_x64", True)
        params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in net.layers]
        init, update = jax_rule(optimizer, jax, jnp)
        self.carry = params, init(params)  # the optimizer's state lives on between epochs
        self.X, self.y = jnp.asarray(X), jnp.asarray(y)
        self.seed, self.optimizer, self.epoch = seed, optimizer, 0

        def cost(params, xb, yb):
            q = xb
            for W, b in params[:-1]:
                q = jax.nn.relu(q @ W.T + b)
            W, b = params[-1]
            z = q @ W.T + b
            return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(
                z, yb[:, None], axis=1)[:, 0])

        def step(carry, rows):
            params, state = carry
            return update(params, jax.grad(cost)(params, self.X[rows], self.y[rows]), state), None

        self.epoch_fn = jax.jit(lambda carry, order: jax.lax.scan(step, carry, order)[0])

    def run_epoch(self):
        n = len(self.y) - len(self.y) % BATCH
        order = self.jnp.asarray(
            shuffle(self.seed, self.epoch, len(self.y), self.optimizer)[:n].reshape(-1, BATCH))
        self.epoch += 1
        start = time.perf_counter()
        self.carry = self.epoch_fn(self.carry, order)
        self.jax.block_until_ready(self.carry)
        return time.perf_counter() - start

    def predict(self, X):
        params, q = self.carry[0], self.jnp.asarray(X)
        for W, b in params[:-1]:
            q = self.jax.nn.relu(q @ W.T + b)
        W, b = params[-1]
        return np.asarray((q @ W.T + b).argmax(1))


class Sklearn:
    name = "scikit-learn"

    def __init__(self, net, X, y, seed, optimizer):
        from sklearn.neural_network import MLPClassifier
        s = OPTIMIZERS[optimizer]
        if optimizer == "adam":
            rule = {"solver": "adam", "beta_1": s["beta1"], "beta_2": s["beta2"],
                    "epsilon": s["eps"]}
        else:
            rule = {"solver": "sgd", "momentum": s.get("momentum", 0),
                    "nesterovs_momentum": False}
        self.model = MLPClassifier(hidden_layer_sizes=tuple(net.sizes[1:-1]),
                                   learning_rate_init=s["lr"], alpha=0, batch_size=BATCH,
                                   shuffle=True, random_state=seed, **rule)
        self.model.partial_fit(X[:BATCH], y[:BATCH], classes=np.arange(net.sizes[-1]))
        self.model.coefs_ = [W.T.copy() for W, _ in net.layers]
        self.model.intercepts_ = [b.copy() for _, b in net.layers]
        # That step's optimizer state (velocities, Adam's moments and step
        # count) came from scikit-learn's own weights: the next partial_fit
        # starts a fresh one, as every other contender's.
        del self.model._optimizer
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


def worker(peer, optimizer, args, conn):
    """One contender in its own process, so that no two thread pools (Numba's,
    PyTorch's OpenMP, XLA's, OpenBLAS's) spin against each other; it runs
    one epoch whenever the parent asks."""
    try:
        Xtr, ytr, Xte, yte = load_data(args)
        contender = peer(fastbp.Network(SIZES, dtype=args.dtype, seed=args.seed), Xtr, ytr,
                         args.seed, optimizer)
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


def optimizer_list(text):
    """--optimizer's value: a name, a comma-separated list of them, or all."""
    names = list(OPTIMIZERS) if text == "all" else list(dict.fromkeys(text.split(",")))
    unknown = [name for name in names if name not in OPTIMIZERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give one or more of {', '.join(OPTIMIZERS)} (comma-separated), or all")
    return names


def describe(optimizer):
    return f"{optimizer} ({', '.join(f'{k} {v}' for k, v in OPTIMIZERS[optimizer].items())})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dense", action="store_true")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--only", default="", help="comma-separated names to run")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimizer", type=optimizer_list, default=["sgd"],
                        help="sgd, momentum, adam, a comma-separated list of them, or all")
    args = parser.parse_args()
    wanted = set(filter(None, args.only.split(",")))
    several = len(args.optimizer) > 1

    def label(name, optimizer):
        """A contender's name in the output: with the optimizer's when several run."""
        return f"{name}-{optimizer}" if several else name

    ctx = multiprocessing.get_context("spawn")
    workers, runs = {}, {}  # label: its pipe; label: (contender's name, optimizer)
    for optimizer in args.optimizer:
        for peer in PEERS:
            if wanted and peer.name not in wanted:
                continue
            parent, child = ctx.Pipe()
            process = ctx.Process(target=worker, args=(peer, optimizer, args, child),
                                  daemon=True)
            process.start()
            child.close()  # a worker that dies then ends recv with EOFError, not a hang
            status, detail = parent.recv()
            if status == "skip":
                print(f"skipping {peer.name}: {detail}")
                continue
            workers[label(peer.name, optimizer)] = parent
            runs[label(peer.name, optimizer)] = peer.name, optimizer

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

    med = {name: statistics.median(t) for name, t in times.items()}

    def ratios(a, b):
        """a's epoch over b's: the ratio of medians, and the median of the
        ratios within each round (the machine's slow and fast moments hit
        both contenders of a round alike)."""
        if b not in times:
            return float("nan"), float("nan")
        return med[a] / med[b], statistics.median(x / y for x, y in zip(times[a], times[b]))

    # Each contender against JAX (or NumPy without JAX) under the same optimizer.
    bases = {o: next((b for b in ("jax", "numpy") if label(b, o) in times), None)
             for o in args.optimizer}
    base = "/".join(sorted(set(filter(None, bases.values())))) or "-"
    variant = "dense (pixels + N(0, 0.1^2))" if args.dense else "MNIST"
    print(f"\nExample 6.2, {variant}, {args.dtype}, {SIZES}, n_b {BATCH}, "
          f"{'; '.join(map(describe, args.optimizer))}; median of {args.rounds} epochs, "
          "alternating in rotated order, one process per contender")
    width = max([14] + [len(name) for name in runs])
    print(f"{'contender':{width}s} {'s/epoch':>8s} {'min':>7s} {'vs ' + base:>9s} "
          f"{'per round':>9s} {'test error':>10s} (after {args.rounds + 1} epochs, one untimed)")
    for name, (_, optimizer) in runs.items():
        ratio, paired = ratios(name, label(bases[optimizer], optimizer))
        print(f"{name:{width}s} {med[name]:8.3f} {min(times[name]):7.3f} {ratio:9.2f} {paired:9.2f} "
              f"{errors[name]:10.2%}")

    # fastbp's epoch over each other contender's under the same optimizer, and
    # over its own plain SGD epoch (what an optimizer's state costs).
    lines = []
    for optimizer in args.optimizer:
        ours = label("fastbp", optimizer)
        others = [label(peer.name, optimizer) for peer in PEERS if peer is not FastBP]
        if optimizer != "sgd" and "sgd" in args.optimizer:
            others.append(label("fastbp", "sgd"))
        lines += [(f"{ours} / {other}", *ratios(ours, other))
                  for other in others if ours in times and other in times]
    if lines:
        width = max([len("ratio of epochs")] + [len(text) for text, _, _ in lines])
        print(f"\n{'ratio of epochs':{width}s} {'medians':>8s} {'per round':>9s}")
        for text, ratio, paired in lines:
            print(f"{text:{width}s} {ratio:8.2f} {paired:9.2f}")
    if "sgd" not in args.optimizer and any(name == "fastbp" for name, _ in runs.values()):
        print("fastbp's epoch over its plain SGD epoch needs both in one run: e.g. "
              f"--optimizer sgd,{','.join(args.optimizer)} --only fastbp (or --optimizer all)")


if __name__ == "__main__":
    main()
