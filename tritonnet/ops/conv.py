"""conv2d and conv_transpose2d: forward and backward written once over three primitives.

conv2d, y = conv(x, w) + b (stride S, padding P, dilation D, groups G):
  dx = conv2d_input_grad(dy, w)     the transposed convolution of dy
  dw, db = conv2d_weight_grad(dy, x)   dw[co,ci,kh,kw] = sum dy[n,co,oh,ow] x[n,ci,ih,iw];
                                    db (empty unless bias_grad) = sum of dy over (n, oh, ow)
With a fused activation y = act(z): dz = dy * act'(y) first (activation_backward).

conv_transpose2d, y = conv2d_input_grad(x, w) + b (the adjoint of conv2d), so
  dx = conv2d_forward(dy, w)        (the forward convolution of dy)
  dw = conv2d_weight_grad(x, dy)    (the roles of "output grad" and "input" swap)
  db = sum of dy over (n, h, w)
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ..backend import backend_for
from ..reference._common import conv_memory_format, conv_positions, in_format, vmapped
from ._primitive import bilinear_tangent, front, primitive, rows_rule, weight_grad_tangent
from .activation import activation_backward, bilinear_jvp


def _empty(like, shape, *operands):
    """A fake kernel's result: ``shape`` in ``like``'s dtype and device, laid out as both
    backends lay it out (conv_memory_format of ``operands``), so that torch.compile plans
    with the strides the real call returns."""
    return torch.empty(shape, dtype=like.dtype, device=like.device,
                       memory_format=conv_memory_format(*operands))


@primitive
def conv2d(
    input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: list[int], padding: list[int],
    dilation: list[int], groups: int, act: str,
) -> Tensor:
    return backend_for(input).conv2d_forward(input, weight, bias, stride, padding, dilation, groups, act)


@conv2d.register_fake
def _(input, weight, bias, stride, padding, dilation, groups, act):
    oh, ow = conv_positions(input.shape[2:], weight.shape[2:], stride, padding, dilation)
    return _empty(input, (input.shape[0], weight.shape[0], oh, ow), input, weight)


@primitive
def conv2d_input_grad(
    grad_output: Tensor, weight: Tensor, input_size: list[int], stride: list[int],
    padding: list[int], dilation: list[int], groups: int,
) -> Tensor:
    return backend_for(grad_output).conv2d_input_grad(
        grad_output, weight, input_size, stride, padding, dilation, groups
    )


@conv2d_input_grad.register_fake
def _(grad_output, weight, input_size, stride, padding, dilation, groups):
    shape = (grad_output.shape[0], weight.shape[1] * groups, input_size[-2], input_size[-1])
    return _empty(grad_output, shape, grad_output, weight)


@primitive
def conv2d_weight_grad(
    grad_output: Tensor, input: Tensor, weight_size: list[int], stride: list[int],
    padding: list[int], dilation: list[int], groups: int, bias_grad: bool = True,
) -> tuple[Tensor, Tensor]:
    return backend_for(grad_output).conv2d_weight_grad(
        grad_output, input, weight_size, stride, padding, dilation, groups, bias_grad
    )


@conv2d_weight_grad.register_fake
def _(grad_output, input, weight_size, stride, padding, dilation, groups, bias_grad=True):
    return (_empty(grad_output, tuple(weight_size), grad_output, input),
            grad_output.new_empty((weight_size[0] if bias_grad else 0,)))


def _setup(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, groups, act = inputs
    ctx.conv = (stride, padding, dilation, groups)
    ctx.act = act
    ctx.has_bias = bias is not None
    ctx.save_for_backward(input, weight, output if act != "none" else None)


def _in_conv_format(t, fmt):
    """``t`` in_format ``fmt``, the memory format of the convolution's input and weight, by
    which torch lays out the output gradient before its backward computes, and the gradients
    it returns. A no-op in training, where the output gradient has the output's layout and the
    kernels return that. It matters where the output gradient came in another layout (a
    ``.contiguous()`` of a channels_last result, a transposed 1-D gradient), and where size-1
    dims (one output channel; N = 1 with a 1x1 output) leave it contiguous in both formats,
    with strides that suggest the other: the kernels take their layouts from their operands.
    A torch.func sample keeps the batch's layout."""
    if t is None or vmapped(t):
        return t
    try:
        t.is_contiguous(memory_format=fmt)
    except RuntimeError:  # a legacy vmap BatchedTensor (jacobian(vectorize=True)) cannot say
        return t
    return in_format(t, fmt)


def _cropped(y, like):
    """y (N, C, OH, OW) cut to like's (OH', OW') <= (OH, OW), as a dense copy (torch's
    gradients are dense). A convolution of a transposed convolution's output can hold more
    windows than the transposed input has pixels: output_padding < dilation at stride 1 adds
    output rows and columns that reach none. Their windows take no part in the transposed
    convolution, so their gradients are the positions cut."""
    if y.shape[2:] == like.shape[2:]:
        return y
    return y[:, :, : like.shape[2], : like.shape[3]].clone(memory_format=torch.preserve_format)


def _backward(ctx, grad):
    input, weight, output = ctx.saved_tensors
    fmt = conv_memory_format(input, weight)
    if ctx.act != "none":
        grad = activation_backward(grad, output, ctx.act)  # in the output's layout
    else:
        grad = _in_conv_format(grad, fmt)
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    dx = dw = db = None
    if need_x:
        dx = conv2d_input_grad(grad, weight, list(input.shape), *ctx.conv)
    if need_w or need_b:
        # db only for a bias that wants it: a ResNet conv has none, and the sum costs the
        # weight-grad kernel a reduction in its loop
        bias_grad = bool(need_b and ctx.has_bias)
        dw, db = conv2d_weight_grad(grad, input, list(weight.shape), *ctx.conv, bias_grad)
    dx, dw = _in_conv_format(dx, fmt), _in_conv_format(dw if need_w else None, fmt)
    return dx, dw, db if (need_b and ctx.has_bias) else None, None, None, None, None, None


conv2d.register_autograd(_backward, setup_context=_setup)


# double backward. conv2d_input_grad(g, w) is conv_transpose2d(g, w) (the adjoint of conv2d in
# x): its gradients are conv2d(gg, w) and the weight gradient with g and gg in the roles of dy
# and x. conv2d_weight_grad(g, x) -> (dw, db) is linear in g and in x: the gradient of
# <gdw, dw> + <gdb, db> is conv2d(x, gdw) + gdb for g and conv2d_input_grad(g, gdw) for x.
def _setup_input_grad(ctx, inputs, output):
    grad_output, weight, input_size, *conv = inputs
    ctx.conv = conv
    ctx.save_for_backward(grad_output, weight)


def _backward_input_grad(ctx, gg):
    grad_output, weight = ctx.saved_tensors
    need_g, need_w = ctx.needs_input_grad[:2]
    # (gg has conv_transpose2d's output size: with output_padding it can hold more windows)
    d_g = _cropped(conv2d(gg, weight, None, *ctx.conv, "none"), grad_output) if need_g else None
    d_w = None
    if need_w:
        d_w = conv2d_weight_grad(grad_output, gg, list(weight.shape), *ctx.conv, False)[0]
    return d_g, d_w, None, None, None, None, None


conv2d_input_grad.register_autograd(_backward_input_grad, setup_context=_setup_input_grad)


def _setup_weight_grad(ctx, inputs, output):
    grad_output, input, weight_size, *conv, bias_grad = inputs
    ctx.conv = conv
    ctx.save_for_backward(grad_output, input)


def _backward_weight_grad(ctx, g_dw, g_db):
    grad_output, input = ctx.saved_tensors
    need_g, need_x = ctx.needs_input_grad[:2]
    d_g = d_x = None
    if need_g:
        # (conv_transpose2d's weight gradient passes its output gradient as input: see _cropped)
        if g_dw is not None:
            d_g = _cropped(conv2d(input, g_dw, None, *ctx.conv, "none"), grad_output)
        if g_db is not None and g_db.numel():
            db = g_db.view(1, -1, 1, 1).to(grad_output.dtype)
            d_g = db.expand_as(grad_output).clone() if d_g is None else d_g + db
    if need_x and g_dw is not None:
        d_x = conv2d_input_grad(grad_output, g_dw, list(input.shape), *ctx.conv)
    return d_g, d_x, None, None, None, None, None, None


conv2d_weight_grad.register_autograd(_backward_weight_grad, setup_context=_setup_weight_grad)


# their jvps: each is bilinear in (gradient, other operand)
@conv2d_input_grad.register_jvp
def _(args, output, tangents):
    grad_output, weight, *rest = args
    return bilinear_tangent(lambda g, w: conv2d_input_grad(g, w, *rest), grad_output, weight, *tangents[:2])


@conv2d_weight_grad.register_jvp
def _(args, output, tangents):
    grad_output, input, weight_size, stride, padding, dilation, groups, bias_grad = args
    conv = (weight_size, stride, padding, dilation, groups)
    return weight_grad_tangent(lambda g, x: conv2d_weight_grad(g, x, *conv, bias_grad),
                               lambda g, x: conv2d_weight_grad(g, x, *conv, False)[0],
                               grad_output, input, *tangents[:2], output[1])


@conv2d.register_jvp
def _(args, output, tangents):
    input, weight, bias, stride, padding, dilation, groups, act = args
    return bilinear_jvp(lambda x, w: conv2d(x, w, None, stride, padding, dilation, groups, "none"),
                        input, weight, tangents, output, act)


# torch.vmap (per-sample gradients): the vmap dimension B folds into the batch N, so all
# samples are one launch. Samples with weights of their own (B models) run one by one.
conv2d.register_vmap(rows_rule(conv2d))
conv2d_input_grad.register_vmap(rows_rule(conv2d_input_grad, sizes=(2,)))


@conv2d_weight_grad.register_vmap
def _(info, in_dims, grad_output, input, weight_size, stride, padding, dilation, groups, bias_grad=True):
    """Each sample's weight gradient: the samples become groups. dy (B, N, O, ...) is read as
    (N, B*O, ...) and x (B, N, C, ...) as (N, B*C, ...); a convolution with B*groups groups
    then gives the (B*O, Cg, KH, KW) gradients of the B samples in one launch."""
    B = info.batch_size
    dy, x = front(grad_output, in_dims[0], B), front(input, in_dims[1], B)
    dy = dy.transpose(0, 1).flatten(1, 2)
    x = x.transpose(0, 1).flatten(1, 2)
    dw, db = conv2d_weight_grad.op(dy, x, [B * weight_size[0], *weight_size[1:]], stride, padding,
                                   dilation, B * groups, bias_grad)
    db = db.unflatten(0, (B, weight_size[0])) if bias_grad else db.new_empty((B, 0))
    return (dw.unflatten(0, (B, weight_size[0])), db), (0, 0)


@primitive
def conv_transpose2d(
    input: Tensor, weight: Tensor, bias: Optional[Tensor], output_size: list[int],
    stride: list[int], padding: list[int], dilation: list[int], groups: int,
) -> Tensor:
    # the bias goes into the kernel's epilogue: one rounding, no second pass over y
    return backend_for(input).conv2d_input_grad(input, weight, output_size, stride, padding, dilation,
                                                groups, bias)


@conv_transpose2d.register_fake
def _(input, weight, bias, output_size, stride, padding, dilation, groups):
    return _empty(input, (input.shape[0], weight.shape[1] * groups, output_size[-2], output_size[-1]),
                  input, weight)


def _setup_t(ctx, inputs, output):
    input, weight, bias, output_size, stride, padding, dilation, groups = inputs
    ctx.conv = (stride, padding, dilation, groups)
    ctx.has_bias = bias is not None
    ctx.save_for_backward(input, weight)


def _backward_t(ctx, grad):
    input, weight = ctx.saved_tensors
    fmt = conv_memory_format(input, weight)
    grad = _in_conv_format(grad, fmt)
    stride, padding, dilation, groups = ctx.conv
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    dx = dw = db = None
    if input.numel() == 0 or grad.numel() == 0:
        # an empty batch, no channels or an empty output: nothing to sum (and with no input
        # pixels the output can be narrower than one window, or be empty itself, which the
        # convolutions below cannot take)
        dx, dw = torch.zeros_like(input), torch.zeros_like(weight)
        db = grad.sum((0, 2, 3)) if ctx.has_bias else None
        return dx if need_x else None, dw if need_w else None, db if need_b else None, *[None] * 5
    if need_x:
        dx = _cropped(conv2d(grad, weight, None, stride, padding, dilation, groups, "none"), input)
    if need_w or need_b:
        # weight (C_in_t, C_out_t/G, KH, KW) plays conv2d's (C_out, Cg, KH, KW): "input" is dy
        dw, _ = conv2d_weight_grad(input, grad, list(weight.shape), stride, padding, dilation, groups,
                                   False)
        db = grad.sum((0, 2, 3)) if ctx.has_bias else None
    dx, dw = _in_conv_format(dx, fmt), _in_conv_format(dw if need_w else None, fmt)
    return dx, dw, db if need_b else None, None, None, None, None, None


conv_transpose2d.register_autograd(_backward_t, setup_context=_setup_t)


@conv_transpose2d.register_jvp
def _(args, output, tangents):
    input, weight, bias, output_size, stride, padding, dilation, groups = args
    return bilinear_jvp(
        lambda x, w: conv_transpose2d(x, w, None, output_size, stride, padding, dilation, groups),
        input, weight, tangents, output)


conv_transpose2d.register_vmap(rows_rule(conv_transpose2d))


# Flops for FlopCounterMode, counted as torch counts aten.convolution and its backward (two
# per multiply-add, bias and padding aside): every element of the output-side tensor (the
# output; for the gradients and the transposed conv, the grad_output / the input that plays
# it) meets every weight of its group, N * prod(spatial) * C_out * Cg * KH * KW of them.


def _conv_flops(out_side, weight_shape) -> int:
    return 2 * out_side[0] * math.prod(out_side[2:]) * math.prod(weight_shape)


@conv2d.register_flops
def _(input, weight, *args, out_shape):
    return _conv_flops(out_shape, weight)


@conv2d_input_grad.register_flops
def _(grad_output, weight, *args, out_shape):
    return _conv_flops(grad_output, weight)


@conv2d_weight_grad.register_flops
def _(grad_output, input, weight_size, *args, out_shape):
    return _conv_flops(grad_output, weight_size)


@conv_transpose2d.register_flops
def _(input, weight, *args, out_shape):
    return _conv_flops(input, weight)
