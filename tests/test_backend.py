"""How d2l_ext picks its backend at import time, checked in fresh interpreters.

Each test runs ``python -c ...`` in a subprocess with a controlled environment:
``D2L_EXT_BACKEND`` set or unset, and, to simulate a missing build, a meta path
finder that refuses to import ``d2l_ext._C``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import d2l_ext

from .conftest import CUDA_AVAILABLE, requires_native

ROOT = Path(__file__).resolve().parents[1]

# Installed before anything imports d2l_ext: d2l_ext._C then fails to import as
# it would when the library was never built (or was built for another torch).
BLOCK_NATIVE = textwrap.dedent(
    """
    import importlib.abc
    import sys

    class _BlockNative(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "d2l_ext._C":
                raise ImportError("blocked by the test: d2l_ext._C is not built")
            return None

    sys.meta_path.insert(0, _BlockNative())
    """
)

# Imports d2l_ext recording every warning, runs the op on both sides, and prints
# a JSON report on its last line.
REPORT = textwrap.dedent(
    """
    import json
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import torch
        import torch.nn.functional as F

        import d2l_ext
        import d2l_ext.functional as D

        g = torch.Generator().manual_seed(0)
        x = torch.randn(6, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
        t = torch.randint(0, 5, (6, 3), generator=g)
        t[0, 0] = -100
        w = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
        kwargs = dict(weight=w, label_smoothing=0.1)
        ours = D.cross_entropy(x, t, **kwargs)
        (g_ours,) = torch.autograd.grad(ours, x)
        ref = F.cross_entropy(x, t, **kwargs)
        (g_ref,) = torch.autograd.grad(ref, x)
        D.cross_entropy(x, t)  # a second call must not warn again
        backend = d2l_ext.backend()
        try:
            d2l_ext.set_backend("native")
            set_native = "ok"
        except RuntimeError as e:
            set_native = f"RuntimeError: {e}"
        try:
            with torch.no_grad():
                D.cross_entropy(x, torch.tensor([[7, 0, 0]] * 6))
            out_of_range = "no error"
        except IndexError:
            out_of_range = "IndexError"

    ours_warnings = [
        {"category": w.category.__name__, "message": str(w.message)}
        for w in caught if "d2l_ext" in str(w.message)
    ]
    print(json.dumps({
        "backend": backend,
        "native_available": d2l_ext.native_available(),
        "has_cuda_kernels": d2l_ext.has_cuda_kernels(),
        "loss_error": abs(float(ours) - float(ref)),
        "loss": float(ref),
        "grad_error": float((g_ours - g_ref).abs().max()),
        "warnings": ours_warnings,
        "set_native": set_native,
        "out_of_range": out_of_range,
    }))
    """
)


def run_python(code: str, backend_env: str | None, **extra_env: str) -> subprocess.CompletedProcess:
    """``python -c code`` from the repository root, with D2L_EXT_BACKEND set or unset."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("D2L_EXT_BACKEND", "PYTHONWARNINGS", "CI")}
    if backend_env is not None:
        env["D2L_EXT_BACKEND"] = backend_env
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )


def report(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


PRINT_BACKEND = "import d2l_ext; print(d2l_ext.backend())"


# --------------------------------------------------------------------------- environment variable


def test_env_python_forces_the_fallback_silently():
    proc = run_python(PRINT_BACKEND, "python")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "python"
    assert "d2l_ext" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("value", [" Python "])
def test_env_python_spellings(value):
    proc = run_python(PRINT_BACKEND, value)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "python"


@requires_native
@pytest.mark.parametrize("value", [None, "auto", "NATIVE"])
def test_env_unset_auto_or_native_picks_native_when_built(value):
    proc = run_python(PRINT_BACKEND, value)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "native"
    assert "d2l_ext" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("value", ["cuda"])
def test_env_invalid_value_fails_at_import(value):
    proc = run_python(PRINT_BACKEND, value)
    assert proc.returncode != 0
    assert proc.stdout.strip() == ""
    assert "ValueError" in proc.stderr and "D2L_EXT_BACKEND" in proc.stderr, proc.stderr


def test_env_python_fallback_matches_torch():
    r = report(run_python(REPORT, "python"))
    assert r["backend"] == "python"
    assert r["native_available"] == d2l_ext.native_available()
    assert r["warnings"] == []
    # float64 on both sides: the error budget of conftest.py is ~1e-13 here
    assert r["loss_error"] <= 1e-13 * max(r["loss"], 1.0)
    assert r["grad_error"] <= 1e-14
    assert r["out_of_range"] == "IndexError"


@requires_native
def test_env_unset_runs_native_and_matches_torch():
    r = report(run_python(REPORT, None))
    assert r["backend"] == "native" and r["native_available"] is True
    assert r["warnings"] == []
    assert r["loss_error"] <= 1e-13 * max(r["loss"], 1.0)
    assert r["grad_error"] <= 1e-14
    assert r["set_native"] == "ok"
    assert r["out_of_range"] == "IndexError"


# --------------------------------------------------------------------------- missing library


def test_missing_library_warns_once_and_falls_back():
    r = report(run_python(BLOCK_NATIVE + REPORT, None))
    assert r["backend"] == "python"
    assert r["native_available"] is False and r["has_cuda_kernels"] is False
    assert len(r["warnings"]) == 1, r["warnings"]
    (warning,) = r["warnings"]
    assert warning["category"] == "RuntimeWarning"
    assert "pip install --no-build-isolation" in warning["message"]
    assert "d2l_ext._C" in warning["message"] and "blocked by the test" in warning["message"]
    assert r["loss_error"] <= 1e-13 * max(r["loss"], 1.0)
    assert r["grad_error"] <= 1e-14
    assert r["set_native"].startswith("RuntimeError") and "not loaded" in r["set_native"]
    assert r["out_of_range"] == "IndexError"


def test_missing_library_warning_is_printed_once_by_default():
    """With Python's default warning filters, the user sees the warning once on stderr."""
    code = BLOCK_NATIVE + textwrap.dedent(
        """
        import torch
        import d2l_ext
        import d2l_ext.functional as D
        for _ in range(3):
            D.cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 2, 1]))
        print(d2l_ext.backend())
        """
    )
    proc = run_python(code, None)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "python"
    assert proc.stderr.count("RuntimeWarning") == 1, proc.stderr
    assert "pip install --no-build-isolation" in proc.stderr


def test_missing_library_with_env_python_is_silent():
    r = report(run_python(BLOCK_NATIVE + REPORT, "python"))
    assert r["backend"] == "python" and r["native_available"] is False
    assert r["warnings"] == []
    assert r["loss_error"] <= 1e-13 * max(r["loss"], 1.0)


def test_missing_library_with_env_native_is_an_import_error():
    proc = run_python(BLOCK_NATIVE + PRINT_BACKEND, "native")
    assert proc.returncode != 0
    assert proc.stdout.strip() == ""
    assert "ImportError" in proc.stderr, proc.stderr
    assert "D2L_EXT_BACKEND=native" in proc.stderr
    assert "pip install --no-build-isolation" in proc.stderr


# --------------------------------------------------------------------------- the CI guard


def _pytest_in_subprocess(node: str, ci: str | None, block: bool) -> subprocess.CompletedProcess:
    code = (BLOCK_NATIVE if block else "") + textwrap.dedent(
        f"""
        import sys
        import pytest
        sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-rs", {node!r}]))
        """
    )
    extra = {"CI": ci} if ci is not None else {}
    return run_python(code, None, **extra)


def test_trivial_backend_name():
    """Target of the CI-guard tests below (cheap, and runs with or without the build)."""
    assert d2l_ext.backend() in ("native", "python")


def test_ci_guard_fails_the_session_when_the_build_is_missing():
    proc = _pytest_in_subprocess("tests/test_backend.py::test_trivial_backend_name", "true",
                                 block=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out
    assert "CI=true" in out and "d2l_ext._C" in out
    assert "1 passed" not in out


def test_without_ci_a_missing_build_skips_native_tests():
    """The other side of the guard: locally, native-only tests skip (they don't fail)."""
    node = "tests/test_cross_entropy.py::test_native_grad_fn_is_the_fused_op"
    proc = _pytest_in_subprocess(node, None, block=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "1 skipped" in out and "d2l_ext._C is not built" in out


@requires_native
@pytest.mark.skipif(CUDA_AVAILABLE and not d2l_ext.has_cuda_kernels(),
                    reason="the guard rightly refuses a build without CUDA kernels on a GPU")
def test_ci_guard_lets_a_good_build_through():
    proc = _pytest_in_subprocess("tests/test_backend.py::test_trivial_backend_name", "true",
                                 block=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
