"""d2l_ext.functional.cross_entropy / d2l_ext.nn.CrossEntropyLoss against torch.

The reference is always torch's own ``torch.nn.functional.cross_entropy``; every
test of values runs under both backends (the ``backend`` fixture), on every
device of ``DEVICES``, in float32 and float64 (float16/bfloat16 against torch in
float32). Tolerances are explained in conftest.py.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn._reduction import legacy_get_string

import d2l_ext
import d2l_ext.functional as D
from d2l_ext import _ops

from .conftest import (
    BACKENDS,
    CUDA_AVAILABLE,
    DEVICES,
    FLOAT_DTYPES,
    HALF_DTYPES,
    assert_close,
    assert_close_lowp,
    error_magnitudes,
    grad_fn_names,
    requires_native,
    saved_tensors,
    skip_unless_native_kernels,
    tolerances,
)

REDUCTIONS = ["none", "mean", "sum"]
SMOOTHING = [0.0, 0.1, 1.0]
LOGIT_SCALE = 3.0  # logits are LOGIT_SCALE * N(0, 1)


# --------------------------------------------------------------------------- helpers


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_logits(shape, dtype, device, seed=0, scale=LOGIT_SCALE) -> torch.Tensor:
    x = torch.randn(shape, generator=_gen(seed), dtype=torch.float64) * scale
    return x.to(dtype).to(device)


def make_index_target(shape, num_classes, device, seed=1, ignore_index=None, ignore_frac=0.0):
    t = torch.randint(0, max(num_classes, 1), shape, generator=_gen(seed))
    if ignore_index is not None and ignore_frac > 0:
        mask = torch.rand(shape, generator=_gen(seed + 1)) < ignore_frac
        t = torch.where(mask, torch.full_like(t, ignore_index), t)
    return t.to(device)


def make_prob_target(shape, dtype, device, seed=2) -> torch.Tensor:
    q = torch.randn(shape, generator=_gen(seed), dtype=torch.float64) * 2
    return torch.softmax(q, dim=1 if len(shape) > 1 else 0).to(dtype).to(device)


def make_weight(num_classes, dtype, device, seed=3) -> torch.Tensor:
    w = torch.rand(num_classes, generator=_gen(seed), dtype=torch.float64) + 0.25
    return w.to(dtype).to(device)


def forward_backward(fn, x, t, *, target_grad=False, grad_seed=7, **kwargs):
    """Loss and gradients (input, and target when ``target_grad``) of ``fn``.

    The output gradient is random (for "none") so every per-example gradient is
    scaled differently.
    """
    # detach() (not clone()) keeps the caller's strides: non-contiguous stays so
    x = x.detach().requires_grad_(True)
    t = t.detach()
    if target_grad:
        t.requires_grad_(True)
    loss = fn(x, t, **kwargs)
    g = torch.randn(loss.shape, generator=_gen(grad_seed), dtype=torch.float64)
    g = g.to(loss.dtype).to(loss.device)
    grads = torch.autograd.grad(loss, [x, t] if target_grad else [x], g)
    return loss.detach(), g, [gr.detach() for gr in grads]


def num_terms(x: torch.Tensor) -> int:
    """C + the number of rows: the longest sums in a cross-entropy of ``x``."""
    num_classes = x.shape[1] if x.dim() >= 2 else x.shape[0]
    return num_classes + max(x.numel() // max(num_classes, 1), 1)


def magnitudes(x, t, g, kwargs):
    """``error_magnitudes`` for the keyword arguments of a cross_entropy call."""
    reduction = kwargs.get("reduction", "mean")
    if kwargs.get("size_average") is not None or kwargs.get("reduce") is not None:
        reduction = legacy_get_string(kwargs.get("size_average"), kwargs.get("reduce"))
    return error_magnitudes(
        x, t, weight=kwargs.get("weight"), grad_out=g, reduction=reduction,
        ignore_index=kwargs.get("ignore_index", -100),
        label_smoothing=kwargs.get("label_smoothing", 0.0),
    )


def compare_with_torch(x, t, *, target_grad=False, check_grad=True, **kwargs):
    """Run d2l_ext and torch on the same arguments; compare loss and gradients."""
    dtype, terms = x.dtype, num_terms(x)
    ours = forward_backward(D.cross_entropy, x, t, target_grad=target_grad, **kwargs)
    ref = forward_backward(F.cross_entropy, x, t, target_grad=target_grad, **kwargs)
    mag = magnitudes(x, t, ref[1], kwargs)
    assert_close(ours[0], ref[0], dtype=dtype, terms=terms, magnitude=mag["loss"], msg="loss")
    if check_grad:
        assert_close(ours[2][0], ref[2][0], dtype=dtype, terms=terms,
                     magnitude=mag["grad_input"], msg="grad input")
        if target_grad:
            assert_close(ours[2][1], ref[2][1], dtype=dtype, terms=terms,
                         magnitude=mag["grad_target"], msg="grad target")
    return ours, ref


# --------------------------------------------------------------------------- sanity of the setup


@requires_native
def test_backends_really_differ(monkeypatch):
    """The native backend calls the op; the python backend calls the reference.

    Without this, a silently broken dispatch would make every "native" test
    compare the fallback with torch.
    """
    x = make_logits((4, 3), torch.float32, "cpu")
    t = make_index_target((4,), 3, "cpu")
    calls = []
    real_native, real_ref = _ops.cross_entropy, d2l_ext.reference.cross_entropy
    monkeypatch.setattr(_ops, "cross_entropy", lambda *a: calls.append("native") or real_native(*a))
    monkeypatch.setattr(
        d2l_ext.reference, "cross_entropy", lambda *a: calls.append("python") or real_ref(*a)
    )
    with d2l_ext.use_backend("native"):
        D.cross_entropy(x, t)
    with d2l_ext.use_backend("python"):
        D.cross_entropy(x, t)
    assert calls == ["native", "python"]


@requires_native
def test_native_grad_fn_is_the_fused_op():
    x = make_logits((4, 3), torch.float32, "cpu").requires_grad_()
    t = make_index_target((4,), 3, "cpu")
    with d2l_ext.use_backend("native"):
        loss = D.cross_entropy(x, t)
    # torch's graph is NllLoss <- LogSoftmax; ours is one node for the custom op.
    names = grad_fn_names(loss)
    assert not any("LogSoftmax" in n or "NllLoss" in n for n in names), names
    assert any("d2l_ext::" in n and "CrossEntropy" in n for n in names), names


# --------------------------------------------------------------------------- values and gradients

# (name, input shape, target kind, ignore_index, fraction of rows ignored)
CASES = {
    "2d": ((6, 5), "index", -100, 0.0),
    "2d_ignored_rows": ((8, 5), "index", -100, 0.4),
    "2d_ignore_is_a_class": ((8, 5), "index", 2, 0.3),  # class 2 exists but is ignored
    # fewer than 64 classes: blocks of eight rows (transposed) and a tail of three
    "2d_few_classes": ((19, 28), "index", -100, 0.3),
    "2d_few_classes_ignore_is_a_class": ((21, 63), "index", 5, 0.2),
    "spatial": ((3, 4, 2, 3), "index", -100, 0.0),
    "spatial_ignored": ((3, 4, 2, 3), "index", 1, 0.3),
    "3d": ((2, 5, 7), "index", -100, 0.0),
    "unbatched": ((5,), "index", -100, 0.0),
    "prob": ((6, 5), "prob", -100, 0.0),
    "prob_spatial": ((2, 4, 3, 2), "prob", -100, 0.0),
    "prob_unbatched": ((5,), "prob", -100, 0.0),
}


def build_case(name, dtype, device, seed=0):
    shape, kind, ignore_index, frac = CASES[name]
    num_classes = shape[1] if len(shape) > 1 else shape[0]
    x = make_logits(shape, dtype, device, seed=seed)
    batch = shape[:1] + shape[2:] if len(shape) > 1 else ()
    if kind == "index":
        t = make_index_target(batch, num_classes, device, seed=seed + 1, ignore_index=ignore_index,
                              ignore_frac=frac)
    else:
        t = make_prob_target(shape, dtype, device, seed=seed + 2)
    return x, t, num_classes, kind, ignore_index


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("label_smoothing", SMOOTHING)
def test_matches_torch(backend, device, dtype, case, reduction, weighted, label_smoothing):
    x, t, num_classes, kind, ignore_index = build_case(case, dtype, device)
    w = make_weight(num_classes, dtype, device) if weighted else None
    ours, ref = compare_with_torch(
        x, t, weight=w, target_grad=kind == "prob", reduction=reduction,
        ignore_index=ignore_index, label_smoothing=label_smoothing,
    )
    if ignore_index != -100 or CASES[case][3] > 0:  # the case really ignores rows, at no cost
        ignored = t == ignore_index
        assert ignored.any()
        if reduction == "none":
            assert (ours[0][ignored] == 0).all()
        assert (ours[2][0].movedim(1, -1)[ignored] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("case", ["2d", "2d_ignored_rows", "spatial", "prob", "unbatched"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_low_precision_matches_torch_in_float32(backend, device, dtype, case, reduction,
                                                label_smoothing):
    """float16/bfloat16 in, same format out, compared to torch computing in float32."""
    x, t, num_classes, kind, ignore_index = build_case(case, dtype, device)
    w = make_weight(num_classes, dtype, device)
    kwargs = dict(reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "d2l_ext was built without", RuntimeWarning)
        ours = forward_backward(D.cross_entropy, x, t, weight=w, **kwargs)
    t32 = t.float() if kind == "prob" else t
    # torch in float32 on the same (exactly representable) inputs, with the same
    # output gradient (ours was drawn in the low format)
    x32, g = x.float().requires_grad_(), ours[1].float()
    ref = F.cross_entropy(x32, t32, weight=w.float(), **kwargs)
    (gx_ref,) = torch.autograd.grad(ref, x32, g)
    mag = error_magnitudes(x, t32, weight=w, grad_out=g, **kwargs)
    tol = dict(dtype=dtype, terms=num_terms(x), accumulates_in_float32=backend == "native")
    assert_close_lowp(ours[0], ref.detach(), magnitude=mag["loss"], msg="loss", **tol)
    assert_close_lowp(ours[2][0], gx_ref, magnitude=mag["grad_input"], msg="grad input", **tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("label_smoothing", SMOOTHING)
@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_all_rows_ignored(backend, device, dtype, weighted, label_smoothing, ignore_index):
    """Every target is ignore_index: mean is nan (0/0) like torch, sum 0, none all zeros;
    the gradient of sum and none is zero (mean: see the next test)."""
    x = make_logits((4, 5), dtype, device)
    t = torch.full((4,), ignore_index, device=device)
    w = make_weight(5, dtype, device) if weighted else None
    for reduction in REDUCTIONS:
        ours, _ = compare_with_torch(x, t, weight=w, reduction=reduction, ignore_index=ignore_index,
                                     label_smoothing=label_smoothing,
                                     check_grad=reduction != "mean")
        loss, _, (gx,) = ours
        if reduction == "mean":
            assert torch.isnan(loss)
        else:
            assert (loss == 0).all()
            assert (gx == 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_all_rows_ignored_mean_gradient_is_zero(device, dtype, weighted, label_smoothing,
                                               backend_name):
    if backend_name == "native":
        skip_unless_native_kernels(device)
    x = make_logits((4, 5), dtype, device)
    t = torch.full((4,), -100, device=device)
    w = make_weight(5, dtype, device) if weighted else None
    kwargs = dict(weight=w, label_smoothing=label_smoothing)
    with d2l_ext.use_backend(backend_name):
        ours = forward_backward(D.cross_entropy, x, t, **kwargs)
    ref = forward_backward(F.cross_entropy, x, t, **kwargs)
    assert (ref[2][0] == 0).all()
    assert torch.equal(ours[2][0], ref[2][0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("spatial", [False, True], ids=["2d", "spatial"])
def test_empty_batch(backend, device, dtype, kind, spatial):
    shape = (0, 4, 3) if spatial else (0, 4)
    x = make_logits(shape, dtype, device)
    t = (make_index_target(shape[:1] + shape[2:], 4, device) if kind == "index"
         else make_prob_target(shape, dtype, device))
    for reduction in REDUCTIONS:
        for w in (None, make_weight(4, dtype, device)):
            ours, _ = compare_with_torch(x, t, weight=w, reduction=reduction,
                                         target_grad=kind == "prob")
            loss, _, grads = ours
            assert grads[0].shape == shape
            if reduction == "mean":
                assert torch.isnan(loss)
            elif reduction == "sum":
                assert loss.item() == 0
            else:
                assert loss.shape == shape[:1] + shape[2:]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("label_smoothing", SMOOTHING)
def test_single_class(backend, device, dtype, kind, label_smoothing):
    """C = 1: log_softmax is 0, so torch's loss and input gradient are exactly 0.

    Ours may compute them as differences of rounded terms (``lse - x`` for the
    loss, ``g * softmax - g`` for the gradient); compare_with_torch bounds the
    loss by the cancellation budget, and the gradient is bounded by ULPS * eps * |g|.
    """
    x = make_logits((5, 1), dtype, device)
    t = torch.zeros(5, dtype=torch.long, device=device) if kind == "index" else torch.rand(
        5, 1, generator=_gen(4), dtype=torch.float64).to(dtype).to(device)
    for reduction in REDUCTIONS:
        for weight in (None, make_weight(1, dtype, device)):
            ours, ref = compare_with_torch(x, t, weight=weight, reduction=reduction,
                                           label_smoothing=label_smoothing,
                                           target_grad=kind == "prob")
            assert (ref[0] == 0).all() and (ref[2][0] == 0).all()
            bound = tolerances(dtype) * float(ref[1].abs().max()) * 2  # max weight < 1.25
            assert float(ours[2][0].abs().max()) <= bound


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("num_classes", [5000, 4099])  # a multiple of 8 and an odd tail
def test_many_classes(backend, device, dtype, kind, label_smoothing, num_classes):
    """Long rows exercise the vectorised (AVX2) row loops and their tails."""
    x = make_logits((6, num_classes), dtype, device, scale=5.0)
    t = (make_index_target((6,), num_classes, device) if kind == "index"
         else make_prob_target((6, num_classes), dtype, device))
    w = make_weight(num_classes, dtype, device)
    for reduction in REDUCTIONS:
        compare_with_torch(x, t, weight=w, reduction=reduction, label_smoothing=label_smoothing,
                           target_grad=kind == "prob")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_uint8_targets(backend, device, dtype, reduction, label_smoothing):
    """uint8 class indices (torch takes them for (N, C) and (C,) input), 255 as ignore_index.

    torch itself fails on uint8 targets with weight + label_smoothing + "mean"
    (``weight.gather`` wants int64), so the reference there is torch on the same
    targets as int64, and ours must give bit for bit what it gives for int64.
    """
    x = make_logits((8, 6), dtype, device)
    t = make_index_target((8,), 6, device).to(torch.uint8)
    t[1] = 255
    w = make_weight(6, dtype, device)
    kwargs = dict(reduction=reduction, ignore_index=255, label_smoothing=label_smoothing)
    for weight in (None, w):
        as_long, _ = compare_with_torch(x, t.long(), weight=weight, **kwargs)
        ours = forward_backward(D.cross_entropy, x, t, weight=weight, **kwargs)
        assert ours[0].dtype == dtype
        assert torch.equal(ours[0], as_long[0]) and torch.equal(ours[2][0], as_long[2][0])
        if weight is None or label_smoothing == 0 or reduction != "mean":
            compare_with_torch(x, t, weight=weight, **kwargs)  # torch takes uint8 here
    compare_with_torch(x[0], t[0], reduction=reduction, label_smoothing=label_smoothing)  # (C,)
    if device == "cpu":  # out of range unless ignored (CUDA: see test_bad_inputs)
        # (not 255 here: torch formats a uint8 target as a character in its message,
        # and byte 0xff makes that a UnicodeDecodeError)
        t[1] = 6
        with pytest.raises(IndexError):
            F.cross_entropy(x, t, reduction=reduction, label_smoothing=label_smoothing)
        with pytest.raises(IndexError):
            D.cross_entropy(x, t, reduction=reduction, label_smoothing=label_smoothing)


@pytest.mark.parametrize("device", DEVICES)
def test_uint8_spatial_targets_rejected_like_torch(backend, device):
    x = make_logits((2, 6, 3), torch.float32, device)
    t = make_index_target((2, 3), 6, device).to(torch.uint8)
    with pytest.raises(RuntimeError):
        F.cross_entropy(x, t)
    with pytest.raises(RuntimeError):
        D.cross_entropy(x, t)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("size_average", [None, True, False])
@pytest.mark.parametrize("reduce", [None, True, False])
def test_legacy_size_average_reduce(backend, device, dtype, size_average, reduce):
    x = make_logits((6, 4), dtype, device)
    t = make_index_target((6,), 4, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's deprecation warning
        for reduction in REDUCTIONS:  # legacy arguments override `reduction`, as in torch
            compare_with_torch(x, t, size_average=size_average, reduce=reduce, reduction=reduction)


# --------------------------------------------------------------------------- hypothesis


@st.composite
def ce_problems(draw):
    unbatched = draw(st.booleans()) and draw(st.booleans())  # 1 in 4
    num_classes = draw(st.integers(1, 9))
    if unbatched:
        shape = (num_classes,)
    else:
        n = draw(st.integers(0, 5))
        spatial = draw(st.lists(st.integers(1, 3), max_size=2))
        shape = (n, num_classes, *spatial)
    kind = draw(st.sampled_from(["index", "prob"]))
    return dict(
        shape=shape,
        kind=kind,
        reduction=draw(st.sampled_from(REDUCTIONS)),
        weighted=draw(st.booleans()),
        label_smoothing=draw(st.sampled_from([0.0, 0.1, 1.0]) | st.floats(0.0, 1.0)),
        ignore_index=(draw(st.sampled_from([-100, 0, num_classes - 1])) if kind == "index"
                      else -100),
        ignore_frac=draw(st.sampled_from([0.0, 0.3, 1.0])),
        scale=draw(st.sampled_from([0.1, 1.0, 10.0, 40.0])),
        soft=draw(st.sampled_from(["softmax", "unnormalised", "one_hot"])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("backend_name", BACKENDS)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=ce_problems())
def test_hypothesis_matches_torch(device, dtype, backend_name, p):
    if backend_name == "native":
        skip_unless_native_kernels(device)
    shape = p["shape"]
    num_classes = shape[1] if len(shape) > 1 else shape[0]
    x = make_logits(shape, dtype, device, seed=p["seed"], scale=p["scale"])
    if p["kind"] == "index":
        batch = shape[:1] + shape[2:] if len(shape) > 1 else ()
        t = make_index_target(batch, num_classes, device, seed=p["seed"] + 1,
                              ignore_index=p["ignore_index"], ignore_frac=p["ignore_frac"])
    elif p["soft"] == "softmax":
        t = make_prob_target(shape, dtype, device, seed=p["seed"] + 2)
    elif p["soft"] == "unnormalised":  # torch does not require the rows to sum to 1
        t = torch.rand(shape, generator=_gen(p["seed"] + 2), dtype=torch.float64)
        t = t.to(dtype).to(device)
    else:  # hard labels written as probabilities
        batch = shape[:1] + shape[2:] if len(shape) > 1 else ()
        idx = torch.randint(0, num_classes, batch, generator=_gen(p["seed"] + 2))
        t = F.one_hot(idx, num_classes).movedim(-1, 1 if len(shape) > 1 else 0)
        t = t.to(dtype).to(device)
    w = make_weight(num_classes, dtype, device, seed=p["seed"] + 3) if p["weighted"] else None
    if (device == "cuda" and len(shape) == 1 and p["kind"] == "index" and p["reduction"] == "mean"
            and bool((t == p["ignore_index"]).all())):
        # Unbatched input whose one target is ignored: torch's CUDA kernel returns 0,
        # its CPU kernel NaN (0 / 0); d2l_ext follows the CPU on every device.
        kw = dict(weight=w, ignore_index=p["ignore_index"], label_smoothing=p["label_smoothing"])
        cpu_kw = dict(kw, weight=None if w is None else w.cpu())
        assert torch.isnan(F.cross_entropy(x.cpu(), t.cpu(), **cpu_kw))
        with d2l_ext.use_backend(backend_name):
            assert torch.isnan(D.cross_entropy(x, t, **kw))
        return
    with d2l_ext.use_backend(backend_name):
        compare_with_torch(x, t, weight=w, target_grad=p["kind"] == "prob",
                           reduction=p["reduction"], ignore_index=p["ignore_index"],
                           label_smoothing=p["label_smoothing"])


# --------------------------------------------------------------------------- layouts


def _via_base(fn, base, make_view, t, **kwargs):
    """Loss, output gradient and gradient w.r.t. ``base`` of ``fn(make_view(base), t)``."""
    base = base.detach().clone().requires_grad_(True)
    loss = fn(make_view(base), t, **kwargs)
    g = torch.randn(loss.shape, generator=_gen(9), dtype=torch.float64).to(loss)
    (gb,) = torch.autograd.grad(loss, base, g)
    return loss.detach(), g, gb


LAYOUTS = {
    # name: (base shape, view of the base with input's shape)
    "transposed": ((5, 6), lambda b: b.t()),
    "sliced_classes": ((6, 10), lambda b: b[:, ::2]),
    "sliced_rows": ((12, 5), lambda b: b[1::2]),
    "channels_last": ((3, 5, 2, 4), lambda b: b.contiguous(memory_format=torch.channels_last)),
    "spatial_permuted": ((3, 2, 4, 5), lambda b: b.permute(0, 3, 1, 2)),
    "expanded_rows": ((1, 5), lambda b: b.expand(6, 5)),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_non_contiguous_input(backend, device, dtype, layout, kind, reduction):
    base_shape, view = LAYOUTS[layout]
    base = make_logits(base_shape, dtype, device)
    x = view(base)
    if layout != "channels_last":
        assert not x.is_contiguous()
    shape = tuple(x.shape)
    num_classes = shape[1]
    if kind == "index":
        t = make_index_target(shape[:1] + shape[2:], num_classes, device)
    else:  # a non-contiguous probability target too
        t = make_prob_target(shape[::-1], dtype, device).permute(*range(len(shape) - 1, -1, -1))
        t = t / t.sum(1, keepdim=True)
        assert t.shape == shape and not t.is_contiguous()
    kwargs = dict(weight=make_weight(num_classes, dtype, device), reduction=reduction,
                  label_smoothing=0.1)
    ours = _via_base(D.cross_entropy, base, view, t, **kwargs)
    ref = _via_base(F.cross_entropy, base, view, t, **kwargs)
    terms = num_terms(x)
    # "expanded_rows": the base gradient sums 6 rows' gradients
    mag = magnitudes(x, t, ref[1], kwargs)
    copies = max(x.numel() // base.numel(), 1)
    assert_close(ours[0], ref[0], dtype=dtype, terms=terms, magnitude=mag["loss"], msg="loss")
    assert_close(ours[2], ref[2], dtype=dtype, terms=terms, magnitude=mag["grad_input"] * copies,
                 msg="grad")
    # and the same as on a contiguous copy
    contiguous = forward_backward(D.cross_entropy, x.contiguous(), t.contiguous(), **kwargs)
    assert_close(ours[0], contiguous[0], dtype=dtype, terms=terms, magnitude=mag["loss"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_non_contiguous_and_expanded_targets(backend, device, dtype, reduction):
    x = make_logits((6, 5), dtype, device)
    targets = {
        "strided": make_index_target((12,), 5, device)[::2],
        "expanded": torch.tensor([3], device=device).expand(6),
        "spatial_transposed": make_index_target((3, 6), 5, device).t(),  # for (6, 5, 3) input
        "prob_expanded": make_prob_target((1, 5), dtype, device).expand(6, 5),
    }
    kwargs = dict(reduction=reduction, label_smoothing=0.1, weight=make_weight(5, dtype, device))
    for name, t in targets.items():
        assert not t.is_contiguous(), name
        xi = make_logits((6, 5, 3), dtype, device) if name == "spatial_transposed" else x
        ours, _ = compare_with_torch(xi, t, **kwargs)
        contiguous, _ = compare_with_torch(xi, t.contiguous(), **kwargs)
        mag = error_magnitudes(xi, t, **kwargs)
        assert_close(ours[0], contiguous[0], dtype=dtype, terms=num_terms(xi),
                     magnitude=mag["loss"], msg=name)


# --------------------------------------------------------------------------- gradcheck


GRADCHECK_CASES = {
    "index": dict(shape=(4, 5), kind="index"),
    "index_weight_smoothing": dict(shape=(4, 5), kind="index", weighted=True, label_smoothing=0.2),
    "index_ignored": dict(shape=(5, 4), kind="index", ignore=True, weighted=True),
    "spatial": dict(shape=(2, 3, 2, 2), kind="index", label_smoothing=0.3, weighted=True),
    "prob": dict(shape=(4, 5), kind="prob"),
    "prob_weight_smoothing": dict(shape=(3, 4, 2), kind="prob", weighted=True, label_smoothing=0.2),
    "unbatched": dict(shape=(5,), kind="index", label_smoothing=0.1),
}


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_native(device, case, reduction):
    skip_unless_native_kernels(device)
    spec = GRADCHECK_CASES[case]
    shape = spec["shape"]
    num_classes = shape[1] if len(shape) > 1 else shape[0]
    x = make_logits(shape, torch.float64, device).requires_grad_()
    if spec["kind"] == "index":
        batch = shape[:1] + shape[2:] if len(shape) > 1 else ()
        t = make_index_target(batch, num_classes, device, ignore_index=-100,
                              ignore_frac=0.4 if spec.get("ignore") else 0.0)
        inputs = (x,)
    else:
        t = make_prob_target(shape, torch.float64, device).requires_grad_()
        inputs = (x, t)
    w = make_weight(num_classes, torch.float64, device) if spec.get("weighted") else None
    ls = spec.get("label_smoothing", 0.0)

    def fn(*args):
        target = args[1] if len(args) > 1 else t
        return D.cross_entropy(args[0], target, weight=w, reduction=reduction, label_smoothing=ls)

    with d2l_ext.use_backend("native"):
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@requires_native
def test_double_backward_matches_torch():
    x = make_logits((4, 3), torch.float64, "cpu")
    t = make_index_target((4,), 3, "cpu")

    def hess_term(fn):
        xx = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(fn(xx, t), xx, create_graph=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            (h,) = torch.autograd.grad(g.square().sum() + xx.sum(), xx)
        return h

    with d2l_ext.use_backend("native"):
        ours = hess_term(D.cross_entropy)
    torch.testing.assert_close(ours, hess_term(F.cross_entropy))


# --------------------------------------------------------------------------- weight.requires_grad


def _weight_grad(fn, x, t, w, label_smoothing):
    w = w.detach().clone().requires_grad_()
    loss = fn(x, t, weight=w, label_smoothing=label_smoothing)
    (gw,) = torch.autograd.grad(loss, w)
    return gw


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_weight_gradient_prob_targets(device, dtype, label_smoothing, backend_name):
    if backend_name == "native":
        skip_unless_native_kernels(device)
    x = make_logits((6, 5), dtype, device)
    q = make_prob_target((6, 5), dtype, device)
    w = make_weight(5, dtype, device)
    ref = _weight_grad(F.cross_entropy, x, q, w, label_smoothing)
    with d2l_ext.use_backend(backend_name):
        ours = _weight_grad(D.cross_entropy, x, q, w, label_smoothing)
    # d mean / d w_c = sum_rows q'_c * -logp_c / rows: magnitude lse_mag
    mag = error_magnitudes(x, q)["loss"]
    assert_close(ours, ref, dtype=dtype, terms=num_terms(x), magnitude=mag)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_weight_gradient_index_targets_refused_like_torch(device, label_smoothing, backend_name):
    if backend_name == "native":
        skip_unless_native_kernels(device)
    x = make_logits((6, 5), torch.float64, device)
    t = make_index_target((6,), 5, device)
    w = make_weight(5, torch.float64, device)
    with pytest.raises(RuntimeError):
        _weight_grad(F.cross_entropy, x, t, w, label_smoothing)
    with d2l_ext.use_backend(backend_name), pytest.raises(RuntimeError, match="weight"):
        _weight_grad(D.cross_entropy, x, t, w, label_smoothing)


# --------------------------------------------------------------------------- opcheck


def _opcheck_samples(device):
    """(name, args) for torch.ops.d2l_ext.cross_entropy, without requires_grad."""
    f64 = torch.float64
    samples = []
    for reduction in (0, 1, 2):
        x = make_logits((4, 5), f64, device)
        samples.append((f"index_r{reduction}", (
            x, make_index_target((4,), 5, device), None, reduction, -100, 0.0)))
        samples.append((f"index_weight_ignore_smooth_r{reduction}", (
            x, make_index_target((4,), 5, device, ignore_index=1, ignore_frac=0.5),
            make_weight(5, f64, device), reduction, 1, 0.1)))
        samples.append((f"spatial_r{reduction}", (
            make_logits((2, 3, 4), torch.float32, device), make_index_target((2, 4), 3, device),
            None, reduction, -100, 0.2)))
        samples.append((f"prob_r{reduction}", (
            x, make_prob_target((4, 5), f64, device), make_weight(5, f64, device), reduction,
            -100, 0.1)))
        samples.append((f"prob_spatial_r{reduction}", (
            make_logits((2, 3, 2, 2), torch.float32, device),
            make_prob_target((2, 3, 2, 2), torch.float32, device), None, reduction, -100, 0.0)))
    return samples


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True], ids=["nograd", "grad"])
def test_opcheck_cross_entropy(device, requires_grad):
    skip_unless_native_kernels(device)
    op = torch.ops.d2l_ext.cross_entropy.default
    for name, args in _opcheck_samples(device):
        args = list(args)
        if requires_grad:
            args[0] = args[0].clone().requires_grad_()
            if args[1].is_floating_point():  # probability targets are differentiable too
                args[1] = args[1].clone().requires_grad_()
        result = torch.library.opcheck(op, tuple(args))
        assert all(v == "SUCCESS" for v in result.values()), (name, result)


@requires_native
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_cross_entropy_backward(device):
    skip_unless_native_kernels(device)
    op = torch.ops.d2l_ext._cross_entropy_backward.default
    for name, (x, t, w, reduction, ignore_index, ls) in _opcheck_samples(device):
        _, lse, total_weight = torch.ops.d2l_ext.cross_entropy(x, t, w, reduction, ignore_index, ls)
        rows = x.shape[:1] + x.shape[2:]
        grad_loss = (torch.randn(rows, generator=_gen(5), dtype=x.dtype) if reduction == 0
                     else torch.tensor(0.7, dtype=x.dtype)).to(device)
        args = (grad_loss, x, t, w, lse, total_weight, reduction, ignore_index, ls)
        result = torch.library.opcheck(op, args)
        assert all(v == "SUCCESS" for v in result.values()), (name, result)


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_raw_op_outputs(device, dtype):
    """lse is the per-row log-sum-exp and total_weight the "mean" divisor."""
    skip_unless_native_kernels(device)
    x = make_logits((5, 4, 3), dtype, device)
    t = make_index_target((5, 3), 4, device, ignore_index=-100, ignore_frac=0.3)
    w = make_weight(4, dtype, device)
    loss, lse, total_weight = torch.ops.d2l_ext.cross_entropy(x, t, w, 1, -100, 0.0)
    valid = t != -100
    assert valid.any() and not valid.all()
    lse_mag = float(x.abs().max()) + math.log(4) + 1
    assert_close(lse[valid], torch.logsumexp(x, dim=1)[valid], dtype=dtype, terms=4,
                 magnitude=lse_mag)
    expected_tw = w[t.clamp(min=0)][valid].sum()
    assert_close(total_weight, expected_tw, dtype=dtype, terms=15)
    mag = error_magnitudes(x, t, weight=w)["loss"]
    assert_close(loss, F.cross_entropy(x, t, weight=w), dtype=dtype, terms=19, magnitude=mag)
    # "none" returns the per-row losses; prob targets count every row in the divisor
    rows, _, _ = torch.ops.d2l_ext.cross_entropy(x, t, w, 0, -100, 0.0)
    assert rows.shape == t.shape and (rows[~valid] == 0).all()
    q = make_prob_target(x.shape, dtype, device)
    _, _, total_weight = torch.ops.d2l_ext.cross_entropy(x, q, w, 1, -100, 0.0)
    assert float(total_weight) == 15


# --------------------------------------------------------------------------- torch.compile


def _compile_and_run(fn, args, backend_name, compile_backend):
    """Loss terms and input gradient of ``fn`` compiled with fullgraph=True, and eagerly."""
    import torch._dynamo

    def run(f):
        x = args[0].clone().requires_grad_()
        outs = f(x, *args[1:])
        sum(o.sum() for o in outs).backward()
        return [o.detach() for o in outs], x.grad

    torch._dynamo.reset()
    try:
        with d2l_ext.use_backend(backend_name):
            got = run(torch.compile(fn, fullgraph=True, backend=compile_backend))
            eager = run(fn)
    finally:
        torch._dynamo.reset()
    return got, eager


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(device, backend_name, compile_backend):
    """Index targets: compiled forward and backward equal eager and torch."""
    if backend_name == "native":
        skip_unless_native_kernels(device)
    dtype = torch.float32
    x = make_logits((8, 5, 3), dtype, device)
    t = make_index_target((8, 3), 5, device, ignore_index=-100, ignore_frac=0.25)
    w = make_weight(5, dtype, device)
    row_w = torch.rand((8, 3), generator=_gen(12)).to(device)

    def loss_fn(f):
        def fn(x, t, w, row_w):
            a = f(x, t, weight=w, label_smoothing=0.1)
            c = f(x, t, reduction="none") * row_w
            return a, c
        return fn

    got, eager = _compile_and_run(loss_fn(D.cross_entropy), (x, t, w, row_w), backend_name,
                                  compile_backend)
    _, ref = _compile_and_run(loss_fn(F.cross_entropy), (x, t, w, row_w), backend_name, "eager")
    mag_a = error_magnitudes(x, t, weight=w, label_smoothing=0.1)
    mag_c = error_magnitudes(x, t, grad_out=row_w, reduction="none")
    terms = num_terms(x)
    for other in (eager, ref):
        assert_close(got[0][0], other[0][0], dtype=dtype, terms=terms, magnitude=mag_a["loss"])
        assert_close(got[0][1], other[0][1], dtype=dtype, terms=terms, magnitude=mag_c["loss"])
        assert_close(got[1], other[1], dtype=dtype, terms=terms,
                     magnitude=mag_a["grad_input"] + mag_c["grad_input"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_torch_compile_fullgraph_prob_targets(device, backend_name):
    if backend_name == "native":
        skip_unless_native_kernels(device)
    dtype = torch.float32
    x = make_logits((8, 5, 3), dtype, device)
    q = make_prob_target((8, 5, 3), dtype, device)

    def fn(x, q):
        return (D.cross_entropy(x, q, reduction="sum", label_smoothing=0.1),)

    got, eager = _compile_and_run(fn, (x, q), backend_name, "aot_eager")
    mag = error_magnitudes(x, q, reduction="sum", label_smoothing=0.1)
    assert_close(got[0][0], eager[0][0], dtype=dtype, terms=num_terms(x), magnitude=mag["loss"])
    assert_close(got[1], eager[1], dtype=dtype, terms=num_terms(x), magnitude=mag["grad_input"])


# --------------------------------------------------------------------------- memory


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("kind", ["index", "prob"])
def test_native_saves_only_lse_for_backward(device, weighted, kind):
    """The fused op keeps (input, target, [weight], lse (N,), total_weight ()) for backward;
    torch keeps a second (N, C) tensor, the log-softmax."""
    skip_unless_native_kernels(device)
    n, c = 64, 100
    x = make_logits((n, c), torch.float32, device).requires_grad_()
    t = (make_index_target((n,), c, device) if kind == "index"
         else make_prob_target((n, c), torch.float32, device))
    w = make_weight(c, torch.float32, device) if weighted else None

    with d2l_ext.use_backend("native"):
        loss, saved = saved_tensors(D.cross_entropy, x, t, weight=w, label_smoothing=0.1)
    torch.autograd.grad(loss, x)  # and they are enough for backward

    def same(a, b):  # the caller's tensor itself, not a copy
        return b is not None and a.data_ptr() == b.data_ptr() and a.shape == b.shape

    ours = [s for s in saved if not (same(s, x) or same(s, t) or same(s, w))]
    assert any(same(s, x) for s in saved)
    assert any(same(s, w) for s in saved) == weighted
    # no saved tensor of N * C elements (or more) but the input and target themselves
    assert all(s.numel() < n * c for s in ours), [tuple(s.shape) for s in saved]
    # besides them only lse (N,) and total_weight (): N + 1 numbers
    assert sorted(tuple(s.shape) for s in ours) == [(), (n,)], [tuple(s.shape) for s in saved]
    assert sum(s.numel() for s in ours) == n + 1
    lse = next(s for s in ours if s.dim() == 1)
    total_weight = next(s for s in ours if s.dim() == 0)
    torch.testing.assert_close(lse, torch.logsumexp(x.detach(), 1), rtol=1e-6, atol=1e-5)
    expected_total = float(n) if kind == "prob" else float(w[t].sum()) if weighted else float(n)
    assert float(total_weight) == pytest.approx(expected_total, rel=1e-6)

    # torch keeps an extra (N, C) tensor: the log-softmax
    _, saved_torch = saved_tensors(F.cross_entropy, x, t, weight=w, label_smoothing=0.1)
    extra = [s for s in saved_torch if not (same(s, x) or same(s, t) or same(s, w))]
    assert any(tuple(s.shape) == (n, c) for s in extra), [tuple(s.shape) for s in saved_torch]
    assert sum(s.numel() for s in extra) >= n * c


# --------------------------------------------------------------------------- bad inputs


def _x(*shape, dtype=torch.float32, device="cpu"):
    return make_logits(shape, dtype, device)


def _t(*values, device="cpu", dtype=torch.long):
    return torch.tensor(values, dtype=dtype, device=device)


# name -> (callable(fn, device), the exception type torch raises)
BAD_INPUTS = {
    "target_too_large": (lambda f, d: f(_x(4, 3, device=d), _t(0, 1, 2, 3, device=d)), IndexError),
    "target_negative": (lambda f, d: f(_x(4, 3, device=d), _t(0, -1, 2, 1, device=d)), IndexError),
    "target_is_default_ignore_but_ignore_changed": (
        lambda f, d: f(_x(4, 3, device=d), _t(0, -100, 2, 1, device=d), ignore_index=1),
        IndexError),
    "target_out_of_range_smoothing_sum": (
        lambda f, d: f(_x(4, 3, device=d), _t(0, 1, 7, 1, device=d), reduction="sum",
                       label_smoothing=0.2), IndexError),
    "target_out_of_range_none": (
        lambda f, d: f(_x(4, 3, device=d), _t(0, 1, 2, 3, device=d), reduction="none"),
        IndexError),
    "target_out_of_range_weighted": (
        lambda f, d: f(_x(4, 3, device=d), _t(0, 1, 2, 3, device=d),
                       weight=torch.ones(3, device=d)), IndexError),
    "target_out_of_range_spatial": (
        lambda f, d: f(_x(2, 3, 4, device=d), torch.full((2, 4), 3, device=d)), IndexError),
    "target_out_of_range_unbatched": (lambda f, d: f(_x(3, device=d), _t(3, device=d)[0]),
                                      IndexError),
    "target_int32": (lambda f, d: f(_x(4, 3, device=d), _t(0, 1, 2, 1, device=d,
                                                              dtype=torch.int32)), RuntimeError),
    "target_float_index": (lambda f, d: f(_x(4, 3, device=d), _t(0, 1, 2, 1, device=d,
                                                                    dtype=torch.float32)),
                           RuntimeError),
    "target_bool": (lambda f, d: f(_x(4, 3, device=d), _t(0, 1, 1, 1, device=d,
                                                             dtype=torch.bool)), RuntimeError),
    "batch_size_mismatch": (lambda f, d: f(_x(4, 3, device=d), _t(0, 1, 2, device=d)),
                            ValueError),
    "target_0d_for_batch": (lambda f, d: f(_x(4, 3, device=d), _t(1, device=d)[0]), ValueError),
    "spatial_target_wrong_size": (
        lambda f, d: f(_x(2, 3, 4, 5, device=d), torch.zeros(2, 4, 6, dtype=torch.long, device=d)),
        RuntimeError),
    "spatial_target_wrong_dim": (
        lambda f, d: f(_x(2, 3, 4, 5, device=d), torch.zeros(2, 4, dtype=torch.long, device=d)),
        RuntimeError),
    "multi_target": (lambda f, d: f(_x(4, 3, device=d), torch.zeros(4, 2, dtype=torch.long,
                                                                     device=d)), RuntimeError),
    "unbatched_target_two_values": (lambda f, d: f(_x(3, device=d), _t(0, 1, device=d)),
                                    ValueError),
    "weight_too_long": (lambda f, d: f(_x(4, 3, device=d), _t(0, 1, 2, 1, device=d),
                                       weight=torch.ones(4, device=d)), RuntimeError),
    "weight_too_short_prob": (lambda f, d: f(_x(4, 3, device=d), torch.rand(4, 3, device=d),
                                             weight=torch.ones(2, device=d)), RuntimeError),
    "weight_2d": (lambda f, d: f(_x(4, 3, device=d), _t(0, 1, 2, 1, device=d),
                                 weight=torch.ones(1, 3, device=d)), RuntimeError),
    "weight_wrong_dtype": (lambda f, d: f(_x(4, 3, device=d), _t(0, 1, 2, 1, device=d),
                                          weight=torch.ones(3, dtype=torch.float64, device=d)),
                           RuntimeError),
    "invalid_reduction": (lambda f, d: f(_x(4, 3, device=d), _t(0, 1, 2, 1, device=d),
                                         reduction="avg"), ValueError),
    "label_smoothing_above_one": (lambda f, d: f(_x(4, 3, device=d), _t(0, 1, 2, 1, device=d),
                                                 label_smoothing=1.5), RuntimeError),
    "label_smoothing_above_one_prob": (
        lambda f, d: f(_x(4, 3, device=d), torch.rand(4, 3, device=d), label_smoothing=1.01),
        RuntimeError),
    "ignore_index_with_prob_target": (
        lambda f, d: f(_x(4, 3, device=d), torch.rand(4, 3, device=d), ignore_index=0),
        RuntimeError),
    "prob_target_integer": (
        lambda f, d: f(_x(4, 3, device=d), torch.ones(4, 3, dtype=torch.long, device=d)),
        RuntimeError),
    "integer_input": (
        lambda f, d: f(torch.ones(4, 3, dtype=torch.long, device=d), _t(0, 1, 2, 1, device=d)),
        NotImplementedError),
    "integer_input_prob_target": (
        lambda f, d: f(torch.ones(4, 3, dtype=torch.long, device=d), torch.rand(4, 3, device=d)),
        NotImplementedError),
    "integer_input_unbatched": (
        lambda f, d: f(torch.ones(3, dtype=torch.long, device=d), _t(1, device=d)[0]),
        NotImplementedError),
    "scalar_input": (lambda f, d: f(torch.tensor(1.0, device=d), _t(0, device=d)[0]),
                     RuntimeError),
}
# torch's CUDA kernels check target ranges with a device-side assert, which
# would poison the CUDA context of the whole test process: on CUDA these cases
# check only ours (d2l_ext raises a host-side IndexError on CUDA too) against
# the type torch raises on the CPU.
_OUT_OF_RANGE = {k for k, (_, exc) in BAD_INPUTS.items() if exc is IndexError}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_raise_like_torch(backend, device, case):
    call, expected = BAD_INPUTS[case]
    # torch's CPU and CUDA kernels disagree on some types (a bad target dtype is a
    # RuntimeError on the CPU, a NotImplementedError -- its subclass -- on CUDA);
    # d2l_ext raises the CPU's type on every device.
    with pytest.raises(Exception) as torch_exc:
        call(F.cross_entropy, "cpu")
    assert type(torch_exc.value) is expected, (case, torch_exc.value)
    if case not in _OUT_OF_RANGE:
        with pytest.raises(expected):
            call(F.cross_entropy, device)
    with pytest.raises(Exception) as ours:
        call(D.cross_entropy, device)
    assert type(ours.value) is expected, (case, repr(ours.value))


@pytest.mark.parametrize("device", DEVICES)
def test_negative_label_smoothing_like_torch(backend, device):
    x = _x(4, 3, device=device)
    t = _t(0, 1, 2, 1, device=device)
    expected = F.cross_entropy(x, t, label_smoothing=-0.1)
    torch.testing.assert_close(D.cross_entropy(x, t, label_smoothing=-0.1), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_integer_input_and_integer_prob_target_like_torch(backend, device):
    x = torch.ones(4, 3, dtype=torch.long, device=device)
    t = torch.ones(4, 3, dtype=torch.long, device=device)
    with pytest.raises(Exception) as torch_exc:
        F.cross_entropy(x, t)
    with pytest.raises(Exception) as ours:
        D.cross_entropy(x, t)
    # exact types: NotImplementedError is a subclass of RuntimeError
    assert type(ours.value) is type(torch_exc.value), (ours.value, torch_exc.value)


def _raw_args(device):
    return (_x(4, 3, device=device), _t(0, 1, 2, 1, device=device), None, 1, -100, 0.0)


# name -> (change of the raw args, a word the message must contain)
RAW_MISUSE = {
    "input_1d": (lambda a: (_x(3, device=a[0].device), _t(1, device=a[0].device)[0]) + a[2:],
                 "dim"),
    "reduction_5": (lambda a: a[:3] + (5,) + a[4:], "reduction"),
    "reduction_negative": (lambda a: a[:3] + (-1,) + a[4:], "reduction"),
    "label_smoothing_2": (lambda a: a[:5] + (2.0,), "label_smoothing"),
    "target_int32": (lambda a: (a[0], a[1].int()) + a[2:], "target"),
    "target_wrong_shape": (lambda a: (a[0], a[1][:3]) + a[2:], "target"),
    "prob_target_other_dtype": (lambda a: (a[0], torch.rand(4, 3, dtype=torch.float64,
                                                            device=a[0].device)) + a[2:],
                                "target"),
    "weight_wrong_length": (lambda a: a[:2] + (torch.ones(5, device=a[0].device),) + a[3:],
                            "weight"),
    "weight_wrong_dtype": (lambda a: a[:2] + (torch.ones(3, dtype=torch.float64,
                                                         device=a[0].device),) + a[3:],
                           "weight"),
    "integer_input": (lambda a: (a[0].long(),) + a[1:], "input"),
}


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(RAW_MISUSE))
def test_raw_op_misuse(device, case):
    skip_unless_native_kernels(device)
    change, word = RAW_MISUSE[case]
    args = change(_raw_args(device))
    with pytest.raises(RuntimeError, match=word):
        torch.ops.d2l_ext.cross_entropy(*args)


@requires_native
@pytest.mark.parametrize("device", DEVICES)
def test_raw_backward_misuse(device):
    skip_unless_native_kernels(device)
    x, t, w, red, ii, ls = _raw_args(device)
    _, lse, tw = torch.ops.d2l_ext.cross_entropy(x, t, w, 0, ii, ls)
    g = torch.ones(4, device=device)
    with pytest.raises(RuntimeError, match="grad_loss"):
        torch.ops.d2l_ext._cross_entropy_backward(g[:3], x, t, w, lse, tw, 0, ii, ls)
    with pytest.raises(RuntimeError, match="lse"):
        torch.ops.d2l_ext._cross_entropy_backward(g, x, t, w, lse[:2], tw, 0, ii, ls)
    with pytest.raises(RuntimeError, match="reduction"):
        torch.ops.d2l_ext._cross_entropy_backward(g, x, t, w, lse, tw, 7, ii, ls)
    with pytest.raises(RuntimeError, match="grad_loss"):  # a mean loss has a scalar gradient
        torch.ops.d2l_ext._cross_entropy_backward(g, x, t, w, lse, tw, 1, ii, ls)
    if device != "cpu":  # the CUDA backward kernel treats such a row as ignored
        return
    with pytest.raises(IndexError):
        torch.ops.d2l_ext._cross_entropy_backward(g, x, _t(0, 1, 2, 5, device=device), w, lse, tw,
                                                  0, ii, ls)


# --------------------------------------------------------------------------- NaN / Inf

NAN, INF = float("nan"), float("inf")
# rows of logits (C = 4), and each row's class-index target
SPECIAL_ROWS = [
    ([0.0, 1.0, 2.0, 3.0], 1),          # finite
    ([NAN, 1.0, 2.0, 3.0], 1),          # NaN off the target
    ([0.0, NAN, 2.0, 3.0], 1),          # NaN on the target
    ([0.0, -INF, 2.0, 3.0], 2),         # -inf off the target: probability 0, finite loss
    ([0.0, -INF, 2.0, 3.0], 1),         # -inf on the target: loss +inf
    ([-INF, -INF, -INF, -INF], 0),      # all -inf: nan
]
# +inf logits, and an ignored row with NaN logits, have their own tests.


def _special(dtype, device, rows, width=1):
    x = torch.tensor([r for r, _ in rows], dtype=torch.float64).repeat(1, width)
    t = torch.tensor([c for _, c in rows])
    return x.to(dtype).to(device), t.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("width", [1, 5], ids=["C4", "C20"])  # C20: vectorised loops + tail
@pytest.mark.parametrize("row", range(len(SPECIAL_ROWS)))
def test_nan_inf_propagate_like_torch(backend, device, dtype, label_smoothing, width, row):
    # Each special row together with a finite row, so mean/sum mix them.
    x, t = _special(dtype, device, [SPECIAL_ROWS[0], SPECIAL_ROWS[row]], width)
    for reduction in REDUCTIONS:
        kwargs = dict(reduction=reduction, label_smoothing=label_smoothing)
        ours = D.cross_entropy(x, t, **kwargs)
        ref = F.cross_entropy(x, t, **kwargs)
        assert torch.equal(torch.isnan(ours), torch.isnan(ref)), (reduction, ours, ref)
        assert torch.equal(torch.isinf(ours), torch.isinf(ref)), (reduction, ours, ref)
        mag = magnitudes(x, t, None, kwargs)["loss"]
        assert_close(ours, ref, dtype=dtype, terms=num_terms(x), magnitude=mag)
    # gradient of the per-row losses: NaN where torch has NaN, else equal
    kwargs = dict(reduction="none", label_smoothing=label_smoothing)
    ours = forward_backward(D.cross_entropy, x, t, **kwargs)
    ref = forward_backward(F.cross_entropy, x, t, **kwargs)
    assert torch.equal(torch.isnan(ours[2][0]), torch.isnan(ref[2][0])), (ours[2], ref[2])
    mag = magnitudes(x, t, ref[1], kwargs)["grad_input"]
    assert_close(ours[2][0], ref[2][0], dtype=dtype, terms=num_terms(x), magnitude=mag)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("target", [0, 1], ids=["off_target", "on_target"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_plus_inf_logit(device, dtype, backend_name, target, label_smoothing):
    """A +inf logit makes torch's whole log-softmax row NaN: loss and gradient."""
    if backend_name == "native":
        skip_unless_native_kernels(device)
    x = torch.tensor([[0.0, INF, 1.0], [0.5, 1.0, 2.0]], dtype=dtype, device=device)
    t = torch.tensor([target, 2], device=device)
    kwargs = dict(reduction="none", label_smoothing=label_smoothing)
    with d2l_ext.use_backend(backend_name):
        ours = forward_backward(D.cross_entropy, x, t, **kwargs)
    ref = forward_backward(F.cross_entropy, x, t, **kwargs)
    assert torch.isnan(ref[0][0]) and torch.isnan(ref[2][0][0]).all()
    assert torch.equal(torch.isnan(ours[0]), torch.isnan(ref[0])), (ours[0], ref[0])
    assert torch.equal(torch.isnan(ours[2][0]), torch.isnan(ref[2][0])), (ours[2], ref[2])
    mag = magnitudes(x, t, ref[1], kwargs)
    assert_close(ours[0], ref[0], dtype=dtype, terms=6, magnitude=mag["loss"])
    assert_close(ours[2][0], ref[2][0], dtype=dtype, terms=6, magnitude=mag["grad_input"])


IGNORED_NAN_ROW = ([[0.0, 1.0, 2.0, 3.0], [NAN, 1.0, 2.0, 3.0]], [1, -100])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_ignored_row_with_nan_logits_loss(device, dtype, label_smoothing, backend_name):
    if backend_name == "native":
        skip_unless_native_kernels(device)
    x = torch.tensor(IGNORED_NAN_ROW[0], dtype=dtype, device=device)
    t = torch.tensor(IGNORED_NAN_ROW[1], device=device)
    with d2l_ext.use_backend(backend_name):
        for reduction in REDUCTIONS:
            kwargs = dict(reduction=reduction, label_smoothing=label_smoothing)
            ref = F.cross_entropy(x, t, **kwargs)
            assert torch.isfinite(ref).all()
            mag = magnitudes(x, t, None, kwargs)["loss"]
            assert_close(D.cross_entropy(x, t, **kwargs), ref, dtype=dtype, terms=8,
                         magnitude=mag, msg=reduction)


IGNORED_ROWS = {  # an ignored row's logits -> torch's gradient there: NaN unless its log-sum-exp is finite
    "nan": [NAN, 1.0, 2.0, 3.0],
    "plus_inf": [float("inf"), 1.0, 2.0, 3.0],
    "all_minus_inf": [float("-inf")] * 4,
    "some_minus_inf": [float("-inf"), 1.0, float("-inf"), 3.0],
    "finite": [0.5, 1.0, 2.0, 3.0],
}


@pytest.mark.parametrize("spatial", [False, True], ids=["rows", "spatial"])
@pytest.mark.parametrize("row", list(IGNORED_ROWS))
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_ignored_row_gradient_is_torchs(backend, device, dtype, row, spatial):
    # An ignored row adds no loss, but torch's log_softmax backward multiplies its softmax by a
    # zero gradient: NaN in every class when the row's log-sum-exp is not finite (a NaN or +inf
    # logit, all -inf), else 0. Both backends give the same; the other rows are unaffected.
    # spatial: (N, C, 16) logits, where the CPU kernel takes 8 positions at a time.
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0], IGNORED_ROWS[row]], dtype=dtype, device=device)
    t = torch.tensor([1, -100], device=device)
    if spatial:
        x = x.unsqueeze(-1).repeat(1, 1, 16).contiguous()
        x[0, :, 5] = torch.tensor(IGNORED_ROWS[row], dtype=dtype)
        t = torch.tensor([[1] * 5 + [-100] + [2] * 10, [-100] * 8 + [0] * 8], device=device)
    for reduction in REDUCTIONS:
        ours = forward_backward(D.cross_entropy, x, t, reduction=reduction)
        ref = forward_backward(F.cross_entropy, x, t, reduction=reduction)
        assert torch.equal(torch.isnan(ours[2][0]), torch.isnan(ref[2][0])), reduction
        if row not in ("finite", "some_minus_inf"):  # the case must really exercise the NaN path
            assert torch.isnan(ref[2][0]).any()
        torch.testing.assert_close(ours[0], ref[0], equal_nan=True)
        torch.testing.assert_close(ours[2][0], ref[2][0], equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_nan_prob_target_propagates(backend, device, dtype):
    x = make_logits((3, 4), dtype, device)
    q = make_prob_target((3, 4), dtype, device)
    q[1, 2] = NAN
    for reduction in REDUCTIONS:
        ours = D.cross_entropy(x, q, reduction=reduction)
        ref = F.cross_entropy(x, q, reduction=reduction)
        assert torch.equal(torch.isnan(ours), torch.isnan(ref))
        assert torch.isnan(ours).any()


# --------------------------------------------------------------------------- the module


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_module_is_a_drop_in(backend, device, dtype, reduction):
    w = make_weight(5, dtype, device)
    kwargs = dict(weight=w, ignore_index=2, reduction=reduction, label_smoothing=0.15)
    ours = d2l_ext.nn.CrossEntropyLoss(**kwargs)
    theirs = torch.nn.CrossEntropyLoss(**kwargs)
    assert isinstance(ours, torch.nn.CrossEntropyLoss)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    assert (ours.ignore_index, ours.reduction, ours.label_smoothing) == (2, reduction, 0.15)

    # load torch's state (other weights) into ours; forward follows the new weights
    theirs = torch.nn.CrossEntropyLoss(weight=make_weight(5, dtype, device, seed=11),
                                       ignore_index=2, reduction=reduction, label_smoothing=0.15)
    ours.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=0, atol=0)

    x = make_logits((6, 5, 2), dtype, device)
    t = make_index_target((6, 2), 5, device)
    lo, _, (go,) = forward_backward(ours, x, t)
    lt, g, (gt,) = forward_backward(theirs, x, t)
    kwargs = dict(weight=theirs.weight, ignore_index=2, reduction=reduction, label_smoothing=0.15)
    mag = magnitudes(x, t, g, kwargs)
    assert_close(lo, lt, dtype=dtype, terms=num_terms(x), magnitude=mag["loss"])
    assert_close(go, gt, dtype=dtype, terms=num_terms(x), magnitude=mag["grad_input"])
    q = make_prob_target((6, 5, 2), dtype, device)
    theirs.ignore_index = ours.ignore_index = -100
    mag = magnitudes(x, q, None, dict(kwargs, ignore_index=-100))
    assert_close(ours(x, q), theirs(x, q), dtype=dtype, terms=num_terms(x), magnitude=mag["loss"])
    # and back: a torch module loads our state
    fresh = torch.nn.CrossEntropyLoss(weight=torch.ones(5, dtype=dtype, device=device))
    fresh.load_state_dict(ours.state_dict())
    assert torch.equal(fresh.weight, ours.weight)


def test_module_legacy_arguments_and_no_weight(backend):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ours = d2l_ext.nn.CrossEntropyLoss(size_average=False)
        theirs = torch.nn.CrossEntropyLoss(size_average=False)
    assert ours.reduction == theirs.reduction == "sum"
    assert list(ours.state_dict()) == list(theirs.state_dict()) == []
    x, t = make_logits((4, 3), torch.float64, "cpu"), make_index_target((4,), 3, "cpu")
    mag = error_magnitudes(x, t, reduction="sum")["loss"]
    assert_close(ours(x, t), theirs(x, t), dtype=torch.float64, terms=8, magnitude=mag)


# --------------------------------------------------------------------------- backends


def test_use_backend_switches_and_restores():
    start = d2l_ext.backend()
    with d2l_ext.use_backend("python"):
        assert d2l_ext.backend() == "python"
        x, t = make_logits((4, 3), torch.float64, "cpu"), make_index_target((4,), 3, "cpu")
        mag = error_magnitudes(x, t)["loss"]
        assert_close(D.cross_entropy(x, t), F.cross_entropy(x, t), dtype=torch.float64, terms=8,
                     magnitude=mag)
    assert d2l_ext.backend() == start
    with pytest.raises(ZeroDivisionError), d2l_ext.use_backend("python"):
        raise ZeroDivisionError  # restored on errors too
    assert d2l_ext.backend() == start


def test_set_backend_rejects_unknown_names():
    before = d2l_ext.backend()
    with pytest.raises(ValueError, match="backend"):
        d2l_ext.set_backend("cuda")
    with pytest.raises(ValueError), d2l_ext.use_backend("fast"):
        pass
    assert d2l_ext.backend() == before


@requires_native
def test_native_backend_is_default_when_built():
    assert d2l_ext.native_available()
    assert d2l_ext.backend() == "native"  # conftest restores it after every test
    assert isinstance(d2l_ext.has_cuda_kernels(), bool)


@pytest.mark.skipif(d2l_ext.native_available(), reason="only without the compiled library")
def test_native_backend_refused_without_library():
    with pytest.raises(RuntimeError, match="not loaded"):
        d2l_ext.set_backend("native")


@pytest.mark.skipif(not CUDA_AVAILABLE, reason="needs a CUDA device")
def test_cuda_kernels_or_a_warning():
    """On CUDA, the native backend runs CUDA kernels, or says once that it falls back."""
    if not d2l_ext.native_available():
        pytest.skip("the compiled library d2l_ext._C is not built")
    x = make_logits((4, 3), torch.float32, "cuda")
    t = make_index_target((4,), 3, "cuda")
    with d2l_ext.use_backend("native"), warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        D.cross_entropy(x, t)
    fallback = [w for w in rec if "built without cuda kernels" in str(w.message)]
    if d2l_ext.has_cuda_kernels():
        assert not fallback
    else:  # only warned the first time in this process, so at most once here
        assert len(fallback) <= 1


def test_math_of_the_tolerance_helper():
    """The tolerance budget is what conftest says: tight for float64, not for float32."""
    assert tolerances(torch.float64, 100) < 1e-13
    assert 5e-7 < tolerances(torch.float32, 1) < 1e-5
    assert math.isclose(tolerances(torch.float32, 400), 20 * tolerances(torch.float32, 1))


# --------------------------------------------------------------------------- spatial fast path


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spatial", [(8,), (3, 5), (4, 9), (2, 33)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_spatial_positions_in_blocks_of_eight(backend, device, spatial, reduction, weighted,
                                              label_smoothing):
    # The CPU kernel handles float32 spatial inputs eight positions at a time when
    # the example has at least eight positions, and one at a time for the rest:
    # sizes 8, 15, 36 and 66 cover whole blocks, tails and blocks that would
    # straddle two examples. Ignored positions land inside the blocks.
    x = make_logits((3, 7) + spatial, torch.float32, device, seed=11)
    t = make_index_target((3,) + spatial, 7, device, seed=12, ignore_index=-100, ignore_frac=0.2)
    w = make_weight(7, torch.float32, device) if weighted else None
    compare_with_torch(x, t, weight=w, reduction=reduction, label_smoothing=label_smoothing)


@requires_native
def test_spatial_block_ignored_lane_with_nan_logits_is_torchs():
    x = make_logits((2, 5, 16), torch.float32, "cpu", seed=13)
    t = make_index_target((2, 16), 5, "cpu", seed=14)
    x[0, :, 3] = float("nan")
    t[0, 3] = -100
    xr = x.clone().requires_grad_()
    with d2l_ext.use_backend("native"):
        loss = D.cross_entropy(xr, t)
        (g,) = torch.autograd.grad(loss, xr)
    assert torch.isfinite(loss)
    assert torch.isnan(g[0, :, 3]).all()  # torch's 0 * softmax(NaN)
    ref = x.clone().requires_grad_()
    (g_ref,) = torch.autograd.grad(F.cross_entropy(ref, t), ref)
    torch.testing.assert_close(g, g_ref, equal_nan=True)
