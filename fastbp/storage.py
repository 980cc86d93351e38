"""Saving and loading .npz files safely.

Writes go to a temporary file in the destination folder and are renamed
into place with ``os.replace``, so a crash or Ctrl-C mid-write never leaves
a half-written file and never destroys the previous one. Reads never
unpickle, check every array's stated size against the bytes actually
stored before allocating it, and turn every kind of damage into
``DataError`` naming the file.
"""

import contextlib
import json
import math
import os
import secrets
import zipfile

import numpy as np

from .errors import DataError

META_KEY = "__meta__"
NETWORK_FORMAT = "fastbp.network"
CHECKPOINT_FORMAT = "fastbp.checkpoint"
TEMP_PREFIX = ".fastbp-"
# Array kinds a fastbp file may hold: bool, integers, floats, the JSON string.
_KINDS = "biufU"


@contextlib.contextmanager
def discarded_on_failure(tmp):
    """Delete the temporary file ``tmp`` if the block fails (even on Ctrl-C)."""
    try:
        yield
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def new_temporary_file(folder, prefix=TEMP_PREFIX, suffix=".tmp"):
    """(fd, path) of a new, empty file in ``folder`` for writing, to be renamed
    onto its destination: unique like mkstemp's, but created with 0o666 less
    the umask, as an ordinary open() would (mkstemp gives 0o600, which the
    rename would carry onto the user's file)."""
    while True:
        tmp = os.path.join(folder, f"{prefix}{os.getpid()}-{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                           | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


def atomic_save_npz(path, arrays, meta):
    """Write ``arrays`` (name -> ndarray) and JSON ``meta`` to ``path`` atomically."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"cannot save to {path!r}: folder {folder!r} does not exist")
    payload = dict(arrays)
    payload[META_KEY] = np.array(json.dumps(meta))
    fd, tmp = new_temporary_file(folder)
    with discarded_on_failure(tmp):
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    _sync_folder(folder)


def _sync_folder(folder):
    """Make the rename durable (POSIX); harmless to skip where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_npz(path, formats):
    """Read arrays and metadata written by ``atomic_save_npz``.

    Raises FileNotFoundError when ``path`` does not exist, and DataError
    naming the file when it is missing its metadata, is not of one of
    ``formats``, holds pickled objects, is truncated or corrupt, or is not a
    NumPy .npz file at all.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    if not os.path.isfile(path):
        raise DataError(f"{path}: not a file")
    try:
        arrays = _read_arrays(path)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any damage: bad zip, CRC, header, short member
        raise DataError(f"{path}: not a readable fastbp file "
                        f"({type(exc).__name__}: {exc})") from None
    meta_array = arrays.pop(META_KEY, None)
    if meta_array is None or meta_array.dtype.kind != "U" or meta_array.ndim != 0:
        raise DataError(f"{path}: not a fastbp file (no metadata)")
    try:
        meta = json.loads(meta_array.item())
    except ValueError as exc:
        raise DataError(f"{path}: metadata is not valid JSON ({exc})") from None
    found = meta.get("format") if isinstance(meta, dict) else None
    if found not in formats:
        raise DataError(f"{path}: expected a {' or '.join(formats)} file, found {found!r}")
    return arrays, meta


def _read_arrays(path):
    """name -> array for every member of the .npz at ``path``, without pickle."""
    arrays = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise DataError(f"{path}: unexpected member {info.filename!r}")
            with archive.open(info) as f:
                arrays[info.filename[:-4]] = _read_member(path, info, f)
    return arrays


def _read_member(path, info, f):
    """One .npy member: header checked (dtype, size) before the data is read."""
    name = info.filename[:-4]
    version = np.lib.format.read_magic(f)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read_header(f)
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in _KINDS:
        raise DataError(f"{path}: array {name!r} has dtype {dtype}; fastbp files hold only "
                        "numbers and text (pickled objects are refused)")
    size = math.prod(shape) * dtype.itemsize
    stored = info.file_size - f.tell()
    if stored != size:
        raise DataError(f"{path}: array {name!r} claims shape {shape} ({size} bytes) but "
                        f"the file stores {stored} bytes")
    data = f.read(size + 1)  # one more: reach the end, so the CRC is checked
    if len(data) != size:
        raise DataError(f"{path}: array {name!r} is truncated")
    out = np.empty(math.prod(shape), dtype)  # aligned and writable, unlike the bytes
    out.view(np.uint8)[:] = np.frombuffer(data, np.uint8)
    return out.reshape(shape, order="F" if fortran else "C")
