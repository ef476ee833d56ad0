"""2-D convolution as implicit GEMM, reading tensors through their strides (NCHW and
channels_last alike): the forward here, the input and weight gradients in
kernels/conv_backward.py, which shares this file's helpers and autotuning.

Shapes: x (N, C_in, H, W), w (C_out, C_in/G, KH, KW), y (N, C_out, OH, OW), G groups;
Cg = C_in/G and Og = C_out/G are the channels of one group.

forward       GEMM per group: M = N*OH*OW rows (n, oh, ow), N = Og columns (co),
              K = Cg*KH*KW, walked as one flat loop over (kh, kw, channel block), so the
              im2col gather is a masked, strided tile load (padding = mask) and never
              materialised, and the loop pipelines even when Cg fits one block.
              y = act(A @ B + bias), A[m, (c,kh,kw)] = x[n, c, oh*S-P+kh*D, ow*S-P+kw*D].
              With fewer than FLAT_K_BELOW channels per group (the stem's 3, LeNet's 1 and 6,
              depthwise), K = (kh, kw, c) is walked flat in BLOCK_K steps instead: a 7x7
              stem over 3 channels takes cdiv(147, BLOCK_K) steps, not 49 mostly-masked ones.
Programs: one (BLOCK_M, BLOCK_N) output tile each, or one share of its K loop when the tiles
cannot fill the GPU (split-K, _split_gemm: batch 1, late layers), the shares' fp32 partials
then summed by _split_k_epilogue_kernel with the bias and activation; grid (tiles, G, split).
The tap loops carry no mask the shapes make redundant: edge rows and columns gather clamped,
in-bounds elements that are never stored; a channel block known full at compile time
(C_ALIGN) needs no channel mask (bench/NOTES.md, "Tap loops without redundant masks").
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ..reference._common import conv_memory_format, in_format  # the layout rule both backends follow
from ._common import (
    INTERPRET,
    apply_activation,
    autotune,
    cdiv,
    check_grid_axes,
    dot_precision,
    fp64_to_reference,
    gemm_configs,
    grouped_tile,
    index64,
    inside,
    num_sms,
    prune_tiles,
    tf32_enabled,
    upcast_dot,
)
from ._launch import launcher
from .depthwise import depthwise, depthwise_forward

__all__ = ["conv2d_forward"]


# ---------------------------------------------------------------------------------------------
# autotune configs (built on first launch)

# The most warps a convolution GEMM config may use (read at import): 8 by default;
# TRITONNET_CONV_MAX_WARPS=4 drops the 8-warp tiles of all three kernels. PyTorch's Inductor
# caps its own flat-loop Triton convolutions at 4 warps, having seen them give wrong results at
# 8 (its issue 173068); the GPU-marked test_every_config_including_num_warps_8 checks ours.
CONV_MAX_WARPS = int(os.environ.get("TRITONNET_CONV_MAX_WARPS", "8"))
if CONV_MAX_WARPS not in (2, 4, 8):
    raise ValueError(f"TRITONNET_CONV_MAX_WARPS must be 2, 4 or 8, got {CONV_MAX_WARPS}")


def _cap_warps(configs):
    """The configs of at most CONV_MAX_WARPS warps."""
    return [c for c in configs if c.num_warps <= CONV_MAX_WARPS]


def _configs():
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 4})]
    return _cap_warps(gemm_configs(
        [
            (128, 128, 64, 3, 8),
            (128, 128, 32, 4, 4),
            (128, 64, 32, 4, 4),
            (64, 128, 32, 4, 4),
            (64, 64, 64, 4, 4),
            (64, 64, 32, 4, 2),
            (128, 32, 32, 4, 4),
            (32, 64, 32, 4, 2),
            # 64 output channels (ResNet layer1, the stem) allow no 128-wide N tile: K steps of
            # 64 halve the gather's address work per MMA (bench/NOTES.md, "BLOCK_K 64")
            (128, 64, 64, 4, 4),
            (256, 64, 64, 3, 8),
            (64, 16, 16, 4, 2),  # few output channels (LeNet, depthwise)
            # few channels on the GEMM's N side with a long K: the stem's input gradient
            # (N = 3 input channels, K = 64 output channels x ~12 taps a phase)
            (128, 16, 64, 4, 4),
            (256, 16, 64, 3, 8),
        ],
        GROUP_M=8,
    ))


# ---------------------------------------------------------------------------------------------
# kernels


@triton.jit
def _index(offs, INDEX64: tl.constexpr):
    """Offsets as int64 only when a tensor can pass 2**31 elements (_common.index64):
    int32 address arithmetic takes half the instructions, and the tile loops are bound by
    instruction issue as much as by the tensor cores (bench/NOTES.md)."""
    if INDEX64:
        offs = offs.to(tl.int64)
    return offs


@triton.jit
def _k_share(T, SPLIT, s):
    """Steps [t0, t1) of a T-step K loop that share s of SPLIT runs (split-K); the last
    shares may be empty."""
    t0 = tl.minimum(s * tl.cdiv(T, SPLIT), T)
    return t0, tl.minimum(t0 + tl.cdiv(T, SPLIT), T)


@triton.jit
def _next_tap(c0, kw, kh, C, KW, BLOCK_K: tl.constexpr, kw0, kw_step, kh_step):
    """The (channel block, kw, kh) after (c0, kw, kh) in the loop order kh, kw, channel
    block, for taps kw = kw0, kw0 + kw_step, ... < KW and kh stepping by kh_step."""
    c0 += BLOCK_K
    wrap = c0 >= C
    c0 = tl.where(wrap, 0, c0)
    kw = tl.where(wrap, kw + kw_step, kw)
    wrap = kw >= KW
    kw = tl.where(wrap, kw0, kw)
    kh = tl.where(wrap, kh + kh_step, kh)
    return c0, kw, kh


@triton.jit
def _conv2d_fwd_kernel(
    # pointers
    x_ptr, w_ptr, b_ptr, y_ptr,
    # sizes (Cg, Og: channels per group); SPLIT: programs sharing one tile's K loop
    NB, Cg, H, W, Og, OH, OW, KH, KW, SPLIT,
    # strides
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wo, stride_wc, stride_wh, stride_ww,
    stride_yn, stride_yc, stride_yh, stride_yw,
    # convolution parameters
    SH, SW, PH, PW, DH, DW,
    # epilogue and options; SPLIT_K: y_ptr is an fp32 (SPLIT, M, C_out) buffer of partial
    # sums, bias and activation left to _split_k_epilogue_kernel
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, SPLIT_K: tl.constexpr,
    # FLAT_K: walk K = (kh, kw, c) flat, dividing by Cg and KW compiled in as FLAT_CG, FLAT_KW;
    # FLAT_WC: the weight's channels a group, fewer than FLAT_CG where the input alone was
    # padded with zero channels (the RGB stem: the weight's 4th channel reads as 0)
    FLAT_K: tl.constexpr, FLAT_CG: tl.constexpr, FLAT_KW: tl.constexpr, FLAT_VEC: tl.constexpr,
    FLAT_WC: tl.constexpr,
    # C_ALIGN: the largest power of 2 dividing Cg (_align); where BLOCK_K divides it, every
    # channel block is full and the tap loop's loads need no channel mask
    C_ALIGN: tl.constexpr,
    # BOUNDS: whether a tap can fall outside the input (padding); without padding every tap
    # of an output pixel is inside (the output size's rule), so the gathers need no bounds
    # checks (1x1 layers, LeNet's, the RGB stem's copy padded in memory by _pad_channels)
    BOUNDS: tl.constexpr,
    INDEX64: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    g = tl.program_id(1)
    M = NB * OH * OW
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, Og, BLOCK_M, BLOCK_N, GROUP_M)

    rm = _index(pid_m * BLOCK_M + tl.arange(0, BLOCK_M), INDEX64)  # output pixel (n, oh, ow)
    rn = _index(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), INDEX64)  # output channel in group
    rk = _index(tl.arange(0, BLOCK_K), INDEX64)  # input channel in group (inner K)
    mask_m = rm < M
    mask_n = rn < Og
    # rows past M and columns past Og gather row M-1 and column Og-1 (in bounds, never
    # stored), so the tap loop's loads need no row or column mask
    rm_in = tl.minimum(rm, M - 1)
    ow = rm_in % OW
    oh = (rm_in // OW) % OH
    n = rm_in // (OW * OH)
    co = g * Og + rn
    x_base = x_ptr + n * stride_xn + (g * Cg) * stride_xc  # (BLOCK_M,)
    w_base = w_ptr + (g * Og + tl.minimum(rn, Og - 1)) * stride_wo  # (BLOCK_N,)
    # the gather's address: a row part (the window's corner, outside the loop) plus a part
    # for the tap and channel, the same for every row: one add per element
    ih0 = oh * SH - PH
    iw0 = ow * SW - PW
    x_row = x_base + ih0 * stride_xh + iw0 * stride_xw  # (BLOCK_M,)
    if FLAT_VEC > 1:
        x_row = x_ptr + tl.multiple_of(n * stride_xn + ih0 * stride_xh + iw0 * stride_xw, FLAT_VEC)

    # this program's share of the K loop: steps [t0, t1) of the tile's T, in BLOCK_K units
    split = tl.program_id(2)
    if FLAT_K:
        T = tl.cdiv(KH * KW * Cg, BLOCK_K)
    else:
        T = KH * KW * tl.cdiv(Cg, BLOCK_K)
    t0, t1 = _k_share(T, SPLIT, split)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)  # accumulate in fp32
    if FLAT_K:
        # few channels per group (the stem's 3, LeNet's 1 and 6, depthwise 1): K = (kh, kw, c)
        # walked in BLOCK_K steps of the whole im2col row, not one (kh, kw) tap at a time,
        # which would leave BLOCK_K - Cg of every step's MMA columns masked out
        for k0 in range(t0 * BLOCK_K, t1 * BLOCK_K, BLOCK_K):
            j = k0 + rk
            c = j % FLAT_CG  # constant divisors: a multiply and a shift, not a division
            tap = j // FLAT_CG  # kh * KW + kw: the same for a pixel's FLAT_CG channels
            kw = tap % FLAT_KW
            kh = tap // FLAT_KW
            dh = kh * DH
            dw = kw * DW
            ih = ih0[:, None] + dh[None, :]
            iw = iw0[:, None] + dw[None, :]
            mask_j = tap < KH * KW
            if BOUNDS:
                mask_x = mask_j[None, :] & inside(ih, H) & inside(iw, W)
            else:  # (rows past M read row M - 1's taps: inside too)
                mask_x = mask_j[None, :]
            col = dh * stride_xh + dw * stride_xw + c * stride_xc
            if FLAT_VEC > 1:
                # a pixel's FLAT_VEC channels are neighbours starting at a multiple of FLAT_VEC
                # (conv2d_forward's padded input): one vector load each, one mask
                col = tl.max_contiguous(tl.multiple_of(col, FLAT_VEC), FLAT_VEC)
            a = tl.load(x_row[:, None] + col[None, :], mask=mask_x, other=0.0)
            mask_w = mask_j
            if FLAT_WC < FLAT_CG:
                mask_w = mask_w & (c < FLAT_WC)
            b = tl.load(
                w_base[None, :] + (kh * stride_wh + kw * stride_ww + c * stride_wc)[:, None],
                mask=mask_w[:, None], other=0.0,
            )
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
    else:
        # one flat loop over (kh, kw, channel block): a loop the compiler can software-pipeline
        # even when a group has a single channel block (3x3 over 64 channels); the tap and
        # block advance by counters, not by dividing t (three integer divisions a step)
        # (kh, kw, channel block) of step t0, then int32 counters carried through the loop
        nblk = tl.cdiv(Cg, BLOCK_K)
        c0 = (t0 % nblk) * BLOCK_K
        kw = (t0 // nblk) % KW
        kh = t0 // (nblk * KW)
        for _t in range(t0, t1):
            c = c0 + rk
            dh = kh * DH
            dw = kw * DW
            a_ptrs = x_row[:, None] + (dh * stride_xh + dw * stride_xw + c * stride_xc)[None, :]
            b_ptrs = w_base[None, :] + (kh * stride_wh + kw * stride_ww) + c[:, None] * stride_wc
            if BOUNDS:
                mask_x = inside(ih0 + dh, H) & inside(iw0 + dw, W)  # zero padding
            if C_ALIGN % BLOCK_K == 0:
                if BOUNDS:
                    a = tl.load(a_ptrs, mask=mask_x[:, None], other=0.0)
                else:
                    a = tl.load(a_ptrs)
                b = tl.load(b_ptrs)
            else:
                mask_c = c < Cg
                mask_a = mask_c[None, :]
                if BOUNDS:
                    mask_a = mask_a & mask_x[:, None]
                a = tl.load(a_ptrs, mask=mask_a, other=0.0)
                b = tl.load(b_ptrs, mask=mask_c[:, None], other=0.0)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
            c0, kw, kh = _next_tap(c0, kw, kh, Cg, KW, BLOCK_K, 0, 1, 1)

    if SPLIT_K:  # partial sums, (SPLIT, M, C_out) fp32
        C_out = Og * tl.num_programs(1)
        p_ptrs = y_ptr + _index(split, INDEX64) * (M * C_out) + (rm * C_out)[:, None] + co[None, :]
        tl.store(p_ptrs, acc, mask=mask_m[:, None] & mask_n[None, :])
    else:
        if HAS_BIAS:
            acc += tl.load(b_ptr + co, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        acc = apply_activation(acc, ACTIVATION)
        y_ptrs = (
            y_ptr + (n * stride_yn + oh * stride_yh + ow * stride_yw)[:, None] + (co * stride_yc)[None, :]
        )
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@launcher
@triton.jit
def _split_k_epilogue_kernel(part_ptr, b_ptr, y_ptr, MN, C_out, SPLIT,
                             HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
                             INDEX64: tl.constexpr, BLOCK: tl.constexpr):
    """y = act(sum over the SPLIT partials + bias), y dense (M, C_out) (channels_last), in a
    fixed order: deterministic, one rounding."""
    i = _index(tl.program_id(0), INDEX64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < MN
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    p = part_ptr + i
    for _s in range(SPLIT):
        acc += tl.load(p, mask=mask, other=0.0)
        p += MN  # pointer arithmetic: 64-bit whatever SPLIT * MN
    if HAS_BIAS:
        acc += tl.load(b_ptr + i % C_out, mask=mask, other=0.0).to(tl.float32)
    acc = apply_activation(acc, ACTIVATION)
    tl.store(y_ptr + i, acc.to(y_ptr.dtype.element_ty), mask=mask)


_tuned = {}

# the shape, the convolution, the precision, and the layout (the channel stride is 1 for
# channels_last): a config tuned for one never serves another, on disk included
TUNE_KEY = ["NB", "Cg", "H", "W", "Og", "KH", "KW", "SH", "SW", "PH", "PW", "DH", "DW",
            "INPUT_PRECISION", "INDEX64"]


def _autotuned(name, kernel, configs, key, size_m, size_n):
    """The autotuned wrapper of one conv kernel (this file's or conv_backward's), built on
    first use: tiles pruned to the GEMM's size_m x size_n (functions of the kernel's args)."""
    if name not in _tuned:
        _tuned[name] = autotune(
            kernel, configs=configs(), key=TUNE_KEY + key,
            prune_configs_by={"early_config_prune": prune_tiles(size_m, size_n)},
        )
    return _tuned[name]


# ---------------------------------------------------------------------------------------------
# launchers


def _precision(dtype):
    return dot_precision(dtype, tf32_enabled("conv"))


# NCHW operands go through channels_last copies (bench/NOTES.md, "NCHW staging"): compiled for
# sm_90, every conv kernel reads NCHW tiles with 2-byte scalar loads outside the cp.async
# pipeline (nothing tells Triton that neighbouring GEMM rows are neighbouring pixels), and
# channels_last tiles with 16-byte cp.async. A copy costs one read and one write of the
# operand. TRITONNET_CONV_NCHW=direct keeps NCHW in the strided kernels.
NCHW_VIA_CHANNELS_LAST = os.environ.get("TRITONNET_CONV_NCHW", "channels_last") != "direct"


# The forward's K and the weight gradient's N walk the filter (kh, kw, c) flat when a group
# has fewer channels than this; else one (kh, kw) tap at a time in channel blocks
# (bench/NOTES.md, "flat K").
FLAT_K_BELOW = 16


# a group of PAD_RGB[0] channels is padded with zeros to PAD_RGB[1] for the forward's flat walk
PAD_RGB = (3, 4)


def _flat(Cg) -> bool:
    """Whether a group of Cg channels walks the filter flat (FLAT_K_BELOW): the one decision
    the forward and the weight gradient share."""
    return Cg < FLAT_K_BELOW


def _align(c) -> int:
    """The largest power of 2 up to 256 (the largest block) that divides c: passed to a kernel
    as a constexpr, it tells at compile time whether every block of c is full (one compile per
    alignment, a handful in a network)."""
    return min(c & -c, 256) if c else 256


def _split_gemm(M, N, K, device) -> int:
    """Programs to share each output tile's K loop (split-K) in the forward and the input
    gradient. Only where the output tiles (counted at 64x64) leave SMs idle, as at batch 1 and
    in the late layers (layer4 at batch 1 is 8 tiles of 64x64 for 132 SMs, each a 4608-long K
    loop), and at most so that each share keeps 256 K elements; the partials cost an fp32
    (split, M, N) buffer and one more pass (_reduce_split)."""
    tiles = cdiv(M, 64) * cdiv(N, 64)
    sms = num_sms(device)
    if tiles >= sms or tiles == 0:  # no tiles: an empty output (batch 0, no channels)
        return 1
    return max(1, min(cdiv(2 * sms, tiles), K // 256, 16))


def _stage(t, Cg, Og):
    """``t`` as channels_last when it is a 4-D tensor that is not already, and the channels of
    one group (both sides of the GEMM) are multiples of 16, so that the kernels' channel
    loads are 16-byte vectors; else ``t`` itself."""
    if (not NCHW_VIA_CHANNELS_LAST or Cg % 16 or Og % 16 or t.dim() != 4
            or t.is_contiguous(memory_format=torch.channels_last)):
        return t
    return t.contiguous(memory_format=torch.channels_last)


@launcher
@triton.jit
def _pad_channels_kernel(x_ptr, y_ptr, P, C, H, W, PH, PW, stride_n, stride_c, stride_h, stride_w,
                         CP: tl.constexpr, INDEX64: tl.constexpr, BLOCK: tl.constexpr):
    """y (P pixels of (N, H + 2 PH, W + 2 PW) by CP channels, dense: channels_last) = x's C
    channels, then zeros; zero pixels in a border of PH rows and PW columns."""
    p = _index(tl.program_id(0) * BLOCK + tl.arange(0, BLOCK), INDEX64)
    c = tl.arange(0, CP)
    w = p % (W + 2 * PW) - PW
    h = (p // (W + 2 * PW)) % (H + 2 * PH) - PH
    n = p // ((W + 2 * PW) * (H + 2 * PH))
    x_off = (n * stride_n + h * stride_h + w * stride_w)[:, None] + (c * stride_c)[None, :]
    ok = (p < P)[:, None]
    inner = inside(h, H) & inside(w, W)
    v = tl.load(x_ptr + x_off, mask=ok & inner[:, None] & (c < C)[None, :], other=0.0)
    tl.store(y_ptr + (p * CP)[:, None] + c[None, :], v, mask=ok)


def _pad_channels(t, c, padding=(0, 0)):
    """t (N, C, H, W), any layout, with zero channels appended up to c (a power of 2) and a
    zero border of ``padding`` (PH rows, PW columns) on each side: (N, c, H + 2 PH, W + 2 PW),
    channels_last and dense, one read and one write."""
    N, C, H, W = t.shape
    PH, PW = padding
    out = torch.empty((N, c, H + 2 * PH, W + 2 * PW), dtype=t.dtype, device=t.device,
                      memory_format=torch.channels_last)
    P = out.numel() // c
    if P:
        block = 256
        _pad_channels_kernel[(cdiv(P, block),)](
            t, out, P, C, H, W, PH, PW, *t.stride(), CP=c, INDEX64=index64(t, out), BLOCK=block,
        )
    return out


@fp64_to_reference
def conv2d_forward(input, weight, bias, stride, padding, dilation, groups, activation="none"):
    """y = act(conv2d(input, weight, bias)) with symmetric zero padding (PH, PW)."""
    NB, C_in, H, W = input.shape
    C_out, Cg, KH, KW = weight.shape
    (SH, SW), (PH, PW), (DH, DW) = stride, padding, dilation
    OH = (H + 2 * PH - DH * (KH - 1) - 1) // SH + 1
    OW = (W + 2 * PW - DW * (KW - 1) - 1) // SW + 1
    Og = C_out // groups
    out_format = conv_memory_format(input, weight)
    if depthwise(weight.shape, groups):  # one channel a group: a stencil, not a GEMM
        return depthwise_forward(input, weight, bias, (OH, OW), stride, padding, dilation, activation,
                                 out_format == torch.channels_last)
    input, weight = _stage(input, Cg, Og), _stage(weight, Cg, Og)
    if bias is not None:
        bias = bias.contiguous()  # the epilogues index it by channel (a slice b[::2] has stride 2)
    check_grid_axes("conv2d", ("groups", groups))
    M = NB * OH * OW
    split = _split_gemm(M, C_out, Cg * KH * KW, input.device)
    y = torch.empty((NB, C_out, OH, OW), device=input.device, dtype=input.dtype,
                    memory_format=torch.channels_last if split > 1 else conv_memory_format(input, weight))
    if y.numel() == 0:
        return in_format(y, out_format)
    vec = 1
    if Cg == PAD_RGB[0] and groups == 1:
        # 3 channels (RGB stems) walk flat over a copy padded to 4: a pixel is then one
        # aligned vector (8 bytes in bf16) with one mask, not three 2-byte gathers; the copy
        # carries the zero padding too, so that the gather needs no bounds checks. The flat
        # walk reads the weight in place, its 4th channel masked (FLAT_WC)
        input = _pad_channels(input, PAD_RGB[1], (PH, PW))
        Cg = vec = PAD_RGB[1]
        H, W, PH, PW = H + 2 * PH, W + 2 * PW, 0, 0
        sn, sc, sh, sw = input.stride()  # the kernel's alignment hints rest on these
        assert sc == 1 and sn % vec == sh % vec == sw % vec == 0, input.stride()
    flat = _flat(Cg)
    if vec > 1 and not flat:  # (a tap walk over 4 channels, as a test forces: the weight too)
        weight = _pad_channels(weight, PAD_RGB[1])
    # split > 1: the programs write fp32 partial sums, reduced below with the bias and activation
    part = torch.empty((split, M, C_out), device=input.device, dtype=torch.float32) if split > 1 else y

    def grid(meta):
        return (cdiv(M, meta["BLOCK_M"]) * cdiv(Og, meta["BLOCK_N"]), groups, split)

    _autotuned(
        "fwd", _conv2d_fwd_kernel, _configs,
        ["SPLIT", "stride_xc", "stride_yc", "FLAT_K", "FLAT_CG", "FLAT_KW"],
        lambda a: a["NB"] * a["OH"] * a["OW"], lambda a: a["Og"],
    )[grid](
        input, weight, bias if bias is not None else weight, part,
        NB, Cg, H, W, Og, OH, OW, KH, KW, split,
        *input.stride(), *weight.stride(), *y.stride(),
        SH, SW, PH, PW, DH, DW,
        HAS_BIAS=bias is not None, ACTIVATION=activation, SPLIT_K=split > 1,
        # the flat walk's divisors compile in (few-channel layers only: a handful of shapes)
        FLAT_K=flat, FLAT_CG=Cg if flat else 1, FLAT_KW=KW if flat else 1, FLAT_VEC=vec,
        FLAT_WC=weight.shape[1] if flat else 1,
        C_ALIGN=_align(Cg), BOUNDS=PH > 0 or PW > 0,
        INDEX64=index64(input, weight, y, part),
        INPUT_PRECISION=_precision(input.dtype), UPCAST=upcast_dot(input.dtype),
    )
    if split > 1:
        _reduce_split(part, bias, y, activation)
    return in_format(y, out_format)


def _reduce_split(part, bias, out, activation):
    """out (channels_last, dense) = act(part.sum(0) + bias), part an fp32 (split, M, C) buffer."""
    split, M, C = part.shape
    block = 1024
    _split_k_epilogue_kernel[(cdiv(M * C, block),)](
        part, bias if bias is not None else part, out, M * C, C, split,
        HAS_BIAS=bias is not None, ACTIVATION=activation, INDEX64=index64(part), BLOCK=block,
    )


def _sum_splits(part, dtype):
    """(n,) in ``dtype``: a weight gradient's partials ``part`` (split, n) summed in split order
    and rounded once (_reduce_split, one launch); ``part[0]`` itself when there is one split,
    already in ``dtype``."""
    split, n = part.shape
    if split == 1 and part.dtype == dtype:
        return part[0]
    out = torch.empty(n, device=part.device, dtype=dtype)
    if n:
        _reduce_split(part.view(split, 1, n), None, out, "none")
    return out
