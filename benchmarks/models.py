"""Benchmark of a training step of the book's networks: d2l_ext layers vs torch.nn's.

One step's forward and backward (``loss = cross_entropy(model(x), y)``, then the
gradients of every parameter; the SGD update is the same code on both sides and
is left out), float32, random images and labels:

- ``lenet_relu`` and ``lenet`` (the book's sigmoid + average pooling) at 28 x 28,
  batch 128 (the book's batch size);
- ``resnet18`` at 96 x 96, batch 16.

The columns run the same model object's parameters: "native" and "python" the
``d2l_ext.models`` network (d2l_ext.nn layers, on the native kernels and on the
Python fallback), "torch" a twin whose layers are swapped back to torch.nn's
(:func:`d2l_ext.to_torch`) sharing the very same parameter tensors. ``--quick``
keeps ``lenet_relu`` only.
"""

from __future__ import annotations

import copy

import torch

import d2l_ext
from d2l_ext.models import VISION_MODELS, xavier_init

from .common import Case, Timing, standard_impls

OP = "models"
STEP_TIMING = Timing(min_run_time=3.0, max_run_time=6.0, rounds=6)
PYTHON_TIMING = Timing(min_run_time=1.0, max_run_time=3.0)
PYTHON_BUDGET_S = 15.0
NETS = (("lenet_relu", 128), ("lenet", 128), ("resnet18", 16))


def _shared_twin(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of the module tree that shares every parameter and buffer tensor."""
    twin = copy.copy(module)
    twin._modules = {name: None if m is None else _shared_twin(m) for name, m in module._modules.items()}
    twin._parameters = dict(module._parameters)
    twin._buffers = dict(module._buffers)
    return twin


def _inputs(name: str, batch: int, device: str):
    def make() -> dict:
        spec = VISION_MODELS[name]
        torch.manual_seed(0)
        model = spec.factory().to(device)
        model.apply(xavier_init)
        model.train()
        x = torch.rand(batch, 1, spec.image_size, spec.image_size, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        return {"model": model, "x": x, "y": y, "params": list(model.parameters())}

    return make


def _ours(inputs: dict):
    model, x, y = inputs["model"], inputs["x"], inputs["y"]
    loss_fn = d2l_ext.nn.CrossEntropyLoss()
    return lambda: loss_fn(model(x), y)


def _torch(inputs: dict):
    twin = d2l_ext.to_torch(_shared_twin(inputs["model"]))
    x, y = inputs["x"], inputs["y"]
    loss_fn = torch.nn.CrossEntropyLoss()
    return lambda: loss_fn(twin(x), y)


def cases(device: str, quick: bool) -> list[Case]:
    nets = NETS[:1] if quick else NETS
    out = []
    for name, batch in nets:
        size = VISION_MODELS[name].image_size
        out.append(Case(
            op=f"{name} step", shape=f"N={batch} {size}x{size}", device=device, dtype=torch.float32,
            make_inputs=_inputs(name, batch, device),
            impls=standard_impls(_ours, _torch, device, python_timing=None if quick else PYTHON_TIMING,
                                 python_budget_s=PYTHON_BUDGET_S),
            backward=True, timing=STEP_TIMING,
            # float32, ~20 layers of differently ordered sums: the loss agrees to ~1e-6 relative
            rtol=1e-4,
            params={"model": name, "batch": batch, "image_size": size},
        ))
    return out
