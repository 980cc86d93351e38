"""fastbp.MLPClassifier and MLPRegressor against scikit-learn's own: the same
start, data and settings give the same weights (scikit-learn is the oracle),
and scikit-learn's estimator checks pass."""

import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn import neural_network as sk  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastbp  # noqa: E402
from fastbp.sklearn import EXPECTED_FAILED_CHECKS  # noqa: E402

SOLVERS = {"sgd": dict(solver="sgd", momentum=0.0, learning_rate_init=0.05),
           "momentum": dict(solver="sgd", momentum=0.9, nesterovs_momentum=False,
                            learning_rate_init=0.05),
           "nesterov": dict(solver="sgd", momentum=0.9, nesterovs_momentum=True,
                            learning_rate_init=0.05),
           "adam": dict(solver="adam", learning_rate_init=0.01)}
KINDS = ("multiclass", "binary", "multilabel", "regression", "regression-2")


def problem(kind, n=157, p=9, seed=0):
    """X and y of each kind of target: n is not a multiple of the batch."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    if kind == "multiclass":
        return X, np.array(["a", "b", "c", "d"])[rng.integers(0, 4, n)]  # string labels
    if kind == "binary":
        return X, np.where(X[:, 0] + rng.normal(size=n) > 0, 7, -3)  # non-contiguous ints
    if kind == "multilabel":
        return X, (rng.random((n, 3)) < 0.4).astype(int)
    if kind == "regression":
        return X, X[:, 0] - 2 * X[:, 1]
    return X, X[:, :2] @ np.array([[1.0, 0.5], [-2.0, 1.0]])


def pair(kind, **params):
    """scikit-learn's estimator and fastbp's, with the same settings."""
    theirs = sk.MLPRegressor if kind.startswith("regression") else sk.MLPClassifier
    ours = fastbp.MLPRegressor if kind.startswith("regression") else fastbp.MLPClassifier
    return theirs(**params), ours(**params, dtype="float64", device="cpu")


def assert_same_weights(a, b, rtol=1e-10):
    for x, y in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        assert x.shape == y.shape
        assert np.abs(x - y).max() <= rtol * np.abs(x).max()


def partial_fit(est, X, y, kind, **kwargs):
    if not kind.startswith("regression") and not hasattr(est, "classes_"):
        kwargs["classes"] = np.arange(y.shape[1]) if y.ndim == 2 else np.unique(y)
    return est.partial_fit(X, y, **kwargs)


@pytest.mark.parametrize("weighted", [False, True], ids=["", "sample_weight"])
@pytest.mark.parametrize("alpha", [0.0, 1e-3])
@pytest.mark.parametrize("solver,schedule", [  # (Adam has no schedule, as in scikit-learn)
    (solver, schedule) for solver in SOLVERS for schedule in ("constant", "invscaling")
    if solver != "adam" or schedule == "constant"])
@pytest.mark.parametrize("kind", KINDS)
def test_partial_fit_epochs_are_scikit_learn_s(kind, solver, schedule, alpha, weighted):
    """One partial_fit epoch from the same start (scikit-learn's
    Glorot-uniform draw, equal for the same random_state), then a second on
    other data: the weights, loss_ and t_ equal scikit-learn's to 1e-10."""
    X, y = problem(kind)
    w = np.random.default_rng(1).random(len(X)) * 2 if weighted else None
    theirs, ours = pair(kind, hidden_layer_sizes=(11, 6), activation="tanh", alpha=alpha,
                        learning_rate=schedule, shuffle=False, random_state=3, batch_size=20,
                        **SOLVERS[solver])
    for est in (theirs, ours):
        partial_fit(est, X, y, kind, sample_weight=w)
    assert_same_weights(theirs, ours)
    for est in (theirs, ours):
        partial_fit(est, X[::-1][:90], y[::-1][:90], kind)
    assert_same_weights(theirs, ours)
    assert ours.t_ == theirs.t_ == len(X) + 90
    if not (kind == "regression-2" and alpha):  # (the one known difference: fastbp/sklearn.py)
        assert ours.loss_curve_ == pytest.approx(theirs.loss_curve_, rel=1e-10)
    assert ours.n_layers_ == theirs.n_layers_ and ours.n_outputs_ == theirs.n_outputs_
    assert ours.out_activation_ == theirs.out_activation_


@pytest.mark.parametrize("kind", ["multiclass", "binary", "regression"])
def test_partial_fit_starts_from_coefs_a_user_sets(kind):
    """coefs_/intercepts_ copied from a fitted scikit-learn model are where
    the next epoch starts (plain SGD: no optimizer state to carry)."""
    X, y = problem(kind)
    params = dict(hidden_layer_sizes=(8,), shuffle=False, random_state=0, **SOLVERS["sgd"])
    theirs, ours = pair(kind, **params)
    partial_fit(theirs, X, y, kind)
    partial_fit(ours, X[:50], y[:50], kind)  # elsewhere now
    ours.coefs_ = [c.copy() for c in theirs.coefs_]
    ours.intercepts_ = [b.copy() for b in theirs.intercepts_]
    for est in (theirs, ours):
        partial_fit(est, X, y, kind)
    assert_same_weights(theirs, ours)


@pytest.mark.parametrize("params", [
    dict(solver="adam"),
    dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.02, n_iter_no_change=2,
         tol=1e-2),
    dict(solver="adam", early_stopping=True, validation_fraction=0.2),
    dict(solver="sgd", early_stopping=True, momentum=0.5),
], ids=["adam", "sgd-adaptive", "adam-early-stopping", "sgd-early-stopping"])
@pytest.mark.parametrize("kind", ["multiclass", "binary", "regression"])
def test_fit_is_scikit_learn_s_shuffles_stops_and_all(kind, params):
    """A whole fit with shuffle=True: the same shuffles, validation split,
    schedules and stopping rules, so the same epochs and weights."""
    X, y = problem(kind, n=300)
    theirs, ours = pair(kind, hidden_layer_sizes=(10,), random_state=5, max_iter=60,
                        batch_size=32, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning, both
        theirs.fit(X, y)
        ours.fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_
    assert_same_weights(theirs, ours, rtol=1e-9)
    assert ours.loss_curve_ == pytest.approx(theirs.loss_curve_, rel=1e-9)
    if params.get("early_stopping"):
        assert ours.validation_scores_ == pytest.approx(theirs.validation_scores_)
        assert ours.best_validation_score_ == pytest.approx(theirs.best_validation_score_)
        assert ours.best_loss_ is None
    else:
        assert ours.best_loss_ == pytest.approx(theirs.best_loss_, rel=1e-9)
    if kind == "regression":
        np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-9)
    else:
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def test_max_iter_warns_as_scikit_learn_does():
    X, y = problem("multiclass")
    with pytest.warns(sklearn.exceptions.ConvergenceWarning, match="Maximum iterations"):
        fastbp.MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, device="cpu").fit(X, y)


@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel"])
def test_classifier_outputs_are_scikit_learn_s(kind):
    X, y = problem(kind)
    theirs, ours = pair(kind, hidden_layer_sizes=(6,), random_state=2, max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.fit(X, y)
        ours.fit(X, y)
    np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-9)
    np.testing.assert_allclose(ours.predict_log_proba(X), theirs.predict_log_proba(X),
                               rtol=1e-9)
    assert ours.score(X, y) == theirs.score(X, y)


def test_float32_trains_as_well_and_keeps_its_dtype():
    X, y = problem("multiclass", n=400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = fastbp.MLPClassifier(hidden_layer_sizes=(16,), random_state=0, max_iter=30,
                                    device="cpu").fit(X, y)
        theirs = sk.MLPClassifier(hidden_layer_sizes=(16,), random_state=0,
                                  max_iter=30).fit(X, y)
    assert all(c.dtype == np.float32 for c in ours.coefs_)
    assert abs(ours.score(X, y) - theirs.score(X, y)) < 0.02


def test_class_weight_is_sample_weight_times_the_class_s():
    X, y = problem("binary")
    weights = sklearn.utils.class_weight.compute_sample_weight("balanced", y)
    a = fastbp.MLPClassifier(hidden_layer_sizes=(5,), class_weight="balanced", random_state=0,
                             max_iter=3, dtype="float64", device="cpu")
    b = fastbp.MLPClassifier(hidden_layer_sizes=(5,), random_state=0, max_iter=3,
                             dtype="float64", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.fit(X, y)
        b.fit(X, y, sample_weight=weights)
    assert_same_weights(a, b, rtol=1e-12)


def test_pandas_feature_names_and_sparse_input():
    pd = pytest.importorskip("pandas")
    scipy_sparse = pytest.importorskip("scipy.sparse")
    X, y = problem("multiclass")
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    est = fastbp.MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0,
                               device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(frame, y)
    assert list(est.feature_names_in_) == list(frame.columns) and est.n_features_in_ == 9
    dense = est.predict_proba(frame)
    with pytest.warns(UserWarning, match="feature names"):  # as scikit-learn's own
        np.testing.assert_allclose(est.predict_proba(scipy_sparse.csr_matrix(X)), dense)


def test_pipeline_grid_search_and_cross_validation():
    X, y = problem("multiclass", n=240)
    pipe = make_pipeline(StandardScaler(),
                         fastbp.MLPClassifier(hidden_layer_sizes=(8,), max_iter=20,
                                              random_state=0, device="cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = cross_val_score(pipe, X, y, cv=3)
        search = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-2]}, cv=2, n_jobs=2)
        search.fit(X, y)
    assert scores.shape == (3,) and search.best_params_["mlpclassifier__alpha"] in (1e-4, 1e-2)
    assert clone(pipe).get_params()["mlpclassifier__hidden_layer_sizes"] == (8,)


def test_a_pickled_model_predicts_the_same_in_a_fresh_process(tmp_path):
    X, y = problem("multiclass")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = fastbp.MLPClassifier(hidden_layer_sizes=(7,), max_iter=4, random_state=0,
                                   device="cpu").fit(X, y)
    blob = pickle.dumps(est)
    assert b"numba" not in blob and b"Dispatcher" not in blob  # no compiled code inside
    (tmp_path / "model.pkl").write_bytes(blob)
    np.save(tmp_path / "X.npy", X)
    code = ("import pickle, sys, numpy as np; est = pickle.load(open(sys.argv[1], 'rb')); "
            "np.save(sys.argv[3], est.predict_proba(np.load(sys.argv[2])))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "model.pkl"),
                    str(tmp_path / "X.npy"), str(tmp_path / "p.npy")], check=True, timeout=300,
                   env=dict(os.environ))
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), est.predict_proba(X))


@pytest.mark.parametrize("params,words", [
    (dict(solver="lbfgs"), ["lbfgs", "adam"]),
    (dict(activation="softmax"), ["activation", "softmax"]),
    (dict(hidden_layer_sizes=(5, 0)), ["hidden_layer_sizes", "> 0"]),
    (dict(learning_rate="cyclic"), ["learning_rate", "cyclic"]),
    (dict(momentum=1.5), ["momentum", "1.5"]),
    (dict(batch_size=0), ["batch_size"]),
    (dict(dtype="float16"), ["dtype", "float16"]),
    (dict(dtype="bogus"), ["dtype", "bogus"]),
    (dict(device="gpu"), ["device", "gpu"]),
])
def test_bad_parameters_are_value_errors_naming_them(params, words):
    X, y = problem("multiclass", n=20)
    with pytest.raises(ValueError) as info:
        fastbp.MLPClassifier(**params).fit(X, y)
    assert all(word in str(info.value) for word in words), str(info.value)


def test_partial_fit_on_integer_labels_is_scikit_learn_s():
    """Later partial_fit calls find integer labels' classes by search (no
    binarizer): non-contiguous labels, a class never seen, the same weights
    as scikit-learn; an unknown label is still named."""
    X, y = problem("multiclass")
    y = np.array([9, 2, 5, 40])[np.unique(y, return_inverse=True)[1]]
    theirs, ours = pair("multiclass", hidden_layer_sizes=(11, 6), shuffle=False,
                        random_state=3, batch_size=20, **SOLVERS["adam"])
    for est in (theirs, ours):
        est.partial_fit(X, y, classes=[2, 5, 9, 40, 41])
        est.partial_fit(X[::-1][:90], y[::-1][:90])
    assert_same_weights(theirs, ours)
    before = [c.copy() for c in ours.coefs_]
    with pytest.raises(ValueError, match="classes not in"):
        ours.partial_fit(X[:5], np.array([2, 5, 9, 40, 3]))
    assert all(np.array_equal(a, b) for a, b in zip(before, ours.coefs_))


def test_partial_fit_names_nan_and_inf_in_later_calls_and_keeps_the_weights():
    """After the first call, X is scanned once (by the Trainer, or not at
    all where it is the X of the run's plan); NaN and inf are still named."""
    X, y = problem("multiclass")
    est = fastbp.MLPClassifier(hidden_layer_sizes=(40,), random_state=0, device="cpu")
    est.partial_fit(X, y, classes=np.unique(y))
    est.partial_fit(X, y)
    before = [c.copy() for c in est.coefs_]
    for bad in (np.nan, np.inf):
        changed = X.copy()
        changed[7, 3] = bad
        with pytest.raises(ValueError, match=r"\(NaN or inf\): X\[7, 3\]"):
            est.partial_fit(changed, y)
    assert all(np.array_equal(a, b) for a, b in zip(before, est.coefs_))


def test_partial_fit_rules_of_scikit_learn():
    X, y = problem("multiclass", n=30)
    est = fastbp.MLPClassifier(hidden_layer_sizes=(3,), device="cpu")
    with pytest.raises(ValueError, match="classes must be passed"):
        est.partial_fit(X, y)
    with pytest.raises(ValueError, match="early_stopping"):
        fastbp.MLPClassifier(early_stopping=True).partial_fit(X, y, classes=np.unique(y))
    est.partial_fit(X, y, classes=["a", "b", "c", "d", "e"])
    with pytest.raises(ValueError, match="classes not in"):
        est.partial_fit(X, np.full(30, "z"))


def test_import_fastbp_needs_no_scikit_learn_and_the_estimators_name_the_extra():
    code = ("import sys; sys.modules['sklearn'] = None; import fastbp\n"
            "from fastbp import *\n"
            "try:\n    fastbp.MLPClassifier\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300).stdout
    assert "pip install 'fastbp[sklearn]'" in out


@parametrize_with_checks(
    [fastbp.MLPClassifier(max_iter=100, device="cpu"),
     fastbp.MLPRegressor(max_iter=100, device="cpu")],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_scikit_learn_s_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        check(estimator)


def test_early_stopping_on_a_data_frame_warns_of_nothing():
    """The held-out part is scored internally, without the feature-name check
    that would warn at every epoch."""
    pd = pytest.importorskip("pandas")
    X, y = problem("multiclass", n=200)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    est = fastbp.MLPClassifier(hidden_layer_sizes=(5,), max_iter=4, early_stopping=True,
                               random_state=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        est.fit(frame, y)
    assert len(est.validation_scores_) == 4
