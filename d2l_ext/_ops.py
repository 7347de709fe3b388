"""Loads the compiled library and registers, for every op, its fake (meta)
kernel and its autograd formula, so that the ops work with autograd, with
``torch.compile(fullgraph=True)`` and under ``torch.library.opcheck``.

Ops are reached as ``torch.ops.d2l_ext.<name>``; their schemas are in
``csrc/ops.cpp``.
"""

from __future__ import annotations

import torch
from torch import Tensor

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


def _ce_setup_context(ctx, inputs, output):
    input, target, weight, reduction, ignore_index, label_smoothing = inputs
    _loss, lse, total_weight = output
    ctx.mark_non_differentiable(lse, total_weight)
    ctx.save_for_backward(input, target, weight, lse, total_weight)
    ctx.options = (reduction, ignore_index, label_smoothing)


def _ce_backward(ctx, grad_loss, _grad_lse, _grad_total_weight):
    input, target, weight, lse, total_weight = ctx.saved_tensors
    reduction, ignore_index, label_smoothing = ctx.options
    grad_input = grad_target = None
    if ctx.needs_input_grad[0] and torch.is_grad_enabled():
        # create_graph=True: the gradient needs a graph of its own (double
        # backward), which the fused kernel does not record; differentiate the
        # reference maths instead. Ordinary backward never takes this path.
        with torch.enable_grad():
            ref = reference.cross_entropy(
                input, target, weight, _REDUCTION_NAMES[reduction], ignore_index, label_smoothing
            )
        (grad_input,) = torch.autograd.grad(ref, input, grad_loss, create_graph=True)
    elif ctx.needs_input_grad[0]:
        grad_input = torch.ops.d2l_ext._cross_entropy_backward(
            grad_loss,
            input,
            target,
            weight,
            lse,
            total_weight,
            reduction,
            ignore_index,
            label_smoothing,
        )
    if ctx.needs_input_grad[1]:
        # Soft targets: d loss / d q_c = -(1 - eps) * w_c * log_softmax(input)_c.
        g = grad_loss.expand(lse.shape) if reduction != 0 else grad_loss
        if reduction == 1:
            g = g / total_weight
        logp = input - lse.unsqueeze(1).to(input.dtype)
        grad_target = -(1.0 - label_smoothing) * g.unsqueeze(1) * logp
        if weight is not None:
            grad_target = grad_target * weight.view([1, -1] + [1] * (input.dim() - 2))
    grad_weight = None
    if ctx.needs_input_grad[2]:
        # Probability targets only (the functional refuses index targets, as torch does):
        # d loss / d w_c = sum over examples of g * q'_c * (lse - x_c).
        g = grad_loss.expand(lse.shape) if reduction != 0 else grad_loss
        if reduction == 1:
            g = g / total_weight
        q = target * (1.0 - label_smoothing) + label_smoothing / input.shape[1]
        terms = g.unsqueeze(1) * q * (lse.unsqueeze(1).to(input.dtype) - input)
        grad_weight = terms.transpose(0, 1).reshape(input.shape[1], -1).sum(1)
    return grad_input, grad_target, grad_weight, None, None, None


if LOADED:
    torch.library.register_fake("d2l_ext::cross_entropy")(_ce_fake)
    torch.library.register_fake("d2l_ext::_cross_entropy_backward")(_ce_backward_fake)
    torch.library.register_autograd("d2l_ext::cross_entropy", _ce_backward, setup_context=_ce_setup_context)
