"""Seconds per epoch of Example 6.2 (784-200-10 ReLU, lr 0.5, batch 100,
float32) on the GPU machine: fastbp "cuda" (at a few block sizes) against
fastbp "cpu" and, where importable with a GPU, PyTorch (eager) and JAX (the
whole epoch in one jit). Prints a markdown table last.

    python scripts/bench_cuda.py [--epochs 3] [--threads 128,256,512] [--data-dir DIR]
                                 [--only cuda,cpu,pytorch,jax]

The first epoch of every contender compiles and is not counted; the table
shows the median of the others. Without MNIST (no --data-dir and no
$FASTBP_DATA_DIR) it times random data of MNIST's shape with 81 % zero
pixels, and the test errors mean nothing.
"""

import argparse
import os
import statistics
import time

import numpy as np

import fastbp
from fastbp.kernels import cuda as cuda_kernels
from fastbp.trainer import epoch_order

SIZES = [784, 200, 10]
LR, BATCH, SEED = 0.5, 100, 0


def load(data_dir):
    if data_dir:
        return fastbp.datasets.mnist(data_dir), "MNIST"
    rng = np.random.default_rng(0)
    X = rng.random((70000, 784), dtype=np.float32)
    X[X < 0.81] = 0  # MNIST's share of zero pixels
    y = rng.integers(0, 10, 70000)
    return (X[:60000], y[:60000], X[60000:], y[60000:]), "random data of MNIST's shape"


def fastbp_run(data, epochs, device):
    Xtr, ytr, Xte, yte = data
    net = fastbp.Network(SIZES, seed=SEED)
    hist = fastbp.train(net, Xtr, ytr, lr=LR, batch_size=BATCH, epochs=epochs + 1,
                        eval_every=0, seed=SEED, device=device)
    return hist.epoch_seconds[1:], net.evaluate(Xte, yte)[1]


def torch_run(data, epochs):
    import torch
    if not torch.cuda.is_available():
        return None
    Xtr, ytr, Xte, yte = (torch.from_numpy(np.asarray(a)).cuda() for a in data)
    net = fastbp.Network(SIZES, seed=SEED)
    model = torch.nn.Sequential(torch.nn.Linear(784, 200), torch.nn.ReLU(),
                                torch.nn.Linear(200, 10)).cuda()
    with torch.no_grad():
        for layer, (W, b) in zip((model[0], model[2]), net.layers):
            layer.weight.copy_(torch.from_numpy(W))
            layer.bias.copy_(torch.from_numpy(b))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = Xtr.shape[0]
    seconds = []
    for epoch in range(epochs + 1):
        order = torch.from_numpy(epoch_order(SEED, epoch, n)).cuda()
        torch.cuda.synchronize()
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            rows = order[start:start + BATCH]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(Xtr[rows]), ytr[rows]).backward()
            opt.step()
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    with torch.no_grad():
        error = (model(Xte).argmax(1) != yte).float().mean().item()
    return seconds[1:], error


def jax_run(data, epochs):
    import jax
    import jax.numpy as jnp
    if jax.default_backend() != "gpu":
        return None
    Xtr, ytr, Xte, yte = data
    n = Xtr.shape[0]
    steps = n // BATCH

    def cost(params, X, y):
        W0, b0, W1, b1 = params
        Z = jnp.maximum(X @ W0.T + b0, 0) @ W1.T + b1
        return jnp.mean(jax.nn.logsumexp(Z, axis=1) - jnp.take_along_axis(Z, y[:, None], 1)[:, 0])

    def step(params, batch):
        grads = jax.grad(cost)(params, *batch)
        return tuple(p - LR * g for p, g in zip(params, grads)), None

    @jax.jit
    def epoch(params, X, y, order):
        batches = (X[order].reshape(steps, BATCH, -1), y[order].reshape(steps, BATCH))
        return jax.lax.scan(step, params, batches)[0]

    net = fastbp.Network(SIZES, seed=SEED)
    params = tuple(jnp.asarray(a) for W, b in net.layers for a in (W, b))
    Xd, yd = jnp.asarray(Xtr), jnp.asarray(ytr)
    seconds = []
    for e in range(epochs + 1):
        order = jnp.asarray(epoch_order(SEED, e, n)[:steps * BATCH])
        started = time.perf_counter()
        params = jax.block_until_ready(epoch(params, Xd, yd, order))
        seconds.append(time.perf_counter() - started)
    W0, b0, W1, b1 = params
    Z = jnp.maximum(jnp.asarray(Xte) @ W0.T + b0, 0) @ W1.T + b1
    return seconds[1:], float(jnp.mean(Z.argmax(1) != jnp.asarray(yte)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", default="128,256,512")
    parser.add_argument("--data-dir", default=os.environ.get("FASTBP_DATA_DIR"))
    parser.add_argument("--only", default="cuda,cpu,pytorch,jax",
                        help="contenders to time, comma-separated")
    args = parser.parse_args()
    only = set(args.only.split(","))
    unknown = only - {"cuda", "cpu", "pytorch", "jax"}
    if unknown:
        parser.error(f"--only: unknown contender(s) {', '.join(sorted(unknown))}; "
                     "choose from cuda, cpu, pytorch, jax")
    data, what = load(args.data_dir)
    rows = []

    def record(name, run):
        try:
            result = run()
        except ImportError as exc:
            print(f"{name}: skipped ({exc})", flush=True)
            return
        except Exception as exc:  # report and go on to the next contender
            print(f"{name}: FAILED {type(exc).__name__}: {exc}", flush=True)
            rows.append((name, "failed", "-"))
            return
        if result is None:
            print(f"{name}: skipped (no GPU backend)", flush=True)
            return
        seconds, error = result
        rows.append((name, f"{statistics.median(seconds):.4f}", f"{100 * error:.2f} %"))
        print(f"{name}: epochs {[round(s, 4) for s in seconds]}, test error {error:.4f}",
              flush=True)

    for threads in [int(t) for t in args.threads.split(",")] if "cuda" in only else []:
        cuda_kernels.THREADS = threads
        record(f"fastbp cuda, {threads} threads/block",
               lambda: fastbp_run(data, args.epochs, "cuda"))
    cuda_kernels.THREADS = 128
    if "cpu" in only:
        record("fastbp cpu", lambda: fastbp_run(data, args.epochs, "cpu"))
    if "pytorch" in only:
        record("PyTorch eager (cuda)", lambda: torch_run(data, args.epochs))
    if "jax" in only:
        record("JAX jit per epoch (gpu)", lambda: jax_run(data, args.epochs))

    print(f"\nSeconds per epoch, Example 6.2 on {what}, median of {args.epochs} epochs "
          f"after a warm-up epoch; test error after {args.epochs + 1} epochs.\n")
    print("| contender | s / epoch | test error |")
    print("|---|---|---|")
    for name, seconds, error in rows:
        print(f"| {name} | {seconds} | {error} |")


if __name__ == "__main__":
    main()
