"""Gradients of kernels/pool.py's pooling (max_pool2d, avg_pool2d, adaptive_max_pool2d,
adaptive_avg_pool2d); windows and layouts as described there.

Backward, a gather (no atomics, deterministic): grad_input is tiled as the forward tiles the
output (rows of pixels by channels for channels_last, rows of (n, c, h) by w for NCHW); each
element sums over the windows that cover it.
Along one dimension those windows are a contiguous range of outputs:
  fixed     o in [ceil((i + P - (K-1)*D) / S), floor((i + P) / S)] and [0, O): at most
            cdiv((K-1)*D + 1, S) of them
  adaptive  o in [floor(i*O/I), ceil((i+1)*O/I) - 1]: at most cdiv(O, I) + 1
  max: dx[i] = sum over covering windows w of dy[w] * (argmax[w] == i)  (the saved indices)
  avg: dx[i] = sum over covering windows w of dy[w] / divisor[w]
summed in fp32 in ascending window order (PyTorch's CPU order).

max_pool2d at stride 2 (LeNet's 2x2, ResNet's 3x3/p1 and any window with at most two per
dimension covering each input): blocks of 2x2 inputs instead of single inputs. Input
(2a + r, .) is tap k of window a - j exactly when k*D = 2j + r + P, so one block needs the
windows a - j for j in [J, J + NJ) along each dimension (NJ <= 2), the same for all four of
its inputs: each block loads its (at most 2x2) windows' indices and dy once and hands them to
its four inputs, where the gather loads them once per input and window (4x the loads at 3x3
stride 2, 16x at 2x2). Which of the four inputs can be a tap of which window is fixed at
compile time (_s2_windows's TAPS); the rest are not compared at all.

adaptive_max_pool2d with few, large windows (the output at most 1/16 of the input, each
dimension no larger than the input's): a scatter without atomics instead. dx is zeroed and
each window writes its dy to the input it chose. Two windows can choose the same input only
where they overlap, and with O <= I such windows are neighbours (at most two cover an input
along a dimension), so a window defers to an earlier neighbour (in (oh, ow) order) that chose
the same input, and otherwise writes the sum of its own dy and its later neighbours' that
chose it: the gather's sum, in the gather's order, written once. The gather would test 2x2
windows for every input; this reads 9 indices per window and leaves the rest of dx to a
memset.

Global pools (one window, the whole plane; pool._global_window): avg spreads 0 + dy / divisor
over each plane (_global_avg_bwd_kernel, one division a channel, tiles as the forward's: the
gather's numbers bitwise, without its per-input window arithmetic); a fixed whole-plane max
pool takes the adaptive pool's gradient (the scatter, from 16 inputs a plane). Adaptive
averages over few, large windows (pool._few_windows): _window_avg_bwd_kernel, each window
writing the inputs no earlier window covers (the scatter's ownership rule), the covering
windows' dy / count worked out once a channel.
"""

from __future__ import annotations

__all__ = [
    "max_pool2d_backward",
    "avg_pool2d_backward",
    "adaptive_max_pool2d_backward",
    "adaptive_avg_pool2d_backward",
]

import torch
import triton
import triton.language as tl

from ._common import cdiv, index64, inside
from ._launch import launcher
from .pool import (
    _adaptive_max_taps,
    _adaptive_window,
    _alloc,
    _autotuned,
    _block_ids,
    _const_divisor,
    _coords,
    _div,
    _div_const,
    _extent,
    _few_windows,
    _fixed_cover,
    _global_plan,
    _global_window,
    _grid,
    _plane_program,
    _plane_run,
    _tile,
    _view,
    _window,
    _window_plan,
    _window_program,
    _window_split,
)

BWD_KEY = ["ROWS", "COLS", "H", "W", "MAX_OH", "MAX_OW", "CHANNELS_LAST", "BLOCK_V"]


# ---------------------------------------------------------------------------------------------
# device helper


@triton.jit
def _covering(i, I, O, K: tl.constexpr, S: tl.constexpr, P: tl.constexpr, D: tl.constexpr,
              ADAPTIVE: tl.constexpr):
    """First output and number of outputs whose windows cover input position i (see the
    module docstring); numerators are kept non-negative, so // is a floor."""
    if ADAPTIVE:
        lo = (i * O) // I
        hi = ((i + 1) * O + I - 1) // I - 1
    else:
        t = i + P - (K - 1) * D
        lo = tl.where(t > 0, (t + S - 1) // S, 0)
        hi = tl.minimum((i + P) // S, O - 1)
    return lo, hi - lo + 1


# ---------------------------------------------------------------------------------------------
# kernels


@triton.jit
def _max_pool2d_bwd_kernel(
    # pointers
    dy_ptr, idx_ptr, dx_ptr,
    # sizes
    C, H, W, OH, OW, ROWS, COLS,
    # grad_output and indices strides
    stride_gn, stride_gc, stride_gh, stride_gw,
    stride_in, stride_ic, stride_ih, stride_iw,
    # windows
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    # most windows covering one input position, per dimension
    MAX_OH: tl.constexpr, MAX_OW: tl.constexpr,
    # options
    ADAPTIVE: tl.constexpr, CHANNELS_LAST: tl.constexpr, ACC64: tl.constexpr,
    INDEX64: tl.constexpr, BLOCK: tl.constexpr, BLOCK_V: tl.constexpr, VEC: tl.constexpr,
):
    """dx[n, c, h, w] = sum of dy[n, c, oh, ow] over covering windows whose argmax is (h, w)."""
    r, col, mask, offs = _tile(ROWS, COLS, BLOCK, BLOCK_V, VEC, INDEX64)  # dx is dense in this layout
    n, c, h, w = _coords(r, col, C, H, W, CHANNELS_LAST)
    oh0, noh = _covering(h, H, OH, KH, SH, PH, DH, ADAPTIVE)
    ow0, now = _covering(w, W, OW, KW, SW, PW, DW, ADAPTIVE)
    target = h * W + w
    if ACC64:
        acc = tl.zeros(mask.shape, dtype=tl.float64)
    else:
        acc = tl.zeros(mask.shape, dtype=tl.float32)
    g_base = dy_ptr + n * stride_gn + c * stride_gc
    i_base = idx_ptr + n * stride_in + c * stride_ic
    for jh in range(MAX_OH):
        oh = oh0 + jh
        ok_h = mask & (jh < noh)
        for jw in range(MAX_OW):
            ow = ow0 + jw
            ok = ok_h & (jw < now)
            idx = tl.load(i_base + oh * stride_ih + ow * stride_iw, mask=ok)
            # dy is loaded under the window's mask, not the hit's: the window's mask is the same
            # along a channels_last row, so the load stays a vector; where() keeps a NaN in a
            # window this input did not win out of its sum. A masked-off window reads dy = 0,
            # so whatever its (unread) index says, it adds nothing.
            g = tl.load(g_base + oh * stride_gh + ow * stride_gw, mask=ok, other=0.0)
            if INDEX64:
                hit = idx == target
            else:  # a plane index is below H*W < 2**31: compare the low words alone
                hit = idx.to(tl.int32) == target
            acc += tl.where(hit, g.to(acc.dtype), 0.0)
    tl.store(dx_ptr + offs, acc.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _won(acc, idx, g, target, TAPS_H: tl.constexpr, TAPS_W: tl.constexpr, JH: tl.constexpr,
         JW: tl.constexpr, RH: tl.constexpr, RW: tl.constexpr):
    """acc plus g where the window (window offsets JH, JW) chose the input at phase (RH, RW),
    flat index target; nothing at all where that input is not one of the window's taps."""
    if ((TAPS_H >> (2 * JH + RH)) & 1) and ((TAPS_W >> (2 * JW + RW)) & 1):
        acc += tl.where(idx == target, g, 0.0)
    return acc


@triton.jit
def _max_pool2d_bwd_s2_kernel(
    # pointers
    dy_ptr, idx_ptr, dx_ptr,
    # sizes; A = cdiv(H, 2), B = cdiv(W, 2) blocks
    C, H, W, A, B, OH, OW, ROWS, COLS,
    # grad_output and indices strides
    stride_gn, stride_gc, stride_gh, stride_gw,
    stride_in, stride_ic, stride_ih, stride_iw,
    # windows a - J - j, j < NJ, cover block a; bit 2j + r of TAPS: input 2a + r is one of
    # window a - J - j's taps (_s2_windows)
    JH: tl.constexpr, NJH: tl.constexpr, TAPS_H: tl.constexpr,
    JW: tl.constexpr, NJW: tl.constexpr, TAPS_W: tl.constexpr,
    # options; W_ALIGN: a power of 2 dividing W (NCHW rows start aligned, in runs of it)
    CHANNELS_LAST: tl.constexpr, ACC64: tl.constexpr, INDEX64: tl.constexpr,
    W_ALIGN: tl.constexpr, BLOCK: tl.constexpr, BLOCK_V: tl.constexpr, VEC: tl.constexpr,
):
    """dx of max_pool2d at stride 2 (both dimensions), by 2x2 blocks (module docstring). The
    tile is a (BLOCK // BLOCK_V, BLOCK_V) piece of the blocks' 2-D view: rows of pixels
    (n, a, b) by channels for channels_last (the (ROWS, COLS) view of _tile); for NCHW, rows a
    by columns b of one (n, c) plane per program, each row of blocks two dx rows of 2 * BLOCK_V
    columns (a program's rows stay in one plane, so its plane is divided out once, not once
    per row of each thread)."""
    if CHANNELS_LAST:
        r, v, mask, _ = _tile(ROWS, COLS, BLOCK, BLOCK_V, VEC, INDEX64)
        n, c, a, b = _coords(r, v, C, A, B, True)
    else:
        BLOCK_R: tl.constexpr = BLOCK // BLOCK_V
        a_blocks = tl.cdiv(A, BLOCK_R)
        pid, pid_b = _block_ids((ROWS // A) * a_blocks)  # ROWS = N*C*A
        if INDEX64:
            pid = pid.to(tl.int64)
        plane = pid // a_blocks
        a1 = (pid % a_blocks) * BLOCK_R + tl.arange(0, BLOCK_R)
        a = a1[:, None]
        b = (pid_b * BLOCK_V + tl.arange(0, BLOCK_V))[None, :]
        n = plane // C
        c = plane % C
        mask = (a < A) & ((b // VEC) < (B // VEC))  # b < B, in runs of VEC
    if ACC64:
        acc00 = tl.zeros(mask.shape, dtype=tl.float64)
    else:
        acc00 = tl.zeros(mask.shape, dtype=tl.float32)
    acc01 = acc00
    acc10 = acc00
    acc11 = acc00
    t00 = (2 * a) * W + 2 * b  # flat plane index of the block's first input
    g_base = dy_ptr + n * stride_gn + c * stride_gc
    i_base = idx_ptr + n * stride_in + c * stride_ic
    # windows in ascending (oh, ow) order, the gather's summation order: j from high to low
    for jh in tl.static_range(NJH - 1, -1, -1):
        oh = a - (JH + jh)
        ok_h = mask & inside(oh, OH)
        for jw in tl.static_range(NJW - 1, -1, -1):
            ow = b - (JW + jw)
            ok = ok_h & inside(ow, OW)
            idx = tl.load(i_base + oh * stride_ih + ow * stride_iw, mask=ok)
            # a masked-off window reads dy = 0: whatever its (unread) index, it adds nothing
            g = tl.load(g_base + oh * stride_gh + ow * stride_gw, mask=ok, other=0.0).to(acc00.dtype)
            if not INDEX64:  # a plane index is below H*W < 2**31: compare the low words alone
                idx = idx.to(tl.int32)
            acc00 = _won(acc00, idx, g, t00, TAPS_H, TAPS_W, jh, jw, 0, 0)
            acc01 = _won(acc01, idx, g, t00 + 1, TAPS_H, TAPS_W, jh, jw, 0, 1)
            acc10 = _won(acc10, idx, g, t00 + W, TAPS_H, TAPS_W, jh, jw, 1, 0)
            acc11 = _won(acc11, idx, g, t00 + W + 1, TAPS_H, TAPS_W, jh, jw, 1, 1)
    ty = dx_ptr.dtype.element_ty
    if CHANNELS_LAST:
        # four pixels, each a vector of channels: (2a + rh, 2b + rw) of image n
        h = 2 * a
        w = 2 * b
        p00 = dx_ptr + ((n * H + h) * W + w) * C + c
        ok_w = w + 1 < W
        tl.store(p00, acc00.to(ty), mask=mask)
        tl.store(p00 + C, acc01.to(ty), mask=mask & ok_w)
        ok_h = h + 1 < H
        tl.store(p00 + W * C, acc10.to(ty), mask=mask & ok_h)
        tl.store(p00 + (W + 1) * C, acc11.to(ty), mask=mask & ok_h & ok_w)
    else:
        # two dx rows, each with its two phases interleaved into 2 * BLOCK_V neighbours
        w = (pid_b * (2 * BLOCK_V) + tl.arange(0, 2 * BLOCK_V))[None, :]
        ok_w = (w // W_ALIGN) < (W // W_ALIGN)  # = w < W, in aligned runs
        p0 = dx_ptr + tl.multiple_of((plane * H + 2 * a1) * W, W_ALIGN)[:, None] + w
        ok_r = a < A
        tl.store(p0, tl.interleave(acc00, acc01).to(ty), mask=ok_r & ok_w)
        tl.store(p0 + W, tl.interleave(acc10, acc11).to(ty), mask=ok_r & (2 * a + 1 < H) & ok_w)


@triton.jit
def _max_pool2d_bwd_scatter_kernel(
    # pointers; dx_ptr: dense (N, C, H, W) in the given layout, zeroed by the launcher
    dy_ptr, idx_ptr, dx_ptr,
    # sizes
    C, H, W, OH, OW, ROWS, COLS,
    # grad_output and indices strides
    stride_gn, stride_gc, stride_gh, stride_gw,
    stride_in, stride_ic, stride_ih, stride_iw,
    # options
    CHANNELS_LAST: tl.constexpr, ACC64: tl.constexpr, INDEX64: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_V: tl.constexpr, VEC: tl.constexpr,
):
    """dx[n, c, idx[w]] = sum of dy over the windows w' that chose idx[w], written by the first
    of them (module docstring); the tile is the output's (rows, columns) view, as the forward's."""
    r, col, mask, _ = _tile(ROWS, COLS, BLOCK, BLOCK_V, VEC, INDEX64)
    n, c, oh, ow = _coords(r, col, C, OH, OW, CHANNELS_LAST)
    g_base = dy_ptr + n * stride_gn + c * stride_gc
    i_base = idx_ptr + n * stride_in + c * stride_ic
    idx = tl.load(i_base + oh * stride_ih + ow * stride_iw, mask=mask, other=0)
    if ACC64:
        total = tl.zeros(mask.shape, dtype=tl.float64)
    else:
        total = tl.zeros(mask.shape, dtype=tl.float32)
    # 0 + dy, as the gather sums from 0 (a -0.0 dy stores +0.0 there too)
    total += tl.load(g_base + oh * stride_gh + ow * stride_gw, mask=mask, other=0.0).to(total.dtype)
    owner = mask
    # the 8 neighbours in (oh, ow) order: an earlier one that chose the same input writes it;
    # the later ones' dy join this window's sum, in order
    for dh in tl.static_range(-1, 2):
        for dw in tl.static_range(-1, 2):
            if dh != 0 or dw != 0:
                nh = oh + dh
                nw = ow + dw
                ok = mask & inside(nh, OH) & inside(nw, OW)
                same = ok & (tl.load(i_base + nh * stride_ih + nw * stride_iw, mask=ok, other=-1) == idx)
                if dh < 0 or (dh == 0 and dw < 0):
                    owner = owner & (same == 0)
                else:
                    g = tl.load(g_base + nh * stride_gh + nw * stride_gw, mask=same, other=0.0)
                    total += tl.where(same, g.to(total.dtype), 0.0)
    if not INDEX64:  # a plane index is below H*W < 2**31
        idx = idx.to(tl.int32)
    if CHANNELS_LAST:
        off = (n * (H * W) + idx) * C + c
    else:
        off = (n * C + c) * (H * W) + idx
    tl.store(dx_ptr + off, total.to(dx_ptr.dtype.element_ty), mask=owner)


@triton.jit
def _avg_pool2d_bwd_kernel(
    # pointers
    dy_ptr, dx_ptr,
    # sizes
    C, H, W, OH, OW, ROWS, COLS,
    # grad_output strides
    stride_gn, stride_gc, stride_gh, stride_gw,
    # windows
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr,
    # most windows covering one input position, per dimension
    MAX_OH: tl.constexpr, MAX_OW: tl.constexpr,
    # options; DIV: the divisor all windows share, 0 where it varies (pool._const_divisor)
    ADAPTIVE: tl.constexpr, COUNT_PAD: tl.constexpr, DIV: tl.constexpr, RECIP: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, ACC64: tl.constexpr, INDEX64: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_V: tl.constexpr, VEC: tl.constexpr,
):
    """dx[n, c, h, w] = sum of dy[n, c, oh, ow] / divisor(oh, ow) over covering windows."""
    r, col, mask, offs = _tile(ROWS, COLS, BLOCK, BLOCK_V, VEC, INDEX64)  # dx is dense in this layout
    n, c, h, w = _coords(r, col, C, H, W, CHANNELS_LAST)
    oh0, noh = _covering(h, H, OH, KH, SH, PH, 1, ADAPTIVE)
    ow0, now = _covering(w, W, OW, KW, SW, PW, 1, ADAPTIVE)
    if ACC64:
        acc = tl.zeros(mask.shape, dtype=tl.float64)
    else:
        acc = tl.zeros(mask.shape, dtype=tl.float32)
    g_base = dy_ptr + n * stride_gn + c * stride_gc
    for jh in range(MAX_OH):
        oh = oh0 + jh
        ok_h = mask & (jh < noh)
        h0, nh = _window(oh, H, OH, KH, SH, PH, ADAPTIVE)
        ext_h = _extent(h0, nh, H, KH, PH, ADAPTIVE, COUNT_PAD)
        for jw in range(MAX_OW):
            ow = ow0 + jw
            ok = ok_h & (jw < now)
            g = tl.load(g_base + oh * stride_gh + ow * stride_gw, mask=ok, other=0.0).to(acc.dtype)
            if DIV != 0:
                acc += _div_const(g, DIV, RECIP)
            else:
                w0, nw = _window(ow, W, OW, KW, SW, PW, ADAPTIVE)
                ext_w = _extent(w0, nw, W, KW, PW, ADAPTIVE, COUNT_PAD)
                acc += _div(g, tl.where(ok, ext_h * ext_w, 1).to(acc.dtype))
    tl.store(dx_ptr + offs, acc.to(dx_ptr.dtype.element_ty), mask=mask)


@launcher
@triton.jit
def _global_avg_bwd_kernel(
    # pointers; dx dense (N, C, H, W) in the given layout
    dy_ptr, dx_ptr,
    # sizes as pool._global_pool_kernel's
    C, L, CHUNK, NUM_CB, DIVISOR,
    # strides: dy's (N, C), dx's, and between neighbouring taps of dx's plane
    stride_gn, stride_gc, stride_xn, stride_xc, stride_t,
    ACC64: tl.constexpr, INDEX64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """dx[n, c, :, :] = 0 + dy[n, c] / divisor, one division a channel (the gather's sum over
    the one covering window, bitwise), stored over split s's taps by (BLOCK_C, BLOCK_T) tiles
    laid as the forward's."""
    _, n, c, lanes, t_first, t_end = _plane_program(NUM_CB, CHUNK, L, BLOCK_C, BLOCK_T, INDEX64)
    cmask = c < C
    g = tl.load(dy_ptr + n * stride_gn + c * stride_gc, mask=cmask, other=0.0)
    if ACC64:
        g = g.to(tl.float64)
    else:
        g = g.to(tl.float32)
    g = tl.zeros_like(g) + _div(g, tl.zeros_like(g) + DIVISOR)  # 0 + : a -0.0 stores +0.0
    tile = tl.broadcast_to(g.to(dx_ptr.dtype.element_ty)[:, None], (BLOCK_C, BLOCK_T))
    dx_row = dx_ptr + n * stride_xn + c * stride_xc
    for start in range(t_first, t_end, BLOCK_T):
        t = start + lanes
        ok = cmask[:, None] & (t < t_end)[None, :]
        tl.store(dx_row[:, None] + (t * stride_t)[None, :], tile, mask=ok)


@launcher
@triton.jit
def _window_avg_bwd_kernel(
    # pointers; dx dense (N, C, H, W) in the given layout
    dy_ptr, dx_ptr,
    # sizes; NUM_CB channel blocks an output position, CHUNK rows a split
    C, H, W, OH, OW, NUM_CB, CHUNK,
    # grad_output strides, dx's
    stride_gn, stride_gc, stride_gh, stride_gw,
    stride_xn, stride_xc, stride_xh, stride_xw,
    ACC64: tl.constexpr, INDEX64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_KW: tl.constexpr,
):
    """Adaptive windows, few and large (pool._few_windows: at most two windows cover an input
    along a dimension): one program a window (n, oh, ow), BLOCK_C channels and split s writes
    the inputs of its window that no earlier window covers (rows from the end of window oh - 1,
    CHUNK of them from split s's first, columns from the end of window ow - 1), each the sum
    over the windows that cover it of
    dy / count, in the gather's order: (oh, ow), (oh, ow + 1), (oh + 1, ow), (oh + 1, ow + 1),
    from 0, a window that does not cover it adding +0.0. The four dy / count are worked out
    once a channel; a tap only selects."""
    _, n, oh, ow, c, kw = _window_program(NUM_CB, OH, OW, BLOCK_C, BLOCK_KW, INDEX64)
    cmask = c < C
    if ACC64:
        acc_dtype = tl.float64
    else:
        acc_dtype = tl.float32
    # this window, and where the next one starts (past the end when there is none)
    h0 = (oh * H) // OH
    h1 = ((oh + 1) * H + OH - 1) // OH
    w0 = (ow * W) // OW
    w1 = ((ow + 1) * W + OW - 1) // OW
    has_down = oh + 1 < OH
    has_right = ow + 1 < OW
    hn = tl.where(has_down, ((oh + 1) * H) // OH, H)
    wn = tl.where(has_right, ((ow + 1) * W) // OW, W)
    nh_down = ((oh + 2) * H + OH - 1) // OH - hn
    nw_right = ((ow + 2) * W + OW - 1) // OW - wn
    g_win = dy_ptr + n * stride_gn + c * stride_gc + oh * stride_gh + ow * stride_gw
    right_c = (tl.zeros_like(c) + ow + 1) < OW  # has_right, per channel (a load's mask)
    down_c = (tl.zeros_like(c) + oh + 1) < OH
    g00 = tl.load(g_win, mask=cmask, other=0.0).to(acc_dtype)
    g01 = tl.load(g_win + stride_gw, mask=cmask & right_c, other=0.0).to(acc_dtype)
    g10 = tl.load(g_win + stride_gh, mask=cmask & down_c, other=0.0).to(acc_dtype)
    g11 = tl.load(g_win + stride_gh + stride_gw, mask=cmask & down_c & right_c,
                  other=0.0).to(acc_dtype)
    zero = tl.zeros_like(g00)
    t00 = _div(g00, zero + (h1 - h0) * (w1 - w0))
    t01 = _div(g01, zero + tl.where(has_right, (h1 - h0) * nw_right, 1))
    t10 = _div(g10, zero + tl.where(has_down, nh_down * (w1 - w0), 1))
    t11 = _div(g11, zero + tl.where(has_down & has_right, nh_down * nw_right, 1))
    r0 = tl.maximum(h0, (oh * H + OH - 1) // OH)  # the end of window oh - 1 (0 for oh = 0)
    c0 = tl.maximum(w0, (ow * W + OW - 1) // OW)
    dx_win = dx_ptr + n * stride_xn + c * stride_xc  # (BLOCK_C,)
    rs = r0 + tl.program_id(1) * CHUNK  # this split's rows
    for ih in range(rs, tl.minimum(h1, rs + CHUNK)):
        down = ih >= hn  # window oh + 1 covers this row too
        for k0 in range(0, w1 - c0, BLOCK_KW):
            iw = c0 + k0 + kw
            right = (iw >= wn)[None, :]
            ok = cmask[:, None] & (iw < w1)[None, :]
            acc = (zero + t00)[:, None] + tl.where(right, t01[:, None], 0.0)
            acc += tl.where(down, t10[:, None], 0.0)
            acc += tl.where(right & down, t11[:, None], 0.0)
            tl.store(dx_win[:, None] + ih * stride_xh + (iw * stride_xw)[None, :],
                     acc.to(dx_ptr.dtype.element_ty), mask=ok)


# ---------------------------------------------------------------------------------------------
# launchers


def _max_backward(grad_output, indices, input_size, window, channels_last, adaptive, max_cover):
    N, C, H, W = input_size
    OH, OW = grad_output.shape[-2:]
    (KH, KW), (SH, SW), (PH, PW), (DH, DW) = window
    dx = _alloc((N, C, H, W), grad_output, channels_last)
    if grad_output.numel() == 0:  # no windows: nothing flows back
        return dx.zero_()
    if adaptive and _few_windows((H, W), (OH, OW)):
        return _max_backward_scatter(grad_output, indices, dx, channels_last)
    if not adaptive and (SH, SW) == (2, 2):
        blocks = _s2_windows(KH, PH, DH), _s2_windows(KW, PW, DW)
        if all(nj <= 2 for _, nj, _ in blocks):
            return _max_backward_s2(grad_output, indices, dx, blocks, channels_last)
    rows, cols, block_v, vec = _view(N, C, H, W, channels_last)
    if dx.numel():
        _autotuned("max_bwd", _max_pool2d_bwd_kernel, BWD_KEY)[_grid(rows, cols, block_v)](
            grad_output, indices, dx,
            C, H, W, OH, OW, rows, cols,
            *grad_output.stride(), *indices.stride(),
            KH=KH, KW=KW, SH=SH, SW=SW, PH=PH, PW=PW, DH=DH, DW=DW,
            MAX_OH=max_cover[0], MAX_OW=max_cover[1],
            ADAPTIVE=adaptive, CHANNELS_LAST=channels_last,
            ACC64=dx.dtype == torch.float64, INDEX64=index64(grad_output, indices, dx),
            BLOCK_V=block_v, VEC=vec,
        )
    return dx


def _s2_windows(K, P, D):
    """(J, NJ, TAPS) of max_pool2d at stride 2 along one dimension: the windows a - J - j,
    0 <= j < NJ, are those that can cover the inputs 2a and 2a + 1, and bit 2j + r of TAPS says
    whether input 2a + r is one of window a - J - j's taps (k*D = 2(J + j) + r + P, 0 <= k < K)."""
    taps = [(k * D - r - P) // 2 for r in (0, 1) for k in range(K) if (k * D - r - P) % 2 == 0]
    J = min(taps)
    bits = 0
    for r in (0, 1):
        for k in range(K):
            if (k * D - r - P) % 2 == 0:
                bits |= 1 << (2 * ((k * D - r - P) // 2 - J) + r)
    return J, max(taps) - J + 1, bits


S2_KEY = ["ROWS", "COLS", "H", "W", "CHANNELS_LAST", "BLOCK_V"]


def _max_backward_s2(grad_output, indices, dx, blocks, channels_last):
    N, C, H, W = dx.shape
    OH, OW = grad_output.shape[-2:]
    (JH, NJH, TAPS_H), (JW, NJW, TAPS_W) = blocks
    A, B = -(-H // 2), -(-W // 2)
    if channels_last:
        rows, cols, block_v, vec = _view(N, C, A, B, True)
        w_align = 1
    else:
        rows, cols, block_v, _ = _view(N, C, A, B, False)
        w_align = min(W & -W, 16)  # dx rows start at multiples of W
        # each thread stores 2 * vec neighbouring dx elements: one 16-byte vector at most, the
        # width of the store's own layout (a wider interleave goes through shared memory);
        # vec divides B = W / 2 as w_align // 2 does
        vec = max(1, min(w_align // 2, 8 // dx.element_size(), block_v))
    if channels_last:
        grid = _grid(rows, cols, block_v)
    else:  # rows of one plane per program
        grid = lambda meta: (N * C * cdiv(A, max(1, meta["BLOCK"] // block_v))  # noqa: E731
                             * cdiv(B, block_v),)
    if dx.numel():
        _autotuned("max_bwd_s2", _max_pool2d_bwd_s2_kernel, S2_KEY)[grid](
            grad_output, indices, dx,
            C, H, W, A, B, OH, OW, rows, cols,
            *grad_output.stride(), *indices.stride(),
            JH=JH, NJH=NJH, TAPS_H=TAPS_H, JW=JW, NJW=NJW, TAPS_W=TAPS_W,
            CHANNELS_LAST=channels_last, ACC64=dx.dtype == torch.float64,
            INDEX64=index64(grad_output, indices, dx), W_ALIGN=w_align, BLOCK_V=block_v, VEC=vec,
        )
    return dx


SCATTER_KEY = ["ROWS", "COLS", "OH", "OW", "CHANNELS_LAST", "BLOCK_V"]


def _max_backward_scatter(grad_output, indices, dx, channels_last):
    N, C, H, W = dx.shape
    OH, OW = grad_output.shape[-2:]
    dx.zero_()
    rows, cols, block_v, vec = _view(N, C, OH, OW, channels_last)
    _autotuned("max_bwd_scatter", _max_pool2d_bwd_scatter_kernel, SCATTER_KEY)[_grid(rows, cols, block_v)](
        grad_output, indices, dx,
        C, H, W, OH, OW, rows, cols,
        *grad_output.stride(), *indices.stride(),
        CHANNELS_LAST=channels_last, ACC64=dx.dtype == torch.float64,
        INDEX64=index64(grad_output, indices, dx), BLOCK_V=block_v, VEC=vec,
    )
    return dx


def _avg_backward(grad_output, input_size, window, count_include_pad, divisor_override,
                  channels_last, adaptive, max_cover):
    N, C, H, W = input_size
    OH, OW = grad_output.shape[-2:]
    (KH, KW), (SH, SW), (PH, PW) = window
    dx = _alloc((N, C, H, W), grad_output, channels_last)
    if grad_output.numel() == 0:  # no windows: nothing flows back
        return dx.zero_()
    rows, cols, block_v, vec = _view(N, C, H, W, channels_last)
    if dx.numel():
        _autotuned("avg_bwd", _avg_pool2d_bwd_kernel, BWD_KEY)[_grid(rows, cols, block_v)](
            grad_output, dx,
            C, H, W, OH, OW, rows, cols,
            *grad_output.stride(),
            KH=KH, KW=KW, SH=SH, SW=SW, PH=PH, PW=PW,
            MAX_OH=max_cover[0], MAX_OW=max_cover[1],
            ADAPTIVE=adaptive, COUNT_PAD=count_include_pad,
            **_const_divisor((H, W), (OH, OW), window, count_include_pad, divisor_override, adaptive),
            CHANNELS_LAST=channels_last, ACC64=dx.dtype == torch.float64,
            INDEX64=index64(grad_output, dx), BLOCK_V=block_v, VEC=vec,
        )
    return dx


def _global_avg_backward(grad_output, input_size, channels_last, divisor):
    """The gradient of a mean over each whole plane: dy / divisor spread over the plane."""
    N, C, H, W = input_size
    dx = _alloc((N, C, H, W), grad_output, channels_last)
    if dx.numel():
        L = H * W
        stride_t = _plane_run(dx)
        block_c, block_t, split, chunk = _global_plan(N, C, L, dx.stride(1), stride_t, dx.device)
        num_cb = cdiv(C, block_c)
        _global_avg_bwd_kernel[(N * num_cb, split)](
            grad_output, dx,
            C, L, chunk, num_cb, divisor,
            grad_output.stride(0), grad_output.stride(1), dx.stride(0), dx.stride(1), stride_t,
            ACC64=dx.dtype == torch.float64, INDEX64=index64(grad_output, dx),
            BLOCK_C=block_c, BLOCK_T=block_t, num_warps=4,
        )
    return dx


def max_pool2d_backward(grad_output, indices, input_size, kernel_size, stride, padding, dilation,
                        channels_last):
    window = (tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation))
    if _global_window(input_size[-2:], window, grad_output.shape[-2:]):
        # one window, the whole plane: the adaptive pool's gradient (a scatter where it pays)
        return adaptive_max_pool2d_backward(grad_output, indices, input_size, channels_last)
    cover = [_fixed_cover(k, s, d) for k, s, d in zip(kernel_size, stride, dilation)]
    return _max_backward(grad_output, indices, input_size, window, channels_last, False, cover)


def avg_pool2d_backward(grad_output, input_size, kernel_size, stride, padding, count_include_pad,
                        divisor_override, channels_last):
    window = (tuple(kernel_size), tuple(stride), tuple(padding))
    if _global_window(input_size[-2:], window, grad_output.shape[-2:]):
        divisor = divisor_override or input_size[-2] * input_size[-1]
        return _global_avg_backward(grad_output, input_size, channels_last, divisor)
    cover = [_fixed_cover(k, s, 1) for k, s in zip(kernel_size, stride)]
    return _avg_backward(grad_output, input_size, window, count_include_pad, divisor_override,
                         channels_last, False, cover)


def adaptive_max_pool2d_backward(grad_output, indices, input_size, channels_last):
    out_hw = grad_output.shape[-2:]
    window = _adaptive_window(input_size[-2:], out_hw)
    cover = [-(-o // i) + 1 for i, o in zip(input_size[-2:], out_hw)]
    return _max_backward(grad_output, indices, input_size, window, channels_last, True, cover)


def _window_avg_backward(grad_output, input_size, channels_last):
    """The gradient of adaptive averages over few, large windows (pool._few_windows)."""
    N, C, H, W = input_size
    OH, OW = grad_output.shape[-2:]
    dx = _alloc((N, C, H, W), grad_output, channels_last)
    if dx.numel():
        max_nw = _adaptive_max_taps(W, OW)
        block_c, block_kw = _window_plan(C, max_nw, channels_last)
        num_cb = cdiv(C, block_c)
        programs = N * OH * OW * num_cb
        split, chunk = _window_split(programs, _adaptive_max_taps(H, OH), cdiv(max_nw, block_kw),
                                     dx.device)
        _window_avg_bwd_kernel[(programs, split)](
            grad_output, dx,
            C, H, W, OH, OW, num_cb, chunk,
            *grad_output.stride(), *dx.stride(),
            ACC64=dx.dtype == torch.float64, INDEX64=index64(grad_output, dx),
            BLOCK_C=block_c, BLOCK_KW=block_kw, num_warps=4,
        )
    return dx


def adaptive_avg_pool2d_backward(grad_output, input_size, channels_last):
    out_hw = grad_output.shape[-2:]
    if _global_window(input_size[-2:], None, out_hw):
        return _global_avg_backward(grad_output, input_size, channels_last,
                                    input_size[-2] * input_size[-1])
    if _few_windows(input_size[-2:], out_hw):
        return _window_avg_backward(grad_output, input_size, channels_last)
    window = _adaptive_window(input_size[-2:], out_hw)[:3]
    cover = [-(-o // i) + 1 for i, o in zip(input_size[-2:], out_hw)]
    return _avg_backward(grad_output, input_size, window, True, None, channels_last, True, cover)
