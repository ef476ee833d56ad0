"""softmax / log_softmax over dim 1 of an (outer, C, inner) tensor: forward and backward as
custom ops.

Derivation (one row x, y = softmax(x), J = dy/dx = diag(y) - y y^T, J symmetric):
  softmax      dx = J dy = y * dy - y * sum(y * dy) = y * (dy - sum(dy * y))
  log_softmax  y = x - lse(x), d lse/dx = softmax(x) = exp(y)
               dx = dy - exp(y) * sum(dy)
Both use only the saved output y, never the input.
"""

from __future__ import annotations

from torch import Tensor

from ..backend import backend_for
from ._primitive import front, primitive


@primitive
def softmax(input: Tensor, log: bool) -> Tensor:
    return backend_for(input).softmax_forward(input, log)


# results and gradients are contiguous whatever the input's layout, as torch's
@softmax.register_fake
def _(input, log):
    return input.new_empty(input.shape)


@primitive
def softmax_backward(grad_output: Tensor, output: Tensor, log: bool) -> Tensor:
    return backend_for(output).softmax_backward(grad_output, output, log)


@softmax_backward.register_fake
def _(grad_output, output, log):
    return output.new_empty(output.shape)


def _setup(ctx, inputs, output):
    ctx.log = inputs[1]
    ctx.save_for_backward(output)


def _backward(ctx, grad):
    (output,) = ctx.saved_tensors
    return softmax_backward(grad, output, ctx.log), None


softmax.register_autograd(_backward, setup_context=_setup)


# torch.vmap: (B, outer, C, inner) is (B*outer, C, inner), one launch for all samples
@softmax.register_vmap
def _(info, in_dims, input, log):
    x = front(input, in_dims[0], info.batch_size)
    return softmax.op(x.flatten(0, 1), log).unflatten(0, x.shape[:2]), 0


@softmax_backward.register_vmap
def _(info, in_dims, grad_output, output, log):
    B = info.batch_size
    dy, y = front(grad_output, in_dims[0], B), front(output, in_dims[1], B)
    return softmax_backward.op(dy.flatten(0, 1), y.flatten(0, 1), log).unflatten(0, y.shape[:2]), 0
