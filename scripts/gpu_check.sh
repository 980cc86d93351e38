#!/usr/bin/env bash
# The one prepared check for the GPU machine (see ../shared/PERF.md): install,
# run the CUDA tests on the real GPU (no simulator), then time seconds per
# epoch of fastbp "cuda" against fastbp "cpu", PyTorch and JAX; the table of
# scripts/bench_cuda.py is printed last. Exit status: that of the tests.
#
# Before the run, on the machine with network (the GPU machine has none),
# fill .whl/ in the repository root and name it in `carry`:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 -d .whl numpy==2.4.6
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl \
#     pytest pluggy iniconfig packaging pygments   # only if the machine lacks pytest
# and copy MNIST to .data/mnist (also in .git/info/exclude) to time on real data.
# Then: run(command="bash scripts/gpu_check.sh", carry=[".whl", ".data"], timeout_s=600).
set -euo pipefail
cd "$(dirname "$0")/.."

SITE=/tmp/site
rm -rf "$SITE"
mkdir -p "$SITE"
python3 -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl
# fastbp laid out as installed: kernels/ becomes fastbp.kernels (no build step).
cp -r fastbp "$SITE/fastbp"
cp -r kernels "$SITE/fastbp/kernels"
# PYTHONSAFEPATH: the source tree's ./fastbp (without kernels/) must not
# shadow the installed copy when python runs from the repository root.
export PYTHONPATH="$SITE" PYTHONSAFEPATH=1 NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0
unset NUMBA_ENABLE_CUDASIM
for dir in .data/mnist shared/data/mnist ../shared/data/mnist; do
  if [ -z "${FASTBP_DATA_DIR:-}" ] && [ -d "$dir" ]; then
    FASTBP_DATA_DIR="$(cd "$dir" && pwd)"
    export FASTBP_DATA_DIR
  fi
done

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 - <<'EOF'
import numba, numpy
from numba import cuda
from fastbp import backends
print("numpy", numpy.__version__, "numba", numba.__version__, "cuda", backends.cuda_status())
print(cuda.get_current_device().name)
EOF

echo "== CUDA tests on the GPU (tests/cuda_sim without the simulator)"
status=0
# pytest-timeout (in the GPU image) ends a hung kernel's test instead of the run.
per_test=()
python3 -c "import pytest_timeout" 2>/dev/null && per_test=(--timeout=120 --timeout-method=thread)
timeout "${FASTBP_GPU_TEST_S:-330}" python3 -m pytest -q -p no:cacheprovider --tb=short -rfE \
  "${per_test[@]}" \
  -W "ignore:Host array used in CUDA kernel" \
  tests/cuda_sim/sim_kernels.py tests/cuda_sim/sim_train.py || status=$?
echo "CUDA tests: exit $status"

echo "== Seconds per epoch (data: ${FASTBP_DATA_DIR:-random, MNIST-shaped})"
timeout "${FASTBP_GPU_BENCH_S:-210}" python3 scripts/bench_cuda.py --epochs 3 \
  --threads 64,128,256 \
  || echo "bench_cuda.py: exit $?"
exit "$status"
