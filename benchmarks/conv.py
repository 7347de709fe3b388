"""Benchmark of d2l_ext's conv2d against ``torch.nn.functional.conv2d``.

The convolution layers of the book's CNNs, float32, as the book builds them
for Fashion-MNIST (one input channel), each distinct layer shape once (the
label says how many times the network uses it):

- LeNet (28 x 28, batch 256): c1 1->6 5x5 pad 2, c2 6->16 5x5;
- AlexNet at 224 (batch 8): c1 1->96 11x11 stride 4 pad 1, c2 96->256 5x5 pad 2;
- ResNet-18 at 96 (batch 32): the 7x7 stem, every 3x3 and 1x1 shape of the
  four stages;
- GoogLeNet at 96 (batch 32): the 7x7 stem, block 2 (1x1, 3x3) and the six
  convolutions of the first Inception block.

Each layer is timed fwd+bwd (``y = conv2d(x, w, b)``, then gradients of x, w
and b with a fixed random output gradient); ``--quick`` keeps LeNet c1 and
one ResNet 3x3. ``params`` carry the layer and ``gflop`` (the forward's
multiply-adds x 2; fwd+bwd is three times that), so a report can give GFLOP/s.
On CUDA torch runs with TF32 off (``torch.backends.cudnn.allow_tf32 = False``)
so both sides compute in fp32.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

import d2l_ext.functional as F

from .common import Case, Timing, standard_impls

OP = "conv"
PYTHON_TIMING = Timing(min_run_time=0.5, max_run_time=4.0)
PYTHON_BUDGET_S = 10.0


@dataclass(frozen=True)
class Conv:
    net: str
    name: str
    batch: int
    cin: int
    cout: int
    size: int  # input H = W
    kernel: int
    stride: int = 1
    padding: int = 0
    uses: int = 1  # how many layers of the network have this shape

    @property
    def label(self) -> str:
        pad = f" p{self.padding}" if self.padding else ""
        stride = f" s{self.stride}" if self.stride != 1 else ""
        times = f" (x{self.uses})" if self.uses > 1 else ""
        return (
            f"{self.net} {self.name} {self.cin}->{self.cout} {self.kernel}x{self.kernel}{stride}{pad} "
            f"@{self.size} b{self.batch}{times}"
        )

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def gflop(self) -> float:
        return 2 * self.batch * self.cout * self.out_size**2 * self.cin * self.kernel**2 / 1e9


LAYERS = (
    Conv("LeNet", "c1", 256, 1, 6, 28, 5, padding=2),
    Conv("LeNet", "c2", 256, 6, 16, 14, 5),
    Conv("AlexNet", "c1", 8, 1, 96, 224, 11, stride=4, padding=1),
    Conv("AlexNet", "c2", 8, 96, 256, 26, 5, padding=2),
    Conv("ResNet-18", "stem", 32, 1, 64, 96, 7, stride=2, padding=3),
    Conv("ResNet-18", "b2", 32, 64, 64, 24, 3, padding=1, uses=4),
    Conv("ResNet-18", "b3 first", 32, 64, 128, 24, 3, stride=2, padding=1),
    Conv("ResNet-18", "b3", 32, 128, 128, 12, 3, padding=1, uses=3),
    Conv("ResNet-18", "b3 shortcut", 32, 64, 128, 24, 1, stride=2),
    Conv("ResNet-18", "b4 first", 32, 128, 256, 12, 3, stride=2, padding=1),
    Conv("ResNet-18", "b4", 32, 256, 256, 6, 3, padding=1, uses=3),
    Conv("ResNet-18", "b4 shortcut", 32, 128, 256, 12, 1, stride=2),
    Conv("ResNet-18", "b5 first", 32, 256, 512, 6, 3, stride=2, padding=1),
    Conv("ResNet-18", "b5", 32, 512, 512, 3, 3, padding=1, uses=3),
    Conv("ResNet-18", "b5 shortcut", 32, 256, 512, 6, 1, stride=2),
    Conv("GoogLeNet", "b1", 32, 1, 64, 96, 7, stride=2, padding=3),
    Conv("GoogLeNet", "b2 a", 32, 64, 64, 24, 1),
    Conv("GoogLeNet", "b2 b", 32, 64, 192, 24, 3, padding=1),
    Conv("GoogLeNet", "3a p1", 32, 192, 64, 12, 1),
    Conv("GoogLeNet", "3a p2 a", 32, 192, 96, 12, 1),
    Conv("GoogLeNet", "3a p2 b", 32, 96, 128, 12, 3, padding=1),
    Conv("GoogLeNet", "3a p3 a", 32, 192, 16, 12, 1),
    Conv("GoogLeNet", "3a p3 b", 32, 16, 32, 12, 5, padding=2),
    Conv("GoogLeNet", "3a p4", 32, 192, 32, 12, 1),
)
QUICK_LAYERS = (LAYERS[0], LAYERS[5])


def _make_inputs(layer: Conv, device: str, dtype: torch.dtype, seed: int):
    def make() -> dict:
        gen = torch.Generator(device=device).manual_seed(seed)
        x = torch.randn(layer.batch, layer.cin, layer.size, layer.size, generator=gen, device=device)
        fan_in = layer.cin * layer.kernel**2
        w = torch.randn(layer.cout, layer.cin, layer.kernel, layer.kernel, generator=gen, device=device)
        b = torch.randn(layer.cout, generator=gen, device=device)
        return {
            "x": x.to(dtype).requires_grad_(),
            "w": (w / fan_in**0.5).to(dtype).requires_grad_(),
            "b": b.to(dtype).requires_grad_(),
        }

    return make


def _call(fn, layer: Conv, inputs: dict):
    return functools.partial(fn, inputs["x"], inputs["w"], inputs["b"], layer.stride, layer.padding)


def cases(device: str, quick: bool) -> list[Case]:
    if device.startswith("cuda"):
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    out = []
    for seed, layer in enumerate(QUICK_LAYERS if quick else LAYERS):
        impls = standard_impls(
            functools.partial(_call, F.conv2d, layer),
            functools.partial(_call, torch.nn.functional.conv2d, layer),
            device,
            python_timing=None if quick else PYTHON_TIMING,
            python_budget_s=PYTHON_BUDGET_S,
            kernel_op="conv2d",
        )
        out.append(
            Case(
                op="conv2d",
                shape=layer.label,
                device=device,
                dtype=torch.float32,
                make_inputs=_make_inputs(layer, device, torch.float32, seed),
                impls=impls,
                backward=True,
                params={
                    "net": layer.net,
                    "layer": layer.name,
                    "N": layer.batch,
                    "C": layer.cin,
                    "O": layer.cout,
                    "H": layer.size,
                    "kernel": layer.kernel,
                    "stride": layer.stride,
                    "padding": layer.padding,
                    "uses": layer.uses,
                    "gflop": layer.gflop,
                },
            )
        )
    return out
