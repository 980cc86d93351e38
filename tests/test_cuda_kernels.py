"""kernels/cuda.py keeps in step with kernels/cpu.py, and its kernels pass
tests/cuda_sim/sim_kernels.py under Numba's CUDA simulator."""

import ast
import importlib.util
import inspect
import pathlib

from cuda_sim.launcher import run_simulated

KERNELS = pathlib.Path(importlib.util.find_spec("fastbp.kernels").submodule_search_locations[0])
# Where a CPU kernel returns a scalar, its CUDA twin writes it into one more,
# last, argument with one of these names (kernels/cuda.py states the rule).
SCALAR_OUTPUTS = {"out_cost", "out_wrong", "out_done"}
# train_steps' work buffers are the device's own (the CPU loop keeps W^T,
# W in panels, non-zero lists and the compressed training rows, the GPU loop
# gradient arrays); every other argument agrees.
DEVICE_WORK = {"train_steps": {"WT", "panels", "idx", "val", "count", "rows_csr", "dWs",
                               "dbs"}}


def public_kernels(module):
    """name -> (parameter names, returns a value) for each name in __all__,
    read from the source, so that no module has to be imported."""
    tree = ast.parse((KERNELS / f"{module}.py").read_text())
    names = next(ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and node.targets[0].id == "__all__")
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
        own = DEVICE_WORK.get(name, set())
        cpu_args = [a for a in cpu_args if a not in own]
        cuda_args = [a for a in cuda_args if a not in own]
        assert not cuda_returns, f"cuda.{name} returns a value; kernels cannot"
        if returns:
            assert cuda_args[:-1] == cpu_args, name
            assert cuda_args[-1] in SCALAR_OUTPUTS, f"cuda.{name}: last argument {cuda_args[-1]}"
        else:
            assert cuda_args == cpu_args, name


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
