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
from ._primitive import elementwise_rule, linear_jvp, primitive, rows_rule


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
    # lse and wsum are kept for the backward, never differentiated: no zero tensors for their
    # gradients (autograd would otherwise allocate and fill two on every backward)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(input, target, weight, output[1], output[2])


def _ce_backward(ctx, grad, _grad_lse, _grad_wsum):
    if grad is None:  # not materialized (see _ce_setup): no gradient reached the loss
        return (None,) * 5
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


def _target_distribution(target, ignore_index, eps, C, acc):
    """q (N, C, R), each row's target distribution as the loss weighs the classes: the
    probabilities or a one-hot index (a zero row where ignored), smoothed by eps."""
    if target.is_floating_point():
        q = target.to(acc)
    else:
        valid = target != ignore_index
        q = torch.nn.functional.one_hot(torch.where(valid, target, 0), C).movedim(-1, 1).to(acc)
        q = q * valid.unsqueeze(1)
    if eps > 0:
        q = q * (1 - eps) + eps / C * (q.sum(1, keepdim=True) if not target.is_floating_point() else 1)
    return q


def _ce_terms(x, target, weight, lse, ignore_index, eps):
    """What cross-entropy's formulas are made of, at the rows' precision (lse's dtype): x,
    the target distribution q, the class weights w ((1, C, 1), or None), w q, and the
    softmax p = exp(x - lse)."""
    acc, C = lse.dtype, x.shape[1]
    x = x.to(acc)
    q = _target_distribution(target, ignore_index, eps, C, acc)
    w = weight.to(acc).view(1, C, 1) if weight is not None else None
    wq = q * w if w is not None else q
    return x, q, w, wq, (x - lse.unsqueeze(1)).exp()


# double backward, in torch ops at the rows' precision. cross_entropy_backward's
# dx_c = g (p_c S - w_c q_c) with p = softmax(x) = exp(x - lse), S = sum_c w_c q_c: lse and S
# are the forward's outputs, whose own gradients its backward drops, so these formulas
# differentiate p and S through x, q and w directly (and give lse and S none).
def _ce_grad_setup(ctx, inputs, output):
    grad, input, target, weight, lse, _, ctx.ignore_index, ctx.eps = inputs
    ctx.save_for_backward(grad, input, target, weight, lse)


def _ce_grad_backward(ctx, gg):
    g, x, target, weight, lse = ctx.saved_tensors
    need_g, need_x, need_t, need_w = ctx.needs_input_grad[:4]
    acc, eps = lse.dtype, ctx.eps
    _, q, w, wq, p = _ce_terms(x, target, weight, lse, ctx.ignore_index, eps)
    gg, g1 = gg.to(acc), g.to(acc).unsqueeze(1)
    pgg = (p * gg).sum(1, keepdim=True)
    d_g = d_x = d_t = d_w = None
    if need_g:
        d_g = (gg * (p * wq.sum(1, keepdim=True) - wq)).sum(1).to(g.dtype)
    if need_x:
        # a row of no weight (an ignored target: where every row is, 'mean' hands it an
        # infinite g) has dx = 0 whatever g is, and so no second derivative, as torch's
        S = wq.sum(1, keepdim=True)
        gS = torch.where(S == 0, 0, g1 * S)
        d_x = (gS * p * (gg - pgg)).to(x.dtype)
    if need_t:  # probability targets: dS/dq = w, dq/dt = 1 - eps
        d_t = (g1 * (w if w is not None else 1) * (pgg - gg) * (1 - eps)).to(target.dtype)
    if need_w:
        d_w = (g1 * q * (pgg - gg)).sum((0, 2)).to(weight.dtype)
    return d_g, d_x, d_t, d_w, None, None, None, None


cross_entropy_backward.register_autograd(_ce_grad_backward, setup_context=_ce_grad_setup)


# cross_entropy_target_grad: (1 - eps) w_c g (lse - x_c), with d lse/dx = p
def _ce_target_grad_setup(ctx, inputs, output):
    grad, input, weight, lse, ctx.eps = inputs
    ctx.save_for_backward(grad, input, weight, lse)


def _ce_target_grad_backward(ctx, gg):
    g, x, weight, lse = ctx.saved_tensors
    need_g, need_x, need_w = ctx.needs_input_grad[:3]
    acc, C, scale = lse.dtype, x.shape[1], 1 - ctx.eps
    w = weight.to(acc).view(1, C, 1) if weight is not None else 1
    gg, g1, xa = gg.to(acc), g.to(acc).unsqueeze(1), x.to(acc)
    nlogp = lse.unsqueeze(1) - xa
    d_g = d_x = d_w = None
    if need_g:
        d_g = (scale * gg * w * nlogp).sum(1).to(g.dtype)
    if need_x:
        p = (xa - lse.unsqueeze(1)).exp()
        d_x = (scale * g1 * (p * (gg * w).sum(1, keepdim=True) - gg * w)).to(x.dtype)
    if need_w:
        d_w = (scale * g1 * gg * nlogp).sum((0, 2)).to(weight.dtype)
    return d_g, d_x, d_w, None, None


cross_entropy_target_grad.register_autograd(_ce_target_grad_backward, setup_context=_ce_target_grad_setup)


# jvps of the two gradients. Here lse and S come with tangents of their own (the forward's jvp
# gives them: d lse = sum p dx, dS = sum (w dq + dw q)), so the formulas take them as given.
@cross_entropy_backward.register_jvp
def _(args, output, tangents):
    g, x, target, weight, lse, wsum, ignore_index, eps = args
    t_g, t_x, t_t, t_w, t_lse, t_S = tangents[:6]
    acc, C = lse.dtype, x.shape[1]
    _, q, w, wq, p = _ce_terms(x, target, weight, lse, ignore_index, eps)
    S = wsum.to(acc).unsqueeze(1)
    t = torch.zeros_like(p)
    if t_g is not None:
        t = t + t_g.to(acc).unsqueeze(1) * (p * S - wq)
    inner = torch.zeros_like(p)
    if t_x is not None or t_lse is not None:
        dlogp = (t_x.to(acc) if t_x is not None else 0) - (t_lse.unsqueeze(1) if t_lse is not None else 0)
        inner = inner + p * dlogp * S
    if t_S is not None:
        inner = inner + p * t_S.to(acc).unsqueeze(1)
    if t_t is not None:  # probability targets: dq = (1 - eps) dt
        t_q = t_t.to(acc) * (1 - eps)
        inner = inner - (t_q * w if w is not None else t_q)
    if t_w is not None:
        inner = inner - q * t_w.to(acc).view(1, C, 1)
    return (t + g.to(acc).unsqueeze(1) * inner).to(x.dtype)


@cross_entropy_target_grad.register_jvp
def _(args, output, tangents):
    g, x, weight, lse, eps = args
    t_g, t_x, t_w, t_lse = tangents[:4]
    acc, C, scale = lse.dtype, x.shape[1], 1 - eps
    w = weight.to(acc).view(1, C, 1) if weight is not None else 1
    g1, nlogp = g.to(acc).unsqueeze(1), lse.unsqueeze(1) - x.to(acc)
    t = torch.zeros_like(nlogp)
    if t_g is not None:
        t = t + w * t_g.to(acc).unsqueeze(1) * nlogp
    if t_x is not None or t_lse is not None:
        d = (t_lse.unsqueeze(1) if t_lse is not None else 0) - (t_x.to(acc) if t_x is not None else 0)
        t = t + w * g1 * d
    if t_w is not None:
        t = t + t_w.to(acc).view(1, C, 1) * g1 * nlogp
    return (scale * t).to(output.dtype)


@cross_entropy.register_jvp
def _(args, output, tangents):
    """loss = sum_c w_c q_c (lse - x_c): its tangent through x (d lse = sum softmax * dx),
    through probability targets (dq = (1 - eps) dp) and through w; lse's and S's along. In
    torch ops at the rows' precision."""
    input, target, weight, ignore_index, eps = args
    loss, lse, wsum = output
    tx, tt, tw = tangents[:3]
    acc, C = lse.dtype, input.shape[1]
    x, q, w, wq, p = _ce_terms(input, target, weight, lse, ignore_index, eps)
    nlogp = lse.unsqueeze(1) - x
    t_loss, t_lse, t_wsum = torch.zeros_like(loss), torch.zeros_like(lse), torch.zeros_like(wsum)
    if tx is not None:
        tx = tx.to(acc)
        t_lse = (p * tx).sum(1)
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


# double backward: nll_loss_backward is linear in its row gradients, and its adjoint is the
# loss itself (-w_t gg_t per row)
def _nll_grad_setup(ctx, inputs, output):
    _, target, weight, ctx.ignore_index, _, _ = inputs
    ctx.save_for_backward(target, weight)


def _nll_grad_backward(ctx, gg):
    target, weight = ctx.saved_tensors
    d_g = nll_loss(gg, target, weight, ctx.ignore_index) if ctx.needs_input_grad[0] else None
    return d_g, None, None, None, None, None


nll_loss_backward.register_autograd(_nll_grad_backward, setup_context=_nll_grad_setup)
nll_loss_backward.register_jvp(linear_jvp(nll_loss_backward))


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
    return torch.empty_like(input)  # the loss keeps input's layout, as torch's does


@primitive
def mse_loss_backward(
    grad: Tensor, input: Tensor, target: Tensor, weight: Optional[Tensor], reduce: bool
) -> Tensor:
    return backend_for(input).mse_loss_backward(grad, input, target, weight, reduce)


@mse_loss_backward.register_fake
def _(grad, input, target, weight, reduce):
    return input.new_empty(input.shape)  # contiguous, as torch's


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


# double backward of dx = 2 w (x - t) g (g 0-d when reduced): gg's products with each factor
def _mse_grad_setup(ctx, inputs, output):
    grad, input, target, weight, ctx.reduce = inputs
    ctx.save_for_backward(grad, input, target, weight)


def _mse_grad_backward(ctx, gg):
    g, x, t, w = ctx.saved_tensors
    need_g, need_x, need_t, need_w = ctx.needs_input_grad[:4]
    acc = _row_dtype(x.dtype)
    diff, gg32, g32 = x.to(acc) - t.to(acc), gg.to(acc), g.to(acc)
    w32 = w.to(acc) if w is not None else None
    d_g = d_x = d_t = d_w = None
    if need_g:
        d_g = diff * (2 * gg32) * (w32 if w32 is not None else 1)  # 2 (x - t) may overflow first
        d_g = (d_g.sum() if ctx.reduce else d_g).to(g.dtype)
    if need_x or need_t:
        d = 2 * g32 * gg32 * (w32 if w32 is not None else 1)
        d_x = d.to(x.dtype) if need_x else None
        d_t = (-d).to(t.dtype) if need_t else None
    if need_w:
        d_w = (diff * (2 * g32) * gg32).to(w.dtype)
    return d_g, d_x, d_t, d_w, None


mse_loss_backward.register_autograd(_mse_grad_backward, setup_context=_mse_grad_setup)


@mse_loss_backward.register_jvp
def _(args, output, tangents):
    # dx = 2 w (x - t) g: each factor's tangent in turn
    g, x, t, w, reduce = args
    t_g, t_x, t_t, t_w = tangents[:4]
    acc = _row_dtype(x.dtype)
    diff, g32 = x.to(acc) - t.to(acc), g.to(acc)
    w32 = w.to(acc) if w is not None else 1
    out = torch.zeros_like(diff)
    if t_g is not None:
        out = out + diff * (2 * t_g.to(acc)) * w32  # 2 (x - t) may overflow first
    if t_x is not None or t_t is not None:
        t_diff = (t_x.to(acc) if t_x is not None else 0) - (t_t.to(acc) if t_t is not None else 0)
        out = out + t_diff * (2 * g32) * w32
    if t_w is not None:
        out = out + diff * (2 * g32) * t_w.to(acc)
    return out.to(output.dtype)


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
        t = diff * (2 * td) * (weight.to(acc) if weight is not None else 1)  # 2 (x - t) may overflow
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
