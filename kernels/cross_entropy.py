"""Cross-entropy: a fused log-softmax + NLL over class-index or class-probability targets,
with class weights and label smoothing; forward and the gradients to the logits and to
probability targets. kernels/loss.py (nll_loss, mse_loss) shares its row helpers.

Layout: the classification losses see logits as (N, C, R), R the product of the spatial dims
(1 for (N, C) input), so a row is x[n, :, r]; rows are numbered n * R + r and handled in
(BLOCK_R, BLOCK_C) tiles as in kernels/softmax.py. Index targets are (N, R), probability
targets (N, C, R). Every row result (loss, lse, sum of weights) is stored in fp32 (fp64 for
fp64 input, the reference's contract); the final reduction over rows is a torch.sum of those
values on the host side (deterministic).

Cross-entropy math, per row. q is the target distribution: index target t with label
smoothing eps: q = (1 - eps) * onehot(t) + eps / C;  probability target p: q = (1 - eps) * p
+ eps / C. w are the class weights (1 without), lse = log sum_c exp(x_c).
  loss = -sum_c w_c q_c log_softmax(x)_c = sum_c w_c q_c (lse - x_c)
  S    = sum_c w_c q_c                                       (saved, with lse, for backward)
  dloss/dx_j = S * softmax(x)_j - w_j q_j                    (d lse/dx_j = softmax_j)
  dloss/dp_j = -(1 - eps) * w_j * (x_j - lse)                (probability targets only)
The forward makes one pass over a row: with a running max m it keeps s = sum exp(x - m) (as
s - 1, softmax.online_rest, so that log(s) = log1p(s - 1) keeps a confident row's digits) and
a = sum w q (m - x), both rescaled when m grows (a += S_so_far * (m_new - m_old)); every term
of a is >= 0, so nothing cancels, and loss = a + S * log(s) at the end. For index targets
the one-hot part is one gathered logit: (1 - eps) w_t ((m - x_t) + log(s)), which keeps a
confident row's loss (about log(s) alone) to its own precision; only the smoothing part
(eps / C) w_c runs through a, and only when eps > 0, so an eps = 0 loss never multiplies a
-inf logit by 0 (torch's nll_loss gathers too). Rows whose target is ignore_index give
loss 0 and gradient 0 and never read memory at their target index.
"""

from __future__ import annotations

__all__ = [
    "cross_entropy_forward",
    "cross_entropy_backward",
    "cross_entropy_target_grad",
]

import torch
import triton
import triton.language as tl

from ._common import cdiv, fp64_to_reference, inside
from ._launch import launcher
from .softmax import log_sum, online_rest, row_tile

# ---------------------------------------------------------------------------------------------
# cross-entropy kernels


@triton.jit
def _row_start(rows, R, stride_n, stride_r):
    """Offset of element 0 of each row (n, r) = divmod(rows, R)."""
    return (rows // R) * stride_n + (rows % R) * stride_r


@launcher
@triton.jit
def _cross_entropy_fwd_kernel(
    # pointers
    x_ptr, t_ptr, w_ptr, loss_ptr, lse_ptr, wsum_ptr,
    # sizes
    n_rows, C, R,
    # strides: logits (N, C, R); target (N, C, R) for probabilities, (N, -, R) for indices
    stride_xn, stride_xc, stride_xr, stride_tn, stride_tc, stride_tr,
    # options
    ignore_index, eps,
    PROB_TARGET: tl.constexpr, HAS_WEIGHT: tl.constexpr, SMOOTHING: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < n_rows
    x_row = x_ptr + _row_start(rows, R, stride_xn, stride_xr)
    t_row = t_ptr + _row_start(rows, R, stride_tn, stride_tr)
    cols = tl.arange(0, BLOCK_C)

    m = tl.full((BLOCK_R,), float("-inf"), tl.float32)  # running max
    shift = tl.zeros((BLOCK_R,), tl.float32)  # m, or 0 while m = -inf
    rest = tl.zeros((BLOCK_R,), tl.float32)  # s - 1: sum exp(x - shift) but one max's 1
    a = tl.zeros((BLOCK_R,), tl.float32)  # sum w q (shift - x)
    b = tl.zeros((BLOCK_R,), tl.float32)  # sum w q
    for c0 in range(0, C, BLOCK_C):
        c = c0 + cols
        c_mask = c < C
        mask = row_mask[:, None] & c_mask[None, :]
        x = tl.load(x_row[:, None] + c[None, :] * stride_xc, mask=mask, other=float("-inf"))
        x = x.to(tl.float32)  # compute in fp32
        m_new, new_shift, rest = online_rest(x, m, rest)
        if PROB_TARGET or SMOOTHING:
            # an index target's one-hot part is the gathered logit below: only eps / C here
            q = _ce_target_dist(t_row, w_ptr, rows, c, mask, C, stride_tc, eps,
                                PROB_TARGET, HAS_WEIGHT, SMOOTHING, ONE_HOT=False)
            # masked lanes hold x = -inf: keep them out (0 * inf is NaN)
            keep = mask
            if PROB_TARGET or HAS_WEIGHT:
                # a target weight w q may be infinite: terms at the max (shift - x = 0) are
                # then 0, not inf * 0 = NaN, its loss coming from S * log(s) (+-inf, as torch's
                # q * log_softmax), and so is a rescale that leaves the max alone (eps / C of an
                # index target without class weights is finite: no selects there)
                a = a + tl.where(new_shift == shift, 0.0, b * (new_shift - shift))
                keep = keep & (x != new_shift[:, None])
            else:
                a = a + b * (new_shift - shift)
            a = a + tl.sum(tl.where(keep, q * (new_shift[:, None] - x), 0.0), axis=1)
            b = b + tl.sum(tl.where(mask, q, 0.0), axis=1)
        m = m_new
        shift = new_shift

    log_s = log_sum(m, rest)
    lse = shift + log_s
    # S * log(s); S = 0 gives 0 even for an empty row (C = 0, s = 0), as torch's empty sum
    smooth = a + tl.where(b == 0.0, 0.0, b * log_s)
    if PROB_TARGET:
        loss = smooth
        wsum = b
    else:
        t = tl.load(t_row, mask=row_mask, other=ignore_index).to(tl.int64)
        valid = row_mask & (t != ignore_index)
        # the target logit: one gather, masked so that ignored rows, and class indices out of
        # [0, C) (which the host or a device assert rejects), read nothing
        ok = valid & inside(t, C)
        x_t = tl.load(x_row + t * stride_xc, mask=ok, other=0.0).to(tl.float32)
        if HAS_WEIGHT:
            w_t = tl.load(w_ptr + t, mask=ok, other=0.0).to(tl.float32)
        else:
            w_t = tl.where(valid, 1.0, 0.0)
        # (shift - x_t) + log(s), not lse - x_t: lse has already rounded log(s) to the ulp of
        # the max, and a confident row's loss is about log(s) alone
        loss = (1.0 - eps) * w_t * ((shift - x_t) + log_s)
        wsum = (1.0 - eps) * w_t
        if SMOOTHING:
            loss += smooth
            wsum += b
        # an ignored row is 0 even if its logits are NaN; an out-of-range index is NaN
        loss = tl.where(valid, tl.where(ok, loss, float("nan")), 0.0)
        wsum = tl.where(valid, wsum, 0.0)
    tl.store(loss_ptr + rows, loss.to(loss_ptr.dtype.element_ty), mask=row_mask)
    tl.store(lse_ptr + rows, lse.to(lse_ptr.dtype.element_ty), mask=row_mask)
    tl.store(wsum_ptr + rows, wsum.to(wsum_ptr.dtype.element_ty), mask=row_mask)


@launcher
@triton.jit
def _cross_entropy_bwd_kernel(
    # pointers
    g_ptr, x_ptr, t_ptr, w_ptr, lse_ptr, wsum_ptr, dx_ptr,
    # sizes
    n_rows, C, R,
    # strides: grad (N, R); logits, target, grad_input as in the forward
    stride_gn, stride_gr, stride_xn, stride_xc, stride_xr, stride_tn, stride_tc, stride_tr,
    stride_dxn, stride_dxc, stride_dxr,
    # options
    ignore_index, eps,
    PROB_TARGET: tl.constexpr, HAS_WEIGHT: tl.constexpr, SMOOTHING: tl.constexpr,
    SINGLE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dx_c = g * (softmax_c * S - w_c q_c), the softmax normalised by its own sum and, at an
    index target, p_t - 1 as minus the other classes' share, so a confident row keeps its
    digits. A row of one block is read once; a longer one twice (sum, then write)."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < n_rows
    x_row = x_ptr + _row_start(rows, R, stride_xn, stride_xr)
    t_row = t_ptr + _row_start(rows, R, stride_tn, stride_tr)
    dx_row = dx_ptr + _row_start(rows, R, stride_dxn, stride_dxr)
    g = tl.load(g_ptr + _row_start(rows, R, stride_gn, stride_gr), mask=row_mask, other=0.0)
    g = g.to(tl.float32)
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)
    wsum = tl.load(wsum_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)
    if PROB_TARGET:
        t = rows  # unused
    else:
        t = tl.load(t_row, mask=row_mask, other=ignore_index).to(tl.int64)
        g = tl.where(t != ignore_index, g, 0.0)  # ignored rows: zero gradient
    cols = tl.arange(0, BLOCK_C)
    # e = exp(x - lse) is the softmax but for a factor common to the row (lse's rounding, the
    # ulp of the max), which p = e / s, s = sum e, divides out; at an index target,
    # S p_t - w_t q_t = (S - w_t q_t) - S (1 - p_t) with 1 - p_t = (the other classes' e) / s,
    # so a confident row's p_t - 1 keeps its digits. One row reduction (s, or the others'
    # share at an index target, whose e_t comes from one gathered logit, as in the forward).
    if PROB_TARGET:
        e_t = tl.zeros((BLOCK_R,), tl.float32)  # unused
    else:
        ok = (t != ignore_index) & inside(t, C) & row_mask
        x_t = tl.load(x_row + t * stride_xc, mask=ok, other=0.0).to(tl.float32)
        e_t = tl.where(ok, tl.exp(x_t - lse), 0.0)
    if SINGLE:  # the whole row in registers: one read
        mask = row_mask[:, None] & (cols < C)[None, :]
        x = tl.load(x_row[:, None] + cols[None, :] * stride_xc, mask=mask, other=float("-inf"))
        e = tl.exp(x.to(tl.float32) - lse[:, None])  # lse = -inf (all -inf row): NaN, as torch
        part = _ce_part(e, cols, t, PROB_TARGET)
        wq = _ce_target_dist(t_row, w_ptr, t, cols, mask, C, stride_tc, eps,
                             PROB_TARGET, HAS_WEIGHT, SMOOTHING)
        d = _ce_dx(e, cols, t, wq, wsum, part, e_t, PROB_TARGET)
        tl.store(dx_row[:, None] + cols[None, :] * stride_dxc, (g[:, None] * d).to(dx_ptr.dtype.element_ty),
                 mask=mask)
    else:  # a longer row: one pass for the sum, one to write (x read twice)
        part = tl.zeros((BLOCK_R,), tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cols
            mask = row_mask[:, None] & (c < C)[None, :]
            x = tl.load(x_row[:, None] + c[None, :] * stride_xc, mask=mask, other=float("-inf"))
            part += _ce_part(tl.exp(x.to(tl.float32) - lse[:, None]), c, t, PROB_TARGET)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cols
            mask = row_mask[:, None] & (c < C)[None, :]
            x = tl.load(x_row[:, None] + c[None, :] * stride_xc, mask=mask, other=float("-inf"))
            e = tl.exp(x.to(tl.float32) - lse[:, None])
            wq = _ce_target_dist(t_row, w_ptr, t, c, mask, C, stride_tc, eps,
                                 PROB_TARGET, HAS_WEIGHT, SMOOTHING)
            d = _ce_dx(e, c, t, wq, wsum, part, e_t, PROB_TARGET)
            tl.store(dx_row[:, None] + c[None, :] * stride_dxc, (g[:, None] * d).to(dx_ptr.dtype.element_ty),
                     mask=mask)


@triton.jit
def _ce_part(e, c, t, PROB_TARGET: tl.constexpr):
    """A block's share of the row sum the backward normalises by: all of e for probability
    targets; the classes other than the target's for an index target."""
    if PROB_TARGET:
        return tl.sum(e, axis=1)
    return tl.sum(tl.where(c[None, :] == t[:, None], 0.0, e), axis=1)


@triton.jit
def _ce_dx(e, c, t, wq, S, part, e_t, PROB_TARGET: tl.constexpr):
    """S p_c - w_c q_c of a block, p = e / s (s = part, or e_t + part at an index target,
    whose own column is (S - w_t q_t) - S part / s)."""
    if PROB_TARGET:
        return e * (S / part)[:, None] - wq
    r = 1.0 / (e_t + part)
    d = e * (S * r)[:, None] - wq
    return tl.where(c[None, :] == t[:, None], (S[:, None] - wq) - (S * part * r)[:, None], d)


@triton.jit
def _ce_target_dist(t_row, w_ptr, t, c, mask, C, stride_tc, eps,
                    PROB_TARGET: tl.constexpr, HAS_WEIGHT: tl.constexpr, SMOOTHING: tl.constexpr,
                    ONE_HOT: tl.constexpr = True):
    """w_c q_c of a (BLOCK_R, BLOCK_C) tile of classes c: the weighted target distribution.
    For an index target without ONE_HOT, only its smoothing part eps / C (the forward
    gathers the target's logit instead)."""
    if PROB_TARGET:
        q = tl.load(t_row[:, None] + c[None, :] * stride_tc, mask=mask, other=0.0)
        q = q.to(tl.float32)
        if SMOOTHING:
            q = q * (1.0 - eps) + eps / C
    elif ONE_HOT:
        q = tl.where(c[None, :] == t[:, None], 1.0 - eps, 0.0)
        if SMOOTHING:
            q += eps / C
    else:
        q = tl.full((1, c.shape[0]), 1.0, tl.float32) * (eps / C)
    if HAS_WEIGHT:
        q = q * tl.load(w_ptr + c, mask=c < C, other=0.0).to(tl.float32)[None, :]
    return q


@launcher
@triton.jit
def _cross_entropy_bwd_target_kernel(
    # pointers
    g_ptr, x_ptr, w_ptr, lse_ptr, dt_ptr,
    # sizes
    n_rows, C, R,
    # strides
    stride_gn, stride_gr, stride_xn, stride_xc, stride_xr, stride_dtn, stride_dtc, stride_dtr,
    # options
    scale, HAS_WEIGHT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dp_c = -scale * w_c * (x_c - lse) * g, scale = 1 - eps (probability targets)."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < n_rows
    x_row = x_ptr + _row_start(rows, R, stride_xn, stride_xr)
    dt_row = dt_ptr + _row_start(rows, R, stride_dtn, stride_dtr)
    g = tl.load(g_ptr + _row_start(rows, R, stride_gn, stride_gr), mask=row_mask, other=0.0)
    g = -scale * g.to(tl.float32)
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)
    cols = tl.arange(0, BLOCK_C)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + cols
        c_mask = c < C
        mask = row_mask[:, None] & c_mask[None, :]
        x = tl.load(x_row[:, None] + c[None, :] * stride_xc, mask=mask, other=0.0).to(tl.float32)
        dt = (x - lse[:, None]) * g[:, None]
        if HAS_WEIGHT:
            dt = dt * tl.load(w_ptr + c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
        tl.store(dt_row[:, None] + c[None, :] * stride_dtc, dt.to(dt_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# launchers


def _row_dtype(dtype):
    """Row results are fp32, fp64 for fp64 input (the same contract as the reference)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _index_strides(target):
    """(stride_n, stride_c, stride_r) of a (N, R) index target (no class axis)."""
    return target.stride(0), 0, target.stride(1)


@fp64_to_reference
def cross_entropy_forward(input, target, weight, ignore_index, label_smoothing):
    """input (N, C, R) logits; target (N, R) class indices (int64 or uint8) or (N, C, R)
    probabilities; weight (C,) or None; label_smoothing in [0, 1].
    -> (loss, lse, S), each (N, R) fp32: the row losses (0 where ignored), the row
    log-sum-exp and S = sum_c w_c q_c (0 where ignored)."""
    N, C, R = input.shape
    prob = target.is_floating_point()
    rd = _row_dtype(input.dtype)
    loss, lse, wsum = (torch.empty((N, R), device=input.device, dtype=rd) for _ in range(3))
    n_rows = N * R
    if n_rows == 0:
        return loss, lse, wsum
    block_r, block_c, warps = row_tile(n_rows, C, input.stride(1))
    _cross_entropy_fwd_kernel[(cdiv(n_rows, block_r),)](
        input, target, weight if weight is not None else input, loss, lse, wsum,
        n_rows, C, R, *input.stride(), *(target.stride() if prob else _index_strides(target)),
        ignore_index, float(label_smoothing),
        PROB_TARGET=prob, HAS_WEIGHT=weight is not None, SMOOTHING=label_smoothing > 0,
        BLOCK_R=block_r, BLOCK_C=block_c, num_warps=warps,
    )
    return loss, lse, wsum


@fp64_to_reference
def cross_entropy_backward(grad, input, target, weight, lse, wsum, ignore_index, label_smoothing):
    """grad (N, R), the incoming gradient of the row losses -> grad_input (N, C, R), input's dtype."""
    N, C, R = input.shape
    prob = target.is_floating_point()
    # contiguous whatever the logits' layout, as torch's (a channels_last x gets an NCHW dx)
    grad_input = torch.empty(input.shape, device=input.device, dtype=input.dtype)
    n_rows = N * R
    if n_rows == 0 or C == 0:
        return grad_input
    block_r, block_c, warps = row_tile(n_rows, C, input.stride(1))
    _cross_entropy_bwd_kernel[(cdiv(n_rows, block_r),)](
        grad, input, target, weight if weight is not None else input, lse, wsum, grad_input,
        n_rows, C, R, *grad.stride(), *input.stride(),
        *(target.stride() if prob else _index_strides(target)), *grad_input.stride(),
        ignore_index, float(label_smoothing),
        PROB_TARGET=prob, HAS_WEIGHT=weight is not None, SMOOTHING=label_smoothing > 0,
        SINGLE=C <= block_c, BLOCK_R=block_r, BLOCK_C=block_c, num_warps=warps,
    )
    return grad_input


@fp64_to_reference
def cross_entropy_target_grad(grad, input, weight, lse, label_smoothing):
    """d loss / d target for probability targets: (N, C, R) fp32,
    -(1 - eps) * w_c * log_softmax(x)_c * grad."""
    N, C, R = input.shape
    out = torch.empty((N, C, R), device=input.device, dtype=_row_dtype(input.dtype))
    n_rows = N * R
    if n_rows == 0 or C == 0:
        return out
    block_r, block_c, warps = row_tile(n_rows, C, input.stride(1))
    _cross_entropy_bwd_target_kernel[(cdiv(n_rows, block_r),)](
        grad, input, weight if weight is not None else input, lse, out,
        n_rows, C, R, *grad.stride(), *input.stride(), *out.stride(),
        1.0 - float(label_smoothing), HAS_WEIGHT=weight is not None,
        BLOCK_R=block_r, BLOCK_C=block_c, num_warps=warps,
    )
    return out
