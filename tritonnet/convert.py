"""convert(model): swap the torch.nn layers of any model for tritonnet's, in place.

tritonnet's modules subclass torch.nn's and keep their parameters and state, so a swap is a
change of class: no copy, no new parameters, state_dict keys unchanged.
"""

from __future__ import annotations

import torch

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


def convert(model: torch.nn.Module) -> torch.nn.Module:
    """Replace, in place, every module whose type is exactly a torch.nn class that tritonnet
    implements (subclasses of those are left alone); returns ``model``."""
    mapping = _mapping()
    for module in model.modules():
        new = mapping.get(type(module))
        if new is not None:
            module.__class__ = new
    return model
