"""Loss modules."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import functional as F


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` computed by :func:`d2l_ext.functional.cross_entropy`.

    Same constructor (``weight``, ``size_average``, ``ignore_index``, ``reduce``,
    ``reduction``, ``label_smoothing``), same buffers and ``state_dict``, and an
    instance of the torch class, so it replaces it anywhere. Shapes: input
    (C,), (N, C) or (N, C, d1, ..., dk); target class indices or probabilities
    (see the functional).
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )
