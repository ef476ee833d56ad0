"""Losses on top of kernels/cross_entropy.py's row layout: nll_loss and mse_loss, with
their gradients.

nll_loss: log-probabilities seen as (N, C, R), a row x[n, :, r], target (N, R), as for
cross-entropy; loss = -w_t x_t per row (0 where the target is ignore_index, which is never
used as an index), stored in fp32 (fp64 for fp64 input), reduced on the host side.

mse_loss: elementwise e = w * (x - t)^2; reduced, one fp32 partial sum per program, summed
afterwards. Gradient: dx = 2 w (x - t) g, dt = -dx.
"""

from __future__ import annotations

__all__ = [
    "nll_loss_forward",
    "nll_loss_backward",
    "mse_loss_forward",
    "mse_loss_backward",
]

import torch
import triton
import triton.language as tl

from ._common import INTERPRET, cdiv, flat_view, fp64_to_reference, in_layout_of, inside
from ._launch import launcher
from .cross_entropy import _row_dtype, _row_start
from .softmax import row_tile

MSE_BLOCK = 256 if INTERPRET else 2048  # small under the interpreter: tests reach many programs

# ---------------------------------------------------------------------------------------------
# nll_loss kernels


@launcher
@triton.jit
def _nll_loss_fwd_kernel(
    x_ptr, t_ptr, w_ptr, loss_ptr,
    n_rows, C, R,
    stride_xn, stride_xc, stride_xr, stride_tn, stride_tr,
    ignore_index, HAS_WEIGHT: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """loss[row] = -w_t * x[n, t, r], 0 where t == ignore_index, NaN where t is out of
    [0, C) (rejected on the host or by a device assert; nothing is read). A gather, BLOCK_R
    rows each."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < n_rows
    t = tl.load(t_ptr + _row_start(rows, R, stride_tn, stride_tr), mask=row_mask, other=ignore_index)
    t = t.to(tl.int64)
    valid = row_mask & (t != ignore_index)
    ok = valid & inside(t, C)
    x_t = tl.load(x_ptr + _row_start(rows, R, stride_xn, stride_xr) + t * stride_xc, mask=ok, other=0.0)
    if HAS_WEIGHT:
        w_t = tl.load(w_ptr + t, mask=ok, other=0.0).to(tl.float32)
        loss = -w_t * x_t.to(tl.float32)
    else:
        loss = -x_t.to(tl.float32)
    loss = tl.where(valid, tl.where(ok, loss, float("nan")), 0.0)
    tl.store(loss_ptr + rows, loss.to(loss_ptr.dtype.element_ty), mask=row_mask)


@launcher
@triton.jit
def _nll_loss_bwd_kernel(
    g_ptr, t_ptr, w_ptr, dx_ptr,
    n_rows, C, R,
    stride_gn, stride_gr, stride_tn, stride_tr, stride_dxn, stride_dxc, stride_dxr,
    ignore_index, HAS_WEIGHT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dx[n, c, r] = -w_t * g[row] where c == t (and t is not ignored), else 0.
    Grid (cdiv(rows, BLOCK_R), cdiv(C, BLOCK_C)): every element of dx is written once."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    row_mask = rows < n_rows
    t = tl.load(t_ptr + _row_start(rows, R, stride_tn, stride_tr), mask=row_mask, other=ignore_index)
    t = t.to(tl.int64)
    valid = row_mask & (t != ignore_index) & inside(t, C)  # out of [0, C): no gradient, no read
    g = tl.load(g_ptr + _row_start(rows, R, stride_gn, stride_gr), mask=row_mask, other=0.0)
    v = -g.to(tl.float32)
    if HAS_WEIGHT:
        v = v * tl.load(w_ptr + t, mask=valid, other=0.0).to(tl.float32)
    v = tl.where(valid, v, 0.0)
    dx = tl.where(c[None, :] == t[:, None], v[:, None], 0.0)
    dx_ptrs = dx_ptr + _row_start(rows, R, stride_dxn, stride_dxr)[:, None] + c[None, :] * stride_dxc
    tl.store(dx_ptrs, dx.to(dx_ptr.dtype.element_ty), mask=row_mask[:, None] & (c < C)[None, :])


# ---------------------------------------------------------------------------------------------
# mse_loss kernels (flat contiguous memory)


@launcher
@triton.jit
def _mse_loss_fwd_kernel(
    x_ptr, t_ptr, w_ptr, out_ptr, n,
    HAS_WEIGHT: tl.constexpr, REDUCE: tl.constexpr, BLOCK: tl.constexpr,
):
    """out = w (x - t)^2 elementwise, or (REDUCE) out[pid] = this program's fp32 partial sum."""
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    d = x - t
    e = d * d
    if HAS_WEIGHT:
        e = e * tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if REDUCE:
        partial = tl.sum(e, axis=0)  # masked lanes are (0 - 0)^2
        tl.store(out_ptr + pid, partial.to(out_ptr.dtype.element_ty))
    else:
        tl.store(out_ptr + offs, e.to(out_ptr.dtype.element_ty), mask=mask)


@launcher
@triton.jit
def _mse_loss_bwd_kernel(
    g_ptr, x_ptr, t_ptr, w_ptr, dx_ptr, n,
    HAS_WEIGHT: tl.constexpr, SCALAR_GRAD: tl.constexpr, BLOCK: tl.constexpr,
):
    """dx = 2 w (x - t) g; g is one value (a reduced loss) or elementwise."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if SCALAR_GRAD:
        g = tl.load(g_ptr).to(tl.float32)
    else:
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dx = (x - t) * (2.0 * g)  # as torch's: 2 (x - t) would overflow first for |x - t| > max / 2
    if HAS_WEIGHT:
        dx = dx * tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# launchers


@fp64_to_reference
def nll_loss_forward(input, target, weight, ignore_index):
    """input (N, C, R) log-probabilities, target (N, R) -> row losses (N, R), fp32 (fp64
    for fp64 input)."""
    N, C, R = input.shape
    loss = torch.empty((N, R), device=input.device, dtype=_row_dtype(input.dtype))
    n_rows = N * R
    if n_rows == 0:
        return loss
    block_r = 16 if INTERPRET else 256
    _nll_loss_fwd_kernel[(cdiv(n_rows, block_r),)](
        input, target, weight if weight is not None else input, loss, n_rows, C, R,
        *input.stride(), *target.stride(), ignore_index,
        HAS_WEIGHT=weight is not None, BLOCK_R=block_r,
    )
    return loss


@fp64_to_reference
def nll_loss_backward(grad, target, weight, ignore_index, num_classes, dtype):
    """grad (N, R) -> grad_input (N, C, R) of ``dtype``, contiguous."""
    N, R = target.shape
    C = num_classes
    grad_input = torch.empty((N, C, R), device=target.device, dtype=dtype)
    n_rows = N * R
    if n_rows == 0 or C == 0:
        return grad_input
    block_r, block_c, warps = row_tile(n_rows, C, grad_input.stride(1))
    grid = (cdiv(n_rows, block_r), cdiv(C, block_c))
    _nll_loss_bwd_kernel[grid](
        grad, target, weight if weight is not None else grad, grad_input, n_rows, C, R,
        *grad.stride(), *target.stride(), *grad_input.stride(), ignore_index,
        HAS_WEIGHT=weight is not None, BLOCK_R=block_r, BLOCK_C=block_c, num_warps=warps,
    )
    return grad_input


@fp64_to_reference
def mse_loss_forward(input, target, weight, reduce):
    """input, target (and weight) of one shape and dtype. reduce: the fp32 sum of
    w (x - t)^2 as a 0-d tensor (per-program partials, then one sum); else the elementwise
    loss in input's dtype and shape, laid out as ``empty_like(input)`` (torch's elementwise
    layout: a channels_last input gives a channels_last loss). Every operand walks memory in
    input's order: a dense input and a target of its layout are read in place."""
    x = flat_view(input)
    t = in_layout_of(target, x)
    w = in_layout_of(weight, x) if weight is not None else x
    n = x.numel()
    grid = (cdiv(n, MSE_BLOCK),)
    if reduce:
        partials = torch.empty(grid[0], device=x.device, dtype=_row_dtype(x.dtype))
    else:
        out = torch.empty_like(x)
    if n:
        _mse_loss_fwd_kernel[grid](
            x, t, w, partials if reduce else out, n,
            HAS_WEIGHT=weight is not None, REDUCE=reduce, BLOCK=MSE_BLOCK,
        )
    return partials.sum() if reduce else out


@fp64_to_reference
def mse_loss_backward(grad, input, target, weight, reduce):
    """grad: 0-d (reduce) or input's shape -> grad_input, input's dtype and shape, contiguous
    (torch's mse_loss_backward allocates it so, whatever input's layout)."""
    x, t = input.contiguous(), target.contiguous()
    w = weight.contiguous() if weight is not None else x
    g = grad if reduce else grad.contiguous()
    grad_input = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    n = x.numel()
    if n:
        _mse_loss_bwd_kernel[(cdiv(n, MSE_BLOCK),)](
            g, x, t, w, grad_input, n,
            HAS_WEIGHT=weight is not None, SCALAR_GRAD=reduce, BLOCK=MSE_BLOCK,
        )
    return grad_input
