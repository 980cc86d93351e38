"""kernels/cuda.py keeps in step with kernels/cpu.py, and its kernels pass
tests/cuda_sim/sim_kernels.py under Numba's CUDA simulator."""

import ast
import importlib.util
import inspect
import pathlib

from cuda_sim.launcher import run_simulated
from fastbp.kernels.registry import TWINS

KERNELS = pathlib.Path(importlib.util.find_spec("fastbp.kernels").submodule_search_locations[0])
# Where a CPU kernel returns a scalar, its CUDA twin writes it into one more,
# last, argument with one of these names (kernels/cuda.py states the rule).
SCALAR_OUTPUTS = {"out_cost", "out_wrong", "out_done"}


def public_kernels(module):
    """name -> (parameter names, returns a value) for each of the registry's
    twins, read from the module's source (no kernel module imported)."""
    tree = ast.parse((KERNELS / f"{module}.py").read_text())
    names = list(TWINS)
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    out = {}
    for name in names:
        node = functions[name]
        returns = any(isinstance(sub, ast.Return) and sub.value is not None
                      for sub in ast.walk(node))
        out[name] = ([a.arg for a in node.args.args], returns)
    return names, out


def test_cuda_twins_have_the_cpu_names_and_signatures():
    cpu_names, cpu = public_kernels("cpu")
    cuda_names, cuda = public_kernels("cuda")
    assert cuda_names == cpu_names
    for name in cpu_names:
        cpu_args, returns = cpu[name]
        cuda_args, cuda_returns = cuda[name]
        assert not cuda_returns, f"cuda.{name} returns a value; kernels cannot"
        if returns:
            assert cuda_args[:-1] == cpu_args, name
            assert cuda_args[-1] in SCALAR_OUTPUTS, f"cuda.{name}: last argument {cuda_args[-1]}"
        else:
            assert cuda_args == cpu_args, name
    # The compiled loop takes a few named structures (kernels/arguments.py).
    assert len(cpu["train_steps"][0]) <= 8 and len(cuda["train_steps"][0]) <= 8


def test_cuda_module_imports_without_a_gpu():
    from fastbp.kernels import cpu, cuda
    assert cuda.__all__ == cpu.__all__
    _, parsed = public_kernels("cuda")
    for name in cuda.__all__:
        params = list(inspect.signature(getattr(cuda, name).py_func).parameters)
        assert params == parsed[name][0], name
    assert cuda.COOPERATIVE <= set(cuda.__all__)
    assert cuda.THREADS >= 1


def test_cuda_kernels_under_the_simulator():
    run_simulated("sim_kernels.py")
