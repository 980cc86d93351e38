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


# ``expected`` of write_atomically when any file at the path may be replaced.
ANY = object()


def file_identity(path):
    """(device, inode, size, mtime) of the file at ``path``, or None where
    there is none: a file replaced or rewritten since has another."""
    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def save_target(path):
    """The file that saving to ``path`` replaces, as a str; ValueError
    naming ``path`` where ``save_problem`` finds one."""
    target, problem = save_problem(path)
    if problem:
        raise ValueError(f"cannot save to {os.fsdecode(os.fspath(path))!r}: {problem}")
    return target


def save_problem(path):
    """(target, problem): the file that saving to ``path`` replaces, as a
    str - a symbolic link's target, so the link stays a link and the file
    it points to gets the new content - and why a save there is refused, or
    None: where the target is not a regular file (a device such as
    /dev/null, a FIFO, a folder: renaming a new file onto it would destroy
    it), where the path is a process's file descriptor (/dev/stdout,
    /proc/self/fd/1: whatever that is open on, a log redirected to a file
    included, would be replaced), or where the target's folder is missing."""
    shown = os.fsdecode(os.fspath(path))
    target = os.path.realpath(shown)
    leads = "" if target == os.path.abspath(shown) else f" (it leads to {target})"
    folder = os.path.dirname(target)
    if _through_descriptor(shown):
        return target, "it is a file descriptor's link, not a file name"
    if os.path.lexists(target) and not os.path.isfile(target):
        return target, f"not a regular file{leads}"
    if not os.path.isdir(folder):
        return target, f"folder {folder!r} does not exist{leads}"
    return target, None


# Where Linux keeps processes' file descriptors as symbolic links.
_DESCRIPTOR_LINKS = ("/proc/", "/dev/fd/", "/dev/stdin", "/dev/stdout", "/dev/stderr")


def _through_descriptor(path):
    """Whether ``path`` (str) or a symbolic link it leads through names a
    file descriptor (its own components' links are followed, as open() would)."""
    current = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on links followed
        if current.startswith(_DESCRIPTOR_LINKS):
            return True
        folder = os.path.realpath(os.path.dirname(current))
        if folder.startswith(_DESCRIPTOR_LINKS[:2]):
            return True
        current = os.path.join(folder, os.path.basename(current))
        if not os.path.islink(current):
            return False
        current = os.path.normpath(os.path.join(folder, os.readlink(current)))
    return False


def write_atomically(path, mode, write, expected=ANY):
    """``write(f)`` into a temporary file next to ``path``'s target
    (``save_target``), renamed onto it once written and on disk: the
    previous file stays whole until then. The temporary file takes the
    replaced file's permission bits before anything is written (a private
    file stays private, even while it is written). Hard links to the old
    file keep the old content: the rename gives the path a new file.

    ``expected``: ANY replaces whatever is there; None only creates (the
    file must not exist, checked atomically where the file system has hard
    links); a ``file_identity`` replaces only that very file (another
    process's file at the path is never overwritten; checked just before
    the rename). A conflict is a ValueError naming the path; an OSError is
    re-raised naming ``path`` (not the temporary file). Returns the written
    file's ``file_identity``, taken from the file itself before the rename.
    """
    shown = os.fsdecode(os.fspath(path))
    target = save_target(shown)
    folder = os.path.dirname(target)
    try:
        fd, tmp = new_temporary_file(folder)
    except OSError as exc:
        raise _naming(exc, shown) from None
    with discarded_on_failure(tmp):
        try:
            with os.fdopen(fd, mode) as f:
                _copy_mode(f.fileno(), target)
                write(f)
                f.flush()
                os.fsync(f.fileno())
                st = os.fstat(f.fileno())
            _place(tmp, target, shown, expected)
        except OSError as exc:
            raise _naming(exc, shown) from None
    _sync_folder(folder)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _copy_mode(fd, target):
    """Give the open file ``fd`` the permission bits of ``target``, if it exists."""
    if not hasattr(os, "fchmod"):
        return
    try:
        mode = os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        return
    os.fchmod(fd, mode)


def _place(tmp, target, shown, expected):
    """Rename the written ``tmp`` onto ``target`` as ``expected`` allows."""
    if expected is ANY:
        os.replace(tmp, target)
        return
    if expected is None:
        exists_now = ValueError(f"{shown!r} exists now (written by another run?): left as "
                                "it is, not overwritten")
        try:
            os.link(tmp, target)  # fails, atomically, where the target exists
        except FileExistsError:
            raise exists_now from None
        except OSError:  # no hard links on this file system: check, then rename
            if os.path.lexists(target):
                raise exists_now from None
            os.replace(tmp, target)
        else:
            with contextlib.suppress(OSError):  # written: a stray temporary name is no failure
                os.unlink(tmp)
        return
    if file_identity(target) != expected:
        raise ValueError(f"{shown!r} was replaced, changed or removed since this run "
                         "wrote it (another run?): left as it is")
    os.replace(tmp, target)


def _naming(exc, shown):
    """``exc`` again, its message naming ``shown``."""
    return reworded(exc, f"cannot write {shown}: {exc.strerror or exc}")


def reworded(exc, message):
    """An OSError of ``exc``'s class and errno with ``message`` instead."""
    return type(exc)(exc.errno, message) if exc.errno is not None else type(exc)(message)


def atomic_save_npz(path, arrays, meta, expected=ANY):
    """Write ``arrays`` (name -> ndarray) and JSON ``meta`` to ``path``
    atomically (``write_atomically``; ``expected`` and the result as there)."""
    payload = dict(arrays)
    payload[META_KEY] = np.array(json.dumps(meta))
    return write_atomically(path, "wb", lambda f: np.savez(f, **payload), expected)


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
    except (ValueError, RecursionError) as exc:  # nesting deeper than Python's stack
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
