"""Exceptions of fastbp's public API (docs/architecture.md, "Errors")."""


class DataError(ValueError):
    """A data or model file is unreadable, truncated or inconsistent.

    The message names the file.
    """


class DivergenceError(RuntimeError):
    """Training stopped because the cost turned non-finite (NaN or inf).

    The network is left at its last finite weights; ``iteration`` is the
    1-based iteration whose cost was non-finite; ``history`` is the run's
    History up to and including it (fastbp.train's), or None; ``reason``
    says what turned non-finite (the cost, or the weights), or is None.
    """

    def __init__(self, message, iteration=None, history=None, reason=None):
        super().__init__(message)
        self.iteration = iteration
        self.history = history
        self.reason = reason
