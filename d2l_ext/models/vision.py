"""The image-classification networks of *Dive into Deep Learning*, chapters 4-8.

Written as the book writes them (``vgg_block``, ``nin_block``, ``Inception``,
``Residual``, ``DenseBlock``, ``transition_block``), with one change: every
convolution and pooling layer is a :mod:`d2l_ext.nn` module, so its forward and
backward run d2l_ext's kernels. Linear, BatchNorm, ReLU, Sigmoid, Dropout and
Flatten are torch.nn's.

The book builds its layers with ``nn.LazyConv2d``/``nn.LazyLinear``; here every
input size is computed from ``in_channels`` (and, where a Linear follows a
Flatten, ``image_size``), so all parameters exist before the first forward
(optimizers, DDP and ``load_state_dict`` need that).

Every factory takes ``(in_channels=1, num_classes=10, ...)`` (Fashion-MNIST) and
returns a ``torch.nn.Module`` mapping images (N, in_channels, H, W) to logits
(N, num_classes); H = W = the size the book trains it on (28, 96 or 224).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .. import nn as dnn

__all__ = [
    "DenseBlock",
    "Inception",
    "Residual",
    "alexnet",
    "conv_block",
    "densenet",
    "googlenet",
    "lenet",
    "lenet_bn",
    "lenet_relu",
    "mlp",
    "nin",
    "nin_block",
    "resnet18",
    "resnet_block",
    "softmax_regression",
    "transition_block",
    "VGG11_ARCH",
    "vgg",
    "vgg11",
    "vgg11_narrow",
    "vgg_block",
]


def _out_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0) -> int:
    """Side length after a convolution or pooling window: floor((n + 2p - k) / s) + 1."""
    return (size + 2 * padding - kernel_size) // stride + 1


# --------------------------------------------------------------------------- ch. 4.5 / 5.6


def softmax_regression(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Module:
    """Softmax regression (ch. 4.5): Flatten, Linear.

    (N, in_channels, image_size, image_size) -> (N, num_classes) logits (the
    softmax lives in the cross-entropy loss).
    """
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes))


def mlp(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
    num_hiddens: Sequence[int] = (256, 256),
    dropout: Sequence[float] = (0.5, 0.5),
) -> nn.Module:
    """The multilayer perceptron with dropout (ch. 5.6): Flatten, then for each
    hidden layer Linear, ReLU, Dropout, then the output Linear.

    (N, in_channels, image_size, image_size) -> (N, num_classes).
    ``num_hiddens`` and ``dropout`` give one width and one drop probability per
    hidden layer.
    """
    if len(num_hiddens) != len(dropout):
        raise ValueError(
            f"num_hiddens and dropout need one entry per hidden layer, got {len(num_hiddens)} "
            f"and {len(dropout)}"
        )
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_channels * image_size * image_size
    for hiddens, p in zip(num_hiddens, dropout):
        layers += [nn.Linear(width, hiddens), nn.ReLU(), nn.Dropout(p)]
        width = hiddens
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- ch. 7.6 / 8.5: LeNet


def _lenet(
    in_channels: int, num_classes: int, image_size: int, activation: type[nn.Module], pool: type[nn.Module]
) -> nn.Module:
    """LeNet-5 (ch. 7.6) with the given activation and pooling classes."""
    side = _out_size(_out_size(image_size, 5, padding=2), 2, 2)  # conv1 keeps the size, pool halves it
    side = _out_size(_out_size(side, 5), 2, 2)
    return nn.Sequential(
        dnn.Conv2d(in_channels, 6, kernel_size=5, padding=2), activation(),
        pool(kernel_size=2, stride=2),
        dnn.Conv2d(6, 16, kernel_size=5), activation(),
        pool(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120), activation(),
        nn.Linear(120, 84), activation(),
        nn.Linear(84, num_classes),
    )  # fmt: skip


def lenet(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Module:
    """The book's LeNet (ch. 7.6): sigmoid activations and average pooling.

    (N, in_channels, 28, 28) -> conv (N, 6, 28, 28) -> pool (N, 6, 14, 14)
    -> conv (N, 16, 10, 10) -> pool (N, 16, 5, 5) -> (N, 400) -> (N, 120)
    -> (N, 84) -> (N, num_classes).
    """
    return _lenet(in_channels, num_classes, image_size, nn.Sigmoid, dnn.AvgPool2d)


def lenet_relu(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Module:
    """LeNet with the modern choices the book suggests in the exercises: ReLU and
    max pooling. Same shapes as :func:`lenet`."""
    return _lenet(in_channels, num_classes, image_size, nn.ReLU, dnn.MaxPool2d)


def lenet_bn(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Module:
    """LeNet with batch normalization (ch. 8.5), unpadded first convolution.

    (N, in_channels, 28, 28) -> conv (N, 6, 24, 24) -> pool (N, 6, 12, 12)
    -> conv (N, 16, 8, 8) -> pool (N, 16, 4, 4) -> (N, 256) -> (N, 120)
    -> (N, 84) -> (N, num_classes).
    """
    side = _out_size(_out_size(_out_size(_out_size(image_size, 5), 2, 2), 5), 2, 2)
    return nn.Sequential(
        dnn.Conv2d(in_channels, 6, kernel_size=5), nn.BatchNorm2d(6), nn.Sigmoid(),
        dnn.AvgPool2d(kernel_size=2, stride=2),
        dnn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d(16), nn.Sigmoid(),
        dnn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120), nn.BatchNorm1d(120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.BatchNorm1d(84), nn.Sigmoid(),
        nn.Linear(84, num_classes),
    )  # fmt: skip


# --------------------------------------------------------------------------- ch. 8.1: AlexNet


def alexnet(in_channels: int = 1, num_classes: int = 10, image_size: int = 224) -> nn.Module:
    """AlexNet (ch. 8.1), as the book trains it on Fashion-MNIST resized to 224.

    (N, in_channels, 224, 224) -> conv (N, 96, 54, 54) -> pool (N, 96, 26, 26)
    -> conv (N, 256, 26, 26) -> pool (N, 256, 12, 12) -> 3 convs (N, 384/384/256, 12, 12)
    -> pool (N, 256, 5, 5) -> (N, 6400) -> (N, 4096) -> (N, 4096) -> (N, num_classes).
    """
    side = _out_size(_out_size(image_size, 11, 4, 1), 3, 2)
    side = _out_size(_out_size(side, 5, 1, 2), 3, 2)
    side = _out_size(side, 3, 2)
    return nn.Sequential(
        dnn.Conv2d(in_channels, 96, kernel_size=11, stride=4, padding=1), nn.ReLU(),
        dnn.MaxPool2d(kernel_size=3, stride=2),
        dnn.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(),
        dnn.MaxPool2d(kernel_size=3, stride=2),
        dnn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),
        dnn.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(),
        dnn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        dnn.MaxPool2d(kernel_size=3, stride=2),
        nn.Flatten(),
        nn.Linear(256 * side * side, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(4096, num_classes),
    )  # fmt: skip


# --------------------------------------------------------------------------- ch. 8.2: VGG

VGG11_ARCH: tuple[tuple[int, int], ...] = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))


def vgg_block(num_convs: int, in_channels: int, out_channels: int) -> nn.Sequential:
    """A VGG block (ch. 8.2): ``num_convs`` times (3x3 pad-1 conv, ReLU), then a
    2x2 stride-2 max pooling. (N, in_channels, H, W) -> (N, out_channels, H/2, W/2)."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [dnn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
        in_channels = out_channels
    layers.append(dnn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def vgg(
    arch: Sequence[tuple[int, int]],
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 224,
) -> nn.Module:
    """VGG (ch. 8.2) from ``arch``, one ``(num_convs, out_channels)`` per block,
    then the three fully connected layers (4096, 4096, num_classes) with dropout.
    (N, in_channels, image_size, image_size) -> (N, num_classes)."""
    blocks: list[nn.Module] = []
    side = image_size
    for num_convs, out_channels in arch:
        blocks.append(vgg_block(num_convs, in_channels, out_channels))
        in_channels, side = out_channels, side // 2
    return nn.Sequential(
        *blocks,
        nn.Flatten(),
        nn.Linear(in_channels * side * side, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, num_classes),
    )  # fmt: skip


def vgg11(
    in_channels: int = 1, num_classes: int = 10, width_divisor: int = 1, image_size: int = 224
) -> nn.Module:
    """VGG-11 (ch. 8.2): blocks ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512)),
    every convolution's channels divided by ``width_divisor`` (the fully connected
    layers keep 4096 units, as in the book).

    (N, in_channels, 224, 224) -> blocks (N, 64, 112, 112), (N, 128, 56, 56),
    (N, 256, 28, 28), (N, 512, 14, 14), (N, 512, 7, 7) -> (N, 25088) -> (N, 4096)
    -> (N, 4096) -> (N, num_classes).
    """
    if width_divisor < 1:
        raise ValueError(f"width_divisor must be a positive integer, got {width_divisor}")
    arch = [(num_convs, channels // width_divisor) for num_convs, channels in VGG11_ARCH]
    return vgg(arch, in_channels, num_classes, image_size)


def vgg11_narrow(in_channels: int = 1, num_classes: int = 10, image_size: int = 224) -> nn.Module:
    """The VGG-11 the book trains (ch. 8.2): channels divided by 4, so the blocks
    give (N, 16, 112, 112) ... (N, 128, 7, 7) -> (N, 6272) -> ... -> (N, num_classes)."""
    return vgg11(in_channels, num_classes, width_divisor=4, image_size=image_size)


# --------------------------------------------------------------------------- ch. 8.3: NiN


def nin_block(
    in_channels: int, out_channels: int, kernel_size: int, strides: int, padding: int
) -> nn.Sequential:
    """A NiN block (ch. 8.3): a ``kernel_size`` convolution, then two 1x1
    convolutions (per-pixel fully connected layers), each followed by ReLU.
    (N, in_channels, H, W) -> (N, out_channels, H', W')."""
    return nn.Sequential(
        dnn.Conv2d(in_channels, out_channels, kernel_size, strides, padding), nn.ReLU(),
        dnn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
        dnn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
    )  # fmt: skip


def nin(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """Network in Network (ch. 8.3): no fully connected layer, the last NiN block
    has ``num_classes`` channels and global average pooling gives the logits.

    (N, in_channels, 224, 224) -> (N, 96, 54, 54) -> pool (N, 96, 26, 26)
    -> (N, 256, 26, 26) -> pool (N, 256, 12, 12) -> (N, 384, 12, 12)
    -> pool (N, 384, 5, 5) -> (N, num_classes, 5, 5) -> (N, num_classes, 1, 1)
    -> (N, num_classes). Works on any input of at least 67x67.
    """
    return nn.Sequential(
        nin_block(in_channels, 96, kernel_size=11, strides=4, padding=0),
        dnn.MaxPool2d(3, stride=2),
        nin_block(96, 256, kernel_size=5, strides=1, padding=2),
        dnn.MaxPool2d(3, stride=2),
        nin_block(256, 384, kernel_size=3, strides=1, padding=1),
        dnn.MaxPool2d(3, stride=2),
        nn.Dropout(0.5),
        nin_block(384, num_classes, kernel_size=3, strides=1, padding=1),
        dnn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
    )


# --------------------------------------------------------------------------- ch. 8.4: GoogLeNet


class Inception(nn.Module):
    """The Inception block (ch. 8.4): four parallel paths concatenated on channels.

    Path 1: 1x1 conv (``c1``); path 2: 1x1 conv (``c2[0]``), 3x3 conv (``c2[1]``);
    path 3: 1x1 conv (``c3[0]``), 5x5 conv (``c3[1]``); path 4: 3x3 max pooling,
    1x1 conv (``c4``); ReLU after every conv. Padding keeps the size:
    (N, in_channels, H, W) -> (N, c1 + c2[1] + c3[1] + c4, H, W).
    """

    def __init__(self, in_channels: int, c1: int, c2: tuple[int, int], c3: tuple[int, int], c4: int) -> None:
        super().__init__()
        self.b1_1 = dnn.Conv2d(in_channels, c1, kernel_size=1)
        self.b2_1 = dnn.Conv2d(in_channels, c2[0], kernel_size=1)
        self.b2_2 = dnn.Conv2d(c2[0], c2[1], kernel_size=3, padding=1)
        self.b3_1 = dnn.Conv2d(in_channels, c3[0], kernel_size=1)
        self.b3_2 = dnn.Conv2d(c3[0], c3[1], kernel_size=5, padding=2)
        self.b4_1 = dnn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.b4_2 = dnn.Conv2d(in_channels, c4, kernel_size=1)
        self.relu = nn.ReLU()
        self.out_channels = c1 + c2[1] + c3[1] + c4

    def forward(self, x: Tensor) -> Tensor:
        """(N, in_channels, H, W) -> (N, out_channels, H, W)."""
        b1 = self.relu(self.b1_1(x))
        b2 = self.relu(self.b2_2(self.relu(self.b2_1(x))))
        b3 = self.relu(self.b3_2(self.relu(self.b3_1(x))))
        b4 = self.relu(self.b4_2(self.b4_1(x)))
        return torch.cat((b1, b2, b3, b4), dim=1)


def _inceptions(in_channels: int, specs: Sequence[tuple]) -> tuple[list[nn.Module], int]:
    """Inception blocks chained from ``in_channels``; also returns the output channels."""
    blocks: list[nn.Module] = []
    for spec in specs:
        block = Inception(in_channels, *spec)
        blocks.append(block)
        in_channels = block.out_channels
    return blocks, in_channels


def googlenet(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """GoogLeNet (ch. 8.4): stages b1..b5 and a Linear.

    (N, in_channels, 96, 96) -> b1 (N, 64, 24, 24) -> b2 (N, 192, 12, 12)
    -> b3 (N, 480, 6, 6) -> b4 (N, 832, 3, 3) -> b5 (N, 1024) -> (N, num_classes).
    Padded pooling and global average pooling make it accept any image size.
    """
    b1 = nn.Sequential(
        dnn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3), nn.ReLU(),
        dnn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )  # fmt: skip
    b2 = nn.Sequential(
        dnn.Conv2d(64, 64, kernel_size=1), nn.ReLU(),
        dnn.Conv2d(64, 192, kernel_size=3, padding=1), nn.ReLU(),
        dnn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )  # fmt: skip
    b3_blocks, channels = _inceptions(192, [(64, (96, 128), (16, 32), 32), (128, (128, 192), (32, 96), 64)])
    b3 = nn.Sequential(*b3_blocks, dnn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    b4_blocks, channels = _inceptions(
        channels,
        [
            (192, (96, 208), (16, 48), 64),
            (160, (112, 224), (24, 64), 64),
            (128, (128, 256), (24, 64), 64),
            (112, (144, 288), (32, 64), 64),
            (256, (160, 320), (32, 128), 128),
        ],
    )
    b4 = nn.Sequential(*b4_blocks, dnn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    b5_blocks, channels = _inceptions(
        channels, [(256, (160, 320), (32, 128), 128), (384, (192, 384), (48, 128), 128)]
    )
    b5 = nn.Sequential(*b5_blocks, dnn.AdaptiveAvgPool2d((1, 1)), nn.Flatten())
    return nn.Sequential(b1, b2, b3, b4, b5, nn.Linear(channels, num_classes))


# --------------------------------------------------------------------------- ch. 8.6: ResNet


class Residual(nn.Module):
    """The residual block (ch. 8.6): two 3x3 convs with batch norm, plus the input
    (through a 1x1 conv with the same stride when ``use_1x1conv``), then ReLU.

    (N, in_channels, H, W) -> (N, num_channels, H / strides, W / strides); without
    the 1x1 conv ``in_channels`` must equal ``num_channels`` and ``strides`` be 1.
    """

    def __init__(
        self, in_channels: int, num_channels: int, use_1x1conv: bool = False, strides: int = 1
    ) -> None:
        super().__init__()
        self.conv1 = dnn.Conv2d(in_channels, num_channels, kernel_size=3, padding=1, stride=strides)
        self.conv2 = dnn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
        self.conv3 = (
            dnn.Conv2d(in_channels, num_channels, kernel_size=1, stride=strides) if use_1x1conv else None
        )
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.bn2 = nn.BatchNorm2d(num_channels)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """(N, in_channels, H, W) -> (N, num_channels, H', W')."""
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.conv3 is not None:
            x = self.conv3(x)
        return self.relu(y + x)


def resnet_block(
    in_channels: int, num_channels: int, num_residuals: int, first_block: bool = False
) -> nn.Sequential:
    """A ResNet stage (ch. 8.6): ``num_residuals`` Residual blocks; unless it is the
    first stage, the first block halves height and width (1x1 conv, stride 2)."""
    blocks: list[nn.Module] = []
    for i in range(num_residuals):
        if i == 0 and not first_block:
            blocks.append(Residual(in_channels, num_channels, use_1x1conv=True, strides=2))
        else:
            blocks.append(Residual(num_channels if i else in_channels, num_channels))
    return nn.Sequential(*blocks)


def _stem(in_channels: int) -> nn.Sequential:
    """The ResNet/DenseNet stem: 7x7 stride-2 conv, BatchNorm, ReLU, 3x3 stride-2
    max pooling. (N, in_channels, H, W) -> (N, 64, H/4, W/4)."""
    return nn.Sequential(
        dnn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3),
        nn.BatchNorm2d(64), nn.ReLU(),
        dnn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )  # fmt: skip


def resnet18(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """ResNet-18 (ch. 8.6): the stem, four stages of two Residual blocks (64, 128,
    256, 512 channels), global average pooling, Flatten, Linear.

    (N, in_channels, 96, 96) -> stem (N, 64, 24, 24) -> (N, 64, 24, 24)
    -> (N, 128, 12, 12) -> (N, 256, 6, 6) -> (N, 512, 3, 3) -> (N, 512, 1, 1)
    -> (N, 512) -> (N, num_classes).
    """
    return nn.Sequential(
        _stem(in_channels),
        resnet_block(64, 64, 2, first_block=True),
        resnet_block(64, 128, 2),
        resnet_block(128, 256, 2),
        resnet_block(256, 512, 2),
        dnn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(512, num_classes),
    )


# --------------------------------------------------------------------------- ch. 8.7: DenseNet


def conv_block(in_channels: int, num_channels: int) -> nn.Sequential:
    """DenseNet's convolution block (ch. 8.7): BatchNorm, ReLU, 3x3 pad-1 conv.
    (N, in_channels, H, W) -> (N, num_channels, H, W)."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels), nn.ReLU(),
        dnn.Conv2d(in_channels, num_channels, kernel_size=3, padding=1),
    )  # fmt: skip


class DenseBlock(nn.Module):
    """A dense block (ch. 8.7): ``num_convs`` conv blocks, each one's output
    concatenated to its input on the channels.

    (N, in_channels, H, W) -> (N, in_channels + num_convs * num_channels, H, W).
    """

    def __init__(self, num_convs: int, in_channels: int, num_channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            *(conv_block(in_channels + i * num_channels, num_channels) for i in range(num_convs))
        )
        self.out_channels = in_channels + num_convs * num_channels

    def forward(self, x: Tensor) -> Tensor:
        """(N, in_channels, H, W) -> (N, out_channels, H, W)."""
        for block in self.net:
            x = torch.cat((x, block(x)), dim=1)
        return x


def transition_block(in_channels: int, num_channels: int) -> nn.Sequential:
    """DenseNet's transition block (ch. 8.7): BatchNorm, ReLU, 1x1 conv to
    ``num_channels``, 2x2 stride-2 average pooling.
    (N, in_channels, H, W) -> (N, num_channels, H/2, W/2)."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels), nn.ReLU(),
        dnn.Conv2d(in_channels, num_channels, kernel_size=1),
        dnn.AvgPool2d(kernel_size=2, stride=2),
    )  # fmt: skip


def densenet(
    in_channels: int = 1, num_classes: int = 10, growth_rate: int = 32, arch: Sequence[int] = (4, 4, 4, 4)
) -> nn.Module:
    """DenseNet (ch. 8.7): the ResNet stem, one dense block of ``arch[i]`` conv
    blocks (``growth_rate`` channels each) per stage, a transition block halving
    channels and size between stages, then BatchNorm, ReLU, global average
    pooling, Flatten, Linear.

    With the defaults, (N, in_channels, 96, 96) -> stem (N, 64, 24, 24)
    -> (N, 192, 24, 24) -> (N, 96, 12, 12) -> (N, 224, 12, 12) -> (N, 112, 6, 6)
    -> (N, 240, 6, 6) -> (N, 120, 3, 3) -> (N, 248, 3, 3) -> (N, 248, 1, 1)
    -> (N, 248) -> (N, num_classes).
    """
    layers: list[nn.Module] = [_stem(in_channels)]
    channels = 64
    for i, num_convs in enumerate(arch):
        block = DenseBlock(num_convs, channels, growth_rate)
        layers.append(block)
        channels = block.out_channels
        if i != len(arch) - 1:
            layers.append(transition_block(channels, channels // 2))
            channels //= 2
    layers += [
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        dnn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(channels, num_classes),
    ]
    return nn.Sequential(*layers)
