#!/usr/bin/env bash
# The CPU kernels under AddressSanitizer and UndefinedBehaviorSanitizer: builds
# d2l_ext._C with D2L_EXT_SANITIZE=address,undefined (CPU only) in a scratch
# copy of the tree, then runs the CPU tests against that build with the ASan
# runtime preloaded (python itself is not instrumented). Any report fails the run.
#
#   bash scripts/sanitize_cpu.sh [pytest args]     (default: tests -k "not cuda")
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git -C "$root" ls-files -z | (cd "$root" && xargs -0 cp --parents -t "$work")
cd "$work"
D2L_EXT_SANITIZE=address,undefined D2L_EXT_NO_CUDA=1 MAX_JOBS="${MAX_JOBS:-2}" \
  python setup.py -q build_ext --inplace > build.log 2>&1 || { tail -30 build.log; exit 1; }
asan="$(${CXX:-c++} -print-file-name=libasan.so)"
ubsan="$(${CXX:-c++} -print-file-name=libubsan.so)"
# Leak checking is off: the interpreter and torch keep allocations alive at exit.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
if [ $# -eq 0 ]; then set -- tests -k "not cuda"; fi
# The instrumented build must be the one imported (not an editable install of the real tree).
LD_PRELOAD="$asan $ubsan" PYTHONPATH="$work" python -c '
import d2l_ext._C as c, sys
print("d2l_ext._C from", c.__file__)
sys.exit(0 if c.__file__.startswith(sys.argv[1]) else 1)' "$work"
# (grep reads all of nm's output: grep -q would stop early, and under pipefail
# nm's SIGPIPE would read as "not instrumented")
if ! nm -D "$work"/d2l_ext/_C*.so | grep __asan_report > /dev/null; then echo "build is not instrumented"; exit 1; fi
LD_PRELOAD="$asan $ubsan" D2L_EXT_BACKEND=native PYTHONPATH="$work" \
  python -m pytest -q -p no:cacheprovider -x "$@"
