"""A real ``pip install`` of fastbp: Numba's cache stays out of the installed
package (pip does not own those files: an uninstall left them behind, and
the left-over folder shadowed a later editable install)."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Compiles one small cached kernel, and says where fastbp was imported from.
USE = ("import numpy as np, fastbp; from fastbp.kernels import cpu; "
       "assert cpu.mean(np.ones(3)) == 1; print(fastbp.__file__)")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    # As a user would: pip's own isolated build, from a copy of this checkout.
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-warn-script-location",
         "--target", str(target), str(ROOT)],
        capture_output=True, text=True, timeout=600, check=False, cwd=target)
    assert done.returncode == 0, done.stderr
    return target


def run_installed(target, tmp_path, **env):
    clean = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH")}
    clean.update(PYTHONPATH=str(target), XDG_CACHE_HOME=str(tmp_path / "xdg"), **env)
    done = subprocess.run([sys.executable, "-c", USE], env=clean, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert pathlib.Path(done.stdout.strip()).is_relative_to(target)  # not this checkout


def cache_files(folder):
    return sorted(p for p in pathlib.Path(folder).rglob("*") if p.suffix in (".nbi", ".nbc"))


def test_numba_s_cache_goes_to_the_user_s_cache_folder_not_the_package(installed, tmp_path):
    run_installed(installed, tmp_path)
    assert cache_files(installed) == []
    assert cache_files(tmp_path / "xdg" / "fastbp" / "numba")


def test_numba_cache_dir_still_wins(installed, tmp_path):
    run_installed(installed, tmp_path, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    assert cache_files(installed) == []
    assert cache_files(tmp_path / "numba")
    assert not (tmp_path / "xdg").exists()
