"""relu / sigmoid / tanh: forward and backward as custom ops.

Backward from the output y (see kernels/activation.py), so the forward may run in place.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..backend import backend_for
from ._primitive import elementwise_rule, primitive

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
