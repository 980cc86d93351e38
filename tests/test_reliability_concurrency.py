"""Two processes starting together on an empty Numba cache both succeed."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

SCRIPT = textwrap.dedent("""
    import hashlib, os, sys, time
    while not os.path.exists(sys.argv[1]):  # start line: both import at once
        time.sleep(0.005)
    import numpy as np
    import fastbp
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 5)), rng.integers(0, 3, 64)
    net = fastbp.Network([5, 7, 3], seed=1)
    fastbp.train(net, X, y, lr=0.1, batch_size=8, epochs=2, validation=(X, y),
                 eval_every=4, device="cpu")
    digest = hashlib.sha256(net.predict_proba(X).tobytes())
    for W, b in net.layers:
        digest.update(W.tobytes() + b.tobytes())
    print(digest.hexdigest())
""")


def start(go, cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(go)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process):
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    return out.strip()


@pytest.mark.slow
def test_two_processes_on_an_empty_numba_cache_both_succeed(tmp_path):
    """Both compile every kernel at the same time and write the same cache
    files; then a third process loads that cache. All three agree bitwise."""
    cache, go = tmp_path / "numba-cache", tmp_path / "go"
    cache.mkdir()
    first, second = start(go, cache), start(go, cache)
    time.sleep(0.5)  # both interpreters up and waiting at the start line
    go.touch()
    digests = [finish(first), finish(second)]
    assert len(digests[0]) == 64 and digests[0] == digests[1]
    assert any(name.endswith(".nbi") for _, _, files in os.walk(cache) for name in files)
    assert finish(start(go, cache)) == digests[0]  # the shared cache is sound
