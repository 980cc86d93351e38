"""fastbp.Trainer: one run's state, set up once; epoch by epoch it trains
bitwise as one train() call does."""

import numpy as np
import pytest
from conftest import rel_err

import fastbp
from fastbp import first_layer


def sparse_data(seed=0, n=210, p=40):
    rng = np.random.default_rng(seed)
    X = rng.random((n, p)) * (rng.random((n, p)) < 0.2)  # compressed rows: a costly plan
    return X, rng.integers(0, 4, n)


def digest(net, hist):
    return ([W.tobytes() + b.tobytes() for W, b in net.layers], hist.batch_cost,
            hist.batch_error, hist.val_iteration, hist.val_cost, hist.val_error)


@pytest.mark.parametrize("device", ["cpu", "numpy"])
def test_epoch_by_epoch_is_one_train_call_bit_for_bit(device):
    X, y = sparse_data()
    kwargs = dict(lr=0.2, batch_size=32, validation=(X[:50], y[:50]), eval_every=5, seed=4,
                  device=device)
    whole = fastbp.Network([40, 48, 4], seed=1)
    hist = fastbp.train(whole, X, y, epochs=3, **kwargs)
    net = fastbp.Network([40, 48, 4], seed=1)
    trainer = fastbp.Trainer(net, X, y, **kwargs)
    for epochs in (1, 2, 3, 3):  # the last: nothing left, returns at once
        assert trainer.fit(epochs) is trainer.history
        assert (trainer.epoch, trainer.step) == (epochs, 0)
    assert digest(net, trainer.history) == digest(whole, hist)
    assert len(trainer.history.epoch_seconds) == 3


def test_further_epochs_reuse_the_plan_and_the_stepper(monkeypatch):
    X, y = sparse_data()
    trainer = fastbp.Trainer(fastbp.Network([40, 48, 4], seed=1), X, y, batch_size=32,
                             device="cpu")
    plans = []
    real = first_layer.plan
    monkeypatch.setattr(first_layer, "plan", lambda *a, **k: plans.append(a) or real(*a, **k))
    trainer.fit(1)
    stepper = trainer._stepper
    trainer.fit(2)
    trainer.fit(3)
    assert len(plans) == 1 and trainer._stepper is stepper
    assert stepper.plan.code == fastbp.kernels.codes.FIRST_W_OR_CSR or stepper.plan.on_panels


def test_weights_edited_or_replaced_between_fits_are_the_ones_trained():
    X, y = sparse_data()
    nets = [fastbp.Network([40, 48, 4], seed=1) for _ in "ab"]
    trainers = [fastbp.Trainer(net, X, y, batch_size=32, device=device)
                for net, device in zip(nets, ["cpu", "numpy"])]
    for trainer in trainers:
        trainer.fit(1)
    nets[0].layers[1][0][:] *= 0.5  # in place
    nets[1].layers[1][0][:] *= 0.5
    for net in nets:  # and replaced
        net.layers = [(W.copy(), b + 0.01) for W, b in net.layers]
    for trainer in trainers:
        trainer.fit(2)
    for (W, b), (W_ref, b_ref) in zip(nets[0].layers, nets[1].layers):
        assert rel_err(W, W_ref) <= 1e-4 and rel_err(b, b_ref) <= 1e-4


def test_new_data_of_the_same_width_trains_on():
    X, y = sparse_data()
    X2, y2 = sparse_data(seed=1, n=150)
    nets = [fastbp.Network([40, 48, 4], dtype="float64", seed=1) for _ in "ab"]
    for net, device in zip(nets, ["cpu", "numpy"]):
        trainer = fastbp.Trainer(net, X, y, batch_size=32, device=device)
        trainer.fit(1)
        trainer.set_data(X2, y2)
        trainer.fit(2)
        assert trainer.history.steps_per_epoch == 5
        assert len(trainer.history.batch_cost) == 7 + 5
    for (W, _), (W_ref, _) in zip(nets[0].layers, nets[1].layers):
        assert rel_err(W, W_ref) <= 1e-10
    # the same as the two data sets trained by hand, an epoch each
    net = fastbp.Network([40, 48, 4], dtype="float64", seed=1)
    fastbp.train(net, X, y, batch_size=32, epochs=1, device="cpu")
    layers = [(W.copy(), b.copy()) for W, b in net.layers]
    order = fastbp.trainer.epoch_order(0, 1, 150)
    for start in range(0, 150, 32):
        rows = order[start:start + 32]
        _, grads = fastbp.reference.backprop(layers, X2[rows], y2[rows], "relu",
                                             "cross_entropy")
        fastbp.reference.sgd_step(layers, grads, 0.5)
    for (W, _), (W_ref, _) in zip(nets[0].layers, layers):
        assert rel_err(W, W_ref) <= 1e-10


def test_what_a_trainer_refuses(tmp_path):
    X, y = sparse_data()
    trainer = fastbp.Trainer(fastbp.Network([40, 48, 4], seed=1), X, y, batch_size=32,
                             device="cpu")
    trainer.fit(2)
    with pytest.raises(ValueError, match="cannot train: it has already run 2 epochs, more "
                                         "than epochs=1"):
        trainer.fit(1)
    with pytest.raises(ValueError, match="epochs must be"):
        trainer.fit(0)
    with pytest.raises(ValueError, match="X must have 40 columns|X.*40"):
        trainer.set_data(X[:, :30], y)
    saved = fastbp.Trainer(fastbp.Network([40, 48, 4], seed=1), X, y, device="cpu",
                           checkpoint=tmp_path / "run.npz")
    with pytest.raises(ValueError, match="set_data: a run with a checkpoint"):
        saved.set_data(X, y)


@pytest.mark.parametrize("bad", [lambda e, n: np.arange(n - 1), lambda e, n: np.zeros(n, int),
                                 lambda e, n: np.arange(1, n + 1),
                                 lambda e, n: np.arange(n) - 1,
                                 lambda e, n: np.arange(n, dtype=float)],
                         ids=["short", "repeats", "past the end", "negative", "floats"])
def test_a_shuffle_callable_must_return_a_permutation(bad):
    X, y = sparse_data()
    trainer = fastbp.Trainer(fastbp.Network([40, 48, 4], seed=1), X, y, lr=0.2,
                             batch_size=32, shuffle=bad)
    with pytest.raises(ValueError, match=r"shuffle\(0, 210\) must return a permutation"):
        trainer.fit(1)


def test_a_shuffle_callable_s_order_is_the_order_trained():
    """Reversed order by the callable is the reversed data in order, bit for bit."""
    X, y = sparse_data()
    nets = [fastbp.Network([40, 48, 4], seed=1) for _ in range(2)]
    fastbp.Trainer(nets[0], X, y, lr=0.2, batch_size=32,
                   shuffle=lambda epoch, n: np.arange(n)[::-1]).fit(2)
    fastbp.Trainer(nets[1], X[::-1].copy(), y[::-1].copy(), lr=0.2, batch_size=32,
                   shuffle=False).fit(2)
    assert all(np.array_equal(a, b) for (W, c), (V, d) in zip(*(n.layers for n in nets))
               for a, b in ((W, V), (c, d)))


def test_set_data_keeps_the_plan_while_its_compressed_rows_are_the_data_s():
    """partial_fit's pattern: the same X again (here a copy) keeps the first
    layer's plan, with no compression; X changed in one pixel gets a new
    plan. Either way the run is bitwise a run planned afresh."""
    X, y = sparse_data()
    changed = X.copy()
    changed[3, np.flatnonzero(X[3] == 0)[0]] = 0.5
    runs = {}
    for name, second in (("same", X.copy()), ("changed", changed)):
        for fresh in (False, True):
            net = fastbp.Network([40, 48, 4], seed=1)
            trainer = fastbp.Trainer(net, X, y, optimizer=fastbp.Adam(lr=0.01), batch_size=32)
            trainer.fit(1)
            first = trainer._plan
            assert first.rows_csr[0].shape[0] == X.shape[0] + 1  # compressed: worth keeping
            if fresh:
                trainer._plan = None  # nothing to reuse: planned afresh
            trainer.set_data(second, y)
            trainer.fit(2)
            runs[name, fresh] = [a.tobytes() for W, b in net.layers for a in (W, b)]
            if not fresh:
                assert (trainer._plan is first) == (name == "same")
    assert runs["same", False] == runs["same", True]
    assert runs["changed", False] == runs["changed", True]
    assert runs["same", False] != runs["changed", False]


def test_set_data_keeps_the_tiles_plan_for_any_data_and_still_scans_it(monkeypatch):
    """The zero-skipping tiles' plan holds nothing of its data (each batch
    is listed from its own rows): set_data keeps it for the same X and for
    other data alike, with no compression, but scans each X for NaN and inf,
    which it still names; the run is bitwise one planned afresh."""
    from fastbp.kernels import codes, cpu_panels
    monkeypatch.setattr(cpu_panels, "worthwhile", lambda sizes, dtype: True)
    monkeypatch.setattr(fastbp.sparse_rows, "MAX_UNION_RATIO", np.inf)
    X, y = sparse_data()
    other, y_other = sparse_data(seed=1, n=150)
    scans = []
    count = fastbp.checks.cpu_sparse.count_nonfinite
    monkeypatch.setattr(fastbp.checks.cpu_sparse, "count_nonfinite",
                        lambda A: scans.append(A.shape) or count(A))
    runs = {}
    for fresh in (False, True):
        net = fastbp.Network([40, 48, 4], seed=1)
        trainer = fastbp.Trainer(net, X, y, optimizer=fastbp.Adam(lr=0.01), batch_size=32)
        trainer.fit(1)
        plan = trainer._plan
        assert plan.code == codes.FIRST_PANELS_OR_TILES and plan.rows_csr[0].shape == (0,)
        del scans[:]
        for data, labels in ((X.copy(), y), (other, y_other)):
            if fresh:
                trainer._plan = None  # nothing to reuse: planned afresh
            trainer.set_data(data, labels)
            assert (trainer._plan is plan) != fresh
            trainer.fit(trainer.epoch + 1)
        assert scans == [X.shape, other.shape]
        runs[fresh] = [a.tobytes() for W, b in net.layers for a in (W, b)]
    assert runs[False] == runs[True]
    bad = X.copy()
    bad[5, 7] = np.nan
    with pytest.raises(ValueError, match=r"X\[5, 7\] = nan"):
        trainer.set_data(bad, y)


def test_set_data_skips_the_non_finite_scan_only_for_data_its_plan_holds(monkeypatch):
    """The same X again needs no scan for NaN and inf (the plan's rows were
    made from checked data); NaN or inf anywhere else is still named, and
    the run keeps its plan and weights."""
    X, y = sparse_data()
    net = fastbp.Network([40, 48, 4], seed=1)
    trainer = fastbp.Trainer(net, X, y, optimizer=fastbp.Adam(lr=0.01), batch_size=32)
    trainer.fit(1)
    plan, weights = trainer._plan, [W.copy() for W, _ in net.layers]
    scans = []
    count = fastbp.checks.cpu_sparse.count_nonfinite
    monkeypatch.setattr(fastbp.checks.cpu_sparse, "count_nonfinite",
                        lambda A: scans.append(A.shape) or count(A))
    trainer.set_data(X.copy(), y)
    assert scans == [] and trainer._plan is plan
    listed, unlisted = np.flatnonzero(X[5])[0], np.flatnonzero(X[5] == 0)[0]
    for column in (listed, unlisted):
        for bad in (np.nan, np.inf, -np.inf):
            changed = X.copy()
            changed[5, column] = bad
            with pytest.raises(ValueError, match=rf"X\[5, {column}\] = -?(nan|inf)"):
                trainer.set_data(changed, y)
    assert len(scans) == 6
    assert trainer._plan is plan
    assert all(np.array_equal(W, old) for (W, _), old in zip(net.layers, weights))
    trainer.set_data(X[:-1], y[:-1])  # other data: scanned, planned afresh
    assert len(scans) == 7 and trainer._plan is None
