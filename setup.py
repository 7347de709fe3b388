"""Build d2l_ext._C: the CPU kernels always, the CUDA kernels when torch and a toolkit allow.

Environment variables:
  FORCE_CUDA=1            a missing CUDA toolkit (or a CPU-only torch) is an error
  D2L_EXT_NO_CUDA=1       build the CPU kernels only
  CUDA_HOME               toolkit root (the folder holding bin/nvcc and lib64/libcudart.so)
  TORCH_CUDA_ARCH_LIST    architectures; default: the visible GPUs', else "8.0;9.0+PTX"
  D2L_EXT_DEBUG=1         -O0 -g
  D2L_EXT_SANITIZE=address,undefined
                          compile and link the C++ code with these -fsanitize= checks (-O1 -g;
                          run with the ASan runtime preloaded: scripts/sanitize_cpu.sh)
  MAX_JOBS                parallel compile jobs (ninja)
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _is_toolkit_root(path: str | None) -> bool:
    return bool(path) and os.path.isfile(os.path.join(path, "bin", "nvcc")) and bool(
        glob.glob(os.path.join(path, "lib*", "libcudart.so*"))
    )


def _find_cuda_home() -> str | None:
    """The CUDA toolkit root, found without trusting where `nvcc` on PATH lives.

    On some machines `nvcc` on PATH is a wrapper script or a link outside the
    toolkit, so torch's guess (the folder above it) has no lib64/libcudart.so
    and linking fails. We take the first candidate that really is a toolkit.
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = os.path.realpath(nvcc)
        candidates.append(os.path.dirname(os.path.dirname(real)))
        # A wrapper script that execs the real compiler: read the path it names.
        try:
            with open(real, encoding="utf-8", errors="ignore") as f:
                head = f.read(4096)
            for token in head.split():
                if token.endswith("/bin/nvcc") and os.path.isfile(token):
                    candidates.append(os.path.dirname(os.path.dirname(token)))
        except OSError:
            pass
    candidates.append("/usr/local/cuda")
    candidates.extend(sorted(glob.glob("/usr/local/cuda-*"), reverse=True))
    for c in candidates:
        if _is_toolkit_root(c):
            return os.path.realpath(c)
    return None


# torch.utils.cpp_extension reads CUDA_HOME when it is imported, so settle it first.
_cuda_home = None if _flag("D2L_EXT_NO_CUDA") else _find_cuda_home()
if _cuda_home:
    os.environ["CUDA_HOME"] = _cuda_home

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _nvidia_wheel_includes() -> list[str]:
    """Header folders of the nvidia-* wheels that a CUDA torch build depends on."""
    try:
        import nvidia  # type: ignore[import-not-found]
    except ImportError:
        return []
    found = []
    for base in getattr(nvidia, "__path__", []):
        for inc in sorted(glob.glob(os.path.join(base, "*", "include"))):
            if os.path.isfile(os.path.join(inc, "cusparse.h")) or os.path.isfile(
                os.path.join(inc, "cublas_v2.h")
            ):
                found.append(inc)
    return found


def _want_cuda() -> tuple[bool, str]:
    if _flag("D2L_EXT_NO_CUDA"):
        return False, "D2L_EXT_NO_CUDA=1"
    if torch.version.cuda is None:
        reason = f"torch {torch.__version__} is a CPU-only build"
    elif not _cuda_home:
        reason = "no CUDA toolkit found (set CUDA_HOME)"
    else:
        return True, f"torch CUDA {torch.version.cuda}, toolkit at {_cuda_home}"
    if _flag("FORCE_CUDA"):
        sys.exit(f"d2l_ext: FORCE_CUDA=1 but cannot build CUDA kernels: {reason}")
    return False, reason


def _extension():
    debug = _flag("D2L_EXT_DEBUG")
    sanitize = os.environ.get("D2L_EXT_SANITIZE", "").strip()
    opt = ["-O0", "-g"] if debug else ["-O1", "-g"] if sanitize else ["-O3"]
    with_cuda, why = _want_cuda()
    sources = ["csrc/ops.cpp", "csrc/autograd.cpp", "csrc/rnn.cpp", "csrc/python_module.cpp"]
    sources += sorted(glob.glob("csrc/cpu/*.cpp"))
    san = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer"] if sanitize else []
    cxx = opt + ["-fopenmp"] + san
    define_macros: list[tuple[str, str | None]] = []
    kwargs = dict(
        name="d2l_ext._C",
        sources=sources,
        include_dirs=[str(ROOT / "csrc")],
        extra_compile_args={"cxx": cxx},
        extra_link_args=["-fopenmp"] + san,
        define_macros=define_macros,
    )
    if with_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            visible = torch.cuda.is_available() and torch.cuda.device_count() > 0
            if not visible:
                os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST
        cuda_sources = sorted(glob.glob("csrc/cuda/*.cpp")) + sorted(glob.glob("csrc/cuda/*.cu"))
        kwargs["sources"] = sources + cuda_sources
        kwargs["include_dirs"] = kwargs["include_dirs"] + _nvidia_wheel_includes()
        kwargs["extra_compile_args"]["nvcc"] = opt + ["-lineinfo", "--expt-relaxed-constexpr"]
        kwargs["define_macros"] = define_macros + [("D2L_EXT_WITH_CUDA", None)]
        ext = CUDAExtension(**kwargs)
    else:
        ext = CppExtension(**kwargs)
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST", "(device default)") if with_cuda else "-"
    print(
        "d2l_ext build configuration:\n"
        f"  torch            {torch.__version__} (CUDA {torch.version.cuda})\n"
        f"  python           {sys.version.split()[0]}\n"
        f"  CUDA kernels     {'yes' if with_cuda else 'no'} ({why})\n"
        f"  CUDA_HOME        {_cuda_home or '-'}\n"
        f"  arch list        {arch}\n"
        f"  optimisation     {' '.join(opt)}\n"
        f"  sanitizers       {sanitize or '-'}\n"
        f"  sources          {' '.join(ext.sources)}",
        flush=True,
    )
    return ext


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
