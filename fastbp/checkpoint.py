"""Training checkpoints: weights, position in the run, history, settings.

The shuffle of epoch e is drawn from (seed, e) alone, so "where we are"
(epoch, step) is the whole RNG state: resuming replays exactly the batches
an uninterrupted run would have seen.
"""

from .errors import DataError
from .history import History
from .network import network_from
from .storage import ANY, CHECKPOINT_FORMAT, atomic_save_npz, load_npz

VERSION = 1


def save_checkpoint(path, net, settings, epoch, step, history, state=None, expected=ANY):
    """Write a checkpoint atomically: after ``epoch`` full epochs and ``step``
    further iterations, with the training ``settings`` that must match on
    resume and the optimizer's and early stopping's ``state`` ({"arrays":
    {name: array}, "schedule": dict, "stopping": dict}, or None).
    ``expected`` as in ``storage.write_atomically`` (None: a
    new file; the identity of this run's last checkpoint: only that one is
    replaced). Returns the written file's ``storage.file_identity``."""
    arrays = net.weight_arrays()
    arrays.update(history.to_arrays())
    state = state or {}
    arrays.update(state.get("arrays") or {})
    meta = {"format": CHECKPOINT_FORMAT, "version": VERSION, "network": net.metadata(),
            "settings": settings, "epoch": epoch, "step": step,
            "steps_per_epoch": history.steps_per_epoch, "schedule": state.get("schedule"),
            "stopping": state.get("stopping")}
    return atomic_save_npz(path, arrays, meta, expected)


def load_checkpoint(path, net, settings):
    """Read ``path`` for resuming ``net`` with ``settings``.

    Returns (network, epoch, step, history, state), state as
    ``save_checkpoint`` takes it. Raises ValueError naming the first setting
    or network property that differs from the checkpoint's, and DataError
    when the file is damaged.
    """
    arrays, meta = load_npz(path, (CHECKPOINT_FORMAT,))
    if meta.get("version") != VERSION:
        raise DataError(f"{path}: unsupported checkpoint version {meta.get('version')!r}")
    saved_net = network_from(arrays, meta.get("network") or {}, path)
    for key in ("sizes", "activation", "loss"):
        if getattr(saved_net, key) != getattr(net, key):
            raise ValueError(f"cannot resume from {path}: the checkpoint's {key} is "
                             f"{getattr(saved_net, key)!r}, this network's is "
                             f"{getattr(net, key)!r}")
    if saved_net.dtype != net.dtype:
        raise ValueError(f"cannot resume from {path}: the checkpoint's dtype is "
                         f"{saved_net.dtype.name}, this network's is {net.dtype.name}")
    saved = meta.get("settings")
    saved = saved if isinstance(saved, dict) else {}
    for key, value in settings.items():
        if key in _ADDED_LATER and key not in saved:
            continue  # an older checkpoint: its data_crc32 covers it
        if saved.get(key) != value:
            capped = key == "batch_size" and settings.get("n_samples") in (value, saved.get(key))
            note = _CAPPED if capped else ""
            raise ValueError(f"cannot resume from {path}: it was trained with "
                             f"{_setting(key, saved.get(key))}, this run asks for "
                             f"{_setting(key, value)}{note}")
    try:
        epoch, step = _count(meta, "epoch"), _count(meta, "step")
        steps_per_epoch = _count(meta, "steps_per_epoch")
        history = History.from_arrays(arrays, steps_per_epoch)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: checkpoint is incomplete ({exc})") from None
    done = epoch * steps_per_epoch + step
    if (step >= steps_per_epoch or history.iterations != done
            or len(history.batch_error) != done or history.epochs != epoch
            or len(history.val_cost) != len(history.val_iteration)
            or len(history.val_error) != len(history.val_iteration)):
        raise DataError(f"{path}: checkpoint is inconsistent: epoch {epoch}, step {step}, "
                        f"{history.iterations} iterations and {history.epochs} epochs "
                        "recorded")
    state = {"arrays": {k: v for k, v in arrays.items() if k.startswith("optimizer_")},
             "stopping_arrays": {k: v for k, v in arrays.items() if k.startswith("stopping_")}}
    for key in ("schedule", "stopping"):
        state[key] = meta.get(key) if isinstance(meta.get(key), dict) else None
    return saved_net, epoch, step, history, state


# Settings whose raw name would puzzle a user in an error message.
_DESCRIBE = {"data_crc32": "training/validation data of CRC-32",
             "train_crc32": "training data (X, y) of CRC-32",
             "val_crc32": "validation data of CRC-32",
             "weights_crc32": "sample and class weights of CRC-32"}
# Settings that checkpoints of earlier versions do not hold ("optimizer": None,
# plain SGD at a constant rate, is what every one of them was trained with).
_ADDED_LATER = {"train_crc32", "val_crc32", "weights_crc32", "shuffle"}
# A batch_size is stored as used: at most the number of samples.
_CAPPED = " (a batch_size above the number of samples counts as that number)"


def _setting(key, value):
    if key == "val_crc32" and value is None:
        return "no validation data"
    if key == "weights_crc32" and value is None:
        return "no sample or class weights"
    return f"{_DESCRIBE.get(key, key)}={value!r}"


def _count(meta, key):
    """A non-negative int from the metadata (bools and floats refused)."""
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} is {value!r}")
    return value
