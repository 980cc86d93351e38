"""Lists for the zero-skipping panel tiles (``cpu_panels.panel_forward_listed``,
``panel_sgd_update_listed``), made per batch from bit masks of the training
set's rows that are made once per run: a forward tile of SKIP_ROWS (4)
samples needs only the pixels that any of them has, an update tile of
SKIP_ROWS pixels only the samples that have any of them. CPU-only pieces
of ``train_steps``; the conventions of ``kernels/cpu.py`` hold (outputs
first, no allocation).
"""

import numpy as np
from numba import njit, prange
from numba.cpython.unsafe.numbers import trailing_zeros

from .cpu_common import PARALLEL, prefetch, prefetch_row
from .cpu_panels import SKIP_ROWS

WORD = 64  # bits per word of the row masks


def skip_lists(inputs, batch_rows):
    """Buffers for ``list_blocks``: (pixels, pixel_counts, samples, sample_counts)."""
    blocks = (batch_rows + SKIP_ROWS - 1) // SKIP_ROWS
    pblocks = (inputs + SKIP_ROWS - 1) // SKIP_ROWS
    return (np.zeros((blocks, inputs), np.uint32), np.zeros(blocks, np.int64),
            np.zeros((pblocks, batch_rows), np.uint32), np.zeros(pblocks, np.int64))


def mask_shapes(rows, inputs):
    """Shapes of the rows' bit masks (``cpu_sparse.compress_rows``) for a
    training set of rows x inputs: (pixel_words, block_words)."""
    pblocks = (inputs + SKIP_ROWS - 1) // SKIP_ROWS
    return (rows, (inputs + WORD - 1) // WORD), (rows, (pblocks + WORD - 1) // WORD)


@njit(**PARALLEL)
def list_blocks(Xb, pixels, pixel_counts, samples, sample_counts, pixel_words, block_words,
                indptr, indices, values, rows):
    """The batch ``rows`` of a compressed training set as dense rows Xb, and
    its lists for the zero-skipping tiles:

    * pixels[b, :pixel_counts[b]]: the pixels (ascending) where any of the
      samples 4b .. 4b+3 is non-zero (SKIP_ROWS = 4);
    * samples[q, :sample_counts[q]]: the samples (ascending) non-zero at
      any of the pixels 4q .. 4q+3 (SKIP_ROWS = 4).

    Xb : (n_b, P) output; pixel_words, block_words : the training set's bit
    masks and indptr, indices, values its rows, all from
    ``cpu_sparse.compress_rows``; rows : (n_b,). The lists are unsigned: indexing with them needs no check for
    negative indices in the tiles' inner loops.

    Work items: one per block of 4 samples (its dense rows, then its pixel
    list), then one per word of block_words (the sample lists of its 64 pixel
    blocks: each sample's set bits append it to their blocks' lists, so the
    work follows the non-zeros, not blocks x samples). One parallel region,
    and with 2 threads the word items fill the second thread's share (the
    second half of the sample blocks), which beat a region of sample blocks
    then one of pixel blocks that tested every sample for every block.
    A batch's rows lie anywhere in the training set, so each block item
    first asks for the next block's rows (``_prefetch_block``): they arrive
    while this one is written, instead of each row waiting on memory.
    """
    nb, P = Xb.shape
    blocks = (nb + SKIP_ROWS - 1) // SKIP_ROWS
    # Race-free: a block item writes only its rows of Xb and its row of pixels,
    # a word item only the rows of samples (and sample_counts) of its 64 blocks.
    for item in prange(blocks + block_words.shape[1]):
        if item < blocks:
            if item + 1 < blocks:
                _prefetch_block(rows, item + 1, indptr, indices, values, pixel_words,
                                block_words)
            _rows_and_pixels(Xb, pixels, pixel_counts, pixel_words, indptr, indices, values,
                             rows, item)
        else:
            _samples_of_word(samples, sample_counts, block_words, rows, item - blocks)


@njit(inline="always")
def _prefetch_block(rows, b, indptr, indices, values, pixel_words, block_words):
    """Start loading what list_blocks reads of the samples 4b .. 4b+3: their
    compressed rows (one request per 64-byte line of indices and of values)
    and their mask words."""
    for i in range(b * SKIP_ROWS, min(rows.shape[0], (b + 1) * SKIP_ROWS)):
        s = rows[i]
        prefetch_row(indptr, indices, values, s)
        prefetch(pixel_words[s], 0)
        prefetch(pixel_words[s], pixel_words.shape[1] - 1)
        prefetch(block_words[s], 0)


@njit(inline="always")
def _rows_and_pixels(Xb, pixels, pixel_counts, pixel_words, indptr, indices, values, rows, b):
    """list_blocks' item for the samples 4b .. 4b+3: their dense rows, and
    the union of their pixels from word ORs of their masks."""
    nb, P = Xb.shape
    one = np.uint64(1)
    i0, i1 = b * SKIP_ROWS, min(nb, (b + 1) * SKIP_ROWS)
    for i in range(i0, i1):
        for k in range(P):
            Xb[i, k] = 0
        s = rows[i]
        for m in range(indptr[s], indptr[s + 1]):
            Xb[i, indices[m]] = values[m]
    c = 0
    for w in range(pixel_words.shape[1]):
        word = np.uint64(0)
        for i in range(i0, i1):
            word |= pixel_words[rows[i], w]
        while word != 0:
            pixels[b, c] = w * WORD + trailing_zeros(word)
            c += 1
            word &= word - one
    pixel_counts[b] = c


@njit(inline="always")
def _samples_of_word(samples, sample_counts, block_words, rows, w):
    """list_blocks' item for word w: the sample lists of the pixel blocks
    64w .. 64w+63, samples appended in ascending order."""
    one = np.uint64(1)
    q0 = w * WORD
    for q in range(q0, min(samples.shape[0], q0 + WORD)):
        sample_counts[q] = 0
    for i in range(rows.shape[0]):
        word = block_words[rows[i], w]
        while word != 0:
            q = q0 + trailing_zeros(word)
            c = sample_counts[q]
            samples[q, c] = i
            sample_counts[q] = c + 1
            word &= word - one
