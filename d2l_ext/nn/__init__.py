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
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

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
    "GRU",
    "GRUCell",
    "LSTM",
    "LSTMCell",
    "MaxPool1d",
    "MaxPool2d",
    "RNN",
    "RNNCell",
]
