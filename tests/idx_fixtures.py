"""Tiny MNIST-format folders and a local HTTP mirror for CLI and download tests.

The images are synthetic but learnable: class k lights up a horizontal band
of rows (2k+4, 2k+5) over faint noise, so a net that trains at all
classifies them well after a few dozen SGD steps.
"""

import contextlib
import functools
import gzip
import hashlib
import http.server
import os
import socket
import struct
import threading

import numpy as np

from fastbp.datasets import FILES


def idx_bytes(array):
    """The IDX encoding of a uint8 array: magic 0x0000 08 ndim, sizes, values."""
    array = np.ascontiguousarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def tiny_arrays(n_train=200, n_test=50, seed=0):
    """name (FILES key) -> uint8 array: 28x28 images and labels 0..9."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for k in range(10):
            images[labels == k, 2 * k + 4:2 * k + 6, 4:24] = 255
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels
    return out


def write_tiny_mnist(folder, n_train=200, n_test=50, seed=0, gz=True):
    """Write the four IDX files of a tiny data set into ``folder`` (created).

    Returns {file stem: SHA-256 of its uncompressed content}.
    """
    os.makedirs(folder, exist_ok=True)
    digests = {}
    for key, array in tiny_arrays(n_train, n_test, seed).items():
        stem, data = FILES[key], idx_bytes(array)
        digests[stem] = hashlib.sha256(data).hexdigest()
        if gz:
            with gzip.open(os.path.join(folder, stem + ".gz"), "wb") as f:
                f.write(data)
        else:
            with open(os.path.join(folder, stem), "wb") as f:
                f.write(data)
    return digests


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files quietly, records every path asked for, and for paths under
    /broken/ announces the full size but sends only half and hangs up."""

    requests = None  # set per server

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.requests.append(self.path)
        if not self.path.startswith("/broken/"):
            return super().do_GET()
        with open(self.translate_path("/" + self.path[len("/broken/"):]), "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2])
        self.close_connection = True


@contextlib.contextmanager
def http_server(root):
    """Serve folder ``root`` on 127.0.0.1; yields (base URL, list of requested paths)."""
    requests = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=os.fspath(root)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
