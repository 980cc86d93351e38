"""Early stopping: when it stops, which weights it keeps, the held-out split,
and resuming a run that watches its validation set."""

import numpy as np
import pytest

import fastbp
from fastbp import stopping

from conftest import rel_err


def noisy(seed=0, n=300):
    """Random labels: the validation cost soon rises while training goes on."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 20)), rng.integers(0, 3, n)


ARGS = dict(lr=0.5, batch_size=20, eval_every=0, seed=3)


def same(a, b):
    return all(np.array_equal(p, q) for (W, c), (V, d) in zip(a.layers, b.layers)
               for p, q in ((W, V), (c, d)))


@pytest.mark.parametrize("restore_best", [True, False])
@pytest.mark.parametrize("device", ["cpu", "numpy"])
def test_it_stops_after_patience_and_keeps_the_best_epoch_s_weights(restore_best, device):
    X, y = noisy()
    val = noisy(seed=1, n=100)
    rule = fastbp.EarlyStopping(patience=3, restore_best=restore_best)
    net = fastbp.Network([20, 64, 3], dtype="float64", seed=1)
    hist = fastbp.train(net, X, y, epochs=60, validation=val, early_stopping=rule,
                        device=device, **ARGS)
    stopped, best = hist.stopped_epoch, hist.best_epoch
    assert stopped is not None and stopped < 60 and hist.epochs == stopped
    assert "patience=3" in hist.stop_reason
    scores = hist.val_scores
    assert len(scores) == stopped and best == 1 + int(np.argmin(scores))
    # stale: no epoch after the last real improvement beat it by tol, for > patience epochs
    assert stopped - best > 3
    # the weights: exactly those of a plain run of best (or all) epochs
    plain = fastbp.Network([20, 64, 3], dtype="float64", seed=1)
    fastbp.train(plain, X, y, epochs=best if restore_best else stopped, validation=val,
                 device=device, **ARGS)
    assert same(net, plain)
    cost, _ = net.evaluate(*val)
    assert cost == pytest.approx(min(scores) if restore_best else scores[-1], rel=1e-12)


def test_the_compiled_loop_stops_where_the_reference_does():
    X, y = noisy()
    rule = fastbp.EarlyStopping(patience=2, metric="error", validation_fraction=0.2)
    hists, nets = [], []
    for device in ("cpu", "numpy"):
        net = fastbp.Network([20, 64, 3], dtype="float64", seed=1)
        hists.append(fastbp.train(net, X, y, epochs=60, early_stopping=rule, device=device,
                                  **ARGS))
        nets.append(net)
    assert hists[0].stopped_epoch == hists[1].stopped_epoch is not None
    assert hists[0].val_scores == hists[1].val_scores
    for (W, _), (W_ref, _) in zip(nets[0].layers, nets[1].layers):
        assert rel_err(W, W_ref) <= 1e-10


def test_the_held_out_split_is_stratified_seeded_and_trains_on_the_rest():
    X, y = noisy(n=400)
    y[:40] = 3  # a rare class
    keep, held = stopping.split(400, 0.1, seed=5, strata=y)
    assert np.array_equal(np.sort(np.concatenate([keep, held])), np.arange(400))
    X_tr, X_val, y_val = X[keep], X[held], y[held]
    for label in range(4):
        assert np.sum(y_val == label) == round(0.1 * np.sum(y == label))
    again = stopping.split(400, 0.1, seed=5, strata=y)
    assert np.array_equal(again[1], held)
    assert not np.array_equal(stopping.split(400, 0.1, seed=6, strata=y)[1], held)
    net = fastbp.Network([20, 8, 4], seed=1)
    hist = fastbp.train(net, X, y, epochs=1, batch_size=20, device="cpu",
                        early_stopping=fastbp.EarlyStopping(), seed=5)
    assert hist.steps_per_epoch == -(-X_tr.shape[0] // 20)
    assert hist.val_scores == [pytest.approx(net.evaluate(X_val, y_val)[0], rel=1e-6)]


def test_a_resumed_run_stops_where_an_uninterrupted_one_does(tmp_path):
    X, y = noisy()
    rule = fastbp.EarlyStopping(patience=3)
    whole = fastbp.Network([20, 64, 3], seed=1)
    hist = fastbp.train(whole, X, y, epochs=60, early_stopping=rule, device="cpu", **ARGS)
    path = tmp_path / "run.npz"
    part = fastbp.Network([20, 64, 3], seed=1)
    fastbp.train(part, X, y, epochs=hist.stopped_epoch - 1, early_stopping=rule,
                 checkpoint=path, device="cpu", **ARGS)
    net = fastbp.Network([20, 64, 3], seed=9)
    resumed = fastbp.train(net, X, y, epochs=60, early_stopping=rule, checkpoint=path,
                           resume=True, device="cpu", **ARGS)
    assert (resumed.stopped_epoch, resumed.best_epoch) == (hist.stopped_epoch, hist.best_epoch)
    assert resumed.val_scores == hist.val_scores and same(net, whole)
    # the stopped run's checkpoint resumes to the same end at once
    again = fastbp.Network([20, 64, 3], seed=9)
    done = fastbp.train(again, X, y, epochs=60, early_stopping=rule, checkpoint=path,
                        resume=True, device="cpu", **ARGS)
    assert done.stopped_epoch == hist.stopped_epoch and same(again, whole)


@pytest.mark.parametrize("call, words", [
    (lambda: fastbp.EarlyStopping(patience=0), ["patience", "0"]),
    (lambda: fastbp.EarlyStopping(tol=-1), ["tol", "-1"]),
    (lambda: fastbp.EarlyStopping(validation_fraction=1), ["validation_fraction", "1"]),
    (lambda: fastbp.EarlyStopping(metric="accuracy"), ["metric", "accuracy"]),
    (lambda: fastbp.EarlyStopping(restore_best="yes"), ["restore_best", "yes"]),
    (lambda: fastbp.train(fastbp.Network([3, 2]), np.ones((4, 3)), [0, 1, 0, 1],
                          early_stopping=True), ["early_stopping", "bool"]),
    (lambda: fastbp.train(fastbp.Network([3, 2]), np.ones((1, 3)), [0],
                          early_stopping=fastbp.EarlyStopping()),
     ["validation_fraction", "1 samples"]),
    (lambda: fastbp.train(fastbp.Network([3, 1], loss="squared_error"), np.ones((9, 3)),
                          np.ones(9), early_stopping=fastbp.EarlyStopping(metric="error")),
     ["metric='error'", "regression"]),
])
def test_bad_early_stopping_settings_are_value_errors_naming_them(call, words):
    with pytest.raises(ValueError) as info:
        call()
    assert all(word in str(info.value) for word in words), str(info.value)


def test_a_held_out_set_is_early_stopping_s_alone_and_new_data_is_split_too():
    X, y = noisy()
    rule = fastbp.EarlyStopping(patience=50, validation_fraction=0.2)
    trainer = fastbp.Trainer(fastbp.Network([20, 8, 3], seed=1), X, y, batch_size=20,
                             eval_every=5, early_stopping=rule, device="cpu")
    trainer.fit(1)
    assert trainer.history.val_iteration == []  # not the user's validation set
    assert trainer.history.steps_per_epoch == 240 // 20
    X2, y2 = noisy(seed=4, n=200)
    trainer.set_data(X2, y2)
    trainer.fit(2)
    assert trainer.history.steps_per_epoch == 160 // 20  # 40 of the 200 held out
    assert trainer.val[0].shape[0] == 40
