"""The optimizers ``fastbp.train`` takes: SGD (with momentum or Nesterov's)
and Adam, each with an L2 penalty and a learning-rate schedule, defined as
scikit-learn's MLP optimizers define them (``kernels/optim.py`` has the
rules, ``fastbp.reference.optimizer_step`` the plain NumPy oracle).

The L2 penalty ``alpha`` acts on weights, not biases, with scikit-learn's
MLP semantics: the cost J of (6.19)/(6.20) gains alpha / (2 n_b) sum W^2 and
each weight gradient alpha W / n_b.

Schedules (the rate changes between epochs, as scikit-learn changes it):
"constant"; "invscaling": lr / (t + 1)^power_t in epoch e, t = e n the
samples seen before it; "adaptive": lr divided by 5 each time the epoch's
mean training cost has not improved by ``tol`` for more than
``n_iter_no_change`` epochs.
"""

import math
import numbers
from dataclasses import asdict, dataclass

import numpy as np

from . import checks as check
from .kernels import codes

SCHEDULES = ("constant", "invscaling", "adaptive")


def _unit_interval(name, value, closed=False):
    """A float in [0, 1) (or [0, 1] when closed)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number in [0, 1{']' if closed else ')'}; "
                         f"got {value!r}")
    value = float(value)
    if not (0 <= value < 1 or (closed and value == 1)):
        raise ValueError(f"{name} must be in [0, 1{']' if closed else ')'}; got {value!r}")
    return value


def _non_negative(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    return float(value)


@dataclass(frozen=True, kw_only=True)
class _Optimizer:
    """What every optimizer shares: the penalty and the schedule (keyword
    arguments; each optimizer's own come first, lr leading)."""

    alpha: float = 0.0
    schedule: str = "constant"
    power_t: float = 0.5
    n_iter_no_change: int = 10
    tol: float = 1e-4

    def _check_shared(self):
        set_ = object.__setattr__  # frozen: normalise the checked values once
        set_(self, "lr", check.positive_float("lr", self.lr))
        set_(self, "alpha", _non_negative("alpha", self.alpha))
        set_(self, "schedule", check.choice("schedule", self.schedule, SCHEDULES))
        set_(self, "power_t", _non_negative("power_t", self.power_t))
        set_(self, "n_iter_no_change", check.positive_int("n_iter_no_change",
                                                          self.n_iter_no_change))
        set_(self, "tol", _non_negative("tol", self.tol))

    @property
    def plain(self):
        """Plain SGD at a constant rate, no penalty: the zero-skipping fast path."""
        return self.rule == "sgd" and self.alpha == 0

    def settings(self):
        """What a checkpoint records of this optimizer (None: plain SGD at a
        constant rate, as every run before optimizers was)."""
        if self.plain and self.schedule == "constant":
            return None
        return {"optimizer": type(self).__name__, **asdict(self)}


@dataclass(frozen=True)
class SGD(_Optimizer):
    """Mini-batch SGD (6.23), with momentum (scikit-learn's SGDOptimizer:
    v = momentum v - lr g; w += v; Nesterov: w += momentum v - lr g)."""

    lr: float = 0.5
    momentum: float = 0.0
    nesterov: bool = False

    def __post_init__(self):
        self._check_shared()
        object.__setattr__(self, "momentum", _unit_interval("momentum", self.momentum))
        object.__setattr__(self, "nesterov", check.flag("nesterov", self.nesterov))

    @property
    def rule(self):
        if self.momentum == 0:
            return "sgd"
        return "nesterov" if self.nesterov else "momentum"


@dataclass(frozen=True)
class Adam(_Optimizer):
    """Adam, as scikit-learn's AdamOptimizer: m = b1 m + (1 - b1) g,
    v = b2 v + (1 - b2) g^2, w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)."""

    lr: float = 0.001
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        self._check_shared()
        object.__setattr__(self, "beta1", _unit_interval("beta1", self.beta1))
        object.__setattr__(self, "beta2", _unit_interval("beta2", self.beta2))
        object.__setattr__(self, "eps", check.positive_float("eps", self.eps))

    rule = "adam"
    momentum = 0.0


def kernel_settings(optimizer):
    """(rule code, momentum, beta1, beta2, eps, alpha) for ``kernels.arguments.Steps``."""
    return (codes.RULES[optimizer.rule], optimizer.momentum, getattr(optimizer, "beta1", 0.9),
            getattr(optimizer, "beta2", 0.999), getattr(optimizer, "eps", 1e-8),
            optimizer.alpha)


def state_sets(optimizer):
    """How many arrays of state each parameter has: 0, 1 (velocity), 2 (Adam)."""
    return {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2}[optimizer.rule]


def state_arrays(optimizer, Ws, bs, saved=None, check_saved=None):
    """(mWs, mbs, vWs, vbs) for ``kernels.arguments.Params``: for each set the
    rule keeps, arrays shaped like the parameters (``saved``'s
    ``optimizer_<name><i>`` arrays where given, else zeros), empty arrays for
    the others. check_saved(key, array or None, like), where given, vets each
    saved array first (a resumed checkpoint must hold them all)."""
    sets, saved = state_sets(optimizer), saved or {}
    parts = []
    for index, (name, like) in enumerate((("mW", Ws), ("mb", bs), ("vW", Ws), ("vb", bs))):
        part = []
        for i, a in enumerate(like):
            if sets <= index // 2:
                part.append(np.zeros((0,) * a.ndim, a.dtype))
                continue
            old = saved.get(f"optimizer_{name}{i}")
            if check_saved is not None:
                check_saved(f"optimizer_{name}{i}", old, a)
            part.append(np.array(old, a.dtype) if old is not None else np.zeros_like(a))
        parts.append(tuple(part))
    return tuple(parts)


class Schedule:
    """The rate of each epoch under an optimizer's schedule; its state
    (``to_dict``) goes into checkpoints."""

    def __init__(self, optimizer, state=None, seen=0):
        """state : a checkpoint's ``to_dict`` (None: a fresh run); seen : the
        samples trained on before, where a checkpoint does not say."""
        self.optimizer = optimizer
        state = state or {}
        self.lr = float(state.get("lr", optimizer.lr))  # adaptive's current rate
        best = state.get("best")
        self.best = math.inf if best is None else float(best)
        self.stale = int(state.get("stale", 0))
        self.seen = int(state.get("seen", seen))  # samples of the epochs done

    def rate(self):
        """The rate of the next epoch."""
        if self.optimizer.schedule == "invscaling":
            return self.optimizer.lr / (self.seen + 1) ** self.optimizer.power_t
        return self.lr

    def epoch_ended(self, n_samples, mean_cost):
        """After an epoch over ``n_samples`` of mean training cost ``mean_cost``."""
        self.seen += n_samples
        if self.optimizer.schedule != "adaptive":
            return
        self.stale = self.stale + 1 if mean_cost > self.best - self.optimizer.tol else 0
        self.best = min(self.best, mean_cost)
        if self.stale > self.optimizer.n_iter_no_change:
            self.lr /= 5.0
            self.stale = 0

    def to_dict(self):
        return {"lr": self.lr, "best": None if math.isinf(self.best) else self.best,
                "stale": self.stale, "seen": self.seen}
