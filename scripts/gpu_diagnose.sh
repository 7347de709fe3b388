#!/usr/bin/env bash
# Focused GPU diagnosis (a lent machine, ~5 minutes): build, then
# 1. where a C++ exception out of an op segfaults the process (backtrace from
#    cuda-gdb, the only debugger on those machines),
# 2. which kernel stops with "misaligned address" on channels-last float64
#    max pooling (compute-sanitizer memcheck over torch's and our kernels),
# 3. the CUDA pooling tests that do not raise from C++.
# Results under $OUT (or ./gpu-out). Usage: bash scripts/gpu_diagnose.sh
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$REPO/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
cd "$REPO"
exec > >(tee -a "$OUT/log.txt") 2>&1
t0=$(date +%s)
stamp() { echo "[+$(( $(date +%s) - t0 ))s] $*"; }
env | grep -E "^(CC|CXX|CFLAGS|CXXFLAGS|LDFLAGS|LD_LIBRARY_PATH|LD_PRELOAD)=" || true

stamp "== build"
MAX_JOBS=16 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 \
  python3 -m pip install --no-build-isolation --no-deps -v . > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
so=$(cd /tmp && python3 -c "import d2l_ext._C as c; print(c.__file__)") && cp "$so" "$REPO/d2l_ext/"
grep -E "^(x86_64|/opt|g\+\+|c\+\+|gcc).*-shared" "$OUT/build.log" | head -2 | cut -c1-600
ldd "$so" | grep -E "stdc|gcc|gomp|c10|torch" 
python3 -c "import torch; print('torch', torch.__version__, 'cxx11 abi', torch.compiled_with_cxx11_abi())"
stamp "build done"

cat > /tmp/probe.py <<'PY'
import sys, torch, d2l_ext  # noqa: F401
x = torch.randn(4, 5, device=sys.argv[1])
try:
    torch.ops.d2l_ext.cross_entropy(x, torch.zeros(4, dtype=torch.long, device=x.device), None, 7, -100, 0.0)
except RuntimeError as e:
    print("raised:", str(e).splitlines()[0])
PY
stamp "== exception probe, plain"
python3 -X faulthandler /tmp/probe.py cpu; echo "rc=$?"
stamp "== exception probe under cuda-gdb"
timeout 90 cuda-gdb -q -batch -ex "set pagination off" -ex "set confirm off" -ex run -ex bt \
  --args python3 /tmp/probe.py cpu 2>&1 | grep -vE "^\[(New|Thread|Detaching)" | tail -45

cat > /tmp/cl_max.py <<'PY'
import itertools, torch, d2l_ext.functional as D
import torch.nn.functional as F
g = torch.Generator().manual_seed(0)
for C, (H, W), k, d, impl in itertools.product((1, 2, 3, 4), ((5, 7), (9, 6)), (2, 3), (1, 2), ("torch", "ours")):
    if d * (k - 1) + 1 > min(H, W):
        continue
    x = torch.randn(2, C, H, W, generator=g, dtype=torch.float64).cuda().contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    fn = F.max_pool2d if impl == "torch" else D.max_pool2d
    out = fn(x, k, 2, k // 2, d, True)
    out.backward(torch.ones_like(out))
    torch.cuda.synchronize()
print("done")
PY
stamp "== memcheck: channels-last float64 max pooling, torch's kernels and ours"
timeout 100 compute-sanitizer --tool memcheck --print-limit 4 python3 /tmp/cl_max.py 2>&1 | grep -vE "^=========     (Host|    |by thread|=)" | head -40

stamp "== CUDA pooling tests (no raw-op misuse / bad input cases)"
timeout ${TEST_TIMEOUT:-150} python3 -m pytest -q -p no:cacheprovider -n 16 tests/test_pooling.py \
  -k "cuda and not raw_op_misuse and not bad_inputs" > "$OUT/tests.txt" 2>&1
stamp "tests rc=$?"; grep -E "^FAILED|passed|failed|misaligned" "$OUT/tests.txt" | sort | uniq -c | sort -rn | head -30
stamp "done"
