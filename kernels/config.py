"""Every tuning constant of fastbp, in one place.

(The thread tuner's own constants stay with it, in fastbp/threads.py.)
Each is a choice between correct alternatives, made by measurement (what
was measured is in docs/speed-log.md and docs/gpu.md); none changes a
result beyond rounding. The modules that use one import it by name, so a
constant is read when its module is imported, and compiled kernels freeze
it when they compile: to try another value, patch the using module's name
in a fresh process (as the tests do), or edit it here.
"""

# --- orchestration (fastbp/) -------------------------------------------------

# SGD iterations per compiled call at most: bounds how late progress reports
# and Ctrl-C are seen, at a cost of one call (tens of microseconds) per chunk.
MAX_CHUNK = 50

# ... or, where steps are small, as many as make this many multiply-adds of
# the forward pass (a few ms): 13-32-1 on batches of 16 runs 585 steps per
# call, 8-10 % faster than in chunks of 50 (docs/speed-log.md).
CHUNK_MACS = 1 << 22

# On a GPU a chunk is one launch, and its end a host round trip (the steps'
# costs and a flag for the weights' finiteness come back; the weights stay
# there): as many steps as make this many multiply-adds of forward pass,
# at least MAX_CHUNK. Example 6.2's whole epoch is 9.5e9 of them: one
# launch per epoch, as JAX's jit of the epoch.
CUDA_CHUNK_MACS = 1 << 34

# A step of at most this many multiply-adds of its forward pass (batch rows
# times the sum of the layers' U_l U_{l-1}) runs in kernels/cpu_serial.py's
# build, on the calling thread without parallel regions: 13-32-1 at batch 16
# (7 000) ran in 12 instead of 23 us per step (docs/speed-log.md).
SERIAL_STEP_MACS = 1 << 18

# The next batch's dense rows are prefetched (into L1) during a step's
# updates where they take at most this many bytes, half of a 32 KiB L1 data
# cache: more would evict what the step itself is using.
PREFETCH_BATCH_BYTES = 1 << 14

# Rows per chunk in predict/evaluate: bounds buffer memory on big inputs.
CHUNK_ROWS = 1024

# Rows whose non-zeros per column split the first layer's W^T update into
# balanced chunks (a sample of the training set will do).
BALANCE_ROWS = 4096

# Sparse batches take the zero-skipping panel tiles only where the non-zeros
# cluster: at most this much more work than the non-zeros themselves
# (MNIST: 1.76 with forward tiles of 4 samples; 1.95 when they had 8),
# estimated on this many random batches.
MAX_UNION_RATIO = 2.05
RATIO_BATCHES = 8

# --- CPU kernels -------------------------------------------------------------

# Inputs at most this dense (fraction of non-zeros) take the sparse first
# layer, if it is at least SPARSE_MIN_UNITS wide: its axpys run along the
# layer's units, too short below that to fill the vector registers.
SPARSE_DENSITY = 0.3
SPARSE_MIN_UNITS = 32

# A weight gradient whose dZ is at least this dense runs as a blocked dense
# product instead of per-unit lists of non-zero samples.
DENSE_UPDATE_DENSITY = 0.45

# Output layers at most this wide run fused with their loss, a block of
# samples per iteration (output_layer_rows); wider ones use the blocked dense
# kernels.
FUSED_OUTPUT_MAX = 16

# ... blocks of at most this many samples: a block's softmax exps run as
# one vector loop over its rows.
OUTPUT_ROWS = 16

# dense_forward splits its work between threads by blocks of units when the
# input fits this many bytes and there are this many unit blocks per thread
# (each thread then reads the rows of W it updated itself); else by samples.
UNIT_SPLIT_BYTES = 1 << 20
UNIT_SPLIT_BLOCKS = 8

# Panels pad the first layer's units up to whole panels; padding past this
# share of the real units costs more than the 512-bit tiles gain.
MAX_PADDING = 1.3

# Hidden layers (past the first) whose weights take at least this many bytes
# are held in panels while a chunk of steps runs, on the machines where the
# first layer's panels run: such a W outgrows a core's L2, and the kernels on
# W read it in rows a page apart, which the panels' register tiles do not
# (docs/speed-log.md, "Wide hidden layers").
HIDDEN_PANEL_BYTES = 1 << 20
# ... and so do smaller ones where the batch has at least this many rows: the
# tiles' 8-row register blocks then beat the 4 x 4 blocks on W (20-64-64-2 at
# batch 32: 0.95 of the epoch; 64-256-256-10 at 128: 0.86), while at batches
# of 1-8 the packing and the part-empty tiles cost more (1.2-2x the epoch).
HIDDEN_PANEL_ROWS = 16

# --- CUDA kernels ------------------------------------------------------------

# Threads per block of every launch, read at launch time (tests set it small).
THREADS = 128

# Registers per thread allowed to train_steps (None: as many as ptxas likes);
# fixed when kernels/cuda.py is imported. A cap lets more blocks in (docs/gpu.md).
TRAIN_STEPS_REGISTERS = 96

# Layers at least this wide run their forward pass in train_steps as
# shared-memory tiles (kernels/cuda.py, _forward_smem: each
# block a tile of outputs, each thread 4 x 2 of them in registers) where the
# block size is a multiple of 16 up to 256; narrower ones (the output layer)
# spread each dot product over a group of threads. 0 would tile every
# layer; a number above every width turns the tiles off (for an A/B on a GPU).
CUDA_TILE_MIN_UNITS = 32
