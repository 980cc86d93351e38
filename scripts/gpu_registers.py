"""On a GPU: kernels.cuda.train_steps by register cap x block size.

    python scripts/gpu_registers.py      # MNIST from $FASTBP_DATA_DIR, else random data

For each (THREADS, TRAIN_STEPS_REGISTERS) it prints s/epoch of Example 6.2
(600 steps in chunks of 50, as fastbp.train runs them; the median of 2 after a
compiling epoch), the registers and local memory per thread, the resident
grid, and whether the weights after 3 epochs are bitwise those of the first
cap at that block size (they should be: a cap changes no arithmetic).
Variants are compiled from kernels/cuda.py's source with the setting changed.
"""
import hashlib, os, re, statistics, time, types
import numpy as np
import fastbp
from fastbp import cuda_backend
from fastbp.kernels import cuda as K
from fastbp.train import epoch_order

SRC = open(K.__file__).read()
SETTING = re.compile(r"^TRAIN_STEPS_REGISTERS = .*$", re.M)
assert SETTING.search(SRC), "kernels/cuda.py lost its TRAIN_STEPS_REGISTERS setting"

def variant(regs):
    mod = types.ModuleType(f"fastbp.kernels.cuda_r{regs}")
    mod.__package__ = "fastbp.kernels"
    exec(compile(SETTING.sub(f"TRAIN_STEPS_REGISTERS = {regs}", SRC), K.__file__, "exec"),
         mod.__dict__)
    return mod

d = os.environ.get("FASTBP_DATA_DIR")
if d:
    X, y = fastbp.datasets.mnist(d)[:2]
else:
    rng = np.random.default_rng(0)
    X = rng.random((60000, 784), dtype=np.float32); X[X < 0.81] = 0
    y = rng.integers(0, 10, 60000)
n, steps, chunk = X.shape[0], 600, 50
SMALL = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
if SMALL:
    X, y, steps, chunk = np.ascontiguousarray(X[:40, :37]), y[:40] % 2, 4, 2
    n = 40
base = {}
for threads, regs in [(128, None), (128, 128), (128, 96), (128, 80), (128, 64), (128, 48),
                      (256, None), (256, 64), (64, 64), (64, None)][:2 if SMALL else None]:
    try:
        mod = variant(regs)
        mod.THREADS = 8 if SMALL else threads
        cuda_backend.kernels = mod
        net = fastbp.Network([37, 7, 2] if SMALL else [784, 200, 10], seed=0)
        Ws = [W.copy() for W, b in net.layers]; bs = [b.copy() for W, b in net.layers]
        st = cuda_backend.CudaStepper(net, Ws, bs, X, y, 10 if SMALL else 100)
        costs, errors = np.empty(chunk), np.empty(chunk)
        times, last = [], None
        for epoch in range(3):
            order = epoch_order(0, epoch, n)
            t = time.perf_counter()
            for first in range(0, steps, chunk):
                done = st.run(order, first, chunk, 0.5, costs, errors)
                assert done == chunk, done
            times.append(time.perf_counter() - t)
        st.sync()
        digest = hashlib.sha256(b"".join(a.tobytes() for a in Ws + bs)).hexdigest()[:10]
        base.setdefault(threads, digest)
        try:
            kern = next(iter(mod.train_steps.overloads.values()))
            info = f"regs {kern.regs_per_thread} local {kern.local_mem_per_thread} B"
        except Exception as exc:
            info = f"(no register info: {type(exc).__name__})"
        print(f"threads {threads:4d} cap {str(regs):5s} {info} blocks {st.blocks}  "
              f"{statistics.median(times[1:]):.4f} s/epoch {[round(x, 4) for x in times]} "
              f"cost {costs[-1]:.4f} weights {digest} same {digest == base[threads]}", flush=True)
    except Exception as exc:
        print(f"threads {threads:4d} cap {regs}: FAILED {type(exc).__name__}: {str(exc)[:300]}", flush=True)
cuda_backend.kernels = K
