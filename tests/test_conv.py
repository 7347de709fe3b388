"""d2l_ext's convolution ops (conv2d, conv1d, corr2d, the Conv2d/Conv1d modules) against torch.

The reference is always torch's own function (``torch.nn.functional.conv2d`` /
``conv1d``, the ``torch.nn`` modules) on the same inputs. Values and all three
gradients (input, weight, bias) are compared under both backends (native
kernels and the Python fallback), on every device of ``DEVICES``, in float32
and float64 (float16/bfloat16 have their own test).

The native op (``torch.ops.d2l_ext.conv2d``) may not be in the loaded library
yet, or not for every device: the functional then quietly runs the Python
fallback, so a "native" test would test nothing native. Native tests skip
there (``skip_unless_conv_kernel``, the ``conv_backend`` fixture).

Error budget (conftest.py explains the model): every output entry is a sum of
``K = C / groups * kh * kw`` products (plus the bias), every input-gradient
entry a sum over at most ``O / groups * kh * kw`` products of the output
gradient and the weights, every weight-gradient entry a sum over the
``N * OH * OW`` output positions of output gradient times input, and every
bias-gradient entry a sum of the output gradient over those positions. The
rounding errors of such sums are relative to the sums of the absolute values
of their terms, which torch computes here in float64 from |x|, |w|, |b| and
|g| (``conv_budgets``).

On a CUDA device torch's reference runs on the CPU (``_reference_on_cpu``):
cuDNN computes float32 convolutions in TF32 by default (a 10-bit mantissa) and
may pick FFT or Winograd algorithms, whose errors are relative to the whole
tensor's norm; neither fits a per-entry budget of a few float32 ulps.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, NamedTuple

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
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
    backend_with_kernel,
    grad_fn_names,
    requires_native,
    seeded,
    skip_unless_op_kernel,
    tolerances,
    use_backend_with_kernel,
)

CL = torch.channels_last


# --------------------------------------------------------------------------- native or not


def skip_unless_conv_kernel(device: str) -> None:
    skip_unless_op_kernel("conv2d", device)


@pytest.fixture
def conv_backend(backend, request):
    """conftest's ``backend`` fixture, native skipped where there is no conv2d kernel."""
    return backend_with_kernel("conv2d", backend, request)


def _use(backend_name: str, device: str):
    return use_backend_with_kernel("conv2d", backend_name, device)


# --------------------------------------------------------------------------- inputs


_gen = seeded


def make(shape, dtype, device, seed=0) -> torch.Tensor:
    """N(0, 1) drawn in float64 on the CPU, rounded to dtype, moved to device."""
    return torch.randn(shape, generator=_gen(seed), dtype=torch.float64).to(dtype).to(device)


def build(shape, layout, dtype, device, seed=0) -> torch.Tensor:
    """A tensor of ``shape`` (N, C, *spatial) in a layout: contiguous, channels_last
    (4-D only), transposed (last two dims swapped in memory), sliced (every other
    channel and last-axis element of a bigger tensor) or unbatched (``shape``
    without N)."""
    if layout == "contiguous":
        return make(shape, dtype, device, seed)
    if layout == "unbatched":
        return make(shape[1:], dtype, device, seed)
    if layout == "channels_last":
        return make(shape, dtype, device, seed).contiguous(memory_format=CL)
    if layout == "transposed":
        swapped = (*shape[:-2], shape[-1], shape[-2])
        return make(swapped, dtype, device, seed).transpose(-1, -2)
    if layout == "sliced":
        big = (shape[0], 2 * shape[1], *shape[2:-1], 2 * shape[-1])
        return make(big, dtype, device, seed)[:, ::2, ..., ::2]
    raise ValueError(layout)


def output_grad(out: torch.Tensor, seed: int = 7) -> torch.Tensor:
    return make(out.shape, out.dtype, out.device, seed)


def _max_abs(t: torch.Tensor) -> float:
    return float(t.abs().max()) if t.numel() else 0.0


# --------------------------------------------------------------------------- comparison


def _reference_on_cpu(fn: Callable) -> Callable:
    """torch's ``fn`` as the reference, run on the CPU for CUDA tensors (see the
    module docstring); ``.cpu()``/``.to()`` keep the layout and are differentiable."""

    def call(x, w, b=None, **kwargs):
        if x.is_cuda:
            return fn(x.cpu(), w.cpu(), None if b is None else b.cpu(), **kwargs).to(x.device)
        return fn(x, w, b, **kwargs)

    return call


TORCH_FNS = {2: _reference_on_cpu(F.conv2d), 1: _reference_on_cpu(F.conv1d)}
OUR_FNS = {2: D.conv2d, 1: D.conv1d}
NAMES = ("input gradient", "weight gradient", "bias gradient")


def _run(fn, x, w, b, kwargs, g=None):
    """(output, (grad x, grad w[, grad b]), output gradient). ``detach`` keeps the
    strides: a non-contiguous or channels-last input stays so."""
    leaves = [t.detach().requires_grad_() for t in (x, w, b) if t is not None]
    out = fn(leaves[0], leaves[1], leaves[2] if b is not None else None, **kwargs)
    if g is None:
        g = output_grad(out)
    grads = torch.autograd.grad(out, leaves, g)
    return out.detach(), grads, g


def conv_budgets(dims, x, w, b, kwargs, g) -> dict[str, tuple[int, float]]:
    """(terms, magnitude) for conftest's ``assert_close``, per compared tensor.

    * output: ``C / groups * kh * kw`` products plus the bias; magnitude
      ``max |conv(|x|, |w|) + |b||``.
    * input gradient: ``O / groups * kh * kw`` products (an upper bound: with a
      stride fewer taps reach an input); magnitude ``max`` of the input gradient
      of ``conv(|x|, |w|)`` for the output gradient ``|g|``.
    * weight gradient: ``N * OH * OW`` products; magnitude likewise from |x| and |g|.
    * bias gradient: ``N * OH * OW`` terms of g; magnitude ``max_o sum |g[:, o]|``.

    Computed in float64 by torch (on the CPU: exact enough for a bound).
    """
    groups = kwargs.get("groups", 1)
    o, cg, *k = w.shape
    taps = math.prod(k)
    x64 = x.detach().double().cpu().abs().requires_grad_()
    w64 = w.detach().double().cpu().abs().requires_grad_()
    b64 = None if b is None else b.detach().double().cpu().abs()
    fn = F.conv2d if dims == 2 else F.conv1d
    m = fn(x64, w64, b64, **kwargs)
    g64 = g.detach().double().cpu().abs()
    gx, gw = torch.autograd.grad(m, (x64, w64), g64)
    channel_dim = 1 if m.dim() == dims + 2 else 0
    per_channel = m.numel() // o
    gb = g64.sum([i for i in range(g64.dim()) if i != channel_dim]) if g64.numel() else g64.new_zeros(o)
    return {
        "output": (cg * taps + (b is not None), _max_abs(m.detach())),
        "input gradient": ((o // groups) * taps, _max_abs(gx)),
        "weight gradient": (per_channel, _max_abs(gw)),
        "bias gradient": (per_channel, _max_abs(gb)),
    }


def compare_with_torch(x, w, b=None, *, dims=2, **kwargs):
    """Run d2l_ext's and torch's conv on the same tensors; compare the output and
    the gradients of x, w (and b) within ``conv_budgets``. Returns (ours, torch's)."""
    ref = _run(TORCH_FNS[dims], x, w, b, kwargs)
    ours = _run(OUR_FNS[dims], x, w, b, kwargs, g=ref[2])
    budgets = conv_budgets(dims, x, w, b, kwargs, ref[2])
    assert ours[0].device == x.device
    terms, mag = budgets["output"]
    assert_close(ours[0], ref[0], dtype=x.dtype, terms=terms, magnitude=mag, msg="output")
    assert len(ours[1]) == len(ref[1])
    for name, a, r in zip(NAMES, ours[1], ref[1]):
        terms, mag = budgets[name]
        assert_close(a, r, dtype=x.dtype, terms=terms, magnitude=mag, msg=name)
    return ours, ref


# --------------------------------------------------------------------------- explicit cases


class Case(NamedTuple):
    x: tuple  # input shape (N, C, *spatial); "unbatched" drops N
    w: tuple  # weight shape (O, C / groups, *kernel)
    bias: bool
    kwargs: dict
    layout: str = "contiguous"  # of the input, see build()
    w_layout: str = "contiguous"


CASES = {
    "basic_3x3": Case((2, 3, 8, 9), (4, 3, 3, 3), True, {}),
    "no_bias": Case((2, 3, 8, 9), (4, 3, 3, 3), False, dict(padding=1)),
    "stride_2_padding_1": Case((2, 3, 9, 8), (4, 3, 3, 3), True, dict(stride=2, padding=1)),
    "stride_padding_pairs": Case((2, 3, 9, 10), (5, 3, 3, 2), True, dict(stride=(2, 1), padding=(1, 2))),
    "stride_larger_than_kernel": Case((2, 3, 11, 12), (4, 3, 2, 3), True, dict(stride=(4, 5))),
    "lists_of_one": Case((2, 3, 9, 8), (4, 3, 3, 3), True, dict(stride=[2], padding=[1], dilation=[1])),
    "padding_valid": Case((2, 3, 8, 9), (4, 3, 3, 2), True, dict(padding="valid")),
    "padding_same_odd": Case((2, 3, 8, 9), (4, 3, 3, 5), True, dict(padding="same")),
    "padding_same_even": Case((2, 3, 8, 9), (4, 3, 4, 2), True, dict(padding="same")),
    "padding_same_dilated": Case((2, 3, 9, 8), (4, 3, 3, 2), True, dict(padding="same", dilation=(2, 3))),
    "padding_same_even_dilated": Case((2, 3, 9, 8), (4, 3, 2, 4), False, dict(padding="same", dilation=3)),
    "dilation_2": Case((2, 3, 10, 9), (4, 3, 3, 3), True, dict(dilation=2, padding=2)),
    "dilation_pair_stride": Case((2, 3, 11, 10), (4, 3, 3, 2), True, dict(dilation=(2, 1), stride=(1, 2))),
    "groups_2": Case((2, 4, 7, 7), (6, 2, 3, 3), True, dict(groups=2, padding=1)),
    "groups_3_strided_dilated": Case(
        (2, 6, 11, 10), (9, 2, 2, 3), True, dict(groups=3, stride=2, padding=(2, 1), dilation=(2, 1))
    ),
    "depthwise": Case((2, 5, 8, 8), (5, 1, 3, 3), True, dict(groups=5, padding=1)),
    "depthwise_multiplier_2": Case((2, 5, 8, 7), (10, 1, 3, 3), False, dict(groups=5, stride=2)),
    "odd_sizes": Case((3, 5, 13, 11), (7, 5, 3, 4), True, dict(stride=(2, 3), padding=(1, 2))),
    "kernel_1x1": Case((2, 3, 5, 4), (8, 3, 1, 1), True, {}),
    "kernel_1x1_stride_2": Case((2, 3, 5, 4), (8, 3, 1, 1), False, dict(stride=2)),
    "kernel_equals_input": Case((2, 3, 5, 6), (4, 3, 5, 6), True, {}),
    "kernel_equals_padded_input": Case((2, 3, 3, 4), (4, 3, 5, 6), True, dict(padding=1)),
    "transposed_input": Case((2, 3, 9, 7), (4, 3, 3, 3), True, dict(stride=2, padding=1), "transposed"),
    "sliced_input": Case((2, 3, 9, 7), (4, 3, 3, 3), True, dict(padding=1), "sliced"),
    "channels_last_input": Case((2, 5, 8, 9), (6, 5, 3, 3), True, dict(padding=1), "channels_last"),
    "channels_last_weight": Case(
        (2, 5, 8, 9), (6, 5, 3, 3), True, dict(stride=2), "contiguous", "channels_last"
    ),
    "channels_last_both_groups": Case(
        (2, 6, 8, 9), (6, 3, 3, 3), True, dict(groups=2, padding=1), "channels_last", "channels_last"
    ),
    "transposed_weight": Case((2, 3, 8, 9), (4, 3, 3, 2), True, dict(padding=1), "contiguous", "transposed"),
    "zero_batch": Case((0, 3, 8, 9), (4, 3, 3, 3), True, dict(padding=1)),
    "zero_batch_channels_last": Case((0, 3, 8, 9), (4, 3, 3, 3), True, dict(stride=2), "channels_last"),
    "unbatched": Case((1, 3, 8, 9), (4, 3, 3, 3), True, dict(stride=2, padding=1), "unbatched"),
    "unbatched_same_groups": Case(
        (1, 4, 7, 8), (4, 2, 2, 3), False, dict(padding="same", groups=2), "unbatched"
    ),
    # the book's networks (chapters 7 and 8), batches kept small
    "lenet_conv1": Case((4, 1, 28, 28), (6, 1, 5, 5), True, dict(padding=2)),
    "lenet_conv2": Case((4, 6, 14, 14), (16, 6, 5, 5), True, {}),
    "alexnet_conv1": Case((2, 3, 67, 67), (96, 3, 11, 11), True, dict(stride=4, padding=1)),
    "vgg_3x3": Case((2, 64, 8, 8), (64, 64, 3, 3), True, dict(padding=1), "channels_last"),
    "resnet_stem": Case((2, 3, 32, 32), (64, 3, 7, 7), True, dict(stride=2, padding=3)),
    "resnet_1x1_downsample": Case((2, 64, 8, 8), (128, 64, 1, 1), True, dict(stride=2)),
    "nin_1x1": Case((2, 96, 6, 6), (96, 96, 1, 1), True, {}),
    # the CPU's direct kernel (stride 1, <= 16 output channels): 7 taps a row (5 + 1 + 1),
    # rows of 16 + 16 + 8 outputs, 12 channels in a 16-channel block; 3 taps, asymmetric padding
    "direct_k7_wide": Case((2, 3, 9, 40), (12, 3, 7, 7), True, dict(padding=3)),
    "direct_k3_5_channels": Case((3, 4, 6, 19), (5, 4, 3, 3), True, dict(padding=(0, 2))),
    "direct_16_channels_in_and_out": Case((2, 16, 7, 17), (16, 16, 5, 2), False, dict(padding=(2, 1))),
    # the CPU's AVX-512 tiles (> 8 channels): 37 outputs = a two-block tile (16 + 16) and an odd
    # block of 5 lanes, 20 inputs (input gradient 16 + 4), one-row tiles of 9 columns; weight tiles
    # of 9 (channel, ky) pairs with a tail of 6
    "tiles_3x3_odd_channels": Case((3, 20, 7, 9), (37, 20, 3, 3), True, dict(padding=1)),
    # 3 x 3 outputs: two-block tiles of 4 rows spanning images (15 rows: 4 + 4 + 4 + 3)
    "tiles_3x3_outputs": Case((5, 24, 3, 3), (32, 24, 3, 3), True, dict(padding=1)),
    # 61 columns: chunks of 11 (5 x 11 + 6); a 3 x 5 window, no vertical padding
    "tiles_wide_rows": Case((2, 17, 5, 61), (18, 17, 3, 5), False, dict(padding=(0, 2))),
    # a 7-wide window (taps at run time; weight tiles of 4 pairs x 7)
    "tiles_k7": Case((2, 18, 9, 10), (20, 18, 7, 7), True, dict(padding=3)),
    # 13 wide: forward and input gradient on the tiles, the weight gradient on im2col + GEMM
    "tiles_k13_weight_by_gemm": Case((2, 17, 4, 20), (17, 17, 1, 13), True, dict(padding=(0, 6))),
    # stride 2 (>= 16 input channels): forward and weight gradient on the tiles, input gradient on
    # im2col; a 3x3, a 5x5, an unpadded even input
    "tiles_stride_2": Case((3, 16, 9, 11), (20, 16, 3, 3), True, dict(stride=2, padding=1)),
    "tiles_stride_2_k5": Case((2, 16, 11, 12), (18, 16, 5, 5), True, dict(stride=2, padding=2)),
    "tiles_stride_2_unpadded": Case((2, 17, 8, 8), (33, 17, 3, 3), False, dict(stride=2)),
    # 1x1 on small images with >= 128 channels summed: all three passes on the tiles (weight
    # tiles of 9 channels x 1 tap); NiN's 96 channels: forward and input gradient on a GEMM
    "tiles_1x1": Case((2, 130, 5, 7), (129, 130, 1, 1), True, {}),
}


def _case_tensors(case: Case, dtype, device):
    x = build(case.x, case.layout, dtype, device, seed=1)
    w = build(case.w, case.w_layout, dtype, device, seed=2)
    b = make(case.w[:1], dtype, device, seed=3) if case.bias else None
    return x, w, b


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_conv2d_matches_torch(conv_backend, device, dtype, case):
    c = CASES[case]
    x, w, b = _case_tensors(c, dtype, device)
    if c.layout in ("transposed", "sliced", "channels_last") and x.numel():
        assert not x.is_contiguous()
    (out, grads, _), _ = compare_with_torch(x, w, b, **c.kwargs)
    assert grads[0].shape == x.shape and grads[1].shape == w.shape
    if c.kwargs.get("padding") == "same":
        assert out.shape[-2:] == x.shape[-2:]
    if x.numel():
        assert _max_abs(grads[1]) > 0 and out.abs().sum() > 0


CASES_1D = {
    # TextCNN (section 16.3): 2 x 100-d embeddings, kernel widths 3, 4, 5, 100 channels each
    "textcnn_k3": Case((4, 200, 37), (100, 200, 3), True, {}),
    "textcnn_k4": Case((4, 200, 37), (100, 200, 4), True, {}),
    "textcnn_k5": Case((4, 200, 37), (100, 200, 5), True, {}),
    # the embedding comes as (N, L, C) and is permuted to (N, C, L): a non-contiguous input
    "textcnn_permuted_embedding": Case((4, 200, 37), (100, 200, 3), True, {}, "transposed"),
    "same_odd": Case((2, 8, 17), (6, 8, 5), True, dict(padding="same")),
    "same_even_dilated": Case((2, 8, 17), (6, 8, 4), True, dict(padding="same", dilation=3)),
    "valid": Case((2, 8, 17), (6, 8, 4), False, dict(padding="valid")),
    "stride_padding": Case((2, 8, 17), (6, 8, 3), True, dict(stride=3, padding=2)),
    "tuple_args": Case((2, 8, 17), (6, 8, 3), True, dict(stride=(2,), padding=(1,), dilation=(2,))),
    "groups_4": Case((2, 8, 17), (12, 2, 3), True, dict(groups=4, padding=1)),
    "depthwise": Case((2, 8, 17), (8, 1, 5), False, dict(groups=8, padding=2)),
    "sliced": Case((2, 8, 17), (6, 8, 3), True, dict(padding=1), "sliced"),
    "kernel_equals_input": Case((2, 8, 7), (6, 8, 7), True, {}),
    "zero_batch": Case((0, 8, 17), (6, 8, 3), True, dict(padding=1)),
    "unbatched": Case((1, 8, 17), (6, 8, 3), True, dict(stride=2), "unbatched"),
    "unbatched_same": Case((1, 8, 17), (6, 8, 4), True, dict(padding="same"), "unbatched"),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", list(CASES_1D))
def test_conv1d_matches_torch(conv_backend, device, dtype, case):
    c = CASES_1D[case]
    x, w, b = _case_tensors(c, dtype, device)
    (out, grads, _), _ = compare_with_torch(x, w, b, dims=1, **c.kwargs)
    assert out.dim() == x.dim() and grads[0].shape == x.shape
    if c.kwargs.get("padding") == "same":
        assert out.shape[-1] == x.shape[-1]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("wanted", ["input", "weight", "bias", "input_bias", "weight_bias"])
def test_partial_requires_grad(conv_backend, device, wanted):
    """Only some of x, w, b require grad (the backward's output mask): the others
    get no gradient, the wanted ones torch's."""
    x, w, b = _case_tensors(CASES["groups_3_strided_dilated"], torch.float64, device)
    kwargs = CASES["groups_3_strided_dilated"].kwargs
    flags = {"input": "input" in wanted, "weight": "weight" in wanted, "bias": "bias" in wanted}
    results = []
    for fn in (D.conv2d, TORCH_FNS[2]):
        xs, ws, bs = (t.detach().requires_grad_(flags[n]) for t, n in zip((x, w, b), flags))
        out = fn(xs, ws, bs, **kwargs)
        assert out.requires_grad
        g = output_grad(out)
        out.backward(g)
        results.append((out.detach(), xs.grad, ws.grad, bs.grad, g))
    budgets = conv_budgets(2, x, w, b, kwargs, results[1][4])
    assert_close(
        results[0][0],
        results[1][0],
        dtype=torch.float64,
        terms=budgets["output"][0],
        magnitude=budgets["output"][1],
    )
    for name, flag, a, r in zip(NAMES, flags.values(), results[0][1:4], results[1][1:4]):
        assert (a is None) == (not flag) == (r is None), name
        if flag:
            assert_close(
                a, r, dtype=torch.float64, terms=budgets[name][0], magnitude=budgets[name][1], msg=name
            )


@pytest.mark.parametrize("device", DEVICES)
def test_no_grad_forward(conv_backend, device):
    x, w, b = _case_tensors(CASES["basic_3x3"], torch.float32, device)
    w.requires_grad_()
    with torch.no_grad():
        out = D.conv2d(x, w, b)
    assert out.grad_fn is None and not out.requires_grad
    assert out.shape == F.conv2d(x, w, b).shape


# --------------------------------------------------------------------------- hypothesis


@st.composite
def conv_problems(draw):
    """A random conv1d or conv2d problem whose padded input always fits the dilated kernel."""
    dims = draw(st.sampled_from([1, 2]))
    as_int = draw(st.booleans())

    def pack(v):  # an int when all axes agree (half the time), else a tuple
        return v[0] if as_int and len(set(v)) == 1 else tuple(v)

    groups = draw(st.integers(1, 3))
    cg, og = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k = [draw(st.integers(1, 5)) for _ in range(dims)]
    d = [draw(st.integers(1, 3)) for _ in range(dims)]
    spans = [di * (ki - 1) + 1 for ki, di in zip(k, d)]
    pad_kind = draw(st.sampled_from(["ints", "ints", "same", "valid"]))
    kwargs = dict(dilation=pack(d), groups=groups)
    if pad_kind == "same":  # stride 1 only; the padding always fits the kernel
        sizes = [draw(st.integers(1, 9)) for _ in range(dims)]
        kwargs.update(padding="same", stride=draw(st.sampled_from([1, (1,) * dims])))
    else:
        p = [draw(st.integers(0, 3)) for _ in range(dims)] if pad_kind == "ints" else [0] * dims
        sizes = [draw(st.integers(max(1, sp - 2 * pi), max(1, sp - 2 * pi) + 8)) for sp, pi in zip(spans, p)]
        kwargs.update(
            padding=pack(p) if pad_kind == "ints" else "valid",
            stride=pack([draw(st.integers(1, 3)) for _ in range(dims)]),
        )
    layouts = ["contiguous", "transposed", "sliced", "unbatched"] + ["channels_last"] * (dims == 2)
    return dict(
        dims=dims,
        x=(draw(st.integers(0, 3)), groups * cg, *sizes),
        w=(groups * og, cg, *k),
        bias=draw(st.booleans()),
        kwargs=kwargs,
        layout=draw(st.sampled_from(layouts)),
        w_layout=draw(st.sampled_from(["contiguous", "transposed"] + ["channels_last"] * (dims == 2))),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("backend_name", BACKENDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=conv_problems())
def test_hypothesis_matches_torch(device, dtype, backend_name, p):
    """Random N (0..3), groups dividing C and O, kernels 1..5 per axis, stride
    1..3, padding 0..3 / "same" / "valid", dilation 1..3, bias, layouts of input
    and weight, unbatched inputs."""
    with _use(backend_name, device):
        x = build(p["x"], p["layout"], dtype, device, p["seed"])
        w = build(p["w"], p["w_layout"], dtype, device, p["seed"] + 1)
        b = make(p["w"][:1], dtype, device, p["seed"] + 2) if p["bias"] else None
        compare_with_torch(x, w, b, dims=p["dims"], **p["kwargs"])


@st.composite
def tile_problems(draw):
    """Ungrouped float32 conv2d problems in the range of the CPU's AVX-512 tiles: more than 8
    output channels, stride 1 or 2, windows 1..5 per axis (the weight tiles take up to 11 wide),
    rows up to 40 outputs wide (chunks of a row), small images (tiles across images)."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = draw(st.sampled_from([1, 1, 2]))
    ph, pw = draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))
    h = draw(st.integers(max(1, kh - 2 * ph), 12))
    w = draw(st.integers(max(1, kw - 2 * pw), 44))
    return dict(
        x=(draw(st.integers(1, 3)), draw(st.integers(1, 40)), h, w),
        w=(draw(st.integers(9, 40)), None, kh, kw),
        bias=draw(st.booleans()),
        kwargs=dict(stride=stride, padding=(ph, pw)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=tile_problems())
def test_hypothesis_cpu_tiles_match_torch(p):
    """The tiles' shapes at random (and, where a layer is outside them, whichever path takes it):
    output and all three gradients against torch in float32 within the float budget."""
    skip_unless_conv_kernel("cpu")
    with _use("native", "cpu"):
        x = make(p["x"], torch.float32, "cpu", p["seed"])
        w = make((p["w"][0], p["x"][1], *p["w"][2:]), torch.float32, "cpu", p["seed"] + 1)
        b = make(p["w"][:1], torch.float32, "cpu", p["seed"] + 2) if p["bias"] else None
        compare_with_torch(x, w, b, dims=2, **p["kwargs"])


# --------------------------------------------------------------------------- gradcheck

# Small shapes: gradcheck evaluates the op twice per input element and backward once per output element.
GRAD_CASES = {
    "conv2d_groups_stride_dilation": (
        2,
        Case(
            (1, 4, 5, 5), (4, 2, 2, 2), True, dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
        ),
    ),
    "conv2d_same_even_channels_last": (
        2,
        Case((1, 3, 4, 5), (2, 3, 2, 3), True, dict(padding="same"), "channels_last"),
    ),
    "conv2d_no_bias_unbatched": (2, Case((1, 2, 5, 5), (3, 2, 3, 3), False, dict(stride=2), "unbatched")),
    "conv1d": (1, Case((1, 4, 9), (4, 2, 3), True, dict(stride=2, padding=2, dilation=2, groups=2))),
}


def _grad_inputs(name, device):
    dims, c = GRAD_CASES[name]
    x, w, b = _case_tensors(c, torch.float64, device)
    inputs = tuple(t.detach().requires_grad_() for t in (x, w, b) if t is not None)

    def fn(*args):
        return OUR_FNS[dims](*args, **c.kwargs)

    return fn, inputs


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(GRAD_CASES))
def test_gradcheck(conv_backend, device, case):
    fn, inputs = _grad_inputs(case, device)
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(GRAD_CASES))
def test_gradgradcheck_python_backend(device, case):
    """Double backward of the Python fallback (the native op's double backward
    is not required)."""
    fn, inputs = _grad_inputs(case, device)
    with d2l_ext.use_backend("python"):
        assert torch.autograd.gradgradcheck(fn, inputs)


# --------------------------------------------------------------------------- the raw ops


def _raw_conv_args(device, channels_last: bool, requires_grad: bool):
    """name -> args of torch.ops.d2l_ext.conv2d (batched, pairs: the functional normalises)."""

    def t(shape, seed, cl=channels_last):
        return build(
            shape, "channels_last" if cl and len(shape) == 4 else "contiguous", torch.float64, device, seed
        ).requires_grad_(requires_grad)

    return {
        "basic": (t((2, 3, 7, 6), 1), t((4, 3, 3, 3), 2), t((4,), 3), [1, 1], [0, 0], [1, 1], 1),
        "strided_groups": (t((2, 4, 9, 8), 1), t((6, 2, 3, 2), 2), t((6,), 3), [2, 1], [1, 2], [1, 2], 2),
        "no_bias_dilated": (t((1, 3, 9, 8), 1), t((5, 3, 2, 3), 2), None, [1, 2], [2, 0], [3, 1], 1),
        "depthwise": (t((2, 4, 6, 6), 1), t((4, 1, 3, 3), 2), t((4,), 3), [1, 1], [1, 1], [1, 1], 4),
        "zero_batch": (t((0, 3, 7, 6), 1), t((4, 3, 3, 3), 2), t((4,), 3), [1, 1], [1, 1], [1, 1], 1),
    }


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["basic", "strided_groups", "no_bias_dilated", "depthwise", "zero_batch"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("requires_grad", [False, True], ids=["nograd", "grad"])
def test_opcheck_conv2d(device, case, layout, requires_grad):
    skip_unless_conv_kernel(device)
    args = _raw_conv_args(device, layout == "channels_last", requires_grad)[case]
    torch.library.opcheck(torch.ops.d2l_ext.conv2d.default, args)


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["basic", "strided_groups", "no_bias_dilated", "zero_batch"])
@pytest.mark.parametrize(
    "mask",
    [(True, True, True), (True, False, False), (False, True, True)],
    ids=["all", "input", "weight_bias"],
)
def test_opcheck_and_values_conv2d_backward(device, case, mask):
    """The backward op: opcheck (no requires_grad: its double backward is not
    required), and the requested gradients equal torch's."""
    skip_unless_conv_kernel(device)
    x, w, b, s, p, d, groups = _raw_conv_args(device, False, False)[case]
    out = F.conv2d(x, w, b, s, p, d, groups)
    g = output_grad(out)
    args = (g, x, w, s, p, d, groups, list(mask))
    torch.library.opcheck(torch.ops.d2l_ext._conv2d_backward.default, args)
    got = torch.ops.d2l_ext._conv2d_backward(*args)
    kwargs = dict(stride=s, padding=p, dilation=d, groups=groups)
    ref = _run(TORCH_FNS[2], x, w, b if b is not None else torch.zeros_like(w[:, 0, 0, 0]), kwargs, g)[1]
    budgets = conv_budgets(2, x, w, None, kwargs, g)
    for name, want, a, r in zip(NAMES, mask, got, ref):
        if want:
            assert a is not None, name
            assert_close(a, r, dtype=x.dtype, terms=budgets[name][0], magnitude=budgets[name][1], msg=name)


@pytest.mark.parametrize("device", DEVICES)
def test_native_op_in_the_graph(conv_backend, device, monkeypatch):
    """Native: the output's autograd graph holds d2l_ext's C++ node and the
    fallback is never called; python: no d2l_ext node, the fallback runs once per call."""
    calls = []
    real = reference.conv2d
    monkeypatch.setattr(reference, "conv2d", lambda *a: calls.append(1) or real(*a))
    x, w, b = _case_tensors(CASES["groups_2"], torch.float32, device)
    w.requires_grad_()
    for out in (D.conv2d(x, w, b, padding=1, groups=2), D.conv1d(x[:, :, 0], w[..., 0], b, groups=2)):
        names = grad_fn_names(out)
        if conv_backend == "native":
            assert any("d2l_ext" in n for n in names), names
        else:
            assert not any("d2l_ext" in n for n in names), names
    assert len(calls) == (0 if conv_backend == "native" else 2)
    with d2l_ext.use_backend("python"):  # whatever the fixture chose
        D.conv2d(x, w, b, padding=1, groups=2)
    assert len(calls) == (1 if conv_backend == "native" else 3)


# --------------------------------------------------------------------------- torch.compile


def _compile_model(x, w1, b1, w2, w3, b3):
    """Three independent convolutions of the same input (no layer feeds another,
    so each output's error budget is that of one convolution)."""
    a = D.conv2d(x, w1, b1, stride=2, padding=1)
    c = D.conv2d(x, w2, None, padding="same", dilation=2, groups=2)
    s = D.conv1d(x.flatten(2), w3, b3, padding=1)
    return a, c, s


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("compile_backend", ["eager", "aot_eager"])
def test_torch_compile_fullgraph(conv_backend, device, compile_backend):
    """Forward and backward of the functional compiled with fullgraph=True equal
    eager: per output, the output and the gradients of its own inputs (the
    other outputs get a zero gradient) within one convolution's budget."""
    dtype = torch.float32
    x = make((2, 4, 7, 6), dtype, device, 1)
    params = [
        make((6, 4, 3, 3), dtype, device, 2),
        make((6,), dtype, device, 3),
        make((4, 2, 2, 3), dtype, device, 4),
        make((5, 4, 3), dtype, device, 5),
        make((5,), dtype, device, 6),
    ]
    branches = [  # (dims, inputs of the output: indices into (x, *params), kwargs)
        (2, (0, 1, 2), dict(stride=2, padding=1)),
        (2, (0, 3), dict(padding="same", dilation=2, groups=2)),
        (1, (0, 4, 5), dict(padding=1)),
    ]

    def run(fn):
        leaves = [t.detach().requires_grad_() for t in (x, *params)]
        outs = fn(*leaves)
        results = []
        for k, (out, (_, idx, _)) in enumerate(zip(outs, branches)):
            g = output_grad(out, seed=20 + k)
            grads = torch.autograd.grad(out, [leaves[i] for i in idx], g, retain_graph=True)
            results.append((out.detach(), grads, g))
        return results

    torch._dynamo.reset()
    try:
        compiled = run(torch.compile(_compile_model, fullgraph=True, backend=compile_backend))
        eager = run(_compile_model)
    finally:
        torch._dynamo.reset()
    for (dims, idx, kwargs), (out, grads, g), (r_out, r_grads, _) in zip(branches, compiled, eager):
        inputs = [(x, *params)[i] for i in idx]
        xs = inputs[0] if dims == 2 else inputs[0].flatten(2)
        budgets = conv_budgets(dims, xs, inputs[1], inputs[2] if len(inputs) > 2 else None, kwargs, g)
        assert_close(out, r_out, dtype=dtype, terms=budgets["output"][0], magnitude=budgets["output"][1])
        for name, a, r in zip(NAMES, grads, r_grads):
            assert_close(a, r, dtype=dtype, terms=budgets[name][0], magnitude=budgets[name][1], msg=name)
        assert out.abs().sum() > 0


# --------------------------------------------------------------------------- corr2d (section 7.2)


@pytest.mark.parametrize("device", DEVICES)
def test_corr2d_book_examples(conv_backend, device):
    """Section 7.2's worked example and its edge detector, exactly (small integers)."""
    X = torch.arange(9.0, device=device).reshape(3, 3)
    K = torch.tensor([[0.0, 1.0], [2.0, 3.0]], device=device)
    expected = torch.tensor([[19.0, 25.0], [37.0, 43.0]], device=device)
    assert torch.equal(D.corr2d(X, K), expected)
    assert torch.equal(reference.corr2d_book(X, K), expected)

    X = torch.ones((6, 8), device=device)
    X[:, 2:6] = 0
    K = torch.tensor([[1.0, -1.0]], device=device)
    Y = D.corr2d(X, K)
    row = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0], device=device)
    assert torch.equal(Y, row.expand(6, 7))
    assert torch.equal(reference.corr2d_book(X, K), Y)
    # the kernel only sees vertical edges: the transposed image gives zeros
    Yt = D.corr2d(X.t(), K)
    assert Yt.shape == (8, 5) and torch.equal(Yt, torch.zeros_like(Yt))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_corr2d_random(conv_backend, device, dtype):
    """Random X, K: equal to the book's loops and to torch's conv2d (kh * kw products per output)."""
    for size, ksize in (
        ((5, 7), (2, 2)),
        ((6, 4), (1, 3)),
        ((4, 6), (4, 1)),
        ((3, 3), (3, 3)),
        ((8, 9), (1, 1)),
    ):
        X, K = make(size, dtype, device, seed=sum(size)), make(ksize, dtype, device, seed=sum(ksize) + 50)
        ours = D.corr2d(X, K)
        assert ours.shape == (size[0] - ksize[0] + 1, size[1] - ksize[1] + 1)
        mag = float(F.conv2d(X.abs().double()[None, None].cpu(), K.abs().double()[None, None].cpu()).max())
        terms = math.prod(ksize)
        assert_close(ours, reference.corr2d_book(X, K), dtype=dtype, terms=terms, magnitude=mag, msg="book")
        assert_close(ours, reference.corr2d(X, K), dtype=dtype, terms=terms, magnitude=mag, msg="taps")
        torch_ref = TORCH_FNS[2](X[None, None], K[None, None])[0, 0]
        assert_close(ours, torch_ref, dtype=dtype, terms=terms, magnitude=mag, msg="torch")
    with pytest.raises(RuntimeError, match="2-D"):
        D.corr2d(X[None], K)
    with pytest.raises(RuntimeError, match="2-D"):
        D.corr2d(X, K[None])


@pytest.mark.parametrize("device", DEVICES)
def test_learning_the_edge_kernel(conv_backend, device):
    """Section 7.2.4: learn K = [1, -1] from X and Y with a (1, 2) convolution,
    ten steps of gradient descent (lr 3e-2), d2l_ext's Conv2d against torch's
    from the same weights, in float64.

    Each step's gradient differs from torch's by at most the conv budget
    (48 outputs of 2 products, 48-term weight-gradient sums); the descent on
    this quadratic loss does not amplify earlier differences (lr below 2 / the
    largest curvature), so after ten steps the weights differ by at most ten
    steps' budgets: terms 10 * 48, relative to the gradients' size (the loss's
    first gradient, the largest) times lr."""
    X = torch.ones((6, 8), dtype=torch.float64, device=device)
    X[:, 2:6] = 0
    Y = D.corr2d(X, torch.tensor([[1.0, -1.0]], dtype=torch.float64, device=device))
    X, Y = X.reshape(1, 1, 6, 8), Y.reshape(1, 1, 6, 7)
    torch.manual_seed(0)
    ours = d2l_ext.nn.Conv2d(1, 1, kernel_size=(1, 2), bias=False, dtype=torch.float64, device=device)
    theirs = torch.nn.Conv2d(1, 1, kernel_size=(1, 2), bias=False, dtype=torch.float64)  # on the CPU
    theirs.load_state_dict(ours.state_dict())
    data = {ours: (X, Y), theirs: (X.cpu(), Y.cpu())}
    first_grad, losses = None, []
    for _ in range(10):
        for net in (ours, theirs):
            loss = ((net(data[net][0]) - data[net][1]) ** 2).sum()
            net.zero_grad()
            loss.backward()
            first_grad = first_grad if first_grad is not None else _max_abs(net.weight.grad)
            with torch.no_grad():
                net.weight -= 3e-2 * net.weight.grad
            if net is ours:
                losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] / 4, losses
    assert_close(
        ours.weight.detach().cpu(),
        theirs.weight.detach(),
        dtype=torch.float64,
        terms=10 * 48,
        magnitude=3e-2 * first_grad + 1.0,
    )


# --------------------------------------------------------------------------- nn modules

# (class name, constructor kwargs, input shape); every padding mode, bias on/off,
# groups, string padding, unbatched input
MODULES = [
    ("Conv2d", dict(in_channels=3, out_channels=6, kernel_size=3), (2, 3, 9, 8)),
    (
        "Conv2d",
        dict(
            in_channels=4,
            out_channels=6,
            kernel_size=(3, 2),
            stride=(2, 1),
            padding=(1, 2),
            dilation=(1, 2),
            groups=2,
            bias=False,
        ),
        (2, 4, 9, 8),
    ),
    *[
        (
            "Conv2d",
            dict(in_channels=4, out_channels=8, kernel_size=3, padding=1, padding_mode=m),
            (2, 4, 7, 6),
        )
        for m in ("zeros", "reflect", "replicate", "circular")
    ],
    *[
        (
            "Conv2d",
            dict(
                in_channels=4,
                out_channels=8,
                kernel_size=(4, 3),
                padding="same",
                dilation=(1, 2),
                groups=2,
                padding_mode=m,
            ),
            (2, 4, 7, 9),
        )
        for m in ("zeros", "reflect", "replicate", "circular")
    ],
    (
        "Conv2d",
        dict(
            in_channels=4,
            out_channels=4,
            kernel_size=3,
            stride=2,
            padding=(2, 1),
            groups=4,
            padding_mode="reflect",
            bias=False,
        ),
        (2, 4, 8, 7),
    ),
    (
        "Conv2d",
        dict(in_channels=3, out_channels=5, kernel_size=3, padding="valid", padding_mode="replicate"),
        (2, 3, 7, 6),
    ),
    ("Conv2d", dict(in_channels=3, out_channels=6, kernel_size=5, stride=2, padding=2), (3, 9, 8)),
    *[
        ("Conv1d", dict(in_channels=8, out_channels=16, kernel_size=3, padding=2, padding_mode=m), (2, 8, 11))
        for m in ("zeros", "reflect", "replicate", "circular")
    ],
    ("Conv1d", dict(in_channels=8, out_channels=16, kernel_size=4, padding="same", groups=4), (2, 8, 11)),
    (
        "Conv1d",
        dict(
            in_channels=8,
            out_channels=16,
            kernel_size=4,
            padding="same",
            dilation=2,
            padding_mode="circular",
            bias=False,
        ),
        (2, 8, 11),
    ),
    ("Conv1d", dict(in_channels=8, out_channels=16, kernel_size=5, stride=2, bias=False), (2, 8, 11)),
    ("Conv1d", dict(in_channels=8, out_channels=6, kernel_size=3, padding=1), (8, 11)),
]


def _module_id(i):
    name, kw, shape = MODULES[i]
    mode = kw.get("padding_mode", "zeros")
    return f"{name}-{i}-{mode}" + ("-unbatched" if len(shape) == (3 if name == "Conv2d" else 2) else "")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", range(len(MODULES)), ids=_module_id)
def test_module_is_a_drop_in(conv_backend, device, dtype, case):
    """Same default initialisation from the same seed (constructed with device
    and dtype), same repr and state_dict, weights load both ways; outputs,
    input and parameter gradients as torch's module."""
    name, kwargs, shape = MODULES[case]
    torch.manual_seed(1234)
    ours = getattr(d2l_ext.nn, name)(**kwargs, device=device, dtype=dtype)
    torch.manual_seed(1234)
    theirs = getattr(torch.nn, name)(**kwargs, device=device, dtype=dtype)
    assert isinstance(ours, getattr(torch.nn, name)) and type(ours) is not type(theirs)
    assert repr(ours) == repr(theirs)
    sd_ours, sd_theirs = ours.state_dict(), theirs.state_dict()
    assert (
        list(sd_ours) == list(sd_theirs) == (["weight", "bias"] if kwargs.get("bias", True) else ["weight"])
    )
    for key in sd_theirs:
        assert sd_ours[key].shape == sd_theirs[key].shape and sd_ours[key].dtype == dtype
        assert sd_ours[key].device.type == torch.device(device).type
        assert torch.equal(sd_ours[key], sd_theirs[key]), f"default init of {key} differs"
    # load both ways: torch's (re-initialised) weights into ours and ours into a fresh torch module
    with torch.no_grad():
        for prm in theirs.parameters():
            prm.copy_(make(prm.shape, dtype, device, seed=prm.numel()))
    ours.load_state_dict(theirs.state_dict())
    back = getattr(torch.nn, name)(**kwargs, device=device, dtype=dtype)
    back.load_state_dict(ours.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value) and torch.equal(back.state_dict()[key], value)

    # torch's module runs on the CPU as the reference (see the module docstring), ours on the device
    ref_mod = copy.deepcopy(theirs).cpu()
    x = make(shape, dtype, device, seed=5)
    xo, xt = x.detach().clone().requires_grad_(), x.detach().cpu().clone().requires_grad_()
    out, ref = ours(xo), ref_mod(xt)
    g = output_grad(ref)
    out.backward(g.to(device))
    ref.backward(g)
    ref, ref_gx = ref.detach().to(device), xt.grad.to(device)
    ref_gw = ref_mod.weight.grad.to(device)
    ref_gb = None if ref_mod.bias is None else ref_mod.bias.grad.to(device)

    # budgets from torch's module in float64 on |x| with |weight|, |bias|
    mag = copy.deepcopy(theirs).cpu().double()
    with torch.no_grad():
        for prm in mag.parameters():
            prm.abs_()
    xa = x.detach().cpu().double().abs().requires_grad_()
    m = mag(xa)
    gx_m, gw_m = torch.autograd.grad(m, (xa, mag.weight), g.double().abs())
    o, cg, *k = theirs.weight.shape
    taps = math.prod(k)
    # reflect/replicate/circular padding copies an input element into up to
    # 3 places per spatial axis (itself, and once per side): more input-gradient terms
    copies = 1 if theirs.padding_mode == "zeros" else 3 ** len(k)
    per_channel = m.numel() // o
    assert_close(
        out.detach(),
        ref,
        dtype=dtype,
        terms=cg * taps + 1,
        magnitude=_max_abs(m.detach()),
        msg="output",
    )
    assert_close(
        xo.grad,
        ref_gx,
        dtype=dtype,
        terms=copies * (o // theirs.groups) * taps,
        magnitude=_max_abs(gx_m),
        msg="input gradient",
    )
    assert_close(
        ours.weight.grad,
        ref_gw,
        dtype=dtype,
        terms=per_channel,
        magnitude=_max_abs(gw_m),
        msg="weight gradient",
    )
    if theirs.bias is not None:
        channel_dim = 1 if m.dim() == len(k) + 2 else 0
        gb_m = g.abs().double().sum([i for i in range(g.dim()) if i != channel_dim])
        assert_close(
            ours.bias.grad,
            ref_gb,
            dtype=dtype,
            terms=per_channel,
            magnitude=_max_abs(gb_m),
            msg="bias gradient",
        )
    else:
        assert ours.bias is None
    assert out.shape == ref.shape and ours.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- bad inputs


def _x(d, shape=(2, 4, 7, 7), dtype=torch.float32):
    return make(shape, dtype, d, seed=1)


def _w(d, shape=(6, 2, 3, 3), dtype=torch.float32):
    return make(shape, dtype, d, seed=2)


def _only_cuda(d):
    if d != "cuda":
        pytest.skip("needs two devices")
    return "cpu"


class Bug(NamedTuple):
    """A known disagreement with torch: the case xfails (strictly) under these backends."""

    reason: str
    backends: tuple = ("native", "python")


# name -> (call(namespace: torch.nn.functional or d2l_ext.functional, device), a word ours must name,
# a known Bug or None)
BAD_INPUTS = {
    "conv2d_2d_input": (lambda f, d: f.conv2d(_x(d)[0, 0], _w(d)), "input", None),
    "conv2d_5d_input": (lambda f, d: f.conv2d(_x(d)[None], _w(d), groups=2), "input", None),
    "conv2d_weight_3d": (lambda f, d: f.conv2d(_x(d), _w(d)[0]), "weight", None),
    "conv2d_weight_2d": (lambda f, d: f.conv2d(_x(d), _w(d)[0, 0]), "weight", None),
    "conv2d_weight_5d": (lambda f, d: f.conv2d(_x(d), _w(d)[None]), "weight", None),
    "channels_not_divisible_by_groups": (
        lambda f, d: f.conv2d(_x(d), _w(d, (6, 1, 3, 3)), groups=3),
        "channels",
        None,
    ),
    "out_channels_not_divisible_by_groups": (
        lambda f, d: f.conv2d(_x(d), _w(d, (5, 2, 3, 3)), groups=2),
        "divisible",
        None,
    ),
    "input_channels_mismatch": (lambda f, d: f.conv2d(_x(d), _w(d, (6, 3, 3, 3))), "channels", None),
    "input_channels_mismatch_groups": (
        lambda f, d: f.conv2d(_x(d), _w(d, (6, 1, 3, 3)), groups=2),
        "channels",
        None,
    ),
    "zero_out_channels": (
        lambda f, d: f.conv2d(_x(d), _w(d, (0, 2, 3, 3)), groups=2),
        "weight",
        None,
    ),
    "bias_wrong_length": (
        lambda f, d: f.conv2d(_x(d), _w(d), make((5,), torch.float32, d), groups=2),
        "bias",
        None,
    ),
    "bias_2d": (lambda f, d: f.conv2d(_x(d), _w(d), make((1, 6), torch.float32, d), groups=2), "bias", None),
    "kernel_larger_than_input": (lambda f, d: f.conv2d(_x(d), _w(d, (6, 4, 8, 3))), "Kernel size", None),
    "dilated_kernel_larger_than_input": (
        lambda f, d: f.conv2d(_x(d), _w(d), dilation=4, groups=2),
        "Kernel size",
        None,
    ),
    "kernel_larger_than_padded_input": (
        lambda f, d: f.conv2d(_x(d), _w(d, (6, 4, 10, 3)), padding=1),
        "Kernel size",
        None,
    ),
    "same_with_stride_2": (
        lambda f, d: f.conv2d(_x(d), _w(d), padding="same", stride=2, groups=2),
        "same",
        None,
    ),
    "same_with_stride_pair": (
        lambda f, d: f.conv2d(_x(d), _w(d), padding="same", stride=(1, 2), groups=2),
        "same",
        None,
    ),
    "invalid_padding_string": (
        lambda f, d: f.conv2d(_x(d), _w(d), padding="full", groups=2),
        "padding",
        None,
    ),
    "padding_string_upper_case": (
        lambda f, d: f.conv2d(_x(d), _w(d), padding="SAME", groups=2),
        "padding",
        None,
    ),
    "weight_dtype_mismatch": (
        lambda f, d: f.conv2d(_x(d), _w(d, dtype=torch.float64), groups=2),
        "type",
        None,
    ),
    "bias_dtype_mismatch": (
        lambda f, d: f.conv2d(_x(d), _w(d), make((6,), torch.float64, d), groups=2),
        "type",
        None,
    ),
    "integer_input_float_weight": (lambda f, d: f.conv2d(_x(d).long(), _w(d), groups=2), None, None),
    "bool_input": (lambda f, d: f.conv2d(_x(d) > 0, _w(d) > 0, groups=2), "bool", None),
    "weight_on_other_device": (lambda f, d: f.conv2d(_x(d), _w(_only_cuda(d)), groups=2), None, None),
    "stride_0": (lambda f, d: f.conv2d(_x(d), _w(d), stride=0, groups=2), "stride", None),
    "stride_negative": (lambda f, d: f.conv2d(_x(d), _w(d), stride=(1, -1), groups=2), "stride", None),
    "padding_negative": (lambda f, d: f.conv2d(_x(d), _w(d), padding=-1, groups=2), "padding", None),
    "dilation_0": (lambda f, d: f.conv2d(_x(d), _w(d), dilation=0, groups=2), "dilation", None),
    "groups_0": (lambda f, d: f.conv2d(_x(d), _w(d), groups=0), "groups", None),
    "groups_negative": (lambda f, d: f.conv2d(_x(d), _w(d), groups=-2), "groups", None),
    "stride_three_values": (lambda f, d: f.conv2d(_x(d), _w(d), stride=(1, 1, 1), groups=2), "stride", None),
    "padding_three_values": (
        lambda f, d: f.conv2d(_x(d), _w(d), padding=(1, 1, 1), groups=2),
        "padding",
        None,
    ),
    "stride_float": (lambda f, d: f.conv2d(_x(d), _w(d), stride=1.5, groups=2), "stride", None),
    "conv1d_4d_input": (lambda f, d: f.conv1d(_x(d), _w(d)[..., 0], groups=2), "input", None),
    "conv1d_1d_input": (lambda f, d: f.conv1d(_x(d)[0, 0, 0], _w(d)[..., 0], groups=2), "input", None),
    "conv1d_4d_weight": (lambda f, d: f.conv1d(_x(d)[:, :, 0], _w(d), groups=2), "weight", None),
    "conv1d_same_with_stride": (
        lambda f, d: f.conv1d(_x(d)[:, :, 0], _w(d)[..., 0], padding="same", stride=2, groups=2),
        "same",
        None,
    ),
    "conv1d_kernel_larger_than_input": (
        lambda f, d: f.conv1d(_x(d)[:, :, 0], _w(d, (6, 2, 9)), groups=2),
        "Kernel size",
        None,
    ),
    "conv1d_invalid_padding_string": (
        lambda f, d: f.conv1d(_x(d)[:, :, 0], _w(d)[..., 0], padding="causal", groups=2),
        "padding",
        None,
    ),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_raise_like_torch(conv_backend, device, case, request):
    """torch raises, and so do we, with exactly the same exception type
    (NotImplementedError is a RuntimeError subclass); our message names the problem."""
    call, word, bug = BAD_INPUTS[case]
    if bug is not None and conv_backend in bug.backends:
        request.applymarker(pytest.mark.xfail(strict=True, reason=bug.reason))
    with pytest.raises(Exception) as torch_exc:
        call(F, device)
    with pytest.raises(Exception) as ours:
        call(D, device)
    assert type(ours.value) is type(torch_exc.value), (case, repr(ours.value), repr(torch_exc.value))
    if word is not None:
        assert word.lower() in str(ours.value).lower(), (case, word, str(ours.value))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "dtype", [torch.int64, torch.int32, torch.uint8, torch.complex64], ids=lambda t: str(t).split(".")[-1]
)
def test_non_float_dtypes_like_torch(conv_backend, device, dtype):
    """Where torch raises for a dtype, we raise the same exception type; where
    torch computes (integer and complex convolutions on the CPU), we compute the
    same values (small integers: every sum exact, no uint8 wrap-around), with
    stride, padding, dilation, groups and bias, in 2-D and 1-D.

    One exception, by choice: torch's CPU has no *dilated* kernel for integers
    narrower than int64 ("slow_conv_dilated<>" not implemented for 'Int'/'Byte'),
    a gap of its kernels, not a rule about the inputs; d2l_ext computes those, and
    they are checked against torch's int64 result in the same dtype."""
    low = 0 if dtype == torch.uint8 else -1
    x = torch.randint(low, low + 3, (2, 4, 7, 8), generator=_gen(1)).to(dtype).to(device)
    w = torch.randint(low, low + 3, (6, 2, 3, 2), generator=_gen(2)).to(dtype).to(device)
    b = torch.randint(low, low + 3, (6,), generator=_gen(3)).to(dtype).to(device)
    calls = [
        (F.conv2d, D.conv2d, (x, w, b), dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)),
        (F.conv2d, D.conv2d, (x[0], w, None), dict(padding="same", groups=2)),
        (F.conv1d, D.conv1d, (x[:, :, 0], w[..., 0], b), dict(stride=2, padding=2, dilation=2, groups=2)),
    ]
    for theirs, ours, args, kwargs in calls:
        try:
            ref = theirs(*args, **kwargs)
        except Exception as e:
            if isinstance(e, NotImplementedError) and "slow_conv_dilated" in str(e) and device == "cpu":
                wide = [None if a is None else a.long() for a in args]
                ref = theirs(*wide, **kwargs).to(dtype)
            else:  # torch refuses the dtype here: so must we
                with pytest.raises(Exception) as exc:
                    ours(*args, **kwargs)
                assert type(exc.value) is type(e), (repr(exc.value), repr(e))
                continue
        out = ours(*args, **kwargs)
        assert out.dtype == ref.dtype and out.shape == ref.shape
        assert torch.equal(out, ref), kwargs


# --------------------------------------------------------------------------- float16 / bfloat16

LOWP_CASES = {
    "basic_3x3_padding": (2, Case((2, 3, 9, 8), (4, 3, 3, 3), True, dict(padding=1))),
    "groups_strided_channels_last": (
        2,
        Case((2, 4, 11, 10), (6, 2, 3, 3), True, dict(stride=2, padding=1, groups=2), "channels_last"),
    ),
    "conv1d_same": (1, Case((2, 8, 17), (6, 8, 3), True, dict(padding="same"))),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("case", list(LOWP_CASES))
def test_low_precision(conv_backend, device, dtype, case):
    """float16/bfloat16 in, same format out, against torch in float32 on the same
    (exactly representable) inputs and output gradient.

    The native path computes in float32 and rounds once (the CPU path upcasts).
    The fallback keeps its matrix products in the format, each sum accumulated
    in float32 and rounded once, then adds the bias (one more rounding); its
    input gradient (col2im) adds the kh * kw <= 9 overlapping column entries in
    the format: 11 roundings of at most 1/2 ulp of partial sums bounded by the
    magnitude, sqrt(11) / 2 < 2 eps of the magnitude (random walk), within
    conftest's 2-eps budget; the cases keep kernels at most 3 x 3 for that.
    cuBLAS's reduced-precision reductions (float16/bfloat16 partial sums,
    torch's default) are turned off for the test: they are outside that model.
    """
    dims, c = LOWP_CASES[case]
    assert math.prod(c.w[2:]) <= 9
    matmul = torch.backends.cuda.matmul
    saved = (matmul.allow_fp16_reduced_precision_reduction, matmul.allow_bf16_reduced_precision_reduction)
    matmul.allow_fp16_reduced_precision_reduction = matmul.allow_bf16_reduced_precision_reduction = False
    try:
        x, w, b = _case_tensors(c, dtype, device)
        out, grads, g = _run(OUR_FNS[dims], x, w, b, c.kwargs)
        x32, w32, b32 = x.float(), w.float(), b.float()
        r_out, r_grads, g32 = _run(TORCH_FNS[dims], x32, w32, b32, c.kwargs, g.float())
    finally:
        matmul.allow_fp16_reduced_precision_reduction, matmul.allow_bf16_reduced_precision_reduction = saved
    budgets = conv_budgets(dims, x32, w32, b32, c.kwargs, g32)
    tol = dict(dtype=dtype, accumulates_in_float32=conv_backend == "native")
    assert_close_lowp(
        out, r_out, terms=budgets["output"][0], magnitude=budgets["output"][1], msg="output", **tol
    )
    for name, a, r, t in zip(NAMES, grads, r_grads, (x, w, b)):
        assert a.dtype == dtype and a.shape == t.shape, name
        assert_close_lowp(a, r, terms=budgets[name][0], magnitude=budgets[name][1], msg=name, **tol)


def test_float64_budget_is_tight_enough_to_see_a_float32_step():
    """The tolerances used here can fail: a float64 comparison rejects a result
    computed in float32 (the budget is not vacuous)."""
    c = CASES["lenet_conv2"]
    x, w, b = _case_tensors(c, torch.float64, "cpu")
    ref = F.conv2d(x, w, b, **c.kwargs)
    sloppy = F.conv2d(x.float(), w.float(), b.float(), **c.kwargs).double()
    budgets = conv_budgets(2, x, w, b, c.kwargs, torch.ones_like(ref))
    terms, mag = budgets["output"]
    with pytest.raises(AssertionError):
        assert_close(sloppy, ref, dtype=torch.float64, terms=terms, magnitude=mag)
    assert tolerances(torch.float64, terms) * mag < 1e-10


@pytest.mark.parametrize("dims", [(20, 24, 3, 3), (17, 40, 5, 5)])
def test_cpu_tiles_non_finite_weights_like_torch(dims):
    """An inf and a NaN weight in a layer the AVX-512 tiles take: the input gradient must not
    multiply the padding zeros by them (the tiles' packing spots the non-finite weight and the
    GEMM path takes over), so NaN and inf land where torch puts them; finite entries match."""
    c, o, kh, kw = dims
    x = make((2, c, 6, 7), torch.float32, "cpu", seed=1).requires_grad_()
    w = make((o, c, kh, kw), torch.float32, "cpu", seed=2)
    w[3, 5, 1, 2] = math.inf
    w[7, c - 1, 0, 0] = math.nan
    w.requires_grad_()
    pad = (kh // 2, kw // 2)
    with _use("native", "cpu"):
        ours = _run(OUR_FNS[2], x, w, None, dict(padding=pad))
    ref = _run(TORCH_FNS[2], x, w, None, dict(padding=pad), g=ours[2])
    # the finite entries' budgets: sums that never touch the two weights
    finite_w = torch.nan_to_num(w.detach(), nan=0.0, posinf=0.0)
    budgets = conv_budgets(2, x, finite_w, None, dict(padding=pad), ours[2])
    for name, a, r in zip(("output", *NAMES), (ours[0], *ours[1]), (ref[0], *ref[1])):
        if name == "output":
            # A known difference (README): the forward multiplies the padding zeros by the inf
            # and the NaN weight, NaN at the border of output channels 3 and 7, where oneDNN
            # skips padded taps.
            assert not (r.isnan() & ~a.isnan()).any()
            extra = a.isnan() & ~r.isnan()
            assert extra.any() and extra[:, [3, 7]].sum() == extra.sum()
            a, r = a[~extra], r[~extra]
        else:
            assert torch.equal(a.isnan(), r.isnan()), name
        assert torch.equal(a == math.inf, r == math.inf) and torch.equal(a == -math.inf, r == -math.inf), name
        finite = torch.isfinite(r)
        assert finite.any(), name
        terms, mag = budgets[name]
        assert_close(a[finite], r[finite], dtype=torch.float32, terms=terms, magnitude=mag, msg=name)
    assert ours[1][0].isnan().any()  # the input gradient's NaN were compared


@pytest.mark.parametrize("choice", ["avx2", "notiles", "off"])
def test_cpu_direct_kernel_copies(choice):
    """The CPU's direct kernel has an AVX-512 and an AVX2 copy, and AVX-512 CPUs
    give the layers with more than 8 channels to the tiles; the tests above run
    what this CPU picks. Run the stride-1 cases again with the other copy, with
    the AVX-512 copy but no tiles (it then takes up to 16 channels), and with
    both off (im2col + GEMM), each in a fresh process."""
    import os
    import subprocess
    import sys

    if not d2l_ext.native_available():
        pytest.skip("needs the compiled library")
    cases = [k for k, c in CASES.items() if c.kwargs.get("stride", 1) == 1 and "groups" not in c.kwargs]
    assert {"lenet_conv1", "lenet_conv2", "direct_k7_wide"} <= set(cases)
    env = {**os.environ, "D2L_EXT_DIRECT_CONV": choice}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         *[f"{__file__}::test_conv2d_matches_torch[native-{k}-float32-cpu]" for k in cases]],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"{len(cases)} passed" in result.stdout, result.stdout[-1000:]
