"""Every CUDA kernel against fastbp.reference, at tiny sizes (1, 3, 7 units;
batches of 1 and 5) on blocks of 4 threads.

Not collected by a plain ``pytest`` run (the name lacks ``test_``): under
Numba's simulator NUMBA_ENABLE_CUDASIM=1 must be set before numba is
imported, so ``tests/test_cuda_kernels.py`` runs this file in a subprocess;
``scripts/gpu_check.sh`` runs it on a real GPU.
"""

import numpy as np
import pytest
from numba import cuda

from fastbp import reference
from fastbp.buffers import batch_buffers
from fastbp.backends.cuda import device_batch_buffers, launch
from fastbp.kernels import codes
from fastbp.kernels import cuda as kernels

from conftest import ACTIVATIONS, RTOL, data, rel_err, targets_for

DTYPES = ("float64", "float32")
BATCHES = (1, 5)
SHAPES = [(1, 3), (7, 1), (3, 7)]  # (P, U)


@pytest.fixture(autouse=True)
def few_threads(monkeypatch):
    """Blocks of 4 threads, so that tiny inputs span several blocks."""
    monkeypatch.setattr(kernels, "THREADS", 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("P,U", SHAPES)
def test_dense_forward(P, U, n, act, dtype):
    Q_prev, W, b = data(n * 100 + P + U, (n, P), (U, P), (U,), dtype=dtype)
    Z = np.full((n, U), np.nan, dtype)
    Q = np.full((n, U), np.nan, dtype)
    launch(kernels.dense_forward, n * U, Z, Q, Q_prev, W, b, codes.ACTIVATIONS[act])
    Z_ref = Q_prev.astype(np.float64) @ W.T.astype(np.float64) + b
    assert rel_err(Z, Z_ref) <= RTOL[dtype]
    assert rel_err(Q, reference.activation(Z_ref, act)) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("n,U", [(1, 1), (5, 3), (5, 7)])
def test_activation_backward(n, U, act, dtype):
    dQ, Z = data(U + n, (n, U), (n, U), dtype=dtype)
    Q = reference.activation(Z, act).astype(dtype)
    dZ = np.full_like(Z, np.nan)
    launch(kernels.activation_backward, n * U, dZ, dQ, Z, Q, codes.ACTIVATIONS[act])
    expected = dQ.astype(np.float64) * reference.activation_derivative(Z.astype(np.float64), act)
    assert rel_err(dZ, expected) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("P,U", SHAPES)
def test_dense_backward_weights(P, U, n, dtype):
    dZ, Q_prev = data(3 * n + P + U, (n, U), (n, P), dtype=dtype)
    dW = np.full((U, P), np.nan, dtype)
    db = np.full(U, np.nan, dtype)
    launch(kernels.dense_backward_weights, U * (P + 1), dW, db, dZ, Q_prev)
    dZ64, Q64 = dZ.astype(np.float64), Q_prev.astype(np.float64)
    assert rel_err(dW, dZ64.T @ Q64 / n) <= RTOL[dtype]
    assert rel_err(db, dZ64.sum(axis=0) / n) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("P,U", SHAPES)
def test_dense_backward_input(P, U, n, dtype):
    dZ, W = data(5 * n + P + U, (n, U), (U, P), dtype=dtype)
    dQ_prev = np.full((n, P), np.nan, dtype)
    launch(kernels.dense_backward_input, n * P, dQ_prev, dZ, W)
    assert rel_err(dQ_prev, dZ.astype(np.float64) @ W.astype(np.float64)) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("M", [2, 7])
def test_softmax_cross_entropy(n, M, dtype):
    rng = np.random.default_rng(n * M)
    Z = (rng.normal(size=(n, M)) * 10).astype(dtype)  # large logits: needs the max-shift
    labels = rng.integers(0, M, n)
    dZ = np.full_like(Z, np.nan)
    row_loss = np.full(n, np.nan, dtype)
    out_cost = np.full(1, np.nan)
    launch(kernels.softmax_cross_entropy, n, dZ, row_loss, Z, labels, np.ones(1, dtype),
           out_cost)
    J_ref, dZ_ref = reference.cost_and_output_gradient(Z.astype(np.float64), labels,
                                                       "cross_entropy")
    assert rel_err(out_cost[0], J_ref) <= RTOL[dtype]
    assert rel_err(dZ, dZ_ref) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("M", [1, 7])
def test_squared_error(n, M, dtype):
    Z, Y = data(n + 7 * M, (n, M), (n, M), dtype=dtype)
    dZ = np.full_like(Z, np.nan)
    row_loss = np.full(n, np.nan, dtype)
    out_cost = np.full(1, np.nan)
    launch(kernels.squared_error, n, dZ, row_loss, Z, Y, np.ones(n + 1, dtype), out_cost)
    J_ref, dZ_ref = reference.cost_and_output_gradient(Z.astype(np.float64),
                                                       Y.astype(np.float64), "squared_error")
    assert rel_err(out_cost[0], J_ref) <= RTOL[dtype]
    assert rel_err(dZ, dZ_ref) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error", "binary_cross_entropy"])
@pytest.mark.parametrize("n,M", [(1, 1), (5, 3), (13, 2)])
def test_loss_kernels_with_and_without_weights(n, M, loss, weighted, dtype):
    """Every loss twin, its rows weighted (a weight 0 among them) or not,
    and the binary error count, against the reference."""
    if loss == "cross_entropy" and M == 1:
        M = 2
    rng = np.random.default_rng(n * M + len(loss))
    Z = (rng.normal(size=(n, M)) * 5).astype(dtype)
    y = targets_for(loss, rng, n, M)
    w = rng.random(n) * (np.arange(n) % 3 != 1) + (np.arange(n) == 0) if weighted else None
    weights = np.ones(1, dtype) if w is None else (w * n / w.sum()).astype(dtype)
    dZ, row_loss = np.full_like(Z, np.nan), np.full(n, np.nan, dtype)
    out_cost = np.full(1, np.nan)
    kernel = {"cross_entropy": kernels.softmax_cross_entropy,
              "squared_error": kernels.squared_error,
              "binary_cross_entropy": kernels.binary_cross_entropy}[loss]
    launch(kernel, n, dZ, row_loss, Z, y if loss == "cross_entropy" else y.astype(dtype),
           weights, out_cost)
    J_ref, dZ_ref = reference.cost_and_output_gradient(Z.astype(np.float64), y, loss, w)
    assert rel_err(out_cost[0], J_ref) <= RTOL[dtype]
    assert rel_err(dZ, dZ_ref) <= RTOL[dtype]
    if loss == "binary_cross_entropy":
        out_wrong = np.full(1, -1, np.int64)
        launch(kernels.count_label_misses, n, Z, y.astype(dtype), out_wrong)
        assert out_wrong[0] == int(np.sum(((Z > 0) != (y > 0.5)).any(axis=1)))


@pytest.mark.parametrize("n,M", [(1, 2), (5, 3), (13, 7)])
def test_count_misclassified(n, M):
    rng = np.random.default_rng(n)
    Z = rng.normal(size=(n, M))
    Z[0, :] = 1.0  # a tie: the first maximum (class 0) wins, as np.argmax
    labels = rng.integers(0, M, n)
    out_wrong = np.full(1, -1, np.int64)
    launch(kernels.count_misclassified, n, Z, labels, out_wrong)
    assert out_wrong[0] == int(np.sum(Z.argmax(axis=1) != labels))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("P,U", SHAPES)
def test_sgd_update(P, U, dtype):
    W, b, dW, db = data(P * U, (U, P), (U,), (U, P), (U,), dtype=dtype)
    W_ref, b_ref = W.astype(np.float64), b.astype(np.float64)
    reference.sgd_step([(W_ref, b_ref)], [(dW.astype(np.float64), db.astype(np.float64))], 0.3)
    launch(kernels.sgd_update, U * (P + 1), W, b, dW, db, 0.3)
    assert rel_err(W, W_ref) <= RTOL[dtype]
    assert rel_err(b, b_ref) <= RTOL[dtype]


@pytest.mark.parametrize("n", BATCHES)
def test_gather_rows(n):
    (src,) = data(n, (13, 3))
    rows = np.random.default_rng(n).permutation(13)[:n]
    out = np.full((n, 3), np.nan)
    launch(kernels.gather_rows, n * 3, out, src, rows)
    assert np.array_equal(out, src[rows])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("sizes", [[3, 7, 2], [7, 1, 3, 2]])
def test_forward_all(sizes, n, dtype):
    rng = np.random.default_rng(n + len(sizes))
    layers = [(rng.normal(size=(u, p)).astype(dtype), rng.normal(size=u).astype(dtype))
              for p, u in zip(sizes, sizes[1:])]
    X = rng.normal(size=(n, sizes[0])).astype(dtype)
    Zs, Qs, _, _, _ = device_batch_buffers(sizes, n + 2, dtype)  # more rows than n
    Ws = tuple(cuda.to_device(W) for W, _ in layers)
    bs = tuple(cuda.to_device(b) for _, b in layers)
    launch(kernels.forward_all, (n + 2) * max(sizes), Zs, Qs, cuda.to_device(X), Ws, bs,
           codes.TANH)
    Z_ref = reference.forward([(W.astype(np.float64), b) for W, b in layers],
                              X.astype(np.float64), "tanh")[0][-1]
    assert rel_err(Zs[-1].copy_to_host()[:n], Z_ref) <= RTOL[dtype]


def test_host_buffers_match_device_buffers():
    """device_batch_buffers mirrors buffers.batch_buffers (shapes, Qs[-1] is Zs[-1])."""
    host = batch_buffers([3, 7, 2], 5, np.float32)
    dev = device_batch_buffers([3, 7, 2], 5, np.float32)
    for h, d in zip(host[:3], dev[:3]):
        assert [a.shape for a in h] == [a.shape for a in d]
    assert dev[1][-1] is dev[0][-1]


def test_too_many_threads_for_a_cooperative_kernel_is_one_clear_error(monkeypatch):
    """On an H100, train_steps at 512 threads per block fits no block on a
    multiprocessor (max_cooperative_grid_blocks is 0): an error naming THREADS,
    not a launch of 0 blocks."""
    from fastbp.backends import cuda as cuda_backend

    class Compiled:
        def max_cooperative_grid_blocks(self, threads):
            return 0 if threads >= 512 else 7

    class Kernel:  # what grid() reads of a numba-cuda dispatcher
        py_func = kernels.train_steps.py_func

        def typeof_pyval(self, value):
            return value

        def compile(self, signature):
            return Compiled()

    monkeypatch.setattr(cuda_backend.config, "ENABLE_CUDASIM", False)
    monkeypatch.setattr(kernels, "THREADS", 256)
    assert cuda_backend.grid(Kernel(), 10**6, (1, 2)) == 7
    monkeypatch.setattr(kernels, "THREADS", 512)
    with pytest.raises(ValueError, match=r"THREADS = 512 is too many for train_steps"):
        cuda_backend.grid(Kernel(), 10**6, (1, 2))
