"""Explicit im2col (``unfold``) and its adjoint col2im (``fold``), both as gathers that read
their input through its strides (NCHW, channels_last or any strided view).

Shapes: x (N, C, H, W), cols (N, C*KH*KW, L) with L = OH*OW, row r = (c, kh, kw) (the order of
a conv weight's (C, KH, KW)), column l = (oh, ow);
OH = (H + 2*PH - DH*(KH-1) - 1) // SH + 1, and OW the same way.

unfold   cols[n, (c,kh,kw), (oh,ow)] = x[n, c, oh*SH - PH + kh*DH, ow*SW - PW + kw*DW],
         0 where that pixel lies in the padding (a masked load). A pure copy: no arithmetic,
         the dtype is kept. One program copies a (BLOCK_R, BLOCK_L) tile of one image n's
         (C*KH*KW, L) block: BLOCK_R rows (c, kh, kw) by BLOCK_L window positions (oh, ow).
         Stores are contiguous along l; loads are contiguous along l too for NCHW input with
         stride 1 (neighbouring ow read neighbouring iw). Index arithmetic is per row and per
         column (1-D), broadcast into the tile.
         Grid: N * cdiv(C*KH*KW, BLOCK_R) * cdiv(L, BLOCK_L), flattened.
fold     the adjoint of unfold (so unfold's backward, and fold's backward is unfold):
         y[n, c, ih, iw] = sum over taps (kh, kw) of cols[n, (c,kh,kw), (oh,ow)] where
         oh*SH = ih + PH - kh*DH and ow*SW = iw + PW - kw*DW, both divisible and in range.
         Written as a gather, not a scatter: each output pixel walks the KH*KW taps and reads
         the at most one column entry per tap that covers it (the divisibility test is a mask),
         so there are no atomics, every pixel is summed in the same (kh, kw) order on every run
         (deterministic), and each output element is written exactly once. fp32 accumulation
         (fp64 for fp64), one cast on store. One program sums a (BLOCK_C, BLOCK_P) tile:
         channels c of one image n by BLOCK_P output pixels (ih, iw).
         Grid: N * cdiv(C, BLOCK_C) * cdiv(H*W, BLOCK_P), flattened.
Offsets are int64: cols of a large feature map passes 2**31 elements long before x does.
One flattened grid axis (limit 2**31 - 1 programs) rather than three (the 2nd and 3rd are
limited to 65535 on CUDA, which N or C*KH*KW / BLOCK_R can pass).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import cdiv, next_power_of_2
from ._launch import launcher

__all__ = ["unfold_forward", "fold_forward"]

# elements per program: memory-bound copies/sums, so tiles of ~1k elements (4 warps) keep
# enough loads in flight; blocks shrink to small dimensions so few lanes idle
TILE = 1024
MAX_BLOCK_L = 256  # unfold: output row segment (contiguous)
MAX_BLOCK_C = 16  # fold: channels per program

# ---------------------------------------------------------------------------------------------
# kernels


@launcher
@triton.jit
def _unfold_kernel(
    # pointers
    x_ptr, y_ptr,
    # sizes
    C, H, W, OH, OW, KH, KW,
    # strides: x (N, C, H, W) as given, y (N, C*KH*KW, L)
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_yn, stride_yr, stride_yl,
    # window parameters
    SH, SW, PH, PW, DH, DW,
    BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr,
):
    # program id -> (n, row block, l block), l fastest: neighbouring programs read
    # neighbouring (overlapping) input windows
    R = C * KH * KW
    L = OH * OW
    tiles_l = tl.cdiv(L, BLOCK_L)
    tiles_r = tl.cdiv(R, BLOCK_R)
    pid = tl.program_id(0)
    pid_l = pid % tiles_l
    pid_r = (pid // tiles_l) % tiles_r
    n = (pid // (tiles_l * tiles_r)).to(tl.int64)

    r = (pid_r * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)  # output row (c, kh, kw)
    l = (pid_l * BLOCK_L + tl.arange(0, BLOCK_L)).to(tl.int64)  # window position (oh, ow)
    mask_r = r < R
    mask_l = l < L
    c = r // (KH * KW)
    kh = (r // KW) % KH
    kw = r % KW
    oh = l // OW
    ow = l % OW
    # (BLOCK_R, BLOCK_L) input coordinates; zero padding = masked load
    ih = (oh * SH - PH)[None, :] + (kh * DH)[:, None]
    iw = (ow * SW - PW)[None, :] + (kw * DW)[:, None]
    mask = mask_r[:, None] & mask_l[None, :]
    inside = mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)

    x_ptrs = x_ptr + n * stride_xn + (c * stride_xc)[:, None] + ih * stride_xh + iw * stride_xw
    v = tl.load(x_ptrs, mask=inside, other=0.0)
    y_ptrs = y_ptr + n * stride_yn + (r * stride_yr)[:, None] + (l * stride_yl)[None, :]
    tl.store(y_ptrs, v, mask=mask)


@launcher
@triton.jit
def _fold_kernel(
    # pointers
    cols_ptr, y_ptr,
    # sizes: cols (N, C*KH*KW, OH*OW), y (N, C, H, W)
    C, H, W, OH, OW, KH, KW,
    # strides
    stride_cn, stride_cr, stride_cl,
    stride_yn, stride_yc, stride_yh, stride_yw,
    # window parameters (of the unfold this inverts)
    SH, SW, PH, PW, DH, DW,
    FP64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    P = H * W
    tiles_p = tl.cdiv(P, BLOCK_P)
    tiles_c = tl.cdiv(C, BLOCK_C)
    pid = tl.program_id(0)
    pid_p = pid % tiles_p
    pid_c = (pid // tiles_p) % tiles_c
    n = (pid // (tiles_p * tiles_c)).to(tl.int64)

    c = (pid_c * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)  # channel
    p = (pid_p * BLOCK_P + tl.arange(0, BLOCK_P)).to(tl.int64)  # output pixel (ih, iw)
    mask_c = c < C
    mask_p = p < P
    ih = p // W
    iw = p % W
    col_base = cols_ptr + n * stride_cn + (c * (KH * KW) * stride_cr)[:, None]  # row (c, 0, 0)

    # accumulate in fp32 (fp64 for fp64 input): one rounding per output element
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float64 if FP64 else tl.float32)
    for kh in range(KH):
        # the window row whose tap kh lands on ih: oh*SH = ih + PH - kh*DH, when divisible
        th = ih + PH - kh * DH
        oh = th // SH  # th >= 0 is tested, so C's truncating division is floor here
        mask_h = mask_p & (th >= 0) & (th - oh * SH == 0) & (oh < OH)
        for kw in range(KW):
            tw = iw + PW - kw * DW
            ow = tw // SW
            mask_hw = mask_h & (tw >= 0) & (tw - ow * SW == 0) & (ow < OW)
            tap = (kh * KW + kw).to(tl.int64)  # row (c, kh, kw) = row (c, 0, 0) + tap
            ptrs = col_base + tap * stride_cr + ((oh * OW + ow) * stride_cl)[None, :]
            v = tl.load(ptrs, mask=mask_c[:, None] & mask_hw[None, :], other=0.0)
            acc += v.to(acc.dtype)

    y_ptrs = y_ptr + n * stride_yn + (c * stride_yc)[:, None] + (ih * stride_yh + iw * stride_yw)[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask_c[:, None] & mask_p[None, :])


# ---------------------------------------------------------------------------------------------
# launchers


def _out_size(size, k, d, p, s):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _launch_unfold(x, y, kernel, dilation, padding, stride):
    """Fill y (N, C*KH*KW, L) from x (N, C, H, W); y may be any strided tensor."""
    N, C, H, W = x.shape
    (KH, KW), (DH, DW), (PH, PW), (SH, SW) = kernel, dilation, padding, stride
    OH, OW = _out_size(H, KH, DH, PH, SH), _out_size(W, KW, DW, PW, SW)
    # long contiguous output rows first, then as many rows as fill the tile
    block_l = min(next_power_of_2(OH * OW), MAX_BLOCK_L)
    block_r = min(next_power_of_2(C * KH * KW), max(1, TILE // block_l))
    grid = (N * cdiv(C * KH * KW, block_r) * cdiv(OH * OW, block_l),)
    _unfold_kernel[grid](
        x, y,
        C, H, W, OH, OW, KH, KW,
        *x.stride(), *y.stride(),
        SH, SW, PH, PW, DH, DW,
        BLOCK_R=block_r, BLOCK_L=block_l,
    )


def _launch_fold(cols, y, kernel, dilation, padding, stride):
    """Fill y (N, C, H, W) with the sum of the columns cols (N, C*KH*KW, L) cover."""
    N, C, H, W = y.shape
    (KH, KW), (DH, DW), (PH, PW), (SH, SW) = kernel, dilation, padding, stride
    OH, OW = _out_size(H, KH, DH, PH, SH), _out_size(W, KW, DW, PW, SW)
    # a few channels (C is 1 or 3 at a network's input), then pixels to fill the tile
    block_c = min(next_power_of_2(C), MAX_BLOCK_C)
    block_p = min(next_power_of_2(H * W), max(16, TILE // block_c))
    grid = (N * cdiv(C, block_c) * cdiv(H * W, block_p),)
    _fold_kernel[grid](
        cols, y,
        C, H, W, OH, OW, KH, KW,
        *cols.stride(), *y.stride(),
        SH, SW, PH, PW, DH, DW,
        FP64=cols.dtype == torch.float64, BLOCK_C=block_c, BLOCK_P=block_p,
    )


def unfold_forward(input, kernel, dilation, padding, stride):
    """(N, C, H, W) -> (N, C*KH*KW, OH*OW), contiguous, in input's dtype."""
    N, C, H, W = input.shape
    (KH, KW), (DH, DW), (PH, PW), (SH, SW) = kernel, dilation, padding, stride
    L = _out_size(H, KH, DH, PH, SH) * _out_size(W, KW, DW, PW, SW)
    y = torch.empty((N, C * KH * KW, L), device=input.device, dtype=input.dtype)
    if y.numel():
        _launch_unfold(input, y, kernel, dilation, padding, stride)
    return y


def fold_forward(cols, output_size, kernel, dilation, padding, stride):
    """(N, C*KH*KW, L) -> (N, C, H, W) with (H, W) = output_size, contiguous, cols' dtype."""
    N, R, _ = cols.shape
    (KH, KW), (H, W) = kernel, output_size
    y = torch.empty((N, R // (KH * KW), H, W), device=cols.device, dtype=cols.dtype)
    if y.numel():
        _launch_fold(cols, y, kernel, dilation, padding, stride)
    return y
