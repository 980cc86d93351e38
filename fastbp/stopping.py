"""Early stopping: watch a validation metric after every epoch, stop when it
no longer improves, and keep the best weights (scikit-learn's MLP rule).

After each epoch the metric (the validation cost, or the misclassification
rate) is compared with the best so far: an epoch that does not beat it by at
least ``tol`` counts as stale, one that does resets the count, and the best
weights are those of the lowest value seen. Training stops once more than
``patience`` epochs in a row were stale (scikit-learn's n_iter_no_change),
and, with ``restore_best``, the network gets the best weights back.
"""

import math
from dataclasses import asdict, dataclass

import numpy as np

from . import checks as check

METRICS = ("cost", "error")


@dataclass(frozen=True)
class EarlyStopping:
    """patience : int >= 1; tol : float >= 0; validation_fraction : the share
    of the training data held out when ``train`` gets no validation set
    (stratified by class for classification); restore_best : give the
    network the best epoch's weights when it stops; metric : "cost" or
    "error" (classification), lower is better."""

    patience: int = 10
    tol: float = 1e-4
    validation_fraction: float = 0.1
    restore_best: bool = True
    metric: str = "cost"

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "patience", check.positive_int("patience", self.patience))
        tol = self.tol
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (
                math.isfinite(tol) and tol >= 0):
            raise ValueError(f"tol must be a finite number >= 0; got {tol!r}")
        set_(self, "tol", float(tol))
        fraction = self.validation_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
                0 < fraction < 1):
            raise ValueError(f"validation_fraction must be in (0, 1); got {fraction!r}")
        set_(self, "validation_fraction", float(fraction))
        set_(self, "restore_best", check.flag("restore_best", self.restore_best))
        set_(self, "metric", check.choice("metric", self.metric, METRICS))

    def settings(self):
        return asdict(self)


def split(n, fraction, seed, strata=None):
    """(keep, held): sorted row indices of the training part and of a
    held-out ``fraction`` of n rows, drawn from ``seed``; with ``strata``
    ((n,) class labels), that fraction of each class (at least one row of
    each class with two or more). Raises ValueError when either part would be
    empty."""
    rng = np.random.default_rng([seed, 0x5EED])
    if strata is not None:
        held = []
        for label in np.unique(strata):
            rows = np.flatnonzero(strata == label)
            take = min(int(round(fraction * rows.shape[0])), rows.shape[0] - 1)
            if rows.shape[0] >= 2:
                take = max(take, 1)
            held.append(rng.permutation(rows)[:take])
        held = np.sort(np.concatenate(held))
    else:
        held = np.sort(rng.permutation(n)[:int(round(fraction * n))])
    if held.shape[0] == 0 or held.shape[0] == n:
        raise ValueError(f"validation_fraction={fraction} of {n} samples leaves "
                         f"{held.shape[0]} for validation and {n - held.shape[0]} for "
                         "training; both need at least one")
    keep = np.ones(n, bool)
    keep[held] = False
    return np.flatnonzero(keep), held


class Watch:
    """The early-stopping state of one run; ``to_dict``/``arrays`` go into
    checkpoints so that a resumed run stops where an uninterrupted one would."""

    def __init__(self, rule, saved=None, arrays=None):
        saved = saved or {}
        self.rule = rule
        best = saved.get("best")
        self.best = math.inf if best is None else float(best)
        self.stale = int(saved.get("stale", 0))
        self.best_epoch = saved.get("best_epoch")
        self.stopped_epoch = saved.get("stopped_epoch")
        self.values = list(saved.get("values", []))
        arrays = arrays or {}
        self.best_weights = [arrays[k] for k in sorted(arrays, key=_index)] or None

    def epoch_ended(self, epoch, value, weights):
        """After epoch ``epoch`` (0-based) with the metric ``value`` and the
        arrays ``weights``: update the state; return whether to stop."""
        self.values.append(float(value))
        self.stale = self.stale + 1 if value > self.best - self.rule.tol else 0
        if value < self.best:
            self.best, self.best_epoch = float(value), epoch + 1
            if self.rule.restore_best:
                self.best_weights = [a.copy() for a in weights]
        if self.stale > self.rule.patience:
            self.stopped_epoch = epoch + 1
        return self.stopped_epoch is not None

    @property
    def reason(self):
        return (f"validation {self.rule.metric} did not improve by tol={self.rule.tol:g} for "
                f"more than patience={self.rule.patience} epochs")

    def to_dict(self):
        return {"best": None if math.isinf(self.best) else self.best, "stale": self.stale,
                "best_epoch": self.best_epoch, "stopped_epoch": self.stopped_epoch,
                "values": self.values}

    def arrays(self):
        return {f"stopping_best{i}": a for i, a in enumerate(self.best_weights or [])}


def _index(name):
    return int(name.rsplit("best", 1)[1])
