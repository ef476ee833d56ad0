"""tritonnet.functional.linear: torch.nn.functional.linear's signature and errors."""

from __future__ import annotations

import torch

from ..ops.linear import linear as _linear_op
from ._utils import autocast_dtype, autocast_off, cast, check_float, check_same

__all__ = ["linear"]

ACTIVATIONS = ("none", "relu", "sigmoid", "tanh")


def linear(input, weight, bias=None, *, activation: str = "none"):
    """y = input @ weight^T + bias over the last dimension of ``input``, as
    ``torch.nn.functional.linear``; ``activation`` ("relu", "sigmoid", "tanh") is fused into
    the GEMM's epilogue (a tritonnet extension)."""
    if not isinstance(input, torch.Tensor) or not isinstance(weight, torch.Tensor):
        raise TypeError(
            f"linear(): input and weight must be Tensors, got {type(input).__name__} and "
            f"{type(weight).__name__}"
        )
    if activation not in ACTIVATIONS:
        raise ValueError(f"linear(): activation must be one of {ACTIVATIONS}, got {activation!r}")
    if weight.dim() != 2:
        raise RuntimeError(
            f"linear(): expected weight to be 2-D (out_features, in_features), got shape "
            f"{tuple(weight.shape)}"
        )
    if input.dim() == 0:
        raise RuntimeError("linear(): input must have at least 1 dimension, got a 0-d tensor")
    if input.shape[-1] != weight.shape[1]:
        rows = input.numel() // max(input.shape[-1], 1) if input.dim() > 1 else 1
        raise RuntimeError(
            f"mat1 and mat2 shapes cannot be multiplied ({rows}x{input.shape[-1]} and "
            f"{weight.shape[1]}x{weight.shape[0]}): input {tuple(input.shape)}, weight "
            f"{tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise RuntimeError(
            f"linear(): expected bias of shape ({weight.shape[0]},), got {tuple(bias.shape)}"
        )
    lowp = autocast_dtype(input)
    if lowp is not None:
        input, weight, bias = cast(input, lowp), cast(weight, lowp), cast(bias, lowp)
    check_float("linear(): input", input)
    check_same("linear()", input=input, weight=weight, bias=bias)

    # (*, K) -> (M, K): leading dimensions fold into the GEMM's M
    lead = input.shape[:-1]
    x2d = input.reshape(-1, input.shape[-1])
    with autocast_off(input):
        y = _linear_op(x2d, weight, bias, activation)
    return y.reshape(*lead, weight.shape[0])
