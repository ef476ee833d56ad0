"""Gradients of kernels/conv.py's convolution (same shapes and names): the input gradient,
which is also conv_transpose2d's forward, and the weight and bias gradients.

input grad    dx[n, ci, ih, iw] = sum_{co,kh,kw} dy[n, co, oh, ow] * w[co, ci, kh, kw]
              where oh*SH = ih + PH - kh*DH (divisible, in range): per group and per
              parity phase of (ih, iw) a GEMM with M = N*H*W/(SH*SW), N = Cg, K = Og*taps;
              each phase loops over only the taps the stride lets reach it (no
              zero-inserted tensor, no masked-out MMA work). Split-K as the forward's
              (conv._split_gemm) where the tiles cannot fill the GPU.
              With w read as (C_in_t, C_out_t/G, KH, KW) it is conv_transpose2d's forward.
weight grad   dw[co, ci, kh, kw] = sum_{n,oh,ow} dy[n, co, oh, ow] * x[n, ci, ih, iw]:
              per (kh, kw) a GEMM with M = Og, N = Cg, K = N*OH*OW (with fewer than
              FLAT_K_BELOW channels per group, one GEMM with N = (c, kh, kw) of the whole
              filter instead; for 3 channels, N = (kh, kw, c) over x padded to 4 channels,
              a pixel one vector, as in the forward). K is split over SPLIT
              programs writing fp32 partials of dw and db into one buffer, summed in split
              order and cast in one pass (conv._sum_splits: deterministic; small-batch,
              large-image layers still fill the GPU). The bias gradient (row sums of dy),
              when a bias needs it (bias_grad), is accumulated by the programs of the first
              (ci, kh, kw) tile.
Programs: one (BLOCK_M, BLOCK_N) output tile each; grid (tiles, G*SH*SW, split) for the input
gradient, (tiles, KH*KW, G*SPLIT) for the weight gradient.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from ..reference._common import conv_memory_format, in_format
from ._common import (
    GRID_AXIS_MAX,
    INTERPRET,
    cdiv,
    check_grid_axes,
    fp64_to_reference,
    gemm_configs,
    grouped_tile,
    index64,
    inside,
    num_sms,
    upcast_dot,
)
from .conv import (
    PAD_RGB,
    _align,
    _autotuned,
    _cap_warps,
    _configs,
    _flat,
    _index,
    _k_share,
    _next_tap,
    _pad_channels,
    _precision,
    _reduce_split,
    _split_gemm,
    _stage,
    _sum_splits,
)
from .depthwise import depthwise, depthwise_input_grad, depthwise_weight_grad

__all__ = ["conv2d_input_grad", "conv2d_weight_grad"]


# ---------------------------------------------------------------------------------------------
# autotune configs of the weight gradient (the input gradient shares the forward's)


def _wgrad_configs():
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32})]
    return _cap_warps(gemm_configs(
        [
            (64, 64, 64, 3, 4),
            (64, 64, 128, 3, 4),
            (128, 64, 32, 4, 4),
            (64, 128, 32, 4, 4),
            (128, 128, 32, 3, 8),
            (32, 32, 64, 4, 2),
            (16, 16, 64, 4, 2),
        ]
    ))


# ---------------------------------------------------------------------------------------------
# kernels


@triton.jit
def _conv2d_bwd_input_kernel(
    # pointers; taps_ptr: int32 (SH*SW, 4) = first kh, kh step, first kw, kw step per phase;
    # with SPLIT_K, dx_ptr is an fp32 (SPLIT, NB*H*W, G*Cg) buffer of partial sums
    # b_ptr: a bias of G*Cg (conv_transpose2d's, added before the one rounding; HAS_BIAS)
    dy_ptr, w_ptr, dx_ptr, taps_ptr, b_ptr,
    # sizes: dx is (NB, G*Cg, H, W), dy is (NB, G*Og, OH, OW); SPLIT programs share a K loop
    NB, Cg, H, W, Og, OH, OW, KH, KW, SPLIT,
    # strides
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_wo, stride_wc, stride_wh, stride_ww,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    # convolution parameters (of the forward convolution); the strides compile in, so the
    # per-row divisions by them in the tap loop are shifts (1 and 2 in every common network)
    SH: tl.constexpr, SW: tl.constexpr, PH, PW, DH, DW,
    # the largest power of 2 dividing Og, the K channels (conv._align)
    C_ALIGN: tl.constexpr, SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr,
    INDEX64: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # Parity split (a strided dgrad as SH*SW dense sub-convolutions): input pixel ih reads
    # tap kh only where SH divides ih + PH - kh*DH. Grouping the pixels by phase
    # rh = (ih + PH) % SH leaves, per program, exactly the taps with kh*DH = rh (mod SH): an
    # arithmetic progression from the host's table, so no load or MMA is spent on a tap that
    # the stride rules out, and a phase without taps just writes zeros.
    g = tl.program_id(1) // (SH * SW)
    phase = tl.program_id(1) % (SH * SW)
    rh = phase // SW
    rw = phase % SW
    ih0 = (rh + SH - PH % SH) % SH  # first input row / column of this phase
    iw0 = (rw + SW - PW % SW) % SW
    Hp = tl.maximum(H - ih0 + SH - 1, 0) // SH  # rows / columns of this phase
    Wp = tl.maximum(W - iw0 + SW - 1, 0) // SW
    M = NB * Hp * Wp
    if tl.program_id(0) >= tl.cdiv(M, BLOCK_M) * tl.cdiv(Cg, BLOCK_N):
        return  # the grid is sized for the largest phase
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, Cg, BLOCK_M, BLOCK_N, GROUP_M)

    rm = _index(pid_m * BLOCK_M + tl.arange(0, BLOCK_M), INDEX64)  # input pixel of the phase
    rn = _index(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), INDEX64)  # input channel in group
    rk = _index(tl.arange(0, BLOCK_K), INDEX64)  # output channel in group (inner K)
    mask_m = rm < M
    mask_n = rn < Cg
    # rows past M gather row M-1 (in bounds, never stored): the dy loads need no row mask.
    # (Columns keep their mask: they are the weight's contiguous channels in channels_last,
    # and a clamped column index would cost those loads their 16-byte vectors.)
    rm_in = tl.minimum(rm, M - 1)
    jw = rm_in % Wp  # (row, column) of the pixel within its phase
    jh = (rm_in // Wp) % Hp
    n = rm_in // (Wp * Hp)
    iw = iw0 + jw * SW
    ih = ih0 + jh * SH
    ci = g * Cg + rn
    dy_row = dy_ptr + n * stride_dyn + (g * Og) * stride_dyc + jh * stride_dyh + jw * stride_dyw
    w_base = w_ptr + rn * stride_wc + (g * Og) * stride_wo

    kh0 = tl.load(taps_ptr + phase * 4)
    kh_step = tl.load(taps_ptr + phase * 4 + 1)
    kw0 = tl.load(taps_ptr + phase * 4 + 2)
    kw_step = tl.load(taps_ptr + phase * 4 + 3)
    KHp = tl.maximum(KH - kh0 + kh_step - 1, 0) // kh_step  # taps of this phase
    KWp = tl.maximum(KW - kw0 + kw_step - 1, 0) // kw_step

    # this program's share of the K loop: steps [t0, t1) of T (program_id(2) of SPLIT), and
    # the (tap, channel block) of step t0
    T = KHp * KWp * tl.cdiv(Og, BLOCK_K)
    t0, t1 = _k_share(T, SPLIT, tl.program_id(2))
    nblk = tl.cdiv(Og, BLOCK_K)
    c0 = (t0 % nblk) * BLOCK_K
    kw = kw0 + ((t0 // nblk) % tl.maximum(KWp, 1)) * kw_step
    kh = kh0 + (t0 // (nblk * tl.maximum(KWp, 1))) * kh_step

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for _t in range(t0, t1):
        c = c0 + rk
        # the output pixel this tap reads from: oh*SH = ih + PH - kh*DH, and with ih = ih0 +
        # jh*SH that is oh = jh + dh, dh = (ih0 + PH - kh*DH) / SH exactly (the phase keeps only
        # the taps that make it divisible): the same shift for every row of the tile
        dh = (ih0 + PH - kh * DH) // SH
        dw = (iw0 + PW - kw * DW) // SW
        mask_y = inside(jh + dh, OH) & inside(jw + dw, OW)
        a_ptrs = dy_row[:, None] + (dh * stride_dyh + dw * stride_dyw + c * stride_dyc)[None, :]
        b_ptrs = w_base[None, :] + (kh * stride_wh + kw * stride_ww) + c[:, None] * stride_wo
        if C_ALIGN % BLOCK_K == 0:
            a = tl.load(a_ptrs, mask=mask_y[:, None], other=0.0)
            b = tl.load(b_ptrs, mask=mask_n[None, :], other=0.0)
        else:
            mask_c = c < Og
            a = tl.load(a_ptrs, mask=mask_y[:, None] & mask_c[None, :], other=0.0)
            b = tl.load(b_ptrs, mask=mask_c[:, None] & mask_n[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        c0, kw, kh = _next_tap(c0, kw, kh, Og, KW, BLOCK_K, kw0, kw_step, kh_step)

    if SPLIT_K:  # partials in dx's channels_last order: pixel (n, ih, iw), then channel
        C_in = Cg * (tl.num_programs(1) // (SH * SW))
        pix = (n * H + ih) * W + iw
        p_ptrs = (dx_ptr + _index(tl.program_id(2), INDEX64) * (NB * H * W * C_in)
                  + (pix * C_in)[:, None] + ci[None, :])
        tl.store(p_ptrs, acc, mask=mask_m[:, None] & mask_n[None, :])
    else:
        if HAS_BIAS:  # (with SPLIT_K the reduction adds it)
            acc += tl.load(b_ptr + ci, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        dx_ptrs = (
            dx_ptr + (n * stride_dxn + ih * stride_dxh + iw * stride_dxw)[:, None]
            + (ci * stride_dxc)[None, :]
        )
        tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _conv2d_bwd_weight_kernel(
    # pointers: dw_ptr / db_ptr are a split's partials (C_out, Cg, KH, KW) / (C_out), fp32 when
    # SPLIT > 1 (each split's SPLIT_STRIDE elements after the previous's), else dw / db
    # themselves in the output dtype
    dy_ptr, x_ptr, dw_ptr, db_ptr,
    # sizes; OH and OW compile in, so that splitting each pixel index into (n, oh, ow), the
    # loop's main cost, divides by constants (a multiply and a shift) rather than by values
    NB, Cg, H, W, Og, OH: tl.constexpr, OW: tl.constexpr, KH, KW, SPLIT, CHUNK,
    # elements from one split's partials to the next (dw's and db's share one buffer, so
    # that a single pass sums both)
    SPLIT_STRIDE,
    # strides
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_xn, stride_xc, stride_xh, stride_xw,
    # convolution parameters
    SH, SW, PH, PW, DH, DW,
    BIAS_GRAD: tl.constexpr, FLAT_N: tl.constexpr, INDEX64: tl.constexpr,
    # FLAT_VEC > 1 (with FLAT_N, over x padded to FLAT_VEC channels, conv._pad_channels): columns in
    # (kh, kw, c) order, a pixel's FLAT_VEC channels one aligned run; dw then (C_out, KH, KW,
    # FLAT_WC), the padding channels not stored; FLAT_KW compiles KW in for that split
    FLAT_VEC: tl.constexpr, FLAT_KW: tl.constexpr, FLAT_WC: tl.constexpr,
    # DW_CL: dw (and its partials) laid out (C_out, KH, KW, Cg), channels_last, as PyTorch's
    # weight gradient is for channels_last operands; else (C_out, Cg, KH, KW)
    DW_CL: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    # DY_DENSE: dy's pixels (n, oh, ow) lie stride_dyw apart in order (dense channels_last),
    # so a pixel's offset is rk * stride_dyw with no division; M_ALIGN, N_ALIGN: the powers
    # of 2 dividing Og and the column count (conv._align), which make full tiles known
    DY_DENSE: tl.constexpr, M_ALIGN: tl.constexpr, N_ALIGN: tl.constexpr,
    # BOUNDS: whether a tap can fall outside the input (padding): else x's gather needs no
    # bounds checks (conv._conv2d_fwd_kernel's)
    BOUNDS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # columns: input channels of one tap (kh, kw) = program_id(1); with FLAT_N (few channels
    # per group) the whole filter's (c, kh, kw), dw's own order, and program_id(1) is 0
    if FLAT_N:
        N_COLS = Cg * KH * KW
    else:
        N_COLS = Cg
    grid_n = tl.cdiv(N_COLS, BLOCK_N)
    pid_m = tl.program_id(0) // grid_n
    pid_n = tl.program_id(0) % grid_n
    khw = tl.program_id(1)
    g = tl.program_id(2) // SPLIT
    split = tl.program_id(2) % SPLIT

    rm = _index(pid_m * BLOCK_M + tl.arange(0, BLOCK_M), INDEX64)  # output channel in group
    rn = _index(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), INDEX64)  # column
    mask_m = rm < Og
    mask_n = rn < N_COLS
    if FLAT_VEC > 1:
        tap = rn // FLAT_VEC  # kh * KW + kw: the same for a pixel's FLAT_VEC channels
        mask_n = tap < KH * KW
        c = rn % FLAT_VEC
        kh = tap // FLAT_KW
        kw = tap % FLAT_KW
        col = tap * FLAT_WC + c  # offset in dw[co] of (kh, kw, c), c < FLAT_WC stored
        dw_row = FLAT_WC * KH * KW
    elif FLAT_N:
        c = rn // (KH * KW)
        kh = (rn // KW) % KH  # (BLOCK_N,) vectors, split once per program
        kw = rn % KW
        if DW_CL:
            col = (rn % (KH * KW)) * Cg + c  # offset in dw[co] of (kh, kw, c)
        else:
            col = rn  # offset in dw[co] of (c, kh, kw)
        dw_row = Cg * KH * KW
    else:
        c = rn
        kh = khw // KW  # scalars
        kw = khw % KW
        if DW_CL:
            col = khw * Cg + rn  # a tile's channels are one contiguous run
        else:
            col = rn * (KH * KW) + khw
        dw_row = Cg * KH * KW
    co = g * Og + rm
    dy_base = dy_ptr + co * stride_dyc  # (BLOCK_M,)
    x_base = x_ptr + (g * Cg + c) * stride_xc  # (BLOCK_N,)

    L = NB * OH * OW
    k_start = _index(split, INDEX64) * CHUNK  # the pixel divisions below run in int32 unless INDEX64
    k_end = tl.minimum(k_start + CHUNK, L)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if BIAS_GRAD:
        db = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)  # output pixel (n, oh, ow)
        mask_k = rk < k_end  # dy's zeros past the chunk keep those pixels out of the sum, so
        rk_x = tl.minimum(rk, k_end - 1)  # x may read a clamped in-bounds pixel there, unmasked
        ow = rk_x % OW
        oh = (rk_x // OW) % OH
        n = rk_x // (OW * OH)
        if DY_DENSE:
            dy_off = rk * stride_dyw
        else:
            dy_off = n * stride_dyn + oh * stride_dyh + ow * stride_dyw
        if M_ALIGN % BLOCK_M == 0:  # full row tiles: no channel mask, decided at compile time
            mask_a = mask_k[None, :]
        else:
            mask_a = mask_m[:, None] & mask_k[None, :]
        a = tl.load(dy_base[:, None] + dy_off[None, :], mask=mask_a, other=0.0)
        if FLAT_N:
            ih = (oh * SH - PH)[:, None] + (kh * DH)[None, :]  # (BLOCK_K, BLOCK_N)
            iw = (ow * SW - PW)[:, None] + (kw * DW)[None, :]
            if BOUNDS:
                mask_x = inside(ih, H) & inside(iw, W)
                if N_ALIGN % BLOCK_N != 0:
                    mask_x = mask_x & mask_n[None, :]
            else:  # (a column past the filter has kh >= KH: masked, as it may lie outside)
                mask_x = mask_n[None, :]
            x_off = (n * stride_xn)[:, None] + ih * stride_xh + iw * stride_xw
            if FLAT_VEC > 1:
                # a pixel's FLAT_VEC channels: neighbours from a multiple of FLAT_VEC (one group)
                x_off = x_off + (c * stride_xc)[None, :]
                x_off = tl.max_contiguous(tl.multiple_of(x_off, [1, FLAT_VEC]), [1, FLAT_VEC])
                b = tl.load(x_ptr + x_off, mask=mask_x, other=0.0)
            else:
                b = tl.load(x_base[None, :] + x_off, mask=mask_x, other=0.0)
        else:
            ih = oh * SH - PH + kh * DH
            iw = ow * SW - PW + kw * DW
            if BOUNDS:
                mask_b = (inside(ih, H) & inside(iw, W))[:, None]
                if N_ALIGN % BLOCK_N != 0:
                    mask_b = mask_b & mask_n[None, :]
            else:
                mask_b = mask_n[None, :]
            b = tl.load(
                x_base[None, :] + (n * stride_xn + ih * stride_xh + iw * stride_xw)[:, None],
                mask=mask_b, other=0.0,
            )
        if BIAS_GRAD:
            if (pid_n == 0) & (khw == 0):
                db += tl.sum(a.to(tl.float32), axis=1)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    # a split's partials laid out (C_out, Cg, KH, KW), or (C_out, KH, KW, Cg) if DW_CL ((C_out,
    # KH, KW, FLAT_WC) if FLAT_VEC > 1), dense, at SPLIT_STRIDE from the next split's
    dw_ptrs = dw_ptr + _index(split, INDEX64) * SPLIT_STRIDE + (co * dw_row)[:, None] + col[None, :]
    if FLAT_VEC > 1:
        mask_n = mask_n & (c < FLAT_WC)
    tl.store(dw_ptrs, acc.to(dw_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])
    if BIAS_GRAD:
        if (pid_n == 0) & (khw == 0):
            tl.store(db_ptr + _index(split, INDEX64) * SPLIT_STRIDE + co, db.to(db_ptr.dtype.element_ty),
                     mask=mask_m)


# ---------------------------------------------------------------------------------------------
# launchers


def _first_tap(r, D, S, K):
    """The taps k (of K, dilation D) with k*D = r (mod S): (first, step); first >= K if none."""
    step = S // math.gcd(D, S)
    first = next((k for k in range(min(K, step)) if (k * D - r) % S == 0), K)
    return first, step


@functools.lru_cache(maxsize=256)
def _phase_taps(KH, KW, SH, SW, DH, DW, device):
    """int32 (SH*SW, 4) on ``device``: per parity phase (rh, rw) of the input gradient, the
    first tap and the step of the kh and kw that reach it (cached: built once per layer)."""
    rows = []
    for rh in range(SH):
        for rw in range(SW):
            rows.append([*_first_tap(rh, DH, SH, KH), *_first_tap(rw, DW, SW, KW)])
    return torch.tensor(rows, dtype=torch.int32, device=device)


@fp64_to_reference
def conv2d_input_grad(grad_output, weight, input_size, stride, padding, dilation, groups, bias=None):
    """dx (N, C_in, H, W) with (H, W) = input_size[-2:]; also conv_transpose2d's forward, whose
    ``bias`` (C_in) the epilogue adds in fp32 before the one rounding to dx's dtype."""
    NB, C_out, OH, OW = grad_output.shape
    _, Cg, KH, KW = weight.shape
    H, W = input_size[-2], input_size[-1]
    (SH, SW), (PH, PW), (DH, DW) = stride, padding, dilation
    Og = C_out // groups
    out_format = conv_memory_format(grad_output, weight)
    if depthwise(weight.shape, groups):  # one channel a group: a stencil, not a GEMM
        return depthwise_input_grad(grad_output, weight, input_size, stride, padding, dilation,
                                    bias, out_format == torch.channels_last)
    grad_output, weight = _stage(grad_output, Cg, Og), _stage(weight, Cg, Og)
    C_in, M = Cg * groups, NB * H * W
    split = _split_gemm(M, C_in, Og * KH * KW, grad_output.device)
    staged = torch.channels_last if split > 1 else conv_memory_format(grad_output, weight)
    dx = torch.empty((NB, C_in, H, W), device=grad_output.device, dtype=grad_output.dtype,
                     memory_format=staged)
    if dx.numel() == 0 or grad_output.numel() == 0:
        if bias is not None:
            dx.copy_(bias.view(1, -1, 1, 1).expand(dx.shape))
            return in_format(dx, out_format)
        return in_format(dx.zero_(), out_format)
    if bias is not None:
        bias = bias.contiguous()  # read by channel index
    # split > 1: fp32 partial sums, reduced into dx below (conv._split_k_epilogue_kernel)
    part = torch.empty((split, M, C_in), device=dx.device, dtype=torch.float32) if split > 1 else dx

    # the grid covers the largest phase; programs past their phase's tiles return at once
    Mp = NB * cdiv(H, SH) * cdiv(W, SW)
    check_grid_axes("conv2d input gradient", ("groups x stride_h x stride_w", groups * SH * SW))

    def grid(meta):
        return (cdiv(Mp, meta["BLOCK_M"]) * cdiv(Cg, meta["BLOCK_N"]), groups * SH * SW, split)

    _autotuned(
        "dx", _conv2d_bwd_input_kernel, _configs, ["SPLIT", "stride_dyc", "stride_dxc"],
        lambda a: a["NB"] * a["H"] * a["W"], lambda a: a["Cg"],
    )[grid](
        grad_output, weight, part, _phase_taps(KH, KW, SH, SW, DH, DW, dx.device),
        bias if bias is not None else weight,
        NB, Cg, H, W, Og, OH, OW, KH, KW, split,
        *grad_output.stride(), *weight.stride(), *dx.stride(),
        SH, SW, PH, PW, DH, DW, C_ALIGN=_align(Og), SPLIT_K=split > 1, HAS_BIAS=bias is not None,
        INDEX64=index64(grad_output, weight, dx, part),
        INPUT_PRECISION=_precision(grad_output.dtype), UPCAST=upcast_dot(grad_output.dtype),
    )
    if split > 1:
        _reduce_split(part, bias, dx, "none")
    return in_format(dx, out_format)


def _pixels_dense(t) -> bool:
    """Whether a 4-D tensor's pixels (n, h, w) lie stride(3) apart in that order (a dense
    channels_last tensor; or one channel), so that pixel p sits at p * stride(3)."""
    N, C, H, W = t.shape
    sn, sc, sh, sw = t.stride()
    return (H == 1 or sh == W * sw) and (N == 1 or sn == H * W * sw)


def _split_k(L, tiles, device):
    """Enough programs to fill the GPU twice over, each reducing at least 256 pixels."""
    want = cdiv(2 * num_sms(device), max(tiles, 1))
    return max(1, min(want, cdiv(L, 256), 64))


@fp64_to_reference
def conv2d_weight_grad(grad_output, input, weight_size, stride, padding, dilation, groups,
                       bias_grad=True):
    """-> (dw of weight_size (C_out, Cg, KH, KW), db (C_out,)), in grad_output's dtype; db is
    empty (0,) unless bias_grad, and the kernel then compiles without its reduction. dw is
    channels_last when grad_output or input is (PyTorch's layout for the weight gradient)."""
    NB, C_out, OH, OW = grad_output.shape
    _, C_in, H, W = input.shape
    _, Cg, KH, KW = weight_size
    (SH, SW), (PH, PW), (DH, DW) = stride, padding, dilation
    Og = C_out // groups
    # dw as PyTorch lays it out (channels_last for channels_last operands), written so by the
    # kernel: autograd then keeps it as a channels_last weight's .grad without a copy
    dw_format = conv_memory_format(grad_output, input)
    if depthwise(weight_size, groups):  # one channel a group: a stencil, not a GEMM
        return depthwise_weight_grad(grad_output, input, weight_size, stride, padding, dilation,
                                     bias_grad, dw_format == torch.channels_last)
    grad_output, input = _stage(grad_output, Cg, Og), _stage(input, Cg, Og)
    L = NB * OH * OW
    vec, C_dw = 1, Cg  # C_dw: the channels the kernel walks (4 over the stem's padded copy)
    if Cg == PAD_RGB[0] and groups == 1 and _flat(PAD_RGB[1]) and L and C_out:
        # as the forward: x padded to 4 channels, a pixel one vector, and its zero padding
        # in memory (no bounds checks); dw comes out (C_out, KH, KW, 3), the padding channel
        # not stored: channels_last as it is
        input = _pad_channels(input, PAD_RGB[1], (PH, PW))
        H, W, PH, PW = H + 2 * PH, W + 2 * PW, 0, 0
        C_dw = vec = PAD_RGB[1]
        sn, sc, sh, sw = input.stride()  # the kernel's alignment hint rests on these
        assert sc == 1 and sn % vec == sh % vec == sw % vec == 0, input.stride()
    flat = _flat(C_dw)  # columns over the whole filter (c, kh, kw), not one tap's channels
    cols, taps = (C_dw * KH * KW, 1) if flat else (C_dw, KH * KW)
    nominal_tiles = cdiv(Og, 64) * cdiv(cols, 64) * taps * groups
    check_grid_axes("conv2d weight gradient", ("filter taps", taps), ("groups", groups))
    # (groups x split programs share the third grid axis: split kept within CUDA's cap)
    split = min(_split_k(L, nominal_tiles, grad_output.device), max(1, GRID_AXIS_MAX // groups))
    chunk = cdiv(cdiv(L, split), 64) * 64 if L else 0
    split = max(1, cdiv(L, chunk)) if chunk else 1
    dev = grad_output.device
    # split partials in fp32, summed and cast below; one split stores dw, db directly in the
    # output dtype (the kernel's fp32 accumulator is rounded once, in the store)
    part = torch.float32 if split > 1 else grad_output.dtype
    cl = dw_format == torch.channels_last and vec == 1
    # one buffer, each split's dw partials (C_out, KH, KW, Cg) if cl or vec > 1 else (C_out,
    # Cg, KH, KW), then its db partials: one pass (_sum_splits) sums both and casts, where
    # torch's sums and casts took four launches
    n_dw, n_db = C_out * Cg * KH * KW, C_out if bias_grad else 0
    buf = torch.empty((split, n_dw + n_db), device=dev, dtype=part)
    if L == 0 or C_out == 0 or Cg == 0:
        buf.zero_()
    else:

        def grid(meta):
            tiles = cdiv(Og, meta["BLOCK_M"]) * cdiv(cols, meta["BLOCK_N"])
            return (tiles, taps, groups * split)

        _autotuned(
            "dw", _conv2d_bwd_weight_kernel, _wgrad_configs,
            ["SPLIT", "stride_dyc", "stride_xc", "FLAT_N", "BIAS_GRAD"],
            lambda a: a["Og"], lambda a: a["Cg"] * a["KH"] * a["KW"] if _flat(a["Cg"]) else a["Cg"],
        )[grid](
            grad_output, input, buf, buf[:, n_dw:] if bias_grad else buf,  # no empty pointers
            NB, C_dw, H, W, Og, OH, OW, KH, KW, split, chunk, n_dw + n_db,
            *grad_output.stride(), *input.stride(),
            SH, SW, PH, PW, DH, DW,
            BIAS_GRAD=bias_grad, FLAT_N=flat, FLAT_VEC=vec, FLAT_KW=KW if vec > 1 else 1,
            FLAT_WC=Cg if vec > 1 else 1,
            INDEX64=index64(grad_output, input, buf),
            INPUT_PRECISION=_precision(input.dtype), UPCAST=upcast_dot(input.dtype),
            DY_DENSE=_pixels_dense(grad_output), M_ALIGN=_align(Og), N_ALIGN=_align(cols),
            DW_CL=cl, BOUNDS=PH > 0 or PW > 0,
        )
    out = _sum_splits(buf, grad_output.dtype)  # (deterministic: in split order)
    dw, db = out[:n_dw], out[n_dw:]
    if cl or vec > 1:  # (C_out, KH, KW, Cg) in memory: (C_out, Cg, KH, KW) channels_last
        dw = dw.view(C_out, KH, KW, Cg).permute(0, 3, 1, 2)
    else:
        dw = dw.view(C_out, Cg, KH, KW)
    return in_format(dw, dw_format), db
