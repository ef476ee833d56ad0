"""linear: y = act(x @ W^T + b) for 2-D x, with its backward.

Derivation (x: (M, K), W: (N, K), b: (N,), z = x W^T + b, y = act(z)):
  dz = dy * act'(y)          (activation_backward, from the saved output)
  dx = dz @ W                (linear_input_grad,  an (M, N) x (N, K) GEMM)
  dW = dz^T @ x              (linear_weight_grad, an (N, M) x (M, K) GEMM)
  db = sum_m dz[m, :]        (fused into the dW launch)

Gradient layouts are torch's (its mm backward): dx is column-major when x is (x.stride(0) == 1
and x.stride(1) == M: a transposed matrix), row-major otherwise; dW is row-major when W is
(W.stride(1) == 1, W.stride(0) == K), column-major otherwise (a transposed or sliced W). The
backends compute a column-major result as the transposed product where that keeps the fused
bias sum (dx), and store through transposed strides where it would not (dW).
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..backend import backend_for
from ._primitive import bilinear_tangent, primitive, rows_rule, weight_grad_tangent
from .activation import activation_backward, bilinear_jvp


@primitive
def linear(input: Tensor, weight: Tensor, bias: Optional[Tensor], act: str) -> Tensor:
    return backend_for(input).linear_forward(input, weight, bias, act)


@linear.register_fake
def _(input, weight, bias, act):
    return input.new_empty((input.shape[0], weight.shape[0]))


@primitive
def linear_input_grad(grad_output: Tensor, weight: Tensor, column_major: bool) -> Tensor:
    return backend_for(grad_output).linear_input_grad(grad_output, weight, column_major)


@linear_input_grad.register_fake
def _(grad_output, weight, column_major):
    return _empty(grad_output, grad_output.shape[0], weight.shape[1], column_major)


@primitive
def linear_weight_grad(grad_output: Tensor, input: Tensor, column_major: bool) -> tuple[Tensor, Tensor]:
    return backend_for(grad_output).linear_weight_grad(grad_output, input, column_major)


@linear_weight_grad.register_fake
def _(grad_output, input, column_major):
    n = grad_output.shape[1]
    return _empty(grad_output, n, input.shape[1], column_major), grad_output.new_empty((n,))


def _empty(like: Tensor, rows: int, cols: int, column_major: bool) -> Tensor:
    return like.new_empty((cols, rows)).t() if column_major else like.new_empty((rows, cols))


def column_major_grads(input: Tensor, weight: Tensor) -> tuple[bool, bool]:
    """Whether torch's mm backward gives the (M, K) input and the (N, K) weight of
    ``input @ weight.t()`` column-major gradients (FunctionsManual's mm_mat1_backward and
    mm_mat2_backward, the latter seeing ``weight.t()``)."""
    M, K = input.shape
    dx = input.stride(0) == 1 and input.stride(1) == M
    dw = not (weight.stride(1) == 1 and weight.stride(0) == K)
    return dx, dw


def _setup(ctx, inputs, output):
    input, weight, bias, act = inputs
    ctx.act = act
    ctx.has_bias = bias is not None
    ctx.save_for_backward(input, weight, output if act != "none" else None)


def _backward(ctx, grad):
    input, weight, output = ctx.saved_tensors
    if ctx.act != "none":
        grad = activation_backward(grad, output, ctx.act)
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    cm_x, cm_w = column_major_grads(input, weight)
    grad_input = linear_input_grad(grad, weight, cm_x) if need_x else None
    grad_weight = grad_bias = None
    if need_w or need_b:
        grad_weight, grad_bias = linear_weight_grad(grad, input, cm_w)
    return (
        grad_input,
        grad_weight if need_w else None,
        grad_bias if (need_b and ctx.has_bias) else None,
        None,
    )


linear.register_autograd(_backward, setup_context=_setup)


# double backward. linear_input_grad(g, w) = g @ w: gradients gg @ w^T = linear(gg, w) and
# g^T @ gg. linear_weight_grad(g, x) -> (g^T x, sum_m g): gradients x @ gdw^T + gdb =
# linear(x, gdw, gdb) for g and g @ gdw for x.
def _setup_input_grad(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], inputs[1])


def _backward_input_grad(ctx, gg):
    grad_output, weight = ctx.saved_tensors
    need_g, need_w = ctx.needs_input_grad[:2]
    d_g = linear(gg, weight, None, "none") if need_g else None
    d_w = linear_weight_grad(grad_output, gg, False)[0] if need_w else None
    return d_g, d_w, None


linear_input_grad.register_autograd(_backward_input_grad, setup_context=_setup_input_grad)


def _setup_weight_grad(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], inputs[1])


def _backward_weight_grad(ctx, g_dw, g_db):
    grad_output, input = ctx.saved_tensors
    need_g, need_x = ctx.needs_input_grad[:2]
    d_g = d_x = None
    if need_g:
        if g_dw is not None:
            d_g = linear(input, g_dw, g_db, "none")
        elif g_db is not None:
            d_g = g_db.expand_as(grad_output).clone()
    if need_x and g_dw is not None:
        d_x = linear_input_grad(grad_output, g_dw, False)
    return d_g, d_x, None


linear_weight_grad.register_autograd(_backward_weight_grad, setup_context=_setup_weight_grad)


@linear_input_grad.register_jvp
def _(args, output, tangents):
    grad_output, weight, column_major = args
    return bilinear_tangent(lambda g, w: linear_input_grad(g, w, column_major), grad_output, weight,
                            *tangents[:2])


@linear_weight_grad.register_jvp
def _(args, output, tangents):
    grad_output, input, column_major = args
    op = lambda g, x: linear_weight_grad(g, x, column_major)  # noqa: E731
    return weight_grad_tangent(op, lambda g, x: op(g, x)[0], grad_output, input, *tangents[:2], output[1])


@linear.register_jvp
def _(args, output, tangents):
    input, weight, bias, act = args
    return bilinear_jvp(lambda x, w: linear(x, w, None, "none"), input, weight, tangents, output, act)


# torch.vmap: the vmap dimension folds into the rows M, one launch for all samples; samples
# with weights of their own, and the weight gradient (a GEMM per sample), run one by one
linear.register_vmap(rows_rule(linear))
linear_input_grad.register_vmap(rows_rule(linear_input_grad))


# Flops for FlopCounterMode, as torch counts aten.addmm / aten.mm: 2 * M * N * K (bias aside).


@linear.register_flops
def _(input, weight, *args, out_shape):
    return 2 * input[0] * input[1] * out_shape[1]


@linear_input_grad.register_flops
def _(grad_output, weight, *args, out_shape):
    return 2 * grad_output[0] * grad_output[1] * weight[1]


@linear_weight_grad.register_flops
def _(grad_output, input, *args, out_shape):
    return 2 * grad_output[0] * grad_output[1] * input[1]


@linear_weight_grad.register_vmap
def _(info, in_dims, grad_output, input, column_major):
    return linear_weight_grad.per_sample(info, in_dims, grad_output, input, column_major)
