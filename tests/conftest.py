"""Shared parameters, fixtures and comparison helpers of the d2l_ext tests.

Every op test runs under both backends (the compiled kernels, "native", and the
pure-Python fallback, "python"), on every device ("cpu" always, "cuda" when a
GPU is visible) and in float32 and float64. Native-only tests carry
``requires_native``; on CI (``CI=true``) a library that failed to load stops
the session instead of quietly skipping them.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

import d2l_ext
from d2l_ext import _ops

CUDA_AVAILABLE = torch.cuda.is_available()

requires_native = pytest.mark.skipif(
    not d2l_ext.native_available(), reason="the compiled library d2l_ext._C is not built"
)
requires_cuda = pytest.mark.skipif(not CUDA_AVAILABLE, reason="needs a CUDA device")

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=[requires_cuda, pytest.mark.cuda]),
]
FLOAT_DTYPES = [
    pytest.param(torch.float32, id="float32"),
    pytest.param(torch.float64, id="float64"),
]
HALF_DTYPES = [
    pytest.param(torch.float16, id="float16"),
    pytest.param(torch.bfloat16, id="bfloat16"),
]
BACKENDS = [
    pytest.param("native", id="native", marks=requires_native),
    pytest.param("python", id="python"),
]


def pytest_sessionstart(session: pytest.Session) -> None:
    """On CI a build that does not load is an error, never a pile of skipped native tests."""
    if os.environ.get("CI", "").strip().lower() != "true":
        return
    if not d2l_ext.native_available():
        pytest.exit(
            "CI=true but the compiled library d2l_ext._C could not be loaded "
            f"({_ops.LOAD_ERROR!r}); refusing to run with the native tests skipped.",
            returncode=3,
        )
    if CUDA_AVAILABLE and not d2l_ext.has_cuda_kernels():
        pytest.exit(
            "CI=true on a machine with a GPU, but d2l_ext._C was built without CUDA kernels; "
            "refusing to run with the native CUDA tests skipped.",
            returncode=3,
        )


def skip_unless_native_kernels(device: str) -> None:
    """Skip a native test on a device the library has no kernels for.

    A build without CUDA kernels runs the Python fallback on CUDA tensors (with a
    warning), which the "python" tests already cover; on CI with a GPU such a
    build stops the session instead (see pytest_sessionstart).
    """
    if device == "cuda" and not d2l_ext.has_cuda_kernels():
        pytest.skip("d2l_ext._C was built without CUDA kernels")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest):
    """Run the test body under ``d2l_ext.use_backend(<param>)``; yields the backend's name."""
    callspec = getattr(request.node, "callspec", None)
    if request.param == "native" and callspec is not None:
        skip_unless_native_kernels(callspec.params.get("device", "cpu"))
    with d2l_ext.use_backend(request.param):
        assert d2l_ext.backend() == request.param
        yield request.param
    assert d2l_ext.backend() in ("native", "python")


@pytest.fixture(autouse=True)
def _restore_backend():
    """No test may leak a ``set_backend`` into the next one."""
    before = d2l_ext.backend()
    yield
    if d2l_ext.backend() != before:
        d2l_ext.set_backend(before)
        pytest.fail(f"the test left the backend at {d2l_ext.backend()!r} instead of {before!r}")


# --------------------------------------------------------------------------- tolerances
#
# Both sides (d2l_ext and torch) compute a cross-entropy as a log-sum-exp over C
# classes, a subtraction ``lse - x``, a few products (weight, smoothing) and a
# reduction over the rows. Each rounding costs at most 1/2 ulp of the format
# (eps = finfo.eps), and the rounding errors of a sum of n terms grow like
# sqrt(n) ulps (random-walk bound). So, relative to the result, the error is
#
#     rtol = ULPS * eps * sqrt(terms),   terms = C + number of rows summed,
#
# with ULPS = 8 for the handful of rounded operations on each side. The
# subtraction ``lse - x`` cancels: its absolute error is relative to the size
# of the logits (``lse_mag`` = max |x| + log C + 1), not to the (maybe tiny)
# result, and the gradient's ``exp(x - lse)`` inherits that error. Every loss
# and gradient entry is a sum of such terms, each multiplied by at most
# (max weight) x (output gradient) x (smoothed target mass) / ("mean" divisor):
# ``error_magnitudes`` computes that weight mass M exactly as the loss
# reduces, and the absolute tolerance is ``rtol * lse_mag * M``.
ULPS = 8


def tolerances(dtype: torch.dtype, terms: int = 1) -> float:
    """Relative error budget of a float computation whose sums have ``terms`` terms."""
    return ULPS * torch.finfo(dtype).eps * math.sqrt(max(terms, 1))


def _finite_max_abs(t: torch.Tensor) -> float:
    finite = t[torch.isfinite(t)]
    return float(finite.abs().max()) if finite.numel() else 0.0


def error_magnitudes(
    x: torch.Tensor,
    t: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    grad_out: torch.Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> dict[str, float]:
    """Magnitudes against which the absolute rounding errors of the loss and of
    its gradients (w.r.t. input and probability target) are measured."""
    x, t = x.detach().double(), t.detach()
    if x.dim() == 1:  # unbatched: (C,) logits with a (C,) or () target
        prob = t.is_floating_point() and t.shape == x.shape
        x, t = x.unsqueeze(0), (t.unsqueeze(0) if prob else t.reshape(1))
    num_classes = x.shape[1]
    prob = t.is_floating_point() and t.shape == x.shape
    wmax = _finite_max_abs(weight.double()) if weight is not None and weight.numel() else 1.0
    if prob:
        q = t.double().nan_to_num(0.0).abs().sum(1)
        mass = wmax * ((1.0 - label_smoothing) * q + label_smoothing)
        divisor = float(mass.numel())
    else:
        valid = t.long() != ignore_index
        mass = valid.double() * wmax
        if weight is not None:
            divisor = float(weight.double()[t.long()[valid]].sum()) if valid.any() else 0.0
        else:
            divisor = float(valid.sum())
    if grad_out is not None:
        g = grad_out.detach().double().abs()
    else:
        g = torch.ones(mass.shape if reduction == "none" else (), dtype=torch.float64, device=mass.device)
    if reduction == "none":
        loss_mass = _finite_max_abs(mass)
        grad_mass = _finite_max_abs(g.reshape(mass.shape) * mass) if mass.numel() else 0.0
        gscale = _finite_max_abs(g)
    else:
        total = float(mass.sum())
        row = _finite_max_abs(mass)
        loss_mass, grad_mass, gscale = total, float(g) * row, float(g)
        if reduction == "mean":
            d = divisor if divisor > 0 else 1.0
            loss_mass, grad_mass, gscale = total / d, grad_mass / d, gscale / d
    lse_mag = _finite_max_abs(x) + math.log(max(num_classes, 1)) + 1.0
    return {
        "loss": lse_mag * loss_mass,
        "grad_input": lse_mag * grad_mass,
        "grad_target": lse_mag * gscale * wmax,
    }


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    dtype: torch.dtype,
    terms: int = 1,
    magnitude: float = 1.0,
    msg: str = "",
) -> None:
    """``actual`` matches ``expected`` within the float error budget above.

    ``magnitude`` is the size of the intermediates (see ``error_magnitudes``).
    NaN must sit at the same positions on both sides (``equal_nan``), and
    infinities must match exactly.
    """
    assert actual.shape == expected.shape, (msg, actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (msg, actual.dtype, expected.dtype)
    rtol = tolerances(dtype, terms)
    torch.testing.assert_close(
        actual, expected, rtol=rtol, atol=rtol * magnitude, equal_nan=True,
        msg=lambda m: f"{msg}\n{m}",
    )


def assert_close_lowp(
    actual: torch.Tensor, expected: torch.Tensor, *, dtype: torch.dtype, magnitude: float = 1.0,
    terms: int = 1, accumulates_in_float32: bool, msg: str = "",
) -> None:
    """A float16/bfloat16 result against torch computing in float32 on the same inputs.

    ``expected`` is float32; the inputs are exactly representable in both formats.

    * Code that works in float32 and rounds once at the end (the native kernels:
      the CPU path upcasts, the CUDA kernels accumulate in float32) may differ by
      that final rounding, 1/2 ulp of the format, plus float32's own budget
      (``tolerances(float32, terms) * magnitude``). We allow 1 eps of the format.
    * Code that keeps intermediates in the format (the Python fallback computes
      the log-softmax in it) rounds the log-sum-exp and ``x - lse`` too, each
      an absolute error of 1/2 ulp of the intermediates' size (``magnitude``,
      see ``error_magnitudes``); sums still accumulate in float32 inside torch,
      so there is no sqrt(terms) growth at the format's eps. Three roundings of
      1/2 ulp: we allow 2 eps of the format relative to the result and to
      ``magnitude``.
    """
    assert actual.dtype == dtype, (msg, actual.dtype, dtype)
    assert actual.shape == expected.shape, (msg, actual.shape, expected.shape)
    eps = torch.finfo(dtype).eps
    if accumulates_in_float32:
        rtol, atol = eps, tolerances(torch.float32, terms) * magnitude
    else:
        rtol = 2 * eps
        atol = rtol * magnitude
    torch.testing.assert_close(
        actual.float(), expected, rtol=rtol, atol=atol, equal_nan=True,
        msg=lambda m: f"{msg}\n{m}",
    )


def skip_unless_op_kernel(op: str, device: str) -> None:
    """Skip a native test where the loaded library has no kernel of ``op`` for the
    device (the functional would run the Python fallback instead)."""
    skip_unless_native_kernels(device)
    kind = torch.device(device).type
    if not _ops.has_kernel(op, kind):
        pytest.skip(
            f"d2l_ext built without a {op} kernel for {kind}: the native backend would run the "
            f"Python fallback (torch.ops.d2l_ext.{op} not registered for this device)"
        )


def backend_with_kernel(op: str, backend: str, request: pytest.FixtureRequest) -> str:
    """The ``backend`` fixture's value, skipping native where ``op`` has no kernel for the
    test's device: the body of an op's ``<op>_backend`` fixture."""
    if backend == "native":
        callspec = getattr(request.node, "callspec", None)
        skip_unless_op_kernel(op, callspec.params.get("device", "cpu") if callspec else "cpu")
    return backend


def use_backend_with_kernel(op: str, backend_name: str, device: str):
    """``d2l_ext.use_backend`` for tests parametrized with BACKENDS themselves (hypothesis)."""
    if backend_name == "native":
        skip_unless_op_kernel(op, device)
    return d2l_ext.use_backend(backend_name)


def seeded(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def grad_fn_names(t: torch.Tensor) -> set[str]:
    """Names of every node in ``t``'s autograd graph (``node.name()``: a C++
    autograd function shows as "torch::autograd::CppNode<d2l_ext::...>")."""
    names, seen, stack = set(), set(), [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:  # a node reached twice is walked once (graphs share subgraphs)
            continue
        seen.add(fn)
        names.add(fn.name())
        stack.extend(f for f, _ in fn.next_functions)
    return names


def saved_tensors(fn, *args, **kwargs):
    """(fn(*args, **kwargs), the tensors its autograd graph saved for backward)."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args, **kwargs)
    return out, saved
