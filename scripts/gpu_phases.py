"""On a GPU: where an SGD step of kernels.cuda.train_steps spends its time.

    python scripts/gpu_phases.py

Times 600 steps (Example 6.2 shapes, random MNIST-like data) of variants
with one phase removed; the difference to "full" is that phase's cost.

Variants are made from kernels/cuda.py's source: an AST pass drops the
named device-function calls from train_steps (and its stop on a non-finite
cost, so that garbage from a dropped phase does not end the run early).
Results of the variants are meaningless; only their times are read.
"""
import ast, os, statistics, sys, time, types
import numpy as np
import fastbp
from fastbp import cuda_backend
from fastbp.kernels import cuda as K
from fastbp.train import epoch_order

SMALL = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
SRC = open(K.__file__).read()

class Drop(ast.NodeTransformer):
    def __init__(self, patterns, replace):
        self.patterns, self.replace, self.inside = patterns, replace, False
    def visit_FunctionDef(self, node):
        if node.name != "train_steps":
            return node
        self.inside = True
        self.generic_visit(node)
        return node
    def visit_Expr(self, node):
        text = ast.unparse(node)
        for old, new in self.replace.items():
            if text.startswith(old):
                return ast.parse(new).body[0]
        if any(text.startswith(p) for p in self.patterns):
            return ast.Pass()
        return node
    def visit_If(self, node):
        self.generic_visit(node)
        if "isfinite(batch_cost[s])" in ast.unparse(node.test):
            node.test = ast.Constant(False)
        return node

def variant(name, patterns=(), replace=None):
    tree = Drop(patterns, replace or {}).visit(ast.parse(SRC))
    ast.fix_missing_locations(tree)
    mod = types.ModuleType("fastbp.kernels.cuda_" + name.replace(" ", "_"))
    mod.__package__ = "fastbp.kernels"
    exec(compile(tree, K.__file__, "exec"), mod.__dict__)
    return mod

ALL = ["_forward_tiles(", "_loss_block(", "_weights_items(", "_input_activation_items(",
       "_update_items("]
VARIANTS = [
    ("full", []),
    ("no forward layer 0", ["_forward_tiles(Zs[0]"]),
    ("no forward layer 1", ["_forward_tiles(Zs[l]"]),
    ("no loss block", ["_loss_block("]),
    ("no dW layer 0", ["_weights_items(dWs[0]"]),
    ("no dW layer 1", ["_weights_items(dWs[l]"]),
    ("no dQ/dZ layer 0", ["_input_activation_items("]),
    ("no updates", ["_update_items("]),
    ("barriers only", ALL),
]
# Not "no gather": its labels would be uninitialised device memory, an index
# out of bounds in the loss, which poisons the CUDA context for what follows.
REPLACE = ("forward layer 0 by _forward_items",
           {"_forward_tiles(Zs[0]": "_forward_items(Zs[0][:nb], Qs[0][:nb], Xb[:nb], Ws[0], bs[0], h, t0, stride)"})

def main():
    sizes, n, steps, chunk = ([784, 200, 10], 60000, 600, 50) if not SMALL else ([37, 7, 2], 40, 4, 2)
    rng = np.random.default_rng(0)
    X = rng.random((n, sizes[0]), dtype=np.float32); X[X < 0.81] = 0
    y = rng.integers(0, sizes[-1], n)
    rows = []
    todo = [(name, variant(name, pats)) for name, pats in VARIANTS]
    todo.append((REPLACE[0], variant("items", (), REPLACE[1])))
    for threads in ([128] if not SMALL else [4]):
        K.THREADS = threads
        for name, mod in todo:
            mod.THREADS = threads
            cuda_backend.kernels = mod
            net = fastbp.Network(sizes, seed=0)
            Ws = [W.copy() for W, b in net.layers]; bs = [b.copy() for W, b in net.layers]
            try:
                st = cuda_backend.CudaStepper(net, Ws, bs, X, y, 100 if not SMALL else 10)
                costs, errors = np.empty(chunk), np.empty(chunk)
                times = []
                for epoch in range(3 if not SMALL else 1):
                    order = epoch_order(0, epoch, n)
                    t = time.perf_counter()
                    for first in range(0, steps, chunk):
                        st.run(order, first, chunk, 0.5, costs, errors)
                    times.append(time.perf_counter() - t)
                med = statistics.median(times[1:] or times)
                rows.append((name, med))
                print(f"{threads:4d} {name:36s} {med * 1e6 / steps:8.1f} us/step  epochs {[round(x, 4) for x in times]}", flush=True)
            except Exception as exc:
                print(f"{threads:4d} {name:36s} FAILED {type(exc).__name__}: {str(exc)[:300]}", flush=True)
    cuda_backend.kernels = K

main()
