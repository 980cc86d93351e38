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

ACTIVATIONS = {"identity": IDENTITY, "relu": RELU, "sigmoid": SIGMOID, "tanh": TANH}
LOSSES = {"cross_entropy": CROSS_ENTROPY, "squared_error": SQUARED_ERROR}
