"""A/B of whole fastbp epochs on any network shape, synthetic data: two
builds, each in its own process, taking turns to go first in each round.

    python scripts/ab_shapes.py A B --shape 13-32-1 --activation tanh --batch 16
                                [--samples 50000] [--epochs 3] [--rounds 8]

A and B are each ``installed`` (the fastbp this Python imports) or a folder
that holds another build's ``fastbp`` package, e.g. one made with
``pip install --no-deps --target /tmp/old <checkout>``. Each process trains
the shape (float32, N(0, 1) inputs; softmax cross-entropy, or squared
error for one output) for one untimed epoch, then times ``--epochs`` epochs
of one ``fastbp.train`` call, set-up included. Prints each side's median
s/epoch and the median over rounds of B's time / A's. For MNIST's Example
6.2 use ab_epochs.py.
"""

import argparse
import json
import statistics
import subprocess
import sys

WORKER = r"""
import json, sys, time
folder, shape, act, batch, n, epochs = sys.argv[1:7]
if folder != "installed":
    # Drop the editable install's finder so that the folder's build is the one imported.
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, folder)
import numpy as np
import fastbp
sizes = tuple(int(s) for s in shape.split("-"))
n, batch, epochs = int(n), int(batch), int(epochs)
rng = np.random.default_rng(0)
X = rng.standard_normal((n, sizes[0])).astype(np.float32)
if sizes[-1] > 1:
    y, loss = rng.integers(0, sizes[-1], n), "cross_entropy"
else:
    y, loss = rng.standard_normal((n, 1)).astype(np.float32), "squared_error"
net = fastbp.Network(sizes, activation=act, loss=loss, dtype="float32", seed=0)
fastbp.train(net, X, y, epochs=1, batch_size=batch, lr=0.01, eval_every=0, seed=0)
start = time.perf_counter()
fastbp.train(net, X, y, epochs=epochs, batch_size=batch, lr=0.01, eval_every=0, seed=1)
print(json.dumps({"seconds": (time.perf_counter() - start) / epochs, "file": fastbp.__file__}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--shape", required=True, help="layer sizes, e.g. 13-32-1")
    parser.add_argument("--activation", default="relu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--samples", type=int, default=50000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    times = {args.a: [], args.b: []}
    ratios = []
    for r in range(args.rounds):
        got = {}
        for side in (args.a, args.b) if r % 2 == 0 else (args.b, args.a):
            out = subprocess.run([sys.executable, "-c", WORKER, side, args.shape, args.activation,
                                  str(args.batch), str(args.samples), str(args.epochs)],
                                 capture_output=True, text=True, check=True, cwd="/")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if r == 0:
                print(f"{side}: {result['file']}")
            got[side] = result["seconds"]
        for side, seconds in times.items():
            seconds.append(got[side])
        ratios.append(got[args.b] / got[args.a])
    print(f"{args.shape} {args.activation}, batch {args.batch}, {args.rounds} rounds: "
          f"A {statistics.median(times[args.a]):.4f} s/epoch, "
          f"B {statistics.median(times[args.b]):.4f}, "
          f"B / A per round {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
