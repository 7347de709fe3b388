#!/usr/bin/env bash
# Everything a lent GPU machine should run, in one go: build with CUDA, run the
# whole test suite (CUDA cases included), the CUDA benchmarks and the check
# table. Results go to $OUT (or ./gpu-out). Usage: bash scripts/gpu_check.sh
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$REPO/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
cd "$REPO"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch,sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
  nvcc --version | tail -2
} 2>&1 | tee "$OUT/machine.txt"

echo "== build"
start=$(date +%s)
MAX_JOBS=16 FORCE_CUDA=1 python3 -m pip install --no-build-isolation --no-deps -v . > "$OUT/build.log" 2>&1
rc=$?
echo "build rc=$rc in $(( $(date +%s) - start ))s"; grep -A8 "d2l_ext build configuration" "$OUT/build.log" || true
[ $rc -eq 0 ] || { tail -40 "$OUT/build.log"; exit 1; }

# The installed package carries _C; put a copy beside the sources too, so that
# running from the tree (python -m benchmarks) imports the same build.
so=$(cd /tmp && python3 -c "import d2l_ext._C as c; print(c.__file__)") && cp "$so" "$REPO/d2l_ext/"
python3 -c "import d2l_ext; print('backend', d2l_ext.backend(), 'cuda kernels', d2l_ext.has_cuda_kernels())"

echo "== tests"
xdist=""; python3 -c "import xdist" 2>/dev/null && xdist="-n 8"
timeout 300 python3 -m pytest -q -p no:cacheprovider $xdist tests -k "${TEST_FILTER:-cuda}" \
  --junitxml="$OUT/tests.xml" > "$OUT/tests.txt" 2>&1
echo "tests rc=$?"; grep -E "passed|failed|FAILED|Error" "$OUT/tests.txt" | tail -25

echo "== check"
python3 -m d2l_ext.cli check --device cuda 2>&1 | tee "$OUT/check.txt"

echo "== benchmarks"
timeout 240 python3 -m benchmarks ${BENCH_OPS:-} --device cuda --out "$OUT" 2>&1 | tail -30

if [ -n "${SKIP_CMAKE:-}" ]; then echo "== CMake skipped"; else
echo "== LibTorch (CMake) build with CUDA + ctest"
P=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
timeout 200 bash -c "cmake -S . -B /tmp/cmb -G Ninja -DCMAKE_PREFIX_PATH=$P -DD2L_EXT_WITH_CUDA=ON > $OUT/cmake.log 2>&1 \
  && cmake --build /tmp/cmb -j16 >> $OUT/cmake.log 2>&1 && ctest --test-dir /tmp/cmb --output-on-failure" 2>&1 | tail -8
fi

echo "== compute-sanitizer memcheck on native CUDA tests"
timeout ${SANITIZER_TIMEOUT:-150} compute-sanitizer --tool memcheck --error-exitcode 9 \
  python3 -m pytest -q -x -p no:cacheprovider tests/test_cross_entropy.py \
  -k "cuda and native and (test_matches_torch or test_empty_batch or test_many_classes) and not bfloat16" \
  > "$OUT/memcheck.txt" 2>&1
echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|passed|failed" "$OUT/memcheck.txt" | tail -5
