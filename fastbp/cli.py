"""``fastbp-train``: Example 6.2 from the command line (docs/architecture.md, "Command line").

Exit status: 0 on success, 2 for usage errors (click), 1 for any other
failure, 130 when interrupted; every failure is one ``Error: ...`` line.
"""

import contextlib
import csv
import json
import math
import os
import shlex
import sys
import tempfile
import time

import click
import numpy as np
from click.core import ParameterSource

from . import __version__, backends, compile_lock, datasets, optimizers, plotting
from . import checks as check
from .errors import DivergenceError
from .network import Network
from .stopping import EarlyStopping
from .storage import (CHECKPOINT_FORMAT, atomic_save_npz, file_identity, load_npz,
                      save_problem, write_atomically)
from .trainer import check_checkpoint, train

EXIT_INTERRUPTED = 130
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
# Clears the terminal line a progress bar was drawn on and shows the cursor again.
_ERASE_LINE = "\r\x1b[2K\x1b[?25h"


class HiddenSizes(click.ParamType):
    """``--hidden``: "200", "256,128", or "0" for no hidden layer."""

    name = "U1[,U2...]"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        text = str(value).strip()
        if text == "0":
            return []
        try:
            sizes = [int(part) for part in text.split(",")]
        except ValueError:
            sizes = None
        if not sizes or min(sizes) < 1:
            self.fail(f"{value!r} is not a comma-separated list of positive layer widths "
                      "(e.g. 200 or 256,128), nor 0 for logistic regression", param, ctx)
        return sizes


class PositiveFloat(click.ParamType):
    """A finite float > 0 (click.FloatRange lets inf and nan through)."""

    name = "float"

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number <= 0:
            self.fail(f"{value!r} is not a finite number > 0", param, ctx)
        return number


class NonEmptyPath(click.Path):
    """click.Path refusing "" (what ``--save "$UNSET"`` passes): an empty
    name would otherwise mean "not written" and lose the run's output."""

    def convert(self, value, param, ctx):
        if isinstance(value, (str, bytes)) and not value:
            self.fail("the path is empty", param, ctx)
        return super().convert(value, param, ctx)


class OneLineUsageErrors(click.Command):
    """Usage errors as one ``Error: ...`` line (exit 2), like every other
    error, without click's usage and hint lines before it."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise _UsageError(exc.format_message()) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _UsageError(exc.format_message()) from None


class _UsageError(click.ClickException):
    exit_code = 2


def _output_option(name, metavar, what):
    return click.option(name, metavar=metavar, type=NonEmptyPath(),
                        default=None, show_default="not written", help=what)


@click.command("fastbp-train", cls=OneLineUsageErrors,
               context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--data-dir", metavar="DIR", type=NonEmptyPath(file_okay=False), default=None,
              show_default="$FASTBP_DATA_DIR, else ~/.cache/fastbp/mnist, downloaded if empty",
              help="Folder with the four MNIST-format IDX files (.gz or raw).")
@click.option("--hidden", type=HiddenSizes(), default="200",
              help="Hidden layer widths, comma-separated (e.g. 256,128); 0 for none, "
                   "i.e. logistic regression.")
@click.option("--activation", type=click.Choice(["relu", "sigmoid", "tanh"]), default="relu",
              help="Activation h of the hidden layers.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="sgd",
              help="Update rule: plain SGD (Example 6.2), SGD with momentum or Nesterov's "
                   "momentum, or Adam (as scikit-learn's MLP optimizers).")
@click.option("--lr", type=PositiveFloat(), default=0.5,
              help="Learning rate gamma (with --optimizer adam: 0.001 unless given).")
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.9,
              help="Momentum of --optimizer momentum and nesterov.")
@click.option("--alpha", type=click.FloatRange(min=0), default=0.0,
              help="L2 penalty on the weights (scikit-learn's alpha).")
@click.option("--lr-schedule", type=click.Choice(optimizers.SCHEDULES), default="constant",
              help="constant; invscaling: lr / (t + 1)^0.5, t the samples seen before each "
                   "epoch; adaptive: lr / 5 after 10 epochs without the training cost "
                   "improving by 1e-4.")
@click.option("--early-stopping", is_flag=True,
              help="Hold out --validation-fraction of the training images (stratified, "
                   "seeded) and stop when their cost has not improved by 1e-4 for "
                   "--patience epochs, keeping the best epoch's weights. The test set is "
                   "then reported after each epoch only.")
@click.option("--patience", metavar="N", type=click.IntRange(min=1), default=10,
              help="Epochs without improvement before --early-stopping stops.")
@click.option("--validation-fraction", metavar="F",
              type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              help="Share of the training images --early-stopping holds out.")
@click.option("--batch-size", metavar="N_B", type=click.IntRange(min=1), default=100,
              help="Mini-batch size n_b.")
@click.option("--epochs", metavar="N", type=click.IntRange(min=1), default=15,
              help="Passes over the training data.")
@click.option("--eval-every", metavar="N", type=click.IntRange(min=0), default=100,
              help="Evaluate the validation set every this many iterations (0: never; the "
                   "end of each epoch is always shown).")
@click.option("--seed", metavar="N", type=click.IntRange(min=0), default=0,
              help="Seed of the initial weights and of the shuffles.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              help="Floating-point type of the weights and the computation.")
@click.option("--device", type=click.Choice(list(backends.DEVICES)), default="auto",
              help="auto picks cuda when a usable GPU is present, else cpu; numpy is the "
                   "(slow) NumPy reference.")
@_output_option("--save", "MODEL.npz", "Write the trained network (read it back with "
                "fastbp.load).")
@_output_option("--history", "H.csv", "Write a CSV with one row per iteration: iteration, "
                "epoch, batch_cost, batch_error, val_cost, val_error.")
@_output_option("--plot", "CURVES.png", "Draw cost and misclassification rate against the "
                "iteration as a PNG (needs matplotlib: pip install matplotlib).")
@_output_option("--checkpoint", "CKPT.npz", "Save a checkpoint after every epoch and on "
                "Ctrl-C, so the run can be resumed.")
@click.option("--resume", is_flag=True, help="Continue the run saved in --checkpoint.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object with the results on stdout, and nothing else.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the final test error.")
@click.version_option(__version__, prog_name="fastbp")
@click.pass_context
def main(ctx, **options):
    """Train a fully connected network on MNIST with backpropagation and
    mini-batch SGD (Algorithm 6.1). The defaults are Example 6.2's two-layer
    network: 784-200-10, ReLU, lr 0.5, batches of 100, 15 epochs, the
    validation (= test) set evaluated every 100 iterations.

    Without --data-dir and $FASTBP_DATA_DIR, MNIST is downloaded once into
    ${XDG_CACHE_HOME:-~/.cache}/fastbp/mnist (mirrors: $FASTBP_MNIST_MIRRORS,
    comma-separated base URLs)."""
    ui = _Ui("json" if options["as_json"] else "quiet" if options["quiet"] else "human")
    checkpoint = options["checkpoint"]
    before = file_identity(checkpoint)
    try:
        _run(options, ui)
    except KeyboardInterrupt:
        ui.close()
        click.echo(_interrupted_message(ctx, checkpoint, before, options["resume"]), err=True)
        ctx.exit(EXIT_INTERRUPTED)
    except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
        raise
    except Exception as exc:  # noqa: BLE001 - one "Error:" line, never a traceback
        ui.close()
        expected = isinstance(exc, (ValueError, RuntimeError, OSError, ImportError))
        message = str(exc) if expected else f"unexpected {type(exc).__name__}: {exc}"
        raise click.ClickException(" ".join(message.split())) from None


def _run(o, ui):
    """Check everything that can be checked, load the data, train, report."""
    ctx = click.get_current_context()
    given = {name for name in ("lr", "patience", "validation_fraction")
             if ctx.get_parameter_source(name) != ParameterSource.DEFAULT}
    if o["optimizer"] == "adam" and "lr" not in given:
        o["lr"] = 0.001
    for name in sorted(given - {"lr"}):
        if not o["early_stopping"]:
            raise click.UsageError(f"--{name.replace('_', '-')} is a setting of "
                                   "--early-stopping, which was not given")
    stopping = (EarlyStopping(patience=o["patience"],
                              validation_fraction=o["validation_fraction"])
                if o["early_stopping"] else None)
    try:  # values click's types let through (an infinite --alpha): usage errors too
        optimizer = _optimizer(o)
    except ValueError as exc:
        raise click.UsageError(f"--{exc}".replace("--lr_schedule", "--lr-schedule")) from None
    if o["plot"] is not None:
        try:
            plotting.require_matplotlib()
        except ImportError as exc:
            raise click.ClickException(f"--plot {o['plot']}: {exc}") from None
    outputs = [(f"--{option}", o[option]) for option in ("save", "history", "plot", "checkpoint")
               if o[option] is not None]
    for option, path in outputs:
        _check_output(option, path)
    _check_distinct(outputs)
    if o["plot"] is not None and os.path.splitext(o["plot"])[1].lower() != ".png":
        raise click.UsageError(f"--plot {o['plot']}: the plot is a PNG image, so its name "
                               "must end in .png")
    try:  # the library's own checks, in the command line's words
        check_checkpoint(o["checkpoint"], o["resume"], check.CLI)
    except check.UsageError as exc:
        raise click.UsageError(str(exc)) from None
    device = backends.resolve_device(o["device"], check.CLI)

    folder, (Xtr, ytr, Xte, yte) = _load_data(o["data_dir"], ui)
    _check_not_inputs(outputs, folder)
    sizes = [Xtr.shape[1], *o["hidden"], datasets.N_CLASSES]
    net = Network(sizes, activation=o["activation"], dtype=o["dtype"], seed=o["seed"])
    Xte = Xte.astype(net.dtype, copy=False)
    batch = min(o["batch_size"], Xtr.shape[0])
    try:  # a bad option value, so a usage error (exit 2), before anything is printed
        if optimizer.rule == "sgd":  # as the library checks it
            check.sgd_step(o["lr"], batch, net.dtype, check.CLI)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    steps = math.ceil(Xtr.shape[0] / batch)
    ui.echo(f"fastbp {__version__}: data {folder}: {Xtr.shape[0]} training and "
            f"{Xte.shape[0]} test images of {Xtr.shape[1]} pixels (the test set is the "
            "validation set)")
    ui.echo(f"network  {'-'.join(map(str, sizes))}, {_model_name(net)}, {net.dtype.name}, "
            f"{net.n_params:,} parameters")
    every = (f"every {o['eval_every']} iterations" if o["eval_every"] and not stopping
             else "after each epoch")
    ui.echo(f"training {_describe(optimizer)}, batch {o['batch_size']}, "
            f"{_count(o['epochs'], 'epoch')} "
            f"of {steps} iterations, validation {every}, seed {o['seed']}, device {device}")
    if stopping:
        ui.echo(f"early stopping: {100 * stopping.validation_fraction:g} % of the training "
                f"images held out, patience {stopping.patience} epochs")

    # Printed when training starts: a resume that train refuses prints none of it.
    table = ([f"resuming from {o['checkpoint']}"] if o["resume"] else []) + [
        "epoch   train cost   val cost   val error   seconds"]
    report = _EpochReport(ui, net, Xte, yte, o["epochs"], table)
    started, compiled = time.perf_counter(), compile_lock.seconds_spent()
    try:
        with compile_lock.watch(_CompileNotes(ui)):
            # Early stopping watches its held-out images, never the test set.
            history = train(net, Xtr, ytr, optimizer=optimizer, batch_size=o["batch_size"],
                            epochs=o["epochs"], validation=None if stopping else (Xte, yte),
                            eval_every=o["eval_every"], seed=o["seed"], device=device,
                            checkpoint=o["checkpoint"], resume=o["resume"], progress=report,
                            early_stopping=stopping)
    except DivergenceError as exc:
        # The curves up to the bad iteration are what shows why: write them.
        ui.close()
        failed = []
        if exc.history is not None:
            written, failed = _write_outputs(o, exc.history,
                                             _title(o, net, sizes, f"diverged at iteration "
                                                                  f"{exc.iteration}"))
            if written:
                ui.note("wrote " + ", ".join(written))
        # Failed outputs too, in the one error line, which even --quiet prints.
        raise click.ClickException("; ".join([_diverged(exc, o), *failed])) from None
    seconds = time.perf_counter() - started
    compiled = compile_lock.seconds_spent() - compiled
    ui.close()
    if report.head and o["resume"]:  # train accepted the checkpoint but ran nothing
        ui.echo(f"resuming from {o['checkpoint']}: nothing left to train (--epochs "
                f"{o['epochs']} already run)")
    if history.stopped_epoch is not None:
        ui.echo(f"early stopping after epoch {history.stopped_epoch}: "
                f"{history.stop_reason}; the weights are those of epoch {history.best_epoch}")

    test_cost, _ = net.evaluate(Xte, yte)
    wrong = int(np.count_nonzero(net.predict(Xte) != yte))
    test_error = wrong / yte.shape[0]
    written, failed = _write_outputs(o, history, _title(o, net, sizes,
                                                        f"test error {100 * test_error:.2f} %"),
                                     net)
    if failed:
        wrote = f" (wrote {', '.join(written)})" if written else ""
        raise click.ClickException("; ".join(failed) + wrote)
    of_which = f" ({compiled:.1f} s of it compiling or loading kernels)" if compiled >= 1 else ""
    ui.result(f"test error {100 * test_error:.2f} % ({wrong} of {yte.shape[0]} misclassified), "
              f"test cost {test_cost:.4f}, {seconds:.1f} s{of_which}")
    if written:
        ui.echo("wrote " + ", ".join(written))
    ui.json({
        "test_error": test_error, "test_misclassified": wrong, "n_test": int(yte.shape[0]),
        "test_cost": test_cost, "n_params": net.n_params, "sizes": sizes,
        "activation": net.activation, "dtype": net.dtype.name, "device": device,
        "optimizer": o["optimizer"], "lr": o["lr"], "momentum": optimizer.momentum,
        "alpha": o["alpha"], "lr_schedule": o["lr_schedule"],
        "early_stopping": stopping.settings() if stopping else None,
        "best_epoch": history.best_epoch, "stopped_epoch": history.stopped_epoch,
        "held_out_cost": history.val_scores,
        "batch_size": o["batch_size"], "epochs": o["epochs"],
        "eval_every": o["eval_every"], "seed": o["seed"], "iterations": history.iterations,
        "epoch_seconds": history.epoch_seconds,
        "train_cost": [history.epoch_cost(e) for e in range(history.epochs)],
        "val_iteration": history.val_iteration, "val_cost": history.val_cost,
        "val_error": history.val_error, "seconds": seconds, "compile_seconds": compiled,
        "data_dir": folder,
        "outputs": {key: o[key] for key in ("save", "history", "plot", "checkpoint") if o[key]},
    })


def _optimizer(o):
    """The fastbp.SGD or Adam the options describe."""
    shared = {"lr": o["lr"], "alpha": o["alpha"], "schedule": o["lr_schedule"]}
    if o["optimizer"] == "adam":
        return optimizers.Adam(**shared)
    momentum = 0.0 if o["optimizer"] == "sgd" else o["momentum"]
    return optimizers.SGD(momentum=momentum, nesterov=o["optimizer"] == "nesterov", **shared)


def _describe(optimizer):
    """"SGD lr 0.5", "SGD momentum 0.9 lr 0.1", "Adam lr 0.001", with the
    penalty and schedule where they are not the default."""
    name = {"sgd": "SGD", "momentum": f"SGD momentum {optimizer.momentum:g}",
            "nesterov": f"SGD Nesterov momentum {optimizer.momentum:g}",
            "adam": "Adam"}[optimizer.rule]
    extra = f", alpha {optimizer.alpha:g}" if optimizer.alpha else ""
    if optimizer.schedule != "constant":
        extra += f", {optimizer.schedule} schedule"
    return f"{name} lr {optimizer.lr:g}{extra}"


def _diverged(exc, o):
    """The divergence in the command line's terms: its options, and what
    was (not) saved, rather than the API's "the network keeps ..."."""
    if exc.iteration is None or exc.reason is None:
        return " ".join(str(exc).split())
    saved = (f"; the model was not saved to {o['save']}" if o["save"] is not None else "")
    return (f"training diverged at iteration {exc.iteration}: {exc.reason}. Try a smaller "
            f"--lr than {o['lr']:g}{saved}")


def _model_name(net):
    if len(net.sizes) == 2:
        return "logistic regression (softmax cross-entropy)"
    return f"{net.activation}, softmax cross-entropy"


def _load_data(data_dir, ui):
    """(folder, MNIST arrays); downloads into the cache only when neither
    --data-dir nor $FASTBP_DATA_DIR names a folder."""
    download = data_dir is None and not os.environ.get("FASTBP_DATA_DIR")
    folder = datasets.locate(data_dir)[0]
    bar = None
    if download and datasets.missing_files(folder):
        ui.note(f"MNIST not found in {folder}: downloading it (about 11 MB)")
        bar = _DownloadBar(enabled=ui.mode != "quiet" and _is_tty(sys.stderr))
    try:
        return folder, datasets.mnist(data_dir, download=download, progress=bar)
    finally:
        if bar is not None:
            bar.close()


def _check_output(option, path):
    """Fail before training if ``path`` cannot be written (a run is not lost to a typo)."""
    if os.path.isdir(path):
        raise click.ClickException(f"{option} {path}: is a folder, not a file name")
    target, problem = save_problem(path)  # where the save will write, links followed
    if problem:
        raise click.ClickException(f"{option} {path}: {problem}")
    folder = os.path.dirname(target)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise click.ClickException(f"{option} {path}: cannot write in the folder {folder} "
                                   f"({exc.strerror})") from None


def _check_distinct(outputs):
    """Refuse two outputs that name one file: the later write would replace
    the earlier (a checkpoint overwritten by the model or the CSV could no
    longer be resumed)."""
    for k, (option, path) in enumerate(outputs):
        for other, other_path in outputs[:k]:
            if _same_file(path, other_path):
                raise click.UsageError(f"{other} {other_path} and {option} {path} name the "
                                       "same file: give each output its own path")


def _check_not_inputs(outputs, folder):
    """Refuse an output that names one of the data files just read."""
    for option, path in outputs:
        for stem in datasets.FILES.values():
            for data in (os.path.join(folder, stem), os.path.join(folder, stem + ".gz")):
                # A raw name that does not exist yet counts too: written, it would be
                # read instead of the .gz next to it.
                if _same_file(path, data):
                    raise click.UsageError(f"{option} {path} is the data file {data}: "
                                           "writing it would destroy the data")


def _same_file(a, b):
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links, case-insensitive file systems
    except OSError:
        return False


def _title(o, net, sizes, outcome):
    """The plot's title: the network, its settings and how the run ended."""
    return (f"{'-'.join(map(str, sizes))} {_model_name(net)}: lr {o['lr']:g}, batch "
            f"{o['batch_size']}, {outcome}")


def _write_outputs(o, history, title, net=None):
    """Write --save (given the net), --history and --plot, each tried even
    where another failed (a full disk must not cost the files that fit).
    Returns (paths written, one message per failure)."""
    writers = {
        # Not net.save, whose errors name its argument "path", not --save.
        "save": lambda path: atomic_save_npz(path, net.weight_arrays(), net.metadata()),
        "history": lambda path: write_atomically(path, "w",
                                                 lambda f: _write_history_csv(f, history)),
        "plot": lambda path: write_atomically(
            path, "wb", lambda f: plotting.plot_history(history, f, title=title)),
    }
    written, failed = [], []
    for option, write in writers.items():
        path = o[option]
        if path is None or (option == "save" and net is None):
            continue
        try:
            write(path)
            written.append(path)
        except (OSError, ValueError) as exc:
            failed.append(" ".join(str(exc).split()))
    return written, failed


def _write_history_csv(f, history):
    """One row per iteration; val_cost and val_error only where evaluated."""
    val = dict(zip(history.val_iteration, zip(history.val_cost, history.val_error)))
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(["iteration", "epoch", "batch_cost", "batch_error", "val_cost",
                     "val_error"])
    k = history.steps_per_epoch
    for i, (cost, error) in enumerate(zip(history.batch_cost, history.batch_error), 1):
        vc, ve = val.get(i, ("", ""))
        writer.writerow([i, (i - 1) // k + 1, repr(cost), repr(error),
                         vc if vc == "" else repr(vc), ve if ve == "" else repr(ve)])


def _interrupted_message(ctx, checkpoint, before, resumed):
    """The one line printed on Ctrl-C: how to resume, or that nothing was saved."""
    if checkpoint is None:
        return ("Interrupted: nothing was saved (pass --checkpoint CKPT.npz to make a run "
                "resumable).")
    now = file_identity(checkpoint)
    unchanged = now is None or now == before
    if unchanged and not (resumed and now is not None):
        return "Interrupted before the first checkpoint was written: nothing was saved."
    where = ""
    with contextlib.suppress(Exception):
        _, meta = load_npz(checkpoint, (CHECKPOINT_FORMAT,))
        epoch, step = meta["epoch"], meta["step"]
        where = (f" (epoch {epoch + 1}, iteration {step} of {meta['steps_per_epoch']})"
                 if step else f" (after epoch {epoch})")
    if unchanged:  # a resumed run stopped before its first save: still resumable
        head = f"the checkpoint {checkpoint} is unchanged"
    else:
        head = f"checkpoint saved to {checkpoint}"
    return f"Interrupted: {head}{where}. Resume with: {_resume_command(ctx)}"


def _resume_command(ctx):
    """The command line of this run, from the options the user gave, plus --resume."""
    args = []
    for param in ctx.command.params:
        if (param.name == "resume"
                or ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE):
            continue
        value, flag = ctx.params[param.name], param.opts[-1]
        if getattr(param, "is_flag", False):
            args += [flag] if value else []
        elif param.name == "hidden":
            args += [flag, ",".join(map(str, value)) or "0"]
        else:
            args += [flag, str(value)]
    return f"{ctx.command_path} {shlex.join(args + ['--resume'])}"


def _echo(text, err=False, nl=True):
    """click.echo, except that a reader who went away (``| head``) ends the
    printing, not the run: training goes on and its files are still written."""
    try:
        click.echo(text, err=err, nl=nl)
    except BrokenPipeError:
        # Point the descriptor at /dev/null, so later writes and the flush at
        # exit do not fail again.
        stream = sys.stderr if err else sys.stdout
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):  # a stream without a descriptor: nothing to redirect
            pass
        finally:
            os.close(devnull)


class _Ui:
    """Where output goes: "human" (log and bars), "quiet" (result line only)
    or "json" (one object on stdout, nothing else)."""

    def __init__(self, mode):
        self.mode = mode
        self.bar = None

    def echo(self, text):
        if self.mode == "human":
            _echo(text)

    def note(self, text):
        """A message about the run's setup, on stderr (stdout may be JSON)."""
        if self.mode != "quiet":
            self.close()  # not in the middle of a bar's line
            _echo(text, err=True)

    def result(self, text):
        if self.mode != "json":
            _echo(text)

    def json(self, obj):
        if self.mode == "json":
            _echo(json.dumps(obj))

    def progress(self, label, done, total):
        """Draw a bar on stdout (terminals, human mode only)."""
        if self.mode != "human" or not _is_tty(sys.stdout):
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=label, width=30)
            self.bar.render_progress()
        self.bar.update(done - self.bar.pos)

    def close(self):
        """Take the bar off the screen."""
        if self.bar is not None:
            _echo(_ERASE_LINE, nl=False)
            self.bar = None


class _EpochReport:
    """fastbp.train's progress callback: the table's head at the first call,
    the bar, and one line per epoch (its seconds without compiling)."""

    def __init__(self, ui, net, Xv, yv, epochs, head):
        self.ui, self.net, self.Xv, self.yv, self.epochs = ui, net, Xv, yv, epochs
        self.head = head
        self._restart()

    def _restart(self):
        self.started, self.compiled = time.perf_counter(), compile_lock.seconds_spent()

    def __call__(self, epoch, step, steps, history):
        for line in self.head:
            self.ui.echo(line)
        self.head = []
        self.ui.progress(f"epoch {epoch + 1}/{self.epochs}", step, steps)
        if step < steps:
            return
        self.ui.close()
        if self.ui.mode != "human":
            return
        seconds = (time.perf_counter() - self.started
                   - (compile_lock.seconds_spent() - self.compiled))
        val_cost, val_error = self._validation(history, (epoch + 1) * steps)
        self.ui.echo(f"{epoch + 1:>5}   {_cost(history.epoch_cost(epoch), 10)}   "
                     f"{_cost(val_cost, 8)}   {100 * val_error:>7.2f} %   {seconds:>7.2f}")
        self._restart()  # the next epoch starts after this report

    def _validation(self, history, iteration):
        """(cost, error) on the validation set now: from the history when it
        was just evaluated there, else computed."""
        if history.val_iteration and history.val_iteration[-1] == iteration:
            return history.val_cost[-1], history.val_error[-1]
        return self.net.evaluate(self.Xv, self.yv)


class _CompileNotes:
    """compile_lock.watch's callback: says once why a first run is slow."""

    def __init__(self, ui):
        self.ui, self.said = ui, set()

    def __call__(self, what):
        if what in self.said:
            return
        self.said.add(what)
        self.ui.note("compiling kernels for this network and dtype (once: later runs load "
                     "them from Numba's cache; a minute or two)" if what == "compile" else
                     "waiting for another fastbp process to finish compiling kernels")


def _count(n, noun):
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _cost(value, width):
    """A cost in its column: fixed-point, or in exponent form when huge."""
    return f"{value:>{width}.4f}" if abs(value) < 1e5 else f"{value:>{width}.3e}"


class _DownloadBar:
    """download_mnist's progress callback: one click bar per file, on stderr."""

    def __init__(self, enabled):
        self.enabled, self.bar, self.name = enabled, None, None

    def __call__(self, name, done, total):
        if not self.enabled or total is None:
            return
        if self.bar is None or name != self.name or done < self.bar.pos:
            self.close()
            self.name = name
            self.bar = click.progressbar(length=total, label=f"  {name}", file=sys.stderr,
                                         width=30)
        self.bar.update(done - self.bar.pos)

    def close(self):
        if self.bar is not None:
            self.bar.render_finish()
            self.bar = None


def _is_tty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
