"""Integer codes shared by every kernel module (CPU and CUDA alike).

Compiled code cannot take Python strings cheaply, so names are resolved to
these codes in Python (``fastbp.backends``) before any kernel runs.
"""

IDENTITY = 0
RELU = 1
SIGMOID = 2
TANH = 3

CROSS_ENTROPY = 0
SQUARED_ERROR = 1
BINARY_CROSS_ENTROPY = 2

ACTIVATIONS = {"identity": IDENTITY, "relu": RELU, "sigmoid": SIGMOID, "tanh": TANH}
LOSSES = {"cross_entropy": CROSS_ENTROPY, "squared_error": SQUARED_ERROR,
          "binary_cross_entropy": BINARY_CROSS_ENTROPY}

# The first layer's plan (fastbp.first_layer chooses one per network and
# data): which layout each batch's first-layer products run on.
FIRST_W = 0  # every batch on W, register-blocked 4 x 4
FIRST_W_OR_CSR = 1  # dense batches on W, sparse ones on W^T over the compressed rows
FIRST_PANELS = 2  # every batch on W^T in panels (kernels.cpu_panels)
FIRST_PANELS_OR_CSR = 3  # dense batches on panels, sparse ones on W^T over the compressed rows
FIRST_PANELS_OR_TILES = 4  # dense batches on panels, sparse ones on zero-skipping panel tiles
FIRST_WT_LISTS = 5  # inference only: W^T over each chunk's listed non-zeros
FIRST_PLANS = {"W": FIRST_W, "W or CSR": FIRST_W_OR_CSR, "panels": FIRST_PANELS,
               "panels or CSR": FIRST_PANELS_OR_CSR, "panels or tiles": FIRST_PANELS_OR_TILES,
               "W^T lists": FIRST_WT_LISTS}

# Update rules (kernels/optim.py), as scikit-learn's MLP optimizers define them.
RULE_SGD = 0
RULE_MOMENTUM = 1
RULE_NESTEROV = 2
RULE_ADAM = 3
RULES = {"sgd": RULE_SGD, "momentum": RULE_MOMENTUM, "nesterov": RULE_NESTEROV,
         "adam": RULE_ADAM}
