"""fastbp.kernels: hand-written compute, no orchestration.

``cpu`` holds the ``@njit(parallel=True)`` kernels; ``cuda`` their
``@cuda.jit`` twins (same names, same meaning); ``codes`` the integer codes
for activations and losses that both share.
"""
