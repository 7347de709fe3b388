"""Pure-Python (plain torch tensor code) versions of every d2l_ext op.

These are two things at once:

* the **fallback** that runs when the compiled library is missing or when
  ``D2L_EXT_BACKEND=python`` is set, and
* the **readable maths** behind each kernel, written the way *Dive into Deep
  Learning* writes it, but vectorised.

Each function here takes arguments that :mod:`d2l_ext.functional` has already
checked and normalised (the same arguments the native op receives), so the two
backends can be compared one to one.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cross_entropy", "cross_entropy_book", "log_softmax"]


def log_softmax(x: Tensor, dim: int = 1) -> Tensor:
    """``x - logsumexp(x)`` along ``dim``, computed stably.

    The book's ``softmax(X) = exp(X) / exp(X).sum()`` overflows for large
    logits; subtracting the row maximum first (the "LogSumExp trick") does not
    change the result and keeps every ``exp`` at most 1.
    """
    m = x.amax(dim=dim, keepdim=True).detach()
    # A row that is all -inf has max -inf; shift by 0 there so we get -inf - 0, not nan.
    m = torch.where(m == float("-inf"), torch.zeros_like(m), m)
    lse = m + torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))
    return x - lse


def cross_entropy_book(y_hat: Tensor, y: Tensor) -> Tensor:
    """The book's section 4.4 definition: ``-log(y_hat[range(N), y])``.

    ``y_hat`` (N, C) are already probabilities, ``y`` (N,) class indices;
    returns the (N,) per-example losses. Shown for learners; not numerically
    safe, which is why :func:`cross_entropy` works on logits instead.
    """
    return -torch.log(y_hat[list(range(len(y_hat))), y])


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Softmax cross-entropy on logits, with torch's full set of options.

    Shapes: ``input`` (N, C, d1, ..., dk) logits (k >= 0). ``target`` is either
    class indices (N, d1, ..., dk), int64, or class probabilities with the same
    shape as ``input``. ``weight`` (C,) rescales each class. Returns a scalar
    for ``reduction`` "mean"/"sum" and (N, d1, ..., dk) for "none".

    With ``p = log_softmax(input)``, ``eps = label_smoothing`` and ``w`` the
    class weights (all ones when ``weight`` is None), the loss of one example is

    * index target ``t``: ``(1 - eps) * w[t] * -p[t] + eps / C * sum_c w[c] * -p[c]``
      (0 where ``t == ignore_index``); "mean" divides the sum by ``sum w[t]``
      over the examples that are not ignored;
    * probability target ``q``: ``sum_c w[c] * q'[c] * -p[c]`` with the smoothed
      ``q' = (1 - eps) * q + eps / C``; "mean" divides by the number of examples.
    """
    num_classes = input.shape[1]
    logp = log_softmax(input, dim=1)
    # Broadcast the (C,) weights against (N, C, d1, ...).
    w = None if weight is None else weight.view([1, -1] + [1] * (input.dim() - 2))

    if target.dtype.is_floating_point:  # class probabilities
        q = target
        if label_smoothing > 0.0:
            q = q * (1.0 - label_smoothing) + label_smoothing / num_classes
        terms = -logp * q if w is None else -logp * q * w
        per_example = terms.sum(dim=1)
        if reduction == "none":
            return per_example
        if reduction == "sum":
            return per_example.sum()
        count = per_example.numel()
        return per_example.sum() / count if count else per_example.sum() * float("nan")

    # Class indices: pick -logp[t] for each example; ignored examples use class 0
    # for the lookup and are zeroed afterwards.
    valid = target != ignore_index
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    nll = -logp.gather(1, safe_target.unsqueeze(1)).squeeze(1)
    w_t = torch.ones_like(nll) if weight is None else weight[safe_target]
    w_t = torch.where(valid, w_t, torch.zeros_like(w_t))
    per_example = (1.0 - label_smoothing) * w_t * nll
    if label_smoothing > 0.0:
        smooth = (-logp).sum(dim=1) if w is None else (-logp * w).sum(dim=1)
        per_example = per_example + label_smoothing / num_classes * smooth
    # Ignored examples contribute 0, even when their logits are NaN.
    per_example = torch.where(valid, per_example, torch.zeros_like(per_example))
    if reduction == "none":
        return per_example
    if reduction == "sum":
        return per_example.sum()
    total = w_t.sum()
    # "mean" divides by the total weight of the examples kept. When every example
    # is ignored that is 0: torch's loss is then NaN (0/0) but its gradient 0, so
    # divide by a safe 1 and add the NaN as a constant (0 whenever total != 0).
    safe_total = torch.where(total != 0, total, torch.ones_like(total))
    nan_if_empty = (0.0 * total.detach()) / total.detach()
    return per_example.sum() / safe_total + nan_if_empty
