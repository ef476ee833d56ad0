"""relu / sigmoid / tanh: forward and backward as custom ops.

Backward from the output y (see kernels/activation.py), so the forward may run in place.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..backend import backend_for
from ._primitive import bilinear_tangent, elementwise_rule, primitive

ACTIVATIONS = ("relu", "sigmoid", "tanh")


@primitive
def activation(input: Tensor, act: str) -> Tensor:
    return backend_for(input).activation_forward(input, act)


@activation.register_fake
def _(input, act):
    return torch.empty_like(input)


@torch.library.custom_op("tritonnet::activation_", mutates_args=("input",))
def activation_(input: Tensor, act: str) -> None:
    """In place, without autograd of its own (activation_inplace below adds it)."""
    backend_for(input).activation_forward(input, act, out=input)


@activation_.register_fake
def _(input, act):
    return None


@primitive
def activation_backward(grad_output: Tensor, output: Tensor, act: str) -> Tensor:
    return backend_for(output).activation_backward(grad_output, output, act)


@activation_backward.register_fake
def _(grad_output, output, act):
    return torch.empty_like(output)


def _setup(ctx, inputs, output):
    ctx.act = inputs[1]
    ctx.save_for_backward(output)


def _backward(ctx, grad):
    (output,) = ctx.saved_tensors
    return activation_backward(grad, output, ctx.act), None


activation.register_autograd(_backward, setup_context=_setup)


# torch.vmap: elementwise, so the batched tensors go in whole
activation.register_vmap(elementwise_rule(activation))
activation_backward.register_vmap(elementwise_rule(activation_backward, (0, 1)))


# ``act`` applied to ``input`` in place, differentiable, as torch's ``relu_``
activation_inplace = activation.inplace_variant(activation_)


def activation_jvp(tangent: Tensor, output: Tensor, act: str) -> Tensor:
    """act'(y) * tangent from the output y, in torch ops (differentiable, unlike the
    activation_backward primitive): relu passes it where y > 0 (NaN included, as torch's
    threshold_backward), sigmoid scales by y (1 - y), tanh by 1 - y^2."""
    if act == "relu":
        return torch.where(output <= 0, torch.zeros_like(tangent), tangent)
    if act == "sigmoid":
        return tangent * output * (1 - output)
    return tangent * (1 - output * output)


def bilinear_jvp(op, input, weight, tangents, output, act="none"):
    """The tangent of y = act(op(x, w) + b), an op linear in x and in w (conv2d,
    conv_transpose2d, linear: ``op(x, w)`` without bias or activation): op(dx, w) + op(x, dw) +
    db, then act'(y). Built from forward primitives and torch ops, so it is differentiable."""
    tx, tw, tb = tangents[:3]
    t = bilinear_tangent(op, input, weight, tx, tw)
    if tb is not None:
        tb = tb.view(-1, *([1] * (output.dim() - 2)))  # (C,) against (N, C, ...)
        t = tb.expand_as(output).clone() if t is None else t + tb
    if t is None or act == "none":
        return t
    return activation_jvp(t, output, act)


@activation.register_jvp
def _(args, output, tangents):
    return None if tangents[0] is None else activation_jvp(tangents[0], output, args[1])


def _slope_change(out: Tensor, act: str) -> Tensor:
    """d act'(y) / dy for sigmoid (act' = y (1 - y)) and tanh (act' = 1 - y^2)."""
    return 1 - 2 * out if act == "sigmoid" else -2 * out


# double backward: dx = g act'(y) is linear in g (its gradient: gg act'(y)) and, for sigmoid
# (act' = y (1 - y)) and tanh (act' = 1 - y^2), smooth in y; relu's act' is constant a.e.
def _setup_grad(ctx, inputs, output):
    grad_output, out, ctx.act = inputs
    ctx.save_for_backward(grad_output, out)


def _backward_grad(ctx, gg):
    grad_output, out = ctx.saved_tensors
    need_g, need_y = ctx.needs_input_grad[:2]
    d_g = activation_jvp(gg, out, ctx.act) if need_g else None
    d_y = gg * grad_output * _slope_change(out, ctx.act) if need_y and ctx.act != "relu" else None
    return d_g, d_y, None


activation_backward.register_autograd(_backward_grad, setup_context=_setup_grad)


@activation_backward.register_jvp
def _(args, output, tangents):
    grad_output, out, act = args
    t_g, t_y = tangents[:2]
    t = activation_jvp(t_g, out, act) if t_g is not None else None
    if t_y is not None and act != "relu":
        t_slope = grad_output * _slope_change(out, act) * t_y
        t = t_slope if t is None else t + t_slope
    return t
