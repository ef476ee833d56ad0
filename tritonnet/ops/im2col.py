"""unfold and fold: each the other's backward, written once over two primitives.

unfold is linear, cols = U x, with U a 0/1 gather matrix; fold is its adjoint U^T (it adds each
column entry back onto the pixel it was read from). Hence
  unfold:  dx    = U^T dcols = fold_forward(dcols)
  fold:    dcols = U dy      = unfold_forward(dy)
Each backward calls the other custom op, so double backward works too.
"""

from __future__ import annotations

from torch import Tensor

from ..backend import backend_for
from ._primitive import linear_jvp, primitive, rows_rule

__all__ = ["unfold", "fold"]


def _out_size(size, k, d, p, s):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@primitive
def unfold(
    input: Tensor, kernel_size: list[int], dilation: list[int], padding: list[int], stride: list[int]
) -> Tensor:
    return backend_for(input).unfold_forward(input, kernel_size, dilation, padding, stride)


@unfold.register_fake
def _(input, kernel_size, dilation, padding, stride):
    N, C, H, W = input.shape
    L = 1
    for size, k, d, p, s in zip((H, W), kernel_size, dilation, padding, stride):
        L = L * _out_size(size, k, d, p, s)
    return input.new_empty((N, C * kernel_size[0] * kernel_size[1], L))


@primitive
def fold(
    input: Tensor, output_size: list[int], kernel_size: list[int], dilation: list[int],
    padding: list[int], stride: list[int],
) -> Tensor:
    return backend_for(input).fold_forward(input, output_size, kernel_size, dilation, padding, stride)


@fold.register_fake
def _(input, output_size, kernel_size, dilation, padding, stride):
    N, R, _ = input.shape
    C = R // (kernel_size[0] * kernel_size[1])
    return input.new_empty((N, C, output_size[0], output_size[1]))


def _setup_unfold(ctx, inputs, output):
    input, kernel_size, dilation, padding, stride = inputs
    ctx.size = [input.shape[2], input.shape[3]]
    ctx.window = (kernel_size, dilation, padding, stride)


def _backward_unfold(ctx, grad):
    return fold(grad, ctx.size, *ctx.window), None, None, None, None


unfold.register_autograd(_backward_unfold, setup_context=_setup_unfold)
unfold.register_jvp(linear_jvp(unfold))


def _setup_fold(ctx, inputs, output):
    _, _, kernel_size, dilation, padding, stride = inputs
    ctx.window = (kernel_size, dilation, padding, stride)


def _backward_fold(ctx, grad):
    return unfold(grad, *ctx.window), None, None, None, None, None


fold.register_autograd(_backward_fold, setup_context=_setup_fold)
fold.register_jvp(linear_jvp(fold))


# torch.vmap: a sample is batched (the functional layer adds N to an unbatched input), so the
# vmap dimension B folds into N: one launch for all samples
unfold.register_vmap(rows_rule(unfold))
fold.register_vmap(rows_rule(fold))
