"""Pooling modules: torch.nn's classes (same constructor arguments, repr and
attributes; pooling has no parameters or buffers) whose forward runs d2l_ext's
kernels."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import functional as F

__all__ = [
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "MaxPool1d",
    "MaxPool2d",
]


class MaxPool2d(torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` on :func:`d2l_ext.functional.max_pool2d`:
    (N, C, H, W) or (C, H, W) -> (N, C, OH, OW) (and indices with ``return_indices``)."""

    def forward(self, input: Tensor):
        return F.max_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )


class MaxPool1d(torch.nn.MaxPool1d):
    """``torch.nn.MaxPool1d`` on :func:`d2l_ext.functional.max_pool1d`: (N, C, L) or (C, L)."""

    def forward(self, input: Tensor):
        return F.max_pool1d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )


class AvgPool2d(torch.nn.AvgPool2d):
    """``torch.nn.AvgPool2d`` on :func:`d2l_ext.functional.avg_pool2d`: (N, C, H, W) or (C, H, W)."""

    def forward(self, input: Tensor) -> Tensor:
        return F.avg_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )


class AvgPool1d(torch.nn.AvgPool1d):
    """``torch.nn.AvgPool1d`` on :func:`d2l_ext.functional.avg_pool1d`: (N, C, L) or (C, L)."""

    def forward(self, input: Tensor) -> Tensor:
        return F.avg_pool1d(
            input, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad
        )


class AdaptiveAvgPool2d(torch.nn.AdaptiveAvgPool2d):
    """``torch.nn.AdaptiveAvgPool2d`` on :func:`d2l_ext.functional.adaptive_avg_pool2d`;
    ``AdaptiveAvgPool2d(1)`` is the global average pooling of NiN, GoogLeNet and ResNet."""

    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(input, self.output_size)


class AdaptiveMaxPool2d(torch.nn.AdaptiveMaxPool2d):
    """``torch.nn.AdaptiveMaxPool2d`` on :func:`d2l_ext.functional.adaptive_max_pool2d`."""

    def forward(self, input: Tensor):
        return F.adaptive_max_pool2d(input, self.output_size, self.return_indices)


class AdaptiveAvgPool1d(torch.nn.AdaptiveAvgPool1d):
    """``torch.nn.AdaptiveAvgPool1d`` on :func:`d2l_ext.functional.adaptive_avg_pool1d`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_avg_pool1d(input, self.output_size)


class AdaptiveMaxPool1d(torch.nn.AdaptiveMaxPool1d):
    """``torch.nn.AdaptiveMaxPool1d`` on :func:`d2l_ext.functional.adaptive_max_pool1d`."""

    def forward(self, input: Tensor):
        return F.adaptive_max_pool1d(input, self.output_size, self.return_indices)
