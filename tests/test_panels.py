"""The dense first layer on panels (kernels/cpu_panels.py) against the
reference, at any vector width, and inside the compiled training loop."""

import re

import numba
import numpy as np
import pytest
from llvmlite import binding as llvm_binding

import fastbp
from fastbp.kernels import codes, config, cpu_panels, cpu_tile_lists, vector_width
from fastbp.kernels.cpu_common import PARALLEL

from conftest import ACTIVATIONS, BATCHES, RTOL, data, rel_err
from test_kernels import (RULES, assert_dense_layer, at_threads, reference_rule, rule_args,
                          sparse_input)

DTYPES = ("float64", "float32")
MAX_UNION_RATIO = fastbp.sparse_rows.MAX_UNION_RATIO  # before the panels fixture lifts it
PARALLEL_UNCACHED = dict(PARALLEL, cache=False)
# Units and inputs that leave partial panels and partial 8-row tiles (and
# whole ones: 32 units fill one float32 panel, 16 one float64 panel). Last
# panels that the tiles compute half wide (cpu_panels._columns): 1, 7, 33,
# 129 and 40 units (8 in the last panel: exactly half of a float64 one); and
# one just past half, computed whole: 25 (25 of 32 at float32, 9 of 16 at float64).
SHAPES = [(1, 1), (7, 33), (129, 7), (33, 129), (16, 32), (9, 25), (5, 40)]


def packed(W):
    """W in panels, through the kernel, over a buffer of NaNs."""
    dtype = W.dtype
    WP = np.full(cpu_panels.panel_shape(W.shape[0], W.shape[1], dtype), np.nan, dtype)
    cpu_panels.pack_panels(WP, W)
    return WP


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("P,U", SHAPES)
def test_pack_panels_lays_out_w_transposed_by_panels_and_unpacks(P, U, dtype):
    (W,) = data(P * U, (U, P), dtype=dtype)
    WP = packed(W)
    width = cpu_panels.panel_width(np.dtype(dtype))
    assert width == 128 // np.dtype(dtype).itemsize
    for j in range(U):  # WP[t, k, c] = W[t * width + c, k]
        assert np.array_equal(WP[j // width, :, j % width], W[j])
    padding = WP.transpose(0, 2, 1).reshape(-1, P)[U:]
    assert np.all(padding == 0)  # zero, so padded units add nothing
    W2 = np.full_like(W, np.nan)
    cpu_panels.unpack_panels(W2, WP)
    assert np.array_equal(W2, W)
    # The same moves between W^T and panels, without W (train_steps' sparse <-> dense batches).
    WP2 = np.full_like(WP, np.nan)
    cpu_panels.panels_from_transposed(WP2, np.ascontiguousarray(W.T))
    assert np.array_equal(WP2, WP)
    WT = np.full((P, U), np.nan, dtype)
    cpu_panels.transposed_from_panels(WT, WP)
    assert np.array_equal(WT, W.T)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("P,U", SHAPES)
def test_panel_forward(P, U, n, act, dtype):
    X, W, b = data(n * 1000 + P + U, (n, P), (U, P), (U,), dtype=dtype)
    Z = np.full((n, U), np.nan, dtype)
    Q = np.full((n, U), np.nan, dtype)
    cpu_panels.panel_forward(Z, Q, X, packed(W), b, codes.ACTIVATIONS[act])
    assert_dense_layer(Z, Q, X, W, b, act, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("P,U", SHAPES)
def test_panel_sgd_update_is_6_23(P, U, n, dtype):
    """W -= lr dZ^T X / n on panels, and b -= lr sum_i dZ_i / n: only the
    first n rows of dZ, X and the dZ buffer count, and padded units stay zero."""
    X = sparse_input(n + 3 * P, n, P, dtype, density=0.7)
    dZ = sparse_input(n + 5 * U, n, U, dtype, density=0.8)
    W, b = data(P + U, (U, P), (U,), dtype=dtype)
    lr = 0.3
    W_ref = W.astype(np.float64) - lr * (dZ.T.astype(np.float64) @ X / n)
    b_ref = b.astype(np.float64) - lr * dZ.sum(axis=0, dtype=np.float64) / n
    nan_rows = np.full((3, 1), np.nan, dtype)  # rows past n are unused, X's and dZ's too
    X_more = np.vstack([X, nan_rows.repeat(P, axis=1)])
    dZ_more = np.vstack([dZ, nan_rows.repeat(U, axis=1)])
    results = []
    for XP in (np.zeros((0, 0, 0), dtype),  # X as it is, or packed first (pack_inputs)
               np.full(cpu_panels.input_blocks_shape(P, n + 5), np.nan, dtype)):
        WP, b2 = packed(W), b.copy()
        dZP = np.full((WP.shape[0], n + 5, WP.shape[2]), np.nan, dtype)
        cpu_panels.panel_sgd_update(WP, b2, dZP, XP, dZ_more, X_more, lr, n)
        W2 = np.empty_like(W)
        cpu_panels.unpack_panels(W2, WP)
        assert rel_err(W2, W_ref) <= RTOL[dtype]
        assert rel_err(b2, b_ref) <= RTOL[dtype]
        assert np.all(WP.transpose(0, 2, 1).reshape(-1, P)[U:] == 0)
        results.append((WP, b2))
    for got, want in zip(*results):  # the same sums in the same order
        assert np.array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("P", [1, 7, 8, 9, 33])
def test_pack_inputs_lays_out_blocks_of_eight_columns(P, n, dtype):
    """XP[q, i, r] = X[i, 8 q + r] for the first n rows; zero past the last
    column; rows past n untouched."""
    (X,) = data(P + n, (n + 2, P), dtype=dtype)
    XP = np.full(cpu_panels.input_blocks_shape(P, n + 1), np.nan, dtype)
    assert XP.shape == (-(-P // 8), n + 1, 8)
    cpu_panels.pack_inputs(XP, X, n)
    flat = XP.transpose(1, 0, 2).reshape(n + 1, -1)  # (rows, 8 Q): X padded
    assert np.array_equal(flat[:n, :P], X[:n])
    assert np.all(flat[:n, P:] == 0) and np.all(np.isnan(flat[n:]))


def test_rows_alias_where_a_tiles_column_of_them_falls_in_one_l1_set():
    aliased = [c for c in range(1, 4097) if cpu_panels.rows_alias(c, "float32")]
    assert aliased == [1024, 2048, 3072, 4096]  # rows 4, 8, 12, 16 KiB apart
    assert [c for c in range(1, 2049) if cpu_panels.rows_alias(c, "float64")] == [512, 1024,
                                                                                 1536, 2048]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", (1, 7, 33))
@pytest.mark.parametrize("U", (1, 7, 33))
def test_pack_dz_by_samples_lays_out_panels_of_samples(U, n, dtype):
    """dZS[s, j, c] = dZ[s * PW + c, j]: only the first n rows count, and
    everything past them and past the last unit is zero."""
    (dZ,) = data(U + n, (n + 2, U), dtype=dtype)
    dZ[n:] = np.nan
    dZS = np.full(cpu_panels.sample_panel_shape(U, n, dtype), np.nan, dtype)
    width = cpu_panels.panel_width(np.dtype(dtype))
    assert dZS.shape == (-(-n // width), -(-U // width) * width, width)
    cpu_panels.pack_dz_by_samples(dZS, dZ, n)
    flat = dZS.transpose(0, 2, 1).reshape(-1, dZS.shape[1])  # (S * PW, T * PW): dZ padded
    assert np.array_equal(flat[:n, :U], dZ[:n])
    assert np.all(flat[n:] == 0) and np.all(flat[:, U:] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES + (33,))
@pytest.mark.parametrize("P,U", SHAPES)
def test_panel_backward_input_is_6_27b(P, U, n, dtype):
    """dQ = dZ W from W in panels and dZ in panels of samples: only the
    first n rows of dQ are written."""
    dZ, W = data(n + P + 2 * U, (n, U), (U, P), dtype=dtype)
    dZ *= np.random.default_rng(n).random((n, U)) < 0.6  # ReLU's zeros change nothing
    dZS = np.full(cpu_panels.sample_panel_shape(U, n, dtype), np.nan, dtype)
    cpu_panels.pack_dz_by_samples(dZS, dZ, n)
    dQ = np.full((n + 3, P), np.nan, dtype)
    cpu_panels.panel_backward_input(dQ, dZS, packed(W), n)
    assert rel_err(dQ[:n], dZ.astype(np.float64) @ W.astype(np.float64)) <= RTOL[dtype]
    assert np.all(np.isnan(dQ[n:]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_panel_kernels_give_the_same_bits_for_any_thread_count(dtype):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread only: nothing to compare")
    n, P, U = 100, 129, 70  # 13 tiles of samples, 17 of pixels, partial panels
    X, W, b, dZ = data(7, (n, P), (U, P), (U,), (n, U), dtype=dtype)
    X *= np.random.default_rng(8).random((n, P)) < 0.2  # for the zero-skipping twins
    pixels, pixel_counts, samples, sample_counts, *_ = listed(X)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS, 3):
        threads = min(threads, numba.config.NUMBA_NUM_THREADS)
        WP = packed(W)
        dZP = np.empty((WP.shape[0], n, WP.shape[2]), dtype)
        Z, Q = np.empty((n, U), dtype), np.empty((n, U), dtype)
        at_threads(threads, cpu_panels.panel_forward, Z, Q, X, WP, b, codes.RELU)
        dQ = np.empty((n, P), dtype)
        dZS = np.empty(cpu_panels.sample_panel_shape(U, n, dtype), dtype)
        at_threads(threads, cpu_panels.pack_dz_by_samples, dZS, dZ, n)
        at_threads(threads, cpu_panels.panel_backward_input, dQ, dZS, WP, n)
        WP_unpacked = WP.copy()  # the update reading X as it is, and packed
        b_unpacked, b_packed = b.copy(), b.copy()
        at_threads(threads, cpu_panels.panel_sgd_update, WP_unpacked, b_unpacked, dZP,
                   np.zeros((0, 0, 0), dtype), dZ, X, 0.1, n)
        XP = np.empty(cpu_panels.input_blocks_shape(P, n), dtype)
        at_threads(threads, cpu_panels.panel_sgd_update, WP, b_packed, dZP, XP, dZ, X, 0.1, n)
        assert np.array_equal(WP_unpacked, WP) and np.array_equal(b_unpacked, b_packed)
        Z2, Q2 = np.empty((n, U), dtype), np.empty((n, U), dtype)
        at_threads(threads, cpu_panels.panel_forward_listed, Z2, Q2, X, WP, b, codes.RELU,
                   pixels, pixel_counts)
        at_threads(threads, cpu_panels.panel_sgd_update_listed, WP, b_packed, dZP, dZ, X, 0.1, n,
                   samples, sample_counts)
        results.append((Z, Q, dQ, Z2, Q2, WP, b_packed))
    for result in results[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(result, results[0]))


def listed(X, rows=None, buffers=None):
    """The zero-skipping tiles' lists of X's batch ``rows`` (default: all, in
    order) through ``list_rows``: (pixels, pixel_counts, samples,
    sample_counts, column_bits, Xb, non-zeros), Xb being X[rows] written over
    NaNs; or written into ``buffers`` (such a tuple less the count, sized
    for at least len(rows)), the batch's rows of Xb returned."""
    rows = np.arange(X.shape[0]) if rows is None else rows
    if buffers is None:
        buffers = (*cpu_tile_lists.skip_lists(X.shape[1], rows.shape[0]),
                   np.full((rows.shape[0], X.shape[1]), np.nan, X.dtype))
    *lists, Xb = buffers
    Xb = Xb[:rows.shape[0]]
    nonzeros = cpu_tile_lists.list_rows(Xb, *lists, X, rows)
    return (*lists, Xb, nonzeros)


@pytest.mark.skipif(llvm_binding.llvm_version_info < (19,), reason="no vector.compress")
def test_the_lists_are_written_alike_with_and_without_a_vector_compress():
    """store_set_bits16 is LLVM's vector.compress where the LLVM has it
    (19+), a write per set bit elsewhere: the same entries, the set bits'
    positions from base, ascending, appended one mask after another."""
    def appender(write):
        count_bits = cpu_tile_lists.count_bits

        @numba.njit
        def append(masks, base):
            out = np.full(masks.shape[0] * 16 + 15, 7, np.uint32)
            c = 0
            for m in range(masks.shape[0]):
                write(out, c, masks[m], base + 16 * m)
                c += count_bits(masks[m])
            return out[:c]
        return append

    masks = np.random.default_rng(3).integers(0, 1 << 16, 40).astype(np.uint16)
    masks[:3] = 0, 0xFFFF, 0x8001
    compressed = appender(cpu_tile_lists.store_set_bits_compressed)(masks, 5)
    expected = [5 + 16 * m + j for m in range(40) for j in range(16) if masks[m] >> j & 1]
    assert compressed.tolist() == expected
    one_by_one = appender(cpu_tile_lists.store_set_bits_one_by_one)(masks, 5)
    assert np.array_equal(one_by_one, compressed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,P", [(1, 1), (7, 33), (33, 129), (129, 7), (100, 784), (40, 48)])
def test_list_rows_lists_the_pixels_and_samples_each_tile_needs(n, P, dtype):
    """Per 4-sample block, the pixels any of its samples has; per 4-pixel
    block, the samples that have any of its pixels: both ascending, from
    the batch's dense rows, for a shuffled batch, then a shorter one (an
    epoch's last) in the same buffers, so nothing of the first stays
    (neither in the lists nor in the bits past the batch's last sample); at
    every thread count, then one thread. Also the batch's count of
    non-zeros, which decides whether it is sparse (-0.0 is a zero)."""
    rng = np.random.default_rng(n + P)
    X = sparse_input(n * P, 3 * n + 5, P, dtype, density=0.15)
    X[0] = 0  # an empty row
    X[1, P // 2] = -0.0
    X[2] = rng.random(P) + 0.5  # a full row
    buffers = (*cpu_tile_lists.skip_lists(P, n), np.full((n, P), np.nan, dtype))
    for m, threads in ((n, numba.config.NUMBA_NUM_THREADS), (max(1, n - 3), 1)):
        rest = rng.permutation(np.arange(3, X.shape[0]))[:max(0, m - 3)]
        rows = rng.permutation(np.concatenate([np.arange(min(3, m)), rest]))  # rows 0-2 in it
        pixels, pixel_counts, samples, sample_counts, _, Xb, nonzeros = at_threads(
            threads, listed, X, rows, buffers)
        assert np.array_equal(Xb, X[rows])
        nonzero = X[rows] != 0
        assert nonzeros == nonzero.sum()
        step = cpu_panels.SKIP_ROWS  # the zero-skipping tiles' rows
        for b in range(0, m, step):
            expected = np.flatnonzero(nonzero[b:b + step].any(axis=0))
            assert np.array_equal(pixels[b // step, :pixel_counts[b // step]], expected)
        for k in range(0, P, step):
            expected = np.flatnonzero(nonzero[:, k:k + step].any(axis=1))
            assert np.array_equal(samples[k // step, :sample_counts[k // step]], expected)
        assert np.all(sample_counts <= m) and pixel_counts.shape == ((n + step - 1) // step,)
    assert sample_counts.shape == ((P + step - 1) // step,)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("P,U", SHAPES)
def test_zero_skipping_panel_kernels_give_the_bits_of_the_dense_ones(P, U, n, dtype):
    """Skipping what the lists leave out drops only terms that are exactly
    zero: the same Z, Q and updated panels, bit for bit, and so the same
    agreement with the reference as the dense tiles."""
    X = sparse_input(n + P + U, n, P, dtype, density=0.15)
    W, b, dZ = data(n + U, (U, P), (U,), (n, U), dtype=dtype)
    pixels, pixel_counts, samples, sample_counts, _, Xb, _ = listed(X)
    Z, Q = np.full((n, U), np.nan, dtype), np.full((n, U), np.nan, dtype)
    cpu_panels.panel_forward(Z, Q, X, packed(W), b, codes.RELU)
    Z2, Q2 = np.full((n, U), np.nan, dtype), np.full((n, U), np.nan, dtype)
    cpu_panels.panel_forward_listed(Z2, Q2, Xb, packed(W), b, codes.RELU, pixels, pixel_counts)
    assert np.array_equal(Z2, Z) and np.array_equal(Q2, Q)
    assert_dense_layer(Z2, Q2, X, W, b, "relu", dtype)
    WP, WP2, b2 = packed(W), packed(W), b.copy()
    dZP = np.full((WP.shape[0], n, WP.shape[2]), np.nan, dtype)
    cpu_panels.panel_sgd_update(WP, b, dZP, np.zeros((0, 0, 0), dtype), dZ, X, 0.3, n)
    cpu_panels.panel_sgd_update_listed(WP2, b2, dZP, dZ, Xb, 0.3, n, samples, sample_counts)
    assert np.array_equal(WP2, WP) and np.array_equal(b2, b)
    W2 = np.empty_like(W)
    cpu_panels.unpack_panels(W2, WP2)
    W_ref = W.astype(np.float64) - 0.3 * (dZ.T.astype(np.float64) @ X / n)
    assert rel_err(W2, W_ref) <= RTOL[dtype]


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("P,U", SHAPES)
def test_panel_rule_update_is_the_reference_rule_on_every_weight(P, U, n, dtype, rule):
    """The gradient's tiles applying momentum, Nesterov, Adam or an L2
    penalty change every weight and its state as the reference's
    optimizer_step does, those of pixels that no sample has included (sparse
    X, so some tiles list no sample); the zero-skipping tiles agree with the
    dense tiles (the same sums, but LLVM may contract the rule's arithmetic
    differently in each: Nesterov's does)."""
    X = sparse_input(n + P + U, n, P, dtype, density=0.15)
    X[:, :cpu_panels.SKIP_ROWS] = 0  # a tile no sample has: its weights still move
    W, m, v, dZ = data(n + U + 1, (U, P), (U, P), (U, P), (n, U), dtype=dtype)
    v = np.abs(v)
    expected = reference_rule(rule, W, m, v, dZ.T.astype(np.float64) @ X, n)
    _, _, samples, sample_counts, _, Xb, _ = listed(X)
    assert sample_counts[0] == 0
    dZP = np.full(cpu_panels.panel_shape(U, n, dtype), np.nan, dtype)
    none = np.zeros((0, 0, 0), dtype)
    XP = np.full(cpu_panels.input_blocks_shape(P, n), np.nan, dtype)
    results = {}
    for run in ("dense", "packed", "listed"):
        kept = [packed(A) for A in (W, m, v)[:len(expected)]]
        WP, mP, vP = kept + [none] * (3 - len(kept))
        results[run] = kept
        if run != "listed":
            cpu_panels.panel_rule_update(WP, mP, vP, dZP, XP if run == "packed" else none, dZ, X,
                                         n, *rule_args(rule, dtype))
        else:
            cpu_panels.panel_rule_update_listed(WP, mP, vP, dZP, dZ, Xb, n,
                                                *rule_args(rule, dtype), samples, sample_counts)
        for panels, before, want in zip(kept, (W, m, v), expected):
            unpacked = np.empty((U, P), dtype)
            cpu_panels.unpack_panels(unpacked, panels)
            assert rel_err(unpacked, want) <= RTOL[dtype]
            assert not np.array_equal(unpacked[:, 0], before[:, 0])  # no sample, yet it moved
            assert np.all(panels.transpose(0, 2, 1).reshape(-1, P)[U:] == 0)  # padding
    for a, b in zip(results["dense"], results["packed"]):  # packing X changes no sum
        assert np.array_equal(a, b)


def test_panels_are_worthwhile_only_with_512_bit_vectors_and_a_hidden_layer(monkeypatch):
    monkeypatch.setattr(cpu_panels.vector_width, "available", lambda: True)
    for dtype in DTYPES:
        assert cpu_panels.worthwhile([784, 200, 10], dtype)  # 200 units padded to 224 or 208
        assert cpu_panels.worthwhile([784, 50, 10], dtype)  # to 64: 1.28x
        assert not cpu_panels.worthwhile([784, 10], dtype)  # first layer = fused output layer
    assert not cpu_panels.worthwhile([784, 24, 10], "float32")  # to 32: 1.33x
    assert cpu_panels.worthwhile([784, 40, 10], "float32")  # to 48, a half panel last: 1.2x
    assert not cpu_panels.worthwhile([784, 33, 10], "float32")  # to 48: 1.45x
    assert cpu_panels.worthwhile([784, 98, 10], "float32")  # to 112 (whole panels: 128, 1.31x)
    monkeypatch.setattr(cpu_panels.vector_width, "available", lambda: False)
    assert not cpu_panels.worthwhile([784, 200, 10], "float32")


def test_hidden_layers_go_on_panels_where_wide(monkeypatch):
    monkeypatch.setattr(cpu_panels.vector_width, "available", lambda: True)
    f32, few = "float32", cpu_panels.HIDDEN_PANEL_ROWS - 1  # batches too small for a narrow W
    assert cpu_panels.hidden_layers([784, 1024, 1024, 10], f32, 1) == (False, True, False)
    assert cpu_panels.hidden_layers([784, 1024, 10], f32, 256) == (False, False)
    # 512 x 512 float32 is 1 MiB: held at any batch; 256 x 512 float32 is not, float64 is.
    assert cpu_panels.hidden_layers([64, 512, 512, 512, 10], f32, few) == (False, True, True,
                                                                                False)
    assert cpu_panels.hidden_layers([64, 256, 512, 10], f32, few) == (False, False, False)
    assert cpu_panels.hidden_layers([64, 256, 512, 10], "float64", few) == (False, True, False)
    # A wide output layer that is not fused goes on panels too, unless it pads too much.
    assert cpu_panels.hidden_layers([64, 1024, 1024], f32, few) == (False, True)
    assert cpu_panels.hidden_layers([64, 1024, 1057], f32, few) == (False, True)  # 1072
    assert cpu_panels.hidden_layers([64, 9000, 33], f32, few) == (False, False)  # 48: 1.45x
    monkeypatch.setattr(cpu_panels.vector_width, "available", lambda: False)
    assert cpu_panels.hidden_layers([784, 1024, 1024, 10], f32, 256) == (False,) * 3


def test_narrow_hidden_layers_go_on_panels_where_the_batch_fills_the_tiles(monkeypatch):
    """Below HIDDEN_PANEL_BYTES a hidden layer is held from HIDDEN_PANEL_ROWS
    rows on (at batches of 1-8 the part-empty tiles cost more than they
    give), if it pads little and is not the fused output layer."""
    monkeypatch.setattr(cpu_panels.vector_width, "available", lambda: True)
    rows = cpu_panels.HIDDEN_PANEL_ROWS
    assert 1 < rows <= 32
    sizes = [20, 64, 64, 2]
    assert cpu_panels.hidden_layers(sizes, "float32", rows) == (False, True, False)
    assert cpu_panels.hidden_layers(sizes, "float32", rows - 1) == (False, False, False)
    assert cpu_panels.hidden_layers(sizes, "float64", 1000) == (False, True, False)
    # 40 units pad to 48 (1.2x) and are held; 20 pad to 32 (1.6x) and are not.
    assert cpu_panels.hidden_layers([64, 128, 40, 20, 10], "float32", 64) == (
        False, True, False, False)
    assert cpu_panels.hidden_layers([64, 32, 64, 32], "float32", 64) == (False, True, True)


def test_the_tiles_compute_the_last_panel_half_wide_where_its_units_fit():
    """The columns computed (whole panels of 32 float32s or 16 float64s, the
    last one half wide where it can be): what the padding costs."""
    for units, float32, float64 in [(1, 16, 8), (16, 16, 16), (17, 32, 24), (32, 32, 32),
                                    (40, 48, 40), (100, 112, 104), (200, 208, 200)]:
        assert cpu_panels.padded_units(units, "float32") == float32, units
        assert cpu_panels.padded_units(units, "float64") == float64, units


@pytest.mark.skipif(not vector_width.available(), reason="the CPU has no AVX-512")
def test_panel_tiles_run_on_512_bit_registers_whatever_the_process_setting():
    """The tiles' multiply-adds use zmm registers even where the process
    keeps LLVM's 256-bit preference (the suite's default), at either dtype.
    Fresh, uncached copies of the kernels: Numba cannot show the assembly of
    cached code."""
    forward, update, forward_listed, update_listed = (
        numba.njit(**PARALLEL_UNCACHED)(kernel.py_func)
        for kernel in (cpu_panels.panel_forward, cpu_panels.panel_sgd_update,
                       cpu_panels.panel_forward_listed, cpu_panels.panel_sgd_update_listed))
    for dtype in DTYPES:
        W, b, dZ = data(3, (40, 33), (40,), (9, 40), dtype=dtype)
        X = sparse_input(4, 9, 33, dtype, density=0.15)
        pixels, pixel_counts, samples, sample_counts, *_ = listed(X)
        WP = packed(W)
        dZP = np.empty((WP.shape[0], 9, WP.shape[2]), dtype)
        Z = np.empty((9, 40), dtype)
        forward(Z, Z.copy(), X, WP, b, codes.RELU)
        update(WP, b.copy(), dZP, np.zeros((0, 0, 0), dtype), dZ, X, 0.1, 9)
        forward_listed(Z, Z.copy(), X, WP, b, codes.RELU, pixels, pixel_counts)
        update_listed(WP, b.copy(), dZP, dZ, X, 0.1, 9, samples, sample_counts)
    # A tile's multiply-adds per step of its loop, at least: 8 rows x 2
    # vectors, or SKIP_ROWS (4) x 2 for the listed tiles (LLVM may unroll more).
    for kernel, least in ((forward, 16), (update, 16), (forward_listed, 8), (update_listed, 8)):
        for signature, asm in kernel.inspect_asm().items():
            suffix = "ps" if "float32" in str(signature) else "pd"
            multiply_adds = re.findall(rf"vfmadd231{suffix}\t%zmm\d+, %zmm\d+, %zmm\d+", asm)
            assert len(multiply_adds) >= least, (kernel, signature)


@pytest.mark.skipif(not vector_width.available(), reason="the CPU has no AVX-512")
def test_panel_epilogues_and_packers_use_no_gathers_or_scatters():
    """float32 panel kernels store their tiles and pack dZ and X with
    contiguous vector accesses: with signed indices (Numba's test for a
    negative one on each), LLVM did the epilogues in gathers and scatters,
    slower than the tiles' sums at small sizes; and the updates step their
    weights in vectors (over the panel width, a constant, LLVM unrolled the
    step whole and did it in 256 scalar multiply-adds: docs/speed-log.md).
    Uncached copies compiled with each kernel's own options."""
    kernels = {}
    for name in ("panel_forward", "panel_sgd_update", "panel_rule_update",
                 "panel_backward_input", "pack_dz", "pack_dz_by_samples", "pack_inputs",
                 "panel_forward_listed", "panel_sgd_update_listed", "panel_rule_update_listed"):
        kernel = getattr(cpu_panels, name)
        options = {k: v for k, v in kernel.targetoptions.items() if k != "nopython"}
        kernels[name] = numba.njit(cache=False, **options)(kernel.py_func)
    dtype = np.float32
    W, b, dZ, X = data(5, (40, 33), (40,), (9, 40), (9, 33), dtype=dtype)
    WP, none = packed(W), np.zeros((0, 0, 0), dtype)
    dZP = np.empty((WP.shape[0], 9, WP.shape[2]), dtype)
    dZS = np.empty(cpu_panels.sample_panel_shape(40, 9, dtype), dtype)
    kernels["panel_forward"](np.empty((9, 40), dtype), np.empty((9, 40), dtype), X, WP, b,
                             codes.RELU)
    kernels["panel_sgd_update"](WP, b.copy(), dZP, none, dZ, X, 0.1, 9)
    kernels["panel_rule_update"](WP, WP.copy(), WP.copy(), dZP, none, dZ, X, 9,
                                 *rule_args("adam", dtype))
    kernels["pack_dz_by_samples"](dZS, dZ, 9)
    kernels["panel_backward_input"](np.empty((9, 33), dtype), dZS, WP, 9)
    kernels["pack_dz"](dZP, dZ, 9, b.copy(), 0.1)
    kernels["pack_inputs"](np.empty(cpu_panels.input_blocks_shape(33, 9), dtype), X, 9)
    X *= np.random.default_rng(5).random(X.shape) < 0.2  # for the zero-skipping tiles
    pixels, pixel_counts, samples, sample_counts, *_ = listed(X)
    kernels["panel_forward_listed"](np.empty((9, 40), dtype), np.empty((9, 40), dtype), X, WP,
                                    b, codes.RELU, pixels, pixel_counts)
    kernels["panel_sgd_update_listed"](WP, b.copy(), dZP, dZ, X, 0.1, 9, samples, sample_counts)
    kernels["panel_rule_update_listed"](WP, WP.copy(), WP.copy(), dZP, dZ, X, 9,
                                        *rule_args("adam", dtype), samples, sample_counts)
    for name, kernel in kernels.items():
        for signature, asm in kernel.inspect_asm().items():
            assert not re.findall(r"gather|scatter", asm), (name, signature)
            if "update" in name:  # 9-43 seen (loop remainders)
                assert len(re.findall(r"vfn?m(?:add|sub)\d+ss", asm)) < 64, (name, signature)


def test_panel_tiles_sit_on_cache_lines():
    """The tile buffer is a 64-byte aligned alloca: misaligned, each of its
    vector loads and stores (where LLVM keeps it in memory) split in two."""
    forward = numba.njit(**PARALLEL_UNCACHED)(cpu_panels.panel_forward.py_func)
    W, b, X = data(6, (40, 33), (40,), (9, 33), dtype=np.float32)
    forward(np.empty((9, 40), np.float32), np.empty((9, 40), np.float32), X, packed(W), b,
            codes.RELU)
    (llvm,) = forward.inspect_llvm().values()
    tiles = re.findall(r"alloca \[256 x float\](.*)", llvm)  # 8 x 32 float32 cells
    assert tiles and all(", align 64" in rest for rest in tiles), tiles


@pytest.mark.parametrize("tiles", [True, False], ids=["tiles", "no-tiles"])
def test_the_first_layer_moves_between_w_transposed_and_panels(panels, tiles):
    """Sparse and dense batches in one call: the weights move between W,
    W^T and panels in the compiled loop (sparse batches stay on panels
    where the plan takes the zero-skipping tiles, as CpuStepper makes it,
    else go to W^T over the compressed rows) and still match the reference."""
    rng = np.random.default_rng(6)
    X = rng.random((60, 20))
    X[10:50] *= rng.random((40, 20)) < 0.05
    X[50:] *= rng.random((10, 20)) < 0.4
    density = [(X[s:s + 10] != 0).mean() for s in range(0, 60, 10)]
    assert (X != 0).mean() <= 0.3  # the rows are sparse overall ...
    # ... and batches 1 and 6 are dense
    assert [d <= 0.3 for d in density] == [False, True, True, True, True, False]
    y = rng.integers(0, 3, 60)
    nets = [fastbp.Network([20, 40, 3], dtype="float64", seed=3) for _ in "ab"]
    for net, device in zip(nets, ["cpu", "numpy"]):
        stepper = fastbp.backends.make_stepper(device, net, *net.checked_layers(),
                                               np.ascontiguousarray(X), y, 10)
        if device == "cpu":
            WP = stepper.first.WP
            assert (WP.shape[0] > 0) == panels
            expected = codes.FIRST_PANELS_OR_TILES if panels else codes.FIRST_W_OR_CSR
            assert stepper.plan.code == expected
            if not tiles and panels:  # the plan without the tiles: sparse batches on W^T
                rows = fastbp.sparse_rows.compressed_rows(np.ascontiguousarray(X), 40)
                stepper.first = stepper.first._replace(
                    plan=codes.FIRST_PANELS_OR_CSR, **dict(zip(
                        ("indptr", "indices", "values", "colcum"), rows)))
            if stepper.first.plan != codes.FIRST_PANELS_OR_TILES:
                assert stepper.first.indptr.shape == (61,)  # rows compressed: W^T reads them
        stepper.run(np.arange(60), 0, 6, 0.3, np.empty(6), np.empty(6))
        if device == "cpu" and panels:  # the last batch ran on panels: they hold the result
            assert np.array_equal(WP, packed(net.layers[0][0]))
    for (W, _), (W_ref, _) in zip(nets[0].layers, nets[1].layers):
        assert rel_err(W, W_ref) <= 1e-10


def test_float32_training_on_panels_is_reproducible_bit_for_bit(panels):
    """The first layer and, with panels, the hidden layer of 48 units on them."""
    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(300, 40)).astype(np.float32), rng.integers(0, 5, 300)
    assert cpu_panels.hidden_layers([40, 50, 48, 5], "float32", 32) == (False, panels, False)
    weights = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        net = fastbp.Network([40, 50, 48, 5], seed=4)
        at_threads(threads, fastbp.train, net, X, y, 0.2, 32, 2)
        weights.append([W.copy() for W, _ in net.layers])
    assert all(np.array_equal(a, b) for a, b in zip(*weights))


def test_training_packs_aliased_inputs_and_gets_the_same_bits(monkeypatch):
    """Inputs whose rows alias in L1 (cpu_panels.rows_alias) are packed for
    the updates on panels, the first layer's dense batches and the hidden
    layers', under plain SGD and Adam: the weights are those of the same
    training reading them as they are, bit for bit."""
    monkeypatch.setattr(cpu_panels, "worthwhile", lambda sizes, dtype: True)
    monkeypatch.setattr(cpu_panels, "HIDDEN_PANEL_ROWS", 0)
    rng = np.random.default_rng(9)
    X, y = rng.normal(size=(90, 256)).astype(np.float32), rng.integers(0, 3, 90)
    sizes = [256, 256, 40, 3]  # (rows_alias, patched: the 256 inputs of the first two layers)
    from fastbp import optimizers
    from fastbp.backends.cpu import CpuStepper
    for optimizer in (fastbp.SGD(lr=0.1), fastbp.Adam(lr=0.01)):
        weights = []
        for alias in (True, False):
            monkeypatch.setattr(cpu_panels, "rows_alias",
                                lambda c, d, alias=alias: alias and c == 256)
            net = fastbp.Network(sizes, seed=2)
            fastbp.train(net, X, y, optimizer=optimizer, batch_size=24, epochs=2)
            weights.append([W.copy() for W, _ in net.layers])
            Ws, bs = [W for W, _ in net.layers], [b for _, b in net.layers]
            sgd = fastbp.SGD(lr=0.1)
            stepper = CpuStepper(net, Ws, bs, X, y, 24, None, sgd,
                                 optimizers.state_arrays(sgd, Ws, bs))
            packs = [XP.shape[0] > 0 for XP in stepper.work.XPs]
            assert packs == ([True, True, False] if alias else [False] * 3)
        assert all(np.array_equal(a, b) for a, b in zip(*weights))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes, tiled", [([9, 40, 5, 3], 1), ([9, 40, 32, 3], 2)])
def test_inference_on_dense_inputs_takes_panels_and_matches_the_reference(dtype, sizes, tiled,
                                                                          panels, monkeypatch):
    """forward/predict/evaluate over several chunks, the last one partial:
    the first layer on panels (or the dense product) gives the reference's
    Z; so does a hidden layer of 32 units on panels (``tiled``: the layers
    on panels, with the panels fixture)."""
    monkeypatch.setattr(fastbp.network, "CHUNK_ROWS", 13)
    net = fastbp.Network(sizes, dtype=dtype, seed=5)
    rng = np.random.default_rng(2)
    for _, b in net.layers:
        b[:] = rng.normal(size=b.shape)  # not zero, so that a dropped bias shows
    X = rng.normal(size=(33, 9))
    calls = []
    real = cpu_panels.panel_forward
    monkeypatch.setattr(cpu_panels, "panel_forward", lambda *args: calls.append(real(*args)))
    Z_ref = fastbp.reference.forward(net.layers, X, "relu")[0][-1]
    assert rel_err(net.forward(X), Z_ref) <= RTOL[dtype]
    assert len(calls) == (3 * tiled if panels else 0)  # per chunk of 13 rows
    y = np.arange(33) % 3
    cost, _ = fastbp.network.evaluate_prepared(net, *net.checked_layers(), X.astype(dtype), y)
    J_ref, _ = fastbp.reference.cost_and_output_gradient(Z_ref, y, "cross_entropy")
    assert cost == pytest.approx(J_ref, rel=RTOL[dtype])


def test_sparse_batches_on_panels_train_as_the_dense_tiles_would(monkeypatch):
    """Compressed rows (sparse batches, zero-skipping tiles) and the same
    rows uncompressed (dense batches, every pixel): the same weights, bit
    for bit, since the tiles skip only exact zeros."""
    monkeypatch.setattr(cpu_panels, "worthwhile", lambda sizes, dtype: True)
    X, y = clustered_rows(300, 40), np.random.default_rng(5).integers(0, 5, 300)
    assert (X != 0).mean() <= 0.7 * config.SPARSE_DENSITY  # the batches are sparse
    net = fastbp.Network([40, 50, 5], seed=4)
    stepper = fastbp.backends.make_stepper("cpu", net, *net.checked_layers(), X, y, 32)
    assert stepper.plan.code == codes.FIRST_PANELS_OR_TILES  # the tiles run
    weights = []
    for tiles in (True, False):
        if not tiles:  # nor compressed rows: every batch dense, on panels
            monkeypatch.setattr(fastbp.first_layer, "tiles_pay", lambda X, units, rows: False)
            monkeypatch.setattr(fastbp.first_layer, "compressed_rows",
                                lambda X, units: fastbp.sparse_rows.compressed_rows(X, 0))
        net = fastbp.Network([40, 50, 5], seed=4)
        fastbp.train(net, X, y, 0.2, 32, 2, device="cpu")
        weights.append([W.copy() for W, _ in net.layers])
    assert all(np.array_equal(a, b) for a, b in zip(*weights))


def clustered_rows(n, P, seed=5):
    """Rows whose non-zeros are one run of 5-8 adjacent pixels within the
    middle 16, like the strokes of a digit (density about 0.16 at P = 40)."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n, P), np.float32)
    for i in range(n):
        start, width = rng.integers(P // 2 - 8, P // 2 + 2), rng.integers(5, 9)
        X[i, start:start + width] = rng.random(width) + 0.1
    return X


def test_sparse_batches_take_the_tiles_only_where_the_non_zeros_cluster(panels, monkeypatch):
    """union_ratio: the tiles' work over the non-zeros' (about 1 when all
    rows share their pixels, about 1/d when nothing is shared); tiles_pay
    only under MAX_UNION_RATIO (the panels fixture lifts it: put it back),
    and only for sparse data and a wide enough first layer."""
    from fastbp import sparse_rows
    monkeypatch.setattr(sparse_rows, "MAX_UNION_RATIO", MAX_UNION_RATIO)
    X_shared = np.zeros((200, 64), np.float32)
    X_shared[:, 8:16] = 1  # every row the same 8 pixels: one tile's worth
    assert sparse_rows.union_ratio(X_shared, 100) == pytest.approx(1.0)
    X_random = sparse_input(3, 2000, 784, "float32", density=0.1)
    ratio = sparse_rows.union_ratio(X_random, 100)
    # a tile's union of 4 independent samples (forward) or of 4 pixels (update)
    expected = (1 - 0.9 ** cpu_panels.SKIP_ROWS) / 0.1
    assert ratio == pytest.approx(expected, rel=0.05)
    assert ratio == sparse_rows.union_ratio(X_random, 100)  # a fixed sample
    X = clustered_rows(300, 40)
    assert sparse_rows.union_ratio(X, 32) <= MAX_UNION_RATIO
    for rows, units, pays in ((X, 40, True), (X_random, 40, False), (X, 8, False),
                              (X + 1, 40, False)):
        assert sparse_rows.tiles_pay(rows, units, 100) == pays
    net = fastbp.Network([40, 50, 5], seed=1)
    stepper = fastbp.backends.make_stepper("cpu", net, *net.checked_layers(), X,
                                           np.zeros(300, np.int64), 32)
    assert (stepper.plan.code == codes.FIRST_PANELS_OR_TILES) == panels
