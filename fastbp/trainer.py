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

from . import backends, compile_lock, first_layer, optimizers
from . import checks as check
from .checkpoint import load_checkpoint, save_checkpoint
from .errors import DataError, DivergenceError
from .history import History
from .kernels.config import CHUNK_MACS, MAX_CHUNK
from .stopping import EarlyStopping, Watch, split
from .weights import sample_weights
from .network import Network, evaluate_prepared, forward_macs
from .storage import file_identity, reworded


def epoch_order(seed, epoch, n):
    """The shuffle of epoch ``epoch``: a permutation of range(n) drawn from
    (seed, epoch) alone, so any epoch can be replayed without earlier ones."""
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int64)


def train(net, X, y, lr=None, batch_size=100, epochs=15, validation=None, eval_every=100,
          seed=0, device="auto", checkpoint=None, resume=False, progress=None, optimizer=None,
          early_stopping=None, sample_weight=None, class_weight=None):
    """Train ``net`` in place with mini-batch SGD; return its History.

    Parameters
    ----------
    net : Network
    X : (n, p) inputs; y : (n,) labels (cross_entropy) or (n,) / (n, M)
        targets (squared_error; binary_cross_entropy: 0/1 labels, an
        indicator matrix, or probabilities). Any real dtype and memory order.
    sample_weight : (n,) non-negative weights or None; class_weight : None,
        "balanced" or {label: weight} (classification; fastbp/weights.py).
        Each mini-batch's cost and gradient become the weighted means
        sum w_i J_i / sum w_i, and the L2 penalty's n_b is sum w_i, as in
        scikit-learn's MLP; a sample of weight 0 changes nothing.
    lr : float > 0, the learning rate gamma of (6.23): plain SGD, the same as
        optimizer=fastbp.SGD(lr) (default 0.5 when no optimizer is given).
    optimizer : fastbp.SGD (momentum, Nesterov) or fastbp.Adam, each with an
        L2 penalty and a learning-rate schedule (fastbp/optimizers.py), or
        None (plain SGD at lr). Its state is kept in checkpoints.
    early_stopping : fastbp.EarlyStopping or None: after each epoch, the
        validation set (``validation``, else a held-out, stratified
        validation_fraction of X, y) is evaluated; training stops when it no
        longer improves, with the best epoch's weights (fastbp/stopping.py);
        the History says when and why.
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
        after every chunk of iterations (epoch 0-based, step = iterations done
        in that epoch): MAX_CHUNK of them, or more where each is small
        (``chunk_steps``: a few milliseconds' work; on a GPU the whole epoch,
        or up to the next evaluation).

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
    epochs = check.positive_int("epochs", epochs)
    trainer = Trainer(net, X, y, lr=lr, batch_size=batch_size, validation=validation,
                      eval_every=eval_every, seed=seed, device=device, checkpoint=checkpoint,
                      resume=resume, progress=progress, optimizer=optimizer,
                      early_stopping=early_stopping, sample_weight=sample_weight,
                      class_weight=class_weight)
    return trainer.fit(epochs)


def check_checkpoint(checkpoint, resume, names=check.API):
    """Refuse what a checkpoint path and the resume flag cannot mean: resume
    without a checkpoint (a UsageError), a fresh run over an existing
    checkpoint (never overwrite a run that may have taken all night), a
    resume from none. names : ``checks.API`` or ``checks.CLI``."""
    if resume and checkpoint is None:
        raise check.UsageError(f"{names['resume']} needs {names['checkpoint']} (the run to "
                               "continue)")
    if checkpoint is not None and not resume and os.path.exists(checkpoint):
        raise ValueError(f"the checkpoint {os.fsdecode(checkpoint)!r} already exists: pass "
                         f"{names['resume']} to continue it, or delete it or choose another "
                         "path to start over")
    if resume and not os.path.exists(checkpoint):
        raise ValueError(f"{names['resume']} but the checkpoint {os.fsdecode(checkpoint)!r} "
                         "does not exist")


def _is_permutation(order, n):
    """Whether ``order`` holds each of 0 .. n-1 once: n integers in range
    that mark every slot (one pass; a sort cost 2.6 ms an epoch on MNIST)."""
    if order.shape != (n,) or order.dtype.kind not in "iu":
        return False
    if n and (order.min() < 0 or order.max() >= n):
        return False
    seen = np.zeros(n, bool)
    seen[order] = True
    return bool(seen.all())


class Trainer:
    """One training run's state, built once and reused by every ``fit``.

    Takes the arguments of ``train`` but ``epochs``, and ``shuffle``: True
    (epoch e shuffles with (seed, e)), False (every epoch in order) or a
    callable(epoch, n) giving each epoch's permutation; ``fit(epochs)`` then
    trains up to that many epochs in all, so that ``fit(1)``, ``fit(2)``,
    ... run one more epoch each (``partial_fit``-style) and give bitwise the
    weights and History of one ``train(epochs=...)`` call. What a run costs
    to set up is paid here once: the checks and conversions of the data,
    the first layer's plan (compressed rows where it needs them), the work buffers
    and the device's copy of the data; ``set_data`` trains on new data of
    the same width, keeping the rest.

    Attributes
    ----------
    net : the Network trained in place; history : History of the run so far;
    epoch, step : where the run stands (epochs done, steps into the next).
    """

    def __init__(self, net, X, y, lr=None, batch_size=100, validation=None, eval_every=100,
                 seed=0, device="auto", checkpoint=None, resume=False, progress=None,
                 optimizer=None, early_stopping=None, sample_weight=None, class_weight=None,
                 shuffle=True):
        if not isinstance(net, Network):
            raise ValueError(f"net must be a fastbp.Network; got {type(net).__name__}")
        if optimizer is None:
            optimizer = optimizers.SGD(lr=0.5 if lr is None else lr)
        elif not isinstance(optimizer, (optimizers.SGD, optimizers.Adam)):
            raise ValueError("optimizer must be a fastbp.SGD or fastbp.Adam, or None; got "
                             f"{type(optimizer).__name__}")
        elif lr is not None:
            raise ValueError(f"lr={lr!r} and optimizer={optimizer!r}: give the learning rate "
                             "once, inside the optimizer")
        self.optimizer = optimizer
        self.lr = optimizer.lr
        self.batch_size = check.positive_int("batch_size", batch_size)
        self.eval_every = 0 if eval_every is None else check.positive_int(
            "eval_every", eval_every, minimum=0)
        self.seed = check.positive_int("seed", seed, minimum=0)
        if not (isinstance(shuffle, bool) or callable(shuffle)):
            raise ValueError(f"shuffle must be True, False or a callable(epoch, n); got "
                             f"{shuffle!r}")
        self.shuffle = shuffle
        self.device = backends.resolve_device(device)
        X = check.features("X", X, net.n_inputs, net.dtype)
        y = net.check_targets("y", y, X.shape[0])
        self.net, self.class_weight = net, class_weight
        w = sample_weights(net, y, sample_weight, class_weight)
        val = _check_validation(net, validation)
        if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
            raise ValueError("early_stopping must be a fastbp.EarlyStopping or None; got "
                             f"{type(early_stopping).__name__}")
        if early_stopping is not None and early_stopping.metric == "error" and (
                not net.is_classifier):
            raise ValueError("early_stopping: metric='error' is a misclassification rate; this "
                             "network does regression: use metric='cost'")
        self._held_out = early_stopping is not None and val is None
        self.early_stopping = early_stopping
        if self._held_out:  # held out of the training data
            X, y, w, val = self._split(X, y, w)
        if checkpoint is not None:
            checkpoint = check.file_path("checkpoint", checkpoint)
        self.resume = check.flag("resume", resume)
        check_checkpoint(checkpoint, self.resume)
        if progress is not None and not callable(progress):
            raise ValueError(f"progress must be callable or None; got {progress!r}")
        self.net, self.checkpoint, self.progress, self.val = net, checkpoint, progress, val
        self.settings = self._settings(X, y, val, w)
        if optimizer.rule == "sgd":
            check.sgd_step(self.lr, self.settings["batch_size"], net.dtype)
        self.history = History(steps_per_epoch=math.ceil(X.shape[0] / self.settings["batch_size"]))
        self.epoch, self.step = 0, 0
        self._saves = _CheckpointFile(checkpoint, None)  # a fresh run's file must not exist
        self._resumed_layers = None
        saved_state = {}
        if self.resume:
            self._saves = _CheckpointFile(checkpoint, file_identity(checkpoint), resumed=True)
            saved, self.epoch, self.step, self.history, saved_state = load_checkpoint(
                checkpoint, net, self.settings)
            self._resumed_layers = saved.layers
        self.schedule = optimizers.Schedule(optimizer, saved_state.get("schedule"),
                                            seen=self.epoch * X.shape[0])
        self._state_arrays = saved_state.get("arrays") or {}
        self.watch = None
        if early_stopping is not None:
            self.watch = Watch(early_stopping, saved_state.get("stopping"),
                               saved_state.get("stopping_arrays"))
            if self.watch.best_weights is not None:
                kept = [W for W, _ in self._resumed_layers] + [b for _, b in self._resumed_layers]
                if len(self.watch.best_weights) != len(kept):
                    raise DataError(f"{os.fsdecode(checkpoint)}: checkpoint's best weights are "
                                    f"{len(self.watch.best_weights)} arrays, not {len(kept)}")
                for i, (best, like) in enumerate(zip(self.watch.best_weights, kept)):
                    _check_saved(checkpoint, f"stopping_best{i}", best, like)
            self._mark_stop()
        self.X, self.y, self.weights = X, y, self._kernel_weights(w)
        self._plan = self._stepper = self._run = self._state = None
        self._val_plan = self._diverged = None
        self._plan_rows = None

    def _order(self, n):
        """This epoch's order of the n samples: seeded by (seed, epoch), in
        order (shuffle=False), or the caller's (a callable(epoch, n) returning
        a permutation of range(n), e.g. scikit-learn's shuffles)."""
        if self.shuffle is True:
            return epoch_order(self.seed, self.epoch, n)
        if self.shuffle is False:
            return np.arange(n, dtype=np.int64)
        order = np.asarray(self.shuffle(self.epoch, n))
        if not _is_permutation(order, n):
            raise ValueError(f"shuffle({self.epoch}, {n}) must return a permutation of "
                             f"range({n})")
        return np.ascontiguousarray(order, dtype=np.int64)

    def _split(self, X, y, w):
        """(X, y, w) less a held-out validation part, and that part (X, y):
        stratified by class where y holds one label per sample."""
        strata = None
        if self.net.takes_labels:
            strata = y
        elif self.net.is_classifier and y.shape[1] == 1:
            strata = y[:, 0]
        keep, held = split(X.shape[0], self.early_stopping.validation_fraction, self.seed,
                           strata)
        return X[keep], y[keep], None if w is None else w[keep], (X[held], y[held])

    def _kernel_weights(self, w):
        """The weights as the kernels take them (the network's dtype), or None."""
        return None if w is None else w.astype(self.net.dtype)

    def _settings(self, X, y, val, w):
        """What a checkpoint records of this run, and a resume must match."""
        n = X.shape[0]
        settings = {"lr": self.lr, "batch_size": min(self.batch_size, n), "seed": self.seed,
                    "n_samples": n, "eval_every": self.eval_every,
                    "optimizer": self.optimizer.settings(),
                    "early_stopping": (self.early_stopping.settings()
                                       if self.early_stopping is not None else None)}
        if self.checkpoint is not None:  # resuming on other data would silently differ
            settings["train_crc32"] = _fingerprint(X, y)  # so a refusal can say which
            settings["val_crc32"] = _fingerprint(*val) if val else None
            # What older checkpoints hold: the same CRC continued over the validation data.
            settings["data_crc32"] = _fingerprint(*(val or ()), start=settings["train_crc32"])
            settings["weights_crc32"] = None if w is None else _fingerprint(w)
            settings["shuffle"] = ("seeded" if self.shuffle is True else
                                   "none" if self.shuffle is False else "custom")
        return settings

    def set_data(self, X, y, sample_weight=None):
        """Train the next epochs on (X, y), of the network's width, keeping the
        network, its device copy's buffers where they fit, the thread tuner and
        the History; the first layer's plan is made for the new data, or kept
        where its compressed rows are exactly the new X (partial_fit) or where
        it holds nothing of its data (the zero-skipping tiles'). Epoch e
        still shuffles with (seed, e). sample_weight : the new data's, or None;
        the class_weight given at the start applies to it. Not for a
        checkpointed run, whose checkpoint records one data set."""
        if self.checkpoint is not None:
            raise ValueError("set_data: a run with a checkpoint trains on the data it was "
                             "started with (the checkpoint records it)")
        if self.step:
            raise ValueError(f"set_data: the run stands inside epoch {self.epoch + 1} (step "
                             f"{self.step}); change the data between epochs")
        earlier, kept = self._plan, []

        def unchanged(converted):  # partial_fit's X again: keep the plan, skip the scan
            if earlier is not None and first_layer.holds(earlier, converted):
                kept.append(earlier)
            return bool(kept)

        X = check.features("X", X, self.net.n_inputs, self.net.dtype, unchanged)
        if not kept and earlier is not None and first_layer.reusable(earlier):
            kept.append(earlier)  # (X scanned: its plan holds nothing to compare)
        y = self.net.check_targets("y", y, X.shape[0])
        w = sample_weights(self.net, y, sample_weight, self.class_weight)
        if self._held_out:  # early stopping watches a held-out part of this data too
            X, y, w, self.val = self._split(X, y, w)
            self._val_plan = None
        settings = self._settings(X, y, self.val, w)
        if self.optimizer.rule == "sgd":
            check.sgd_step(self.lr, settings["batch_size"], self.net.dtype)
        self.X, self.y, self.weights, self.settings = X, y, self._kernel_weights(w), settings
        self.history.steps_per_epoch = math.ceil(X.shape[0] / settings["batch_size"])
        # A held-out split makes X another array than the one checked against the plan.
        if not (kept and self._plan_rows == settings["batch_size"] and not self._held_out):
            self._plan = None
        self._stepper = self._run = None

    def _saved_state(self):
        """The optimizer's state for a checkpoint: its arrays (never in saved
        models) and the schedule's position."""
        arrays = {}
        for name, part in zip(("mW", "mb", "vW", "vb"), self._state or ()):
            for i, a in enumerate(part):
                if a.size:
                    arrays[f"optimizer_{name}{i}"] = a
        state = {"arrays": arrays, "schedule": self.schedule.to_dict()}
        if self.watch is not None:
            arrays.update(self.watch.arrays())
            state["stopping"] = self.watch.to_dict()
        return state

    def _mark_stop(self):
        """Early stopping's record in the History."""
        h, w = self.history, self.watch
        h.val_scores, h.best_epoch, h.stopped_epoch = w.values, w.best_epoch, w.stopped_epoch
        h.stop_reason = w.reason if w.stopped_epoch is not None else None

    @property
    def stopped(self):
        """Whether early stopping has ended this run."""
        return self.watch is not None and self.watch.stopped_epoch is not None

    def fit(self, epochs):
        """Train until ``epochs`` epochs are done in all; return the History.

        Raises as ``train`` does; a run already past ``epochs`` is a
        ValueError, and one at ``epochs`` returns at once."""
        epochs = check.positive_int("epochs", epochs)
        if self._diverged is not None:
            raise ValueError(f"this Trainer's run diverged {self._diverged}; its state is "
                             "that of the failed chunk: start a new Trainer (e.g. with a "
                             "smaller learning rate)")
        if self.stopped:  # (a resumed run that early stopping had ended: its weights)
            self._adopt_resumed_layers()
            return self.history
        if (self.epoch, self.step) > (epochs, 0):
            done = f"{self.epoch} epoch{'s' if self.epoch != 1 else ''}" + (
                f" and {self.step} iterations" if self.step else "")
            where = (f"cannot resume from {os.fsdecode(self.checkpoint)}" if self.resume
                     else "cannot train")
            raise ValueError(f"{where}: it has already run {done}, more than epochs={epochs}")
        run = self._prepare()
        try:
            return self._epochs(run, epochs)
        except DivergenceError as exc:
            self._diverged = f"at iteration {exc.iteration}"
            raise

    def _epochs(self, run, epochs):
        """fit's loop over the epochs left."""
        history, n = self.history, self.X.shape[0]
        with _deferred_interrupt(self.checkpoint is not None) as interrupted:
            while self.epoch < epochs:
                order = self._order(n)
                run.lr = self.schedule.rate()
                started, compiling = time.perf_counter(), compile_lock.seconds_spent()
                while self.step < history.steps_per_epoch:
                    self.step = run.chunk(order, self.epoch, self.step)
                    if self.progress is not None:
                        self.progress(self.epoch, self.step, history.steps_per_epoch, history)
                    if interrupted() and self.step < history.steps_per_epoch:
                        run.stepper.sync()
                        self._saves.save(self.net, self.settings, self.epoch, self.step,
                                         history, self._saved_state())
                        raise KeyboardInterrupt
                # Compiling the kernels happens once per shape: not the epoch's speed.
                compiled = compile_lock.seconds_spent() - compiling
                history.epoch_seconds.append(time.perf_counter() - started - compiled)
                mean = _epoch_mean(history, n, self.settings["batch_size"])
                self.schedule.epoch_ended(n, mean)
                if self.watch is not None:
                    self._watch_epoch(run)
                self.epoch, self.step = self.epoch + 1, 0
                if self.checkpoint is not None:
                    run.stepper.sync()
                    self._saves.save(self.net, self.settings, self.epoch, self.step, history,
                                     self._saved_state())
                if interrupted():
                    raise KeyboardInterrupt
                if self.stopped:
                    break
        run.stepper.sync()
        return history

    def _watch_epoch(self, run):
        """Early stopping after an epoch: evaluate, and on a stop give the
        network its best weights back (where asked)."""
        run.stepper.sync()
        cost, error = run.evaluate()
        value = cost if self.early_stopping.metric == "cost" else error
        weights = list(run.Ws) + list(run.bs)
        if self.watch.epoch_ended(self.epoch, value, weights) and self.watch.best_weights:
            for a, best in zip(weights, self.watch.best_weights):
                a[...] = best
            run.stepper.push()
        self._mark_stop()

    def _adopt_resumed_layers(self):
        """The checkpoint's weights into the network, once (at the first fit:
        a refused fit leaves the network as it was)."""
        if self._resumed_layers is not None:
            self.net.layers, self._resumed_layers = self._resumed_layers, None

    def _prepare(self):
        """The run's stepper over the network's current weights: built at the
        first fit, rebuilt (keeping the first layer's plan) only where the
        network's arrays were replaced since."""
        net = self.net
        self._adopt_resumed_layers()
        Ws, bs = net.checked_layers()
        if self._run is not None and self._run.holds(Ws, bs):
            self._run.stepper.push()  # the host weights may have been edited in place
            return self._run
        rows = self.settings["batch_size"]
        if self._plan is None and self.device == "cpu":
            self._plan = first_layer.plan(net.sizes, net.dtype, self.X, rows)
            self._plan_rows = rows
        if self._val_plan is None and self.val is not None and (
                self.eval_every or self.watch is not None):  # evaluated repeatedly
            # Validation runs every eval_every iterations: plan its first layer once.
            self._val_plan = first_layer.plan(net.sizes, net.dtype, self.val[0], rows, "repeat")
        if self._state is None:
            saved = self._state_arrays
            check_saved = (None if not self.resume else
                           lambda key, old, like: _check_saved(self.checkpoint, key, old, like))
            self._state = optimizers.state_arrays(self.optimizer, Ws, bs, saved, check_saved)
        self._stepper = backends.make_stepper(self.device, net, Ws, bs, self.X, self.y,
                                              rows, self._plan, self.optimizer, self._state,
                                              self.weights)
        # A held-out set is early stopping's alone: not evaluated every eval_every.
        self._run = _Run(net, Ws, bs, self._stepper, self.history, self.lr,
                         0 if self._held_out else self.eval_every, self.val, self._val_plan)
        return self._run


def chunk_steps(sizes, batch_size, macs=None):
    """Iterations per compiled call: MAX_CHUNK, or as many as make ``macs``
    (None: CHUNK_MACS) multiply-adds of forward pass where steps are smaller
    than that allows. Each call costs about 20 us in Python (the checks and
    the history between chunks), as much as four steps of 13-32-1 on
    batches of 16."""
    macs = CHUNK_MACS if macs is None else macs
    return max(MAX_CHUNK, macs // forward_macs(sizes, batch_size))


class _Run:
    """One training run's state: runs chunks of iterations and evaluations."""

    def __init__(self, net, Ws, bs, stepper, history, lr, eval_every, val, val_plan):
        self.net, self.Ws, self.bs, self.stepper = net, Ws, bs, stepper
        self.history, self.lr, self.eval_every, self.val = history, lr, eval_every, val
        self.val_plan = val_plan

    def holds(self, Ws, bs):
        """Whether this run trains these very arrays."""
        return all(a is b for a, b in zip(self.Ws + self.bs, Ws + bs))

    def chunk(self, order, epoch, step):
        """Run iterations from ``step`` up to the next evaluation point, the
        end of the epoch, or ``chunk_steps`` of them; return the new step."""
        h = self.history
        done_before = epoch * h.steps_per_epoch + step
        stepper = self.stepper
        size = min(h.steps_per_epoch - step,
                   chunk_steps(self.net.sizes, stepper.batch_size, stepper.chunk_macs))
        if self.eval_every:
            size = min(size, self.eval_every - done_before % self.eval_every)
        costs, errors = np.empty(size), np.empty(size)
        snapshot = stepper.snapshot()  # where the weights are: a device's stay there
        with _quiet():
            done = stepper.run(order, step, size, self.lr, costs, errors, len(h.batch_cost))
        # The compiled loop stops at a non-finite cost; the weights are checked
        # once per chunk too (a ReLU can hide an inf weight behind a finite cost).
        if done < size or not stepper.weights_finite():
            self._replay(snapshot, order, epoch, step, size)
        else:
            h.batch_cost.extend(costs.tolist())
            h.batch_error.extend(errors.tolist())
        iteration = done_before + size
        if self.val is not None and self.eval_every and iteration % self.eval_every == 0:
            self.stepper.sync()
            cost, error = self.evaluate()
            h.val_iteration.append(iteration)
            h.val_cost.append(cost)
            h.val_error.append(error)
        return step + size

    def evaluate(self):
        """(cost, error) of the current weights on the validation set."""
        with _threads_like(self.stepper):
            return evaluate_prepared(self.net, self.Ws, self.bs, *self.val, self.val_plan)

    def _replay(self, snapshot, order, epoch, step, size):
        """Replay a diverged chunk from ``snapshot`` one step at a time, to stop
        at the last finite weights; record the steps up to the bad one and
        raise DivergenceError. (Returns, having recorded every step, only if a
        non-deterministic device does not diverge again.)"""
        stepper = self.stepper
        stepper.restore(snapshot)
        h = self.history
        cost, error = np.empty(1), np.empty(1)
        for s in range(step, step + size):
            before = stepper.snapshot()
            with _quiet():
                done = stepper.run(order, s, 1, self.lr, cost, error, len(h.batch_cost))
            h.batch_cost.append(float(cost[0]))
            h.batch_error.append(float(error[0]))
            if done == 0:
                what = f"the mini-batch cost is {cost[0]}"
                break
            if not stepper.weights_finite():
                stepper.restore(before)
                what = "its update made the weights non-finite"
                break
        else:
            return
        stepper.sync()  # the last finite weights, into the network's arrays
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


def _epoch_mean(history, n, batch_size):
    """The last epoch's mean training cost over its samples (each batch's
    cost weighted by its size), as scikit-learn's loss_."""
    costs = np.asarray(history.batch_cost[-history.steps_per_epoch:])
    sizes = np.full(costs.shape[0], batch_size, np.float64)
    sizes[-1] = n - batch_size * (costs.shape[0] - 1)
    return float(costs @ sizes / n)


def _check_saved(path, key, saved, like):
    """A checkpoint's array ``key`` must be there, real, and shaped like ``like``."""
    if saved is None:
        raise DataError(f"{os.fsdecode(path)}: checkpoint is incomplete (no {key})")
    if saved.shape != like.shape or saved.dtype.kind != "f":
        raise DataError(f"{os.fsdecode(path)}: checkpoint's {key} is {saved.dtype} "
                        f"{saved.shape}, not {like.dtype} {like.shape}")


class _CheckpointFile:
    """A run's checkpoint path, written only over the run's own last
    checkpoint (or the one it resumed from), so two runs given the same path
    never destroy each other's: the other finds the file changed and stops."""

    def __init__(self, path, identity, resumed=False):
        self.path, self.identity = path, identity
        self.left = "the checkpoint resumed from is unchanged" if resumed else None

    def save(self, net, settings, epoch, step, history, state):
        try:
            self.identity = save_checkpoint(self.path, net, settings, epoch, step, history,
                                            state, expected=self.identity)
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
