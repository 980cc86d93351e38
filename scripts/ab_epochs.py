"""A/B of whole fastbp epochs: two builds or settings, each in its own process,
taking turns to go first in each round (a fixed order favoured the second
slot by about 13 % in an A/A run on the 2-core VM).

    python scripts/ab_epochs.py A B [--rounds 24] [--dense] [--data-dir DIR]
                                    [--hidden 200] [--batch 100] [--optimizer sgd|adam]

A and B are each ``installed`` (the fastbp this Python imports) or a folder
that holds another build's ``fastbp`` package, e.g. one made with
``pip install --no-deps --target /tmp/old <checkout>``, optionally followed by
environment settings: ``installed:FASTBP_VECTOR_BITS=512``. Each process
trains Example 6.2 (784-200-10 ReLU, lr 0.5, n_b 100, float32) from the same
initial weights and shuffles, one untimed epoch first, or another hidden
width, batch, or Adam (lr 0.001, one Trainer whose state carries over:
``--hidden 100 --batch 200 --optimizer adam`` is scikit-learn's default
MLPClassifier on MNIST); it prints each side's
median and fastest epoch, its test error after all rounds, and the median
over rounds of B's epoch time / A's.
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import time


def parse(spec):
    """(folder or None, {variable: value}) of ``installed[:VAR=VALUE,...]``."""
    where, _, settings = spec.partition(":")
    env = dict(item.split("=", 1) for item in settings.split(",") if item)
    return (None if where == "installed" else where), env


def worker(spec, args, conn):
    folder, env = parse(spec)
    os.environ.update(env)  # before fastbp (and Numba) are imported
    if folder is not None:
        # Drop the editable install's finder so that the folder's build is the one imported.
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        sys.path.insert(0, folder)
    import types

    import numpy as np
    from bench_train import load_data  # scripts/, beside this one (after sys.path is set)

    import fastbp
    X, y, Xt, yt = load_data(types.SimpleNamespace(data_dir=args.data_dir, dense=args.dense,
                                                   seed=0, dtype="float32"))
    net = fastbp.Network([784, args.hidden, 10], seed=0)
    epochs = 0
    trainer = None
    if args.optimizer == "adam":
        trainer = fastbp.Trainer(net, X, y, optimizer=fastbp.Adam(lr=0.001),
                                 batch_size=args.batch, eval_every=0, seed=0, device="cpu")

    def epoch():
        nonlocal epochs
        if trainer is not None:
            history = trainer.fit(epochs + 1)  # fit's epochs count the whole run
        else:
            history = fastbp.train(net, X, y, lr=0.5, batch_size=args.batch, epochs=1,
                                   eval_every=0, seed=epochs, device="cpu")
        epochs += 1
        return history.epoch_seconds[-1]

    epoch()
    conn.send(os.path.dirname(fastbp.__file__))
    while conn.recv() == "epoch":
        conn.send(epoch())
    conn.send(float(np.mean(net.predict(Xt) != yt)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("A")
    parser.add_argument("B")
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--dense", action="store_true")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    args = parser.parse_args()
    from bench_train import SETTLE_SECONDS  # idle thread pools spin a while before they sleep
    ctx = multiprocessing.get_context("spawn")
    conns = []
    for spec in (args.A, args.B):
        parent, child = ctx.Pipe()
        ctx.Process(target=worker, args=(spec, args, child),
                    daemon=True).start()
        conns.append(parent)
    for spec, conn in zip((args.A, args.B), conns):
        print(f"{spec}: fastbp from {conn.recv()}")
    times = [[], []]
    for r in range(args.rounds):
        for side in ((0, 1) if r % 2 == 0 else (1, 0)):
            time.sleep(SETTLE_SECONDS)
            conns[side].send("epoch")
            times[side].append(conns[side].recv())
    for spec, conn, t in zip((args.A, args.B), conns, times):
        conn.send("stop")
        print(f"{spec}: median {statistics.median(t):.3f} s, fastest {min(t):.3f} s, "
              f"test error {100 * conn.recv():.2f} %")
    ratio = statistics.median(b / a for a, b in zip(*times))
    variant = "dense input" if args.dense else "MNIST"
    variant += f", 784-{args.hidden}-10, n_b {args.batch}, {args.optimizer}"
    print(f"{variant}, {args.rounds} rounds: B / A per round, median {ratio:.3f}")


if __name__ == "__main__":
    main()
