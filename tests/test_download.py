"""MNIST download: mirrors in order, SHA-256 of the uncompressed content,
nothing partial left in the cache. Against a real HTTP server on 127.0.0.1."""

import gzip
import os
import shutil
import time

import numpy as np
import pytest
from idx_fixtures import closed_port_url, http_server, idx_bytes, tiny_arrays, write_tiny_mnist

from fastbp import datasets, download
from fastbp.download import DownloadError

STEMS = list(datasets.FILES.values())


@pytest.fixture
def www(tmp_path, monkeypatch):
    """A web root with mirror folders good/ (tiny MNIST), corrupt/ (wrong
    train labels) and truncated/ (half a gzip file); SHA256 set to the
    tiny files' digests; the cache in tmp_path; no FASTBP_DATA_DIR."""
    root = tmp_path / "www"
    digests = write_tiny_mnist(root / "good")
    monkeypatch.setattr(datasets, "SHA256", digests)
    shutil.copytree(root / "good", root / "corrupt")
    labels = tiny_arrays()["train_labels"]
    with gzip.open(root / "corrupt" / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(idx_bytes((labels + 1) % 10))
    shutil.copytree(root / "good", root / "truncated")
    path = root / "truncated" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTBP_DATA_DIR", raising=False)
    with http_server(root) as (url, requests):
        yield url, requests


def set_mirrors(monkeypatch, *bases):
    monkeypatch.setenv(download.MIRRORS_ENV, ",".join(bases))


def cache_listing():
    folder = datasets.cache_dir()
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_download_verifies_renames_and_loads(www, monkeypatch):
    url, requests = www
    set_mirrors(monkeypatch, f"{url}/good")  # no trailing slash: added
    calls = []
    old_umask = os.umask(0o022)
    try:
        _, ytr, Xte, _ = datasets.mnist(progress=lambda *a: calls.append(a))  # the default
    finally:
        os.umask(old_umask)
    assert cache_listing() == sorted(stem + ".gz" for stem in STEMS)  # no temporary files
    for name in cache_listing():  # the umask's modes, as an open() would give
        assert os.stat(os.path.join(datasets.cache_dir(), name)).st_mode & 0o777 == 0o644
    expected = tiny_arrays()
    assert np.array_equal(ytr, expected["train_labels"])
    assert np.array_equal(np.rint(Xte * 255), expected["test_images"].reshape(50, -1))
    assert sorted(requests) == sorted(f"/good/{stem}.gz" for stem in STEMS)
    for stem in STEMS:  # progress ends with done == total for every file
        name, done, total = [c for c in calls if c[0] == stem + ".gz"][-1]
        assert done == total == os.path.getsize(os.path.join(datasets.cache_dir(), name))
    # A second call finds the cache and needs no network at all.
    set_mirrors(monkeypatch, closed_port_url())
    assert np.array_equal(datasets.mnist(download=True)[1], ytr)
    assert len(requests) == 4


def test_checksum_mismatch_leaves_nothing_and_names_file_and_mirror(www, monkeypatch):
    url, _ = www
    set_mirrors(monkeypatch, f"{url}/corrupt/")
    with pytest.raises(DownloadError) as info:
        download.download_mnist()
    message = str(info.value)
    assert f"{url}/corrupt/train-labels-idx1-ubyte.gz" in message
    assert "SHA-256" in message and datasets.SHA256["train-labels-idx1-ubyte"] in message
    # train-images came first and was verified; the bad file left no trace.
    assert cache_listing() == ["train-images-idx3-ubyte.gz"]


@pytest.mark.parametrize("mirror,reason", [("truncated", "not a complete gzip file"),
                                           ("broken/good", "transfer broken")],
                         ids=["truncated-file", "connection-dropped"])
def test_broken_transfer_leaves_nothing(www, monkeypatch, mirror, reason):
    url, _ = www
    set_mirrors(monkeypatch, f"{url}/{mirror}/")
    with pytest.raises(DownloadError) as info:
        download.download_mnist()
    assert f"{url}/{mirror}/train-images-idx3-ubyte.gz: {reason}" in str(info.value)
    assert cache_listing() == []


def test_failing_mirrors_are_skipped_in_order(www, monkeypatch):
    url, requests = www
    dead = closed_port_url()
    set_mirrors(monkeypatch, dead, f"{url}/missing/", f"{url}/corrupt/", f"{url}/good/")
    datasets.mnist(download=True)
    assert cache_listing() == sorted(stem + ".gz" for stem in STEMS)
    # Each file is asked of the reachable mirrors in order until one serves it
    # correctly; the unreachable one is not asked again after its first failure.
    assert requests[:3] == ["/missing/train-images-idx3-ubyte.gz",
                            "/corrupt/train-images-idx3-ubyte.gz",
                            "/missing/train-labels-idx1-ubyte.gz"]
    assert requests.count("/good/train-labels-idx1-ubyte.gz") == 1


def test_all_mirrors_failing_fails_fast_and_says_what_to_do(www, monkeypatch):
    url, _ = www
    dead = closed_port_url()
    set_mirrors(monkeypatch, dead, f"{url}/missing/")
    started = time.perf_counter()
    with pytest.raises(DownloadError) as info:
        datasets.mnist(download=True)
    assert time.perf_counter() - started < 5
    message = str(info.value)
    assert f"{dead}train-images-idx3-ubyte.gz: cannot fetch" in message
    assert f"{url}/missing/train-images-idx3-ubyte.gz: HTTP 404" in message
    assert "--data-dir" in message and "FASTBP_DATA_DIR" in message
    assert isinstance(info.value, datasets.DataError)
    assert cache_listing() == []


def test_explicit_folders_and_download_false_never_download(www, monkeypatch, tmp_path):
    url, requests = www
    set_mirrors(monkeypatch, f"{url}/good/")
    with pytest.raises(datasets.DataError, match="does not exist"):
        datasets.mnist(data_dir=tmp_path / "nowhere", download=True)
    monkeypatch.setenv("FASTBP_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(datasets.DataError, match="nowhere"):
        datasets.mnist(download=True)
    monkeypatch.delenv("FASTBP_DATA_DIR")
    with pytest.raises(datasets.DataError, match="download=True"):
        datasets.mnist(download=False)
    assert requests == []


def test_mirror_list_from_the_environment(monkeypatch):
    monkeypatch.delenv(download.MIRRORS_ENV, raising=False)
    assert download.mirrors() == list(download.MIRRORS) and len(download.MIRRORS) >= 2
    monkeypatch.setenv(download.MIRRORS_ENV, " http://a/x , https://b/,, file:///srv/m ")
    assert download.mirrors() == ["http://a/x/", "https://b/", "file:///srv/m/"]
    monkeypatch.setenv(download.MIRRORS_ENV, "ftp://old.example/mnist")
    with pytest.raises(DownloadError, match="FASTBP_MNIST_MIRRORS: 'ftp://old.example/mnist'"):
        download.mirrors()


def test_real_mnist_files_pass_the_published_checksums(tmp_path, monkeypatch):
    """The real files (from $FASTBP_DATA_DIR) through the whole download path."""
    source = os.environ.get("FASTBP_DATA_DIR")
    if not source or any(not os.path.isfile(os.path.join(source, s + ".gz")) for s in STEMS):
        pytest.skip("set FASTBP_DATA_DIR to a folder with the four MNIST .gz files")
    with http_server(source) as (url, _):
        set_mirrors(monkeypatch, url)
        folder = download.download_mnist(tmp_path / "cache")
    for stem in STEMS:
        with open(os.path.join(source, stem + ".gz"), "rb") as a, \
                open(os.path.join(folder, stem + ".gz"), "rb") as b:
            assert a.read() == b.read()
