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

__all__ = ["cross_entropy"]


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
    if torch.compiler.is_compiling() or target.numel() == 0:
        return
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
