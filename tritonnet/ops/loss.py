"""cross_entropy, nll_loss and mse_loss as custom ops with their backward.

The ops return per-row (per-element for mse) losses in fp32 (fp64 for fp64 input); the
functional layer reduces them with torch ops, so autograd hands each backward the gradient
of every row (1/denominator for 'mean', 1 for 'sum', the incoming gradient for 'none').

cross_entropy (x: (N, C, R) logits, q the row's target distribution, w class weights,
lse = log sum exp x, S = sum_c w_c q_c, g the row's gradient):
  loss = sum_c w_c q_c (lse - x_c)
  dx_c = g * (softmax(x)_c * S - w_c q_c)                (cross_entropy_backward)
  dp_c = -(1 - eps) * w_c * (x_c - lse) * g              (probability targets)
  dw_c = sum_rows g * q_c * (lse - x_c)                  (probability targets; torch's
                                                          index-target path has no dw)
nll_loss (x: log-probabilities):  loss = -w_t x_t,  dx = -w_t g at class t, 0 elsewhere
mse_loss:  loss = w (x - t)^2,  dx = 2 w (x - t) g,  dt = -dx,  dw = (x - t)^2 g
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..backend import backend_for
from ._primitive import elementwise_rule, primitive, rows_rule


def _row_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------------------
# cross_entropy


@primitive
def cross_entropy(
    input: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int, label_smoothing: float
) -> tuple[Tensor, Tensor, Tensor]:
    """-> (row losses, row lse, row S), each (N, R)."""
    return backend_for(input).cross_entropy_forward(input, target, weight, ignore_index, label_smoothing)


@cross_entropy.register_fake
def _(input, target, weight, ignore_index, label_smoothing):
    N, _, R = input.shape
    return tuple(input.new_empty((N, R), dtype=_row_dtype(input.dtype)) for _ in range(3))


@primitive
def cross_entropy_backward(
    grad: Tensor, input: Tensor, target: Tensor, weight: Optional[Tensor], lse: Tensor,
    wsum: Tensor, ignore_index: int, label_smoothing: float,
) -> Tensor:
    return backend_for(input).cross_entropy_backward(
        grad, input, target, weight, lse, wsum, ignore_index, label_smoothing
    )


@cross_entropy_backward.register_fake
def _(grad, input, target, weight, lse, wsum, ignore_index, label_smoothing):
    return input.new_empty(input.shape)  # contiguous whatever the logits' layout, as torch's


@primitive
def cross_entropy_target_grad(
    grad: Tensor, input: Tensor, weight: Optional[Tensor], lse: Tensor, label_smoothing: float
) -> Tensor:
    return backend_for(input).cross_entropy_target_grad(grad, input, weight, lse, label_smoothing)


@cross_entropy_target_grad.register_fake
def _(grad, input, weight, lse, label_smoothing):
    return input.new_empty(input.shape, dtype=_row_dtype(input.dtype))


def _ce_setup(ctx, inputs, output):
    input, target, weight, ignore_index, label_smoothing = inputs
    ctx.ignore_index, ctx.label_smoothing = ignore_index, label_smoothing
    ctx.save_for_backward(input, target, weight, output[1], output[2])


def _ce_backward(ctx, grad, _grad_lse, _grad_wsum):
    input, target, weight, lse, wsum = ctx.saved_tensors
    eps = ctx.label_smoothing
    need_x, need_t, need_w = ctx.needs_input_grad[:3]
    grad_input = grad_target = grad_weight = None
    if need_x:
        grad_input = cross_entropy_backward(
            grad, input, target, weight, lse, wsum, ctx.ignore_index, eps
        )
    if need_t:  # probability targets only (index targets are integer tensors)
        grad_target = cross_entropy_target_grad(grad, input, weight, lse, eps).to(target.dtype)
    if need_w:  # probability targets only (the functional layer refuses it for indices)
        # g * (lse - x_c), summed over rows after weighting by q_c
        g_nlogp = cross_entropy_target_grad(grad, input, None, lse, 0.0)
        q = target.to(g_nlogp.dtype)
        if eps > 0:
            q = q * (1 - eps) + eps / input.shape[1]
        grad_weight = (q * g_nlogp).sum((0, 2)).to(weight.dtype)
    return grad_input, grad_target, grad_weight, None, None


cross_entropy.register_autograd(_ce_backward, setup_context=_ce_setup)


@cross_entropy.register_jvp
def _(args, output, tangents):
    """loss = sum_c w_c q_c (lse - x_c): its tangent through x (d lse = sum softmax * dx),
    through probability targets (dq = (1 - eps) dp) and through w; lse's and S's along. In
    torch ops at the rows' precision."""
    input, target, weight, ignore_index, eps = args
    loss, lse, wsum = output
    tx, tt, tw = tangents[:3]
    acc, C = loss.dtype, input.shape[1]
    x = input.to(acc)
    if target.is_floating_point():
        q = target.to(acc)
    else:
        valid = target != ignore_index
        q = torch.nn.functional.one_hot(torch.where(valid, target, 0), C).movedim(-1, 1).to(acc)
        q = q * valid.unsqueeze(1)
    if eps > 0:
        q = q * (1 - eps) + eps / C * (q.sum(1, keepdim=True) if not target.is_floating_point() else 1)
    w = weight.to(acc).view(1, C, 1) if weight is not None else None
    wq = q * w if w is not None else q
    nlogp = lse.unsqueeze(1) - x
    t_loss, t_lse, t_wsum = torch.zeros_like(loss), torch.zeros_like(lse), torch.zeros_like(wsum)
    if tx is not None:
        tx = tx.to(acc)
        t_lse = ((x - lse.unsqueeze(1)).exp() * tx).sum(1)
        t_loss = t_loss + wq.sum(1) * t_lse - (wq * tx).sum(1)
    if tt is not None:  # probability targets
        tq = tt.to(acc) * (1 - eps)
        wtq = tq * w if w is not None else tq
        t_loss = t_loss + (wtq * nlogp).sum(1)
        t_wsum = t_wsum + wtq.sum(1)
    if tw is not None:
        tq_w = q * tw.to(acc).view(1, C, 1)
        t_loss = t_loss + (tq_w * nlogp).sum(1)
        t_wsum = t_wsum + tq_w.sum(1)
    return t_loss, t_lse, t_wsum


# ---------------------------------------------------------------------------------------------
# nll_loss


@primitive
def nll_loss(input: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int) -> Tensor:
    """-> row losses (N, R)."""
    return backend_for(input).nll_loss_forward(input, target, weight, ignore_index)


@nll_loss.register_fake
def _(input, target, weight, ignore_index):
    return input.new_empty(target.shape, dtype=_row_dtype(input.dtype))


@primitive
def nll_loss_backward(
    grad: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int, num_classes: int,
    dtype: torch.dtype,
) -> Tensor:
    return backend_for(grad).nll_loss_backward(grad, target, weight, ignore_index, num_classes, dtype)


@nll_loss_backward.register_fake
def _(grad, target, weight, ignore_index, num_classes, dtype):
    N, R = target.shape
    return grad.new_empty((N, num_classes, R), dtype=dtype)


def _nll_setup(ctx, inputs, output):
    input, target, weight, ignore_index = inputs
    ctx.ignore_index, ctx.num_classes, ctx.dtype = ignore_index, input.shape[1], input.dtype
    ctx.save_for_backward(target, weight)


def _nll_backward(ctx, grad):
    target, weight = ctx.saved_tensors
    grad_input = None
    if ctx.needs_input_grad[0]:
        grad_input = nll_loss_backward(
            grad, target, weight, ctx.ignore_index, ctx.num_classes, ctx.dtype
        )
    return grad_input, None, None, None


nll_loss.register_autograd(_nll_backward, setup_context=_nll_setup)


@nll_loss.register_jvp
def _(args, output, tangents):
    # loss = -w_t x_t is linear in x: the op itself on the tangent (torch's weight is not
    # differentiable here; the functional layer hands it over without a tangent)
    input, target, weight, ignore_index = args
    return None if tangents[0] is None else nll_loss(tangents[0], target, weight, ignore_index)


# ---------------------------------------------------------------------------------------------
# mse_loss


@primitive
def mse_loss(input: Tensor, target: Tensor, weight: Optional[Tensor], reduce: bool) -> Tensor:
    """input, target, weight of one shape and dtype -> the 0-d sum (reduce) or elementwise loss."""
    return backend_for(input).mse_loss_forward(input, target, weight, reduce)


@mse_loss.register_fake
def _(input, target, weight, reduce):
    if reduce:
        return input.new_empty((), dtype=_row_dtype(input.dtype))
    return input.new_empty(input.shape)


@primitive
def mse_loss_backward(
    grad: Tensor, input: Tensor, target: Tensor, weight: Optional[Tensor], reduce: bool
) -> Tensor:
    return backend_for(input).mse_loss_backward(grad, input, target, weight, reduce)


@mse_loss_backward.register_fake
def _(grad, input, target, weight, reduce):
    return input.new_empty(input.shape)


def _mse_setup(ctx, inputs, output):
    input, target, weight, reduce = inputs
    ctx.reduce = reduce
    ctx.save_for_backward(input, target, weight)


def _mse_backward(ctx, grad):
    input, target, weight = ctx.saved_tensors
    need_x, need_t, need_w = ctx.needs_input_grad[:3]
    grad_input = grad_target = grad_weight = None
    if need_x or need_t:
        dx = mse_loss_backward(grad, input, target, weight, ctx.reduce)
        grad_input = dx if need_x else None
        grad_target = -dx if need_t else None
    if need_w:
        se = mse_loss(input, target, None, False)
        grad_weight = (se.to(grad.dtype) * grad).to(weight.dtype)
    return grad_input, grad_target, grad_weight, None


mse_loss.register_autograd(_mse_backward, setup_context=_mse_setup)


@mse_loss.register_jvp
def _(args, output, tangents):
    # loss = w (x - t)^2: 2 w (x - t) (dx - dt) + dw (x - t)^2, summed when reduced
    input, target, weight, reduce = args
    tx, tt, tw = tangents[:3]
    acc = _row_dtype(input.dtype)
    diff = input.to(acc) - target.to(acc)
    t = None
    if tx is not None or tt is not None:
        td = (tx.to(acc) if tx is not None else 0) - (tt.to(acc) if tt is not None else 0)
        t = 2 * diff * td * (weight.to(acc) if weight is not None else 1)
    if tw is not None:
        t_w = diff * diff * tw.to(acc)
        t = t_w if t is None else t + t_w
    if t is None:
        return None
    return (t.sum() if reduce else t).to(output.dtype)


# ---------------------------------------------------------------------------------------------
# torch.vmap: the losses work row by row (a sample is (N, C, R) logits with its (N, R) rows;
# the functional layer adds N to an unbatched input), so the vmap dim B folds into N: one
# launch for all samples. A class weight batched per sample, and mse's 0-d sums, run sample
# by sample.


def _mse_rule(prim, tensors):
    """mse's batching rule: elementwise (reduce=False); a 0-d sum per sample (reduce=True)
    runs sample by sample."""
    elementwise = elementwise_rule(prim, tensors)

    def rule(info, in_dims, *args):
        if args[-1]:  # reduce
            return prim.per_sample(info, in_dims, *args)
        return elementwise(info, in_dims, *args)

    return rule


cross_entropy.register_vmap(rows_rule(cross_entropy, (0, 1)))
cross_entropy_backward.register_vmap(rows_rule(cross_entropy_backward, (0, 1, 2, 4, 5)))
cross_entropy_target_grad.register_vmap(rows_rule(cross_entropy_target_grad, (0, 1, 3)))
nll_loss.register_vmap(rows_rule(nll_loss, (0, 1)))
nll_loss_backward.register_vmap(rows_rule(nll_loss_backward, (0, 1)))
mse_loss.register_vmap(_mse_rule(mse_loss, (0, 1, 2)))
mse_loss_backward.register_vmap(_mse_rule(mse_loss_backward, (0, 1, 2, 3)))
