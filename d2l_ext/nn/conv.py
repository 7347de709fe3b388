"""Convolution modules: torch.nn's classes (same constructor arguments,
parameters, initialisation and ``state_dict`` keys, so weights load both ways)
whose forward runs :func:`d2l_ext.functional.conv2d` / ``conv1d``."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import functional as F

__all__ = ["Conv1d", "Conv2d"]


def _padded(module: torch.nn.modules.conv._ConvNd, input: Tensor) -> Tensor:
    """The input padded by ``padding_mode`` (reflect, replicate, circular) as
    torch.nn does it, before a convolution with no padding of its own."""
    return torch.nn.functional.pad(input, module._reversed_padding_repeated_twice, mode=module.padding_mode)


class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` on :func:`d2l_ext.functional.conv2d`:
    (N, C, H, W) or (C, H, W) -> (N, O, OH, OW). ``padding_mode`` other than
    "zeros" pads the input first, as torch does."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.padding_mode != "zeros":
            return F.conv2d(_padded(self, input), weight, bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class Conv1d(torch.nn.Conv1d):
    """``torch.nn.Conv1d`` on :func:`d2l_ext.functional.conv1d` (the book's
    TextCNN): (N, C, L) or (C, L) -> (N, O, L_out)."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.padding_mode != "zeros":
            return F.conv1d(_padded(self, input), weight, bias, self.stride, 0, self.dilation, self.groups)
        return F.conv1d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
