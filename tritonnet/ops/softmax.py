"""softmax / log_softmax over dim 1 of an (outer, C, inner) tensor: forward and backward as
custom ops.

Derivation (one row x, y = softmax(x), J = dy/dx = diag(y) - y y^T, J symmetric):
  softmax      dx = J dy = y * dy - y * sum(y * dy) = y * (dy - sum(dy * y))
  log_softmax  y = x - lse(x), d lse/dx = softmax(x) = exp(y)
               dx = dy - exp(y) * sum(dy)
Both use only the saved output y, never the input.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..backend import backend_for
from ._primitive import primitive, rows_rule


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


# double backward. softmax: dx = y (g - s), s = sum(g y); its gradient is softmax_backward(gg, y)
# for g (J is symmetric) and gg (g - s) - g sum(gg y) for y. log_softmax: dx = g - e^y S,
# S = sum(g); gradients gg - sum(gg e^y) for g and -gg e^y S for y. Over dim 1.
def _setup_grad(ctx, inputs, output):
    grad_output, out, ctx.log = inputs
    ctx.save_for_backward(grad_output, out)


def _backward_grad(ctx, gg):
    g, y = ctx.saved_tensors
    need_g, need_y = ctx.needs_input_grad[:2]
    d_g = d_y = None
    if ctx.log:
        e = y.exp()
        if need_g:
            d_g = gg - (gg * e).sum(1, keepdim=True)
        if need_y:
            d_y = -gg * e * g.sum(1, keepdim=True)
    else:
        if need_g:
            d_g = softmax_backward(gg, y, False)
        if need_y:
            d_y = gg * (g - (g * y).sum(1, keepdim=True)) - g * (gg * y).sum(1, keepdim=True)
    return d_g, d_y, None


softmax_backward.register_autograd(_backward_grad, setup_context=_setup_grad)


@softmax_backward.register_jvp
def _(args, output, tangents):
    g, y, log = args
    t_g, t_y = tangents[:2]
    t_g = t_g if t_g is not None else torch.zeros_like(g)
    t_y = t_y if t_y is not None else torch.zeros_like(y)
    if log:
        e = y.exp()
        return t_g - e * t_y * g.sum(1, keepdim=True) - e * t_g.sum(1, keepdim=True)
    s = (g * y).sum(1, keepdim=True)
    return t_y * (g - s) + y * (t_g - (t_g * y + g * t_y).sum(1, keepdim=True))


@softmax.register_jvp
def _(args, output, tangents):
    # softmax: dy = y * (dx - sum(y * dx)); log_softmax: dy = dx - sum(exp(y) * dx) (J dx,
    # not the backward's J^T: log_softmax's Jacobian is not symmetric), in torch ops
    t = tangents[0]
    if t is None:
        return None
    if args[1]:
        return t - (output.exp() * t).sum(1, keepdim=True)
    return output * (t - (output * t).sum(1, keepdim=True))


# torch.vmap: (B, outer, C, inner) is (B*outer, C, inner), one launch for all samples
softmax.register_vmap(rows_rule(softmax))
softmax_backward.register_vmap(rows_rule(softmax_backward, (0, 1)))
