"""Swap a model's layers between torch.nn and d2l_ext.nn.

:func:`convert` walks any ``torch.nn.Module`` and replaces every ``nn.Conv1d``,
``nn.Conv2d``, pooling module, ``nn.CrossEntropyLoss``, ``nn.RNN``/``GRU``/``LSTM``
and recurrent cell by its :mod:`d2l_ext.nn` equivalent; :func:`to_torch` does the
reverse. Each d2l_ext module is a subclass of the torch class that adds no state,
so a swapped module keeps the very same ``Parameter`` and buffer objects (an
optimizer built before the swap still updates them), the same hooks, the same
``state_dict`` keys and the same ``repr``; only ``forward`` changes.

Left as they are (so the model still runs, on torch's layer):

- subclasses of the torch classes (their ``forward`` may differ) and modules
  carrying ``torch.nn.utils.parametrize`` parametrizations (their class is a
  generated subclass), because only exact types are swapped;
- modules with complex parameters (the d2l_ext kernels are real-valued).

``d2l_ext.nn.RNN``/``GRU``/``LSTM`` reject ``PackedSequence`` inputs with a clear
error; convert a model that packs its sequences with ``rnn=False``.
"""

from __future__ import annotations

import copy

import torch

from . import nn as dnn

__all__ = ["convert", "to_torch", "TORCH_TO_D2L"]

_CONV = (dnn.Conv1d, dnn.Conv2d)
_POOL = (
    dnn.MaxPool1d,
    dnn.MaxPool2d,
    dnn.AvgPool1d,
    dnn.AvgPool2d,
    dnn.AdaptiveAvgPool1d,
    dnn.AdaptiveAvgPool2d,
    dnn.AdaptiveMaxPool1d,
    dnn.AdaptiveMaxPool2d,
)
_RNN = (dnn.RNN, dnn.GRU, dnn.LSTM, dnn.RNNCell, dnn.GRUCell, dnn.LSTMCell)
_LOSS = (dnn.CrossEntropyLoss,)

#: torch.nn class -> d2l_ext.nn class (each d2l_ext class's direct base).
TORCH_TO_D2L: dict[type[torch.nn.Module], type[torch.nn.Module]] = {
    cls.__mro__[1]: cls for cls in _CONV + _POOL + _RNN + _LOSS
}
_D2L_TO_TORCH = {v: k for k, v in TORCH_TO_D2L.items()}
_GROUPS = {"conv": _CONV, "pool": _POOL, "rnn": _RNN, "loss": _LOSS}


def _swappable(module: torch.nn.Module) -> bool:
    if torch.nn.utils.parametrize.is_parametrized(module):
        return False
    return not any(p.is_complex() for p in module.parameters(recurse=False))


def _swapped(module: torch.nn.Module, cls: type[torch.nn.Module]) -> torch.nn.Module:
    """A new ``cls`` instance sharing ``module``'s parameters, buffers, hooks and attributes."""
    new = cls.__new__(cls)
    new.__dict__.update(module.__dict__)
    for name in ("_parameters", "_buffers", "_modules"):
        new.__dict__[name] = dict(module.__dict__[name])
    return new


def _swap(model: torch.nn.Module, table: dict, inplace: bool) -> torch.nn.Module:
    if not inplace:
        model = copy.deepcopy(model)
    cls = table.get(type(model))
    if cls is not None and _swappable(model):
        return _swapped(model, cls)
    done: dict[int, torch.nn.Module] = {}  # a module shared by two parents stays shared
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            cls = None if child is None else table.get(type(child))
            if cls is not None and _swappable(child):
                if id(child) not in done:
                    done[id(child)] = _swapped(child, cls)
                parent._modules[name] = done[id(child)]
    return model


def convert(
    model: torch.nn.Module,
    *,
    conv: bool = True,
    pool: bool = True,
    rnn: bool = True,
    loss: bool = True,
    inplace: bool = True,
) -> torch.nn.Module:
    """Swap ``model``'s torch.nn conv, pooling, recurrent and cross-entropy
    modules for d2l_ext.nn ones carrying the same weights; return the model.

    ``conv``/``pool``/``rnn``/``loss`` pick the families to swap. With
    ``inplace=False`` the model is deep-copied first. A module that is itself a
    swappable layer is returned as its d2l_ext counterpart (a new object, same
    parameters). Outputs are unchanged up to floating point summation order.

    Example::

        model = d2l_ext.convert(torchvision_style_resnet())
    """
    chosen = {"conv": conv, "pool": pool, "rnn": rnn, "loss": loss}
    table = {
        torch_cls: cls for torch_cls, cls in TORCH_TO_D2L.items() if any(
            chosen[g] and cls in members for g, members in _GROUPS.items()
        )
    }
    return _swap(model, table, inplace)


def to_torch(model: torch.nn.Module, *, inplace: bool = True) -> torch.nn.Module:
    """The reverse of :func:`convert`: every d2l_ext.nn module becomes its
    torch.nn base class, sharing the same parameters; return the model."""
    return _swap(model, _D2L_TO_TORCH, inplace)
