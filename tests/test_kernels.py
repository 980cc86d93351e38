"""Every CPU kernel against fastbp.reference on seeded random inputs."""

import numba
import numpy as np
import pytest

from fastbp import reference
from fastbp.kernels import codes, cpu, cpu_sparse

from conftest import ACTIVATIONS, BATCHES, LOSSES, RTOL, data, rel_err, targets_for

DTYPES = ("float64", "float32")
NO_WEIGHTS = {dtype: np.zeros(0, dtype) for dtype in DTYPES}  # every row weighs 1


def assert_dense_layer(Z, Q, Q_prev, W, b, act, dtype):
    """Z = Q_prev W^T + b and Q = h(Z) (6.11), against float64 NumPy."""
    Z_ref = Q_prev.astype(np.float64) @ W.T.astype(np.float64) + b
    assert rel_err(Z, Z_ref) <= RTOL[dtype]
    assert rel_err(Q, reference.activation(Z_ref, act)) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("P,U", [(1, 7), (7, 1), (33, 129), (129, 33)])
def test_dense_forward(P, U, n, act, dtype):
    Q_prev, W, b = data(n * 1000 + P + U, (n, P), (U, P), (U,), dtype=dtype)
    Z = np.full((n, U), np.nan, dtype)
    Q = np.full((n, U), np.nan, dtype)
    cpu.dense_forward(Z, Q, Q_prev, W, b, codes.ACTIVATIONS[act])
    assert_dense_layer(Z, Q, Q_prev, W, b, act, dtype)


def test_dense_forward_splits_a_batch_by_units_and_inference_by_samples():
    # A mini-batch of Example 6.2 (100 x 784 float32) at 1 and 2 threads ...
    assert cpu.split_by_units(100 * 784 * 4, 200, 1)
    assert cpu.split_by_units(100 * 784 * 4, 200, 2)
    # ... but not 10,000 validation rows, nor too few unit blocks per thread.
    assert not cpu.split_by_units(10000 * 784 * 4, 200, 2)
    assert not cpu.split_by_units(100 * 784 * 4, 33, 2)


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid"])  # tanh, sigmoid: a pass of their own
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_forward_same_bits_either_split(threads, dtype, act):
    """33 rows split by units, and the same rows at the end of an input too
    large for that (split by samples), with the 4 x 4 blocks aligned: the
    same bits, edges (row 32, unit 128) included."""
    P, U, n, big = 129, 129, 33, 33 + 4 * 600
    itemsize = np.dtype(dtype).itemsize
    assert cpu.split_by_units(n * P * itemsize, U, threads)
    assert not cpu.split_by_units(big * P * itemsize, U, threads)
    Q_big, W, b = data(threads, (big, P), (U, P), (U,), dtype=dtype)
    Z, Q = np.full((n, U), np.nan, dtype), np.full((n, U), np.nan, dtype)
    Z_big, Q_out = np.full((big, U), np.nan, dtype), np.full((big, U), np.nan, dtype)
    at_threads(threads, cpu.dense_forward, Z, Q, Q_big[-n:], W, b, codes.ACTIVATIONS[act])
    at_threads(threads, cpu.dense_forward, Z_big, Q_out, Q_big, W, b, codes.ACTIVATIONS[act])
    assert np.array_equal(Z, Z_big[-n:]) and np.array_equal(Q, Q_out[-n:])
    assert_dense_layer(Z, Q, Q_big[-n:], W, b, act, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("n,U", [(1, 1), (7, 33), (100, 129)])
def test_activation_backward(n, U, act, dtype):
    dQ, Z = data(U + n, (n, U), (n, U), dtype=dtype)
    Z[:, ::3] = 0  # exact zeros: ReLU'(0) is 0, as the reference's Z > 0 says
    Q = reference.activation(Z, act).astype(dtype)
    dZ = np.full_like(Z, np.nan)
    cpu.activation_backward(dZ, dQ, Z, Q, codes.ACTIVATIONS[act])
    expected = dQ.astype(np.float64) * reference.activation_derivative(Z.astype(np.float64), act)
    assert rel_err(dZ, expected) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("P,U", [(1, 1), (7, 33), (129, 7), (33, 129)])
def test_dense_backward_weights(P, U, n, dtype):
    dZ, Q_prev = data(3 * n + P + U, (n, U), (n, P), dtype=dtype)
    dZ[dZ < -0.5] = 0  # exercise the kernel's zero-skipping path
    dW = np.full((U, P), np.nan, dtype)
    db = np.full(U, np.nan, dtype)
    cpu.dense_backward_weights(dW, db, dZ, Q_prev)
    dZ64, Q64 = dZ.astype(np.float64), Q_prev.astype(np.float64)
    assert rel_err(dW, dZ64.T @ Q64 / n) <= RTOL[dtype]
    assert rel_err(db, dZ64.sum(axis=0) / n) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("P,U", [(1, 1), (7, 33), (129, 7), (33, 129)])
def test_dense_backward_input(P, U, n, dtype):
    dZ, W = data(5 * n + P + U, (n, U), (U, P), dtype=dtype)
    dZ[dZ < -0.5] = 0
    dQ_prev = np.full((n, P), np.nan, dtype)
    cpu.dense_backward_input(dQ_prev, dZ, W)
    assert rel_err(dQ_prev, dZ.astype(np.float64) @ W.astype(np.float64)) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("M", [2, 7, 33])
def test_softmax_cross_entropy(n, M, dtype):
    rng = np.random.default_rng(n * M)
    Z = (rng.normal(size=(n, M)) * 10).astype(dtype)  # large logits: needs the max-shift
    labels = rng.integers(0, M, n)
    dZ = np.full_like(Z, np.nan)
    row_loss = np.full(n, np.nan, dtype)
    J = cpu.softmax_cross_entropy(dZ, row_loss, Z, labels, NO_WEIGHTS[dtype])
    J_ref, dZ_ref = reference.cost_and_output_gradient(Z.astype(np.float64), labels,
                                                       "cross_entropy")
    assert rel_err(J, J_ref) <= RTOL[dtype]
    assert rel_err(dZ, dZ_ref) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_on_logits_that_would_overflow_exp(dtype):
    """exp(1000) (float64) and exp(100) (float32) overflow: only the shift by
    each row's largest logit, wherever it sits in the row, keeps J and dZ exact."""
    big = {"float64": 1000.0, "float32": 100.0}[dtype]
    Z = np.array([[0, 0, big], [big, 0, 0], [0, big, 0]], dtype)
    labels = np.array([0, 0, 1])
    dZ, row_loss = np.full_like(Z, np.nan), np.full(3, np.nan, dtype)
    J = cpu.softmax_cross_entropy(dZ, row_loss, Z, labels, NO_WEIGHTS[dtype])
    assert J == pytest.approx(big / 3, rel=1e-6)  # rows: big, 0, 0 (up to e^-big)
    assert np.isfinite(row_loss).all()
    np.testing.assert_allclose(dZ, [[-1, 0, 1], [0, 0, 0], [0, 0, 0]], rtol=0, atol=1e-30)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("M", [1, 7, 33])
def test_squared_error(n, M, dtype):
    Z, Y = data(n + 7 * M, (n, M), (n, M), dtype=dtype)
    dZ = np.full_like(Z, np.nan)
    row_loss = np.full(n, np.nan, dtype)
    J = cpu.squared_error(dZ, row_loss, Z, Y, NO_WEIGHTS[dtype])
    J_ref, dZ_ref = reference.cost_and_output_gradient(Z.astype(np.float64),
                                                       Y.astype(np.float64), "squared_error")
    assert rel_err(J, J_ref) <= RTOL[dtype]
    assert rel_err(dZ, dZ_ref) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("M", [1, 7, 33])
def test_binary_cross_entropy(n, M, dtype):
    rng = np.random.default_rng(n + 3 * M)
    Z = (rng.normal(size=(n, M)) * 10).astype(dtype)
    T = rng.integers(0, 2, (n, M)).astype(dtype)
    T[0, 0] = 0.25  # a soft target: the same formula
    dZ, row_loss = np.full_like(Z, np.nan), np.full(n, np.nan, dtype)
    J = cpu.binary_cross_entropy(dZ, row_loss, Z, T, NO_WEIGHTS[dtype])
    J_ref, dZ_ref = reference.cost_and_output_gradient(Z.astype(np.float64),
                                                       T.astype(np.float64),
                                                       "binary_cross_entropy")
    assert rel_err(J, J_ref) <= RTOL[dtype]
    assert rel_err(dZ, dZ_ref) <= RTOL[dtype]
    wrong = ((Z > 0) != (T > 0.5)).any(axis=1)
    assert cpu.count_label_misses(Z, T) == wrong.sum()
    assert reference.error_rate(Z.astype(np.float64), T, "binary_cross_entropy") == wrong.mean()


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_on_logits_that_would_overflow_exp(dtype):
    """sigmoid and log(1 + e^z) at |z| = 1000 (float64) or 100 (float32):
    finite, and exact up to e^-|z|."""
    big = {"float64": 1000.0, "float32": 100.0}[dtype]
    Z = np.array([[big, -big], [-big, big]], dtype)
    T = np.array([[1, 1], [1, 0]], dtype)
    dZ, row_loss = np.full_like(Z, np.nan), np.full(2, np.nan, dtype)
    J = cpu.binary_cross_entropy(dZ, row_loss, Z, T, NO_WEIGHTS[dtype])
    assert np.isfinite(row_loss).all()
    assert row_loss.tolist() == pytest.approx([big, 2 * big], rel=1e-6)
    assert J == pytest.approx(1.5 * big, rel=1e-6)
    np.testing.assert_allclose(dZ, [[0, -1], [-1, 1]], rtol=0, atol=1e-30)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("n", [1, 7, 100])
def test_loss_kernels_weigh_each_row(n, loss, dtype):
    """Sample weights (zeros among them): the weighted mean cost and each row's
    gradient scaled by n w_i / sum w, as the reference (scikit-learn's MLP)
    defines them; weights of another length mean none."""
    rng = np.random.default_rng(n + len(loss))
    M = 5
    Z = rng.normal(size=(n, M)).astype(dtype)
    y = targets_for(loss, rng, n, M)
    w = rng.random(n) * (rng.random(n) < 0.7)
    w[0] = 2.5
    factors = (w * n / w.sum()).astype(dtype)
    labels, targets = (y, np.zeros((0, M), dtype)) if loss == "cross_entropy" else (
        np.zeros(0, np.int64), y.astype(dtype))
    for weights, sample_weight in ((factors, w), (np.ones(n + 1, dtype), None)):
        dZ, row_loss = np.full_like(Z, np.nan), np.full(n, np.nan, dtype)
        J = cpu.output_loss(dZ, row_loss, Z, labels, targets, weights, codes.LOSSES[loss])
        J_ref, dZ_ref = reference.cost_and_output_gradient(Z.astype(np.float64), y, loss,
                                                           sample_weight)
        assert rel_err(J, J_ref) <= RTOL[dtype]
        assert rel_err(dZ, dZ_ref) <= RTOL[dtype]
    assert reference.cost_and_output_gradient(Z, y, loss, np.zeros(n))[0] == 0.0


@pytest.mark.parametrize("n,M", [(1, 2), (7, 10), (129, 33)])
def test_count_misclassified(n, M):
    rng = np.random.default_rng(n)
    Z = rng.normal(size=(n, M))
    Z[0, :] = 1.0  # a tie: the first maximum (class 0) wins, as np.argmax
    labels = rng.integers(0, M, n)
    assert cpu.count_misclassified(Z, labels) == int(np.sum(Z.argmax(axis=1) != labels))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("P,U", [(1, 1), (7, 33), (129, 7)])
def test_sgd_update(P, U, dtype):
    W, b, dW, db = data(P * U, (U, P), (U,), (U, P), (U,), dtype=dtype)
    W_ref, b_ref = W.astype(np.float64), b.astype(np.float64)
    reference.sgd_step([(W_ref, b_ref)], [(dW.astype(np.float64), db.astype(np.float64))], 0.3)
    cpu.sgd_update(W, b, dW, db, 0.3)
    assert rel_err(W, W_ref) <= RTOL[dtype]
    assert rel_err(b, b_ref) <= RTOL[dtype]


@pytest.mark.parametrize("n", BATCHES)
def test_gather_rows(n):
    (src,) = data(n, (129, 7))
    rows = np.random.default_rng(n).permutation(129)[:n]
    out = np.full((n, 7), np.nan)
    cpu.gather_rows(out, src, rows)
    assert np.array_equal(out, src[rows])


def test_kernels_are_deterministic():
    """Same inputs, same bits: no reduction depends on thread timing."""
    Q_prev, W, dZ = data(1, (100, 129), (33, 129), (100, 33), dtype="float32")
    outs = []
    for _ in range(3):
        Z = np.empty((100, 33), np.float32)
        dW = np.empty((33, 129), np.float32)
        db = np.empty(33, np.float32)
        cpu.dense_forward(Z, Z, Q_prev, W, np.zeros(33, np.float32), codes.IDENTITY)
        cpu.dense_backward_weights(dW, db, dZ, Q_prev)
        outs.append((Z, dW, db))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert np.array_equal(a, b)


def at_threads(threads, fn, *args):
    """fn(*args) with numba's thread count set to ``threads``, then restored."""
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        return fn(*args)
    finally:
        numba.set_num_threads(previous)


def sparse_input(seed, n, P, dtype, density=0.2):
    """Rows with about ``density`` non-zeros, like MNIST pixels or ReLU outputs."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, P)) * (rng.random((n, P)) < density)).astype(dtype)


@pytest.mark.parametrize("n,P", [(1, 1), (7, 33), (100, 129), (33, 7)])
def test_nonzero_rows_and_cols_list_every_non_zero(n, P):
    A = sparse_input(n + P, n, P, "float64")
    A[0, 0] = np.nan  # NaN must be listed, so divergence stays visible
    idx, val = np.full((max(n, P), max(n, P)), -1, np.int32), np.zeros((max(n, P),) * 2)
    count = np.zeros(max(n, P), np.int64)
    cpu_sparse.nonzero_rows(idx, val, count, A)
    for i in range(n):
        expected = np.flatnonzero(A[i] != 0)
        assert idx[i, :count[i]].tolist() == expected.tolist(), f"row {i}"
        assert np.array_equal(val[i, :count[i]], A[i, expected], equal_nan=True)
    cpu_sparse.nonzero_cols(idx, val, count, A)
    for k in range(P):
        expected = np.flatnonzero(A[:, k] != 0)
        assert idx[k, :count[k]].tolist() == expected.tolist(), f"column {k}"
        assert np.array_equal(val[k, :count[k]], A[expected, k], equal_nan=True)


def lists(A, by):
    side = max(A.shape)
    idx, val = np.zeros((side, side), np.int32), np.zeros((side, side), A.dtype)
    count = np.zeros(side, np.int64)
    (cpu_sparse.nonzero_rows if by == "rows" else cpu_sparse.nonzero_cols)(idx, val, count, A)
    return idx, val, count


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("P,U", [(1, 7), (7, 1), (33, 129), (129, 33)])
def test_sparse_forward(P, U, n, act, dtype):
    Q_prev = sparse_input(n * P + U, n, P, dtype)
    _, W, b = data(n + P + U, (1,), (U, P), (U,), dtype=dtype)
    Z, Q = np.full((n, U), np.nan, dtype), np.full((n, U), np.nan, dtype)
    cpu_sparse.sparse_forward(Z, Q, *lists(Q_prev, "rows"), np.ascontiguousarray(W.T), b,
                       codes.ACTIVATIONS[act])
    assert_dense_layer(Z, Q, Q_prev, W, b, act, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("P,U", [(1, 1), (7, 33), (129, 7), (33, 129)])
def test_sparse_backward_input(P, U, n, dtype):
    dZ = sparse_input(2 * n + P + U, n, U, dtype, density=0.5)
    (W,) = data(P * U, (U, P), dtype=dtype)
    dQ_prev = np.full((n, P), np.nan, dtype)
    cpu_sparse.sparse_backward_input(dQ_prev, *lists(dZ, "rows"), W)
    assert rel_err(dQ_prev, dZ.astype(np.float64) @ W.astype(np.float64)) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("P,U", [(1, 1), (7, 33), (129, 7), (33, 129)])
def test_sparse_sgd_update_both_layouts_equal_6_23(P, U, n, dtype):
    """W^T with the input's column lists, or W with dZ's: both are W -= lr dW."""
    Q_prev = sparse_input(n + 3 * P, n, P, dtype)
    dZ = sparse_input(n + 5 * U, n, U, dtype, density=0.5)
    W, b = data(P + U, (U, P), (U,), dtype=dtype)
    lr = 0.3
    W_ref = W.astype(np.float64) - lr * (dZ.T.astype(np.float64) @ Q_prev / n)
    b_ref = b.astype(np.float64) - lr * dZ.astype(np.float64).sum(axis=0) / n
    WT = W.T.copy()  # a copy: for 1 x 1, ascontiguousarray(W.T) would be W itself
    cpu_sparse.sparse_sgd_update(WT, *lists(Q_prev, "cols"), dZ, lr, n)
    assert rel_err(WT.T, W_ref) <= RTOL[dtype]
    W2, b2 = W.copy(), b.copy()
    cpu_sparse.sparse_sgd_update(W2, *lists(dZ, "cols"), Q_prev, lr, n)
    assert rel_err(W2, W_ref) <= RTOL[dtype]
    cpu.bias_sgd_update(b2, dZ, lr)
    assert rel_err(b2, b_ref) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("P,U", [(1, 1), (7, 33), (129, 7), (33, 129), (7, 6)])  # last block: 1, 1, 3, 1, 2 units
def test_dense_sgd_update_is_6_23_for_any_thread_count(P, U, n, dtype):
    """W -= lr dZ^T Q_prev / n, four units by four samples (a last block of
    1-3 units; batches that end mid-block), bitwise the same for 1 or 2 threads."""
    Q_prev = sparse_input(n + 3 * P, n, P, dtype, density=0.7)
    dZ = sparse_input(n + 5 * U, n, U, dtype, density=0.8)
    (W,) = data(P + U, (U, P), dtype=dtype)
    lr = 0.3
    W_ref = W.astype(np.float64) - lr * (dZ.T.astype(np.float64) @ Q_prev / n)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        W2 = W.copy()
        at_threads(threads, cpu.dense_sgd_update, W2, dZ, Q_prev, lr, n)
        assert rel_err(W2, W_ref) <= RTOL[dtype]
        results.append(W2)
    assert np.array_equal(results[0], results[1])


def compressed(X):
    """fastbp's compressed rows of X via the two kernels, as run before training."""
    counts = np.empty(X.shape[0], np.int64)
    cpu_sparse.row_nonzeros(counts, X)
    indptr = np.zeros(X.shape[0] + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices, values = np.empty(indptr[-1], np.int32), np.empty(indptr[-1], X.dtype)
    cpu_sparse.compress_rows(indices, values, indptr, X)
    return indptr, indices, values


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,P", [(1, 1), (7, 33), (129, 100), (33, 7)])
def test_compress_rows_lists_every_non_zero_in_order(n, P, dtype):
    """Each row's non-zeros, found 16 columns at a time by a vector compare
    (and the columns past the last 16 one at a time): NaN is listed, -0.0 is not."""
    X = sparse_input(n * 3 + P, n, P, dtype)
    X[0, 0] = np.nan  # NaN must be listed, so divergence stays visible
    X[n // 2, P // 2] = -0.0
    X[-1] = 0  # an empty row (the last one: its end is the arrays' end)
    indptr, indices, values = compressed(X)
    assert indptr[0] == 0 and indptr[-1] == np.count_nonzero(X)
    for i in range(n):
        expected = np.flatnonzero(X[i] != 0)
        assert indices[indptr[i]:indptr[i + 1]].tolist() == expected.tolist(), f"row {i}"
        assert np.array_equal(values[indptr[i]:indptr[i + 1]], X[i, expected], equal_nan=True)


@pytest.mark.parametrize("threads", [1, 2])
def test_compress_rows_writes_nothing_past_a_row_s_last_slot(threads):
    """A spare write past a row's end lands in the next row's first slot
    (which a race can leave there) or, for the last row, past the arrays:
    one sentinel slot past the end must stay as it was, at any thread count."""
    X = sparse_input(11, 9, 40, "float64")
    X[:, -5:] = 0  # every row ends in zeros, so the loop runs on past its last non-zero
    X[-1, 0] = 1.5
    counts = np.empty(9, np.int64)
    cpu_sparse.row_nonzeros(counts, X)
    indptr = np.zeros(10, np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices, values = np.full(indptr[-1] + 1, -7, np.int32), np.full(indptr[-1] + 1, -7.0)
    at_threads(threads, cpu_sparse.compress_rows, indices, values, indptr, X)
    assert indices[-1] == -7 and values[-1] == -7.0
    for i in range(9):
        assert indices[indptr[i]:indptr[i + 1]].tolist() == np.flatnonzero(X[i]).tolist()


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_differ_counts_the_rows_their_compression_no_longer_holds(dtype):
    """0 for the rows compressed; each kind of change counts its row once:
    a value changed, a zero made non-zero, a non-zero made zero, a value
    moved to another column, a NaN (never equal to itself) where a zero
    was or where a value is listed."""
    X = sparse_input(3, 40, 33, dtype)
    X[5] = 0  # an empty row
    rows = compressed(X)
    assert cpu_sparse.rows_differ(X, *rows) == 0
    changed = X.copy()
    i, k = np.argwhere(X != 0)[0]
    changed[i, k] *= 2
    first_zero = np.argwhere(X[7] == 0)[0, 0]
    changed[7, first_zero] = 1
    changed[9, np.flatnonzero(X[9])[-1]] = 0
    nonzero = np.flatnonzero(X[11])[0]
    changed[11, nonzero + 1 if nonzero + 1 < 33 and X[11, nonzero + 1] == 0 else 0] = X[11,
                                                                                       nonzero]
    changed[11, nonzero] = 0
    changed[5, 32] = np.nan
    changed[13, np.flatnonzero(X[13])[-1]] = np.nan  # where a value is listed: same count
    assert i not in (5, 7, 9, 11, 13)
    assert cpu_sparse.rows_differ(changed, *rows) == 6


def test_prefetch_rows_runs_on_any_batch_and_writes_nothing():
    """A hint to the cache, so nothing to compare but that it runs on every
    shape of batch (empty rows, the last row, an empty batch) and changes
    nothing; training tests cover that results stay bitwise the same."""
    X = sparse_input(5, 9, 40, "float32")
    X[3] = 0
    X[-1] = 0
    indptr, indices, values = compressed(X)
    before = [a.copy() for a in (indptr, indices, values)]
    for rows in (np.arange(9), np.array([8, 3, 0]), np.zeros(0, np.int64)):
        cpu_sparse.prefetch_rows(indptr, indices, values, rows)
    assert all(np.array_equal(a, b) for a, b in zip(before, (indptr, indices, values)))


def batch_of(seed, n_data, n):
    """n distinct rows of n_data, shuffled (a mini-batch of 6.21)."""
    return np.random.default_rng(seed).permutation(n_data)[:n]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("P,U", [(1, 7), (7, 1), (33, 129), (129, 33)])
def test_csr_forward_reads_the_batch_rows_in_place(P, U, n, act, dtype):
    X = sparse_input(n * P + U + 1, 2 * n + 3, P, dtype)
    rows = batch_of(n + P, X.shape[0], n)
    _, W, b = data(n + P + U, (1,), (U, P), (U,), dtype=dtype)
    Z, Q = np.full((n, U), np.nan, dtype), np.full((n, U), np.nan, dtype)
    cpu_sparse.csr_forward(Z, Q, *compressed(X), rows, np.ascontiguousarray(W.T), b,
                    codes.ACTIVATIONS[act])
    assert_dense_layer(Z, Q, X[rows], W, b, act, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("P,U", [(1, 1), (7, 33), (129, 7), (33, 129)])
def test_csr_sgd_update_is_6_23_for_any_thread_count(P, U, n, dtype):
    """W^T -= lr dW^T from the batch's compressed rows; the columns are split
    into one chunk per thread, and the result is bitwise the same for 1 or 2."""
    X = sparse_input(n + 3 * P, n + 5, P, dtype)
    rows = batch_of(P, X.shape[0], n)
    dZ = sparse_input(n + 5 * U, n, U, dtype, density=0.5)
    (W,) = data(P + U, (U, P), dtype=dtype)
    lr = 0.3
    W_ref = W.astype(np.float64) - lr * (dZ.T.astype(np.float64) @ X[rows] / n)
    indptr, indices, values = compressed(X)
    colcum = np.zeros(P + 1, np.int64)
    np.cumsum(np.bincount(indices, minlength=P), out=colcum[1:])
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        WT = W.T.copy()
        idx, val = np.full((P, n), -1, np.int32), np.full((P, n), np.nan, dtype)
        count = np.full(P, -1, np.int64)
        at_threads(threads, cpu_sparse.csr_sgd_update, WT, idx, val, count, indptr, indices, values,
                   rows, dZ, lr, n, colcum)
        assert rel_err(WT.T, W_ref) <= RTOL[dtype]
        results.append(WT)
    assert np.array_equal(results[0], results[1])


RULES = {"sgd+alpha": codes.RULE_SGD, "momentum": codes.RULE_MOMENTUM,
         "nesterov": codes.RULE_NESTEROV, "adam": codes.RULE_ADAM}
RULE_T, RULE_DECAY = 3, 0.25  # Adam's update number; alpha / n_b


def rule_args(rule, dtype):
    """(rule code, the step's rate, hyper, decay) for the fused rule kernels."""
    one = np.dtype(dtype).type
    name = rule.split("+")[0]
    lr = 0.05 * np.sqrt(1 - 0.99 ** RULE_T) / (1 - 0.8 ** RULE_T) if name == "adam" else 0.05
    hyper = tuple(one(h) for h in (0.9, 0.8, 1 - 0.8, 0.99, 1 - 0.99, 1e-6))
    return RULES[rule], one(lr), hyper, one(RULE_DECAY)


def reference_rule(rule, W, m, v, gradient_sum, n):
    """The reference's optimizer_step on W with g = gradient_sum / n +
    RULE_DECAY W, from state m, v: [W, m, v] after it, float64, as many as
    the rule keeps."""
    name = rule.split("+")[0]
    W = W.astype(np.float64)
    state = reference.new_state([(W, np.zeros(1))], name)
    for index, value in enumerate((m, v)[:len(state)]):
        state[index][0][0][...] = value
    g = gradient_sum / n + RULE_DECAY * W
    reference.optimizer_step([(W, np.zeros(1))], [(g, np.zeros(1))], state, name, 0.05,
                             momentum=0.9, beta1=0.8, beta2=0.99, eps=1e-6, t=RULE_T)
    return [W] + [s[0][0] for s in state]


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("P,U", [(1, 1), (7, 33), (129, 7), (33, 129)])
def test_csr_rule_update_is_the_reference_rule_on_every_column(P, U, n, dtype, rule):
    """W^T's fused rule update from the batch's compressed rows changes every
    column as the reference's optimizer_step, those of pixels no batch row
    has included (their state decays, the penalty moves them), bitwise the
    same for 1 thread or more."""
    X = sparse_input(n + 3 * P, n + 5, P, dtype)
    X[:, 0] = 0
    rows = batch_of(P, X.shape[0], n)
    dZ = sparse_input(n + 5 * U, n, U, dtype, density=0.5)
    W, m, v = data(P + U, (U, P), (U, P), (U, P), dtype=dtype)
    v = np.abs(v)
    expected = reference_rule(rule, W, m, v, dZ.T.astype(np.float64) @ X[rows], n)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        WT, mT, vT = (A.T.copy() for A in (W, m, v))
        kept = [WT, mT, vT][:len(expected)]
        none = np.zeros((0, 0), dtype)
        gT = np.full((numba.config.NUMBA_NUM_THREADS, U), np.nan, dtype)
        idx, val = np.full((P, n), -1, np.int32), np.full((P, n), np.nan, dtype)
        at_threads(threads, cpu_sparse.csr_rule_update, WT, mT if len(kept) > 1 else none,
                   vT if len(kept) > 2 else none, gT, idx, val, np.full(P, -1, np.int64),
                   *compressed(X), rows, dZ, n, *rule_args(rule, dtype))
        for got, before, want in zip(kept, (W, m, v), expected):
            assert rel_err(got.T, want) <= RTOL[dtype]
            assert not np.array_equal(got[0], before[:, 0])  # pixel 0: no sample, yet it moved
        results.append(kept)
    assert all(np.array_equal(a, b) for a, b in zip(*results))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("H,M", [(1, 1), (7, 3), (33, 10), (129, 16)])  # last pass: 1, 3, 2, 4 rows
def test_output_layer_rows_is_the_last_layer_of_algorithm_6_1(H, M, n, loss, act, dtype):
    """Forward of the output layer, loss rows, dZ (6.26) and the layer below's
    dZ (6.27b then 6.27a), against the reference's formulas."""
    Z_prev, W, b = data(n * H + M, (n, H), (M, H), (M,), dtype=dtype)
    Z_prev[:, ::3] = 0  # exact zeros: ReLU'(0) is 0, as the reference's Z > 0 says
    Q_prev = reference.activation(Z_prev, act).astype(dtype)
    rng = np.random.default_rng(n + H)
    labels = rng.integers(0, M, n)
    targets = targets_for("squared_error" if loss == "cross_entropy" else loss, rng, n,
                          M).astype(dtype)  # (unused by cross_entropy)
    # Weighted rows where n is odd (a weight 0 among them), unweighted otherwise.
    w = rng.random(n) * (np.arange(n) % 3 != 1) + (np.arange(n) == 0) if n % 2 else None
    weights = NO_WEIGHTS[dtype] if w is None else (w * n / w.sum()).astype(dtype)
    Z, dZ = np.full((n, M), np.nan, dtype), np.full((n, M), np.nan, dtype)
    row_loss, wrong = np.full(n, np.nan, dtype), np.full(n + 2, -1, np.int64)
    dZ_prev = np.full((n, H), np.nan, dtype)
    cpu.output_layer_rows(Z, dZ, row_loss, wrong, dZ_prev, Z_prev, Q_prev, W, b, labels,
                          targets, weights, codes.ACTIVATIONS[act], codes.LOSSES[loss], True)
    Z_ref = Q_prev.astype(np.float64) @ W.T.astype(np.float64) + b
    y = labels if loss == "cross_entropy" else targets.astype(np.float64)
    J_ref, dZ_ref = reference.cost_and_output_gradient(Z_ref, y, loss, w)
    assert rel_err(Z, Z_ref) <= RTOL[dtype]
    assert rel_err(row_loss.mean(), J_ref) <= RTOL[dtype]
    assert rel_err(dZ, dZ_ref) <= RTOL[dtype]
    dZ_prev_ref = (dZ_ref @ W.astype(np.float64)) * reference.activation_derivative(
        Z_prev.astype(np.float64), act)
    assert rel_err(dZ_prev, dZ_prev_ref) <= RTOL[dtype]
    if loss != "squared_error":
        assert wrong[:n].mean() == reference.error_rate(Z_ref, y, loss)
    untouched = np.full((n, H), 7.0, dtype)
    cpu.output_layer_rows(Z, dZ, row_loss, wrong, untouched, Z_prev, Q_prev, W, b, labels,
                          targets, weights, codes.ACTIVATIONS[act], codes.LOSSES[loss], False)
    assert (untouched == 7.0).all()  # back=False: a one-layer net has no layer below


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,M", [(1, 3), (37, 10), (100, 2), (16, 16)])
def test_output_layer_rows_softmax_is_the_loss_kernels_to_the_bit(n, M, dtype):
    """Blocks of rows (config.OUTPUT_ROWS, a last one part-full) whose exps
    run in one loop: the same bits as softmax_cross_entropy's row at a time,
    with sample weights and without, and argmax's first maximum on ties."""
    rng = np.random.default_rng(n * M)
    H = 9
    Z_prev = rng.normal(size=(n, H)).astype(dtype)
    Q_prev, W = np.maximum(Z_prev, 0), (rng.normal(size=(M, H)) * 3).astype(dtype)
    W[M // 2] = W[0]  # equal logits: a tie that the first maximum breaks
    b, labels = np.zeros(M, dtype), rng.integers(0, M, n)
    for weights in (NO_WEIGHTS[dtype], (rng.random(n) * 2).astype(dtype)):
        Z, dZ, dZ_prev = np.empty((n, M), dtype), np.empty((n, M), dtype), np.empty((n, H), dtype)
        row_loss, wrong = np.empty(n, dtype), np.full(n, -1, np.int64)
        cpu.output_layer_rows(Z, dZ, row_loss, wrong, dZ_prev, Z_prev, Q_prev, W, b, labels,
                              np.zeros((n, M), dtype), weights, codes.RELU,
                              codes.CROSS_ENTROPY, True)
        dZ_one, loss_one = np.empty_like(dZ), np.empty_like(row_loss)
        cpu.softmax_cross_entropy(dZ_one, loss_one, Z, labels, weights)
        assert np.array_equal(dZ, dZ_one) and np.array_equal(row_loss, loss_one)
        np.testing.assert_array_equal(wrong, Z.argmax(axis=1) != labels)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M", [1, 3, 4, 10])
def test_output_layer_rows_gives_each_row_the_results_of_that_row_alone(M, dtype):
    """Rows in blocks of four (the forward's 4 x 4 tiles, _rows_times) and
    rows alone (a one-row call: a tile of one repeated row, _row_times)
    give the same results: a row's do not depend on its neighbours (the
    same bits with AVX2 or AVX-512 here, but compiled for SSE only,
    NUMBA_CPU_NAME=generic, LLVM vectorises the two differently)."""
    n, H = 16, 37  # one block of 16 rows: four groups of four
    Z_prev, W, b = data(M * H + 5, (n, H), (M, H), (M,), dtype=dtype)
    Q_prev = np.maximum(Z_prev, 0)
    labels = np.random.default_rng(M).integers(0, M, n)

    def run(rows):
        k = len(rows)
        Z, dZ = np.empty((k, M), dtype), np.empty((k, M), dtype)
        dZ_prev, row_loss = np.empty((k, H), dtype), np.empty(k, dtype)
        cpu.output_layer_rows(Z, dZ, row_loss, np.empty(k, np.int64), dZ_prev, Z_prev[rows],
                              Q_prev[rows], W, b, labels[rows], np.zeros((k, M), dtype),
                              NO_WEIGHTS[dtype], codes.RELU, codes.CROSS_ENTROPY, True)
        return Z, dZ, dZ_prev
    together = run(np.arange(n))
    for i in range(n):
        for got, want in zip(run(np.array([i])), together):
            assert rel_err(got[0], want[i]) <= RTOL[dtype], i


@pytest.mark.parametrize("n,P", [(1, 1), (7, 33), (129, 100)])
def test_transpose(n, P):
    (A,) = data(n * P, (n, P))
    out = np.empty((P, n))
    cpu.transpose(out, A)
    assert np.array_equal(out, A.T)


@pytest.mark.parametrize("n,P", [(1, 1), (7, 33), (100, 129)])
def test_count_nonzero(n, P):
    A = sparse_input(n * P, n, P, "float32")
    A[0, 0] = np.nan
    assert cpu_sparse.count_nonzero(A) == np.count_nonzero(A)
