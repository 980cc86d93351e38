"""Seconds per fit of fastbp's scikit-learn estimators on MNIST, against
scikit-learn's own MLPClassifier and a plain PyTorch loop.

    python scripts/bench_sklearn.py [--setting defaults|example62|both] [--epochs 10]
                                    [--rounds 3] [--only fastbp-f32,sklearn-f64,...]
                                    [--data-dir DIR] [--threads N]

What is timed is the whole fit call (set-up included: validation, the first
weights, buffers, the epochs) on the 60,000 training images, for each setting
of SETTINGS:

  defaults   scikit-learn's defaults: hidden_layer_sizes (100,), adam,
             batch_size "auto" (200), learning_rate_init 0.001, alpha 1e-4;
  example62  Example 6.2: (200,), plain SGD at 0.5 (momentum 0), batch 100, alpha 0;

both with max_iter E (--epochs), shuffle, random_state 0, and n_iter_no_change
E, so that no contender stops early (scikit-learn stops once the count of
epochs without improvement exceeds n_iter_no_change, and that count never
exceeds the epochs run): every fit runs exactly E epochs, which the table
shows (n_iter_, or the partial_fit calls' loss_curve_).

The contenders (CONTENDERS): fastbp.MLPClassifier on the CPU in float32 and
float64, scikit-learn's MLPClassifier on float64 and on float32 X (it keeps
float32), PyTorch (nn.Sequential(Linear, ReLU, Linear), CrossEntropyLoss, its
Adam or SGD with the same rate, betas, epsilon, momentum and batch size,
float32, torch.randperm shuffles, scikit-learn's Glorot-uniform start for
weights and biases (drawn by PyTorch's generator: other numbers); scikit-learn's
alpha as weight_decay alpha / batch on the weights only, which is scikit-learn's
L2 gradient, alpha W / batch, exactly, under Adam too; its Adam adds epsilon to
the bias-corrected sqrt(v), scikit-learn's to sqrt(v), at the same cost), and
fastbp-partial: fastbp float32 calling partial_fit once per epoch, E times
(with an integer random_state each call reshuffles from the same seed, as
scikit-learn's partial_fit does). Each contender gets X in its own dtype,
converted before the clock starts.

Protocol, as scripts/bench_train.py's: each contender lives in its own process
(spawned, so that no two thread pools spin against each other); each first
runs an untimed one-epoch fit of every selected setting on the real data
(compiles Numba's kernels, warms PyTorch and BLAS); then, per setting, every
contender fits once per round, alternating, the order rotated every round
(later slots ran faster), with a pause between fits for idle thread pools to
sleep. Reported: the median and minimum seconds per fit over the rounds, the
test error after the fit (10,000 test images; the target is all within 0.3
points), and fastbp's ratios (of medians, and the median of the ratios within
each round) beside the issue's targets. --threads sets Numba's, PyTorch's and
BLAS's thread counts (default: every core).
"""

import argparse
import itertools
import multiprocessing
import os
import statistics
import time
import warnings

import numpy as np

import fastbp

SETTINGS = {
    "defaults": {"hidden_layer_sizes": (100,), "solver": "adam", "batch_size": "auto",
                 "learning_rate_init": 0.001, "alpha": 1e-4},
    "example62": {"hidden_layer_sizes": (200,), "solver": "sgd", "learning_rate_init": 0.5,
                  "momentum": 0.0, "batch_size": 100, "alpha": 0.0},
}
# name: (how it fits, the dtype of its X and weights)
CONTENDERS = {
    "fastbp-f32": ("fastbp", "float32"),
    "fastbp-f64": ("fastbp", "float64"),
    "sklearn-f64": ("sklearn", "float64"),
    "sklearn-f32": ("sklearn", "float32"),
    "pytorch": ("pytorch", "float32"),
    "fastbp-partial": ("partial", "float32"),
}
# (numerator, denominator, the target for the ratio of their times)
RATIOS = [
    ("fastbp-f32", "sklearn-f64", 0.25),
    ("fastbp-f32", "sklearn-f32", 0.25),
    ("fastbp-f32", "pytorch", 0.6),
    ("fastbp-f64", "sklearn-f64", 0.25),
    ("fastbp-partial", "fastbp-f32", 1.1),
]
ERROR_SPREAD = 0.003  # the "equal accuracy": test errors within 0.3 points
# Idle thread pools spin for a while before they sleep: wait this long between
# fits so that none starts while the previous one's threads still spin.
SETTLE_SECONDS = 0.5


def estimator_params(setting, epochs):
    """The setting's MLPClassifier parameters for a fit of exactly `epochs` epochs."""
    return {**SETTINGS[setting], "max_iter": epochs, "n_iter_no_change": epochs,
            "shuffle": True, "random_state": 0}


def fit_torch(params, X, y, threads):
    """PyTorch's loop under the estimator's parameters: (predict, epochs run)."""
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(params["random_state"])
    sizes = [X.shape[1], *params["hidden_layer_sizes"], int(y.max()) + 1]
    linears = [nn.Linear(a, b) for a, b in itertools.pairwise(sizes)]
    with torch.no_grad():  # scikit-learn's Glorot-uniform start (drawn by PyTorch)
        for linear in linears:
            bound = (6 / sum(linear.weight.shape)) ** 0.5
            linear.weight.uniform_(-bound, bound)
            linear.bias.uniform_(-bound, bound)
    layers = [linears[0]]
    for linear in linears[1:]:
        layers += [nn.ReLU(), linear]
    model = nn.Sequential(*layers)
    n = X.shape[0]
    batch = min(200, n) if params["batch_size"] == "auto" else params["batch_size"]
    groups = [{"params": [m.weight for m in linears], "weight_decay": params["alpha"] / batch},
              {"params": [m.bias for m in linears], "weight_decay": 0.0}]
    if params["solver"] == "adam":  # PyTorch's betas and eps are scikit-learn's defaults
        opt = torch.optim.Adam(groups, lr=params["learning_rate_init"])
    else:
        opt = torch.optim.SGD(groups, lr=params["learning_rate_init"],
                              momentum=params["momentum"])
    loss = nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    shuffles = torch.Generator().manual_seed(params["random_state"])
    for _ in range(params["max_iter"]):
        order = torch.randperm(n, generator=shuffles)
        for start in range(0, n, batch):
            rows = order[start:start + batch]
            opt.zero_grad(set_to_none=True)
            loss(model(Xt[rows]), yt[rows]).backward()
            opt.step()

    def predict(X):
        with torch.no_grad():
            return model(torch.from_numpy(X)).argmax(1).numpy()
    return predict, params["max_iter"]


def fit(kind, dtype, params, X, y, threads):
    """One fit, the timed call: (predict, epochs run)."""
    if kind == "pytorch":
        return fit_torch(params, X, y, threads)
    if kind == "sklearn":
        from sklearn.neural_network import MLPClassifier
        model = MLPClassifier(**params)
    else:
        model = fastbp.MLPClassifier(**params, dtype=dtype, device="cpu")
    if kind != "partial":
        model.fit(X, y)
        return model.predict, model.n_iter_
    classes = np.unique(y)
    for _ in range(params["max_iter"]):
        model.partial_fit(X, y, classes=classes)
    return model.predict, len(model.loss_curve_)  # n_iter_ is each call's: 1


def worker(name, args, conn):
    """One contender in its own process: warms every selected setting up, then
    fits whenever the parent asks, answering (seconds, epochs, test error)."""
    from sklearn.exceptions import ConvergenceWarning

    # max_iter is reached on purpose: every fit would warn
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    kind, dtype = CONTENDERS[name]
    Xtr, ytr, Xte, yte = fastbp.datasets.mnist(args.data_dir)
    Xtr, Xte = Xtr.astype(dtype), Xte.astype(dtype)
    try:
        for setting in args.setting:  # untimed: compiles, and warms the thread pools
            fit(kind, dtype, estimator_params(setting, 1), Xtr, ytr, args.threads)
    except ImportError as exc:
        conn.send(("skip", str(exc)))
        return
    conn.send(("ready", None))
    while (setting := conn.recv()) is not None:
        params = estimator_params(setting, args.epochs)
        start = time.perf_counter()
        predict, epochs = fit(kind, dtype, params, Xtr, ytr, args.threads)
        seconds = time.perf_counter() - start
        conn.send((seconds, epochs, float(np.mean(predict(Xte) != yte))))


def receive(conn, name):
    """A worker's answer; a worker that died ends the run."""
    try:
        return conn.recv()
    except EOFError:
        raise SystemExit(f"{name}'s worker died (its traceback is above)") from None


def report(setting, args, runs):
    """One setting's table and ratios; runs: name -> [(seconds, epochs, error)] per round."""
    seconds = {name: [r[0] for r in rounds] for name, rounds in runs.items()}
    med = {name: statistics.median(t) for name, t in seconds.items()}
    params = estimator_params(setting, args.epochs)
    shown = ", ".join(f"{k} {v}" for k, v in params.items())
    print(f"\n{setting}: {shown}; MNIST 60000/10000, {args.threads} threads, median of "
          f"{args.rounds} fits, alternating in rotated order, one process per contender")
    width = max(len(name) for name in CONTENDERS)
    print(f"{'contender':{width}s} {'s/fit':>8s} {'min':>8s} {'s/epoch':>8s} {'epochs':>6s} "
          f"{'test error':>10s}")
    errors = {}
    for name, rounds in runs.items():
        epochs = {r[1] for r in rounds}
        errors[name] = rounds[-1][2]
        flag = "" if epochs == {args.epochs} else f"  <- not {args.epochs} epochs!"
        print(f"{name:{width}s} {med[name]:8.3f} {min(seconds[name]):8.3f} "
              f"{med[name] / args.epochs:8.3f} {'/'.join(map(str, sorted(epochs))):>6s} "
              f"{errors[name]:10.2%}{flag}")
    if len(errors) > 1:
        spread = max(errors.values()) - min(errors.values())
        print(f"test errors' spread {spread * 100:.2f} points (target <= "
              f"{ERROR_SPREAD * 100:.1f}): {'met' if spread <= ERROR_SPREAD else 'NOT met'}")
    lines = [(f"{a} / {b}", med[a] / med[b],
              statistics.median(x / y for x, y in zip(seconds[a], seconds[b])), target)
             for a, b, target in RATIOS if a in med and b in med]
    if lines:
        width = max(len(text) for text, *_ in lines)
        print(f"\n{'ratio of fits':{width}s} {'medians':>8s} {'per round':>9s} {'target':>7s}")
        for text, ratio, paired, target in lines:
            print(f"{text:{width}s} {ratio:8.2f} {paired:9.2f} {'<= ' + str(target):>7s} "
                  f"{'met' if ratio <= target else 'NOT met'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="both", choices=[*SETTINGS, "both"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="",
                        help=f"comma-separated contenders, of {', '.join(CONTENDERS)}")
    parser.add_argument("--data-dir", default="/work/shared/data/mnist")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    args.setting = list(SETTINGS) if args.setting == "both" else [args.setting]
    wanted = list(dict.fromkeys(filter(None, args.only.split(",")))) or list(CONTENDERS)
    unknown = [name for name in wanted if name not in CONTENDERS]
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; give some of {', '.join(CONTENDERS)}")
    # Read by each spawned worker as its libraries load (Numba's, OpenBLAS's, OpenMP's pools).
    for variable in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                     "MKL_NUM_THREADS"):
        os.environ[variable] = str(args.threads)

    ctx = multiprocessing.get_context("spawn")
    workers = {}
    for name in wanted:  # one at a time: no warm-up competes with another for the cores
        parent, child = ctx.Pipe()
        ctx.Process(target=worker, args=(name, args, child), daemon=True).start()
        child.close()  # a worker that dies then ends recv with EOFError, not a hang
        status, detail = receive(parent, name)
        if status == "skip":
            print(f"skipping {name}: {detail}")
        else:
            workers[name] = parent

    names = list(workers)
    if not names:
        raise SystemExit("no contender could run")
    for setting in args.setting:
        runs = {name: [] for name in names}
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                time.sleep(SETTLE_SECONDS)
                workers[name].send(setting)
                runs[name].append(receive(workers[name], name))
        report(setting, args, runs)
    for conn in workers.values():
        conn.send(None)


if __name__ == "__main__":
    main()
