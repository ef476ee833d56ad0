"""tritonnet.functional.linear: torch.nn.functional.linear's signature and errors."""

from __future__ import annotations

import math

import torch

from ..ops.activation import activation as _activation
from ..ops.linear import linear as _linear_op
from ._utils import autocast_dtype, autocast_off, cast, check_float, check_same, check_tensors, overridable

__all__ = ["linear"]

ACTIVATIONS = ("none", "relu", "sigmoid", "tanh")


@overridable
def linear(input, weight, bias=None, *, activation: str = "none"):
    """y = input @ weight^T + bias over the last dimension of ``input``, as
    ``torch.nn.functional.linear``; ``activation`` ("relu", "sigmoid", "tanh") is fused into
    the GEMM's epilogue (a tritonnet extension)."""
    check_tensors("linear", ("bias",), input=input, weight=weight, bias=bias)
    if activation not in ACTIVATIONS:
        raise ValueError(f"linear(): activation must be one of {ACTIVATIONS}, got {activation!r}")
    if weight.dim() not in (1, 2):
        raise RuntimeError(
            f"linear(): expected weight to be 2-D (out_features, in_features) or 1-D, got shape "
            f"{tuple(weight.shape)}"
        )
    vector = weight.dim() == 1  # torch takes a 1-D weight: input @ weight, the last dim dropped
    if vector:
        if bias is not None and (bias.dim() != 0 or input.dim() == 2):
            # torch's addmm path, which a bias other than a scalar (or any bias with a 2-D
            # input) takes, needs a matrix
            raise RuntimeError(f"mat2 must be a matrix, got 1-D tensor: weight {tuple(weight.shape)}, "
                               f"bias {tuple(bias.shape)}, input {tuple(input.shape)}")
        weight = weight.unsqueeze(0)
    if input.dim() == 0:
        raise RuntimeError("linear(): input must have at least 1 dimension, got a 0-d tensor")
    if input.shape[-1] != weight.shape[1]:
        rows = input.numel() // max(input.shape[-1], 1) if input.dim() > 1 else 1
        raise RuntimeError(
            f"mat1 and mat2 shapes cannot be multiplied ({rows}x{input.shape[-1]} and "
            f"{weight.shape[1]}x{weight.shape[0]}): input {tuple(input.shape)}, weight "
            f"{tuple(weight.shape)}"
        )
    out_shape = (*input.shape[:-1], weight.shape[0])[: input.dim() - vector]
    M = math.prod(input.shape[:-1])
    # the bias is fused when it is (out_features,); any other shape that broadcasts to the
    # result (a scalar, (1,), (rows, N) of a 3-D input, a full one) is added after, as torch
    # broadcasts it; torch also takes a (1, N) bias for a 1-D input, unless N = 1
    late_bias = bias is not None and (vector or tuple(bias.shape) != (weight.shape[0],))
    row = input.dim() == 1 and not vector and weight.shape[0] != 1
    if late_bias and not (_broadcasts(bias.shape, out_shape)
                          or (row and tuple(bias.shape) == (1, *out_shape))):
        raise RuntimeError(
            f"linear(): expected bias of shape ({weight.shape[0]},) or one that broadcasts to the "
            f"result's {tuple(out_shape)}, got {tuple(bias.shape)}"
        )
    lowp = autocast_dtype(input)
    if lowp is not None:
        input, weight, bias = cast(input, lowp), cast(weight, lowp), cast(bias, lowp)
    check_float("linear(): input", input, (torch.bool,))  # torch's: NotImplementedError for bool
    check_same("linear()", input=input, weight=weight, bias=bias)

    # (*, K) -> (M, K): leading dimensions fold into the GEMM's M (reshape(-1, 0) would fail)
    x2d = input.reshape(M, input.shape[-1])
    with autocast_off(input):
        if not late_bias:
            return _linear_op(x2d, weight, bias, activation).reshape(out_shape)
        y = _linear_op(x2d, weight, None, "none")
        y = (y.reshape(out_shape) + bias).reshape(out_shape)
    return y if activation == "none" else _activation(y, activation)


def _broadcasts(shape, target) -> bool:
    try:
        return tuple(torch.broadcast_shapes(shape, target)) == tuple(target)
    except RuntimeError:
        return False
