"""Activation primitives in plain PyTorch (twins of kernels/activation.py)."""

from __future__ import annotations

__all__ = ["activation_forward", "activation_backward"]

import torch

from ._common import acc_dtype, activation


def activation_forward(input, act, out=None):
    y = activation(input.to(acc_dtype(input.dtype)), act)
    if out is None:
        out = torch.empty_like(input)  # the layout the kernels give (and torch's ops)
    return out.copy_(y)


def activation_backward(grad_output, output, act):
    acc = acc_dtype(output.dtype)
    dy, y = grad_output.to(acc), output.to(acc)
    if act == "relu":
        # torch's threshold_backward: zero where y <= 0, so at a NaN output dy passes on
        dx = torch.where(y <= 0, dy.new_zeros(()), dy)
    elif act == "sigmoid":
        dx = dy * y * (1 - y)
    elif act == "tanh":
        dx = dy * (1 - y * y)
    else:
        raise ValueError(f"unknown activation {act!r}")
    return torch.empty_like(output).copy_(dx)
