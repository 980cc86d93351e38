"""Runs a file of CUDA tests under Numba's simulator, in a subprocess.

NUMBA_ENABLE_CUDASIM must be set before numba is first imported, and the
rest of the suite imports numba normally, so the simulated tests get a fresh
interpreter of their own.
"""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT_S = 480  # sim_train.py alone took 245-275 s on this 2-core VM


def run_simulated(test_file):
    """pytest on ``tests/cuda_sim/<test_file>`` with the simulator; on
    failure, an AssertionError carrying the end of that run's report."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               f"tests/cuda_sim/{test_file}"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert done.returncode == 0, (
        f"CUDA simulator tests failed: {' '.join(command[1:])} (exit {done.returncode}; "
        "rerun it with NUMBA_ENABLE_CUDASIM=1 to debug)\n"
        + done.stdout[-8000:] + done.stderr[-2000:])
