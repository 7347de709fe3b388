"""Which side runs the ops: the compiled kernels ("native") or the pure-Python fallback ("python").

The choice starts from ``D2L_EXT_BACKEND``: unset (or ``auto``) means native when
the compiled library loaded, else python with one warning; ``python`` forces the
fallback; ``native`` makes a missing build an error at import time.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import torch

from . import _ops

_VALID = ("native", "python")
_requested = os.environ.get("D2L_EXT_BACKEND", "auto").strip().lower() or "auto"
if _requested not in _VALID + ("auto",):
    raise ValueError(f"D2L_EXT_BACKEND must be 'native', 'python' or 'auto', got {_requested!r}")
if _requested == "native" and not _ops.LOADED:
    raise ImportError(
        "D2L_EXT_BACKEND=native but the compiled library d2l_ext._C could not be loaded "
        f"({_ops.LOAD_ERROR}). Build it with `pip install --no-build-isolation .`."
    )
if _requested == "auto" and not _ops.LOADED:
    warnings.warn(
        "d2l_ext: the compiled library d2l_ext._C could not be loaded "
        f"({_ops.LOAD_ERROR}); every op runs its pure-Python fallback. "
        "Build it with `pip install --no-build-isolation .` or set D2L_EXT_BACKEND=python "
        "to silence this warning.",
        RuntimeWarning,
        stacklevel=3,
    )

_current = "python" if _requested == "python" or not _ops.LOADED else "native"


def backend() -> str:
    """The side the ops run on now: ``"native"`` or ``"python"``."""
    return _current


def native_available() -> bool:
    """Whether the compiled library loaded (whatever the current backend)."""
    return _ops.LOADED


def has_cuda_kernels() -> bool:
    """Whether the compiled library carries CUDA kernels (it was built with a toolkit)."""
    return _ops.has_kernels_for("cuda")


def set_backend(name: str) -> None:
    """Switch every op to ``"native"`` or ``"python"`` for this process."""
    global _current
    if name not in _VALID:
        raise ValueError(f"backend must be one of {_VALID}, got {name!r}")
    if name == "native" and not _ops.LOADED:
        raise RuntimeError(f"the compiled library d2l_ext._C is not loaded ({_ops.LOAD_ERROR})")
    _current = name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run a block on one backend: ``with d2l_ext.use_backend("python"): ...``."""
    previous = _current
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


_warned_devices: set[str] = set()


def native_for(t: torch.Tensor) -> bool:
    """Whether ops on ``t`` should call the native kernels (else the fallback).

    A CUDA tensor with a library built without CUDA kernels runs the fallback,
    with one warning per device type.
    """
    if _current != "native":
        return False
    kind = t.device.type
    if kind == "meta" or kind in _ops.KERNEL_DEVICE_TYPES:
        return True
    if kind not in _warned_devices:
        _warned_devices.add(kind)
        warnings.warn(
            f"d2l_ext was built without {kind} kernels; {kind} tensors use the Python fallback.",
            RuntimeWarning,
            stacklevel=3,
        )
    return False
