"""Training curves as in the textbook's Figures 6.7/6.8 (needs the ``plot`` extra).

Left: cost; right: misclassification rate; both against the iteration, the
training mini-batch in blue and the validation set in red. Drawn with
matplotlib's Agg canvas directly, so pyplot's global state is never touched.
"""

import numpy as np

INSTALL_HINT = "pip install matplotlib"


def require_matplotlib():
    """Import matplotlib or raise ImportError saying how to install it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(f"plotting needs matplotlib: {INSTALL_HINT}") from None


def plot_history(history, file, title=None):
    """Draw the curves of ``history`` (a fastbp.History) as a PNG into
    ``file``, a path or a binary file object."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    FigureCanvasAgg(fig)
    iterations = range(1, history.iterations + 1)
    panels = (("cost", history.batch_cost, history.val_cost),
              ("misclassification rate", history.batch_error, history.val_error))
    for ax, (label, batch, val) in zip(fig.subplots(1, 2), panels):
        ax.plot(iterations, batch, color="tab:blue", linewidth=0.4, label="training mini-batch")
        if val:
            ax.plot(history.val_iteration, val, color="tab:red", linewidth=1.5,
                    label="validation data")
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
        ax.set_xlim(0, max(history.iterations, 1))
        ax.set_ylim(0, _top(batch, val))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right")
    if title:
        fig.suptitle(title)
    fig.savefig(file, format="png", dpi=100)


def _top(batch, val):
    """Upper y limit: all of the validation curve and 99 % of the mini-batch
    values, so the first few iterations do not flatten the rest."""
    finite = np.asarray(batch, np.float64)
    finite = finite[np.isfinite(finite)]
    high = max([*np.quantile(finite, [0.99]), *val] if finite.size else [*val, 1.0])
    return 1.1 * high if high > 0 else 1.0
