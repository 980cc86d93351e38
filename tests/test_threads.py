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


def drive(tuner, speed, chunks):
    picks = []
    for _ in range(chunks):
        t = tuner.pick()
        picks.append(t)
        tuner.record(t, speed[t] * 10, 10)
    return picks


def test_tuner_keeps_the_faster_choice_and_re_measures_the_other(monkeypatch):
    monkeypatch.setattr(threads.numba, "get_num_threads", lambda: 4)
    tuner = threads.ThreadTuner()
    assert tuner.choices == (1, 4)
    picks = drive(tuner, {4: 1.0, 1: 3.0}, 100)  # seconds per step: four threads win
    # The first chunk (compilation) is not a timing; then each choice twice, alternating.
    assert picks[:6] == [1, 1, 4, 1, 4, 4]
    looks = [k for k, t in enumerate(picks) if t == 1 and k > 2]
    assert len(looks) >= 2 and looks[1] - looks[0] > threads.FIRST_LOOK  # backing off
    later = drive(tuner, {4: 90.0, 1: 3.0}, 200)  # the machine got busy: one thread wins
    assert later[-20:] == [1] * 20
    assert later.count(4) <= 5  # two chunks to notice, then looks after 16, 32, 64 chunks


def test_tuner_is_not_fooled_by_one_slow_chunk(monkeypatch):
    """A shared machine makes single chunks slow at random: one slow chunk of
    the faster choice must not hand the lead to the slower one."""
    monkeypatch.setattr(threads.numba, "get_num_threads", lambda: 2)
    tuner = threads.ThreadTuner()
    drive(tuner, {2: 1.0, 1: 1.5}, 10)
    tuner.record(2, 100.0, 10)  # one noisy chunk: 10 s per step
    assert drive(tuner, {2: 1.0, 1: 1.5}, 10) == [2] * 10
