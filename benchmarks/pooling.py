"""Benchmark of d2l_ext's 2-D pooling against ``torch.nn.functional``'s.

The pooling layers of the book's CNNs, float32, random normal inputs
(N, C, H, W):

- LeNet (28 x 28, batch 256): ``avg_pool2d`` 2/2 on (256, 6, 28, 28) and on
  (256, 16, 10, 10);
- AlexNet (224 x 224, batch 32): ``max_pool2d`` 3/2 on (32, 96, 54, 54),
  (32, 256, 26, 26) and (32, 256, 12, 12);
- ResNet-18 stem (96 x 96, batch 32): ``max_pool2d`` 3/2 padding 1 on
  (32, 64, 48, 48);
- global average pooling, ``adaptive_avg_pool2d(x, 1)``: ResNet-18 at 96 on
  (32, 512, 3, 3) and GoogLeNet at 96 on (32, 1024, 3, 3);
- the AlexNet first pool and the ResNet stem again with channels-last inputs
  (``x.to(memory_format=torch.channels_last)``; the label says so).

On CUDA also bfloat16 for the AlexNet first pool and the ResNet stem. Each
shape is timed fwd+bwd (``y = pool(x)``, then ``torch.autograd.grad(y, x,
grad_outputs=g)`` with a fixed random ``g`` shaped like ``y``, as the harness
does for non-scalar outputs) and forward only. ``--quick`` keeps the first
LeNet pool and the ResNet stem, fwd+bwd only.

Each case's ``params`` (JSON only) hold the window, the layout and
``input_bytes`` / ``output_bytes``; on CUDA also ``copy_ms`` / ``copy_GBps``,
a device-to-device copy of ``input_bytes`` (see :func:`copy_bandwidth`), so a
report can state a time as a share of copy bandwidth: the forward must read
the input and write the output at least once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import torch
from torch.utils import benchmark as tbench

import d2l_ext.functional as F

from .common import Case, Timing, standard_impls

OP = "pooling"
# The Python fallback (unfold windows, per-window loops for adaptive pooling)
# gets a shorter timing, and no timing at all when five calls would take
# longer than this (seconds).
PYTHON_TIMING = Timing(min_run_time=0.5, max_run_time=4.0)
PYTHON_BUDGET_S = 10.0


@dataclass(frozen=True)
class Pool:
    """One pooling layer: which function, on which input, with which window."""

    net: str  # where the layer comes from, for the label
    kind: str  # "max", "avg" or "gap" (adaptive_avg_pool2d(x, 1))
    shape: tuple[int, int, int, int]  # (N, C, H, W)
    kernel: int = 0
    stride: int = 0
    padding: int = 0
    channels_last: bool = False

    @property
    def function(self) -> str:
        return {"max": "max_pool2d", "avg": "avg_pool2d", "gap": "adaptive_avg_pool2d"}[self.kind]

    @property
    def label(self) -> str:
        window = "global" if self.kind == "gap" else f"{self.kernel}/{self.stride}"
        if self.padding:
            window += f" pad {self.padding}"
        dims = "x".join(str(v) for v in self.shape)
        layout = " channels_last" if self.channels_last else ""
        return f"{self.net} {window} {dims}{layout}"

    def args(self) -> tuple:
        if self.kind == "gap":
            return (1,)
        return (self.kernel, self.stride, self.padding)

    def output_shape(self) -> tuple[int, int, int, int]:
        n, c, h, w = self.shape
        if self.kind == "gap":
            return (n, c, 1, 1)

        def size(v: int) -> int:
            return (v + 2 * self.padding - self.kernel) // self.stride + 1

        return (n, c, size(h), size(w))


LENET_1 = Pool("LeNet", "avg", (256, 6, 28, 28), 2, 2)
LENET_2 = Pool("LeNet", "avg", (256, 16, 10, 10), 2, 2)
ALEXNET_1 = Pool("AlexNet", "max", (32, 96, 54, 54), 3, 2)
ALEXNET_2 = Pool("AlexNet", "max", (32, 256, 26, 26), 3, 2)
ALEXNET_3 = Pool("AlexNet", "max", (32, 256, 12, 12), 3, 2)
RESNET_STEM = Pool("ResNet-18", "max", (32, 64, 48, 48), 3, 2, 1)
RESNET_GAP = Pool("ResNet-18", "gap", (32, 512, 3, 3))
GOOGLENET_GAP = Pool("GoogLeNet", "gap", (32, 1024, 3, 3))

POOLS = (
    LENET_1,
    LENET_2,
    ALEXNET_1,
    ALEXNET_2,
    ALEXNET_3,
    RESNET_STEM,
    RESNET_GAP,
    GOOGLENET_GAP,
    replace(ALEXNET_1, channels_last=True),
    replace(RESNET_STEM, channels_last=True),
)
QUICK_POOLS = (LENET_1, RESNET_STEM)
CUDA_BF16_POOLS = (ALEXNET_1, RESNET_STEM)


def copy_bandwidth(device: str, nbytes: int) -> dict[str, float]:
    """Time ``dst.copy_(src)`` of ``nbytes`` on ``device`` (torch.utils.benchmark,
    median): ``copy_ms`` and ``copy_GBps``, the bytes read plus written
    (``2 * nbytes``) per second - the bandwidth a memory-bound op can hope for."""
    n = max(1, nbytes // 4)
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    timer = tbench.Timer(
        stmt="dst.copy_(src)",
        globals={"dst": dst, "src": src},
        num_threads=torch.get_num_threads(),
    )
    m = timer.adaptive_autorange(min_run_time=0.2, max_run_time=1.0)
    return {"copy_ms": m.median * 1e3, "copy_GBps": 2 * n * 4 / m.median / 1e9}


def _make_inputs(pool: Pool, device: str, dtype: torch.dtype, seed: int):
    def make() -> dict:
        gen = torch.Generator(device=device).manual_seed(seed)
        x = torch.randn(pool.shape, generator=gen, device=device).to(dtype)
        if pool.channels_last:
            x = x.to(memory_format=torch.channels_last)
        return {"x": x.requires_grad_()}

    return make


def _d2l(pool: Pool, inputs: dict):
    return functools.partial(getattr(F, pool.function), inputs["x"], *pool.args())


def _torch(pool: Pool, inputs: dict):
    fn = getattr(torch.nn.functional, pool.function)
    return functools.partial(fn, inputs["x"], *pool.args())


def _params(pool: Pool, device: str, dtype: torch.dtype) -> dict:
    size = torch.empty((), dtype=dtype).element_size()
    n_in = size * torch.Size(pool.shape).numel()
    params = {
        "function": pool.function,
        "net": pool.net,
        "N": pool.shape[0],
        "C": pool.shape[1],
        "H": pool.shape[2],
        "W": pool.shape[3],
        "kernel": pool.kernel or None,
        "stride": pool.stride or None,
        "padding": pool.padding,
        "output_size": 1 if pool.kind == "gap" else None,
        "memory_format": "channels_last" if pool.channels_last else "contiguous",
        "input_bytes": n_in,
        "output_bytes": size * torch.Size(pool.output_shape()).numel(),
    }
    if device.startswith("cuda"):
        params.update(copy_bandwidth(device, n_in))
    return params


def cases(device: str, quick: bool) -> list[Case]:
    configs = [(p, torch.float32) for p in (QUICK_POOLS if quick else POOLS)]
    if device.startswith("cuda") and not quick:
        configs += [(p, torch.bfloat16) for p in CUDA_BF16_POOLS]
    out = []
    for seed, (pool, dtype) in enumerate(configs):
        params = _params(pool, device, dtype)
        for backward in (True,) if quick else (True, False):
            out.append(
                Case(
                    op=pool.function,
                    shape=pool.label,
                    device=device,
                    dtype=dtype,
                    make_inputs=_make_inputs(pool, device, dtype, seed=seed),
                    impls=standard_impls(
                        functools.partial(_d2l, pool),
                        functools.partial(_torch, pool),
                        device,
                        python_timing=None if quick else PYTHON_TIMING,
                        python_budget_s=PYTHON_BUDGET_S,
                    ),
                    backward=backward,
                    params=params,
                )
            )
    return out
