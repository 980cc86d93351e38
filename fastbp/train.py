"""Mini-batch SGD (6.21/6.23) around Algorithm 6.1, with Example 6.2's schedule."""

import contextlib
import math
import os
import signal
import threading
import time
import zlib

import numba
import numpy as np

from . import backends, compile_lock
from . import validation as check
from .checkpoint import load_checkpoint, save_checkpoint
from .errors import DivergenceError
from .history import History
from .network import Network, evaluate_prepared
from .sparse_rows import compressed_rows
from .storage import file_identity, reworded

# Iterations per compiled call at most: bounds how late progress reports and
# Ctrl-C are seen, at a cost of one call (~tens of microseconds) per chunk.
MAX_CHUNK = 50


def epoch_order(seed, epoch, n):
    """The shuffle of epoch ``epoch``: a permutation of range(n) drawn from
    (seed, epoch) alone, so any epoch can be replayed without earlier ones."""
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int64)


def train(net, X, y, lr=0.5, batch_size=100, epochs=15, validation=None, eval_every=100,
          seed=0, device="auto", checkpoint=None, resume=False, progress=None):
    """Train ``net`` in place with mini-batch SGD; return its History.

    Parameters
    ----------
    net : Network
    X : (n, p) inputs; y : (n,) labels (cross_entropy) or (n,) / (n, M)
        targets (squared_error). Any real dtype and memory order.
    lr : float > 0, the learning rate gamma of (6.23).
    batch_size : int >= 1, n_b. Every epoch reshuffles and cuts the data into
        ceil(n / n_b) mini-batches; the last one holds the remaining
        n mod n_b samples when n_b does not divide n, so every sample is used
        once per epoch. A batch_size larger than n means full-batch gradient
        descent (one batch of all n samples per epoch).
    epochs : int >= 1, passes over the data.
    validation : (Xv, yv) or None. Evaluated on the whole set every
        ``eval_every`` iterations, as in Example 6.2 (0 or None: never).
    seed : int >= 0, seed of the shuffles (epoch e uses (seed, e)).
    device : "auto" | "cpu" | "cuda" | "numpy" (the NumPy reference).
    checkpoint : path or None. Saved (atomically) after every epoch, and on
        Ctrl-C before the KeyboardInterrupt is re-raised. An existing file is
        never overwritten by a fresh run: without resume=True it is an error;
        nor is a file another run wrote there after this run's last save.
    resume : continue from ``checkpoint`` up to ``epochs``; gives the very same
        weights and History as one uninterrupted run with the same arguments
        (same device and thread count). Refused with a ValueError naming the
        setting when lr, batch_size, seed, eval_every, the data (CRC-32 of X,
        y and validation) or the network's sizes, activation, loss or dtype
        differ from the checkpoint's; a checkpoint already at ``epochs``
        returns its History at once.
    progress : callable(epoch, step, steps_per_epoch, history) or None, called
        after every chunk of at most MAX_CHUNK iterations (epoch 0-based, step
        = iterations done in that epoch).

    Raises
    ------
    ValueError for bad arguments (an lr that rounds to 0 in the network's
    dtype included), and when the checkpoint on disk is no longer this run's
    (replaced or removed by something else: it is left as it is); DataError
    for a damaged checkpoint; OSError naming the checkpoint when it cannot be
    written (the last one saved is kept); DivergenceError when a mini-batch
    cost (checked inside the compiled loop) or the weights turn non-finite:
    the network keeps the weights of the last finite iteration, and the
    error's ``history`` records up to the bad one.
    """
    if not isinstance(net, Network):
        raise ValueError(f"net must be a fastbp.Network; got {type(net).__name__}")
    lr = check.positive_float("lr", lr)
    batch_size = check.positive_int("batch_size", batch_size)
    epochs = check.positive_int("epochs", epochs)
    eval_every = 0 if eval_every is None else check.positive_int(
        "eval_every", eval_every, minimum=0)
    seed = check.positive_int("seed", seed, minimum=0)
    device = backends.resolve_device(device)
    X = check.features("X", X, net.n_inputs, net.dtype)
    y = net.check_targets("y", y, X.shape[0])
    val = _check_validation(net, validation)
    if checkpoint is not None:
        checkpoint = check.file_path("checkpoint", checkpoint)
    if check.flag("resume", resume) and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=PATH")
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be callable or None; got {progress!r}")

    n = X.shape[0]
    batch_size = min(batch_size, n)
    settings = {"lr": lr, "batch_size": batch_size, "seed": seed, "n_samples": n,
                "eval_every": eval_every}
    if checkpoint is not None:  # resuming on other data would silently differ
        settings["train_crc32"] = _fingerprint(X, y)  # so a refusal can say which
        settings["val_crc32"] = _fingerprint(*val) if val else None
        # What older checkpoints hold: the same CRC continued over the validation data.
        settings["data_crc32"] = _fingerprint(*(val or ()), start=settings["train_crc32"])
    check.sgd_step(lr, batch_size, net.dtype)
    history = History(steps_per_epoch=math.ceil(n / batch_size))
    epoch, step = 0, 0
    saves = _CheckpointFile(checkpoint, None)  # a fresh run's file must not exist
    if checkpoint is not None and not resume and os.path.exists(checkpoint):
        # Never overwrite a run that may have taken all night.
        raise ValueError(f"the checkpoint {os.fsdecode(checkpoint)!r} already exists: pass "
                         "resume=True to continue it, or delete it or choose another path "
                         "to start over")
    if resume:
        if not os.path.exists(checkpoint):
            raise ValueError(f"resume=True but the checkpoint {os.fsdecode(checkpoint)!r} "
                             "does not exist")
        saves = _CheckpointFile(checkpoint, file_identity(checkpoint), resumed=True)
        saved, epoch, step, history = load_checkpoint(checkpoint, net, settings)
        if (epoch, step) > (epochs, 0):
            done = f"{epoch} epoch{'s' if epoch != 1 else ''}" + (
                f" and {step} iterations" if step else "")
            raise ValueError(f"cannot resume from {os.fsdecode(checkpoint)}: it has already "
                             f"run {done}, more than epochs={epochs}")
        net.layers = saved.layers
    Ws, bs = net.checked_layers()
    stepper = backends.make_stepper(device, net, Ws, bs, X, y, batch_size)
    run = _Run(net, Ws, bs, stepper, history, lr, eval_every, val)

    with _deferred_interrupt(checkpoint is not None) as interrupted:
        while epoch < epochs:
            order = epoch_order(seed, epoch, n)
            started, compiling = time.perf_counter(), compile_lock.seconds_spent()
            while step < history.steps_per_epoch:
                step = run.chunk(order, epoch, step)
                if progress is not None:
                    progress(epoch, step, history.steps_per_epoch, history)
                if interrupted() and step < history.steps_per_epoch:
                    stepper.sync()
                    saves.save(net, settings, epoch, step, history)
                    raise KeyboardInterrupt
            # Compiling the kernels happens once per shape: not the epoch's speed.
            compiled = compile_lock.seconds_spent() - compiling
            history.epoch_seconds.append(time.perf_counter() - started - compiled)
            epoch, step = epoch + 1, 0
            if checkpoint is not None:
                stepper.sync()
                saves.save(net, settings, epoch, step, history)
            if interrupted():
                raise KeyboardInterrupt
    stepper.sync()
    return history


class _Run:
    """One training run's state: runs chunks of iterations and evaluations."""

    def __init__(self, net, Ws, bs, stepper, history, lr, eval_every, val):
        self.net, self.Ws, self.bs, self.stepper = net, Ws, bs, stepper
        self.history, self.lr, self.eval_every, self.val = history, lr, eval_every, val
        # Validation runs every eval_every iterations: compress its rows once.
        self.val_rows = (compressed_rows(val[0], net.sizes[1])
                         if val is not None and eval_every else None)

    def chunk(self, order, epoch, step):
        """Run iterations from ``step`` up to the next evaluation point, the
        end of the epoch, or MAX_CHUNK of them; return the new step."""
        h = self.history
        done_before = epoch * h.steps_per_epoch + step
        size = min(h.steps_per_epoch - step, MAX_CHUNK)
        if self.eval_every:
            size = min(size, self.eval_every - done_before % self.eval_every)
        costs, errors = np.empty(size), np.empty(size)
        snapshot = self._weights()
        with _quiet():
            done = self.stepper.run(order, step, size, self.lr, costs, errors)
        self.stepper.sync()  # a device's weights to Ws, bs, to check them here
        # The compiled loop stops at a non-finite cost; the weights are checked
        # once per chunk too (a ReLU can hide an inf weight behind a finite cost).
        if done < size or not _all_finite(self.Ws, self.bs):
            self._replay(snapshot, order, epoch, step, size)
        else:
            h.batch_cost.extend(costs.tolist())
            h.batch_error.extend(errors.tolist())
        iteration = done_before + size
        if self.val is not None and self.eval_every and iteration % self.eval_every == 0:
            self.stepper.sync()
            with _threads_like(self.stepper):
                cost, error = evaluate_prepared(self.net, self.Ws, self.bs, *self.val,
                                                self.val_rows)
            h.val_iteration.append(iteration)
            h.val_cost.append(cost)
            h.val_error.append(error)
        return step + size

    def _weights(self):
        return [(W.copy(), b.copy()) for W, b in zip(self.Ws, self.bs)]

    def _restore(self, weights):
        for W, b, (W0, b0) in zip(self.Ws, self.bs, weights):
            W[...] = W0
            b[...] = b0
        self.stepper.push()  # and to the device's copy, where there is one

    def _replay(self, snapshot, order, epoch, step, size):
        """Replay a diverged chunk from ``snapshot`` one step at a time, to stop
        at the last finite weights; record the steps up to the bad one and
        raise DivergenceError. (Returns, having recorded every step, only if a
        non-deterministic device does not diverge again.)"""
        self._restore(snapshot)
        h = self.history
        cost, error = np.empty(1), np.empty(1)
        for s in range(step, step + size):
            before = self._weights()
            with _quiet():
                done = self.stepper.run(order, s, 1, self.lr, cost, error)
            self.stepper.sync()
            h.batch_cost.append(float(cost[0]))
            h.batch_error.append(float(error[0]))
            if done == 0:
                what = f"the mini-batch cost is {cost[0]}"
                break
            if not _all_finite(self.Ws, self.bs):
                self._restore(before)
                what = "its update made the weights non-finite"
                break
        else:
            return
        iteration = epoch * h.steps_per_epoch + s + 1
        kept = f"those after iteration {iteration - 1}" if iteration > 1 else "the initial ones"
        raise DivergenceError(
            f"training diverged at iteration {iteration}: {what}. The network keeps its "
            f"last finite weights ({kept}). Try a smaller learning rate than lr={self.lr}.",
            iteration=iteration, history=h, reason=what)


@contextlib.contextmanager
def _threads_like(stepper):
    """Validate with the thread count the stepper measured faster: on a busy
    machine all threads can be many times slower than one."""
    tuner = getattr(stepper, "threads", None)
    previous = numba.get_num_threads()
    if tuner is not None:
        numba.set_num_threads(tuner.preferred())
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _quiet():
    """Overflow on the way to a non-finite cost is reported as DivergenceError,
    so the NumPy device need not also print RuntimeWarnings for it."""
    return np.errstate(over="ignore", invalid="ignore")


def _all_finite(Ws, bs):
    return all(np.isfinite(W).all() and np.isfinite(b).all() for W, b in zip(Ws, bs))


def _fingerprint(*arrays, start="00000000"):
    """CRC-32 (hex) of the converted, C-contiguous training (and validation)
    data, continued from the CRC ``start`` of what came before them."""
    crc = int(start, 16)
    for a in arrays:
        crc = zlib.crc32(a, crc)
    return f"{crc:08x}"


def _check_validation(net, val):
    if val is None:
        return None
    if not isinstance(val, (tuple, list)) or len(val) != 2:
        raise ValueError("validation must be a pair (X_val, y_val) or None")
    Xv = check.features("validation X", val[0], net.n_inputs, net.dtype)
    yv = net.check_targets("validation y", val[1], Xv.shape[0])
    return Xv, yv


class _CheckpointFile:
    """A run's checkpoint path, written only over the run's own last
    checkpoint (or the one it resumed from), so two runs given the same path
    never destroy each other's: the other finds the file changed and stops."""

    def __init__(self, path, identity, resumed=False):
        self.path, self.identity = path, identity
        self.left = "the checkpoint resumed from is unchanged" if resumed else None

    def save(self, net, settings, epoch, step, history):
        try:
            self.identity = save_checkpoint(self.path, net, settings, epoch, step, history,
                                            expected=self.identity)
        except OSError as exc:  # disk full, say: what is on disk still resumes
            left = self.left or "no checkpoint was saved yet"
            raise reworded(exc, f"{exc.strerror or exc}; {left}") from None
        where = f"after epoch {epoch}" if step == 0 else f"at epoch {epoch + 1}, step {step}"
        self.left = f"the checkpoint saved {where} is unchanged"


@contextlib.contextmanager
def _deferred_interrupt(enabled):
    """While active (and enabled, in the main thread), the first Ctrl-C only
    sets a flag, so training can stop between chunks with a consistent
    checkpoint; a second Ctrl-C interrupts at once."""
    flag = []
    # SIGINT ignored (a background job of a script) stays ignored.
    if (not enabled or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is signal.SIG_IGN):
        yield lambda: False
        return

    def handler(signum, frame):
        if flag:
            raise KeyboardInterrupt
        flag.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(flag)
    finally:
        signal.signal(signal.SIGINT, previous)
