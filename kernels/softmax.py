"""softmax and log_softmax over the middle dimension of an (outer, C, inner) tensor, and their
gradients.

Layout: any tensor and any dim is viewed as (outer, C, inner) (dims before ``dim`` fold into
outer, dims after it into inner), so a row is the C elements x[o, :, i], at stride stride_xc.
The launcher takes strides, so neither the last dim nor dim 1 of a channels_last tensor needs
a copy. One program handles a (BLOCK_R rows, BLOCK_C classes) tile; rows are numbered
o * inner + i. When the class axis is contiguous the tile is wide (long rows, a few rows per
program); when it is strided (dim 1 of NCHW) neighbouring rows are neighbouring addresses, so
the tile is tall and its loads stay coalesced along the row axis (see row_tile).
Grid: cdiv(outer * inner, BLOCK_R).

Forward, per row, numerically stable (max subtraction):
  m = max_c x_c,  s = sum_c exp(x_c - m),  lse = m + log(s)
  softmax y_c = exp(x_c - m) / s        log_softmax y_c = (x_c - m) - log(s)
log_softmax keeps a confident row's digits, where log(s) is near 0: it subtracts in that order
(x_c - lse would first round log(s) to the ulp of m, ~2e-6 at m = 20), and takes log(s) as
log1p(s - 1) with s - 1 summed without the max's own 1 (online_rest), so log(s) is accurate
to a few ulps of itself, not of 1 (torch's log of a rounded s is not: ~6e-4 relative where
log(s) is 1e-4).
A row that fits one block is loaded once and kept in registers. A longer row makes two passes:
the first keeps a running max and rescales the running sum when the max grows
(s <- s * exp(m_old - m_new) + sum exp(x - m_new), one read; kept as s - 1), the second
writes y.
An all -inf row has m = -inf; the max is then taken as 0 so that s = 0 and y = 0/0 = NaN, as in
torch (which computes -inf - -inf).

Backward, from the saved output y (dy the incoming gradient, J the Jacobian of one row):
  softmax      dy/dx: J = diag(y) - y y^T   ->  dx = y * (dy - sum_c dy_c y_c)
  log_softmax  y = x - lse, d lse/dx = softmax = exp(y)  ->  dx = dy - exp(y) * sum_c dy_c
Both need one row reduction before any dx can be written: one pass when the row fits a block,
else two (reduce, then write).
"""

from __future__ import annotations

__all__ = ["softmax_forward", "softmax_backward"]

import torch
import triton
import triton.language as tl

from ._common import INTERPRET, cdiv, fp64_to_reference, log1p, next_power_of_2
from ._launch import launcher

# ---------------------------------------------------------------------------------------------
# tile sizes (shared with kernels/cross_entropy.py and kernels/loss.py, whose kernels reduce rows
# of the same layout)


def row_tile(n_rows: int, C: int, stride_c: int) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_C, num_warps) for a kernel reducing over C in (outer, C, inner), whose
    class axis has stride ``stride_c`` in the tensor that dominates the traffic.

    On a GPU a tile holds up to 4096 fp32 values (16 per thread at 8 warps). Under the
    interpreter blocks are small so that tests reach the multi-block path with small rows."""
    max_c, max_tile, max_r = (32, 512, 16) if INTERPRET else (4096, 4096, 64)
    block_c = min(next_power_of_2(max(C, 1)), max_c)
    if stride_c != 1 and C > 1:
        # the class axis is strided (NCHW, dim 1): neighbouring rows are neighbouring
        # addresses, so take many rows and fewer classes
        block_r = min(next_power_of_2(max(n_rows, 1)), max_r)
        block_c = min(block_c, max(max_tile // block_r, 1))
    else:
        # rows are contiguous along C; pack several short rows into one program, but no more
        # than 16 so that the grid keeps enough programs to fill the device
        block_r = min(max(max_tile // block_c, 1), 16, next_power_of_2(max(n_rows, 1)))
    num_warps = 8 if block_r * block_c >= 2048 else 4
    return block_r, block_c, num_warps


@triton.jit
def _add_pair(a0, a1, b0, b1):
    return a0 + b0, a1 + b1


@triton.jit
def online_rest(x, m, rest):
    """One (BLOCK_R, BLOCK_C) block of rows x into a running (max m, rest): rest = s - 1,
    s = sum exp(x - max), i.e. the sum without one occurrence of the max, whose 1 would
    otherwise swallow a confident row's digits (log s = log1p(rest)). Start from m = -inf,
    rest = 0. When the max grows, the old max's 1 and rest scale by exp(m_old - m_new), the
    block's copies of the new max are left out of its sum (e - 1 = 0 there; NaN for a +inf
    max, which poisons the row as torch's -inf - -inf does) and all but one added back as a
    count; a block that ties the running max counts its copies as the 1s they are. Two row
    reductions, as a plain online log-sum-exp: the max, and (sum, count) as one pair.
    -> (m_new, shift, rest): shift = m_new, or 0 while m_new = -inf."""
    m_new = tl.maximum(m, tl.max(x, axis=1))
    shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    e = tl.exp(x - shift[:, None])
    grown = m_new > m
    top = (x == m_new[:, None]) & grown[:, None]
    blk, count = tl.reduce((tl.where(top, e - 1.0, e), top.to(tl.float32)), 1, _add_pair)
    f = tl.where(m == float("-inf"), 0.0, tl.exp(m - shift))
    return m_new, shift, tl.where(grown, (rest * f + f) + (count - 1.0), rest) + blk


@triton.jit
def online_sum(x, m, s):
    """One (BLOCK_R, BLOCK_C) block of rows x into a running (max m, s = sum exp(x - m)), the
    old sum rescaled by exp(m_old - m_new) when the max grows: the plain online softmax sum,
    for softmax, whose y = exp(x - m) / s needs no s - 1 (online_rest). Start from m = -inf,
    s = 0; a row without a finite max keeps s = 0 (y = 0/0 = NaN, as torch), a +inf max gives
    s = NaN (inf - inf), which poisons the row as torch's does."""
    m_new = tl.maximum(m, tl.max(x, axis=1))
    shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    f = tl.where(m == float("-inf"), 0.0, tl.exp(m - shift))
    return m_new, s * f + tl.sum(tl.exp(x - shift[:, None]), axis=1)


@triton.jit
def log_sum(m, rest):
    """log s from online_rest's (m, rest): -inf for a row without a finite max (s = 0)."""
    return tl.where(m == float("-inf"), float("-inf"), log1p(rest))


# ---------------------------------------------------------------------------------------------
# kernels


@launcher
@triton.jit
def _softmax_fwd_kernel(
    # pointers
    x_ptr, y_ptr,
    # sizes: rows = outer * inner
    n_rows, C, inner,
    # strides of the (outer, C, inner) views
    stride_xo, stride_xc, stride_xi, stride_yo, stride_yc, stride_yi,
    # options and tile
    LOG: tl.constexpr, SINGLE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < n_rows
    o = rows // inner
    i = rows % inner
    x_row = x_ptr + o * stride_xo + i * stride_xi  # (BLOCK_R,) pointers to element 0 of a row
    y_row = y_ptr + o * stride_yo + i * stride_yi
    cols = tl.arange(0, BLOCK_C)

    if SINGLE:
        mask = row_mask[:, None] & (cols < C)[None, :]
        x = tl.load(x_row[:, None] + cols[None, :] * stride_xc, mask=mask, other=float("-inf"))
        x = x.to(tl.float32)  # compute in fp32, cast once on store
        if LOG:
            init = tl.full((BLOCK_R,), float("-inf"), tl.float32)
            m, shift, rest = online_rest(x, init, tl.zeros((BLOCK_R,), tl.float32))
            y = (x - shift[:, None]) - log_sum(m, rest)[:, None]  # all -inf row: NaN, as torch
        else:
            m = tl.max(x, axis=1)
            m = tl.where(m == float("-inf"), 0.0, m)  # all -inf row: s = 0 and y = NaN, as torch
            e = tl.exp(x - m[:, None])
            y = e / tl.sum(e, axis=1)[:, None]
        tl.store(y_row[:, None] + cols[None, :] * stride_yc, y.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        # pass 1: running max m and sum, rescaled whenever m grows: rest = s - 1 for
        # log_softmax (online_rest: a confident row's log s = log1p(rest)), s for softmax
        m = tl.full((BLOCK_R,), float("-inf"), tl.float32)
        acc = tl.zeros((BLOCK_R,), tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cols
            mask = row_mask[:, None] & (c < C)[None, :]
            x = tl.load(x_row[:, None] + c[None, :] * stride_xc, mask=mask, other=float("-inf"))
            if LOG:
                m, _, acc = online_rest(x.to(tl.float32), m, acc)
            else:
                m, acc = online_sum(x.to(tl.float32), m, acc)
        if LOG:
            log_s = log_sum(m, acc)
        m = tl.where(m == float("-inf"), 0.0, m)
        # pass 2: write y
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cols
            mask = row_mask[:, None] & (c < C)[None, :]
            x = tl.load(x_row[:, None] + c[None, :] * stride_xc, mask=mask, other=0.0)
            x = x.to(tl.float32)
            if LOG:
                y = (x - m[:, None]) - log_s[:, None]
            else:
                y = tl.exp(x - m[:, None]) / acc[:, None]  # acc = s; all -inf row: 0/0 = NaN
            tl.store(y_row[:, None] + c[None, :] * stride_yc, y.to(y_ptr.dtype.element_ty), mask=mask)


@launcher
@triton.jit
def _softmax_bwd_kernel(
    # pointers
    dy_ptr, y_ptr, dx_ptr,
    # sizes
    n_rows, C, inner,
    # strides of the (outer, C, inner) views
    stride_dyo, stride_dyc, stride_dyi, stride_yo, stride_yc, stride_yi,
    stride_dxo, stride_dxc, stride_dxi,
    # options and tile
    LOG: tl.constexpr, SINGLE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """softmax: dx = y * (dy - sum(dy * y));  log_softmax: dx = dy - exp(y) * sum(dy)."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < n_rows
    o = rows // inner
    i = rows % inner
    dy_row = dy_ptr + o * stride_dyo + i * stride_dyi
    y_row = y_ptr + o * stride_yo + i * stride_yi
    dx_row = dx_ptr + o * stride_dxo + i * stride_dxi
    cols = tl.arange(0, BLOCK_C)

    if SINGLE:
        mask = row_mask[:, None] & (cols < C)[None, :]
        dy = tl.load(dy_row[:, None] + cols[None, :] * stride_dyc, mask=mask, other=0.0).to(tl.float32)
        y = tl.load(y_row[:, None] + cols[None, :] * stride_yc, mask=mask, other=0.0).to(tl.float32)
        if LOG:
            dx = dy - tl.exp(y) * tl.sum(dy, axis=1)[:, None]
        else:
            dx = y * (dy - tl.sum(dy * y, axis=1)[:, None])
        tl.store(dx_row[:, None] + cols[None, :] * stride_dxc, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    else:
        # pass 1: the row reduction (fp32)
        acc = tl.zeros((BLOCK_R,), tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cols
            mask = row_mask[:, None] & (c < C)[None, :]
            dy = tl.load(dy_row[:, None] + c[None, :] * stride_dyc, mask=mask, other=0.0).to(tl.float32)
            if LOG:
                acc += tl.sum(dy, axis=1)
            else:
                y = tl.load(y_row[:, None] + c[None, :] * stride_yc, mask=mask, other=0.0).to(tl.float32)
                acc += tl.sum(dy * y, axis=1)
        # pass 2: write dx
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cols
            mask = row_mask[:, None] & (c < C)[None, :]
            dy = tl.load(dy_row[:, None] + c[None, :] * stride_dyc, mask=mask, other=0.0).to(tl.float32)
            y = tl.load(y_row[:, None] + c[None, :] * stride_yc, mask=mask, other=0.0).to(tl.float32)
            if LOG:
                dx = dy - tl.exp(y) * acc[:, None]
            else:
                dx = y * (dy - acc[:, None])
            tl.store(dx_row[:, None] + c[None, :] * stride_dxc, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# launchers


@fp64_to_reference
def softmax_forward(input, log):
    """input (outer, C, inner), any strides -> softmax (or log_softmax) over dim 1, same
    dtype, contiguous (as torch's, whatever the input's layout)."""
    outer, C, inner = input.shape
    out = torch.empty(input.shape, dtype=input.dtype, device=input.device)
    n_rows = outer * inner
    if n_rows == 0 or C == 0:
        return out
    block_r, block_c, warps = row_tile(n_rows, C, input.stride(1))
    _softmax_fwd_kernel[(cdiv(n_rows, block_r),)](
        input, out, n_rows, C, inner, *input.stride(), *out.stride(),
        LOG=log, SINGLE=C <= block_c, BLOCK_R=block_r, BLOCK_C=block_c, num_warps=warps,
    )
    return out


@fp64_to_reference
def softmax_backward(grad_output, output, log):
    """dx (outer, C, inner), contiguous as torch's, from dy and the forward's output y (both
    (outer, C, inner), any strides)."""
    outer, C, inner = output.shape
    grad_input = torch.empty(output.shape, dtype=output.dtype, device=output.device)
    n_rows = outer * inner
    if n_rows == 0 or C == 0:
        return grad_input
    block_r, block_c, warps = row_tile(n_rows, C, output.stride(1))
    _softmax_bwd_kernel[(cdiv(n_rows, block_r),)](
        grad_output, output, grad_input, n_rows, C, inner,
        *grad_output.stride(), *output.stride(), *grad_input.stride(),
        LOG=log, SINGLE=C <= block_c, BLOCK_R=block_r, BLOCK_C=block_c, num_warps=warps,
    )
    return grad_input
