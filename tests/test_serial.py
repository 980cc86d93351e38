"""kernels/cpu_serial.py: train_steps built without parallel regions gives
the parallel build's results on every path of the loop (to rounding: the
builds may sum in other orders), and runs wherever a step is small, whatever
the thread count, so that a run's bits never depend on it."""

import numba
import numpy as np
import pytest

import fastbp
from fastbp.backends import cpu as backend
from fastbp.kernels import cpu, cpu_serial, registry
from fastbp.kernels.config import SERIAL_STEP_MACS

from conftest import RTOL, rel_err, targets_for


def run(monkeypatch, build, sizes, loss, dtype, X, y, optimizer, **kwargs):
    """Weights and costs of a 2-epoch run with the loop ``build`` alone."""
    monkeypatch.setattr(backend, "SERIAL_STEP_MACS", 10**9 if build is cpu_serial else -1)
    net = fastbp.Network(sizes, loss=loss, dtype=dtype, seed=4)
    hist = fastbp.train(net, X, y, optimizer=optimizer, batch_size=16, epochs=2,
                        device="cpu", eval_every=0, **kwargs)
    return [a for layer in net.layers for a in layer], hist.batch_cost


@pytest.mark.parametrize("case", [
    ([12, 9, 3], "cross_entropy", "float32", False, fastbp.SGD(lr=0.1)),
    ([12, 40, 20, 3], "cross_entropy", "float64", True, fastbp.SGD(lr=0.1)),  # W^T over CSR
    ([12, 40, 17], "squared_error", "float32", True, fastbp.SGD(lr=0.01)),  # blocked output
    ([12, 7, 2], "binary_cross_entropy", "float64", False, fastbp.Adam(lr=0.01, alpha=1e-3)),
    ([12, 3], "cross_entropy", "float64", False, fastbp.SGD(lr=0.1, momentum=0.9)),
], ids=["relu-f32", "sparse-3-layers-f64", "squared-17-outputs", "bce-adam", "one-layer"])
def test_the_serial_build_follows_the_parallel_one(case, monkeypatch):
    sizes, loss, dtype, sparse, optimizer = case
    rng = np.random.default_rng(len(sizes))
    X = rng.normal(size=(203, 12)) * (rng.random((203, 12)) < (0.15 if sparse else 1.0))
    y = targets_for(loss, rng, 203, sizes[-1])
    w = rng.random(203)
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)  # parallel regions: all threads
        parallel = run(monkeypatch, cpu, sizes, loss, dtype, X, y, optimizer, sample_weight=w)
    finally:
        numba.set_num_threads(previous)
    serial = run(monkeypatch, cpu_serial, sizes, loss, dtype, X, y, optimizer, sample_weight=w)
    for a, b in zip(parallel[0], serial[0]):
        assert rel_err(b, a) <= RTOL[dtype]
    assert rel_err(serial[1], parallel[1]) <= RTOL[dtype]


def test_the_serial_build_is_its_own_code_registered_and_cached_apart():
    assert cpu_serial.train_steps is not cpu.train_steps
    assert cpu_serial.train_steps.py_func.__code__ is cpu.train_steps.py_func.__code__
    assert cpu_serial.train_steps.py_func.__qualname__ == "train_steps__serial"
    assert not cpu_serial.train_steps.targetoptions.get("parallel")
    names = registry.cpu_dispatchers()
    twins = [d for key, d in names.items() if key.startswith("cpu_serial.")]
    # every kernel train_steps calls has its twin, under the lock and the cache stamp
    assert len(twins) > 20 and all(d.py_func.__qualname__.endswith("__serial") for d in twins)
    assert all(getattr(d.compile, "_fastbp_locked", False) for d in twins)
    # on disk like the parallel build: a fresh process must not compile it again
    assert type(cpu_serial.train_steps._cache).__name__ == "FunctionCache"
    originals = {d.py_func.__qualname__: d for key, d in names.items()
                 if not key.startswith("cpu_serial.")}
    for twin in twins:
        original = originals.get(twin.py_func.__qualname__[:-len(cpu_serial.SUFFIX)])
        if original is not None:
            assert type(twin._cache) is type(original._cache), twin.py_func.__qualname__


def stepper(sizes, loss, batch):
    net = fastbp.Network(sizes, loss=loss)
    X = np.zeros((batch, sizes[0]), net.dtype)
    y = net.check_targets("y", np.zeros(batch, np.int64 if net.takes_labels else np.float64),
                          batch)
    return fastbp.backends.make_stepper("cpu", net, *net.checked_layers(), X, y, batch)


def test_small_steps_take_the_serial_build_by_their_size_alone(monkeypatch):
    assert 16 * (13 * 32 + 32) <= SERIAL_STEP_MACS < 100 * (784 * 400 + 400 * 10)
    assert stepper([13, 32, 1], "squared_error", 16).small
    assert not stepper([784, 400, 10], "cross_entropy", 100).small
    calls = []
    monkeypatch.setattr(cpu_serial, "train_steps", lambda *args: calls.append(1) or 0)
    small = stepper([13, 32, 1], "squared_error", 16)
    previous = numba.get_num_threads()
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):  # the tuner is not asked
            numba.set_num_threads(threads)
            small.run(np.arange(16), 0, 1, 0.1, np.empty(1), np.empty(1))
    finally:
        numba.set_num_threads(previous)
    assert calls == [1, 1]
