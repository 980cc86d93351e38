"""Saving and loading .npz files safely.

Writes go to a temporary file in the destination folder and are renamed
into place with ``os.replace``, so a crash or Ctrl-C mid-write never leaves
a half-written file and never destroys the previous one. Reads refuse
pickled objects and turn every kind of damage into ``DataError``.
"""

import json
import os
import tempfile
import zipfile

import numpy as np

from .errors import DataError

META_KEY = "__meta__"
NETWORK_FORMAT = "fastbp.network"
CHECKPOINT_FORMAT = "fastbp.checkpoint"


def atomic_save_npz(path, arrays, meta):
    """Write ``arrays`` (name -> ndarray) and JSON ``meta`` to ``path`` atomically."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"cannot save to {path!r}: folder {folder!r} does not exist")
    payload = dict(arrays)
    payload[META_KEY] = np.array(json.dumps(meta))
    fd, tmp = tempfile.mkstemp(prefix=".fastbp-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_npz(path, formats):
    """Read arrays and metadata written by ``atomic_save_npz``.

    Raises DataError naming the file when it is missing its metadata, is not
    of one of ``formats``, is truncated, or is not a NumPy .npz file at all.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not a readable fastbp file ({exc})") from None
    if META_KEY not in arrays:
        raise DataError(f"{path}: not a fastbp file (no metadata)")
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: metadata is not valid JSON ({exc})") from None
    found = meta.get("format") if isinstance(meta, dict) else None
    if found not in formats:
        raise DataError(f"{path}: expected a {' or '.join(formats)} file, found {found!r}")
    return arrays, meta
