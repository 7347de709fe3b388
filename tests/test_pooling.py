"""d2l_ext's pooling ops (functional, nn modules, raw ops) against torch.

The reference is always torch's own function (``torch.nn.functional.*`` or the
``torch.nn`` module) on the same input. Values, returned indices and input
gradients are compared under both backends (native kernels and the Python
fallback), on every device of ``DEVICES``, in float32 and float64
(float16/bfloat16 and integer inputs have their own tests).

Exactness: max pooling only selects, so its values and indices must be equal
bit for bit, and so must its gradients when the output gradient holds small
integers (sums of them are exact in any order). Average pooling rounds: see
``avg_budgets`` for its tolerances (conftest.py explains the error model).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import d2l_ext
import d2l_ext.functional as D
from d2l_ext import reference

from .conftest import (
    BACKENDS,
    DEVICES,
    FLOAT_DTYPES,
    HALF_DTYPES,
    assert_close,
    assert_close_lowp,
    grad_fn_names,
    requires_native,
    saved_tensors,
    seeded,
    skip_unless_native_kernels,
)

CL = torch.channels_last


def op_backend_params(ops):
    """(op, backend_name) pairs; native ones need the compiled library."""
    params = []
    for op in ops:
        for backend_name in ("native", "python"):
            marks = [requires_native] if backend_name == "native" else []
            params.append(pytest.param(op, backend_name, id=f"{op}-{backend_name}", marks=marks))
    return params


def backend_params():
    return [
        pytest.param(name, id=name, marks=[requires_native] if name == "native" else [])
        for name in ("native", "python")
    ]


# --------------------------------------------------------------------------- the ops


class Op(NamedTuple):
    ours: Callable
    torch: Callable
    dims: int  # spatial dims
    is_max: bool
    adaptive: bool


def _on_cpu_when_cuda(fn: Callable) -> Callable:
    """torch's average pooling ``fn`` as the reference, run on the CPU for a
    CUDA input (same maths; ``.cpu()``/``.to()`` keep the layout, and the
    gradient flows back to the input in its layout). torch's CUDA backward of
    a channels-last (NHWC) input ignores the padding (pytorch/pytorch#188344,
    fixed by PR #188345; seen with torch 2.11 on an H200), and torch picks its
    NHWC kernel also for inputs that are only ambiguously channels-last (a
    transposed (1, 1, L) signal in avg_pool1d, say), so the CPU is used for
    every CUDA input rather than a layout rule."""

    def reference(x: torch.Tensor, *args, **kwargs):
        if x.is_cuda:
            return fn(x.cpu(), *args, **kwargs).to(x.device)
        return fn(x, *args, **kwargs)

    return reference


OPS = {
    "max_pool2d": Op(D.max_pool2d, F.max_pool2d, 2, True, False),
    "avg_pool2d": Op(D.avg_pool2d, _on_cpu_when_cuda(F.avg_pool2d), 2, False, False),
    "adaptive_max_pool2d": Op(D.adaptive_max_pool2d, F.adaptive_max_pool2d, 2, True, True),
    "adaptive_avg_pool2d": Op(D.adaptive_avg_pool2d, F.adaptive_avg_pool2d, 2, False, True),
    "max_pool1d": Op(D.max_pool1d, F.max_pool1d, 1, True, False),
    "avg_pool1d": Op(D.avg_pool1d, _on_cpu_when_cuda(F.avg_pool1d), 1, False, False),
    "adaptive_max_pool1d": Op(D.adaptive_max_pool1d, F.adaptive_max_pool1d, 1, True, True),
    "adaptive_avg_pool1d": Op(D.adaptive_avg_pool1d, F.adaptive_avg_pool1d, 1, False, True),
}
MAX_OPS = [k for k, v in OPS.items() if v.is_max]
OPS_2D = [k for k, v in OPS.items() if v.dims == 2]


def _dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def op_layouts(ops, dims_of=lambda op: OPS[op].dims):
    """(op, layout) pairs: contiguous, and channels-last for the 2-D ops."""
    return [
        pytest.param(op, layout, id=f"{op}-{layout}")
        for op in ops
        for layout in ("contiguous", "channels_last")
        if layout == "contiguous" or dims_of(op) == 2
    ]


# --------------------------------------------------------------------------- helpers


_gen = seeded


def make_input(shape, dtype, device, seed=0, kind="randn") -> torch.Tensor:
    """randn: N(0, 1) (rounded to dtype); ties: integers 0..2 (many equal maxima);
    perm: distinct integers (no ties; exact in every float format used here)."""
    g = _gen(seed)
    if kind == "randn":
        x = torch.randn(shape, generator=g, dtype=torch.float64)
    elif kind == "ties":
        x = torch.randint(0, 3, shape, generator=g).double()
    elif kind == "perm":
        n = math.prod(shape)
        x = (torch.randperm(n, generator=g).double() - n // 2).view(shape)
    else:
        raise ValueError(kind)
    return x.to(dtype).to(device)


def output_grad(out: torch.Tensor, integer: bool, seed: int = 7) -> torch.Tensor:
    """The output gradient: small integers for max pooling (exact sums), else N(0, 1)."""
    if integer:
        g = torch.randint(-4, 5, out.shape, generator=_gen(seed)).double()
    else:
        g = torch.randn(out.shape, generator=_gen(seed), dtype=torch.float64)
    return g.to(out.dtype).to(out.device)


def build_input(shape, layout, dtype, device, seed=0, kind="randn") -> torch.Tensor:
    """An input of ``shape`` (N, C, *spatial) in a layout: contiguous, channels_last,
    transposed (last two dims swapped in memory), sliced (every other channel and
    column), or unbatched (``shape`` without N)."""
    if layout == "contiguous":
        return make_input(shape, dtype, device, seed, kind)
    if layout == "unbatched":
        return make_input(shape[1:], dtype, device, seed, kind)
    if layout == "channels_last":
        return make_input(shape, dtype, device, seed, kind).contiguous(memory_format=CL)
    if layout == "transposed":
        swapped = (*shape[:-2], shape[-1], shape[-2])
        return make_input(swapped, dtype, device, seed, kind).transpose(-1, -2)
    if layout == "sliced":
        big = (shape[0], 2 * shape[1], *shape[2:-1], 2 * shape[-1])
        return make_input(big, dtype, device, seed, kind)[:, ::2, ..., ::2]
    raise ValueError(layout)


def _run(fn, x, kwargs, make_g):
    """(output, indices or None, input gradient or None, output gradient or None)."""
    # detach() keeps the strides: a non-contiguous input stays non-contiguous
    x = x.detach().requires_grad_(x.is_floating_point() and make_g is not None)
    res = fn(x, **kwargs)
    out, idx = res if isinstance(res, tuple) else (res, None)
    gx = g = None
    if x.requires_grad:
        g = make_g(out)
        (gx,) = torch.autograd.grad(out, x, g)
    return out.detach(), idx, gx, g


def _max_abs(t: torch.Tensor) -> float:
    return float(t.abs().max()) if t.numel() else 0.0


def _norm(v, dims):
    if isinstance(v, int):
        return (v,) * dims
    v = tuple(v)
    return v * dims if len(v) == 1 else v


def avg_budgets(op, x, out, kwargs, g):
    """((terms, magnitude) of the output, (terms, magnitude) of the input gradient)
    of an average pooling, for conftest's ``assert_close``.

    Each output is a sum of at most ``window`` inputs over a divisor, and each
    input-gradient entry a sum over the (at most ``overlap``) windows holding
    the input of g / divisor; one more rounding for the division. Their rounding
    errors are relative to the sums of absolute values, which torch computes
    here in float64 on |x| and |g| (``magnitude``).
    """
    spec = OPS[op]
    in_sz, out_sz = x.shape[-spec.dims :], out.shape[-spec.dims :]
    if spec.adaptive:
        window = math.prod(-(-i // o) + 1 for i, o in zip(in_sz, out_sz) if o > 0)
        overlap = math.prod(-(-o // i) + 1 for i, o in zip(in_sz, out_sz))
    else:
        k = _norm(kwargs["kernel_size"], spec.dims)
        stride = kwargs.get("stride")
        s = k if stride is None or stride == () else _norm(stride, spec.dims)
        window = math.prod(k)
        overlap = math.prod(-(-ki // si) for ki, si in zip(k, s))
    x64 = x.detach().double().abs().requires_grad_()
    m = spec.torch(x64, **kwargs)
    fwd = (window + 1, _max_abs(m.detach()))
    bwd = (overlap + 1, 0.0)
    if g is not None and m.numel():
        (gm,) = torch.autograd.grad(m, x64, g.double().abs())
        bwd = (overlap + 1, _max_abs(gm))
    return fwd, bwd


def assert_equal(actual, expected, msg=""):
    """Bit-for-bit equality (NaN where NaN), same shape and dtype."""
    assert actual.shape == expected.shape, (msg, actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (msg, actual.dtype, expected.dtype)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{msg}\n{m}")


def _layout(t: torch.Tensor):
    return (t.is_contiguous(), t.is_contiguous(memory_format=CL))


def _unambiguous_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=CL)


def compare_with_torch(op, x, *, grad=True, out_layout=False, **kwargs):
    """Run d2l_ext's and torch's ``op`` on ``x``; compare outputs, indices and gradients
    (and, with ``out_layout``, whether the output is channels-last like torch's)."""
    spec = OPS[op]

    def make_g(out):
        return output_grad(out, integer=spec.is_max)

    ref = _run(spec.torch, x, kwargs, make_g if grad else None)
    ours = _run(spec.ours, x, kwargs, make_g if grad else None)
    out, idx, gx, g = ours
    r_out, r_idx, r_gx, _ = ref
    assert (idx is None) == (r_idx is None)
    assert (gx is None) == (r_gx is None)
    if spec.is_max or not x.is_floating_point():
        assert_equal(out, r_out, "output")
        if idx is not None:
            assert_equal(idx, r_idx, "indices")
        if gx is not None:
            assert_equal(gx, r_gx, "input gradient")
    else:
        (ft, fm), (bt, bm) = avg_budgets(op, x, r_out, kwargs, g)
        assert_close(out, r_out, dtype=x.dtype, terms=ft, magnitude=fm, msg="output")
        if gx is not None:
            assert_close(gx, r_gx, dtype=x.dtype, terms=bt, magnitude=bm, msg="input gradient")
    if out_layout:
        assert _layout(out) == _layout(r_out), ("output layout", out.stride(), r_out.stride())
    return ours, ref


def _out_size(size, k, s, p, d, ceil_mode):
    """torch's pooling_output_shape, written out here (not taken from d2l_ext)."""
    span = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = span // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _some_window_reads_nothing(sizes, k, s, p, d, ceil_mode) -> bool:
    """A dilated window can fall entirely into the padding: torch then returns an
    out-of-range index for it and its backward writes out of bounds (memory
    corruption in torch itself), so such cases are never given to torch's
    backward; test_window_reading_no_input checks them on our side."""
    for size, ki, si, pi, di in zip(sizes, k, s, p, d):
        for o in range(_out_size(size, ki, si, pi, di, ceil_mode)):
            if not any(0 <= o * si - pi + t * di < size for t in range(ki)):
                return True
    return False


def test_backends_really_differ(monkeypatch):
    """Native runs the d2l_ext ops (their autograd nodes), python the reference code."""
    x = make_input((1, 2, 6, 6), torch.float32, "cpu").requires_grad_()
    calls = []
    for name in ("max_pool2d", "avg_pool2d", "adaptive_max_pool2d", "adaptive_avg_pool2d"):
        real = getattr(reference, name)
        monkeypatch.setattr(reference, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    ops = [
        (D.max_pool2d, (2,)),
        (D.avg_pool2d, (2,)),
        (D.adaptive_max_pool2d, (2,)),
        (D.adaptive_avg_pool2d, (2,)),
        (D.max_pool1d, (2,)),
    ]
    with d2l_ext.use_backend("native"):
        for fn, args in ops:
            arg = x[0] if fn is D.max_pool1d else x
            names = grad_fn_names(fn(arg, *args))
            assert any("d2l_ext" in n for n in names), (fn.__name__, names)
    assert calls == []
    with d2l_ext.use_backend("python"):
        for fn, args in ops:
            arg = x[0] if fn is D.max_pool1d else x
            names = grad_fn_names(fn(arg, *args))
            assert not any("d2l_ext" in n for n in names), (fn.__name__, names)
    assert calls == ["max_pool2d", "avg_pool2d", "adaptive_max_pool2d", "adaptive_avg_pool2d", "max_pool2d"]


# --------------------------------------------------------------------------- hypothesis

FAMILIES = {
    "max": ("max_pool1d", "max_pool2d"),
    "avg": ("avg_pool1d", "avg_pool2d"),
    "adaptive_max": ("adaptive_max_pool1d", "adaptive_max_pool2d"),
    "adaptive_avg": ("adaptive_avg_pool1d", "adaptive_avg_pool2d"),
}


@st.composite
def pool_problems(draw, family):
    dims = draw(st.sampled_from([1, 2]))
    op = FAMILIES[family][dims - 1]
    spec = OPS[op]
    as_int = draw(st.booleans())

    def pack(v):  # an int when all axes agree (half the time), else a tuple
        return v[0] if as_int and len(set(v)) == 1 else tuple(v)

    if spec.adaptive:
        sizes = [draw(st.integers(1, 12)) for _ in range(dims)]
        outs = [draw(st.integers(1, s + 3)) for s in sizes]  # also larger than the input
        kwargs = dict(output_size=pack(outs))
        if dims == 2 and draw(st.integers(0, 3)) == 0:  # None keeps that input size
            outs[draw(st.integers(0, 1))] = None
            kwargs = dict(output_size=tuple(outs))
        if spec.is_max:
            kwargs["return_indices"] = draw(st.booleans())
    else:
        k = [draw(st.integers(1, 4)) for _ in range(dims)]
        d = [draw(st.integers(1, 3)) for _ in range(dims)] if spec.is_max else [1] * dims
        # torch's limit is half the kernel, whatever the dilation
        p = [draw(st.integers(0, ki // 2)) for ki in k]
        s = draw(st.none() | st.lists(st.integers(1, 5), min_size=dims, max_size=dims))
        ceil_mode = draw(st.booleans())
        spans = [di * (ki - 1) + 1 for ki, di in zip(k, d)]
        sizes = [draw(st.integers(max(1, sp - 2 * pi), sp - 2 * pi + 8)) for sp, pi in zip(spans, p)]
        kwargs = dict(
            kernel_size=pack(k), stride=None if s is None else pack(s), padding=pack(p), ceil_mode=ceil_mode
        )
        if spec.is_max:
            assume(not _some_window_reads_nothing(sizes, k, s or k, p, d, ceil_mode))
            kwargs.update(dilation=pack(d), return_indices=draw(st.booleans()))
        else:
            kwargs["count_include_pad"] = draw(st.booleans())
            if dims == 2:
                kwargs["divisor_override"] = draw(st.none() | st.integers(1, 6))
    layouts = ["contiguous", "transposed", "sliced", "unbatched"]
    if dims == 2:
        layouts += ["channels_last", "channels_last"]
    return dict(
        op=op,
        kwargs=kwargs,
        shape=(draw(st.integers(1, 3)), draw(st.integers(1, 4)), *sizes),
        layout=draw(st.sampled_from(layouts)),
        kind=draw(st.sampled_from(["randn", "ties", "perm"])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("family", list(FAMILIES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_matches_torch(device, dtype, backend_name, family, data):
    """Random windows (kernel 1..4, non-square, stride None or up to 5, padding up
    to half the kernel, dilation up to 3, ceil_mode, count_include_pad,
    divisor_override), sizes, layouts, unbatched inputs and tie-heavy values."""
    if backend_name == "native":
        skip_unless_native_kernels(device)
    p = data.draw(pool_problems(family))
    x = build_input(p["shape"], p["layout"], dtype, device, p["seed"], p["kind"])
    cl = _unambiguous_channels_last(x)
    with d2l_ext.use_backend(backend_name):
        # (gradient layouts: test_channels_last_layout)
        compare_with_torch(p["op"], x, out_layout=cl and backend_name == "native", **p["kwargs"])


# --------------------------------------------------------------------------- explicit cases

# name: (op, input shape, layout, input kind, kwargs)
CASES = {
    # the book's networks
    "lenet_avg_2_2": ("avg_pool2d", (4, 6, 28, 28), "contiguous", "randn", dict(kernel_size=2, stride=2)),
    "lenet_avg_2_2_second": (
        "avg_pool2d",
        (4, 16, 10, 10),
        "contiguous",
        "randn",
        dict(kernel_size=2, stride=2),
    ),
    "alexnet_max_3_2": ("max_pool2d", (2, 96, 54, 54), "contiguous", "ties", dict(kernel_size=3, stride=2)),
    "vgg_max_2_2": ("max_pool2d", (2, 64, 32, 32), "channels_last", "ties", dict(kernel_size=2, stride=2)),
    "googlenet_max_3_1_1": (
        "max_pool2d",
        (2, 192, 28, 28),
        "contiguous",
        "ties",
        dict(kernel_size=3, stride=1, padding=1),
    ),
    "resnet_stem_max_3_2_1": (
        "max_pool2d",
        (1, 64, 112, 112),
        "contiguous",
        "randn",
        dict(kernel_size=3, stride=2, padding=1),
    ),
    "resnet_stem_channels_last": (
        "max_pool2d",
        (1, 64, 56, 56),
        "channels_last",
        "ties",
        dict(kernel_size=3, stride=2, padding=1),
    ),
    "global_avg_resnet": ("adaptive_avg_pool2d", (2, 512, 7, 7), "contiguous", "randn", dict(output_size=1)),
    "global_avg_nin_channels_last": (
        "adaptive_avg_pool2d",
        (2, 10, 5, 5),
        "channels_last",
        "randn",
        dict(output_size=(1, 1)),
    ),
    "densenet_transition_avg": (
        "avg_pool2d",
        (2, 128, 16, 16),
        "channels_last",
        "randn",
        dict(kernel_size=2, stride=2),
    ),
    "textcnn_max_over_time": ("max_pool1d", (4, 100, 37), "contiguous", "randn", dict(kernel_size=37)),
    "textcnn_adaptive_max": (
        "adaptive_max_pool1d",
        (4, 100, 37),
        "contiguous",
        "ties",
        dict(output_size=1, return_indices=True),
    ),
    # windows
    "kernel_1": ("max_pool2d", (2, 3, 5, 4), "contiguous", "ties", dict(kernel_size=1, return_indices=True)),
    "kernel_1_avg_stride_2": (
        "avg_pool2d",
        (2, 3, 5, 4),
        "contiguous",
        "randn",
        dict(kernel_size=1, stride=2),
    ),
    "non_square": (
        "max_pool2d",
        (2, 3, 9, 8),
        "contiguous",
        "ties",
        dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), return_indices=True),
    ),
    "stride_larger_than_kernel": (
        "max_pool2d",
        (2, 3, 11, 12),
        "contiguous",
        "ties",
        dict(kernel_size=2, stride=5, return_indices=True),
    ),
    "stride_larger_than_kernel_avg": (
        "avg_pool2d",
        (2, 3, 11, 12),
        "contiguous",
        "randn",
        dict(kernel_size=(2, 3), stride=(4, 5)),
    ),
    "stride_empty_means_kernel": (
        "max_pool2d",
        (2, 3, 9, 8),
        "contiguous",
        "ties",
        dict(kernel_size=3, stride=(), return_indices=True),
    ),
    "stride_empty_avg": ("avg_pool2d", (2, 3, 9, 8), "contiguous", "randn", dict(kernel_size=3, stride=[])),
    "dilation": (
        "max_pool2d",
        (2, 3, 10, 9),
        "contiguous",
        "ties",
        dict(kernel_size=(2, 3), padding=1, dilation=(3, 2), ceil_mode=True, return_indices=True),
    ),
    "dilation_channels_last": (
        "max_pool2d",
        (2, 5, 10, 9),
        "channels_last",
        "ties",
        dict(kernel_size=3, stride=2, padding=1, dilation=2, return_indices=True),
    ),
    "ceil_last_window_in_padding_max": (
        "max_pool2d",
        (1, 2, 5, 5),
        "contiguous",
        "ties",
        dict(kernel_size=2, stride=2, padding=1, ceil_mode=True, return_indices=True),
    ),
    "ceil_last_window_in_padding_avg": (
        "avg_pool2d",
        (1, 2, 5, 5),
        "contiguous",
        "randn",
        dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),
    ),
    "ceil_exclude_pad": (
        "avg_pool2d",
        (2, 3, 7, 8),
        "contiguous",
        "randn",
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    ),
    "ceil_include_pad": (
        "avg_pool2d",
        (2, 3, 7, 8),
        "contiguous",
        "randn",
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=True),
    ),
    "divisor_override": (
        "avg_pool2d",
        (2, 3, 7, 8),
        "contiguous",
        "randn",
        dict(kernel_size=3, stride=2, padding=1, divisor_override=7),
    ),
    "divisor_override_1_channels_last": (
        "avg_pool2d",
        (2, 3, 7, 8),
        "channels_last",
        "randn",
        dict(kernel_size=(2, 3), padding=1, ceil_mode=True, divisor_override=1),
    ),
    "odd_sizes": (
        "avg_pool2d",
        (3, 5, 13, 11),
        "contiguous",
        "randn",
        dict(kernel_size=(3, 4), stride=(2, 3), padding=(1, 2), count_include_pad=False),
    ),
    "unbatched_max": (
        "max_pool2d",
        (1, 3, 7, 7),
        "unbatched",
        "ties",
        dict(kernel_size=3, stride=2, padding=1, dilation=2, return_indices=True),
    ),
    "unbatched_avg": ("avg_pool2d", (1, 3, 7, 7), "unbatched", "randn", dict(kernel_size=3, padding=1)),
    "unbatched_adaptive": (
        "adaptive_max_pool2d",
        (1, 3, 7, 5),
        "unbatched",
        "ties",
        dict(output_size=(3, 2), return_indices=True),
    ),
    "transposed_input": (
        "max_pool2d",
        (2, 3, 9, 7),
        "transposed",
        "ties",
        dict(kernel_size=3, stride=2, padding=1, return_indices=True),
    ),
    "sliced_input_avg": ("avg_pool2d", (2, 3, 9, 7), "sliced", "randn", dict(kernel_size=3, stride=2)),
    # offsets: 16 x 16 = 256 taps is the last uint8 window, 17 x 16 the first int32 one
    "offset_uint8_limit": (
        "max_pool2d",
        (1, 2, 20, 20),
        "contiguous",
        "perm",
        dict(kernel_size=16, stride=3, return_indices=True),
    ),
    "offset_int32": (
        "max_pool2d",
        (1, 2, 20, 21),
        "contiguous",
        "ties",
        dict(kernel_size=(17, 16), stride=1, padding=8, return_indices=True),
    ),
    "adaptive_offset_uint8_limit": (
        "adaptive_max_pool2d",
        (1, 2, 15, 15),
        "contiguous",
        "perm",
        dict(output_size=1, return_indices=True),
    ),
    "adaptive_offset_int32": (
        "adaptive_max_pool2d",
        (1, 2, 16, 15),
        "contiguous",
        "perm",
        dict(output_size=1, return_indices=True),
    ),
    "adaptive_offset_int32_big": (
        "adaptive_max_pool2d",
        (1, 2, 40, 40),
        "channels_last",
        "ties",
        dict(output_size=(1, 3), return_indices=True),
    ),
    # adaptive windows
    "adaptive_larger_than_input": (
        "adaptive_avg_pool2d",
        (2, 3, 2, 3),
        "contiguous",
        "randn",
        dict(output_size=(3, 5)),
    ),
    "adaptive_max_larger_than_input": (
        "adaptive_max_pool2d",
        (2, 3, 2, 3),
        "contiguous",
        "ties",
        dict(output_size=(3, 5), return_indices=True),
    ),
    "adaptive_none": (
        "adaptive_avg_pool2d",
        (2, 3, 7, 6),
        "contiguous",
        "randn",
        dict(output_size=(None, 4)),
    ),
    "adaptive_overlapping": (
        "adaptive_avg_pool2d",
        (2, 3, 7, 10),
        "channels_last",
        "randn",
        dict(output_size=(4, 3)),
    ),
    # the CPU kernels' fast paths: rows of whole windows (stride 1, 2, other) and
    # channels-last blocks of 64 channels with a tail
    "wide_rows_stride_1": (
        "max_pool2d",
        (2, 3, 9, 67),
        "contiguous",
        "ties",
        dict(kernel_size=3, stride=1, padding=1, return_indices=True),
    ),
    "wide_rows_stride_2": (
        "max_pool2d",
        (2, 3, 9, 67),
        "contiguous",
        "ties",
        dict(
            kernel_size=(2, 4), stride=2, padding=(1, 2), dilation=(1, 2), ceil_mode=True, return_indices=True
        ),
    ),
    "wide_rows_stride_3": (
        "max_pool2d",
        (2, 3, 9, 67),
        "contiguous",
        "ties",
        dict(kernel_size=3, stride=3, padding=1, return_indices=True),
    ),
    "wide_rows_avg": (
        "avg_pool2d",
        (2, 3, 9, 67),
        "contiguous",
        "randn",
        dict(kernel_size=3, stride=1, padding=1, count_include_pad=False),
    ),
    "many_channels_max": (
        "max_pool2d",
        (2, 130, 11, 13),
        "channels_last",
        "ties",
        dict(kernel_size=3, stride=2, padding=1, return_indices=True),
    ),
    "many_channels_avg": (
        "avg_pool2d",
        (2, 130, 11, 13),
        "channels_last",
        "randn",
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    ),
    "many_channels_adaptive_avg": (
        "adaptive_avg_pool2d",
        (2, 130, 11, 13),
        "channels_last",
        "randn",
        dict(output_size=(4, 5)),
    ),
    "many_channels_adaptive_max": (
        "adaptive_max_pool2d",
        (2, 130, 11, 13),
        "channels_last",
        "ties",
        dict(output_size=(4, 5), return_indices=True),
    ),
    # 1-D
    "max1d": (
        "max_pool1d",
        (2, 3, 17),
        "contiguous",
        "ties",
        dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True, return_indices=True),
    ),
    "max1d_transposed": (
        "max_pool1d",
        (2, 5, 17),
        "transposed",
        "ties",
        dict(kernel_size=4, stride=1, padding=2, return_indices=True),
    ),
    "avg1d": (
        "avg_pool1d",
        (2, 3, 17),
        "contiguous",
        "randn",
        dict(kernel_size=4, stride=3, padding=2, ceil_mode=True, count_include_pad=False),
    ),
    "avg1d_unbatched": ("avg_pool1d", (1, 3, 17), "unbatched", "randn", dict(kernel_size=(3,), padding=(1,))),
    "adaptive_avg1d": ("adaptive_avg_pool1d", (2, 3, 17), "sliced", "randn", dict(output_size=5)),
    "adaptive_max1d": (
        "adaptive_max_pool1d",
        (2, 3, 17),
        "contiguous",
        "ties",
        dict(output_size=(6,), return_indices=True),
    ),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_torch(backend, device, dtype, case):
    op, shape, layout, kind, kwargs = CASES[case]
    x = build_input(shape, layout, dtype, device, kind=kind)
    if layout in ("transposed", "sliced"):
        assert not x.is_contiguous()
    cl = _unambiguous_channels_last(x)
    assert cl == (layout == "channels_last")
    compare_with_torch(op, x, out_layout=cl and backend == "native", **kwargs)


def _layout_params():
    params = []
    for op in OPS_2D:
        for backend_name in ("native", "python"):
            for size in ("regular", "global"):
                for grad_layout in ("contiguous", "channels_last"):
                    marks = [requires_native] if backend_name == "native" else []
                    params.append(
                        pytest.param(
                            op,
                            backend_name,
                            size,
                            grad_layout,
                            marks=marks,
                            id=f"{op}-{backend_name}-{size}-grad_{grad_layout}",
                        )
                    )
    return params


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op,backend_name,size,grad_layout", _layout_params())
def test_channels_last_layout(device, op, backend_name, size, grad_layout):
    """A channels-last input: output and input gradient laid out as torch's
    (channels-last), whatever the layout of the output gradient; "global"
    pools to (N, C, 1, 1), where only the input tells the layout."""
    if backend_name == "native":
        skip_unless_native_kernels(device)
    x = make_input((2, 5, 8, 9), torch.float32, device, kind="perm").contiguous(memory_format=CL)
    if OPS[op].adaptive:
        kwargs = dict(output_size=(3, 4) if size == "regular" else 1)
    else:
        kwargs = dict(kernel_size=3, stride=2, padding=1) if size == "regular" else dict(kernel_size=(8, 9))
    spec = OPS[op]
    fmt = CL if grad_layout == "channels_last" else torch.contiguous_format

    def make_g(out):
        return output_grad(out, integer=spec.is_max).contiguous(memory_format=fmt)

    with d2l_ext.use_backend(backend_name):
        out, _, gx, g = _run(spec.ours, x, kwargs, make_g)
    r_out, _, r_gx, _ = _run(spec.torch, x, kwargs, make_g)
    assert g.is_contiguous(memory_format=fmt)
    if spec.is_max:
        assert_equal(out, r_out)
        assert_equal(gx, r_gx)
    else:
        (ft, fm), (bt, bm) = avg_budgets(op, x, r_out, kwargs, g)
        assert_close(out, r_out, dtype=x.dtype, terms=ft, magnitude=fm)
        assert_close(gx, r_gx, dtype=x.dtype, terms=bt, magnitude=bm)
    if size == "regular":
        assert r_out.is_contiguous(memory_format=CL) and not r_out.is_contiguous()
    assert _layout(out) == _layout(r_out), ("output", out.stride(), r_out.stride())
    assert _layout(gx) == _layout(r_gx), ("gradient", gx.stride(), r_gx.stride())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "op,backend_name",
    op_backend_params(OPS_2D),
)
def test_ambiguous_channels_last_input_layout(device, op, backend_name):
    """(N, C, 1, 1) with channels-last strides (an NHWC tensor's permute), pooled
    to a larger output (adaptive, or padding): torch's output is channels-last."""
    if backend_name == "native":
        skip_unless_native_kernels(device)
    x = make_input((2, 1, 1, 5), torch.float32, device).permute(0, 3, 1, 2)
    assert x.is_contiguous() and x.is_contiguous(memory_format=CL)
    kwargs = dict(output_size=(2, 3)) if OPS[op].adaptive else dict(kernel_size=2, stride=1, padding=1)
    with d2l_ext.use_backend(backend_name):
        (out, *_), (r_out, *_) = compare_with_torch(op, x, **kwargs)
    assert r_out.is_contiguous(memory_format=CL) and not r_out.is_contiguous()
    assert _layout(out) == _layout(r_out), (out.stride(), r_out.stride())


# --------------------------------------------------------------------------- ties, NaN, -inf

TIE_INPUTS = {
    "randint_0_3": lambda shape: torch.randint(0, 3, shape, generator=_gen(3)).double(),
    "zeros": lambda shape: torch.zeros(shape, dtype=torch.float64),
    "all_equal": lambda shape: torch.full(shape, 2.5, dtype=torch.float64),
    "plus_inf": lambda shape: torch.full(shape, math.inf, dtype=torch.float64),
}
# overlapping windows with padding, ceil mode and dilation: ties across window
# borders, where the gradient must reach exactly torch's winner
TIE_KWARGS = {
    "max_pool2d": dict(
        kernel_size=(3, 2), stride=(2, 1), padding=1, dilation=(1, 2), ceil_mode=True, return_indices=True
    ),
    "max_pool1d": dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, return_indices=True),
    "adaptive_max_pool2d": dict(output_size=(4, 3), return_indices=True),
    "adaptive_max_pool1d": dict(output_size=5, return_indices=True),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("op,layout", op_layouts(MAX_OPS))
@pytest.mark.parametrize("values", list(TIE_INPUTS))
def test_ties_go_where_torch_sends_them(backend, device, dtype, op, values, layout):
    shape = (2, 3, 7, 6) if OPS[op].dims == 2 else (2, 3, 11)
    x = TIE_INPUTS[values](shape).to(dtype).to(device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    (out, idx, gx, _), _ = compare_with_torch(op, x, **TIE_KWARGS[op])
    if values != "randint_0_3":  # all equal: the gradient piles up on a few first taps
        assert (gx != 0).sum() < gx.numel()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "op,backend_name",
    op_backend_params(MAX_OPS),
)
@pytest.mark.parametrize("fill", ["all_minus_inf", "minus_inf_border"])
def test_minus_inf_windows(device, op, backend_name, fill):
    """A window whose elements are all -inf (a masked input) reports its first
    element read, as torch, never the padding."""
    if backend_name == "native":
        skip_unless_native_kernels(device)
    shape = (2, 3, 7, 6) if OPS[op].dims == 2 else (2, 3, 11)
    x = make_input(shape, torch.float64, device)
    if fill == "all_minus_inf":
        x.fill_(-math.inf)
    else:  # the first rows/columns masked: the corner windows see only -inf and padding
        x[..., :3] = -math.inf
        if OPS[op].dims == 2:
            x[..., :3, :] = -math.inf
    kwargs = dict(TIE_KWARGS[op])
    with d2l_ext.use_backend(backend_name):
        (out, idx, gx, g), _ = compare_with_torch(op, x, **kwargs)
    plane = math.prod(shape[2:])
    assert ((idx >= 0) & (idx < plane)).all()
    assert torch.isneginf(out).any()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int64], ids=_dtype_id)
@pytest.mark.parametrize("backend_name", backend_params())
def test_integer_lowest_value_windows(device, dtype, backend_name):
    """Integer inputs equal to the dtype's lowest value (0 for uint8 images) next
    to the padding: indices and values as torch's (on the CPU)."""
    if backend_name == "native":
        skip_unless_native_kernels(device)
    lowest = torch.iinfo(dtype).min
    x = torch.randint(0, 5, (2, 3, 6, 7), generator=_gen(2)).to(dtype) + 1
    x[..., :2, :] = lowest
    x[..., :, :2] = lowest
    kwargs = dict(kernel_size=3, stride=2, padding=1, return_indices=True)
    with d2l_ext.use_backend(backend_name):
        out, idx = D.max_pool2d(x.to(device), **kwargs)
    r_out, r_idx = F.max_pool2d(x, **kwargs)
    assert (r_out == lowest).any()
    assert_equal(out.cpu(), r_out, "output")
    assert_equal(idx.cpu(), r_idx, "indices")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("op", MAX_OPS)
def test_nan_propagates(backend, device, dtype, op):
    """Output NaN exactly where torch's is (its window holds a NaN), other values equal."""
    shape = (2, 3, 9, 8) if OPS[op].dims == 2 else (2, 3, 17)
    x = make_input(shape, dtype, device, seed=4)
    x[(torch.rand(shape, generator=_gen(5)) < 0.15).to(device)] = math.nan
    kwargs = {k: v for k, v in TIE_KWARGS[op].items() if k != "return_indices"}
    ours = OPS[op].ours(x, **kwargs)
    ref = OPS[op].torch(x, **kwargs)
    assert torch.isnan(ref).any() and not torch.isnan(ref).all()
    assert torch.equal(torch.isnan(ours), torch.isnan(ref))
    assert_equal(ours, ref)


def _nan_input(op, dtype, device, several: bool):
    """Non-overlapping 2 x 2 (or 2) windows, a NaN in about 40% of them: on the
    window's last tap, and with ``several`` also on its first."""
    dims = OPS[op].dims
    shape = (2, 3, 8, 6) if dims == 2 else (2, 3, 12)
    x = make_input(shape, dtype, device, seed=6)
    windows = (*shape[:2], *(s // 2 for s in shape[2:]))
    pick = (torch.rand(windows, generator=_gen(8)) < 0.4).to(device)
    last = (slice(1, None, 2),) * dims
    first = (slice(0, None, 2),) * dims
    x[(..., *last)] = torch.where(pick, math.nan, x[(..., *last)])
    if several:
        x[(..., *first)] = torch.where(pick, math.nan, x[(..., *first)])
    assert int(torch.isnan(x).sum()) == int(pick.sum()) * (2 if several else 1) > 0
    return x


NAN_KWARGS = {
    "max_pool2d": dict(kernel_size=2, return_indices=True),
    "max_pool1d": dict(kernel_size=2, return_indices=True),
    "adaptive_max_pool2d": dict(output_size=(4, 3), return_indices=True),
    "adaptive_max_pool1d": dict(output_size=6, return_indices=True),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("op", MAX_OPS)
def test_nan_index_and_gradient_one_per_window(backend, device, dtype, op):
    x = _nan_input(op, dtype, device, several=False)
    (out, idx, gx, _), _ = compare_with_torch(op, x, **NAN_KWARGS[op])
    assert torch.isnan(out).any()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("op,backend_name", op_backend_params(MAX_OPS))
def test_nan_index_and_gradient_several_per_window(device, dtype, op, backend_name):
    if backend_name == "native":
        skip_unless_native_kernels(device)
    x = _nan_input(op, dtype, device, several=True)
    with d2l_ext.use_backend(backend_name):
        compare_with_torch(op, x, **NAN_KWARGS[op])


# --------------------------------------------------------------------------- special shapes


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "op,backend_name",
    op_backend_params(list(OPS)),
)
def test_zero_batch(device, op, backend_name):
    """N = 0 (contiguous, and channels-last for 2-D): output (and indices) shaped
    like torch's, an empty gradient."""
    if backend_name == "native":
        skip_unless_native_kernels(device)
    spec = OPS[op]
    shape = (0, 3, 7, 6) if spec.dims == 2 else (0, 3, 11)
    if spec.adaptive:
        kwargs = dict(output_size=3)
    else:
        kwargs = dict(kernel_size=3, stride=2, padding=1)
    if spec.is_max:
        kwargs["return_indices"] = True
    for layout in ("contiguous", "channels_last") if spec.dims == 2 else ("contiguous",):
        x = build_input(shape, layout, torch.float32, device)
        with d2l_ext.use_backend(backend_name):
            (out, idx, gx, _), (r_out, r_idx, _, _) = compare_with_torch(op, x, **kwargs)
        assert out.shape[0] == 0 and out.shape == r_out.shape
        assert gx.shape == x.shape


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["adaptive_avg_pool2d", "adaptive_max_pool2d"])
@pytest.mark.parametrize("size", [(0, 3), (2, 0)])
def test_adaptive_output_size_zero(backend, device, op, size):
    """torch returns an empty output for output_size 0 (its backward refuses it)."""
    x = make_input((2, 3, 5, 4), torch.float32, device)
    kwargs = dict(output_size=size)
    if OPS[op].is_max:
        kwargs["return_indices"] = True
    compare_with_torch(op, x, grad=False, **kwargs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["max_pool2d", "max_pool1d"])
def test_window_reading_no_input(backend, device, op):
    """A dilated window that lies wholly in the padding (H = 1, kernel 2, dilation
    2, padding 1: taps at -1 and 1). torch's output is -inf, its index points
    past the plane and its backward writes out of bounds, so only its forward
    values are the reference (the index is meaningless on both sides: no
    element won); our gradient there is zero."""
    if op == "max_pool2d":
        x = make_input((1, 3, 1, 9), torch.float64, device)
        kwargs = dict(kernel_size=(2, 1), stride=(5, 5), padding=(1, 0), dilation=(2, 3), ceil_mode=True)
    else:
        x = make_input((1, 3, 1), torch.float64, device)
        kwargs = dict(kernel_size=2, stride=5, padding=1, dilation=2, ceil_mode=True)
    ref = OPS[op].torch(x, **kwargs)
    assert torch.isneginf(ref).all()
    xr = x.clone().requires_grad_()
    out, idx = OPS[op].ours(xr, return_indices=True, **kwargs)
    assert_equal(out.detach(), ref)
    assert idx.shape == ref.shape and idx.dtype == torch.int64
    (gx,) = torch.autograd.grad(out, xr, torch.ones_like(out))
    assert (gx == 0).all()


# --------------------------------------------------------------------------- integers


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "dtype", [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8], ids=_dtype_id
)
@pytest.mark.parametrize("op,layout", op_layouts(["max_pool2d", "max_pool1d"]))
def test_integer_max_pool(backend, device, dtype, op, layout):
    """Integer max pooling (values and indices) equals torch's on the CPU, negative
    values included. Values stay above the dtype's lowest (see
    test_integer_lowest_value_windows)."""
    lo = 1 if dtype == torch.uint8 else -50
    shape = (2, 3, 9, 8) if op == "max_pool2d" else (2, 3, 13)
    x = torch.randint(lo, lo + 100, shape, generator=_gen(1)).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    x = x.to(device)
    for kwargs in (
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=2, stride=1, dilation=2, ceil_mode=True),
        dict(kernel_size=(3,) if op == "max_pool1d" else (3, 2), stride=3, ceil_mode=True, padding=1),
    ):
        out, idx = OPS[op].ours(x, return_indices=True, **kwargs)
        r_out, r_idx = OPS[op].torch(x.cpu(), return_indices=True, **kwargs)
        assert_equal(out.cpu(), r_out, str(kwargs))
        assert_equal(idx.cpu(), r_idx, str(kwargs))
        assert out.device == x.device


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["avg_pool2d", "avg_pool1d"])
def test_int64_avg_pool_truncates_like_torch(backend, device, op):
    """int64 average pooling divides with truncation toward zero, as torch's
    (C++ integer division): negative sums included."""
    shape = (2, 3, 9, 8) if op == "avg_pool2d" else (2, 3, 13)
    x = torch.randint(-100, 100, shape, generator=_gen(2)).to(device)
    configs = [
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        dict(kernel_size=2, stride=1, ceil_mode=True),
    ]
    if op == "avg_pool2d":
        configs += [
            dict(kernel_size=3, padding=1, divisor_override=4),
            dict(kernel_size=(2, 3), stride=(1, 2), divisor_override=7),
        ]
    saw_negative_remainder = False
    for kwargs in configs:
        ours = OPS[op].ours(x, **kwargs)
        ref = OPS[op].torch(x.cpu(), **kwargs)
        assert_equal(ours.cpu(), ref, str(kwargs))
        # truncation, not floor: a negative average that is not whole rounds up
        as_float = OPS[op].torch(x.cpu().double(), **kwargs)
        neg = (as_float < 0) & (as_float != as_float.trunc())
        saw_negative_remainder |= bool(neg.any())
        assert torch.equal(ref[neg], as_float[neg].trunc().long())
    assert saw_negative_remainder


# --------------------------------------------------------------------------- float16 / bfloat16

LOWP_CASES = {
    "max_pool2d": ((2, 3, 9, 8), dict(kernel_size=3, stride=2, padding=1, return_indices=True)),
    "avg_pool2d": (
        (2, 3, 9, 8),
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    ),
    "adaptive_max_pool2d": ((2, 3, 9, 8), dict(output_size=(4, 3), return_indices=True)),
    "adaptive_avg_pool2d": ((2, 3, 9, 8), dict(output_size=(4, 3))),
    "max_pool1d": ((2, 3, 17), dict(kernel_size=3, stride=2, padding=1, return_indices=True)),
    "avg_pool1d": ((2, 3, 17), dict(kernel_size=4, stride=2, padding=2)),
    "adaptive_max_pool1d": ((2, 3, 17), dict(output_size=5, return_indices=True)),
    "adaptive_avg_pool1d": ((2, 3, 17), dict(output_size=5)),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("op,layout", op_layouts(LOWP_CASES))
def test_low_precision(backend, device, dtype, op, layout):
    """float16/bfloat16 in, same format out (CPU: the native kernels run float32).

    Max pooling only selects: values, indices and (small-integer) gradients
    equal torch's in the same format. Average pooling is compared with torch in
    float32 on the same (exactly representable) input: the native path rounds
    once at the end, the fallback also rounds its intermediates in the format
    (see conftest.assert_close_lowp).
    """
    spec = OPS[op]
    shape, kwargs = LOWP_CASES[op]
    x = build_input(shape, layout, dtype, device, seed=3, kind="randn")
    if spec.is_max:
        (out, *_), _ = compare_with_torch(op, x, **kwargs)
        assert out.dtype == dtype
        return
    ours = _run(spec.ours, x, kwargs, lambda out: output_grad(out, integer=False))
    out, _, gx, g = ours
    x32 = x.float()
    r_out, _, r_gx, g32 = _run(spec.torch, x32, kwargs, lambda out: g.float())
    (ft, fm), (bt, bm) = avg_budgets(op, x32, r_out, kwargs, g32)
    tol = dict(dtype=dtype, accumulates_in_float32=backend == "native")
    assert_close_lowp(out, r_out, terms=ft, magnitude=fm, msg="output", **tol)
    assert_close_lowp(gx, r_gx, terms=bt, magnitude=bm, msg="input gradient", **tol)


# --------------------------------------------------------------------------- gradcheck

GRAD_CASES = {
    "max_pool2d": (
        "max_pool2d",
        dict(kernel_size=(3, 2), stride=(2, 1), padding=1, dilation=(1, 2), ceil_mode=True),
    ),
    "max_pool2d_indices": ("max_pool2d", dict(kernel_size=3, stride=2, padding=1, return_indices=True)),
    "avg_pool2d": (
        "avg_pool2d",
        dict(kernel_size=(3, 2), stride=(2, 1), padding=1, ceil_mode=True, count_include_pad=False),
    ),
    "avg_pool2d_divisor": ("avg_pool2d", dict(kernel_size=3, stride=2, padding=1, divisor_override=5)),
    "adaptive_avg_pool2d": ("adaptive_avg_pool2d", dict(output_size=(3, 4))),
    "adaptive_max_pool2d": ("adaptive_max_pool2d", dict(output_size=(3, 4))),
    "max_pool1d": ("max_pool1d", dict(kernel_size=3, stride=2, padding=1, dilation=2)),
    "avg_pool1d": ("avg_pool1d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    "adaptive_avg_pool1d": ("adaptive_avg_pool1d", dict(output_size=5)),
    "adaptive_max_pool1d": ("adaptive_max_pool1d", dict(output_size=5)),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case,layout", op_layouts(GRAD_CASES, lambda case: OPS[GRAD_CASES[case][0]].dims))
def test_gradcheck_and_double_backward(backend, device, case, layout):
    """gradcheck and gradgradcheck in float64 on tie-free inputs (distinct
    integers: a 1e-6 step never changes a window's winner), and the double
    backward (d grad_input / d grad_output applied to a vector) against torch's."""
    op, kwargs = GRAD_CASES[case]
    spec = OPS[op]
    shape = (1, 2, 7, 6) if spec.dims == 2 else (1, 2, 13)
    x = build_input(shape, layout, torch.float64, device, kind="perm").requires_grad_()

    def fn(f):
        def call(t):
            res = f(t, **kwargs)
            return res[0] if isinstance(res, tuple) else res

        return call

    assert torch.autograd.gradcheck(fn(spec.ours), (x,))
    assert torch.autograd.gradgradcheck(fn(spec.ours), (x,))

    def double_backward(f):
        out = fn(f)(x)
        g = output_grad(out, integer=True).requires_grad_()
        (gx,) = torch.autograd.grad(out, x, g, create_graph=True)
        v = output_grad(gx, integer=True, seed=11)
        (gg,) = torch.autograd.grad(gx, g, v)
        return gg, v

    (ours, v), (ref, _) = double_backward(spec.ours), double_backward(spec.torch)
    assert ref.abs().sum() > 0
    if spec.is_max:
        assert_equal(ours, ref)
    else:
        # d grad_input / d grad_output applied to v is the pooling of v itself
        (ft, fm), _ = avg_budgets(op, v, ref, kwargs, None)
        assert_close(ours, ref, dtype=torch.float64, terms=ft, magnitude=fm)


# --------------------------------------------------------------------------- the raw ops


def _raw_cases(device, channels_last, requires_grad):
    """name -> (op overload, args) for torch.library.opcheck."""
    ops = torch.ops.d2l_ext

    def inp(shape, dtype=torch.float64, kind="perm"):
        t = make_input(shape, dtype, device, kind=kind)
        if channels_last:
            t = t.contiguous(memory_format=CL)
        return t

    x = inp((2, 3, 7, 6))
    big = inp((1, 2, 20, 21))
    xg, bigg = x.clone().requires_grad_(requires_grad), big.clone().requires_grad_(requires_grad)
    window = ([3, 2], [2, 1], [1, 1], [1, 2], True)
    big_window = ([17, 16], [1, 2], [8, 8], [1, 1], False)
    avg_window = ([3, 2], [2, 1], [1, 1], True, False, None)
    out, off = ops.max_pool2d(x, *window)
    bout, boff = ops.max_pool2d(big, *big_window)
    aout = ops.avg_pool2d(x, *avg_window)
    adout = ops.adaptive_avg_pool2d(x, [3, 4])
    amout, amoff = ops.adaptive_max_pool2d(x, [3, 4])
    bamout, bamoff = ops.adaptive_max_pool2d(big, [1, 1])  # 21 x 22 taps: int32

    def grad(t):
        return (
            output_grad(t, integer=False)
            .contiguous(memory_format=CL if channels_last else torch.contiguous_format)
            .requires_grad_(requires_grad)
        )

    return {
        "max_pool2d": (ops.max_pool2d.default, (xg, *window)),
        "max_pool2d_int32_offsets": (ops.max_pool2d.default, (bigg, *big_window)),
        "max_pool2d_integer_input": (ops.max_pool2d.default, (x.long(), *window)),
        "avg_pool2d": (ops.avg_pool2d.default, (xg, *avg_window)),
        "avg_pool2d_divisor": (ops.avg_pool2d.default, (xg, [3, 3], [2, 2], [1, 1], False, True, 5)),
        "avg_pool2d_int64_input": (ops.avg_pool2d.default, (x.long(), *avg_window)),
        "adaptive_avg_pool2d": (ops.adaptive_avg_pool2d.default, (xg, [3, 4])),
        "adaptive_max_pool2d": (ops.adaptive_max_pool2d.default, (xg, [3, 4])),
        "adaptive_max_pool2d_int32_offsets": (ops.adaptive_max_pool2d.default, (bigg, [1, 1])),
        "_max_pool2d_backward": (ops._max_pool2d_backward.default, (grad(out), off, [7, 6], *window)),
        "_max_pool2d_backward_int32_offsets": (
            ops._max_pool2d_backward.default,
            (grad(bout), boff, [20, 21], *big_window),
        ),
        "_avg_pool2d_backward": (ops._avg_pool2d_backward.default, (grad(aout), [7, 6], *avg_window)),
        "_adaptive_avg_pool2d_backward": (ops._adaptive_avg_pool2d_backward.default, (grad(adout), [7, 6])),
        "_adaptive_max_pool2d_backward": (
            ops._adaptive_max_pool2d_backward.default,
            (grad(amout), amoff, [7, 6]),
        ),
        "_adaptive_max_pool2d_backward_int32_offsets": (
            ops._adaptive_max_pool2d_backward.default,
            (grad(bamout), bamoff, [20, 21]),
        ),
    }


RAW_CASES = [
    "max_pool2d",
    "max_pool2d_int32_offsets",
    "max_pool2d_integer_input",
    "avg_pool2d",
    "avg_pool2d_divisor",
    "avg_pool2d_int64_input",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_int32_offsets",
    "_max_pool2d_backward",
    "_max_pool2d_backward_int32_offsets",
    "_avg_pool2d_backward",
    "_adaptive_avg_pool2d_backward",
    "_adaptive_max_pool2d_backward",
    "_adaptive_max_pool2d_backward_int32_offsets",
]
INTEGER_RAW_CASES = {"max_pool2d_integer_input", "avg_pool2d_int64_input"}


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "case,requires_grad",
    [
        pytest.param(case, rg, id=f"{case}-{'grad' if rg else 'nograd'}")
        for case in RAW_CASES
        for rg in (False, True)
        if not (rg and case in INTEGER_RAW_CASES)  # integer tensors cannot require grad
    ],
)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck(device, case, layout, requires_grad):
    skip_unless_native_kernels(device)
    if case in INTEGER_RAW_CASES and device != "cpu":
        pytest.skip("integer pooling runs the Python fallback on CUDA")
    op, args = _raw_cases(device, layout == "channels_last", requires_grad)[case]
    torch.library.opcheck(op, args)


@requires_native
@pytest.mark.parametrize("device", DEVICES)
def test_raw_offsets_are_compact(device):
    """Offsets are uint8 up to 256 taps per window, else int32 (adaptive windows:
    (ceil(in / out) + 1) taps per axis), laid out like the output."""
    skip_unless_native_kernels(device)
    ops = torch.ops.d2l_ext
    x = make_input((1, 2, 40, 41), torch.float32, device)
    for kernel, expected in (
        ([16, 16], torch.uint8),
        ([17, 16], torch.int32),
        ([1, 1], torch.uint8),
        ([8, 32], torch.uint8),
        ([9, 29], torch.int32),
        ([3, 3], torch.uint8),
    ):
        out, off = ops.max_pool2d(x, kernel, [1, 1], [0, 0], [1, 1], False)
        assert off.dtype == expected and off.shape == out.shape, kernel
    for size, out_size, expected in (
        ((15, 15), [1, 1], torch.uint8),
        ((16, 15), [1, 1], torch.int32),
        ((40, 41), [3, 3], torch.uint8),
        ((40, 41), [1, 3], torch.int32),
    ):
        out, off = ops.adaptive_max_pool2d(x[..., : size[0], : size[1]].contiguous(), out_size)
        assert off.dtype == expected and off.shape == out.shape, (size, out_size)
    xc = x.contiguous(memory_format=CL)
    out, off = ops.max_pool2d(xc, [3, 3], [2, 2], [1, 1], [1, 1], False)
    assert out.is_contiguous(memory_format=CL) and off.is_contiguous(memory_format=CL)


def _misuse_args(device):
    ops = torch.ops.d2l_ext
    x = make_input((2, 3, 7, 6), torch.float32, device)
    window = ([3, 3], [2, 2], [1, 1], [1, 1], False)
    out, off = ops.max_pool2d(x, *window)
    g = torch.ones_like(out)
    big = make_input((1, 1, 40, 40), torch.float32, device)
    bout, boff = ops.adaptive_max_pool2d(big, [1, 1])
    return ops, x, window, g, off, bout, boff


# name -> (call(ops, x, window, g, off, bout, boff), a word of the message)
RAW_MISUSE = {
    "backward_offset_int64": (
        lambda o, x, w, g, off, *_: o._max_pool2d_backward(g, off.long(), [7, 6], *w),
        "offset",
    ),
    "backward_offset_int32_for_small_window": (
        lambda o, x, w, g, off, *_: o._max_pool2d_backward(g, off.int(), [7, 6], *w),
        "offset",
    ),
    "backward_offset_wrong_shape": (
        lambda o, x, w, g, off, *_: o._max_pool2d_backward(g, off[:1], [7, 6], *w),
        "offset",
    ),
    "backward_grad_wrong_shape": (
        lambda o, x, w, g, off, *_: o._max_pool2d_backward(g[..., :-1], off[..., :-1], [7, 6], *w),
        "grad_output",
    ),
    "backward_input_size_mismatch": (
        lambda o, x, w, g, off, *_: o._max_pool2d_backward(g, off, [9, 6], *w),
        "grad_output",
    ),
    "backward_input_size_zero": (
        lambda o, x, w, g, off, *_: o._max_pool2d_backward(g, off, [0, 6], *w),
        "input_size",
    ),
    "backward_integer_grad": (
        lambda o, x, w, g, off, *_: o._max_pool2d_backward(g.long(), off, [7, 6], *w),
        "grad_output",
    ),
    "adaptive_backward_uint8_for_int32_window": (
        lambda o, x, w, g, off, bout, boff: o._adaptive_max_pool2d_backward(
            torch.ones_like(bout), boff.to(torch.uint8), [40, 40]
        ),
        "offset",
    ),
    "adaptive_backward_3d_grad": (
        lambda o, x, w, g, off, *_: o._adaptive_avg_pool2d_backward(g[0], [7, 6]),
        "grad_output",
    ),
    "avg_backward_divisor_0": (
        lambda o, x, w, g, *_: o._avg_pool2d_backward(g, [7, 6], [3, 3], [2, 2], [1, 1], False, True, 0),
        "divisor",
    ),
    "max_3d_input": (lambda o, x, w, *_: o.max_pool2d(x[0], *w), "input"),
    "avg_5d_input": (
        lambda o, x, *_: o.avg_pool2d(x[None], [3, 3], [2, 2], [1, 1], False, True, None),
        "input",
    ),
    "adaptive_avg_3d_input": (lambda o, x, *_: o.adaptive_avg_pool2d(x[0], [2, 2]), "input"),
    "adaptive_max_3d_input": (lambda o, x, *_: o.adaptive_max_pool2d(x[0], [2, 2]), "input"),
    "adaptive_avg_integer_input": (lambda o, x, *_: o.adaptive_avg_pool2d(x.long(), [2, 2]), "input"),
    "adaptive_max_integer_input": (lambda o, x, *_: o.adaptive_max_pool2d(x.long(), [2, 2]), "input"),
    "avg_int32_input": (
        lambda o, x, *_: o.avg_pool2d(x.int(), [3, 3], [2, 2], [1, 1], False, True, None),
        "input",
    ),
    "max_bool_input": (lambda o, x, w, *_: o.max_pool2d(x > 0, *w), "input"),
    "max_zero_channels": (lambda o, x, w, *_: o.max_pool2d(x[:, :0], *w), "input"),
    "max_kernel_0": (lambda o, x, *_: o.max_pool2d(x, [0, 3], [2, 2], [0, 1], [1, 1], False), "kernel"),
    "avg_stride_0": (lambda o, x, *_: o.avg_pool2d(x, [3, 3], [0, 2], [1, 1], False, True, None), "stride"),
    "max_dilation_0": (lambda o, x, *_: o.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 0], False), "dilation"),
    "max_negative_padding": (
        lambda o, x, *_: o.max_pool2d(x, [3, 3], [2, 2], [-1, 1], [1, 1], False),
        "padding",
    ),
    "avg_padding_too_large": (
        lambda o, x, *_: o.avg_pool2d(x, [3, 3], [2, 2], [2, 1], False, True, None),
        "padding",
    ),
    "avg_divisor_0": (lambda o, x, *_: o.avg_pool2d(x, [3, 3], [2, 2], [1, 1], False, True, 0), "divisor"),
    "max_output_too_small": (
        lambda o, x, *_: o.max_pool2d(x, [8, 3], [2, 2], [0, 0], [1, 1], False),
        "output size",
    ),
    "adaptive_negative_output_size": (lambda o, x, *_: o.adaptive_avg_pool2d(x, [-1, 2]), "output_size"),
    "three_kernel_values": (
        lambda o, x, *_: o.max_pool2d(x, [3, 3, 3], [2, 2], [1, 1], [1, 1], False),
        "kernel_size",
    ),
}


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(RAW_MISUSE))
def test_raw_op_misuse(device, case):
    skip_unless_native_kernels(device)
    call, word = RAW_MISUSE[case]
    with pytest.raises(RuntimeError, match=word):
        call(*_misuse_args(device))


# --------------------------------------------------------------------------- torch.compile


def _compile_model(x):
    a, i = D.max_pool2d(x, 3, 2, 1, return_indices=True)
    b = D.avg_pool2d(a, 2, 1, 1, ceil_mode=True, count_include_pad=False)
    c = D.adaptive_avg_pool2d(b, (2, 3))
    m, j = D.adaptive_max_pool2d(b, 2, return_indices=True)
    seq = x.flatten(2)
    e = D.max_pool1d(seq, 4, 3, 2, dilation=2)
    f = D.avg_pool1d(seq, 3, 2, 1)
    h = D.adaptive_avg_pool1d(seq, 5) + D.adaptive_max_pool1d(seq, 5)
    return (c, m, e, f, h), (i, j)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "backend_name,compile_backend,layout",
    [
        pytest.param("native", "aot_eager", "contiguous", marks=requires_native),
        pytest.param("native", "aot_eager", "channels_last", marks=requires_native),
        pytest.param("native", "inductor", "channels_last", marks=requires_native),
        pytest.param("python", "aot_eager", "contiguous"),
    ],
)
def test_torch_compile_fullgraph(device, backend_name, compile_backend, layout):
    """Forward and backward of the functional ops compiled with fullgraph=True equal eager."""
    if backend_name == "native":
        skip_unless_native_kernels(device)
    x0 = build_input((2, 3, 9, 8), layout, torch.float32, device, kind="perm")

    def run(fn, abs_weights=False):
        x = x0.detach().requires_grad_()
        outs, idxs = fn(x)
        weights = [output_grad(o, integer=True, seed=20 + k) for k, o in enumerate(outs)]
        if abs_weights:
            weights = [w.abs() for w in weights]
        sum((o * w).sum() for o, w in zip(outs, weights)).backward()
        return [o.detach() for o in outs], idxs, x.grad

    torch._dynamo.reset()
    try:
        with d2l_ext.use_backend(backend_name):
            got = run(torch.compile(_compile_model, fullgraph=True, backend=compile_backend))
            eager = run(_compile_model)
            # every pooling backward is linear with non-negative coefficients: with |w|
            # it gives the sum of the absolute contributions to each input's gradient
            grad_mag = _max_abs(run(_compile_model, abs_weights=True)[2])
    finally:
        torch._dynamo.reset()
    # The pooling ops are the same kernels compiled or not (native: opaque custom
    # ops; python: the same aten ops): outputs and indices are bit for bit equal.
    for a, b in zip(got[1], eager[1]):
        assert_equal(a, b, "indices")
    for k, (a, b) in enumerate(zip(got[0], eager[0])):
        assert_equal(a, b, f"output {k}")
    # The compiler may add up the up to 5 branches' contributions to x's
    # gradient in another order.
    assert_close(got[2], eager[2], dtype=torch.float32, terms=5, magnitude=grad_mag, msg="gradient")
    assert grad_mag > 0


# --------------------------------------------------------------------------- backends agree


AGREE_CASES = [
    "alexnet_max_3_2",
    "dilation_channels_last",
    "ceil_exclude_pad",
    "divisor_override",
    "adaptive_overlapping",
    "adaptive_max_larger_than_input",
    "max1d",
    "avg1d",
    "adaptive_avg1d",
    "unbatched_max",
    "many_channels_max",
    "offset_int32",
]


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", AGREE_CASES)
def test_backends_agree(device, case):
    """The same call under the native and the forced Python backend."""
    skip_unless_native_kernels(device)
    op, shape, layout, kind, kwargs = CASES[case]
    spec = OPS[op]
    x = build_input(shape, layout, torch.float64, device, kind=kind)

    def make_g(out):
        return output_grad(out, integer=spec.is_max)

    with d2l_ext.use_backend("native"):
        nat = _run(spec.ours, x, kwargs, make_g)
    with d2l_ext.use_backend("python"):
        py = _run(spec.ours, x, kwargs, make_g)
    if spec.is_max:
        for a, b, what in zip(nat[:3], py[:3], ("output", "indices", "gradient")):
            if a is not None or b is not None:
                assert_equal(a, b, what)
    else:
        (ft, fm), (bt, bm) = avg_budgets(op, x, nat[0], kwargs, nat[3])
        assert_close(nat[0], py[0], dtype=x.dtype, terms=ft, magnitude=fm)
        assert_close(nat[2], py[2], dtype=x.dtype, terms=bt, magnitude=bm)


def test_use_backend_restores_after_pooling():
    start = d2l_ext.backend()
    x = make_input((1, 1, 4, 4), torch.float32, "cpu")
    with d2l_ext.use_backend("python"):
        assert d2l_ext.backend() == "python"
        assert_equal(D.max_pool2d(x, 2), F.max_pool2d(x, 2))
    assert d2l_ext.backend() == start


# --------------------------------------------------------------------------- bad inputs


def _x4(d, dtype=torch.float32):
    return (
        make_input((2, 3, 7, 6), dtype, d)
        if dtype.is_floating_point
        else make_input((2, 3, 7, 6), torch.float32, d, kind="ties").to(dtype)
    )


def _x3(d, dtype=torch.float32):
    return make_input((2, 3, 7), dtype, d)


# name -> call(namespace of functions (torch.nn.functional or d2l_ext.functional), device)
BAD_INPUTS = {
    "max2d_padding_over_half_kernel": lambda f, d: f.max_pool2d(_x4(d), 3, padding=2),
    "max2d_padding_over_half_kernel_dilated": pytest.param(lambda f, d: f.max_pool2d(_x4(d), 3, 1, 2, 2)),
    "max2d_padding_over_half_kernel_dilated_2": pytest.param(lambda f, d: f.max_pool2d(_x4(d), 2, 1, 2, 3)),
    "max1d_padding_over_half_kernel_dilated": pytest.param(lambda f, d: f.max_pool1d(_x3(d), 3, 1, 2, 2)),
    "avg2d_padding_over_half_kernel": lambda f, d: f.avg_pool2d(_x4(d), 3, padding=2),
    "avg1d_padding_over_half_kernel": lambda f, d: f.avg_pool1d(_x3(d), 3, padding=2),
    "max2d_kernel_0": lambda f, d: f.max_pool2d(_x4(d), 0),
    "max2d_kernel_0_one_axis": lambda f, d: f.max_pool2d(_x4(d), (2, 0)),
    "max2d_kernel_negative": lambda f, d: f.max_pool2d(_x4(d), -1),
    "avg2d_kernel_0": lambda f, d: f.avg_pool2d(_x4(d), 0),
    "max1d_kernel_0": lambda f, d: f.max_pool1d(_x3(d), 0),
    "avg1d_kernel_0": lambda f, d: f.avg_pool1d(_x3(d), 0),
    "max2d_stride_0": lambda f, d: f.max_pool2d(_x4(d), 2, 0),
    "max2d_stride_negative": lambda f, d: f.max_pool2d(_x4(d), 2, -1),
    "avg2d_stride_0": lambda f, d: f.avg_pool2d(_x4(d), 2, 0),
    "avg2d_stride_negative": lambda f, d: f.avg_pool2d(_x4(d), 2, -1),
    "max1d_stride_0": lambda f, d: f.max_pool1d(_x3(d), 2, 0),
    "avg1d_stride_0": lambda f, d: f.avg_pool1d(_x3(d), 2, 0),
    "max2d_negative_padding": lambda f, d: f.max_pool2d(_x4(d), 2, 1, -1),
    "avg2d_negative_padding": lambda f, d: f.avg_pool2d(_x4(d), 2, 1, -1),
    "max1d_negative_padding": lambda f, d: f.max_pool1d(_x3(d), 2, 1, -1),
    "avg1d_negative_padding": lambda f, d: f.avg_pool1d(_x3(d), 2, 1, -1),
    "max2d_dilation_0": lambda f, d: f.max_pool2d(_x4(d), 2, 1, 0, 0),
    "max2d_dilation_negative": lambda f, d: f.max_pool2d(_x4(d), 2, 1, 0, -1),
    "max1d_dilation_0": lambda f, d: f.max_pool1d(_x3(d), 2, 1, 0, 0),
    "max2d_kernel_larger_than_input": lambda f, d: f.max_pool2d(_x4(d), 8),
    "max2d_dilated_kernel_larger_than_input": lambda f, d: f.max_pool2d(_x4(d), 3, dilation=4),
    "avg2d_kernel_larger_than_input": lambda f, d: f.avg_pool2d(_x4(d), (2, 7)),
    "max1d_kernel_larger_than_input": lambda f, d: f.max_pool1d(_x3(d), 8),
    "avg1d_kernel_larger_than_input": lambda f, d: f.avg_pool1d(_x3(d), 8),
    "max2d_2d_input": lambda f, d: f.max_pool2d(_x4(d)[0, 0], 2),
    "max2d_5d_input": lambda f, d: f.max_pool2d(_x4(d)[None], 2),
    "avg2d_2d_input": pytest.param(
        lambda f, d: f.avg_pool2d(_x4(d)[0, 0], 2),
    ),
    "avg2d_5d_input": lambda f, d: f.avg_pool2d(_x4(d)[None], 2),
    "max1d_4d_input": lambda f, d: f.max_pool1d(_x4(d), 2),
    "max1d_1d_input": lambda f, d: f.max_pool1d(_x3(d)[0, 0], 2),
    "avg1d_4d_input": lambda f, d: f.avg_pool1d(_x4(d), 2),
    "avg1d_1d_input": lambda f, d: f.avg_pool1d(_x3(d)[0, 0], 2),
    "adaptive_avg2d_2d_input": lambda f, d: f.adaptive_avg_pool2d(_x4(d)[0, 0], 2),
    "adaptive_avg2d_5d_input": lambda f, d: f.adaptive_avg_pool2d(_x4(d)[None], 2),
    "adaptive_max2d_2d_input": lambda f, d: f.adaptive_max_pool2d(_x4(d)[0, 0], 2),
    "adaptive_max2d_5d_input": lambda f, d: f.adaptive_max_pool2d(_x4(d)[None], 2),
    "adaptive_avg1d_4d_input": lambda f, d: f.adaptive_avg_pool1d(_x4(d), 2),
    "adaptive_max1d_4d_input": lambda f, d: f.adaptive_max_pool1d(_x4(d), 2),
    "adaptive_avg1d_1d_input": lambda f, d: f.adaptive_avg_pool1d(_x3(d)[0, 0], 2),
    "adaptive_max1d_1d_input": lambda f, d: f.adaptive_max_pool1d(_x3(d)[0, 0], 2),
    "max2d_zero_channels": lambda f, d: f.max_pool2d(_x4(d)[:, :0], 2),
    "max2d_zero_channels_unbatched": lambda f, d: f.max_pool2d(_x4(d)[0, :0], 2),
    "avg2d_zero_channels": lambda f, d: f.avg_pool2d(_x4(d)[:, :0], 2),
    "adaptive_max2d_zero_channels": lambda f, d: f.adaptive_max_pool2d(_x4(d)[:, :0], 2),
    "max1d_zero_channels": lambda f, d: f.max_pool1d(_x3(d)[:, :0], 2),
    "avg1d_zero_channels": lambda f, d: f.avg_pool1d(_x3(d)[:, :0], 2),
    "adaptive_max1d_zero_channels": lambda f, d: f.adaptive_max_pool1d(_x3(d)[:, :0], 2),
    "max2d_zero_height": lambda f, d: f.max_pool2d(_x4(d)[:, :, :0], 2),
    "avg2d_zero_width": lambda f, d: f.avg_pool2d(_x4(d)[..., :0], 2),
    "adaptive_max2d_zero_height": lambda f, d: f.adaptive_max_pool2d(_x4(d)[:, :, :0], 2),
    "adaptive_avg2d_zero_height": lambda f, d: f.adaptive_avg_pool2d(_x4(d)[:, :, :0], 2),
    "max1d_zero_length": lambda f, d: f.max_pool1d(_x3(d)[..., :0], 2),
    "adaptive_avg1d_zero_length": lambda f, d: f.adaptive_avg_pool1d(_x3(d)[..., :0], 2),
    "divisor_override_0": lambda f, d: f.avg_pool2d(_x4(d), 2, divisor_override=0),
    "adaptive_avg2d_three_sizes": lambda f, d: f.adaptive_avg_pool2d(_x4(d), (1, 2, 3)),
    "adaptive_max2d_three_sizes": lambda f, d: f.adaptive_max_pool2d(_x4(d), (1, 2, 3)),
    "adaptive_avg2d_one_size_tuple": lambda f, d: f.adaptive_avg_pool2d(_x4(d), (2,)),
    "adaptive_avg1d_two_sizes": lambda f, d: f.adaptive_avg_pool1d(_x3(d), (2, 3)),
    "adaptive_max1d_two_sizes": lambda f, d: f.adaptive_max_pool1d(_x3(d), (2, 3)),
    "adaptive_avg2d_negative_size": lambda f, d: f.adaptive_avg_pool2d(_x4(d), -1),
    "adaptive_max2d_negative_size": lambda f, d: f.adaptive_max_pool2d(_x4(d), (2, -2)),
    "adaptive_avg1d_negative_size": lambda f, d: f.adaptive_avg_pool1d(_x3(d), -1),
    "adaptive_max1d_negative_size": lambda f, d: f.adaptive_max_pool1d(_x3(d), -3),
    "adaptive_avg2d_int64_input": lambda f, d: f.adaptive_avg_pool2d(_x4(d, torch.int64), 2),
    "adaptive_max2d_int64_input": lambda f, d: f.adaptive_max_pool2d(_x4(d, torch.int64), 2),
    "adaptive_avg1d_int32_input": lambda f, d: f.adaptive_avg_pool1d(_x4(d, torch.int32)[0], 2),
    "adaptive_max1d_uint8_input": lambda f, d: f.adaptive_max_pool1d(_x4(d, torch.uint8)[0], 2),
    "avg2d_uint8_input": lambda f, d: f.avg_pool2d(_x4(d, torch.uint8), 2),
    "avg2d_int32_input": lambda f, d: f.avg_pool2d(_x4(d, torch.int32), 2),
    "avg1d_int32_input": lambda f, d: f.avg_pool1d(_x4(d, torch.int32)[0], 2),
    "avg2d_bool_input": lambda f, d: f.avg_pool2d(_x4(d) > 0, 2),
    "max2d_bool_input": pytest.param(
        lambda f, d: f.max_pool2d(_x4(d) > 0, 2),
    ),
    "max2d_complex_input": pytest.param(
        lambda f, d: f.max_pool2d(_x4(d).to(torch.complex64), 2),
    ),
    "kernel_size_float": lambda f, d: f.max_pool2d(_x4(d), 2.0),
    "kernel_size_three_values": lambda f, d: f.max_pool2d(_x4(d), (2, 2, 2)),
    "stride_three_values": lambda f, d: f.avg_pool2d(_x4(d), 2, (1, 1, 1)),
    "avg1d_two_kernel_values": lambda f, d: f.avg_pool1d(_x3(d), (2, 2)),
    "max1d_two_kernel_values": lambda f, d: f.max_pool1d(_x3(d), (2, 2)),
}


def _bad_input_params():
    params = []
    for name, call in BAD_INPUTS.items():
        if isinstance(call, type(pytest.param(None))):
            params.append(pytest.param(name, call.values[0], marks=call.marks, id=name))
        else:
            params.append(pytest.param(name, call, id=name))
    return params


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case,call", _bad_input_params())
def test_bad_inputs_raise_like_torch(backend, device, case, call):
    """The same exception type as torch's (exactly: NotImplementedError is a
    RuntimeError subclass), for the functional API."""
    with pytest.raises(Exception) as torch_exc:
        call(F, device)
    with pytest.raises(Exception) as ours:
        call(D, device)
    assert type(ours.value) is type(torch_exc.value), (case, repr(ours.value), repr(torch_exc.value))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["adaptive_avg_pool2d", "adaptive_avg_pool1d"])
def test_adaptive_avg_zero_channels_like_torch(backend, device, op):
    x = _x4(device)[:, :0] if op.endswith("2d") else _x3(device)[:, :0]
    ref = OPS[op].torch(x, 2)
    assert ref.numel() == 0
    assert_equal(OPS[op].ours(x, 2), ref)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64], ids=_dtype_id)
@pytest.mark.parametrize("backend_name", backend_params())
def test_negative_divisor_override(device, dtype, backend_name):
    """torch takes any non-zero divisor_override, negative ones too."""
    if backend_name == "native":
        skip_unless_native_kernels(device)
    x = torch.arange(-8, 8).view(1, 1, 4, 4).to(dtype).to(device)
    ref = F.avg_pool2d(x.cpu(), 2, divisor_override=-3)
    with d2l_ext.use_backend(backend_name):
        if dtype.is_floating_point:
            compare_with_torch("avg_pool2d", x, kernel_size=2, divisor_override=-3)
        else:
            assert_equal(D.avg_pool2d(x, 2, divisor_override=-3).cpu(), ref)


# --------------------------------------------------------------------------- the book's pool2d


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_book_pool2d(backend, device, mode):
    """Section 7.5's example and random inputs against the book's loops."""
    X = torch.arange(9.0, device=device).reshape(3, 3)
    expected = [[4.0, 5.0], [7.0, 8.0]] if mode == "max" else [[2.0, 3.0], [5.0, 6.0]]
    assert_equal(D.pool2d(X, (2, 2), mode), torch.tensor(expected, device=device))
    for dtype in (torch.float32, torch.float64):
        for size, pool in (((5, 7), (2, 2)), ((4, 4), (1, 3)), ((6, 3), (3, 1)), ((3, 3), (3, 3))):
            X = make_input(size, dtype, device, seed=sum(size))
            ours = D.pool2d(X, pool, mode)
            loops = reference.pool2d(X, pool, mode)
            if mode == "max":
                assert_equal(ours, loops)
            else:
                mag = _max_abs(X)
                assert_close(ours, loops, dtype=dtype, terms=math.prod(pool) + 1, magnitude=mag)
    assert D.pool2d(X, 2, mode).shape == (X.shape[0] - 1, X.shape[1] - 1)
    with pytest.raises(ValueError):
        D.pool2d(X, (2, 2), "median")
    with pytest.raises(ValueError):
        D.pool2d(X[None], (2, 2), mode)


# --------------------------------------------------------------------------- nn modules

# (class name, constructor args, constructor kwargs, input shape)
MODULES = [
    ("MaxPool2d", (3,), dict(stride=2, padding=1), (2, 3, 9, 9)),
    (
        "MaxPool2d",
        ((3, 2),),
        dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), ceil_mode=True, return_indices=True),
        (2, 3, 9, 8),
    ),
    ("MaxPool2d", (2,), {}, (3, 8, 8)),  # unbatched
    (
        "AvgPool2d",
        (3,),
        dict(stride=2, padding=1, ceil_mode=True, count_include_pad=False, divisor_override=5),
        (2, 3, 9, 8),
    ),
    ("AvgPool2d", (2,), {}, (2, 3, 8, 8)),
    ("AdaptiveAvgPool2d", ((None, 3),), {}, (2, 3, 7, 8)),
    ("AdaptiveAvgPool2d", (1,), {}, (2, 3, 7, 8)),
    ("AdaptiveMaxPool2d", ((2, 3),), dict(return_indices=True), (2, 3, 7, 8)),
    ("AdaptiveMaxPool2d", (4,), {}, (3, 7, 8)),
    ("MaxPool1d", (3,), dict(stride=2, padding=1, dilation=2, return_indices=True), (2, 3, 17)),
    ("MaxPool1d", (17,), {}, (2, 3, 17)),
    ("AvgPool1d", (4,), dict(stride=3, padding=2, ceil_mode=True, count_include_pad=False), (2, 3, 17)),
    ("AdaptiveAvgPool1d", (5,), {}, (2, 3, 17)),
    ("AdaptiveMaxPool1d", (5,), dict(return_indices=True), (3, 17)),
]
_MODULE_OP = {
    "MaxPool2d": "max_pool2d",
    "AvgPool2d": "avg_pool2d",
    "AdaptiveAvgPool2d": "adaptive_avg_pool2d",
    "AdaptiveMaxPool2d": "adaptive_max_pool2d",
    "MaxPool1d": "max_pool1d",
    "AvgPool1d": "avg_pool1d",
    "AdaptiveAvgPool1d": "adaptive_avg_pool1d",
    "AdaptiveMaxPool1d": "adaptive_max_pool1d",
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", range(len(MODULES)), ids=lambda i: f"{MODULES[i][0]}-{i}")
def test_module_is_a_drop_in(backend, device, dtype, case):
    name, args, kwargs, shape = MODULES[case]
    ours = getattr(d2l_ext.nn, name)(*args, **kwargs)
    theirs = getattr(torch.nn, name)(*args, **kwargs)
    assert isinstance(ours, getattr(torch.nn, name)) and type(ours) is not type(theirs)
    assert repr(ours) == repr(theirs)
    assert ours.state_dict() == theirs.state_dict() == {}
    assert list(ours.parameters()) == [] and list(ours.buffers()) == []
    ours.load_state_dict(theirs.state_dict())
    ours = ours.to(device)

    op = _MODULE_OP[name]
    spec = OPS[op]
    x = make_input(shape, dtype, device, kind="ties" if spec.is_max else "randn")

    def make_g(out):
        return output_grad(out, integer=spec.is_max)

    o = _run(lambda t: ours(t), x, {}, make_g)
    r = _run(lambda t: theirs(t), x, {}, make_g)
    assert isinstance(ours(x), tuple) == bool(kwargs.get("return_indices", False))
    if spec.is_max:
        for a, b, what in zip(o[:3], r[:3], ("output", "indices", "gradient")):
            if b is not None:
                assert_equal(a, b, what)
        assert (o[1] is None) == (r[1] is None)
    else:
        fn_kwargs = dict(zip(("output_size",) if spec.adaptive else ("kernel_size",), args), **kwargs)
        (ft, fm), (bt, bm) = avg_budgets(op, x, r[0], fn_kwargs, r[3])
        assert_close(o[0], r[0], dtype=dtype, terms=ft, magnitude=fm, msg="output")
        assert_close(o[2], r[2], dtype=dtype, terms=bt, magnitude=bm, msg="gradient")
    if backend == "native":  # the module really runs the d2l_ext ops
        with torch.enable_grad():
            y = ours(x.detach().requires_grad_())
        y = y[0] if isinstance(y, tuple) else y
        assert any("d2l_ext" in n for n in grad_fn_names(y))


# --------------------------------------------------------------------------- memory


def _nbytes(ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


MEMORY_CASES = {
    "max_pool2d": ((4, 16, 32, 32), dict(kernel_size=3, stride=2, padding=1)),
    "adaptive_max_pool2d": ((4, 16, 32, 32), dict(output_size=(7, 5))),
    "max_pool1d": ((4, 16, 64), dict(kernel_size=3, stride=2, padding=1)),
    "adaptive_max_pool1d": ((4, 16, 64), dict(output_size=9)),
}


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op,layout", op_layouts(MEMORY_CASES))
def test_max_pool_saves_one_byte_per_output(device, op, layout):
    """Max pooling keeps only a uint8 window offset per output for backward;
    torch keeps the input and an int64 index per output."""
    skip_unless_native_kernels(device)
    shape, kwargs = MEMORY_CASES[op]
    x = build_input(shape, layout, torch.float32, device, kind="perm").requires_grad_()
    with d2l_ext.use_backend("native"):
        out, saved = saved_tensors(OPS[op].ours, x, **kwargs)
    assert [s.dtype for s in saved] == [torch.uint8], [(s.dtype, tuple(s.shape)) for s in saved]
    assert saved[0].numel() == out.numel()
    assert _nbytes(saved) == out.numel()
    ref, saved_torch = saved_tensors(OPS[op].torch, x, **kwargs)
    assert any(s.dtype == torch.int64 and s.numel() == ref.numel() for s in saved_torch)
    assert _nbytes(saved_torch) >= x.numel() * 4 + 8 * ref.numel()
    assert 8 * _nbytes(saved) <= _nbytes(saved_torch) - x.numel() * 4
    # and the offsets are enough for backward: torch's gradient, exactly
    g = output_grad(out, integer=True)
    (gx,) = torch.autograd.grad(out, x, g)
    (gx_ref,) = torch.autograd.grad(ref, x, g)
    assert_equal(gx, gx_ref)
    # the raw op hands out the same compact offsets
    if op == "max_pool2d":
        _, off = torch.ops.d2l_ext.max_pool2d(x.detach(), [3, 3], [2, 2], [1, 1], [1, 1], False)
        assert off.dtype == torch.uint8


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["avg_pool2d", "adaptive_avg_pool2d", "avg_pool1d", "adaptive_avg_pool1d"])
def test_avg_pool_saves_nothing(device, op):
    """Average pooling's backward needs only the input's size; torch keeps the input."""
    skip_unless_native_kernels(device)
    spec = OPS[op]
    x = make_input((2, 3, 8, 8) if spec.dims == 2 else (2, 3, 16), torch.float32, device).requires_grad_()
    kwargs = dict(output_size=3) if spec.adaptive else dict(kernel_size=3, stride=2, padding=1)
    with d2l_ext.use_backend("native"):
        out, saved = saved_tensors(spec.ours, x, **kwargs)
    assert saved == []
    _, saved_torch = saved_tensors(spec.torch, x, **kwargs)
    assert _nbytes(saved_torch) >= x.numel() * 4
    (gx,) = torch.autograd.grad(out, x, torch.ones_like(out))
    assert gx.shape == x.shape and (gx > 0).any()


# --------------------------------------------------------------------------- threads


@requires_native
def test_concurrent_calls_from_threads():
    """Forward and backward from several Python threads at once give each thread torch's result."""
    import concurrent.futures

    def work(seed: int) -> bool:
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(4, 8, 23, 19, generator=gen, dtype=torch.float64)
        if seed % 2:
            x = x.contiguous(memory_format=torch.channels_last)
        ok = True
        # float64, |x| < ~6 and |g| < ~6, at most 9 (+ overlap) terms per sum in another order than
        # torch's: rounding differences stay below 1e-14; a race would show as O(1) errors.
        for _ in range(5):
            a = x.clone().requires_grad_()
            b = x.clone().requires_grad_()
            ya = d2l_ext.functional.max_pool2d(a, 3, 2, 1) + d2l_ext.functional.avg_pool2d(a, 3, 2, 1)
            yb = torch.nn.functional.max_pool2d(b, 3, 2, 1) + torch.nn.functional.avg_pool2d(b, 3, 2, 1)
            g = torch.randn(ya.shape, generator=gen, dtype=torch.float64)
            ya.backward(g)
            yb.backward(g)
            ok &= torch.allclose(ya, yb, rtol=0, atol=1e-13) and torch.allclose(
                a.grad, b.grad, rtol=0, atol=1e-13
            )
        return ok

    with d2l_ext.use_backend("native"), concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, range(8)))
    assert all(results), results
