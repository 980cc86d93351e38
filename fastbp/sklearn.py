"""scikit-learn's MLPClassifier and MLPRegressor, trained by fastbp.

The same parameters, defaults, fitted attributes and methods as
``sklearn.neural_network``'s estimators, plus ``device`` and ``dtype`` (and
``class_weight`` on the classifier). This module only orchestrates, one epoch
at a time, exactly as scikit-learn's ``_fit_stochastic`` does: the same
Glorot-uniform start and validation split and shuffles (drawn from the same
``check_random_state(random_state)``), the same learning-rate schedules and
stopping rules; each epoch runs in fastbp's compiled loop (fastbp.Trainer).

scikit-learn's regression loss is half the squared error averaged over the
outputs, with the output gradient Z - Y (not divided by the outputs); fastbp's
squared_error has 2 (Z - Y). Doubling the gradient is exact in floating point,
so the regressor runs SGD at half the rate, and Adam with twice epsilon, and
twice alpha: every update is scikit-learn's (docs/architecture.md). One
difference remains: with several outputs and alpha > 0, loss_ (and so the
tol-based stopping) counts the L2 penalty 1/n_outputs as much as
scikit-learn's does; the compiled loop reports one cost, penalty included.
"""

import contextlib
import math
import numbers
import warnings

import numba
import numpy as np

try:
    from scipy import sparse
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state
    from sklearn.utils import shuffle as sk_shuffle
    from sklearn.utils.class_weight import compute_sample_weight
    from sklearn.utils.multiclass import type_of_target, unique_labels
    from sklearn.utils.validation import (
        _check_sample_weight,
        check_is_fitted,
        column_or_1d,
        validate_data,
    )
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError("fastbp.MLPClassifier and fastbp.MLPRegressor need scikit-learn: "
                      "pip install 'fastbp[sklearn]' (in a clone of fastbp: "
                      "pip install '.[sklearn]')") from exc

from . import backends, checks
from .errors import DivergenceError
from .network import Network
from .optimizers import SGD, Adam
from .trainer import Trainer

# scikit-learn's estimator checks these estimators fail, with why. (scikit-learn
# >= 1.6 takes them as parametrize_with_checks' expected_failed_checks; its tags
# no longer carry them.) scikit-learn's own MLPs fail these too under sgd and
# adam, and its test suite runs them with solver="lbfgs" instead.
EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data":
        "mini-batch SGD and Adam: weighting a sample is not repeating it (the batches "
        "differ), as with scikit-learn's own sgd and adam",
    "check_sample_weight_equivalence_on_sparse_data":
        "mini-batch SGD and Adam: weighting a sample is not repeating it (the batches "
        "differ), as with scikit-learn's own sgd and adam",
}

# scikit-learn's activation names -> fastbp's
ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
SOLVERS = ("sgd", "adam")
SCHEDULES = ("constant", "invscaling", "adaptive")


class _Rate:
    """The Trainer's schedule, set by the estimator before every epoch (the
    estimator runs scikit-learn's schedules itself)."""

    def __init__(self, lr):
        self.lr = lr

    def rate(self):
        return self.lr

    def epoch_ended(self, n_samples, mean_cost):
        """Nothing: the estimator decides the next rate."""

    def to_dict(self):
        return {"lr": self.lr}


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share: scikit-learn's _fit_stochastic."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 device="auto", dtype="float32"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.device = device
        self.dtype = dtype

    # --- what subclasses define --------------------------------------------

    def _targets(self, y, first, incremental, classes=None):
        """(y for the Network, loss name, n_outputs, y as the score compares it)."""
        raise NotImplementedError

    def _score_value(self, X, y, sample_weight):
        raise NotImplementedError

    # --- fitting -------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Fit the model to X, y (and per-sample weights) with max_iter epochs
        at most, as scikit-learn's does."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental, classes=None):
        with _threads(fit_threads()):
            return self._fit_here(X, y, sample_weight, incremental, classes)

    def _fit_here(self, X, y, sample_weight, incremental, classes):
        self._check_params(incremental)
        first = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        # partial_fit on a run under way: Trainer.set_data scans X for NaN and
        # inf before anything changes (or skips the scan where X is the data
        # its plan was made from), so scikit-learn's scan would only repeat it.
        again = (incremental and getattr(self, "_trainer", None) is not None
                 and not self.early_stopping)
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32), reset=first,
                             y_numeric=not isinstance(self, ClassifierMixin),
                             ensure_all_finite=not again)
        if sparse.issparse(X):  # densified: the kernels read dense rows
            X = X.toarray()
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        targets, loss, n_outputs = self._targets(y, first, incremental, classes)
        sample_weight = self._class_weighted(y, sample_weight)
        rs = check_random_state(self.random_state)  # afresh each call, as scikit-learn
        sizes = [X.shape[1], *self._hidden_sizes(), n_outputs]
        if first:
            self._initialize(sizes, rs, loss)
        net = self._network(loss)
        if not first and net.sizes != sizes:
            raise ValueError(f"the data needs a network of sizes {sizes}, but the fitted one "
                             f"has {net.sizes}; fit again without warm_start")
        self._fit_stochastic(net, X, y, targets, sample_weight, incremental, rs)
        return self

    def _check_params(self, incremental):
        checks.choice("activation", self.activation, tuple(ACTIVATIONS))
        if self.solver == "lbfgs":
            raise ValueError("solver='lbfgs' is not implemented by fastbp; use 'adam' or 'sgd'")
        checks.choice("solver", self.solver, SOLVERS)
        checks.choice("learning_rate", self.learning_rate, SCHEDULES)
        try:
            dtype = np.dtype(self.dtype).name if self.dtype is not None else None
        except TypeError:  # not a dtype at all: named as given
            dtype = self.dtype
        checks.choice("dtype", dtype, ("float32", "float64"))
        if self.batch_size != "auto":
            checks.positive_int("batch_size", self.batch_size)
        checks.positive_int("max_iter", self.max_iter)
        checks.positive_int("n_iter_no_change", self.n_iter_no_change)
        checks.positive_float("learning_rate_init", self.learning_rate_init)
        for name in ("alpha", "tol", "power_t"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not math.isfinite(value) or value < 0):
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
        for name, closed in (("momentum", True), ("beta_1", False), ("beta_2", False),
                             ("validation_fraction", False)):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not (0 <= value < 1 or (closed and value == 1))):
                raise ValueError(f"{name} must be in [0, 1{']' if closed else ')'}; got "
                                 f"{value!r}")
        checks.positive_float("epsilon", self.epsilon)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        backends.resolve_device(self.device)

    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        for i, u in enumerate(sizes):
            if isinstance(u, bool) or not isinstance(u, numbers.Integral) or u < 1:
                raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes} "
                                 f"(entry {i}: {u!r})")
        return [int(u) for u in sizes]

    def _class_weighted(self, y, sample_weight):
        """sample_weight times the class weights (the classifier's extra)."""
        return sample_weight

    def _initialize(self, sizes, rs, loss):
        """scikit-learn's _initialize: Glorot-uniform weights and biases drawn
        from rs, layer by layer, and the fitted attributes' starting values."""
        dtype = np.dtype(self.dtype)
        self.n_iter_, self.t_ = 0, 0
        self.n_outputs_, self.n_layers_ = sizes[-1], len(sizes)
        self.out_activation_ = {"cross_entropy": "softmax", "binary_cross_entropy": "logistic",
                                "squared_error": "identity"}[loss]
        factor = 2.0 if self.activation == "logistic" else 6.0
        self.coefs_, self.intercepts_ = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            self.coefs_.append(rs.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype))
            self.intercepts_.append(rs.uniform(-bound, bound, fan_out).astype(dtype))
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_, self.best_validation_score_ = [], -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = self.best_validation_score_ = None
        self._trainer = None

    def _network(self, loss):
        """A fastbp Network holding the current coefs_ and intercepts_ (a user
        may have set them), in fastbp's orientation (W = coef^T)."""
        dtype = np.dtype(self.dtype)
        sizes = [self.coefs_[0].shape[0]] + [c.shape[1] for c in self.coefs_]
        net = getattr(self, "_net", None)
        if net is None or net.sizes != sizes or net.loss != loss or net.dtype != dtype or (
                net.activation != ACTIVATIONS[self.activation]):
            net = Network(sizes, ACTIVATIONS[self.activation], loss, dtype.name)
            self._net, self._trainer = net, None
        for (W, b), coef, intercept in zip(net.layers, self.coefs_, self.intercepts_):
            W[...] = np.asarray(coef).T  # in place: a Trainer keeps these arrays
            b[...] = intercept
        return net

    def _optimizer(self, loss):
        """fastbp's rule for solver and its settings (constant rate: the
        estimator sets each epoch's); for the regressor, scaled so that every
        update is scikit-learn's (see the module's docstring)."""
        half = loss == "squared_error"
        alpha = 2 * self.alpha if half else self.alpha
        if self.solver == "adam":
            return Adam(lr=self.learning_rate_init, beta1=self.beta_1, beta2=self.beta_2,
                        eps=2 * self.epsilon if half else self.epsilon, alpha=alpha)
        lr = self.learning_rate_init / 2 if half else self.learning_rate_init
        return SGD(lr=lr, momentum=self.momentum,
                   nesterov=bool(self.nesterovs_momentum) and self.momentum > 0, alpha=alpha)

    def _fit_stochastic(self, net, X, y, targets, sample_weight, incremental, rs):
        """scikit-learn's _fit_stochastic, an epoch at a time on a Trainer."""
        loss = net.loss
        if incremental and getattr(self, "_trainer", None) is not None:
            trainer = self._trainer
        else:
            trainer, self._lr = None, self.learning_rate_init
        if self.early_stopping:
            stratify = targets if (isinstance(self, ClassifierMixin)
                                   and self.n_outputs_ == 1) else None
            train, val = train_test_split(np.arange(X.shape[0]), random_state=rs,
                                          test_size=self.validation_fraction,
                                          stratify=stratify)
            if val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            X_val, y_val = X[val], y[val]
            w_val = None if sample_weight is None else sample_weight[val]
            X, targets = X[train], targets[train]
            sample_weight = None if sample_weight is None else sample_weight[train]
        n = X.shape[0]
        batch_size = min(200, n) if self.batch_size == "auto" else self.batch_size
        if self.batch_size != "auto" and self.batch_size > n:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                          "going to be clipped", stacklevel=5)
        batch_size = min(batch_size, n)
        order = _Shuffles(rs) if self.shuffle else False
        if trainer is None:
            trainer = Trainer(net, X, targets, optimizer=self._optimizer(loss),
                              batch_size=batch_size, eval_every=0, device=self.device,
                              sample_weight=sample_weight, shuffle=order)
            trainer.schedule = _Rate(self._lr)
            self._trainer = trainer
        else:  # partial_fit: new data, the same run (optimizer state, Adam's t)
            trainer.batch_size = batch_size
            trainer.shuffle = order
            trainer.set_data(X, targets, sample_weight)
        history = trainer.history
        self.n_iter_ = 0
        try:
            for _ in range(self.max_iter):
                trainer.schedule.lr = self._rate(loss)
                before = len(history.batch_cost)
                trainer.fit(trainer.epoch + 1)
                self.n_iter_ += 1
                self.loss_ = self._epoch_loss(history.batch_cost[before:], n, batch_size, loss)
                self.t_ += n
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
                self._sync_coefs(net)
                if self.early_stopping:
                    self._watch(X_val, y_val, w_val)
                else:
                    self._watch_loss()
                if self.solver == "sgd" and self.learning_rate == "invscaling":
                    self._lr = self.learning_rate_init / (self.t_ + 1) ** self.power_t
                if self._no_improvement_count > self.n_iter_no_change:
                    what = "Validation score" if self.early_stopping else "Training loss"
                    msg = (f"{what} did not improve more than tol={self.tol:f} for "
                           f"{self.n_iter_no_change} consecutive epochs.")
                    if self._stop(msg):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                                  "reached and the optimization hasn't converged yet.",
                                  ConvergenceWarning, stacklevel=5)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=5)
            self._sync_coefs(net)
        except DivergenceError as exc:  # scikit-learn's error, with fastbp's reason
            self._sync_coefs(net)
            raise ValueError("Solver produced non-finite parameter weights. The input data "
                             "may contain large values and need to be preprocessed. "
                             f"({exc})") from None
        if self.early_stopping:
            self.coefs_, self.intercepts_ = self._best_coefs, self._best_intercepts

    def _rate(self, loss):
        """This epoch's learning rate as fastbp's optimizer takes it."""
        if self.solver == "adam":
            return self.learning_rate_init
        return self._lr / 2 if loss == "squared_error" else self._lr

    def _epoch_loss(self, costs, n, batch_size, loss):
        """scikit-learn's loss_: the batches' costs weighted by their sizes;
        for regression, half the squared error averaged over the outputs."""
        sizes = np.full(len(costs), batch_size, np.float64)
        sizes[-1] = n - batch_size * (len(costs) - 1)
        value = float(np.asarray(costs) @ sizes / n)
        return value / (2 * self.n_outputs_) if loss == "squared_error" else value

    def _sync_coefs(self, net):
        self.coefs_ = [W.T.copy() for W, _ in net.layers]
        self.intercepts_ = [b.copy() for _, b in net.layers]

    def _watch_loss(self):
        if self.loss_curve_[-1] > self.best_loss_ - self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        self.best_loss_ = min(self.best_loss_, self.loss_curve_[-1])

    def _watch(self, X_val, y_val, w_val):
        score = self._score_value(X_val, y_val, w_val)
        self.validation_scores_.append(score)
        if self.verbose:
            print(f"Validation score: {score:f}")
        if score < self.best_validation_score_ + self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if score > self.best_validation_score_:
            self.best_validation_score_ = score
            self._best_coefs = [c.copy() for c in self.coefs_]
            self._best_intercepts = [b.copy() for b in self.intercepts_]

    def _stop(self, msg):
        """scikit-learn's trigger_stopping: adaptive SGD divides its rate by 5
        instead, until the rate is 1e-6 or less."""
        if self.solver != "sgd" or self.learning_rate != "adaptive":
            if self.verbose:
                print(msg + " Stopping.")
            return True
        if self._lr <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._lr /= 5.0
        if self.verbose:
            print(msg + f" Setting learning rate to {self._lr:f}")
        return False

    # --- inference -----------------------------------------------------------

    def _forward(self, X):
        """Z_L of the fitted network for X (any real dtype, dense or sparse)."""
        check_is_fitted(self, "coefs_")
        X = validate_data(self, X, accept_sparse=["csr", "csc"],
                          dtype=(np.float64, np.float32), reset=False)
        if sparse.issparse(X):
            X = X.toarray()
        return self._network(self._loss_name()).forward(X)

    def _loss_name(self):
        return {"softmax": "cross_entropy", "logistic": "binary_cross_entropy",
                "identity": "squared_error"}[self.out_activation_]

    # --- pickling: plain arrays, no compiled code ------------------------------

    def __getstate__(self):
        state = dict(self.__dict__)
        for key in ("_net", "_trainer"):  # rebuilt from coefs_ on demand
            state.pop(key, None)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def fit_threads():
    """The Numba threads a fit uses here: inside a Dask worker, the worker's
    own thread count (its processes and threads are what the cluster was
    given: more would oversubscribe the cores); elsewhere Numba's setting."""
    try:
        from distributed import get_worker
        return min(get_worker().state.nthreads, numba.config.NUMBA_NUM_THREADS)
    except (ImportError, ValueError):  # no distributed, or not in a worker
        return numba.get_num_threads()


@contextlib.contextmanager
def _threads(n):
    """Numba's thread count set to n for this thread while the block runs."""
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)


class _Shuffles:
    """scikit-learn's shuffles: each epoch permutes the previous epoch's
    order with sklearn.utils.shuffle and the same RandomState."""

    def __init__(self, rs):
        self.rs, self.order = rs, None

    def __call__(self, epoch, n):
        if self.order is None or self.order.shape[0] != n:
            self.order = np.arange(n, dtype=int)
        self.order = sk_shuffle(self.order, random_state=self.rs)
        return self.order


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """scikit-learn's MLPClassifier (same parameters, attributes, methods and
    results), trained by fastbp; plus ``class_weight`` (None, "balanced" or
    {label: weight}), ``device`` ("auto", "cpu", "cuda", "numpy") and
    ``dtype`` ("float32", "float64"). Multi-class targets get a softmax
    output, binary ones one logistic unit, label-indicator matrices one
    logistic unit per label (multi-label)."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 class_weight=None, device="auto", dtype="float32"):
        super().__init__(hidden_layer_sizes, activation, solver=solver, alpha=alpha,
                         batch_size=batch_size, learning_rate=learning_rate,
                         learning_rate_init=learning_rate_init, power_t=power_t,
                         max_iter=max_iter, shuffle=shuffle, random_state=random_state,
                         tol=tol, verbose=verbose, warm_start=warm_start, momentum=momentum,
                         nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
                         validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
                         device=device, dtype=dtype)
        self.class_weight = class_weight

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over X, y; ``classes`` (every label there will be) on the first call."""
        if not hasattr(self, "classes_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"`classes={classes}` is not the same as on the first call to "
                             f"partial_fit, which was {self.classes_}")
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _targets(self, y, first, incremental, classes=None):
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            multilabel = type_of_target(y).startswith("multilabel")
            self._label_binarizer.fit(y if classes is None or multilabel else classes)
            self.classes_ = self._label_binarizer.classes_
        else:
            labels = self._known_labels(y) if incremental else None
            if labels is not None:
                return labels, "cross_entropy", len(self.classes_)
            seen = unique_labels(y)
            if self.warm_start and not incremental and set(seen) != set(self.classes_):
                raise ValueError("warm_start can only be used where `y` has the same classes "
                                 f"as in the previous call to fit. Previously got "
                                 f"{self.classes_}, `y` has {seen}")
            if len(np.setdiff1d(seen, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{self.classes_}. 'y' has {seen}.")
        Y = self._label_binarizer.transform(y)
        kind = self._label_binarizer.y_type_
        if kind == "multiclass":
            return np.ascontiguousarray(Y.argmax(axis=1)), "cross_entropy", Y.shape[1]
        return Y.astype(np.float64), "binary_cross_entropy", Y.shape[1]

    def _known_labels(self, y):
        """partial_fit's integer labels as class indices, found by search,
        where each is a class of a multi-class model: what the binarizer and
        argmax give, without an (n, classes) matrix each call; else None
        (the general path checks and names what is wrong)."""
        classes = self.classes_
        if not (self._label_binarizer.y_type_ == "multiclass" and y.ndim == 1
                and y.dtype.kind in "iu" and classes.dtype.kind in "iu"):
            return None
        labels = np.searchsorted(classes, y)
        known = labels < len(classes)
        known[known] = classes[labels[known]] == y[known]
        return labels if known.all() else None

    def _class_weighted(self, y, sample_weight):
        if self.class_weight is None:
            return sample_weight
        by_class = compute_sample_weight(self.class_weight, y)
        return by_class if sample_weight is None else sample_weight * by_class

    def _score_value(self, X, y, sample_weight):
        """The validation score of early stopping, on data already checked."""
        Z = self._network(self._loss_name()).forward(X)
        return accuracy_score(y, self._classes_of(Z), sample_weight=sample_weight)

    def predict(self, X):
        """The predicted classes (labels, or an indicator matrix for multi-label)."""
        return self._classes_of(self._forward(X))

    def _classes_of(self, Z):
        if self.out_activation_ == "softmax":
            return self.classes_[Z.argmax(axis=1)]
        indicator = (Z > 0).astype(int)  # probability above 1/2
        return self._label_binarizer.inverse_transform(
            indicator[:, 0] if self.n_outputs_ == 1 else indicator)

    def predict_proba(self, X):
        """Class probabilities, (n_samples, n_classes)."""
        Z = self._forward(X).astype(np.float64)
        if self.out_activation_ == "softmax":
            E = np.exp(Z - Z.max(axis=1, keepdims=True))
            return E / E.sum(axis=1, keepdims=True)
        p = 1 / (1 + np.exp(-Z))
        return np.hstack([1 - p, p]) if self.n_outputs_ == 1 else p

    def predict_log_proba(self, X):
        """log of predict_proba."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """scikit-learn's MLPRegressor (same parameters, attributes, methods and
    results), trained by fastbp; plus ``device`` and ``dtype``."""

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over X, y."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _targets(self, y, first, incremental, classes=None):
        Y = y.reshape(y.shape[0], -1).astype(np.float64)
        return Y, "squared_error", Y.shape[1]

    def _score_value(self, X, y, sample_weight):
        """The validation score of early stopping, on data already checked."""
        Z = self._network(self._loss_name()).forward(X)
        return r2_score(y, Z[:, 0] if self.n_outputs_ == 1 else Z, sample_weight=sample_weight)

    def predict(self, X):
        """The predicted values, (n_samples,) or (n_samples, n_outputs)."""
        Z = self._forward(X)
        return Z[:, 0] if self.n_outputs_ == 1 else Z
