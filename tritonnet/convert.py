"""convert(model): swap the torch.nn layers of any model for tritonnet's, in place.

tritonnet's modules subclass torch.nn's and keep their parameters and state, so a swap is a
change of class: no copy, no new parameters, state_dict keys unchanged.
"""

from __future__ import annotations

import torch
from torch.nn.utils import parametrize

from . import nn as tnn


def _mapping() -> dict[type, type]:
    # every tritonnet.nn class whose direct base is the torch.nn class of the same name
    out = {}
    for name in dir(tnn):
        cls = getattr(tnn, name)
        base = getattr(torch.nn, name, None)
        if isinstance(cls, type) and isinstance(base, type) and cls.__bases__ == (base,):
            out[base] = cls
    return out


def _reparametrized(cls: type, base: type) -> type:
    """torch.nn.utils.parametrize puts a parametrized module in a class of its own, made for
    it: ``Parametrized<Name>``, a subclass of the module's class whose properties compute the
    parametrized tensors (weight_norm, spectral_norm, orthogonal, ...). The same class on
    tritonnet's ``base``: the same properties and methods, so that parametrize's functions
    (``remove_parametrizations`` restores ``__bases__[0]``, ``type_before_parametrizations``)
    keep working and now see the tritonnet class."""
    namespace = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
    return type(cls.__name__, (base,), namespace)


def convert(model: torch.nn.Module) -> torch.nn.Module:
    """Replace, in place, every module whose type is exactly a torch.nn class that tritonnet
    implements (subclasses of those are left alone), parametrized ones included (their
    parametrizations kept); returns ``model``."""
    mapping = _mapping()
    for module in model.modules():
        cls = type(module)
        new = mapping.get(cls)
        if new is not None:
            module.__class__ = new
        elif parametrize.is_parametrized(module) and len(cls.__bases__) == 1 and cls.__bases__[0] in mapping:
            module.__class__ = _reparametrized(cls, mapping[cls.__bases__[0]])
    return model
