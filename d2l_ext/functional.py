"""Public functions with torch.nn.functional's signatures and results.

Each function checks and normalises its arguments the way torch does, then
runs the native kernel (``torch.ops.d2l_ext.*``) or, on the Python backend,
the readable fallback in :mod:`d2l_ext.reference`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import _reduction as _Reduction

from . import _backend, _ops, reference

__all__ = [
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "cross_entropy",
    "gru",
    "gru_cell",
    "lstm",
    "lstm_cell",
    "rnn_relu",
    "rnn_relu_cell",
    "rnn_tanh",
    "rnn_tanh_cell",
    "max_pool1d",
    "max_pool2d",
    "pool2d",
]


def _check_cross_entropy_args(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
) -> bool:
    """Raise what torch raises for invalid arguments; return True for probability targets."""
    if reduction not in _ops.REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    if label_smoothing > 1.0:  # torch accepts negative values and ignores them
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    num_classes = input.shape[1] if input.dim() >= 2 else (input.shape[0] if input.dim() == 1 else 1)
    if weight is not None and (weight.dim() != 1 or weight.shape[0] != num_classes):
        raise RuntimeError(
            f"cross_entropy: weight tensor should be defined either for all {num_classes} classes "
            f"or no classes but got weight tensor of shape: {list(weight.shape)}"
        )
    if input.shape == target.shape:  # torch's test for class probabilities
        if not target.is_floating_point():
            raise RuntimeError(
                f"Expected floating point type for target with class probabilities, got {target.dtype}"
            )
        if ignore_index >= 0:
            raise RuntimeError("ignore_index is not supported for floating point target")
    if not input.is_floating_point():
        raise NotImplementedError(f"cross_entropy: input must be a floating point tensor, got {input.dtype}")
    if input.shape == target.shape:
        return True
    if target.dtype not in (torch.long, torch.uint8):
        raise RuntimeError(f"expected target dtype to be Long or Byte, but got {target.dtype}")
    if target.dtype == torch.uint8 and input.dim() > 2:  # torch's spatial path takes int64 only
        raise RuntimeError("expected scalar type Long but found Byte")
    if input.dim() < 1:
        raise ValueError(f"Expected 1 or more dimensions (got {input.dim()})")
    if input.dim() == 1:
        if target.dim() > 1 or target.numel() != 1:
            raise ValueError(
                f"For 1D input, 1D target must have size 1, but got target size: {list(target.shape)}"
            )
        return False
    if input.shape[0] != target.shape[0] if target.dim() >= 1 else True:
        raise ValueError(
            f"Expected input batch_size ({input.shape[0]}) to match target batch_size "
            f"({target.shape[0] if target.dim() else 0})."
        )
    expected = input.shape[:1] + input.shape[2:]
    if input.dim() == 2 and target.dim() != 1:
        raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
    if target.shape != expected:
        raise RuntimeError(f"Expected target size {list(expected)}, got {list(target.shape)}")
    return False


def _check_target_range(target: Tensor, num_classes: int, ignore_index: int) -> None:
    """The fallback's equivalent of the kernels' bounds check (a sync on CUDA)."""
    if torch.compiler.is_compiling() or target.numel() == 0 or target.device.type == "meta":
        return  # (meta tensors hold no values to check)
    bad = ((target < 0) | (target >= num_classes)) & (target != ignore_index)
    if bool(bad.any()):
        value = int(target[bad].flatten()[0])
        raise IndexError(
            f"cross_entropy: target {value} is out of bounds for {num_classes} classes "
            f"(ignore_index={ignore_index})"
        )


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Softmax cross-entropy between logits and targets, as ``torch.nn.functional.cross_entropy``.

    Shapes:
        input: (C,), (N, C) or (N, C, d1, ..., dk) unnormalised logits.
        target: class indices (), (N,) or (N, d1, ..., dk), int64 (or uint8) in
            ``[0, C)`` or equal to ``ignore_index``; or class probabilities with
            ``input``'s shape.
        weight: optional (C,) rescaling of each class.
        returns: () for ``reduction`` "mean"/"sum"; target's batch shape
            ((), (N,) or (N, d1, ..., dk)) for "none".

    The native kernel makes one pass over the logits forward, keeping only the
    per-example log-sum-exp for backward (not a (N, C) log-softmax), and one
    pass backward that writes the gradient once.
    """
    if size_average is not None or reduce is not None:
        reduction = _Reduction.legacy_get_string(size_average, reduce)
    prob_target = _check_cross_entropy_args(input, target, weight, ignore_index, reduction, label_smoothing)
    if not prob_target and weight is not None and weight.requires_grad and torch.is_grad_enabled():
        raise RuntimeError(
            "cross_entropy: the derivative for 'weight' is not implemented for class-index "
            "targets (as in torch's nll_loss)"
        )
    unbatched = input.dim() == 1
    if unbatched:
        input, target = input.unsqueeze(0), target.unsqueeze(0) if prob_target else target.reshape(1)
    label_smoothing = max(label_smoothing, 0.0)
    if prob_target:
        if target.dtype != input.dtype:  # torch computes in the promoted dtype
            dtype = torch.promote_types(input.dtype, target.dtype)
            input, target = input.to(dtype), target.to(dtype)
    elif target.dtype != torch.long:
        target = target.long()
    if weight is not None and weight.dtype != input.dtype:
        raise RuntimeError(f"expected scalar type {input.dtype} but found {weight.dtype} (weight)")

    if _backend.native_for(input):
        out_dtype = input.dtype
        if input.device.type == "cpu" and input.dtype in (torch.float16, torch.bfloat16):
            # The CPU kernels run in float32; autograd carries the casts.
            input = input.float()
            target = target.float() if prob_target else target
            weight = None if weight is None else weight.float()
        loss = _ops.cross_entropy(
            input, target, weight, _ops.REDUCTIONS[reduction], ignore_index, label_smoothing
        ).to(out_dtype)
    else:
        if not prob_target:
            _check_target_range(target, input.shape[1], ignore_index)
        loss = reference.cross_entropy(input, target, weight, reduction, ignore_index, label_smoothing)
    return loss.squeeze(0) if unbatched and reduction == "none" else loss


# ---------------------------------------------------------------------- pooling


def _tuple(name: str, value, n: int, op: str) -> tuple[int, ...]:
    """An int or a sequence of n ints, as torch's pooling arguments accept them."""
    if isinstance(value, bool) or not isinstance(value, (int, tuple, list, torch.SymInt)):
        raise TypeError(f"{op}(): argument '{name}' must be tuple of ints, not {type(value).__name__}")
    if isinstance(value, (int, torch.SymInt)):
        return (value,) * n
    if len(value) == 1:
        return (value[0],) * n
    if len(value) != n:
        raise RuntimeError(f"{op}: {name} must either be a single int, or a tuple of {n} ints")
    return tuple(value)


def _pool_window(op: str, dims: int, kernel_size, stride, padding, dilation):
    """(kernel, stride, padding, dilation) as pairs for the 2-D kernels: ints or
    sequences of ``dims`` ints; stride None (or empty) means the kernel size; a
    1-D window becomes (1, k) over an H = 1 input."""
    k = _tuple("kernel_size", kernel_size, dims, op)
    empty = stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0)
    s = k if empty else _tuple("stride", stride, dims, op)
    p = _tuple("padding", padding, dims, op)
    d = _tuple("dilation", dilation, dims, op)
    if dims == 1:
        return (1, *k), (1, *s), (0, *p), (1, *d)
    return k, s, p, d


def _pool_input(op: str, input: Tensor, dims: int, empty_channels: bool = False) -> tuple[Tensor, bool]:
    """(N, C, H, W) view of a pooling input with ``dims`` spatial dims, and whether it was unbatched.
    ``empty_channels``: C = 0 is allowed (adaptive average pooling, as torch)."""
    if input.dim() not in (dims + 1, dims + 2):
        raise RuntimeError(
            f"{op}: Expected {dims + 1}D or {dims + 2}D (batch mode) tensor with optional 0 dim batch size "
            f"for input, but got: {list(input.shape)}"
        )
    if 0 in input.shape[-dims if empty_channels else -dims - 1 :]:
        raise RuntimeError(
            f"{op}: Expected input to have non-zero size for non-batch dimensions, but input has sizes "
            f"{list(input.shape)}"
        )
    unbatched = input.dim() == dims + 1
    x = input.unsqueeze(0) if unbatched else input
    if dims == 1:
        x = x.unsqueeze(2)  # (N, C, 1, L)
    return x, unbatched


def _pool_output(t: Tensor, unbatched: bool, dims: int) -> Tensor:
    if dims == 1:
        t = t.squeeze(2)
    return t.squeeze(0) if unbatched else t


def _check_pool_window(op, x: Tensor, kernel, stride, padding, dilation, ceil_mode: bool) -> None:
    """Raise what torch raises for a bad window (checked per spatial axis).
    Written with min() over the pairs: this runs on every call."""
    if min(kernel) <= 0:
        raise RuntimeError(f"{op}: kernel size should be greater than zero, but got {tuple(kernel)}")
    if min(stride) <= 0:
        raise RuntimeError(
            "stride should not be zero"
            if 0 in stride
            else f"{op}: stride should be greater than zero, but got {tuple(stride)}"
        )
    if min(dilation) <= 0:
        raise RuntimeError(f"dilation should be greater than zero, but got dilation {tuple(dilation)}")
    if min(padding) < 0:
        raise RuntimeError(f"pad must be non-negative, but got pad: {tuple(padding)}")
    for k, p in zip(kernel, padding):
        if p > k // 2:  # torch's limit for max pooling too, whatever the dilation
            raise RuntimeError(
                f"pad should be smaller than or equal to half of kernel size, but got pad={p}, kernel={k}"
            )
    _, c, h, w = x.shape
    oh = reference.pool_output_size(h, kernel[0], padding[0], stride[0], dilation[0], ceil_mode)
    ow = reference.pool_output_size(w, kernel[1], padding[1], stride[1], dilation[1], ceil_mode)
    if oh < 1 or ow < 1:
        raise RuntimeError(
            f"Given input size: ({c}x{h}x{w}). Calculated output size: ({c}x{oh}x{ow}). "
            "Output size is too small"
        )


def _native_pool(x: Tensor, integer_ok: bool) -> bool:
    """Whether the native kernels take x: floating point everywhere; integers only
    where ``integer_ok`` and on CPU (the CUDA kernels are floating point only)."""
    if not _backend.native_for(x):
        return False
    return x.is_floating_point() or (integer_ok and x.device.type in ("cpu", "meta"))


class _ChannelsLastGrad(torch.autograd.Function):
    """Identity whose backward lays the gradient out channels-last: the
    fallback's gradient then follows a channels-last input, as torch's (and
    the kernels') do."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


def _fallback_input(x: Tensor, grad_follows: bool = True) -> tuple[Tensor, bool]:
    """x for the Python fallback, and whether its outputs are channels-last.
    ``grad_follows``: the gradient keeps a channels-last input's layout too."""
    channels_last = _ops._is_channels_last(x)
    if channels_last and grad_follows and x.requires_grad and torch.is_grad_enabled():
        x = _ChannelsLastGrad.apply(x)
    return x, channels_last


def _cpu_float(x: Tensor) -> Tensor:
    """The CPU kernels run float32/float64: float16/bfloat16 go through float32."""
    if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x


def _as_dtype(t: Tensor, dtype: torch.dtype) -> Tensor:
    """t in dtype (CPU half/bfloat16 came back as float32); no call when it already is."""
    return t if t.dtype == dtype else t.to(dtype)


def _max_pool(
    op: str, input: Tensor, dims: int, kernel_size, stride, padding, dilation, ceil_mode, return_indices
):
    if input.dtype == torch.bool or input.is_complex():
        raise NotImplementedError(f"\"{op}\" not implemented for '{input.dtype}'")
    x, unbatched = _pool_input(op, input, dims)
    k, s, p, d = _pool_window(op, dims, kernel_size, stride, padding, dilation)
    _check_pool_window(op, x, k, s, p, d, ceil_mode)
    if _native_pool(x, integer_ok=True):
        out, offset = torch.ops.d2l_ext.max_pool2d(_cpu_float(x), k, s, p, d, ceil_mode)
        out = _as_dtype(out, x.dtype)
        indices = (
            _ops.offsets_to_indices(offset, x.shape[2:], "regular", k, s, p, d)[0] if return_indices else None
        )
    else:
        xin, channels_last = _fallback_input(x)
        out, indices = reference.max_pool2d(xin, k, s, p, d, ceil_mode)
        out, indices = _ops.as_layout(out, channels_last), _ops.as_layout(indices, channels_last)
    out = _pool_output(out, unbatched, dims)
    if not return_indices:
        return out
    return out, _pool_output(indices, unbatched, dims)


def max_pool2d(
    input: Tensor,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    Shapes:
        input: (N, C, H, W) or unbatched (C, H, W); contiguous or channels-last
            (the output keeps the layout).
        returns: (N, C, OH, OW) (or (C, OH, OW)), with
            ``OH = floor((H + 2 padding - dilation (kernel - 1) - 1) / stride) + 1``
            (ceil with ``ceil_mode``); with ``return_indices`` also int64 indices
            ``h * W + w`` of each maximum, shaped like the output.

    The native kernel saves for backward a one-byte window offset per output
    (int32 for windows over 256 taps), not an int64 index.
    """
    return _max_pool(
        "max_pool2d", input, 2, kernel_size, stride, padding, dilation, ceil_mode, return_indices
    )


def max_pool1d(
    input: Tensor,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """1-D max pooling, as ``torch.nn.functional.max_pool1d``: input (N, C, L) or
    (C, L) -> (N, C, L_out) (indices into L). TextCNN's max-over-time pooling is
    ``max_pool1d(x, x.shape[-1])``. Runs the 2-D kernel with H = 1."""
    if not return_indices and input.device.type == "cpu" and not input.is_floating_point():
        # torch's CPU max_pool1d without indices (max_pool1d_impl) takes floating point only
        raise NotImplementedError(f"\"max_pool1d_impl\" not implemented for '{input.dtype}'")
    return _max_pool(
        "max_pool1d", input, 1, kernel_size, stride, padding, dilation, ceil_mode, return_indices
    )


def _avg_pool(op, input, dims, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    if dims == 2 and input.dim() < 3:  # torch indexes dim -3 before checking the rank
        raise IndexError(f"Dimension out of range (expected to be in range of [-2, 1], but got -3) ({op})")
    x, unbatched = _pool_input(op, input, dims)
    k, s, p, _ = _pool_window(op, dims, kernel_size, stride, padding, 1)
    if divisor_override is not None and divisor_override == 0:
        raise RuntimeError("divisor must be not zero")
    if not x.is_floating_point() and x.dtype != torch.long:
        raise NotImplementedError(f"\"{op}\" not implemented for '{x.dtype}'")
    _check_pool_window(op, x, k, s, p, (1, 1), ceil_mode)
    if _native_pool(x, integer_ok=True):
        out = torch.ops.d2l_ext.avg_pool2d(
            _cpu_float(x), k, s, p, ceil_mode, count_include_pad, divisor_override
        )
        out = _as_dtype(out, x.dtype)
    else:
        xin, channels_last = _fallback_input(x)
        out = reference.avg_pool2d(xin, k, s, p, ceil_mode, count_include_pad, divisor_override)
        out = _ops.as_layout(out, channels_last)
    return _pool_output(out, unbatched, dims)


def avg_pool2d(
    input: Tensor,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    Shapes: input (N, C, H, W) or (C, H, W) -> (N, C, OH, OW) (or (C, OH, OW)),
    output sizes as :func:`max_pool2d` with dilation 1. Each output is its
    window's sum over ``divisor_override`` or the window size (counting zero
    padding when ``count_include_pad``). int64 input averages with truncating
    division, as torch's.
    """
    return _avg_pool(
        "avg_pool2d", input, 2, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )


def avg_pool1d(
    input: Tensor,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> Tensor:
    """1-D average pooling, as ``torch.nn.functional.avg_pool1d``: input (N, C, L)
    or (C, L) -> (N, C, L_out). Runs the 2-D kernel with H = 1."""
    return _avg_pool("avg_pool1d", input, 1, kernel_size, stride, padding, ceil_mode, count_include_pad, None)


def _adaptive_size(op: str, output_size, x: Tensor, dims: int) -> tuple[int, int]:
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * dims
    if len(sizes) != dims:
        raise RuntimeError(f"{op}: output_size must be {dims}")
    sizes = tuple(x.shape[-dims + i] if v is None else v for i, v in enumerate(sizes))
    if any(v < 0 for v in sizes):
        raise RuntimeError(
            f"{op}: elements of output_size must be greater than or equal to 0 but received {sizes}"
        )
    return (1, *sizes) if dims == 1 else sizes


def _adaptive(op: str, input: Tensor, output_size, dims: int, is_max: bool, return_indices: bool = False):
    x, unbatched = _pool_input(op, input, dims, empty_channels=not is_max)
    size = _adaptive_size(op, output_size, x, dims)
    if not x.is_floating_point():
        raise NotImplementedError(f"\"{op}\" not implemented for '{x.dtype}'")
    indices = None
    if _native_pool(x, integer_ok=False) and x.shape[1] > 0:
        if is_max:
            out, offset = torch.ops.d2l_ext.adaptive_max_pool2d(_cpu_float(x), size)
            if return_indices:
                indices = _ops.offsets_to_indices(offset, x.shape[2:], "adaptive")[0]
        else:
            out = torch.ops.d2l_ext.adaptive_avg_pool2d(_cpu_float(x), size)
        out = _as_dtype(out, x.dtype)
    else:
        # torch computes global average pooling as a mean, whose gradient is contiguous.
        xin, channels_last = _fallback_input(x, grad_follows=is_max or tuple(size) != (1, 1))
        if is_max:
            out, indices = reference.adaptive_max_pool2d(xin, size)
            indices = _ops.as_layout(indices, channels_last)
        else:
            out = reference.adaptive_avg_pool2d(xin, size)
        out = _ops.as_layout(out, channels_last)
    out = _pool_output(out, unbatched, dims)
    if not return_indices:
        return out
    return out, _pool_output(indices, unbatched, dims)


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    """Adaptive 2-D average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    Shapes: input (N, C, H, W) or (C, H, W) -> (N, C, OH, OW) with
    ``(OH, OW) = output_size`` (an int, or a pair where None keeps that input
    size). Output (i, j) averages rows [floor(i H / OH), ceil((i + 1) H / OH))
    and the matching columns; ``output_size=1`` is global average pooling.
    """
    return _adaptive("adaptive_avg_pool2d", input, output_size, 2, is_max=False)


def adaptive_max_pool2d(input: Tensor, output_size, return_indices: bool = False):
    """Adaptive 2-D max pooling, as ``torch.nn.functional.adaptive_max_pool2d``:
    windows as :func:`adaptive_avg_pool2d`, indices as :func:`max_pool2d`."""
    return _adaptive("adaptive_max_pool2d", input, output_size, 2, is_max=True, return_indices=return_indices)


def adaptive_avg_pool1d(input: Tensor, output_size) -> Tensor:
    """Adaptive 1-D average pooling, as ``torch.nn.functional.adaptive_avg_pool1d``:
    input (N, C, L) or (C, L) -> (N, C, output_size)."""
    return _adaptive("adaptive_avg_pool1d", input, output_size, 1, is_max=False)


def adaptive_max_pool1d(input: Tensor, output_size, return_indices: bool = False):
    """Adaptive 1-D max pooling, as ``torch.nn.functional.adaptive_max_pool1d``."""
    return _adaptive("adaptive_max_pool1d", input, output_size, 1, is_max=True, return_indices=return_indices)


def pool2d(X: Tensor, pool_size, mode: str = "max") -> Tensor:
    """The book's ``pool2d`` (section 7.5) on the native kernels: 2-D ``X`` (h, w),
    a ``pool_size`` window with stride 1 and no padding, ``mode`` "max" or "avg";
    returns (h - p_h + 1, w - p_w + 1). :func:`d2l_ext.reference.pool2d` is the
    book's loop version."""
    if X.dim() != 2:
        raise ValueError(f"pool2d: X must be 2-D (h, w), got shape {list(X.shape)}")
    k = _tuple("pool_size", pool_size, 2, "pool2d")
    if mode == "max":
        return max_pool2d(X[None, None], k, 1).squeeze(0).squeeze(0)
    if mode == "avg":
        return avg_pool2d(X[None, None], k, 1).squeeze(0).squeeze(0)
    raise ValueError(f"pool2d: mode must be 'max' or 'avg', got {mode!r}")


# ---------------------------------------------------------------------- conv2d


def _conv_same_padding(
    op: str, x: Tensor, kernel: tuple[int, ...], stride, dilation, dims: int
) -> tuple[Tensor, tuple[int, ...]]:
    """padding="same": output size = input size (stride 1 only, as torch). The
    total padding per axis is dilation * (kernel - 1); an odd total puts the
    extra element on the right, padded here (as torch does)."""
    if any(s != 1 for s in stride):
        raise RuntimeError(f"{op}: padding='same' is not supported for strided convolutions")
    pads, extra = [], []
    for k, d in zip(kernel, dilation):
        total = d * (k - 1)
        pads.append(total // 2)
        extra.append(total % 2)
    if any(extra):
        # F.pad takes (last axis left, right, previous axis left, right, ...)
        spec = []
        for e in reversed(extra):
            spec += [0, e]
        x = torch.nn.functional.pad(x, spec)
    return x, tuple(pads)


def _check_conv_args(op: str, x: Tensor, weight: Tensor, bias: Tensor | None, groups: int, dims: int) -> None:
    """Raise what torch raises for inconsistent conv arguments (x is batched here)."""
    if weight.dim() != dims + 2:
        raise RuntimeError(
            f"{op}: expected weight to be {dims + 2}-D ({'O, C/groups, ' + ', '.join(['k'] * dims)}), "
            f"but got weight of size {list(weight.shape)}"
        )
    if groups <= 0:
        raise RuntimeError(f"{op}: non-positive groups is not supported (groups={groups})")
    if any(k <= 0 for k in weight.shape[2:]):
        raise RuntimeError(f"{op}: kernel size should be greater than zero, but got {list(weight.shape[2:])}")
    if x.shape[0] > 0 and x.shape[1] > 0 and any(s == 0 for s in x.shape[2:]):
        raise RuntimeError(
            f"{op}: Only zero batch or zero channel inputs are supported, but got input shape: "
            f"{list(x.shape)}"
        )
    if weight.shape[0] < groups:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be at least {groups} at dimension 0, but got "
            f"weight of size {list(weight.shape)} instead"
        )
    if weight.shape[0] % groups != 0:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, but got "
            f"weight of size {list(weight.shape)} instead"
        )
    if x.shape[1] != weight.shape[1] * groups:
        raise RuntimeError(
            f"Given groups={groups}, weight of size {list(weight.shape)}, expected input{list(x.shape)} to "
            f"have {weight.shape[1] * groups} channels, but got {x.shape[1]} channels instead"
        )
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        raise RuntimeError(
            f"Given weight of size {list(weight.shape)}, expected bias to be 1-dimensional with "
            f"{weight.shape[0]} elements, but got bias of size {list(bias.shape)} instead"
        )
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if t.dtype != x.dtype:
            raise RuntimeError(
                f"{op}: input type ({x.dtype}) and {name} type ({t.dtype}) should be the same"
            )
        if t.device != x.device:
            raise RuntimeError(
                f"{op}: expected input and {name} to be on the same device, but got {x.device} and {t.device}"
            )
    if x.dtype == torch.bool:
        raise NotImplementedError(f"\"{op}\" not implemented for 'Bool'")


def _conv(op: str, input: Tensor, weight: Tensor, bias, stride, padding, dilation, groups: int, dims: int):
    if input.dim() not in (dims + 1, dims + 2):
        raise RuntimeError(
            f"{op}: Expected {dims + 1}D (unbatched) or {dims + 2}D (batched) input to {op}, but got input "
            f"of size: {list(input.shape)}"
        )
    unbatched = input.dim() == dims + 1
    x = input.unsqueeze(0) if unbatched else input
    _check_conv_args(op, x, weight, bias, groups, dims)
    kernel = tuple(weight.shape[2:])
    s = _tuple("stride", stride, dims, op)
    d = _tuple("dilation", dilation, dims, op)
    if min(s) <= 0:
        raise RuntimeError(f"{op}: non-positive stride is not supported")
    if min(d) <= 0:
        raise RuntimeError(f"{op}: dilation should be greater than zero")
    if isinstance(padding, str):
        if padding == "valid":
            p = (0,) * dims
        elif padding == "same":
            x, p = _conv_same_padding(op, x, kernel, s, d, dims)
        else:
            raise RuntimeError(f"Invalid padding string: '{padding}' (should be 'valid' or 'same')")
    else:
        p = _tuple("padding", padding, dims, op)
        if min(p) < 0:
            raise RuntimeError(f"{op}: negative padding is not supported")
    for i in range(dims):
        padded = x.shape[2 + i] + 2 * p[i]
        if padded < d[i] * (kernel[i] - 1) + 1:
            sizes = " x ".join(str(x.shape[2 + j] + 2 * p[j]) for j in range(dims))
            ks = " x ".join(str(k) for k in kernel)
            raise RuntimeError(
                f"Calculated padded input size per channel: ({sizes}). Kernel size: ({ks}). "
                "Kernel size can't be greater than actual input size"
            )
    if dims == 1:  # (N, C, L) as (N, C, 1, L)
        x, w2 = x.unsqueeze(2), weight.unsqueeze(2)
        s, p, d = (1, *s), (0, *p), (1, *d)
    else:
        w2 = weight
    # The kernels take floating point; integer and complex inputs (which torch's CPU conv2d
    # also takes) run the reference maths.
    if x.is_floating_point() and _backend.native_for(x) and _ops.has_kernel("conv2d", x.device.type):
        out = torch.ops.d2l_ext.conv2d(
            _cpu_float(x), _cpu_float(w2), None if bias is None else _cpu_float(bias), s, p, d, groups
        )
        out = _as_dtype(out, x.dtype)
    else:
        out = reference.conv2d(x, w2, bias, s, p, d, groups)
        if dims == 2 and (_ops._conv_channels_last(x) or _ops._conv_channels_last(w2)):
            out = out.contiguous(memory_format=torch.channels_last)  # torch's (and the kernels') layout
    if dims == 1:
        out = out.squeeze(2)
    return out.squeeze(0) if unbatched else out


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride=1,
    padding: int | tuple[int, int] | str = 0,
    dilation=1,
    groups: int = 1,
) -> Tensor:
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    Shapes:
        input: (N, C, H, W) or unbatched (C, H, W).
        weight: (O, C / groups, kh, kw); bias: (O,) or None.
        returns: (N, O, OH, OW) (or (O, OH, OW)) with
            ``OH = floor((H + 2 padding - dilation (kh - 1) - 1) / stride) + 1``.

    ``padding`` is an int, a pair, ``"valid"`` (0) or ``"same"`` (output size =
    input size; stride 1 only). The native CPU kernel lays windows out as
    columns (im2col) a batch block at a time and multiplies them with the
    weights (``at::mm``); the CUDA kernel does the same with cuBLAS (compiled,
    not yet run on a GPU).
    """
    return _conv("conv2d", input, weight, bias, stride, padding, dilation, groups, 2)


def conv1d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride=1,
    padding: int | tuple[int] | str = 0,
    dilation=1,
    groups: int = 1,
) -> Tensor:
    """1-D cross-correlation, as ``torch.nn.functional.conv1d`` (the book's
    TextCNN): input (N, C, L) or (C, L), weight (O, C / groups, k) ->
    (N, O, L_out). Runs the 2-D kernel with H = 1."""
    return _conv("conv1d", input, weight, bias, stride, padding, dilation, groups, 1)


def corr2d(X: Tensor, K: Tensor) -> Tensor:
    """The book's ``corr2d`` (section 7.2) on the conv2d kernel: ``X`` (h, w),
    ``K`` (kh, kw) -> (h - kh + 1, w - kw + 1), stride 1, no padding.
    ``d2l_ext.reference.corr2d_book`` is the book's loop version."""
    if X.dim() != 2 or K.dim() != 2:
        raise RuntimeError(f"corr2d: X and K must be 2-D, got {list(X.shape)} and {list(K.shape)}")
    return conv2d(X[None, None], K[None, None])[0, 0]


# ------------------------------------------------------------------ recurrent cells and layers
_RNN_NATIVE_DTYPES = {
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
    "meta": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
}


def _rnn_native(x: Tensor) -> bool:
    """Whether the recurrent op runs the native kernels for tensors like x."""
    kind = x.device.type
    return (
        x.dtype in _RNN_NATIVE_DTYPES.get(kind, ())
        and _backend.native_for(x)
        and _ops.has_kernel("rnn", kind)
    )


def _dropout_masks(x: Tensor, width: int, num_layers: int, p: float, train: bool) -> list[Tensor]:
    """Inverted-dropout masks for the inputs of layers 1..L-1, each (T, B, width),
    0 or 1 / (1 - p), as torch applies dropout between stacked layers."""
    if not train or p == 0 or num_layers < 2:
        return []
    if not 0 <= p <= 1:  # RuntimeError, as torch.lstm & co
        raise RuntimeError(f"dropout probability has to be between 0 and 1, but got {p}")
    shape = (x.shape[0], x.shape[1], width)
    if p == 1:
        return [x.new_zeros(shape) for _ in range(num_layers - 1)]
    return [x.new_empty(shape).bernoulli_(1 - p).div_(1 - p) for _ in range(num_layers - 1)]


def _check_rnn_fallback_args(
    mode: str, x: Tensor, hx: Tensor, cx: Tensor | None, params, has_biases: bool, num_layers: int, D: int
) -> None:
    """For the Python fallback, what the native op checks (csrc/rnn.cpp check_rnn_args) and torch
    rejects too: else a wrong-shaped hx broadcasts, and extra weights go unnoticed. x is (T, B, I)."""
    op = f"d2l_ext.{mode}"
    T, B, n_in = x.shape
    if T == 0:
        raise RuntimeError(f"{op}: expected sequence length to be larger than 0")
    if num_layers < 1:
        raise RuntimeError(f"{op}: num_layers must be at least 1, got {num_layers}")
    if hx.dim() != 3 or (cx is not None and cx.dim() != 3):
        raise RuntimeError(f"{op}: hx (and cx) must be (num_layers * num_directions, B, hidden_size)")
    P = H = hx.shape[2]
    if P == 0:  # as the native op (torch's oneDNN LSTM fails there too)
        raise RuntimeError(f"{op}: hidden_size must be positive")
    if cx is not None:
        H = cx.shape[2]
        if P > H:
            raise RuntimeError(f"{op}: hx's last size (proj_size) must be smaller than cx's, got {P} and {H}")
    G = _ops.RNN_GATES[reference.RNN_MODES[mode]]
    per = (4 if has_biases else 2) + (1 if P != H else 0)
    if len(params) != num_layers * D * per:
        raise RuntimeError(
            f"{op}: expected {num_layers * D * per} weight tensors ({per} per layer and direction), "
            f"got {len(params)}"
        )
    expected = [("hx", hx, (num_layers * D, B, P))]
    if cx is not None:
        expected.append(("cx", cx, (num_layers * D, B, H)))
    for k, w in enumerate(params):
        layer, j = k // (D * per), k % per
        shapes = [(G * H, n_in if layer == 0 else D * P), (G * H, P)] + [(G * H,)] * (2 * has_biases)
        expected.append((f"weight {k}", w, (shapes + [(P, H)])[j]))
    for name, t, shape in expected:
        if tuple(t.shape) != shape:
            raise RuntimeError(f"{op}: {name} must have shape {list(shape)}, got {list(t.shape)}")
        if t.dtype != x.dtype or t.device != x.device:
            raise RuntimeError(
                f"{op}: {name} is {t.dtype} on {t.device} but input is {x.dtype} on {x.device}"
            )


def _rnn_layers(
    mode: str,
    input: Tensor,
    hx: Tensor,
    cx: Tensor | None,
    params: list[Tensor],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    if input.dim() != 3:
        raise RuntimeError(f"{mode}: input must be 3-D (T, B, input_size) here, got {input.dim()}-D")
    x = input.transpose(0, 1) if batch_first else input
    D = 2 if bidirectional else 1
    proj_size = hx.shape[-1] if cx is not None and hx.shape[-1] != cx.shape[-1] else 0
    masks = _dropout_masks(x, D * hx.shape[-1], num_layers, dropout, train)
    code = reference.RNN_MODES[mode]
    if _rnn_native(x):
        out, hy, cy, _ = torch.ops.d2l_ext.rnn(
            x, hx, cx, list(params), code, has_biases, num_layers, bidirectional, masks
        )
    else:  # the Python loop
        _check_rnn_fallback_args(mode, x, hx, cx, params, has_biases, num_layers, D)
        out, hy, cy = reference.rnn(
            x, hx, cx, list(params), code, has_biases, num_layers, bidirectional, masks, proj_size
        )
    if batch_first:
        out = out.transpose(0, 1)
    return out, hy, cy if code == 2 else None


def rnn_tanh(
    input: Tensor, hx: Tensor, params: list[Tensor], has_biases: bool, num_layers: int, dropout: float,
    train: bool, bidirectional: bool, batch_first: bool,
) -> tuple[Tensor, Tensor]:
    """Stacked Elman RNN layers with tanh, as ``torch.rnn_tanh``.

    Shapes: input (T, B, I) ((B, T, I) when batch_first); hx (L * D, B, H);
    params: torch's ``_flat_weights`` (w_ih (H, I_l), w_hh (H, H)[, b_ih, b_hh]
    per layer and direction). Returns (output (T, B, D * H), h_n (L * D, B, H)).
    The time loop runs in C++; dropout (between layers, when train) as torch.
    """
    out, hy, _ = _rnn_layers("rnn_tanh", input, hx, None, params, has_biases, num_layers, dropout, train,
                             bidirectional, batch_first)
    return out, hy


def rnn_relu(
    input: Tensor, hx: Tensor, params: list[Tensor], has_biases: bool, num_layers: int, dropout: float,
    train: bool, bidirectional: bool, batch_first: bool,
) -> tuple[Tensor, Tensor]:
    """As :func:`rnn_tanh` with ReLU (``torch.rnn_relu``)."""
    out, hy, _ = _rnn_layers("rnn_relu", input, hx, None, params, has_biases, num_layers, dropout, train,
                             bidirectional, batch_first)
    return out, hy


def gru(
    input: Tensor, hx: Tensor, params: list[Tensor], has_biases: bool, num_layers: int, dropout: float,
    train: bool, bidirectional: bool, batch_first: bool,
) -> tuple[Tensor, Tensor]:
    """Stacked GRU layers, as ``torch.gru``: input (T, B, I), hx (L * D, B, H),
    params w_ih (3H, I_l), w_hh (3H, H)[, b_ih, b_hh] -> (output (T, B, D * H), h_n)."""
    out, hy, _ = _rnn_layers("gru", input, hx, None, params, has_biases, num_layers, dropout, train,
                             bidirectional, batch_first)
    return out, hy


def lstm(
    input: Tensor, hx: tuple[Tensor, Tensor] | list[Tensor], params: list[Tensor], has_biases: bool,
    num_layers: int, dropout: float, train: bool, bidirectional: bool, batch_first: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Stacked LSTM layers, as ``torch.lstm``: input (T, B, I), hx = (h0 (L * D, B, P),
    c0 (L * D, B, H)) with P = proj_size or H, params w_ih (4H, I_l), w_hh (4H, P)
    [, b_ih, b_hh][, w_hr (P, H)] -> (output (T, B, D * P), h_n, c_n). With
    proj_size the native op runs its per-step path (no threads splitting the units)."""
    h0, c0 = hx
    out, hy, cy = _rnn_layers("lstm", input, h0, c0, params, has_biases, num_layers, dropout, train,
                              bidirectional, batch_first)
    assert cy is not None
    return out, hy, cy


def _cell(mode: str, input: Tensor, hx: Tensor, cx: Tensor | None, w_ih: Tensor, w_hh: Tensor,
          b_ih: Tensor | None, b_hh: Tensor | None) -> tuple[Tensor, Tensor | None]:
    if input.dim() not in (1, 2):
        raise ValueError(f"{mode}: Expected input to be 1D or 2D, got {input.dim()}D instead")
    unbatched = input.dim() == 1
    x = input.unsqueeze(0) if unbatched else input
    states = [hx] if cx is None else [hx, cx]
    if unbatched:
        states = [s.unsqueeze(0) if s.dim() == 1 else s for s in states]
    if x.shape[1] != w_ih.shape[1]:
        raise RuntimeError(
            f"{mode}: input has inconsistent input_size: got {x.shape[1]} expected {w_ih.shape[1]}"
        )
    for name, s in zip(("hx", "cx"), states):
        if s.dim() != 2 or s.shape[0] != x.shape[0] or s.shape[1] != w_hh.shape[1]:
            raise RuntimeError(
                f"{mode}: {name} must be ({x.shape[0]}, {w_hh.shape[1]}) for this input, got {tuple(s.shape)}"
            )
    if (b_ih is None) != (b_hh is None):  # torch allows one bias: the other is zero
        b_ih = torch.zeros_like(b_hh) if b_ih is None else b_ih
        b_hh = torch.zeros_like(b_ih) if b_hh is None else b_hh
    code = reference.RNN_MODES[mode.removesuffix("_cell")]
    if _rnn_native(x):
        weights = [w_ih, w_hh] if b_ih is None else [w_ih, w_hh, b_ih, b_hh]
        c0 = states[1].unsqueeze(0) if cx is not None else None
        _, hy, cy, _ = torch.ops.d2l_ext.rnn(x.unsqueeze(0), states[0].unsqueeze(0), c0, weights, code,
                                             b_ih is not None, 1, False, [])
        h, c = hy[0], (cy[0] if code == 2 else None)
    elif code == 2:
        h, c = reference.lstm_cell(x, (states[0], states[1]), w_ih, w_hh, b_ih, b_hh)
    else:
        cell = (reference.rnn_tanh_cell, reference.rnn_relu_cell, None, reference.gru_cell)[code]
        h, c = cell(x, states[0], w_ih, w_hh, b_ih, b_hh), None
    if unbatched:
        h = h.squeeze(0)
        c = c.squeeze(0) if c is not None else None
    return h, c


def rnn_tanh_cell(input: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
                  b_hh: Tensor | None = None) -> Tensor:
    """One Elman step with tanh, as ``torch.rnn_tanh_cell``: input (B, I) or
    (I,), hx (B, H) or (H,), w_ih (H, I), w_hh (H, H) -> h' like hx.
    Two GEMMs, then one fused element-wise kernel."""
    return _cell("rnn_tanh_cell", input, hx, None, w_ih, w_hh, b_ih, b_hh)[0]


def rnn_relu_cell(input: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
                  b_hh: Tensor | None = None) -> Tensor:
    """As :func:`rnn_tanh_cell` with ReLU (``torch.rnn_relu_cell``)."""
    return _cell("rnn_relu_cell", input, hx, None, w_ih, w_hh, b_ih, b_hh)[0]


def gru_cell(input: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
             b_hh: Tensor | None = None) -> Tensor:
    """One GRU step, as ``torch.gru_cell``: input (B, I), hx (B, H), w_ih (3H, I),
    w_hh (3H, H), gates r, z, n with b_hn inside the reset product -> h' (B, H)."""
    return _cell("gru_cell", input, hx, None, w_ih, w_hh, b_ih, b_hh)[0]


def lstm_cell(input: Tensor, hx: tuple[Tensor, Tensor] | list[Tensor], w_ih: Tensor, w_hh: Tensor,
              b_ih: Tensor | None = None, b_hh: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One LSTM step, as ``torch.lstm_cell``: input (B, I), hx = (h, c) each
    (B, H), w_ih (4H, I), w_hh (4H, H), gates i, f, g, o -> (h', c')."""
    if len(hx) != 2:
        raise RuntimeError(f"lstm_cell: hx must be a pair (h, c), got {len(hx)} tensors")
    h, c = _cell("lstm_cell", input, hx[0], hx[1], w_ih, w_hh, b_ih, b_hh)
    assert c is not None
    return h, c
