"""relu, relu_, sigmoid, tanh with torch.nn.functional's signatures."""

from __future__ import annotations

import torch

from ..ops.activation import activation as _act
from ..ops.activation import activation_ as _act_
from ._utils import check_float

__all__ = ["relu", "relu_", "sigmoid", "tanh"]


def _apply(input, name, inplace=False):
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{name}(): argument 'input' must be Tensor, not {type(input).__name__}")
    check_float(f"{name}()", input)
    if not inplace:
        return _act(input, name)
    if torch.is_grad_enabled() and input.requires_grad:
        # autograd sees an out-of-place op plus a copy back: in-place semantics (the version
        # counter, the leaf check) as torch gives them, at the cost of one temporary
        return input.copy_(_act(input, name))
    _act_(input, name)
    return input


def relu(input, inplace: bool = False):
    return _apply(input, "relu", inplace)


def relu_(input):
    return _apply(input, "relu", True)


def sigmoid(input):
    return _apply(input, "sigmoid")


def tanh(input):
    return _apply(input, "tanh")
