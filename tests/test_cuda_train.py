"""device="cuda": a clear error without numba-cuda or a GPU, and training
against the reference under Numba's CUDA simulator (tests/cuda_sim/sim_train.py)."""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from fastbp import backends

from cuda_sim.launcher import run_simulated

no_gpu = pytest.mark.skipif(backends.cuda_status()[0], reason="a CUDA GPU is available here")


def test_import_fastbp_does_not_import_numba_cuda():
    code = ("import sys, fastbp\n"
            "loaded = [m for m in sys.modules if m.startswith(('numba.cuda', 'numba_cuda'))]\n"
            "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_missing_numba_cuda_names_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "numba_cuda" else real(name, *args))
    monkeypatch.setattr("numba.config.ENABLE_CUDASIM", 0)
    assert backends.cuda_status() == (
        False, "numba-cuda is not installed (pip install 'numba-cuda[cu12]>=0.30')")
    with pytest.raises(RuntimeError, match=r"device='cuda' is unavailable: numba-cuda is not "
                                           r"installed \(pip install 'numba-cuda\[cu12\]>=0.30'\)"):
        backends.resolve_device("cuda")
    assert backends.resolve_device("auto") == "cpu"


@no_gpu
def test_cuda_without_a_gpu_gives_one_clear_error():
    net = fastbp.Network([3, 2])
    X, y = np.zeros((4, 3)), np.zeros(4, np.int64)
    reason = backends.cuda_status()[1]
    assert "pip install 'numba-cuda[cu12]>=0.30'" in reason or "no CUDA GPU" in reason
    for call in (lambda: fastbp.train(net, X, y, epochs=1, device="cuda"),
                 lambda: fastbp.backprop(net, X, y, device="cuda")):
        with pytest.raises(RuntimeError, match="device='cuda' is unavailable"):
            call()
    assert backends.resolve_device("auto") == "cpu"


def test_cuda_training_under_the_simulator():
    run_simulated("sim_train.py")
