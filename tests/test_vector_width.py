"""512-bit vectors: for the panel tiles only by default, everywhere on request where the CPU
has AVX-512 and nothing else decided, nowhere with FASTBP_VECTOR_BITS=256."""

import os
import subprocess
import sys
import textwrap

import llvmlite.binding as llvm
import pytest
from fastbp.kernels import vector_width

AVX512 = "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")

# A fresh process: import fastbp (which sets the width before its first
# kernel), then report the setting and the registers a new vectorised loop uses.
PROBE = textwrap.dedent("""
    import re
    import numpy as np
    import fastbp
    from numba import njit
    from fastbp.kernels import vector_width

    @njit(fastmath=True)
    def axpy(out, a, x):
        for j in range(out.shape[0]):
            out[j] += a * x[j]

    out = np.zeros(200, np.float32)
    axpy(out, np.float32(2), np.ones(200, np.float32))
    assert out[199] == 2
    asm = next(iter(axpy.inspect_asm().values()))
    fma = set(re.findall(r"vfmadd\\w+\\s+[^\\n]*?%([xyz])mm", asm))
    print(vector_width.in_effect(), "".join(sorted(fma)) or "-", vector_width.available())
""")


def probe(**env):
    full = {k: v for k, v in os.environ.items()
            if k not in ("NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME", vector_width.ENV)}
    full.update(env)
    done = subprocess.run([sys.executable, "-c", PROBE], env=full, capture_output=True,
                          text=True, timeout=300, check=False)
    return done.returncode, done.stdout.split(), done.stderr


def test_on_request_512_bit_vectors_exactly_where_the_cpu_has_avx512():
    rc, out, err = probe(**{vector_width.ENV: "512"})
    assert rc == 0, err
    if AVX512:
        assert out[0] == "True" and "z" in out[1]  # xmm/ymm too, in the loop's tail
    else:
        assert out[0] == "False" and "z" not in out[1]
    assert out[2] == str(AVX512)  # the panel tiles too


@pytest.mark.parametrize("setting", [{}, {vector_width.ENV: ""}])
def test_by_default_llvm_s_own_choice_for_this_cpu_stays(setting):
    # LLVM's choice is the CPU's: ymm on Intel's AVX-512 cores, zmm on AMD Zen 4.
    # Naming the host's own features (nothing added) shows what it picks here.
    rc, llvm_choice, err = probe(NUMBA_CPU_FEATURES=llvm.get_host_cpu_features().flatten())
    assert rc == 0, err
    rc, out, err = probe(**setting)
    assert rc == 0, err
    assert out[0] == "False" and out[1] == llvm_choice[1]
    assert out[2] == str(AVX512)  # the panel tiles still ask for 512-bit vectors


@pytest.mark.parametrize("setting", [{vector_width.ENV: "256"}, {vector_width.ENV: " 256 "}])
def test_256_keeps_512_bit_vectors_out_everywhere_on_any_vendor(setting):
    rc, out, err = probe(**setting)
    assert rc == 0, err
    assert out[0] == "False" and "z" not in out[1]
    if AVX512:
        assert "y" in out[1]
    assert out[2] == "False"  # the tiles declined too


def without_avx512():
    """Numba's settings for an AVX2 CPU (Haswell) on this machine: the name
    alone keeps the host's features, so every AVX-512 feature is turned off."""
    features = ",".join("-" + f[1:] if f.startswith("+avx512") else f
                        for f in llvm.get_host_cpu_features().flatten().split(","))
    return {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": features}


@pytest.mark.parametrize("setting", [{}, {vector_width.ENV: "256"}, {vector_width.ENV: "512"}])
def test_a_cpu_without_avx512_never_gets_512_bit_vectors(setting):
    rc, out, err = probe(**without_avx512(), **setting)
    assert rc == 0, err
    assert out[0] == "False" and out[2] == "False"  # no tiles either
    assert "y" in out[1] and "z" not in out[1]  # AVX2's 256-bit multiply-adds (xmm in the tail)


def test_a_user_s_prefer_256_bit_declines_the_tiles_512_bit_vectors():
    features = llvm.get_host_cpu_features().flatten() + ",+prefer-256-bit"
    rc, out, err = probe(NUMBA_CPU_FEATURES=features)
    assert rc == 0, err
    assert out[0] == "False" and out[2] == "False"


def test_user_chosen_numba_features_win():
    features = llvm.get_host_cpu_features().flatten()
    rc, out, err = probe(NUMBA_CPU_FEATURES=features, **{vector_width.ENV: "512"})
    assert rc == 0, err
    assert out[0] == "False"


def test_a_bad_setting_warns_naming_the_variable_and_keeps_the_default():
    rc, out, err = probe(**{vector_width.ENV: "1024"})
    assert rc == 0, err
    assert ("RuntimeWarning: FASTBP_VECTOR_BITS must be 256 or 512, not '1024': using the default"
            in err)
    assert out[0] == "False" and out[2] == str(AVX512)  # the default: 512-bit tiles only


def test_a_bad_setting_leaves_the_command_line_working():
    env = dict(os.environ, **{vector_width.ENV: "foo"})
    done = subprocess.run([sys.executable, "-m", "fastbp", "--help"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and "--hidden" in done.stdout
    assert "Traceback" not in done.stderr and "not 'foo'" in done.stderr


def test_too_late_changes_nothing(monkeypatch):
    # This process has made its CPU target already (fastbp's kernels are
    # decorated): even asked for, with nothing else deciding, it stays.
    from numba.core import config
    monkeypatch.setenv(vector_width.ENV, "512")
    monkeypatch.setattr(config, "CPU_FEATURES", None)
    monkeypatch.setattr(config, "CPU_NAME", None)
    assert vector_width.allow_512_bit() is False
    assert config.CPU_FEATURES is None


@pytest.mark.skipif(not AVX512, reason="the CPU has no AVX-512")
def test_this_process_runs_with_the_setting_it_was_given():
    # The suite itself runs with the default unless FASTBP_VECTOR_BITS=512.
    wanted = os.environ.get(vector_width.ENV, "256").strip() == "512" and \
        "NUMBA_CPU_FEATURES" not in os.environ and "NUMBA_CPU_NAME" not in os.environ
    assert vector_width.in_effect() is wanted
