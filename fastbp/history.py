"""History: what a training run measured, per iteration and per evaluation."""

from dataclasses import dataclass, field

import numpy as np

_SERIES = ("epoch_seconds", "batch_cost", "batch_error", "val_iteration", "val_cost",
           "val_error")


@dataclass
class History:
    """Curves of Example 6.2 (Figures 6.7/6.8) and timings.

    batch_cost, batch_error : per iteration, on that iteration's mini-batch
        (blue curves); batch_error is the misclassification rate (NaN for
        regression).
    val_iteration, val_cost, val_error : every ``eval_every`` iterations, on
        the whole validation set (red curves); val_iteration is 1-based.
    epoch_seconds : wall time of each completed epoch, less the time spent
        compiling (or loading) CPU kernels in it, which happens once per shape
        (a CUDA kernel's first compilation stays in its epoch's time).
    steps_per_epoch : iterations per epoch, ceil(n / batch_size).
    val_scores : with early stopping, the validation metric after each epoch;
    best_epoch : the epoch (1-based) of its lowest value; stopped_epoch,
    stop_reason : when and why early stopping ended the run (None: it did not).
    """

    steps_per_epoch: int = 0
    epoch_seconds: list = field(default_factory=list)
    batch_cost: list = field(default_factory=list)
    batch_error: list = field(default_factory=list)
    val_iteration: list = field(default_factory=list)
    val_cost: list = field(default_factory=list)
    val_error: list = field(default_factory=list)
    val_scores: list = field(default_factory=list)
    best_epoch: int = None
    stopped_epoch: int = None
    stop_reason: str = None

    @property
    def iterations(self):
        """Number of SGD iterations recorded."""
        return len(self.batch_cost)

    @property
    def epochs(self):
        """Number of completed epochs."""
        return len(self.epoch_seconds)

    def epoch_cost(self, epoch):
        """Mean mini-batch cost over the iterations of ``epoch`` (0-based)."""
        k = self.steps_per_epoch
        return float(np.mean(self.batch_cost[epoch * k:(epoch + 1) * k]))

    def to_arrays(self):
        """name -> float64/int64 array, for saving in a checkpoint."""
        arrays = {f"history_{name}": np.asarray(getattr(self, name), np.float64)
                  for name in _SERIES if name != "val_iteration"}
        arrays["history_val_iteration"] = np.asarray(self.val_iteration, np.int64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays, steps_per_epoch):
        """Inverse of ``to_arrays``; raises KeyError when a series is missing
        and ValueError when one is not a 1-D array of the saved dtype."""
        values = {}
        for name in _SERIES:
            a = arrays[f"history_{name}"]
            kind = "i" if name == "val_iteration" else "f"
            if a.ndim != 1 or a.dtype.kind != kind:
                raise ValueError(f"history_{name} is {a.dtype} {a.shape}, not a 1-D series")
            values[name] = a.tolist()
        return cls(steps_per_epoch=steps_per_epoch, **values)
