"""d2l_ext: the layers of *Dive into Deep Learning* as PyTorch C++/CUDA extension ops.

``d2l_ext.functional`` mirrors ``torch.nn.functional``, ``d2l_ext.nn`` mirrors
``torch.nn``, and ``d2l_ext.reference`` holds the pure-Python fallback of every
op. ``d2l_ext.backend()`` says which side runs: "native" or "python".
"""

from . import functional, nn, reference
from ._backend import backend, has_cuda_kernels, native_available, set_backend, use_backend
from .convert import convert, to_torch

__version__ = "0.1.0"

__all__ = [
    "backend",
    "convert",
    "functional",
    "has_cuda_kernels",
    "native_available",
    "nn",
    "reference",
    "set_backend",
    "to_torch",
    "use_backend",
]
