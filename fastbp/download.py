"""Download MNIST from public mirrors into the cache, verified by SHA-256.

Each file is fetched to a temporary name in the destination folder, its
uncompressed content is checked against ``datasets.SHA256``, and only then
is it renamed into place: the cache never holds a partial or wrong file.
The module prints nothing; callers pass a ``progress`` callback for a UI.
"""

import errno
import gzip
import hashlib
import http.client
import os
import socket
import urllib.error
import urllib.request
import zlib

from . import datasets
from .errors import DataError
from .storage import discarded_on_failure, new_temporary_file

# Tried in order; the first one that serves a file with the right checksum wins.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MIRRORS_ENV = "FASTBP_MNIST_MIRRORS"
# Seconds a connection or a read may stall: without a network we fail fast.
TIMEOUT = 5.0
_BLOCK = 1 << 16
_SCHEMES = ("http://", "https://", "file://")


class DownloadError(DataError):
    """MNIST could not be downloaded: every mirror failed for some file.

    The message lists each mirror's failure and says how to use a local copy.
    """


def mirrors():
    """Base URLs to try, in order: ``$FASTBP_MNIST_MIRRORS`` (comma-separated)
    when set and not empty, else ``MIRRORS``."""
    raw = os.environ.get(MIRRORS_ENV, "")
    bases = [part.strip() for part in raw.split(",") if part.strip()] or list(MIRRORS)
    for base in bases:
        if not base.startswith(_SCHEMES):
            raise DownloadError(f"{MIRRORS_ENV}: {base!r} is not an http://, https:// or "
                                "file:// URL")
    return [base if base.endswith("/") else base + "/" for base in bases]


def download_mnist(folder=None, progress=None):
    """Download the MNIST files that ``folder`` (default: the cache) lacks.

    Parameters
    ----------
    folder : path or None
        Destination, created if needed; default ``datasets.cache_dir()``.
    progress : callable(name, done, total) or None
        Called as bytes arrive: ``name`` is the file name (e.g.
        ``train-images-idx3-ubyte.gz``), ``done`` the bytes received so far
        from the current mirror (0 when a transfer starts), ``total`` the
        size the server announced, or None.

    Returns the folder. Raises DownloadError when all mirrors fail for a
    file; files verified before that stay in the folder.
    """
    folder = os.fspath(folder) if folder is not None else datasets.cache_dir()
    bases = mirrors()
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"{folder}: cannot create the MNIST cache folder ({exc})") from None
    for stem in datasets.missing_files(folder):
        failures = []
        for base in list(bases):
            try:
                _fetch(base + stem + ".gz", stem, folder, progress)
                break
            except _TransferError as exc:
                failures.append(f"{base}{stem}.gz: {exc}")
                if exc.unreachable:  # no point asking it for the other files
                    bases.remove(base)
        else:
            raise DownloadError(_failure_message(folder, stem, failures))
    return folder


class _TransferError(Exception):
    """One mirror failed for one file; ``unreachable`` if it could not be reached."""

    def __init__(self, message, unreachable=False):
        super().__init__(message)
        self.unreachable = unreachable


def _fetch(url, stem, folder, progress):
    """Download ``url`` into ``folder/stem.gz`` via a verified temporary file."""
    name = stem + ".gz"
    fd, tmp = new_temporary_file(folder, prefix=f".{name}.", suffix=".part")
    with discarded_on_failure(tmp):
        with os.fdopen(fd, "wb") as out:
            _transfer(url, name, out, progress)
        digest = _uncompressed_sha256(tmp)
        expected = datasets.SHA256[stem]
        if digest != expected:
            raise _TransferError(f"SHA-256 of the uncompressed content is {digest}, "
                                 f"expected {expected}")
        os.replace(tmp, os.path.join(folder, name))


def _transfer(url, name, out, progress):
    """Copy the body of ``url`` into the open file ``out``, reporting progress."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            if progress is not None:
                progress(name, done, total)
            while block := response.read(_BLOCK):
                out.write(block)
                done += len(block)
                if progress is not None:
                    progress(name, done, total)
    except urllib.error.HTTPError as exc:
        raise _TransferError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise _TransferError(f"cannot fetch ({exc.reason})",
                             unreachable=_is_unreachable(exc.reason)) from None
    except (OSError, http.client.HTTPException) as exc:
        raise _TransferError(f"transfer broken ({type(exc).__name__}: {exc})") from None
    if total is not None and done != total:
        raise _TransferError(f"transfer broken: received {done} of {total} bytes")


def _is_unreachable(reason):
    """Whether a URLError reason means the host itself cannot be reached."""
    return isinstance(reason, (ConnectionError, TimeoutError, socket.gaierror)) or (
        isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH))


def _uncompressed_sha256(path):
    """SHA-256 (hex) of the gunzipped content of ``path``."""
    sha = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            while block := f.read(1 << 20):
                sha.update(block)
    except (OSError, EOFError, zlib.error) as exc:
        raise _TransferError(f"not a complete gzip file ({exc})") from None
    return sha.hexdigest()


def _failure_message(folder, stem, failures):
    files = ", ".join(stem + ".gz" for stem in datasets.FILES.values())
    return (f"could not download MNIST into {folder}: {stem}.gz failed on every mirror: "
            + "; ".join(failures)
            + f". Without internet access, put the four files ({files}) in a folder and "
            "pass it with --data-dir DIR (data_dir= in Python) or set FASTBP_DATA_DIR=DIR; "
            f"{MIRRORS_ENV} sets other mirrors (comma-separated base URLs).")
