#!/usr/bin/env bash
# Everything a lent GPU machine should run, in one go: build with CUDA, probe
# C++ exceptions from the ops, run the CUDA tests, the check table, the CUDA
# benchmarks and compute-sanitizer. Results go to $OUT (or ./gpu-out), at most
# 8 files (the device tool's limit). Usage: bash scripts/gpu_check.sh
# Knobs: TEST_FILTER (pytest -k, default "cuda"), BENCH_OPS, TEST_TIMEOUT,
# BENCH_TIMEOUT, SANITIZER_TIMEOUT, WITH_CMAKE=1 (LibTorch build + ctest).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$REPO/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
cd "$REPO"
LOG="$OUT/log.txt"
exec > >(tee -a "$LOG") 2>&1
t0=$(date +%s)
stamp() { echo "[+$(( $(date +%s) - t0 ))s] $*"; }

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c "import torch,sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
nvcc --version | tail -2
for c in gcc g++ c++ /opt/gcc/bin/g++; do command -v $c >/dev/null && echo "$c: $($c --version | head -1)"; done

# The system g++, not the image's CC/CXX (/opt/gcc wrappers): their build links
# libstdc++ statically (ldd shows none) and
# every C++ exception out of the CUDA op segfault the process (benchmarks/NOTES.md).
export CC=${D2L_CC:-gcc} CXX=${D2L_CXX:-g++}
stamp "== build (CC=$CC CXX=$CXX)"
MAX_JOBS=16 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} \
  python3 -m pip install --no-build-isolation --no-deps -v . > "$OUT/build.log" 2>&1
rc=$?
stamp "build rc=$rc"; grep -A8 "d2l_ext build configuration" "$OUT/build.log" || true
[ $rc -eq 0 ] || { tail -40 "$OUT/build.log"; exit 1; }
grep -iE "warning" "$OUT/build.log" | grep -v -i "deprecat" | head -10
# The installed package carries _C; put a copy beside the sources too, so that
# running from the tree (python -m benchmarks, pytest) imports the same build.
so=$(cd /tmp && python3 -c "import d2l_ext._C as c; print(c.__file__)") && cp "$so" "$REPO/d2l_ext/"
python3 -c "import d2l_ext; print('backend', d2l_ext.backend(), 'cuda kernels', d2l_ext.has_cuda_kernels())"

stamp "== exception probe (each in its own process; rc -11 = segfault)"
for dev in cpu cuda; do
  python3 - "$dev" <<'PY'
import sys, torch, d2l_ext  # noqa: F401
dev = sys.argv[1]
x = torch.randn(4, 5, device=dev)
for name, call in [
    ("cross_entropy bad reduction", lambda: torch.ops.d2l_ext.cross_entropy(x, torch.zeros(4, dtype=torch.long, device=dev), None, 7, -100, 0.0)),
    ("max_pool2d 2-D input", lambda: torch.ops.d2l_ext.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False)),
    ("rnn wrong hx shape", lambda: torch.ops.d2l_ext.rnn(x[None], x[:1, :3][None], None, [x, x], 0, False, 1, False, [])),
]:
    try:
        call(); print(dev, name, "-> no exception")
    except Exception as e:
        print(dev, name, "->", type(e).__name__, str(e).splitlines()[0][:100])
PY
  echo "probe $dev rc=$?"
done

stamp "== tests"
xdist=""; python3 -c "import xdist" 2>/dev/null && xdist="-n 12"
timeout ${TEST_TIMEOUT:-200} python3 -m pytest -q -p no:cacheprovider $xdist tests -k "${TEST_FILTER:-cuda}" \
  > "$OUT/tests.txt" 2>&1
stamp "tests rc=$?"; grep -E "passed|failed|FAILED|Error|crashed" "$OUT/tests.txt" | tail -30

stamp "== check"
timeout 60 python3 -m d2l_ext.cli check --device cuda 2>&1

stamp "== benchmarks"
timeout ${BENCH_TIMEOUT:-170} python3 -m benchmarks ${BENCH_OPS:-pooling conv rnn} --device cuda --min-run-time ${BENCH_MIN_RUN:-0.3} --out "$OUT" 2>&1 | tail -40

stamp "== compute-sanitizer memcheck on native CUDA value tests"
timeout ${SANITIZER_TIMEOUT:-75} compute-sanitizer --tool memcheck --error-exitcode 9 \
  python3 -m pytest -q -x -p no:cacheprovider tests/test_pooling.py tests/test_conv.py tests/test_rnn.py \
  -k "cuda and native and float32 and (matches_torch or zero_batch) and not hypothesis" \
  > "$OUT/memcheck.txt" 2>&1
stamp "memcheck rc=$?"; grep -E "ERROR SUMMARY|passed|failed|=========" "$OUT/memcheck.txt" | head -12

if [ -n "${WITH_CMAKE:-}" ]; then
stamp "== LibTorch (CMake) build with CUDA + ctest"
P=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
timeout 200 bash -c "cmake -S . -B /tmp/cmb -G Ninja -DCMAKE_PREFIX_PATH=$P -DD2L_EXT_WITH_CUDA=ON > /tmp/cmake.log 2>&1 \
  && cmake --build /tmp/cmb -j16 >> /tmp/cmake.log 2>&1 && ctest --test-dir /tmp/cmb --output-on-failure" 2>&1 | tail -8
fi
stamp "done"
