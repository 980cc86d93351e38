"""Lists for the zero-skipping panel tiles (``cpu_panels.panel_forward_listed``,
``panel_sgd_update_listed``), made per batch from the batch's dense rows: a
forward tile of SKIP_ROWS (4) samples needs only the pixels that any of
them has, an update tile of SKIP_ROWS pixels only the samples that have any
of them. CPU-only pieces of ``train_steps``; the conventions of
``kernels/cpu.py`` hold (outputs first, no allocation).
"""

import numpy as np
from llvmlite import binding, ir
from numba import njit, prange
from numba.core import cgutils
from numba.core import types as nbtypes
from numba.extending import intrinsic

from .cpu_common import PARALLEL, element_pointer, prefetch
from .cpu_panels import SKIP_ROWS

GROUP = 16  # pixels (or samples) tested at once: a 16-bit mask ...
assert GROUP % SKIP_ROWS == 0 and SKIP_ROWS == 4  # ... whose nibbles are the pixel blocks


def skip_lists(inputs, batch_rows):
    """Buffers for ``list_rows``: (pixels, pixel_counts, samples,
    sample_counts, column_bits). Each row of pixels and of samples has the
    slack that ``store_set_bits16`` writes into; column_bits holds the
    batch's non-zeros as bits, column_bits[g, i] those of sample i in the
    pixels 16g .. 16g+15, and its rows a whole number of 16 samples."""
    blocks = (inputs + SKIP_ROWS - 1) // SKIP_ROWS
    row_blocks = (batch_rows + SKIP_ROWS - 1) // SKIP_ROWS
    groups = (inputs + GROUP - 1) // GROUP
    slack = GROUP - 1
    return (np.zeros((row_blocks, inputs + slack), np.uint32), np.zeros(row_blocks, np.int64),
            np.zeros((blocks, batch_rows + slack), np.uint32), np.zeros(blocks, np.int64),
            np.zeros((groups, -(-batch_rows // GROUP) * GROUP), np.uint16))


def _vector_row(array, dtypes):
    """Whether an intrinsic's array argument is 1-d, C-contiguous and of one
    of ``dtypes``: its vector loads and stores assume it (else no typing)."""
    return (isinstance(array, nbtypes.Array) and array.ndim == 1 and array.layout == "C"
            and array.dtype in dtypes)


@intrinsic
def nonzero_bits16(typingctx, array, index):
    """Bit j set where array[index + j] != 0 (or NaN), j < 16: one vector
    compare and a mask move (the same test as a Numba loop, bit by bit,
    took 6x as long: docs/speed-log.md). array : 1-d, contiguous, at least
    index + 16 long."""
    def codegen(context, builder, signature, args):
        dtype = signature.args[0].dtype
        vector = ir.VectorType(context.get_value_type(dtype), GROUP)
        ptr = element_pointer(context, builder, signature, args)
        values = builder.load(builder.bitcast(ptr, vector.as_pointer()), align=dtype.bitwidth // 8)
        bits = builder.fcmp_unordered("!=", values, ir.Constant(vector, None))
        return builder.bitcast(bits, ir.IntType(GROUP))
    if not _vector_row(array, (nbtypes.float32, nbtypes.float64)):
        return None
    return nbtypes.uint16(array, index), codegen


@intrinsic
def nibble_bits16(typingctx, array, index, nibble):
    """Bit j set where nibble ``nibble`` (0-3) of array[index + j] is not
    zero, j < 16: a vector shift, mask and compare. array : 1-d, contiguous,
    uint16, at least index + 16 long."""
    def codegen(context, builder, signature, args):
        i16 = ir.IntType(16)
        vector = ir.VectorType(i16, GROUP)
        ptr = element_pointer(context, builder, signature, args)
        values = builder.load(builder.bitcast(ptr, vector.as_pointer()), align=2)
        shift = builder.trunc(builder.mul(args[2], ir.Constant(args[2].type, SKIP_ROWS)), i16)
        first = builder.insert_element(ir.Constant(vector, None), shift, ir.Constant(i16, 0))
        shifts = builder.shuffle_vector(first, ir.Constant(vector, None),
                                        ir.Constant(ir.VectorType(ir.IntType(32), GROUP), None))
        nibbles = builder.and_(builder.lshr(values, shifts), ir.Constant(vector, [15] * GROUP))
        bits = builder.icmp_unsigned("!=", nibbles, ir.Constant(vector, None))
        return builder.bitcast(bits, i16)
    if not _vector_row(array, (nbtypes.uint16,)):
        return None
    return nbtypes.uint16(array, index, nibble), codegen


@intrinsic
def store_set_bits_compressed(typingctx, out, index, bits, base):
    """store_set_bits16 where LLVM has vector.compress:
    out[index:index + count_bits(bits)] = base + j for the set bits j of
    the 16-bit ``bits``, ascending: one vector compress (vpcompressd with
    AVX-512, LLVM's expansion elsewhere) and one store of 16 elements, so
    out needs 15 elements of slack past its last. out : 1-d, contiguous,
    uint32; bits : an unsigned integer, of which the low 16 count;
    base < 2**32 - 16."""
    def codegen(context, builder, signature, args):
        ptr = element_pointer(context, builder, signature, args)
        i32 = ir.IntType(32)
        vector = ir.VectorType(i32, GROUP)
        mask = ir.VectorType(ir.IntType(1), GROUP)
        first = builder.insert_element(ir.Constant(vector, None), builder.trunc(args[3], i32),
                                       ir.Constant(i32, 0))
        splat = builder.shuffle_vector(first, ir.Constant(vector, None),
                                       ir.Constant(vector, None))
        values = builder.add(splat, ir.Constant(vector, list(range(GROUP))))
        compress = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector, mask, vector]),
            "llvm.experimental.vector.compress.v16i32")
        bits = builder.trunc(args[2], ir.IntType(GROUP)) if (
            signature.args[2].bitwidth > GROUP) else args[2]
        packed = builder.call(compress, [values, builder.bitcast(bits, mask),
                                         ir.Constant(vector, None)])
        builder.store(packed, builder.bitcast(ptr, vector.as_pointer()), align=4)
        return context.get_dummy_value()
    if not _vector_row(out, (nbtypes.uint32,)):
        return None
    return nbtypes.void(out, index, bits, base), codegen


@njit(inline="always")
def store_set_bits_one_by_one(out, index, bits, base):
    """store_set_bits16 a write per set bit, where LLVM (before 19) has no
    vector.compress: the same entries (and none of the slack)."""
    c = index
    for j in range(GROUP):
        if (bits >> j) & 1:
            out[c] = base + j
            c += 1


# vector.compress came with LLVM 19 (older llvmlite builds have none).
store_set_bits16 = (store_set_bits_compressed if binding.llvm_version_info >= (19,)
                    else store_set_bits_one_by_one)


@intrinsic
def count_bits(typingctx, word):
    """The number of set bits of an unsigned integer (LLVM's ctpop), as int64."""
    if not isinstance(word, nbtypes.Integer) or word.signed:
        return None

    def codegen(context, builder, signature, args):
        (value,) = args
        ctpop = builder.module.declare_intrinsic("llvm.ctpop", [value.type])
        return builder.zext(builder.call(ctpop, [value]), ir.IntType(64))
    return nbtypes.int64(word), codegen


@njit(**PARALLEL)
def list_rows(Xb, pixels, pixel_counts, samples, sample_counts, column_bits, X, rows):
    """The batch ``rows`` of X as dense rows Xb, and its lists for the
    zero-skipping tiles:

    * pixels[b, :pixel_counts[b]]: the pixels (ascending) where any of the
      samples 4b .. 4b+3 is non-zero (SKIP_ROWS = 4);
    * samples[q, :sample_counts[q]]: the samples (ascending) non-zero at
      any of the pixels 4q .. 4q+3 (SKIP_ROWS = 4).

    Returns the batch's count of non-zeros. Xb : (n_b, P) output; the lists
    and column_bits, a work buffer, as ``skip_lists`` makes them; X : (n,
    P); rows : (n_b,). The lists are unsigned: indexing with them needs no
    check for negative indices in the tiles' inner loops.

    Two parallel regions. One item per block of 4 samples: their rows,
    their bits (a vector compare per 16 pixels, ``nonzero_bits16``) and
    their pixel list; each first asks for the next block's rows
    (``_prefetch_rows``), which arrive while this one is written, instead of
    each row waiting on memory. Then one item per 16 pixels: the sample
    lists of their 4 pixel blocks, 16 samples at a time. Each list is
    written 16 entries at a time (``store_set_bits16``): appending each
    sample to its blocks' lists one at a time took 3x as long
    (docs/speed-log.md).
    """
    nb, P = Xb.shape
    blocks = (nb + SKIP_ROWS - 1) // SKIP_ROWS
    nonzeros = 0
    # Race-free: item b writes only its rows of Xb, its samples' columns of
    # column_bits and its row of pixels; the count is an integer prange
    # reduction, so the body is one call (tests/test_prange_reductions.py).
    for b in prange(blocks):
        nonzeros += _block_item(Xb, pixels, pixel_counts, column_bits, X, rows, b)
    # Race-free: item g writes only the lists (and counts) of its 4 pixel blocks.
    for g in prange(column_bits.shape[0]):
        _samples_of_group(samples, sample_counts, column_bits[g], nb, g)
    return nonzeros


@njit(inline="never")
def _block_item(Xb, pixels, pixel_counts, column_bits, X, rows, b):
    """list_rows' item for the samples 4b .. 4b+3: the next block's rows
    asked for, these rows copied and their bits, their pixel list; returns
    their non-zeros."""
    nb = Xb.shape[0]
    i0, i1 = b * SKIP_ROWS, min(nb, (b + 1) * SKIP_ROWS)
    if i1 < nb:
        _prefetch_rows(X, rows, i1, min(nb, i1 + SKIP_ROWS))
    count = _rows_and_bits(Xb, column_bits, X, rows, i0, i1)
    pixel_counts[b] = _pixels_of(pixels[b], column_bits, i0, i1)
    return count


@njit(inline="always")
def _prefetch_rows(X, rows, i0, i1):
    """Start loading every line of X's rows rows[i0:i1]."""
    for i in range(i0, i1):
        row = X[rows[i]]
        for k in range(0, row.shape[0], 64 // X.itemsize):
            prefetch(row, k)
        prefetch(row, row.shape[0] - 1)  # the last line, where the row starts mid-line


@njit(inline="always")
def _rows_and_bits(Xb, column_bits, X, rows, i0, i1):
    """Xb[i] = X[rows[i]] and its bits in column i of column_bits, for
    i0 <= i < i1; returns their non-zeros."""
    P = Xb.shape[1]
    edge = P - P % GROUP
    count = 0
    for i in range(i0, i1):
        source, row = X[rows[i]], Xb[i]
        for k in range(P):
            row[k] = source[k]
        for k0 in range(0, edge, GROUP):
            group = nonzero_bits16(row, k0)
            column_bits[k0 // GROUP, i] = group
            count += count_bits(group)
        if edge < P:
            group = np.uint16(0)
            for k in range(edge, P):
                group |= np.uint16(row[k] != 0) << np.uint16(k - edge)
            column_bits[edge // GROUP, i] = group
            count += count_bits(group)
    return count


@njit(inline="always")
def _pixels_of(pixel_row, column_bits, i0, i1):
    """The pixels (ascending) that any of the samples i0 .. i1-1 has, into
    pixel_row (16 at a time, ``store_set_bits16``); returns how many."""
    c = 0
    for g in range(column_bits.shape[0]):
        group = column_bits[g, i0]
        for i in range(i0 + 1, i1):
            group = np.uint16(group | column_bits[g, i])
        if group != 0:
            store_set_bits16(pixel_row, c, group, g * GROUP)
            c += count_bits(group)
    return c


@njit(inline="always")
def _samples_of_group(samples, sample_counts, bits, nb, g):
    """The sample lists of the pixel blocks 4g .. 4g+3 (the pixels 16g ..
    16g+15, whose bits for sample i are bits[i]): a block's 4 pixels are a
    nibble of each sample's bits, tested for 16 samples at once
    (``nibble_bits16``); columns of ``bits`` past nb are not this batch's."""
    for j in range(GROUP // SKIP_ROWS):
        q = g * (GROUP // SKIP_ROWS) + j
        if q >= samples.shape[0]:
            break
        c = 0
        for i0 in range(0, nb, GROUP):
            found = nibble_bits16(bits, i0, j)
            if nb - i0 < GROUP:
                found &= np.uint16((1 << (nb - i0)) - 1)
            if found != 0:
                store_set_bits16(samples[q], c, found, i0)
                c += count_bits(found)
        sample_counts[q] = c
