"""Per-sample weights: ``sample_weight`` times ``class_weight``, as
scikit-learn defines them (``compute_sample_weight``; the MLP's weighted
cost and gradient of scikit-learn pull request 30155)."""

import numbers

import numpy as np

from . import checks


def sample_weights(net, y, sample_weight=None, class_weight=None):
    """The (n,) float64 weight of every training sample, or None when both
    arguments are None (every sample weighs 1, and the kernels skip the
    weighting).

    y : labels or targets as ``net.check_targets`` returned them.
    sample_weight : (n,) finite, non-negative, not all zero.
    class_weight : None, "balanced" (class c weighs n / (k n_c), k the
        classes present in y) or {label: weight} (labels missing from it
        weigh 1). Classification only; for a multi-label net, "balanced"
        weighs each output's 0/1 classes so and multiplies them over the
        outputs (scikit-learn's multi-output rule), and a dict is refused.
    """
    n = y.shape[0]
    w = None
    if sample_weight is not None:
        w = checks.sample_weight("sample_weight", sample_weight, n)
    if class_weight is None:
        return w
    if not net.is_classifier:
        raise ValueError("class_weight is for classification; this network does regression "
                         "(loss='squared_error'): give sample_weight instead")
    columns = [y] if net.takes_labels else [y[:, j] for j in range(y.shape[1])]
    if isinstance(class_weight, dict) and len(columns) > 1:
        raise ValueError("class_weight as a dict needs single-label targets; for multi-label "
                         "targets use class_weight='balanced' or give sample_weight")
    if not net.takes_labels and not np.isin(y, (0, 1)).all():
        raise ValueError("class_weight needs 0/1 targets; y holds other values (soft labels): "
                         "give sample_weight instead")
    classes = net.n_outputs if net.takes_labels else 2
    by_class = 1.0
    for column in columns:
        by_class = by_class * _per_class(class_weight, column.astype(np.int64), classes)
    w = by_class if w is None else w * by_class
    if n and not w.any():
        raise ValueError("sample_weight and class_weight give every sample the weight 0: no "
                         "sample would count")
    return w


def _per_class(class_weight, labels, classes):
    """(n,) the weight of each sample's class; labels in 0..classes-1."""
    table = np.ones(classes)
    if isinstance(class_weight, str):
        checks.choice("class_weight", class_weight, ("balanced",))
        counts = np.bincount(labels, minlength=classes)
        present = counts > 0
        table[present] = labels.shape[0] / (present.sum() * counts[present])
        return table[labels]
    if not isinstance(class_weight, dict):
        raise ValueError("class_weight must be None, 'balanced' or a dict {label: weight}; got "
                         f"{type(class_weight).__name__}")
    for label, weight in class_weight.items():
        if (isinstance(label, bool) or not isinstance(label, numbers.Integral)
                or not 0 <= label < classes):
            raise ValueError(f"class_weight has the label {label!r}; the labels are "
                             f"0..{classes - 1}")
        if (isinstance(weight, bool) or not isinstance(weight, numbers.Real)
                or not np.isfinite(weight) or weight < 0):
            raise ValueError(f"class_weight[{label!r}] = {weight!r}: a weight must be a finite "
                             "number >= 0")
        table[int(label)] = float(weight)
    return table[labels]


def row_factors(sample_weight, dtype):
    """A batch's weights as the loss kernels take them: c_i = n_b w_i / sum w
    (so that the mean of weighted rows is the weighted mean), or an empty
    array for none."""
    if sample_weight is None:
        return np.zeros(0, dtype)
    return (sample_weight * (sample_weight.shape[0] / sample_weight.sum())).astype(dtype)
