"""Optimizers (momentum, Nesterov, Adam), the L2 penalty and schedules: the
reference against scikit-learn's own optimizers, the compiled loop against
the reference, checkpoints that resume them bit for bit."""

import re

import numpy as np
import pytest
from conftest import RTOL, rel_err

import fastbp
from fastbp import optimizers, reference

OPTIMIZERS = {
    "momentum": fastbp.SGD(lr=0.1, momentum=0.9),
    "nesterov": fastbp.SGD(lr=0.1, momentum=0.8, nesterov=True),
    "adam": fastbp.Adam(lr=0.01),
    "sgd+alpha": fastbp.SGD(lr=0.1, alpha=0.5),
    "momentum+alpha": fastbp.SGD(lr=0.05, momentum=0.9, alpha=1e-2),
    "adam+alpha": fastbp.Adam(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, alpha=1e-3),
}


def data(seed=0, n=203, p=40, sparse=False):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    if sparse:  # compressed rows, and the zero-skipping first layer where plain SGD runs
        X = np.abs(X) * (rng.random((n, p)) < 0.12)
    return X, rng.integers(0, 4, n)


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam"])
def test_the_reference_is_scikit_learn_s_optimizer(name):
    sk = pytest.importorskip("sklearn.neural_network._stochastic_optimizers")
    rng = np.random.default_rng(1)
    layers = [(rng.normal(size=(5, 4)), rng.normal(size=5)), (rng.normal(size=(3, 5)),
                                                               rng.normal(size=3))]
    params = [p.copy() for W, b in layers for p in (W,)] + [b.copy() for _, b in layers]
    if name == "adam":
        theirs = sk.AdamOptimizer(params, learning_rate_init=0.01, beta_1=0.8, beta_2=0.99,
                                  epsilon=1e-6)
    else:
        theirs = sk.SGDOptimizer(params, learning_rate_init=0.1, momentum=(
            0.0 if name == "sgd" else 0.9), nesterov=name == "nesterov")
    state = reference.new_state(layers, name)
    for t in range(1, 4):
        grads = [(rng.normal(size=W.shape), rng.normal(size=b.shape)) for W, b in layers]
        theirs.update_params(params, [g for g, _ in grads] + [g for _, g in grads])
        reference.optimizer_step(layers, grads, state, name, 0.01 if name == "adam" else 0.1,
                                 momentum=0.9, beta1=0.8, beta2=0.99, eps=1e-6, t=t)
    ours = [W for W, _ in layers] + [b for _, b in layers]
    for a, b in zip(ours, params):
        assert rel_err(a, b) <= 1e-14


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("sizes", [[40, 48, 4], [40, 36, 20, 4], [40, 4]])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_the_compiled_loop_matches_the_reference(name, sizes, dtype):
    X, y = data()
    nets, hists = [], []
    for device in ("cpu", "numpy"):
        net = fastbp.Network(sizes, dtype=dtype, seed=2)
        hists.append(fastbp.train(net, X, y, optimizer=OPTIMIZERS[name], batch_size=32,
                                  epochs=2, device=device, eval_every=0))
        nets.append(net)
    for index, ((W, b), (W_ref, b_ref)) in enumerate(zip(nets[0].layers, nets[1].layers)):
        assert rel_err(W, W_ref) <= RTOL[dtype], f"W of layer {index}"
        assert rel_err(b, b_ref) <= RTOL[dtype], f"b of layer {index}"
    assert rel_err(hists[0].batch_cost, hists[1].batch_cost) <= RTOL[dtype]


PLANS = {  # each first-layer plan: (panels worthwhile, tiles' MAX_UNION_RATIO, sparse data)
    "W": (False, np.inf, False), "W or CSR": (False, np.inf, True),
    "panels": (True, np.inf, False), "panels or CSR": (True, -np.inf, True),
    "panels or tiles": (True, np.inf, True)}


@pytest.mark.parametrize("name", ["momentum", "adam", "sgd+alpha"])
@pytest.mark.parametrize("plan", list(PLANS))
def test_a_rule_touching_every_weight_updates_every_weight_on_every_plan(plan, name,
                                                                         monkeypatch):
    """Every first-layer plan, whose zero-skipping updates (under plain SGD)
    change only the weights of the batch's non-zero pixels: a rule with
    state (or a penalty) changes every weight, so each layout's fused update
    must apply it to every weight, and the state must follow the weights
    between layouts (the first batch here is dense, the others sparse, so
    the CSR plans move them every epoch); otherwise this run departs from
    the reference at once. With panels, the hidden layer runs on them too
    (``cpu_panels.hidden_layers``), its state in panels beside it, and the
    penalty's cost reads it there."""
    panels, ratio, sparse = PLANS[plan]
    monkeypatch.setattr(fastbp.kernels.cpu_panels, "worthwhile", lambda sizes, dtype: panels)
    monkeypatch.setattr(fastbp.kernels.cpu_panels, "HIDDEN_PANEL_BYTES", 0)
    monkeypatch.setattr(fastbp.sparse_rows, "MAX_UNION_RATIO", ratio)
    X, y = data(sparse=sparse, p=64)
    if sparse:
        X[:32] = np.abs(np.random.default_rng(3).normal(size=(32, 64)))
    nets, costs = [], []
    sizes = [64, 48, 40, 4]
    assert fastbp.kernels.cpu_panels.hidden_layers(sizes, "float64", 32) == (False, panels, False)
    for device in ("cpu", "numpy"):
        net = fastbp.Network(sizes, dtype="float64", seed=2)
        trainer = fastbp.Trainer(net, X, y, optimizer=OPTIMIZERS[name], batch_size=32,
                                 device=device, eval_every=0, shuffle=False)
        costs.append(trainer.fit(2).batch_cost)
        nets.append(net)
        if device == "cpu":
            assert trainer._plan.name == plan
    for (W, b), (W_ref, b_ref) in zip(nets[0].layers, nets[1].layers):
        assert rel_err(W, W_ref) <= 1e-10 and rel_err(b, b_ref) <= 1e-10
    assert rel_err(costs[0], costs[1]) <= 1e-10


def test_plain_sgd_given_as_an_optimizer_is_the_lr_argument_bit_for_bit():
    X, y = data(sparse=True)
    a, b = fastbp.Network([40, 48, 4], seed=2), fastbp.Network([40, 48, 4], seed=2)
    fastbp.train(a, X, y, lr=0.3, batch_size=32, epochs=2, device="cpu")
    fastbp.train(b, X, y, optimizer=fastbp.SGD(lr=0.3), batch_size=32, epochs=2, device="cpu")
    assert all(np.array_equal(p, q) for (W, c), (V, d) in zip(a.layers, b.layers)
               for p, q in ((W, V), (c, d)))


@pytest.mark.parametrize("device, sizes", [("cpu", [40, 48, 4]), ("numpy", [40, 48, 4]),
                                           ("cpu", [40, 48, 40, 4])])
@pytest.mark.parametrize("name", ["momentum", "adam+alpha"])
def test_resume_is_bitwise_an_uninterrupted_run(name, device, sizes, tmp_path, monkeypatch):
    """Also with the first layer and a hidden layer held in panels with
    their state, which moves back to W for each checkpoint."""
    monkeypatch.setattr(fastbp.kernels.cpu_panels, "worthwhile", lambda sizes, dtype: True)
    monkeypatch.setattr(fastbp.kernels.cpu_panels, "HIDDEN_PANEL_BYTES", 0)
    assert fastbp.kernels.cpu_panels.hidden_layers([40, 48, 40, 4], "float32", 32)[1]
    X, y = data()
    kwargs = dict(optimizer=OPTIMIZERS[name], batch_size=32, device=device, eval_every=5)
    whole = fastbp.Network(sizes, seed=2)
    hist = fastbp.train(whole, X, y, epochs=3, **kwargs)
    path = tmp_path / "run.npz"
    net = fastbp.Network(sizes, seed=2)
    fastbp.train(net, X, y, epochs=1, checkpoint=path, **kwargs)
    again = fastbp.Network(sizes, seed=7)  # other weights: the checkpoint's are used
    resumed = fastbp.train(again, X, y, epochs=3, checkpoint=path, resume=True, **kwargs)
    for (W, b), (W_ref, b_ref) in zip(again.layers, whole.layers):
        assert np.array_equal(W, W_ref) and np.array_equal(b, b_ref)
    assert resumed.batch_cost == hist.batch_cost
    # the state is in the checkpoint, never in a saved model
    assert "optimizer_mW0" in np.load(path).files
    model = tmp_path / "model.npz"
    again.save(model)
    assert not any(k.startswith("optimizer_") for k in np.load(model).files)


def test_resume_refuses_another_optimizer(tmp_path):
    X, y = data()
    path = tmp_path / "run.npz"
    fastbp.train(fastbp.Network([40, 48, 4], seed=2), X, y, epochs=1, batch_size=32,
                 optimizer=OPTIMIZERS["adam"], checkpoint=path, device="cpu")
    for other, what in ((None, "lr=0.01"), (fastbp.SGD(lr=0.01, momentum=0.9), "optimizer="),
                        (fastbp.Adam(lr=0.01, beta1=0.8), "optimizer=")):
        with pytest.raises(ValueError, match=f"cannot resume.*trained with {what}"):
            fastbp.train(fastbp.Network([40, 48, 4], seed=2), X, y, epochs=2, batch_size=32,
                         optimizer=other, checkpoint=path, resume=True, device="cpu")


def test_schedules_follow_scikit_learn():
    sgd = fastbp.SGD(lr=0.4, schedule="invscaling", power_t=0.25)
    schedule = optimizers.Schedule(sgd)
    rates = []
    for n in (100, 100, 50):  # t: the samples seen before each epoch, whatever their epochs
        rates.append(schedule.rate())
        schedule.epoch_ended(n, 1.0)
    assert rates == [0.4, 0.4 / 101 ** 0.25, 0.4 / 201 ** 0.25]
    assert schedule.rate() == 0.4 / 251 ** 0.25
    adaptive = optimizers.Schedule(fastbp.SGD(lr=0.4, schedule="adaptive",
                                              n_iter_no_change=2, tol=0.1))
    for cost in (1.0, 0.95, 0.93, 0.92):  # improves by less than tol three times
        adaptive.epoch_ended(100, cost)
    assert adaptive.rate() == pytest.approx(0.08) and adaptive.stale == 0
    adaptive.epoch_ended(100, 0.5)  # a real improvement: counted afresh
    assert adaptive.rate() == pytest.approx(0.08) and adaptive.best == 0.5
    restored = optimizers.Schedule(adaptive.optimizer, adaptive.to_dict())
    assert restored.to_dict() == adaptive.to_dict()


def test_invscaling_trains_as_the_reference_with_each_epoch_s_rate():
    X, y = data()
    sgd = fastbp.SGD(lr=0.4, momentum=0.5, schedule="invscaling")
    net = fastbp.Network([40, 8, 4], dtype="float64", seed=2)
    fastbp.train(net, X, y, optimizer=sgd, batch_size=64, epochs=2, device="cpu")
    layers = fastbp.Network([40, 8, 4], dtype="float64", seed=2).layers
    state = reference.new_state(layers, "momentum")
    for epoch in range(2):
        order = fastbp.trainer.epoch_order(0, epoch, X.shape[0])
        for start in range(0, X.shape[0], 64):
            rows = order[start:start + 64]
            _, grads = reference.backprop(layers, X[rows], y[rows], "relu", "cross_entropy")
            reference.optimizer_step(layers, grads, state, "momentum",
                                     0.4 / (epoch * X.shape[0] + 1) ** 0.5, momentum=0.5)
    for (W, b), (W_ref, b_ref) in zip(net.layers, layers):
        assert rel_err(W, W_ref) <= 1e-10 and rel_err(b, b_ref) <= 1e-10


@pytest.mark.parametrize("call, words", [
    (lambda: fastbp.SGD(momentum=1.0), ["momentum", "1.0"]),
    (lambda: fastbp.SGD(momentum=-0.1), ["momentum", "-0.1"]),
    (lambda: fastbp.SGD(nesterov="yes"), ["nesterov", "yes"]),
    (lambda: fastbp.SGD(lr=0), ["lr", "0"]),
    (lambda: fastbp.SGD(alpha=-1), ["alpha", "-1"]),
    (lambda: fastbp.SGD(schedule="cosine"), ["schedule", "cosine"]),
    (lambda: fastbp.Adam(beta1=1), ["beta1", "1"]),
    (lambda: fastbp.Adam(beta2=1.5), ["beta2", "1.5"]),
    (lambda: fastbp.Adam(eps=0), ["eps", "0"]),
    (lambda: fastbp.Adam(n_iter_no_change=0), ["n_iter_no_change", "0"]),
    (lambda: fastbp.train(fastbp.Network([3, 2]), np.ones((4, 3)), [0, 1, 0, 1], lr=0.1,
                          optimizer=fastbp.Adam()), ["lr=0.1", "optimizer", "once"]),
    (lambda: fastbp.train(fastbp.Network([3, 2]), np.ones((4, 3)), [0, 1, 0, 1],
                          optimizer="adam"), ["optimizer", "fastbp.SGD", "str"]),
])
def test_bad_optimizer_settings_are_value_errors_naming_them(call, words):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert all(word in message for word in words), message


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_divergence_stops_at_the_last_finite_step_with_the_state_of_that_step(name):
    """The diverged chunk is replayed one step at a time from its start: the
    optimizer's state must be restored with the weights, or the replay runs
    on the chunk's advanced velocities and ends elsewhere."""
    X, y = data(n=400)
    X[399] = np.sign(X[399]) * 1e308  # the batch with this row overflows
    optimizer = (fastbp.SGD(lr=0.5, momentum=0.9) if name == "momentum"
                 else fastbp.Adam(lr=0.5))
    net = fastbp.Network([40, 48, 4], dtype="float64", seed=2)
    with pytest.raises(fastbp.DivergenceError) as info:
        fastbp.train(net, X, y, optimizer=optimizer, batch_size=20, epochs=1, device="cpu",
                     eval_every=0)
    finite = info.value.iteration - 1  # steps whose updates were kept
    assert finite >= 1
    ref = fastbp.Network([40, 48, 4], dtype="float64", seed=2)
    stepper = fastbp.backends.make_stepper("numpy", ref, *ref.checked_layers(), X, y, 20,
                                           optimizer=optimizer)
    costs, errors = np.empty(finite), np.empty(finite)
    with np.errstate(all="ignore"):
        assert stepper.run(fastbp.trainer.epoch_order(0, 0, 400), 0, finite, 0.5, costs,
                           errors) == finite
    for (W, b), (W_ref, b_ref) in zip(net.layers, ref.layers):
        assert rel_err(W, W_ref) <= 1e-10 and rel_err(b, b_ref) <= 1e-10


def test_a_damaged_checkpoint_s_optimizer_state_is_a_data_error(tmp_path):
    X, y = data()
    path = tmp_path / "run.npz"
    kwargs = dict(optimizer=OPTIMIZERS["momentum"], batch_size=32, device="cpu")
    fastbp.train(fastbp.Network([40, 48, 4], seed=2), X, y, epochs=1, checkpoint=path,
                 **kwargs)
    arrays = dict(np.load(path))
    for damage, words in ((lambda a: a.update(optimizer_mW0=np.zeros((2, 3))), "(2, 3)"),
                          (lambda a: a.pop("optimizer_mb1"), "no optimizer_mb1")):
        broken = dict(arrays)
        damage(broken)
        bad = tmp_path / "bad.npz"
        np.savez(bad, **broken)
        with pytest.raises(fastbp.DataError, match=re.escape(words)):
            fastbp.train(fastbp.Network([40, 48, 4], seed=2), X, y, epochs=2, checkpoint=bad,
                         resume=True, **kwargs)


def test_a_trainer_whose_run_diverged_refuses_to_go_on():
    X, y = data(n=400)
    X[399] = np.sign(X[399]) * 1e308
    trainer = fastbp.Trainer(fastbp.Network([40, 48, 4], dtype="float64", seed=2), X, y,
                             optimizer=fastbp.Adam(lr=0.5), batch_size=20, device="cpu")
    with pytest.raises(fastbp.DivergenceError):
        trainer.fit(1)
    with pytest.raises(ValueError, match="diverged at iteration"):
        trainer.fit(1)
