"""Tensors of more than 2^31 elements: every offset in the kernels must be 64-bit.

Two kinds of test:

* meta device (always run, no memory): the ops' shape functions (fake kernels) on
  sizes past 2^31 elements give torch's shapes, and no size wraps around;
* real tensors (opt-in: ``D2L_EXT_BIGMEM=1``, about 9-19 GB of RAM, 5-30 s each on two
  cores): the compiled CPU kernels run on an input of more than 2^31 float32 elements
  whose only non-zero values sit past element 2^31, and the results there are compared
  with torch's on the slice that holds them (pooling, cross-entropy, conv); a 32-bit
  offset anywhere would read or write the wrong (zero) elements, or outside the buffer.
  And an RNN layer whose saved activations pass 2^31 elements (forward).

    D2L_EXT_BIGMEM=1 python -m pytest -q tests/test_large.py
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as TF

import d2l_ext
import d2l_ext.functional as F
from d2l_ext import nn as dnn

from .conftest import requires_native

BIG = 2**31


# ------------------------------------------------------------------ meta device: shapes only


@pytest.mark.parametrize("backend", ["native", "python"])
def test_meta_shapes_past_int32(backend: str) -> None:
    if backend == "native" and not d2l_ext.native_available():
        pytest.skip("the compiled library d2l_ext._C is not built")
    with d2l_ext.use_backend(backend):
        x = torch.empty(3, 4, 32768, 32768, device="meta")  # 12.9e9 elements
        assert x.numel() == 6 * BIG
        for ours, theirs, kw in [
            (F.max_pool2d, TF.max_pool2d, {"kernel_size": 3, "stride": 2, "padding": 1}),
            (F.avg_pool2d, TF.avg_pool2d, {"kernel_size": 2, "ceil_mode": True}),
            (F.adaptive_avg_pool2d, TF.adaptive_avg_pool2d, {"output_size": (7, 5)}),
        ]:
            assert ours(x, **kw).shape == theirs(x, **kw).shape
        out, idx = F.max_pool2d(x, 2, return_indices=True)
        assert out.shape == idx.shape == (3, 4, 16384, 16384) and idx.dtype == torch.int64

        w = torch.empty(5, 4, 3, 3, device="meta")
        assert F.conv2d(x, w, padding=1).shape == (3, 5, 32768, 32768)
        assert F.conv2d(x, w, stride=3).shape == TF.conv2d(x, w, stride=3).shape

        logits = torch.empty(70000, 40000, device="meta", requires_grad=True)  # 2.8e9 elements
        target = torch.empty(70000, dtype=torch.long, device="meta")
        loss = F.cross_entropy(logits, target, reduction="none")
        assert loss.shape == (70000,)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, target), logits)
        assert grad.shape == logits.shape

        # An LSTM whose gate activations for backward (T * B * 4H) pass 2^31 elements.
        lstm = dnn.LSTM(16, 1024, device="meta")
        seq = torch.empty(4096, 160, 16, device="meta")
        assert 4096 * 160 * 4 * 1024 > BIG
        y, (h, c) = lstm(seq)
        assert y.shape == (4096, 160, 1024) and h.shape == c.shape == (1, 160, 1024)


# ------------------------------------------------------------------ real tensors (opt-in)


def _available_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        return kib / 2**20
    except (OSError, StopIteration):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30


def _need_memory(gib: float) -> None:
    if os.environ.get("D2L_EXT_BIGMEM") != "1":
        pytest.skip("set D2L_EXT_BIGMEM=1 to run the >2^31-element tests (9-18 GB of RAM each)")
    avail = _available_gib()
    if avail < gib:
        pytest.skip(f"needs about {gib:.0f} GiB of free memory, {avail:.1f} available")


def _tail_filled(shape: tuple[int, ...], tail: int, seed: int = 0) -> torch.Tensor:
    """Zeros, but the last ``tail`` elements random (they lie past element 2^31)."""
    x = torch.zeros(shape)
    assert x.numel() > BIG and x.numel() - tail >= BIG
    g = torch.Generator().manual_seed(seed)
    x.view(-1)[-tail:] = torch.randn(tail, generator=g)
    return x


@requires_native
@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_pooling_past_int32(op: str) -> None:
    _need_memory(10)
    H, W = 32768, 32808  # (2, 1, H, W): 2^31 + 2.6e6 elements; the last 64 rows lie past 2^31
    x = _tail_filled((2, 1, H, W), 64 * W)
    with d2l_ext.use_backend("native"):
        out = getattr(F, op)(x, kernel_size=4, stride=4)
    assert out.shape == (2, 1, H // 4, W // 4)
    expected = getattr(TF, op)(x[1:, :, -64:, :].clone(), kernel_size=4, stride=4)
    torch.testing.assert_close(out[1:, :, -16:, :], expected, rtol=0, atol=0)  # a max and a mean of 16: exact
    assert not out[0].any() and not out[1, :, :-16].any()


@requires_native
def test_max_pool_indices_past_int32() -> None:
    _need_memory(11)
    H, W = 32768, 32808
    x = _tail_filled((2, 1, H, W), 64 * W, seed=1)
    with d2l_ext.use_backend("native"):
        out, idx = F.max_pool2d(x, kernel_size=4, stride=4, return_indices=True)
    _, expected = TF.max_pool2d(x[1:, :, -64:, :].clone(), kernel_size=4, stride=4, return_indices=True)
    # torch's indices count within the (H, W) plane: the slice's rows start at H - 64.
    torch.testing.assert_close(idx[1:, :, -16:, :], expected + (H - 64) * W, rtol=0, atol=0)


@requires_native
def test_cross_entropy_past_int32() -> None:
    _need_memory(10)
    N, C = 65552, 32768  # 2^31 + 2^19 elements; the last 8 rows random
    logits = _tail_filled((N, C), 8 * C, seed=2)
    target = torch.zeros(N, dtype=torch.long)
    target[-8:] = torch.tensor([0, 1, C - 1, 5, 77, C // 2, 3, 12345])
    with d2l_ext.use_backend("native"):
        loss = F.cross_entropy(logits, target, reduction="none")
    expected = TF.cross_entropy(logits[-8:], target[-8:], reduction="none")
    torch.testing.assert_close(loss[-8:], expected)  # float32 log-sum-exp over 32768 terms
    torch.testing.assert_close(loss[:-8], torch.full((N - 8,), float(torch.log(torch.tensor(C * 1.0)))))


@requires_native
def test_cross_entropy_backward_past_int32() -> None:
    _need_memory(19)
    N, C = 65552, 32768
    logits = _tail_filled((N, C), 8 * C, seed=3).requires_grad_()
    target = torch.arange(N) % C
    with d2l_ext.use_backend("native"):
        loss = F.cross_entropy(logits, target, reduction="sum")
    (grad,) = torch.autograd.grad(loss, logits)
    del loss
    tail = logits.detach()[-8:].clone().requires_grad_()
    (expected,) = torch.autograd.grad(TF.cross_entropy(tail, target[-8:], reduction="sum"), tail)
    torch.testing.assert_close(grad[-8:], expected)
    # rows of zeros: softmax 1/C everywhere, minus 1 at the target
    row = torch.full((C,), 1.0 / C)
    row[target[N - 9]] -= 1
    torch.testing.assert_close(grad[-9], row)


@requires_native
def test_conv2d_past_int32() -> None:
    _need_memory(10)
    N, H, W = 65, 5760, 5760  # (65, 1, H, W): 2.16e9 elements; the last image's last 16 rows random
    x = _tail_filled((N, 1, H, W), 16 * W, seed=4)
    w = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(5))
    with d2l_ext.use_backend("native"):
        out = F.conv2d(x, w, stride=2)
    assert out.shape == (N, 2, H // 2, W // 2)
    expected = TF.conv2d(x[-1:, :, -16:, :].clone(), w, stride=2)
    torch.testing.assert_close(out[-1:, :, -8:, :], expected)  # 4-term float32 dot products
    assert not out[:-1].any()


@requires_native
def test_rnn_layer_reserve_past_int32() -> None:
    """An RNN (tanh) layer whose saved activations (the reserve: T * B * H gates, then T * B * H
    states) pass 2^31 elements, the last steps' states past element 2^31: the last two steps and the
    final state are checked against torch's cell applied to our own state of the step before."""
    _need_memory(16)
    T, B, H = 1025, 2**17, 8
    assert 2 * T * B * H - B * H > BIG  # the last step's states lie past element 2^31 of the reserve
    g = torch.Generator().manual_seed(6)
    x = torch.randn(T, B, 1, generator=g)
    h0 = torch.randn(1, B, H, generator=g)
    w_ih, w_hh = torch.randn(H, 1, generator=g) * 0.5, torch.randn(H, H, generator=g) * 0.3
    b_ih, b_hh = torch.randn(H, generator=g), torch.randn(H, generator=g)
    with torch.no_grad():  # the op itself: it returns the reserve backward would read
        weights = [w_ih, w_hh, b_ih, b_hh]
        out, h_n, _, reserve = torch.ops.d2l_ext.rnn(x, h0, None, weights, 0, True, 1, False, [])
    assert out.shape == (T, B, H) and reserve.numel() == 2 * T * B * H > BIG
    # the reserve's states (after the T * B * H gates) are the outputs, the last step's past 2^31
    torch.testing.assert_close(reserve[-B * H:].view(B, H), out[-1], rtol=0, atol=0)
    del reserve
    for t in (T - 2, T - 1):
        expected = torch.rnn_tanh_cell(x[t], out[t - 1], w_ih, w_hh, b_ih, b_hh)
        torch.testing.assert_close(out[t], expected)  # one float32 step from the same h
    torch.testing.assert_close(h_n[0], out[-1], rtol=0, atol=0)
    expected0 = torch.rnn_tanh_cell(x[0], h0[0], w_ih, w_hh, b_ih, b_hh)
    torch.testing.assert_close(out[0], expected0)
