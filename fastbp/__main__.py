"""``python -m fastbp``: the same as ``fastbp-train``."""

from .cli import main

main()
