"""What a training call spends outside its epochs (set-up), on MNIST.

For each round: a fresh ``fastbp.train(net, X, y, epochs=1)`` call (what a
one-epoch call pays: checks, the first layer's data, buffers, the epoch)
and, where this build has it, one more epoch through an existing
``fastbp.Trainer`` (what ``partial_fit``-style use pays). Set-up = the
call's wall time minus ``History.epoch_seconds``. Kernels are compiled in an
untimed warm-up first. Prints medians in milliseconds.

    FASTBP_DATA_DIR=/path/to/mnist python scripts/setup_cost.py --rounds 7
"""

import argparse
import statistics
import time

import numpy as np

import fastbp


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--dense", action="store_true", help="N(0, 0.1^2) noise on every pixel")
    args = parser.parse_args()
    Xtr, ytr, _, _ = fastbp.datasets.mnist()
    if args.dense:
        Xtr = Xtr + np.random.default_rng(0).normal(0, 0.1, Xtr.shape).astype(np.float32)
    net = fastbp.Network([784, 200, 10], seed=0)
    fastbp.train(net, Xtr, ytr, epochs=1, eval_every=0)  # compile
    trainer = None
    if hasattr(fastbp, "Trainer"):
        trainer = fastbp.Trainer(fastbp.Network([784, 200, 10], seed=0), Xtr, ytr, eval_every=0)
        trainer.fit(1)
    fresh, further = [], []
    for _ in range(args.rounds):
        net = fastbp.Network([784, 200, 10], seed=0)
        started = time.perf_counter()
        hist = fastbp.train(net, Xtr, ytr, epochs=1, eval_every=0)
        fresh.append(time.perf_counter() - started - sum(hist.epoch_seconds))
        if trainer is not None:
            before = len(trainer.history.epoch_seconds)
            started = time.perf_counter()
            trainer.fit(before + 1)
            further.append(time.perf_counter() - started
                           - sum(trainer.history.epoch_seconds[before:]))
    print(f"fresh train(epochs=1): set-up {1e3 * statistics.median(fresh):.1f} ms "
          f"(min {1e3 * min(fresh):.1f}, max {1e3 * max(fresh):.1f})")
    if further:
        print(f"further epoch through a Trainer: set-up {1e3 * statistics.median(further):.1f} ms "
              f"(min {1e3 * min(further):.1f}, max {1e3 * max(further):.1f})")


if __name__ == "__main__":
    main()
