"""Loads the compiled library and registers, for every op, its fake (meta)
kernel, so that the ops work with ``torch.compile(fullgraph=True)`` and under
``torch.library.opcheck``. The forward ops' autograd is C++
(``csrc/autograd.cpp``: no Python on the call path); registered here are the
backward ops' own derivatives (double backward).

Ops are reached as ``torch.ops.d2l_ext.<name>``; their schemas are in
``csrc/ops.cpp``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch._prims_common import suggest_memory_format

from . import reference

LOADED = False
LOAD_ERROR: BaseException | None = None
try:
    from . import _C  # noqa: F401  (loading it runs the TORCH_LIBRARY registrations)

    LOADED = True
except ImportError as e:  # not built, or built against another torch
    LOAD_ERROR = e

# torch's at::Reduction values, as the ops take them.
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
_REDUCTION_NAMES = {v: k for k, v in REDUCTIONS.items()}


def _kernel_device_types() -> frozenset[str]:
    """Device types ("cpu", "cuda") that have d2l_ext kernels, read once at import
    (a plain set lookup is what torch.compile can trace)."""
    if not LOADED:
        return frozenset()
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    return frozenset(k.lower() for k in ("CPU", "CUDA") if has("d2l_ext::cross_entropy", k))


KERNEL_DEVICE_TYPES = _kernel_device_types()


def _op_kernel_device_types() -> dict[str, frozenset[str]]:
    """Per op, the device types with a d2l_ext kernel (ops added after the
    first ones may not have every backend yet)."""
    if not LOADED:
        return {}
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    names = ("cross_entropy", "max_pool2d", "conv2d", "rnn")
    return {
        name: frozenset(k.lower() for k in ("CPU", "CUDA") if has(f"d2l_ext::{name}", k))
        for name in names
        if torch._C._dispatch_has_kernel(f"d2l_ext::{name}") or hasattr(torch.ops.d2l_ext, name)
    }


OP_KERNEL_DEVICE_TYPES = _op_kernel_device_types()


def has_kernel(op: str, device_type: str) -> bool:
    """Whether op ``op`` has a d2l_ext kernel for ``device_type`` (a plain
    lookup, traceable by torch.compile)."""
    return device_type in OP_KERNEL_DEVICE_TYPES.get(op, ()) or (
        device_type == "meta" and op in OP_KERNEL_DEVICE_TYPES
    )


def has_kernels_for(device_type: str) -> bool:
    """Whether d2l_ext ops have kernels for a device type ("cpu", "cuda")."""
    return device_type.lower() in KERNEL_DEVICE_TYPES


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------- cross_entropy


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    reduction: int,
    ignore_index: int,
    label_smoothing: float,
) -> Tensor:
    """The native op; arguments as :func:`d2l_ext.reference.cross_entropy` but
    ``reduction`` as an int (0 none, 1 mean, 2 sum)."""
    loss, _lse, _total_weight = torch.ops.d2l_ext.cross_entropy(
        input, target, weight, reduction, ignore_index, label_smoothing
    )
    return loss


def _ce_fake(input, target, weight, reduction, ignore_index, label_smoothing):
    torch._check(input.dim() >= 2, lambda: "d2l_ext.cross_entropy: input must have dim >= 2")
    torch._check(0 <= reduction <= 2, lambda: "d2l_ext.cross_entropy: reduction must be 0, 1 or 2")
    if target.is_floating_point():
        torch._check(target.shape == input.shape, lambda: "probability target must match input")
    else:
        torch._check(
            target.shape == input.shape[:1] + input.shape[2:],
            lambda: "class-index target must have input's shape without dim 1",
        )
    rows = input.shape[:1] + input.shape[2:]
    acc = _acc_dtype(input.dtype)
    loss = input.new_empty(rows if reduction == 0 else ())
    return loss, input.new_empty(rows, dtype=acc), input.new_empty((), dtype=acc)


def _ce_backward_fake(
    grad_loss, input, target, weight, lse, total_weight, reduction, ignore_index, label_smoothing
):
    return torch.empty_like(input, memory_format=torch.contiguous_format)


# The op's autograd is C++ (csrc/autograd.cpp). What is registered here is the
# derivative of its backward op, i.e. double backward (create_graph=True):
# the input gradient's derivatives, from the reference maths differentiated
# twice (the fused kernel records no graph). Third and higher orders are not
# supported (the recomputation starts from detached copies).


def _ce_backward_setup(ctx, inputs, output):
    grad_loss, input, target, weight, _lse, _total, reduction, ignore_index, label_smoothing = inputs
    ctx.save_for_backward(grad_loss, input, target, weight)
    ctx.options = (reduction, ignore_index, label_smoothing)


def _ce_double_backward(ctx, gg):
    reduction, ignore_index, label_smoothing = ctx.options
    saved = ctx.saved_tensors  # grad_loss, input, target, weight: op inputs 0..3
    with torch.enable_grad():
        need = ctx.needs_input_grad
        leaves = [
            None if t is None else t.detach().requires_grad_(t.is_floating_point() and need[i])
            for i, t in enumerate(saved)
        ]
        grad_loss, input, target, weight = leaves
        input.requires_grad_()
        loss = reference.cross_entropy(
            input, target, weight, _REDUCTION_NAMES[reduction], ignore_index, label_smoothing
        )
        (grad_input,) = torch.autograd.grad(loss, input, grad_loss, create_graph=True)
    wanted = [i for i, t in enumerate(leaves) if t is not None and t.requires_grad and need[i]]
    found = torch.autograd.grad(grad_input, [leaves[i] for i in wanted], gg, allow_unused=True)
    grads = [None] * 9
    for i, g in zip(wanted, found):
        grads[i] = g
    return tuple(grads)


if LOADED:
    torch.library.register_fake("d2l_ext::cross_entropy")(_ce_fake)
    torch.library.register_fake("d2l_ext::_cross_entropy_backward")(_ce_backward_fake)
    torch.library.register_autograd(
        "d2l_ext::_cross_entropy_backward", _ce_double_backward, setup_context=_ce_backward_setup
    )


# ---------------------------------------------------------------------- pooling
#
# The forward ops return what backward needs and nothing more: max pooling its
# winners as window offsets (uint8 for up to 256 taps), average pooling
# nothing. Backward ops take the input's (H, W), never the input. The forward
# ops' autograd is in C++ (csrc/autograd.cpp: no Python on the call path);
# registered here are the fake kernels and the backward ops' own derivatives:
# each backward is linear in grad_output, with the forward (average) or a
# gather at the winners (max) as its adjoint, which gives double backward.


def _pool_taps_h_w(kind: str, in_hw, out_hw, kernel) -> tuple[int, int]:
    """Taps per window row/column in the offset code (csrc/pooling.h PoolAxis::taps)."""
    if kind == "regular":
        return kernel[0], kernel[1]
    return tuple((i + o - 1) // o + 1 if o > 0 else 1 for i, o in zip(in_hw, out_hw))


def _offset_dtype(taps: tuple[int, int]) -> torch.dtype:
    return torch.uint8 if taps[0] * taps[1] <= 256 else torch.int32


def _is_channels_last(t: Tensor) -> bool:
    """The kernels' layout rule (csrc/pooling_ops.h is_channels_last): torch's
    suggest_memory_format, which reads the strides, so that an (N, C, 1, 1)
    tensor allocated channels-last stays channels-last."""
    return t.dim() == 4 and suggest_memory_format(t) == torch.channels_last


def _pool_empty(like: Tensor, shape, dtype: torch.dtype | None = None, channels_last: bool = False) -> Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device, memory_format=fmt)


def as_layout(t: Tensor, channels_last: bool) -> Tensor:
    """``t`` laid out channels-last or contiguous, by the kernels' rule (a copy
    only where the layout differs; unlike ``.contiguous(memory_format=...)``
    this also restrides an (N, C, 1, 1) tensor)."""
    if t.dim() != 4 or _is_channels_last(t) == channels_last:
        return t
    return t.clone(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _window_starts(size: int, out: int, kind: str, stride: int, padding: int, device) -> Tensor:
    """First input position of every window along one axis (may be < 0: padding)."""
    o = torch.arange(out, device=device)
    if kind == "regular":
        return o * stride - padding
    return (o * size) // out


def offsets_to_indices(
    offset: Tensor, input_hw, kind: str, kernel=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1)
) -> tuple[Tensor, Tensor]:
    """torch-style flat indices ``h * W + w`` (int64) of the max-pooling winners
    that ``offset`` encodes, and a mask that is False where a window read no
    input (a degenerate dilated window: no winner)."""
    H, W = input_hw
    OH, OW = offset.shape[-2:]
    taps_h, taps_w = _pool_taps_h_w(kind, (H, W), (OH, OW), kernel)
    code = offset.long()
    th, tw = code // taps_w, code % taps_w
    h0 = _window_starts(H, OH, kind, stride[0], padding[0], offset.device).view(-1, 1)
    w0 = _window_starts(W, OW, kind, stride[1], padding[1], offset.device)
    rows = h0 + th * dilation[0]
    cols = w0 + tw * dilation[1]
    valid = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
    return torch.where(valid, rows * W + cols, 0), valid


def _gather_at_winners(gg: Tensor, offset: Tensor, input_hw, kind: str, *window) -> Tensor:
    """The adjoint of max-pooling backward: gg (N, C, H, W) read at each winner."""
    idx, valid = offsets_to_indices(offset, input_hw, kind, *window)
    out = gg.flatten(2).gather(2, idx.flatten(2)).view(idx.shape)
    return torch.where(valid, out, torch.zeros((), dtype=gg.dtype, device=gg.device))


# max_pool2d


def _max_pool2d_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    torch._check(input.dim() == 4, lambda: "d2l_ext.max_pool2d: input must be (N, C, H, W)")
    out = [
        reference.pool_output_size(
            input.shape[2 + i], kernel_size[i], padding[i], stride[i], dilation[i], ceil_mode
        )
        for i in (0, 1)
    ]
    shape = (input.shape[0], input.shape[1], *out)
    cl = _is_channels_last(input)
    off_dtype = _offset_dtype(_pool_taps_h_w("regular", None, None, kernel_size))
    return _pool_empty(input, shape, channels_last=cl), _pool_empty(input, shape, off_dtype, cl)


def _max_pool2d_backward_fake(
    grad_output, offset, input_size, kernel_size, stride, padding, dilation, ceil_mode
):
    shape = (*grad_output.shape[:2], *input_size)
    return _pool_empty(grad_output, shape, channels_last=_is_channels_last(offset))


def _max_pool2d_backward_setup(ctx, inputs, output):
    _g, offset, input_size, kernel_size, stride, padding, dilation, _ceil = inputs
    ctx.save_for_backward(offset)
    ctx.window = (tuple(input_size), kernel_size, stride, padding, dilation)


def _max_pool2d_double_backward(ctx, gg):
    (offset,) = ctx.saved_tensors
    input_size, *window = ctx.window
    return (_gather_at_winners(gg, offset, input_size, "regular", *window),) + (None,) * 7


# avg_pool2d


def _avg_pool2d_fake(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    torch._check(input.dim() == 4, lambda: "d2l_ext.avg_pool2d: input must be (N, C, H, W)")
    out = [
        reference.pool_output_size(input.shape[2 + i], kernel_size[i], padding[i], stride[i], 1, ceil_mode)
        for i in (0, 1)
    ]
    return _pool_empty(input, (input.shape[0], input.shape[1], *out), channels_last=_is_channels_last(input))


def _avg_pool2d_backward_fake(grad_output, input_size, *_window):
    shape = (*grad_output.shape[:2], *input_size)
    return _pool_empty(grad_output, shape, channels_last=_is_channels_last(grad_output))


def _avg_pool2d_backward_setup(ctx, inputs, output):
    ctx.window = inputs[2:]


def _avg_pool2d_double_backward(ctx, gg):
    return (torch.ops.d2l_ext.avg_pool2d(gg, *ctx.window),) + (None,) * 7


# adaptive_avg_pool2d


def _adaptive_avg_pool2d_fake(input, output_size):
    torch._check(input.dim() == 4, lambda: "d2l_ext.adaptive_avg_pool2d: input must be (N, C, H, W)")
    shape = (input.shape[0], input.shape[1], *output_size)
    return _pool_empty(input, shape, channels_last=_is_channels_last(input))


def _adaptive_avg_pool2d_backward_fake(grad_output, input_size):
    shape = (*grad_output.shape[:2], *input_size)
    return _pool_empty(grad_output, shape, channels_last=_is_channels_last(grad_output))


def _adaptive_avg_pool2d_backward_setup(ctx, inputs, output):
    ctx.output_size = tuple(inputs[0].shape[2:])


def _adaptive_avg_pool2d_double_backward(ctx, gg):
    return torch.ops.d2l_ext.adaptive_avg_pool2d(gg, ctx.output_size), None


# adaptive_max_pool2d


def _adaptive_max_pool2d_fake(input, output_size):
    torch._check(input.dim() == 4, lambda: "d2l_ext.adaptive_max_pool2d: input must be (N, C, H, W)")
    shape = (input.shape[0], input.shape[1], *output_size)
    cl = _is_channels_last(input)
    off_dtype = _offset_dtype(_pool_taps_h_w("adaptive", input.shape[2:], output_size, None))
    return _pool_empty(input, shape, channels_last=cl), _pool_empty(input, shape, off_dtype, cl)


def _adaptive_max_pool2d_backward_fake(grad_output, offset, input_size):
    shape = (*grad_output.shape[:2], *input_size)
    return _pool_empty(grad_output, shape, channels_last=_is_channels_last(offset))


def _adaptive_max_pool2d_backward_setup(ctx, inputs, output):
    _g, offset, input_size = inputs
    ctx.save_for_backward(offset)
    ctx.input_size = tuple(input_size)


def _adaptive_max_pool2d_double_backward(ctx, gg):
    (offset,) = ctx.saved_tensors
    return _gather_at_winners(gg, offset, ctx.input_size, "adaptive"), None, None


if LOADED:
    for _name, _fake in (
        ("max_pool2d", _max_pool2d_fake),
        ("_max_pool2d_backward", _max_pool2d_backward_fake),
        ("avg_pool2d", _avg_pool2d_fake),
        ("_avg_pool2d_backward", _avg_pool2d_backward_fake),
        ("adaptive_avg_pool2d", _adaptive_avg_pool2d_fake),
        ("_adaptive_avg_pool2d_backward", _adaptive_avg_pool2d_backward_fake),
        ("adaptive_max_pool2d", _adaptive_max_pool2d_fake),
        ("_adaptive_max_pool2d_backward", _adaptive_max_pool2d_backward_fake),
    ):
        torch.library.register_fake(f"d2l_ext::{_name}")(_fake)
    for _name, _backward, _setup in (
        ("_max_pool2d_backward", _max_pool2d_double_backward, _max_pool2d_backward_setup),
        ("_avg_pool2d_backward", _avg_pool2d_double_backward, _avg_pool2d_backward_setup),
        (
            "_adaptive_avg_pool2d_backward",
            _adaptive_avg_pool2d_double_backward,
            _adaptive_avg_pool2d_backward_setup,
        ),
        (
            "_adaptive_max_pool2d_backward",
            _adaptive_max_pool2d_double_backward,
            _adaptive_max_pool2d_backward_setup,
        ),
    ):
        torch.library.register_autograd(f"d2l_ext::{_name}", _backward, setup_context=_setup)


# ---------------------------------------------------------------------- conv2d
#
# The forward op's autograd is C++ (csrc/autograd.cpp); its backward op returns
# the input, weight and bias gradients in one call. Registered here: the fake
# kernels and the backward op's derivative (double backward), from the
# reference maths differentiated twice.


def _conv_channels_last(t: Tensor) -> bool:
    return t.dim() == 4 and suggest_memory_format(t) == torch.channels_last


def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups):
    torch._check(input.dim() == 4, lambda: "d2l_ext.conv2d: input must be (N, C, H, W)")
    torch._check(weight.dim() == 4, lambda: "d2l_ext.conv2d: weight must be (O, C / groups, kh, kw)")
    torch._check(input.shape[1] == weight.shape[1] * groups, lambda: "d2l_ext.conv2d: channels != weight's")
    size = reference.conv_output_size
    out = [size(input.shape[2 + i], weight.shape[2 + i], padding[i], stride[i], dilation[i]) for i in (0, 1)]
    cl = _conv_channels_last(input) or _conv_channels_last(weight)
    return _pool_empty(input, (input.shape[0], weight.shape[0], *out), channels_last=cl)


def _conv2d_backward_fake(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    gi = _pool_empty(input, input.shape, channels_last=_conv_channels_last(input)) if output_mask[0] else None
    gw = weight.new_empty(weight.shape) if output_mask[1] else None
    gb = weight.new_empty((weight.shape[0],)) if output_mask[2] else None
    return gi, gw, gb


def _conv2d_backward_setup(ctx, inputs, output):
    grad_output, input, weight, stride, padding, dilation, groups, _mask = inputs
    ctx.save_for_backward(grad_output, input, weight)
    ctx.window = (stride, padding, dilation, groups)


def _conv2d_double_backward(ctx, g_input, g_weight, g_bias):
    stride, padding, dilation, groups = ctx.window
    need = ctx.needs_input_grad  # grad_output, input, weight: op inputs 0..2
    with torch.enable_grad():
        go, x, w = (t.detach().requires_grad_() for t in ctx.saved_tensors)
        y = reference.conv2d(x, w, None, stride, padding, dilation, groups)
        gx, gw = torch.autograd.grad(y, (x, w), go, create_graph=True)
        total = go.new_zeros(())
        for first, second in ((gx, g_input), (gw, g_weight), (go.sum((0, 2, 3)), g_bias)):
            if second is not None:
                total = total + (first * second).sum()
    leaves = [go, x, w]
    wanted = [i for i in range(3) if need[i]]
    found = torch.autograd.grad(total, [leaves[i] for i in wanted], allow_unused=True)
    grads = [None] * 8
    for i, g in zip(wanted, found):
        grads[i] = g
    return tuple(grads)


if LOADED and "conv2d" in OP_KERNEL_DEVICE_TYPES:
    torch.library.register_fake("d2l_ext::conv2d")(_conv2d_fake)
    torch.library.register_fake("d2l_ext::_conv2d_backward")(_conv2d_backward_fake)
    torch.library.register_autograd(
        "d2l_ext::_conv2d_backward", _conv2d_double_backward, setup_context=_conv2d_backward_setup
    )


# ------------------------------------------------------------------------- rnn
RNN_GATES = {0: 1, 1: 1, 2: 4, 3: 3}  # mode -> gates per cell (tanh, relu, lstm, gru)


def rnn_reserve_numel(
    mode: int, T: int, B: int, H: int, num_layers: int, directions: int, proj_size: int = 0
) -> int:
    """Elements of the forward's reserve (csrc/rnn.h, csrc/rnn.cpp): per layer and direction,
    gate activations (T, B, G * H), h (T, B, P) with P = proj_size or H, for LSTM and GRU one
    (T, B, H) plane more (c_t, or the GRU's W_hn h_{t-1} + b_hn), and with a projection o * tanh(c)."""
    P = proj_size or H
    extra = H if mode in (2, 3) else 0
    per_step = RNN_GATES[mode] * H + P + extra + (H if proj_size else 0)
    return num_layers * directions * T * B * per_step


def _rnn_fake(input, hx, cx, weights, mode, has_biases, num_layers, bidirectional, dropout_masks):
    torch._check(input.dim() == 3, lambda: "d2l_ext.rnn: input must be (T, B, input_size)")
    torch._check(hx.dim() == 3, lambda: "d2l_ext.rnn: hx must be (num_layers * num_directions, B, H)")
    T, B = input.shape[0], input.shape[1]
    P = hx.shape[2]
    H = cx.shape[2] if mode == 2 else P
    D = 2 if bidirectional else 1
    out = input.new_empty((T, B, D * P))
    hy = input.new_empty((num_layers * D, B, P))
    cy = input.new_empty((num_layers * D, B, H)) if mode == 2 else input.new_empty((0,))
    proj = P if P != H else 0
    reserve = input.new_empty((rnn_reserve_numel(mode, T, B, H, num_layers, D, proj),))
    return out, hy, cy, reserve


def _rnn_backward_fake(
    grad_output, grad_hy, grad_cy, input, hx, cx, weights, reserve, mode, has_biases, num_layers,
    bidirectional, dropout_masks, need_input_grad,
):
    gi = input.new_empty(input.shape) if need_input_grad else None
    gcx = input.new_empty(cx.shape) if mode == 2 else input.new_empty((0,))
    return gi, input.new_empty(hx.shape), gcx, [w.new_empty(w.shape) for w in weights]


def _rnn_backward_setup(ctx, inputs, output):
    pass


def _rnn_double_backward(ctx, *grads):
    raise NotImplementedError(
        "d2l_ext.rnn: the native kernels have no double backward (a gradient of the gradient through "
        "a recurrent layer); run that model under d2l_ext.use_backend('python')"
    )


if LOADED and "rnn" in OP_KERNEL_DEVICE_TYPES:
    torch.library.register_fake("d2l_ext::rnn")(_rnn_fake)
    torch.library.register_fake("d2l_ext::_rnn_backward")(_rnn_backward_fake)
    # With create_graph=True the first gradients work (their graph leads here); a second raises.
    torch.library.register_autograd(
        "d2l_ext::_rnn_backward", _rnn_double_backward, setup_context=_rnn_backward_setup
    )
