"""Thread count: free to change (bitwise the same result), chosen by measurement."""

import numba
import numpy as np
import pytest

import fastbp
from fastbp import threads


def test_training_is_bitwise_the_same_for_any_thread_count():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs Numba to have at least 2 threads")
    rng = np.random.default_rng(0)
    X = rng.random((300, 40)) * (rng.random((300, 40)) < 0.2)  # sparse first layer
    y = rng.integers(0, 5, 300)
    results = []
    for count in (1, 2):
        previous = numba.get_num_threads()
        numba.set_num_threads(count)
        try:
            net = fastbp.Network([40, 64, 5], seed=1)
            net.layers[0][1][:] = 0.01
            fastbp.train(net, X, y, lr=0.3, batch_size=16, epochs=2, device="cpu",
                         validation=(X, y), eval_every=7)
        finally:
            numba.set_num_threads(previous)
        results.append(net.layers)
    for (W1, b1), (W2, b2) in zip(*results):
        assert np.array_equal(W1, W2) and np.array_equal(b1, b2)


def test_tuner_keeps_the_faster_choice_and_re_measures_the_other(monkeypatch):
    monkeypatch.setattr(threads.numba, "get_num_threads", lambda: 4)
    tuner = threads.ThreadTuner()
    assert tuner.choices == (4, 1)
    picks = []
    speed = {4: 1.0, 1: 3.0}  # seconds per step: four threads are faster here
    for _ in range(40):
        t = tuner.pick()
        picks.append(t)
        tuner.record(t, speed[t] * 10, 10)
    assert picks[:4] == [4, 4, 1, 4]  # the first chunk (compilation) is not a timing
    assert picks.count(1) == 1 + sum(1 for k in range(4, 41) if k % threads.EXPLORE_EVERY == 0)
    speed = {4: 9.0, 1: 3.0}  # the machine got busy: one thread wins from the next look
    later = []
    for _ in range(40):
        t = tuner.pick()
        later.append(t)
        tuner.record(t, speed[t] * 10, 10)
    assert later[-threads.EXPLORE_EVERY:].count(1) == threads.EXPLORE_EVERY - 1
