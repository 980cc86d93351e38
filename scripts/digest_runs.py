"""SHA-256 digests of the weights and History of a fixed set of training
runs, one line per run: run it on two builds to show a refactor changed no
bit (``diff <(python scripts/digest_runs.py) <(cd OLD && python scripts/digest_runs.py)``).

The runs cover every first-layer plan (W, W^T over compressed rows, panels,
zero-skipping tiles, where this CPU has them), one to three layers, fused and
blocked output layers, both losses, every activation, float32 and float64,
validation, and a batch size that leaves a short last batch.

    FASTBP_DATA_DIR=/path/to/mnist python scripts/digest_runs.py
"""

import hashlib
import os

import numpy as np

import fastbp


def runs():
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(700, 40))
    sparse = rng.random((700, 96)) * (rng.random((700, 96)) < 0.15)
    labels = rng.integers(0, 5, 700)
    targets = rng.normal(size=(700, 3))
    yield "dense relu [40,64,5]", [40, 64, 5], "relu", "cross_entropy", dense, labels, 32
    yield "dense tanh [40,50,30,20] sq", [40, 50, 30, 20], "tanh", "squared_error", dense, \
        rng.normal(size=(700, 20)), 64
    yield "sparse relu [96,200,5]", [96, 200, 5], "relu", "cross_entropy", sparse, labels, 100
    yield "sparse sigmoid [96,64,48,5]", [96, 64, 48, 5], "sigmoid", "cross_entropy", sparse, \
        labels, 50
    yield "sparse [96,3] sq", [96, 3], "relu", "squared_error", sparse, targets, 33
    yield "dense [40,5]", [40, 5], "relu", "cross_entropy", dense, labels, 700
    folder = os.environ.get("FASTBP_DATA_DIR")
    if folder:
        X, y, _, _ = fastbp.datasets.mnist(folder)
        yield "mnist[:6000] [784,200,10]", [784, 200, 10], "relu", "cross_entropy", X[:6000], \
            y[:6000], 100
        noisy = X[:3000] + np.random.default_rng(1).normal(0, 0.1, (3000, 784)).astype(np.float32)
        yield "mnist dense[:3000] [784,200,10]", [784, 200, 10], "relu", "cross_entropy", \
            noisy, y[:3000], 100


def digest(net, hist):
    h = hashlib.sha256()
    for W, b in net.layers:
        h.update(W.tobytes() + b.tobytes())
    for series in (hist.batch_cost, hist.batch_error, hist.val_iteration, hist.val_cost,
                   hist.val_error):
        h.update(np.asarray(series, np.float64).tobytes())
    return h.hexdigest()[:16]


def main():
    for name, sizes, act, loss, X, y, batch in runs():
        for dtype in ("float32", "float64"):
            net = fastbp.Network(sizes, activation=act, loss=loss, dtype=dtype, seed=3)
            hist = fastbp.train(net, X, y, lr=0.1, batch_size=batch, epochs=2, seed=1,
                                device="cpu", validation=(X[:250], y[:250]), eval_every=7)
            print(f"{digest(net, hist)}  {name} {dtype}", flush=True)


if __name__ == "__main__":
    main()
