"""Every kernel's on-disk cache is tied to all the kernel sources, not just its own file."""

import os
import shutil

from numba.core.dispatcher import Dispatcher

from fastbp import cache_stamp
from fastbp.kernels import cpu, registry

KERNELS = os.path.dirname(cpu.__file__)


def test_fingerprint_changes_with_any_kernel_file(tmp_path):
    copy = tmp_path / "kernels"
    shutil.copytree(KERNELS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = cache_stamp.sources_fingerprint(copy)
    assert cache_stamp.sources_fingerprint(copy) == before  # a pure function of the files
    assert before == cache_stamp.sources_fingerprint(KERNELS)
    sparse = copy / "cpu_sparse.py"
    sparse.write_text(sparse.read_text() + "\n# an edit in a file train_steps does not live in\n")
    assert cache_stamp.sources_fingerprint(copy) != before


def test_every_cached_cpu_kernel_carries_the_fingerprint():
    fingerprint = cache_stamp.sources_fingerprint(KERNELS)
    stamped = 0
    for name, value in registry.cpu_dispatchers().items():
        cache_file = getattr(getattr(value, "_cache", None), "_cache_file", None)
        if cache_file is not None:  # cache=True kernels
            stamp = cache_file._source_stamp
            assert isinstance(stamp, tuple) and stamp[1] == fingerprint, name
            stamped += 1
    assert stamped >= 20  # train_steps, csr_sgd_update, dense_forward, ...
    cache_stamp.stamp([cpu.train_steps], fingerprint)  # again (a second import): not nested twice
    assert cpu.train_steps._cache._cache_file._source_stamp[1] == fingerprint
    own = cpu.train_steps._cache._cache_file._source_stamp[0]
    assert not (isinstance(own, tuple) and own[-1] == fingerprint)


def test_the_registry_finds_every_cached_kernel_of_every_cpu_module():
    """fastbp/__init__.py locks and stamps the registry's dispatchers: one
    cached in a module the registry does not list would compile unlocked
    and keep a stale cache when a constant it imports changes."""
    import importlib
    import pkgutil

    import fastbp.kernels
    found = set(map(id, registry.cpu_dispatchers().values()))
    for info in pkgutil.iter_modules(fastbp.kernels.__path__):
        if not info.name.startswith("cpu"):
            continue
        assert info.name in registry.CPU_MODULES
        module = importlib.import_module(f"fastbp.kernels.{info.name}")
        for name, value in vars(module).items():
            cache_file = getattr(getattr(value, "_cache", None), "_cache_file", None)
            if isinstance(value, Dispatcher) and cache_file is not None:
                assert id(value) in found, f"{info.name}.{name}"
                assert value.compile._fastbp_locked, f"{info.name}.{name} compiles unlocked"
