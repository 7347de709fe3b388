"""Drop-in ``torch.nn`` modules whose forward runs d2l_ext ops."""

from .conv import Conv1d, Conv2d
from .loss import CrossEntropyLoss
from .pooling import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AvgPool1d,
    AvgPool2d,
    MaxPool1d,
    MaxPool2d,
)

__all__ = [
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "Conv1d",
    "Conv2d",
    "CrossEntropyLoss",
    "MaxPool1d",
    "MaxPool2d",
]
