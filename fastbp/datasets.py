"""MNIST-format data: the IDX reader and the MNIST lookup.

IDX (LeCun's format): a big-endian header, magic ``0x00 0x00 type ndim``
followed by ndim uint32 sizes, then the values. MNIST uses type 0x08 (uint8),
ndim 3 for images (n, 28, 28) and ndim 1 for labels (n,).
"""

import gzip
import os
import struct
import zlib

import numpy as np

from .errors import DataError
from .checks import path_like

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# SHA-256 of the uncompressed files (docs/architecture.md), checked after a download.
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
N_CLASSES = 10
_READ_BLOCK = 1 << 20


def cache_dir():
    """``${XDG_CACHE_HOME:-~/.cache}/fastbp/mnist``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastbp", "mnist")


def find_file(folder, stem):
    """Path of ``stem`` or ``stem.gz`` in ``folder`` (raw preferred), or None."""
    for name in (stem, stem + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def missing_files(folder):
    """Stems of the four IDX files that ``folder`` lacks."""
    return [stem for stem in FILES.values() if find_file(folder, stem) is None]


def read_idx(path, axes=None):
    """Read one IDX file (raw or gzip) as a uint8 array of its stated shape.

    ``axes`` (names such as ``("n", "rows", "cols")``), when given, is the
    layout the caller expects: a file with another number of dimensions is
    refused as such before its sizes are read (they would make it look
    truncated). Sizes in the header are checked against the data actually
    present before anything of that size is allocated, so a header claiming
    billions of items fails at once. Raises DataError naming the file.
    """
    path = path_like("path", path)  # an int would be taken as a file descriptor
    try:
        opener = gzip.open if _is_gzip(path) else open
        with opener(path, "rb") as f:
            header = f.read(4)
            if len(header) < 4:
                raise DataError(f"{path}: truncated IDX header ({len(header)} bytes)")
            zero1, zero2, kind, ndim = header
            if zero1 or zero2 or kind != 0x08 or not 1 <= ndim <= 4:
                raise DataError(f"{path}: not an IDX file of unsigned bytes "
                                f"(magic number 0x{header.hex()}, expected 0x000008NN)")
            if axes is not None and ndim != len(axes):
                raise DataError(f"{path}: expected {len(axes)} dimension"
                                f"{'s' if len(axes) > 1 else ''} ({', '.join(axes)}"
                                f"{',' if len(axes) == 1 else ''}), found {ndim}")
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header")
            dims = struct.unpack(f">{ndim}I", dims_raw)
            expected = int(np.prod(dims, dtype=object))
            body = _read_at_most(f, expected + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if len(body) != expected:
        what = "truncated" if len(body) < expected else "longer than its header says"
        raise DataError(f"{path}: file is {what}: header {dims} needs {expected} bytes of "
                        f"data, found {'more' if len(body) > expected else len(body)}")
    return np.frombuffer(body, np.uint8).reshape(dims)


def _is_gzip(path):
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _read_at_most(f, limit):
    """Read until EOF or ``limit`` bytes, in blocks: never allocates more
    than the data actually present (plus one block)."""
    parts, total = [], 0
    while total < limit:
        block = f.read(min(_READ_BLOCK, limit - total))
        if not block:
            break
        parts.append(block)
        total += len(block)
    return b"".join(parts)


def load_folder(folder):
    """(X_train, y_train, X_test, y_test) from the four IDX files in ``folder``.

    Images become float32 rows in [0, 1] (n, rows * cols); labels int64.
    Checks formats, that image and label counts agree, image sizes agree, and
    labels lie in 0..9.
    """
    folder = path_like("folder", folder)
    return _load_folder(folder, folder)


def _load_folder(folder, shown):
    """load_folder, with the folder called ``shown`` in a missing-files error."""
    missing = missing_files(folder)
    if missing:
        raise DataError(f"{shown}: missing MNIST file(s) {', '.join(missing)} (.gz or raw)")
    out = []
    shape = None
    for split in ("train", "test"):
        img_path = find_file(folder, FILES[f"{split}_images"])
        lab_path = find_file(folder, FILES[f"{split}_labels"])
        images = read_idx(img_path, ("n", "rows", "cols"))
        labels = read_idx(lab_path, ("n",))
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{img_path} holds {images.shape[0]} images but {lab_path} "
                            f"holds {labels.shape[0]} labels")
        if images.shape[0] == 0:
            raise DataError(f"{img_path}: holds no images")
        if images.size == 0:
            raise DataError(f"{img_path}: images of shape {images.shape[1:]} have no pixels")
        if shape is not None and images.shape[1:] != shape:
            raise DataError(f"{img_path}: images are {images.shape[1:]}, the training "
                            f"images are {shape}")
        shape = images.shape[1:]
        if labels.max() >= N_CLASSES:
            bad = int(np.argmax(labels >= N_CLASSES))
            raise DataError(f"{lab_path}: label {int(labels[bad])} at index {bad} is "
                            f"outside 0..{N_CLASSES - 1}")
        X = images.reshape(images.shape[0], -1).astype(np.float32)
        X *= np.float32(1 / 255)
        out += [X, labels.astype(np.int64)]
    return tuple(out)


def locate(data_dir=None):
    """The folder to read MNIST from: ``data_dir``, else ``$FASTBP_DATA_DIR``,
    else the cache. Returns (folder, how it was chosen)."""
    if data_dir is not None:
        return path_like("data_dir", data_dir), "data_dir"
    env = os.environ.get("FASTBP_DATA_DIR")
    if env:
        return env, "FASTBP_DATA_DIR"
    return cache_dir(), "cache"


def mnist(data_dir=None, download=True, progress=None):
    """MNIST as (X_train, y_train, X_test, y_test): float32 pixels in [0, 1],
    shape (60000, 784) and (10000, 784); int64 labels 0..9.

    Looks in ``data_dir``, then ``$FASTBP_DATA_DIR``, then
    ``~/.cache/fastbp/mnist`` (``$XDG_CACHE_HOME`` respected), for the four
    IDX files, gzip or raw. When neither of the first two is given, files
    missing from the cache are downloaded into it first (docs/architecture.md's lookup;
    ``fastbp.download.download_mnist``, ``progress`` passed on), unless
    ``download=False``. A folder that is named is never downloaded into.
    Raises DataError naming the folder or file.
    """
    folder, source = locate(data_dir)
    if download and source == "cache" and missing_files(folder):
        from .download import download_mnist  # imported here: it imports this module

        download_mnist(folder, progress=progress)
    # A folder from the environment is named as such: the user may have
    # forgotten that the variable is set.
    shown = f"{folder} (from $FASTBP_DATA_DIR)" if source == "FASTBP_DATA_DIR" else folder
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise DataError(f"{shown}: is a file, not a folder with the MNIST files")
    if not os.path.isdir(folder):
        hint = "" if source != "cache" else (
            " (pass data_dir=..., or set FASTBP_DATA_DIR to a folder with the four "
            "MNIST IDX files, or download=True)")
        raise DataError(f"{shown}: MNIST folder does not exist{hint}")
    return _load_folder(folder, shown)

