"""relu, relu_, sigmoid, tanh with torch.nn.functional's signatures."""

from __future__ import annotations

import torch

from ..ops.activation import activation as _act
from ..ops.activation import activation_inplace as _act_inplace
from ._utils import COMPLEX, check_float, check_tensors, overridable

__all__ = ["relu", "relu_", "sigmoid", "tanh"]

_RELU_NOT_IMPLEMENTED = (*COMPLEX, torch.bool)


def _apply(input, name, inplace=False):
    check_tensors(name, input=input)
    # torch's relu raises NotImplementedError for complex, and for bool from torch 2.14 on (a
    # RuntimeError, that one's base class, before)
    check_float(f"{name}()", input, _RELU_NOT_IMPLEMENTED if name == "relu" else COMPLEX)
    if not inplace:
        return _act(input, name)
    return _act_inplace(input, name)


@overridable
def relu(input, inplace: bool = False):
    return _apply(input, "relu", inplace)


@overridable
def relu_(input):
    return _apply(input, "relu", True)


@overridable
def sigmoid(input):
    return _apply(input, "sigmoid")


@overridable
def tanh(input):
    return _apply(input, "tanh")
