"""fastbp-train: options, outputs, exit codes and messages.

Training runs use tiny synthetic MNIST-format folders (200 + 50 images), so
each takes well under a second once the kernels are compiled.
"""

import csv
import inspect
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from idx_fixtures import closed_port_url, http_server, idx_bytes, tiny_arrays, write_tiny_mnist

import fastbp
from fastbp import backends, cli, datasets

FAST = ["--epochs", "1", "--hidden", "16", "--batch-size", "20"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A folder with a tiny MNIST-format data set (200 train, 50 test images)."""
    folder = tmp_path_factory.mktemp("tiny")
    write_tiny_mnist(folder)
    return str(folder)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Never touch the user's cache; FASTBP_DATA_DIR as the test sets it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def invoke(*args):
    """Run the command in-process; stdout and stderr kept apart."""
    separate = "mix_stderr" in inspect.signature(CliRunner).parameters  # click < 8.2
    runner = CliRunner(**({"mix_stderr": False} if separate else {}))
    return runner.invoke(cli.main, [str(a) for a in args], catch_exceptions=False)


def run_json(*args):
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("\n") == 1  # one object, nothing else
    return json.loads(result.stdout)


def assert_one_error_line(result, code, *needles):
    """Exit ``code`` and exactly one "Error:" line on stderr that contains every needle."""
    assert result.exit_code == code, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in errors[0]
    return errors[0]


# --- options and defaults --------------------------------------------------

def test_help_shows_every_option_and_its_default():
    result = invoke("--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    defaults = {"--hidden": "200", "--activation": "relu", "--lr": "0.5", "--batch-size": "100",
                "--epochs": "15", "--eval-every": "100", "--seed": "0", "--dtype": "float32",
                "--device": "auto"}
    for option, default in defaults.items():
        assert re.search(rf"{option} .*?\[default: {re.escape(default)}[;\]]", text), option
    for option in ("--data-dir", "--save", "--history", "--plot", "--checkpoint", "--resume",
                   "--json", "-q, --quiet"):
        assert option in text
    assert "FASTBP_DATA_DIR" in text


def test_defaults_are_example_6_2(tiny):
    out = run_json("--data-dir", tiny)
    assert out["sizes"] == [784, 200, 10] and out["n_params"] == 159010
    assert out["activation"] == "relu" and out["dtype"] == "float32"
    assert (out["lr"], out["batch_size"], out["epochs"], out["eval_every"], out["seed"]) == (
        0.5, 100, 15, 100, 0)
    assert out["device"] in ("cpu", "cuda")
    assert len(out["epoch_seconds"]) == 15 and out["iterations"] == 30  # 200 / 100 per epoch


@pytest.mark.parametrize("hidden,sizes,n_params", [("0", [784, 10], 7850),
                                                   ("16,8", [784, 16, 8, 10], 12786)],
                         ids=["logistic-regression", "deeper"])
def test_hidden_layers(tiny, hidden, sizes, n_params):
    out = run_json("--data-dir", tiny, *FAST, "--hidden", hidden)
    assert out["sizes"] == sizes and out["n_params"] == n_params


def test_options_reach_the_trainer(tiny):
    out = run_json("--data-dir", tiny, "--epochs", "2", "--hidden", "8", "--batch-size", "30",
                   "--eval-every", "4", "--activation", "tanh", "--dtype", "float64",
                   "--lr", "0.1", "--seed", "3", "--device", "numpy")
    assert out["device"] == "numpy" and out["dtype"] == "float64"
    assert out["activation"] == "tanh" and out["lr"] == 0.1 and out["seed"] == 3
    assert out["iterations"] == 14  # ceil(200 / 30) = 7 per epoch
    assert out["val_iteration"] == [4, 8, 12]


# --- what a person sees ----------------------------------------------------

def test_human_output(tiny):
    result = invoke("--data-dir", tiny, "--epochs", "3", "--hidden", "16", "--batch-size", "20")
    # (A fresh Numba cache adds a note that kernels are compiling, or that
    # another fastbp process holds the compile lock.)
    assert result.exit_code == 0 and all(
        line.startswith(("compiling kernels", "waiting for another fastbp process"))
        for line in result.stderr.splitlines()), result.stderr
    out = result.stdout
    assert "784-16-10" in out and "12,730 parameters" in out and "float32" in out
    assert re.search(r"device (cpu|cuda)", out) and "200 training and 50 test images" in out
    rows = re.findall(r"^\s+(\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+) %\s+(\d+\.\d+)$", out,
                      re.MULTILINE)
    assert [int(r[0]) for r in rows] == [1, 2, 3]
    final = re.search(r"^test error (\d+\.\d\d) % \((\d+) of 50 misclassified\)", out,
                      re.MULTILINE)
    assert final and float(final.group(1)) == pytest.approx(int(final.group(2)) / 50 * 100)
    assert float(rows[-1][3]) == float(final.group(1))  # last validation = the test set
    assert float(final.group(1)) < 20  # the tiny set is easy: training works
    assert "\r" not in out and "\x1b" not in out  # no progress bar when not a terminal


def test_quiet_prints_only_the_result(tiny):
    result = invoke("--data-dir", tiny, *FAST, "-q")
    assert result.exit_code == 0
    assert re.fullmatch(r"test error \d+\.\d\d % \(\d+ of 50 misclassified\), test cost "
                        r"\d+\.\d+, \d+\.\d s\n", result.stdout)


def test_json_output(tiny):
    out = run_json("--data-dir", tiny, "--epochs", "2", "--hidden", "16", "--batch-size", "20",
                   "--eval-every", "5")
    for key in ("test_error", "test_cost", "n_params", "sizes", "epochs", "epoch_seconds",
                "device"):
        assert key in out
    assert out["test_error"] == out["test_misclassified"] / out["n_test"]
    assert out["n_test"] == 50 and out["epochs"] == 2 and len(out["epoch_seconds"]) == 2
    assert len(out["train_cost"]) == 2 and out["train_cost"][1] < out["train_cost"][0]
    assert out["val_error"][-1] == out["test_error"]  # validation set = test set
    assert out["val_cost"][-1] == pytest.approx(out["test_cost"], rel=1e-5)


# --- outputs ---------------------------------------------------------------

def test_save_writes_a_model_that_loads_back(tiny, tmp_path):
    path = tmp_path / "model.npz"
    out = run_json("--data-dir", tiny, *FAST, "--save", path)
    net = fastbp.load(path)
    assert net.sizes == [784, 16, 10]
    _, _, Xte, yte = datasets.load_folder(tiny)
    assert np.mean(net.predict(Xte) != yte) == out["test_error"]
    assert out["outputs"] == {"save": str(path)}


def test_history_csv_has_one_row_per_iteration(tiny, tmp_path):
    path = tmp_path / "h.csv"
    out = run_json("--data-dir", tiny, "--epochs", "2", "--hidden", "16", "--batch-size", "20",
                   "--eval-every", "3", "--history", path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["iteration", "epoch", "batch_cost", "batch_error", "val_cost",
                             "val_error"]
    assert len(rows) == out["iterations"] == 20
    assert [int(r["iteration"]) for r in rows] == list(range(1, 21))
    assert [int(r["epoch"]) for r in rows] == [1] * 10 + [2] * 10
    evaluated = [int(r["iteration"]) for r in rows if r["val_cost"] != ""]
    assert evaluated == out["val_iteration"] == [3, 6, 9, 12, 15, 18]
    assert all(r["val_error"] == "" for r in rows if r["val_cost"] == "")
    assert [float(r["val_cost"]) for r in rows if r["val_cost"]] == out["val_cost"]
    errors = [float(r["batch_error"]) for r in rows]
    assert all(0 <= e <= 1 for e in errors)
    assert np.mean([float(r["batch_cost"]) for r in rows[10:]]) == pytest.approx(
        out["train_cost"][1])


def test_plot_writes_a_png(tiny, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "out" / "curves.png"
    path.parent.mkdir()
    run_json("--data-dir", tiny, *FAST, "--eval-every", "2", "--plot", path)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert os.listdir(path.parent) == ["curves.png"]  # no temporary file left


def test_plot_without_matplotlib_fails_before_training(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "out"
    out.mkdir()
    result = invoke("--data-dir", tiny, *FAST, "--plot", out / "c.png", "--save", out / "m.npz")
    assert_one_error_line(result, 1, "pip install matplotlib", "c.png")
    assert result.stdout == "" and os.listdir(out) == []


# --- errors ----------------------------------------------------------------

@pytest.mark.parametrize("args,needle", [
    (["--hidden", "abc"], "'abc'"),
    (["--hidden", "16,0"], "'16,0'"),
    (["--hidden", "-5"], "'-5'"),
    (["--hidden", ""], "''"),
    (["--lr", "-1"], "'-1'"),
    (["--lr", "0"], "'0'"),
    (["--lr", "nan"], "'nan'"),
    (["--lr", "inf"], "'inf'"),
    (["--lr", "fast"], "'fast'"),
    (["--lr", "1e-50"], "--lr 1e-50 is too small for float32: --lr / --batch-size"),
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--eval-every", "-1"], "--eval-every"),
    (["--seed", "-1"], "--seed"),
    (["--device", "gpu"], "'gpu'"),
    (["--activation", "softplus"], "'softplus'"),
    (["--dtype", "float16"], "'float16'"),
    (["--resume"], "--checkpoint"),
    (["--bogus"], "--bogus"),
    # An unset variable in --save "$OUT" must not mean "not written".
    (["--save", ""], "--save"),
    (["--history", ""], "--history"),
    (["--plot", ""], "--plot"),
    (["--checkpoint", ""], "--checkpoint"),
    (["--data-dir", ""], "--data-dir"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_usage_errors_exit_2(tiny, args, needle):
    result = invoke("--data-dir", tiny, *FAST, *args)
    line = assert_one_error_line(result, 2, needle)
    assert result.stderr == line + "\n"  # the one line only: no usage lines around it
    assert result.stdout == ""


def broken_folder(tmp_path, damage):
    """A copy of a tiny data set with one kind of damage."""
    folder = tmp_path / "broken"
    write_tiny_mnist(folder)
    if damage == "missing":
        (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    elif damage == "truncated":
        path = folder / "train-images-idx3-ubyte.gz"
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "labels":
        labels = tiny_arrays()["test_labels"]
        labels[7] = 12
        (folder / "t10k-labels-idx1-ubyte.gz").unlink()
        (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    return folder


@pytest.mark.parametrize("damage,needle", [("missing", "t10k-labels-idx1-ubyte"),
                                           ("truncated", "train-images-idx3-ubyte.gz"),
                                           ("labels", "label 12 at index 7")])
def test_broken_data_folder_exits_1(tmp_path, damage, needle):
    folder = broken_folder(tmp_path, damage)
    result = invoke("--data-dir", folder, *FAST)
    assert_one_error_line(result, 1, str(folder), needle)
    assert result.stdout == ""


def test_missing_data_folders_exit_1(tmp_path, monkeypatch):
    result = invoke("--data-dir", tmp_path / "nowhere", *FAST)
    line = assert_one_error_line(result, 1, str(tmp_path / "nowhere"), "does not exist")
    assert "FASTBP_DATA_DIR" not in line
    # A folder from the environment says so: the user may not know it is set.
    monkeypatch.setenv("FASTBP_DATA_DIR", str(tmp_path / "elsewhere"))
    result = invoke(*FAST)
    assert_one_error_line(result, 1, f"{tmp_path / 'elsewhere'} (from $FASTBP_DATA_DIR)",
                          "does not exist")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("FASTBP_DATA_DIR", str(tmp_path / "empty"))
    result = invoke(*FAST)
    assert_one_error_line(result, 1, f"{tmp_path / 'empty'} (from $FASTBP_DATA_DIR)",
                          "missing MNIST file(s)")


@pytest.mark.parametrize("option", ["--save", "--history", "--plot", "--checkpoint"])
@pytest.mark.parametrize("problem", ["no-folder", "is-a-folder", "under-a-file",
                                     "link-to-no-folder"])
def test_unwritable_outputs_fail_before_training(tiny, tmp_path, option, problem):
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "gone" / "out")
    path = {"no-folder": tmp_path / "nowhere" / "out", "is-a-folder": tmp_path,
            "under-a-file": tmp_path / "file" / "out",
            "link-to-no-folder": tmp_path / "link"}[problem]
    started = time.perf_counter()
    result = invoke("--data-dir", tiny, *FAST, option, path)
    assert_one_error_line(result, 1, f"{option} {path}")
    assert result.stdout == ""  # nothing loaded or trained
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize("first,second", [("--checkpoint", "--save"),
                                           ("--checkpoint", "--history"),
                                           ("--save", "--history"),
                                           ("--history", "--plot")])
def test_two_outputs_naming_one_file_fail_before_training(tiny, tmp_path, first, second):
    """The later write would replace the earlier: a checkpoint overwritten by
    the model could no longer be resumed. Also through another spelling."""
    path = tmp_path / ("out.png" if second == "--plot" else "out.npz")
    other = tmp_path / "sub" / ".." / path.name
    (tmp_path / "sub").mkdir()
    result = invoke("--data-dir", tiny, *FAST, first, path, second, other)
    assert_one_error_line(result, 2, f"{first} {path}", f"{second} {other}", "same file")
    assert result.stdout == "" and sorted(os.listdir(tmp_path)) == ["sub"]


@pytest.mark.parametrize("name", ["train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte"],
                         ids=["the-file", "the-raw-name-read-before-it"])
def test_an_output_naming_a_data_file_fails_before_training(tmp_path, name):
    folder = tmp_path / "data"
    write_tiny_mnist(folder)
    before = sorted(os.listdir(folder)), (folder / "train-labels-idx1-ubyte.gz").read_bytes()
    result = invoke("--data-dir", folder, *FAST, "--history", folder / name)
    assert_one_error_line(result, 2, f"--history {folder / name} is the data file", "destroy")
    assert (sorted(os.listdir(folder)),
            (folder / "train-labels-idx1-ubyte.gz").read_bytes()) == before
    assert result.stdout == ""


@pytest.mark.parametrize("kind", ["fifo", "link-to-fifo"])
def test_outputs_that_are_not_regular_files_fail_before_training(tiny, tmp_path, kind):
    """A FIFO or device (/dev/null) would be replaced by the renamed file."""
    os.mkfifo(tmp_path / "pipe")
    path = tmp_path / "pipe"
    if kind == "link-to-fifo":
        path = tmp_path / "m.npz"
        path.symlink_to("pipe")
    result = invoke("--data-dir", tiny, *FAST, "--save", path)
    assert_one_error_line(result, 1, f"--save {path}: not a regular file")
    assert (tmp_path / "pipe").is_fifo() and result.stdout == ""


def test_a_failed_output_does_not_cost_the_others(tiny, tmp_path, monkeypatch):
    """A full disk for the model: the CSV and the plot are still written, and
    the one error line names the file that could not be."""
    pytest.importorskip("matplotlib")
    from fastbp import storage

    real = storage.np.savez

    def full_disk(file, **arrays):
        raise OSError(28, "No space left on device")
    model = tmp_path / "m.npz"
    fastbp.Network([784, 16, 10]).save(model)
    before = model.read_bytes()
    monkeypatch.setattr(storage.np, "savez", full_disk)
    result = invoke("--data-dir", tiny, *FAST, "--save", model, "--history", tmp_path / "h.csv",
                    "--plot", tmp_path / "c.png")
    monkeypatch.setattr(storage.np, "savez", real)
    assert_one_error_line(result, 1, f"cannot write {model}: No space left on device",
                          f"wrote {tmp_path / 'h.csv'}, {tmp_path / 'c.png'}")
    assert model.read_bytes() == before
    assert (tmp_path / "c.png").read_bytes().startswith(PNG_MAGIC)
    assert len((tmp_path / "h.csv").read_text().splitlines()) == 11


def test_a_checkpoint_beside_other_outputs_still_resumes(tiny, tmp_path):
    ckpt = tmp_path / "c.npz"
    args = ["--data-dir", tiny, *FAST, "--checkpoint", ckpt, "--save", tmp_path / "m.npz",
            "--history", tmp_path / "h.csv"]
    assert invoke(*args).exit_code == 0
    out = run_json(*args[:-4], "--epochs", "2", "--resume")
    assert out["iterations"] == 20


def test_plot_names_must_end_in_png(tiny, tmp_path):
    result = invoke("--data-dir", tiny, *FAST, "--plot", tmp_path / "c.svg")
    assert_one_error_line(result, 2, "c.svg", ".png")
    assert os.listdir(tmp_path) == []


def test_outputs_get_the_umask_permissions(tiny, tmp_path):
    """Written through temporary files, yet readable as an open() would make
    them (mkstemp's 0o600 would hide a shared CSV or plot from others)."""
    pytest.importorskip("matplotlib")
    old = os.umask(0o022)
    try:
        names = {"--save": "m.npz", "--history": "h.csv", "--plot": "c.png",
                 "--checkpoint": "k.npz"}
        args = [a for option, name in names.items() for a in (option, tmp_path / name)]
        assert invoke("--data-dir", tiny, *FAST, *args).exit_code == 0
    finally:
        os.umask(old)
    modes = {name: (tmp_path / name).stat().st_mode & 0o777 for name in names.values()}
    assert modes == dict.fromkeys(names.values(), 0o644)


def test_resume_without_a_checkpoint_file_exits_1(tiny, tmp_path):
    path = tmp_path / "ckpt.npz"
    result = invoke("--data-dir", tiny, *FAST, "--checkpoint", path, "--resume")
    assert_one_error_line(result, 1, str(path), "does not exist")


def test_an_existing_checkpoint_is_never_overwritten_without_resume(tiny, tmp_path):
    path = tmp_path / "ckpt.npz"
    assert invoke("--data-dir", tiny, *FAST, "--checkpoint", path).exit_code == 0
    before = path.read_bytes()
    result = invoke("--data-dir", tiny, *FAST, "--checkpoint", path)
    assert_one_error_line(result, 1, str(path), "already exists", "--resume")
    assert path.read_bytes() == before


def test_resume_with_other_settings_exits_1(tiny, tmp_path):
    path = tmp_path / "ckpt.npz"
    assert invoke("--data-dir", tiny, *FAST, "--checkpoint", path).exit_code == 0
    result = invoke("--data-dir", tiny, *FAST, "--lr", "0.1", "--checkpoint", path, "--resume")
    assert_one_error_line(result, 1, str(path), "lr=0.5", "lr=0.1")
    # Refused before training: no table is started for it.
    assert "resuming from" not in result.stdout and "train cost" not in result.stdout


def test_a_resume_with_nothing_left_to_run_says_so(tiny, tmp_path):
    path = tmp_path / "ckpt.npz"
    assert invoke("--data-dir", tiny, *FAST, "--checkpoint", path).exit_code == 0
    result = invoke("--data-dir", tiny, *FAST, "--checkpoint", path, "--resume")
    assert result.exit_code == 0
    assert f"resuming from {path}: nothing left to train (--epochs 1 already run)" in result.stdout
    assert "train cost" not in result.stdout and "test error" in result.stdout


def test_the_one_epoch_and_a_huge_cost_fit_the_log(tiny):
    result = invoke("--data-dir", tiny, *FAST)
    assert "1 epoch of 10 iterations" in result.stdout
    assert cli._cost(0.2658, 10) == "    0.2658"
    assert cli._cost(72915628796375690379264.0, 10) == " 7.292e+22"


def _train_that_compiles(real_train, seconds):
    """fastbp.train with a real (tiny) Numba compilation at its first progress
    call, and ``seconds`` more spent as if compiling."""
    import numba

    def train(*args, progress, **kwargs):
        def first(*a):
            if not first.done:
                first.done = True
                numba.njit(lambda x: x + 1)(1)
                with fastbp.compile_lock.compiling():
                    time.sleep(seconds)
            progress(*a)
        first.done = False
        return real_train(*args, progress=first, **kwargs)
    return train


def test_compiling_is_announced_and_left_out_of_the_epoch_seconds(tiny, monkeypatch):
    monkeypatch.setattr(cli, "train", _train_that_compiles(fastbp.train, 1.5))
    result = invoke("--data-dir", tiny, *FAST)
    assert result.exit_code == 0
    assert result.stderr.count("compiling kernels for this network") == 1
    seconds = float(re.search(r"^\s+1\s.*\s(\d+\.\d+)$", result.stdout, re.MULTILINE).group(1))
    assert seconds < 1
    total, compiling = map(float, re.search(r", (\d+\.\d) s \((\d+\.\d) s of it compiling "
                                            r"or loading kernels\)$", result.stdout,
                                            re.MULTILINE).groups())
    assert 1.5 <= compiling <= total
    out = run_json("--data-dir", tiny, *FAST)
    assert out["compile_seconds"] >= 1.5 and out["epoch_seconds"][0] < 1



@pytest.mark.skipif(backends.cuda_status()[0], reason="a CUDA GPU is available here")
def test_unavailable_cuda_exits_1(tiny):
    result = invoke("--data-dir", tiny, *FAST, "--device", "cuda")
    assert_one_error_line(result, 1, "--device cuda is unavailable")


def test_divergence_exits_1(tiny):
    result = invoke("--data-dir", tiny, *FAST, "--lr", "1e30")
    line = assert_one_error_line(result, 1, "training diverged", "smaller --lr than 1e+30")
    assert "keeps its last finite weights" not in line  # the API's terms, not the CLI's


def test_divergence_still_writes_the_curves_but_no_model(tiny, tmp_path):
    """The history up to the bad iteration is what shows why it diverged."""
    pytest.importorskip("matplotlib")
    paths = {option: tmp_path / name for option, name in
             (("--history", "h.csv"), ("--plot", "c.png"), ("--save", "m.npz"))}
    result = invoke("--data-dir", tiny, *FAST, "--lr", "1e30",
                    *[a for item in paths.items() for a in item])
    line = assert_one_error_line(result, 1, "training diverged",
                                 f"the model was not saved to {paths['--save']}")
    iteration = int(re.search(r"iteration (\d+)", line).group(1))
    with open(paths["--history"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == iteration and not math.isfinite(float(rows[-1]["batch_cost"]))
    assert paths["--plot"].read_bytes().startswith(PNG_MAGIC)
    assert not paths["--save"].exists()
    assert f"wrote {paths['--history']}, {paths['--plot']}" in result.stderr


def test_quiet_divergence_still_names_an_output_that_could_not_be_written(tiny, tmp_path,
                                                                         monkeypatch):
    def full_disk(file, **arrays):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(cli, "write_atomically", lambda path, *a, **k: full_disk(None))
    history = tmp_path / "h.csv"
    result = invoke("--data-dir", tiny, *FAST, "--lr", "1e30", "-q", "--history", history)
    assert_one_error_line(result, 1, "training diverged", "No space left on device")


# --- Ctrl-C ----------------------------------------------------------------

def interrupt_during_epoch(monkeypatch, epoch, step, deliver):
    """Make the run see Ctrl-C at (epoch, step): ``deliver`` is "signal" (a
    real SIGINT, which fastbp.train defers when checkpointing) or "raise"."""
    real_train = cli.train

    def train(*args, progress=None, **kwargs):
        def report(e, s, steps, history):
            progress(e, s, steps, history)
            if (e, s) == (epoch, step):
                if deliver == "signal":
                    signal.raise_signal(signal.SIGINT)
                else:
                    raise KeyboardInterrupt
        return real_train(*args, progress=report, **kwargs)

    monkeypatch.setattr(cli, "train", train)


@pytest.mark.usefixtures("ctrl_c_raises")
def test_ctrl_c_with_checkpoint_says_how_to_resume(tiny, tmp_path, monkeypatch):
    ckpt, model = tmp_path / "ckpt.npz", tmp_path / "resumed.npz"
    args = ["--data-dir", tiny, "--epochs", "3", "--hidden", "16", "--batch-size", "20",
            "--eval-every", "4", "--checkpoint", ckpt, "--save", model]
    with monkeypatch.context() as m:
        interrupt_during_epoch(m, epoch=1, step=6, deliver="signal")
        result = invoke(*args)
    assert result.exit_code == cli.EXIT_INTERRUPTED
    assert result.stderr.count("\n") == 1
    assert "(epoch 2, iteration 6 of 10)" in result.stderr  # chunks end at evaluations
    command = result.stderr.split("Resume with: ")[1].strip()
    words = shlex.split(command)
    assert words[0] == "fastbp-train" and words[-1] == "--resume"
    pairs = sorted(zip(words[1:-1:2], words[2:-1:2]))
    assert pairs == sorted(zip(map(str, args[::2]), map(str, args[1::2])))
    assert not model.exists()

    resumed = invoke(*words[1:])
    assert resumed.exit_code == 0, resumed.stderr
    straight = tmp_path / "straight.npz"
    assert invoke(*args[:-4], "--save", straight).exit_code == 0
    for (W1, b1), (W2, b2) in zip(fastbp.load(model).layers, fastbp.load(straight).layers):
        assert np.array_equal(W1, W2) and np.array_equal(b1, b2)


def test_ctrl_c_before_a_resumed_run_saves_says_how_to_resume(tiny, tmp_path, monkeypatch):
    """Interrupted while loading the data: the checkpoint is as it was, and
    the run can still be resumed (not "nothing was saved")."""
    ckpt = tmp_path / "ckpt.npz"
    args = ["--data-dir", tiny, *FAST, "--checkpoint", ckpt]
    assert invoke(*args).exit_code == 0
    before = ckpt.read_bytes()

    def interrupted(*_):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "_load_data", interrupted)
    result = invoke(*args[:-4], "--epochs", "2", *args[-2:], "--resume")
    assert result.exit_code == cli.EXIT_INTERRUPTED
    assert result.stderr.startswith(f"Interrupted: the checkpoint {ckpt} is unchanged "
                                    "(after epoch 1). Resume with: fastbp-train ")
    assert result.stderr.count("\n") == 1 and result.stderr.rstrip().endswith("--resume")
    assert ckpt.read_bytes() == before


def test_ctrl_c_without_checkpoint_says_nothing_was_saved(tiny, monkeypatch):
    interrupt_during_epoch(monkeypatch, epoch=0, step=10, deliver="raise")
    result = invoke("--data-dir", tiny, *FAST)
    assert result.exit_code == cli.EXIT_INTERRUPTED
    assert result.stderr.startswith("Interrupted: nothing was saved")
    assert result.stderr.count("\n") == 1


# --- data download through the command ----------------------------------------

def test_downloads_mnist_when_no_folder_is_given(tmp_path, monkeypatch):
    digests = write_tiny_mnist(tmp_path / "www")
    monkeypatch.setattr(datasets, "SHA256", digests)
    monkeypatch.delenv("FASTBP_DATA_DIR", raising=False)
    with http_server(tmp_path / "www") as (url, requests):
        monkeypatch.setenv("FASTBP_MNIST_MIRRORS", f"{closed_port_url()},{url}")
        out = run_json(*FAST)
    assert len(requests) == 4
    assert out["data_dir"] == datasets.cache_dir() == str(tmp_path / "cache" / "fastbp" / "mnist")
    assert sorted(os.listdir(out["data_dir"])) == sorted(s + ".gz" for s in digests)


def test_failed_download_exits_1_within_seconds(monkeypatch):
    monkeypatch.delenv("FASTBP_DATA_DIR", raising=False)
    dead = closed_port_url()
    monkeypatch.setenv("FASTBP_MNIST_MIRRORS", dead)
    started = time.perf_counter()
    result = invoke(*FAST)
    assert time.perf_counter() - started < 5
    assert_one_error_line(result, 1, dead, "train-images-idx3-ubyte.gz", "--data-dir",
                          "FASTBP_DATA_DIR")
    assert result.stdout == ""


# --- the installed command ---------------------------------------------------

def installed(name="fastbp-train"):
    path = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pip install -e .)")
    return path


def sh(*command):
    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=300,
                          env=env)


def test_installed_entry_point(tiny):
    exe = installed()
    helped = sh(exe, "--help")
    assert helped.returncode == 0 and "[default: 200]" in helped.stdout
    ran = sh(exe, "--data-dir", tiny, *FAST, "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["sizes"] == [784, 16, 10]
    failed = sh(sys.executable, "-m", "fastbp", "--data-dir", "/nonexistent/x")
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr == "Error: /nonexistent/x: MNIST folder does not exist\n"


def test_a_reader_going_away_does_not_lose_the_outputs(tiny, tmp_path):
    """``fastbp-train ... | head -2``: the pipe closes before the run ends;
    the run still finishes, saves, and reports no error."""
    model = tmp_path / "m.npz"
    proc = subprocess.Popen([sys.executable, "-m", "fastbp", "--data-dir", tiny, *FAST,
                             "--epochs", "3", "--save", str(model)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before its first line: every write to stdout fails
    stderr = proc.stderr.read()
    assert proc.wait(timeout=300) == 0, stderr
    assert stderr == ""
    assert fastbp.load(model).sizes == [784, 16, 10]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_progress_bar_on_a_terminal(tiny):
    """On a terminal each epoch shows a click progress bar, erased by its line."""
    import pty

    exe = installed()
    leader, follower = pty.openpty()
    env = dict(os.environ, OMP_WAIT_POLICY="passive", COLUMNS="100")
    proc = subprocess.Popen([exe, "--data-dir", tiny, "--epochs", "2", "--hidden", "16",
                             "--batch-size", "2"], stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=300) == 0
    out = b"".join(chunks).decode()
    assert "epoch 1/2" in out and "epoch 2/2" in out and "100%" in out
    assert re.search(r"\x1b\[2K\x1b\[\?25h\s+1\s", out)  # bar erased, then epoch 1's row
    assert "test error" in out


@pytest.mark.slow
def test_a_second_network_shape_survives_the_numba_cache(tiny):
    """Three runs on the suite's Numba cache: the default net, then logistic
    regression twice (the last one, at least, loads its kernels from the
    cache). This crashed with SIGSEGV (numba#8578: a cached serial kernel
    calling parallel ones, run before Numba's thread pool was launched). Not
    on a fresh cache: compiling every kernel again took 100 s of the suite,
    and test_reliability_concurrency.py already compiles into one and loads
    from it. With Numba 0.68 neither version fails without fastbp/__init__.py's
    early set_num_threads (checked), so this guards clean exits, not that fix."""
    exe = installed()
    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    for hidden in ("200", "0", "0"):
        ran = subprocess.run([exe, "--data-dir", tiny, "--epochs", "1", "--hidden", hidden,
                              "-q"], check=False, capture_output=True, text=True,
                             timeout=600, env=env)
        assert ran.returncode == 0, f"--hidden {hidden}: exit {ran.returncode} {ran.stderr}"


@pytest.mark.parametrize("args, optimizer", [
    (["--optimizer", "adam"], fastbp.Adam()),
    (["--optimizer", "nesterov", "--momentum", "0.8", "--lr", "0.1", "--alpha", "1e-3",
      "--lr-schedule", "invscaling"],
     fastbp.SGD(lr=0.1, momentum=0.8, nesterov=True, alpha=1e-3, schedule="invscaling")),
])
def test_optimizer_options_train_as_the_library_does(tiny, tmp_path, args, optimizer):
    path = tmp_path / "model.npz"
    out = run_json("--data-dir", tiny, *FAST, *args, "--save", path)
    assert (out["optimizer"], out["lr"], out["alpha"]) == (
        args[1], optimizer.lr, optimizer.alpha)
    Xtr, ytr, Xte, yte = datasets.load_folder(tiny)
    net = fastbp.Network([784, 16, 10], seed=0)
    fastbp.train(net, Xtr, ytr, optimizer=optimizer, batch_size=20, epochs=1,
                 validation=(Xte, yte), device="cpu")
    saved = fastbp.load(path)
    for (W, b), (W2, b2) in zip(saved.layers, net.layers):
        assert np.array_equal(W, W2) and np.array_equal(b, b2)


def test_the_training_line_names_the_optimizer(tiny):
    result = invoke("--data-dir", tiny, *FAST, "--optimizer", "momentum", "--alpha", "0.01")
    assert result.exit_code == 0, result.stderr
    assert "training SGD momentum 0.9 lr 0.5, alpha 0.01, batch 20" in result.stdout


def test_an_optimizer_value_click_lets_through_is_a_usage_error(tiny):
    result = invoke("--data-dir", tiny, *FAST, "--alpha", "inf")
    assert_one_error_line(result, 2, "--alpha", "inf")


def test_early_stopping_holds_out_training_images_and_trains_as_the_library_does(tiny,
                                                                                  tmp_path):
    path = tmp_path / "model.npz"
    args = ("--epochs", "30", "--hidden", "16", "--batch-size", "20", "--lr", "2",
            "--early-stopping", "--patience", "2", "--validation-fraction", "0.2")
    out = run_json("--data-dir", tiny, *args, "--save", path)
    assert out["early_stopping"]["patience"] == 2
    assert out["stopped_epoch"] is not None and out["stopped_epoch"] < 30
    assert len(out["held_out_cost"]) == out["stopped_epoch"]
    assert out["val_iteration"] == []  # the test set is not early stopping's
    assert out["iterations"] == out["stopped_epoch"] * 8  # 160 of 200 images, 20 a batch
    Xtr, ytr, _, _ = datasets.load_folder(tiny)
    net = fastbp.Network([784, 16, 10], seed=0)
    hist = fastbp.train(net, Xtr, ytr, lr=2, batch_size=20, epochs=30, device="cpu",
                        early_stopping=fastbp.EarlyStopping(patience=2,
                                                            validation_fraction=0.2))
    assert hist.stopped_epoch == out["stopped_epoch"] and hist.best_epoch == out["best_epoch"]
    for (W, b), (W2, b2) in zip(fastbp.load(path).layers, net.layers):
        assert np.array_equal(W, W2) and np.array_equal(b, b2)
    human = invoke("--data-dir", tiny, *args)
    assert f"early stopping after epoch {out['stopped_epoch']}" in human.stdout
    assert "20 % of the training images held out, patience 2 epochs" in human.stdout


@pytest.mark.parametrize("option", [["--patience", "3"], ["--validation-fraction", "0.2"]])
def test_early_stopping_settings_without_early_stopping_are_usage_errors(tiny, option):
    result = invoke("--data-dir", tiny, *FAST, *option)
    assert_one_error_line(result, 2, option[0], "--early-stopping")
