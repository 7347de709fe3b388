"""Benchmarks of d2l_ext's ops against torch's and against the Python fallback.

Run ``python -m benchmarks [op ...] [--device auto|cpu|cuda|all] [--quick] [--out DIR]``.

Each op has a module here exposing ``OP`` (its name) and
``cases(device, quick) -> list[benchmarks.common.Case]``; a new op adds its
module and one line to :data:`OPS`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# The registered op benchmarks: module names inside this package, in run order.
OPS: tuple[str, ...] = (
    "cross_entropy",
    "pooling",
    "conv",
    "rnn",
    "models",
)


def load(name: str) -> ModuleType:
    """The benchmark module of the registered op ``name``."""
    if name not in OPS:
        raise KeyError(f"unknown benchmark {name!r}; registered: {', '.join(OPS)}")
    return importlib.import_module(f"{__name__}.{name}")
