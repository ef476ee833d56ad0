"""Pooling over fixed windows (max_pool2d, avg_pool2d) and adaptive windows
(adaptive_max_pool2d, adaptive_avg_pool2d): the forward kernels and the helpers their
gradients (kernels/pool_backward.py) share.

Windows, along one spatial dimension (H and W alike), of output position o:
  fixed     taps i = o*S - P + k*D,  k = 0..K-1, kept where 0 <= i < I
  adaptive  taps i = floor(o*I/O) + k, k = 0..ceil((o+1)*I/O) - floor(o*I/O) - 1
One kernel per reduction (max, mean) serves both kinds through the ADAPTIVE switch.

Forward (memory-bound: one read of the input, one write of the output). The output is seen
as a 2-D (rows, columns) array in its memory order: rows of pixels (n, oh, ow) by channel
columns for channels_last, rows of (n, c, oh) by ow columns for NCHW. One program computes a
(BLOCK // BLOCK_V, BLOCK_V) tile of it (grid: cdiv(rows, BLOCK // BLOCK_V) x cdiv(columns,
BLOCK_V)) and loops over the KH x KW taps of each window. Rows are divided into coordinates
once per row, and a tap's bounds along a row-coordinate are checked once per row, not per
element; in channels_last the columns are contiguous channels, so each thread's taps load
as one vector (up to 16 bytes). The input is read through its strides, any layout, no copy;
neighbouring windows share cache lines, so DRAM sees each input byte about once.
  max: a tap replaces the running maximum when it is greater or NaN: the first maximum wins
       ties and the last NaN wins, as in PyTorch; the index starts at the window's first valid
       tap (PyTorch's answer for a window holding only -inf). Indices are flat per (H, W)
       plane (ih*W + iw), int64, as max_unpool2d expects.
  avg: fp32 sum (fp64 for fp64) divided once by the window's divisor (_extent, or divisor_override).

Global pools (one window, the whole plane: adaptive to 1x1, or a fixed window of the plane's
size) over planes that are strided runs take _global_pool_kernel instead, where one lane per
output would walk a long window alone: tiles of (channels, taps) along the contiguous axis,
and the planes split over programs when they are few (_global_plan), the splits combined in
order (_combine_kernel). Adaptive windows few and large (the output at most 1/16 of
the input; _few_windows) take _window_pool_kernel: one program a window and channel block,
the window's rows walked by the same tiles, split over programs and combined the same way
when the windows are few (_window_split). Same answers (max bitwise, indices included).
"""

from __future__ import annotations

__all__ = [
    "max_pool2d_forward",
    "avg_pool2d_forward",
    "adaptive_max_pool2d_forward",
    "adaptive_avg_pool2d_forward",
]

import functools

import torch
import triton
import triton.language as tl

from ._common import INTERPRET, autotune, cdiv, index64, inside, next_power_of_2, num_sms
from ._launch import launcher

# ---------------------------------------------------------------------------------------------
# autotune configs (built on first launch: nothing here touches a device at import)


def _configs():
    if INTERPRET:
        # one config; 128 keeps test shapes spread over several programs and the masks busy
        return [triton.Config({"BLOCK": 128})]
    # Elements per thread = BLOCK / (32 * num_warps). In channels_last, where neighbouring
    # lanes read neighbouring channels, that is the width of each load: 8 bf16 elements make
    # one 16-byte load (compile_check's loads column), 2 make a 4-byte one. NCHW loads are
    # scalar whatever the width (strided taps).
    return [
        triton.Config({"BLOCK": 256}, num_warps=4),
        triton.Config({"BLOCK": 512}, num_warps=4),
        triton.Config({"BLOCK": 1024}, num_warps=4),
        triton.Config({"BLOCK": 1024}, num_warps=8),
        triton.Config({"BLOCK": 2048}, num_warps=8),
    ]


# ---------------------------------------------------------------------------------------------
# device helpers


@triton.jit
def _block_ids(ROW_BLOCKS):
    """(row block, column block) of this program in a one-dimensional grid (_grid), row
    blocks fastest, as the first axis of a 2-D grid would run them: CUDA caps a grid's second
    and third axes at 65535, which the column blocks of a long row pass (max_pool1d over
    2**20 samples)."""
    pid = tl.program_id(0)
    return pid % ROW_BLOCKS, pid // ROW_BLOCKS


@triton.jit
def _tile(ROWS, COLS, BLOCK: tl.constexpr, BLOCK_V: tl.constexpr, VEC: tl.constexpr,
          INDEX64: tl.constexpr):
    """This program's rows r and columns v of the dense (ROWS, COLS) view (see the module
    docstring), BLOCK // BLOCK_V rows by BLOCK_V columns, with the tile's mask and its offsets
    into a tensor stored in that view's order. VEC (a power of 2 dividing COLS, _view) tells
    the compiler that runs of VEC columns start aligned and are masked alike, so that each
    thread takes VEC neighbouring columns of one row and stores them as one vector: a row's
    coordinates and bounds are then worked out once per VEC elements, not per element."""
    BLOCK_R: tl.constexpr = BLOCK // BLOCK_V
    pid_r, pid_v = _block_ids(tl.cdiv(ROWS, BLOCK_R))
    if INDEX64:  # only when a tensor spans 2**31 elements: 64-bit division is slow on GPUs
        pid_r = pid_r.to(tl.int64)
    r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    v = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    mask = (r < ROWS)[:, None] & ((v // VEC) < (COLS // VEC))[None, :]  # = v < COLS, in runs of VEC
    return r, v, mask, tl.multiple_of(r * COLS, VEC)[:, None] + v[None, :]


@triton.jit
def _coords(r, v, C, H, W, CHANNELS_LAST: tl.constexpr):
    """(n, c, h, w) of rows r and columns v of a dense (N, C, H, W) tensor, as 2-D tensors that
    broadcast to (rows, columns): a row is a pixel (n, h, w) and a column a channel for
    channels_last, a row is (n, c, h) and a column a position w for NCHW. Only the rows are
    divided, once per row, not per element."""
    if CHANNELS_LAST:
        w = r % W
        t = r // W
        h = t % H
        n = t // H
        n, h, w, c = n[:, None], h[:, None], w[:, None], v[None, :]
    else:
        h = r % H
        t = r // H
        c = t % C
        n = t // C
        n, c, h, w = n[:, None], c[:, None], h[:, None], v[None, :]
    return n, c, h, w


@triton.jit
def _window(o, I, O, K: tl.constexpr, S: tl.constexpr, P: tl.constexpr, ADAPTIVE: tl.constexpr):
    """First tap and tap count of output o's window along one dimension (a fixed window
    always has K taps, dilated or not; an adaptive one ceil((o+1)*I/O) - floor(o*I/O))."""
    if ADAPTIVE:
        first = (o * I) // O
        count = ((o + 1) * I + O - 1) // O - first
    else:
        first = o * S - P
        count = first * 0 + K
    return first, count


@triton.jit
def _extent(first, count, I, K: tl.constexpr, P: tl.constexpr, ADAPTIVE: tl.constexpr,
            COUNT_PAD: tl.constexpr):
    """Positions the average's divisor counts along one dimension (PyTorch's rule: a fixed
    window is clipped to the padded input for count_include_pad, to the input otherwise)."""
    if ADAPTIVE:
        ext = count
    else:
        end = tl.minimum(first + K, I + P)
        if COUNT_PAD:
            ext = end - first
        else:
            ext = tl.minimum(end, I) - tl.maximum(first, 0)
    return ext


@triton.jit
def _div_const(a, DIV: tl.constexpr, RECIP: tl.constexpr):
    """a / DIV rounded to nearest for a constant integer DIV: a product with RECIP = 1/DIV where
    that is exact (DIV = +-2**k: both round the same real quotient, so the bits agree with a
    division; _const_divisor), else a division (an IEEE division costs ~10 instructions)."""
    if RECIP != 0.0:
        q = a * RECIP
    else:
        q = _div(a, tl.full(a.shape, DIV, a.dtype))
    return q


@triton.jit
def _div(a, b):
    """a / b rounded to nearest, as PyTorch divides (plain / on fp32 is the ~2 ulp div.full)."""
    if a.dtype == tl.float64:
        q = a / b
    else:
        q = tl.math.div_rn(a, b)
    return q


@triton.jit
def _plane_program(NUM_CB, CHUNK, L, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr,
                   INDEX64: tl.constexpr):
    """This program's sample n, channels c, tap lanes and split s's taps [t_first, t_end) in
    the global kernels' grid (N x channel blocks, splits of CHUNK taps of the L a plane)."""
    pid = tl.program_id(0)
    s = tl.program_id(1)
    n = pid // NUM_CB
    c = (pid % NUM_CB) * BLOCK_C + tl.arange(0, BLOCK_C)
    lanes = tl.arange(0, BLOCK_T)
    if INDEX64:
        n = n.to(tl.int64)
        c = c.to(tl.int64)
        lanes = lanes.to(tl.int64)
    t_first = s * CHUNK
    return s, n, c, lanes, t_first, tl.minimum(t_first + CHUNK, L)


@triton.jit
def _window_program(NUM_CB, OH, OW, BLOCK_C: tl.constexpr, BLOCK_KW: tl.constexpr,
                    INDEX64: tl.constexpr):
    """This program's window and channels in the window kernels' grid (one program a window
    (n, oh, ow) and channel block): (o, n, oh, ow, channels c, tap lanes kw), o = (n*OH + oh)*OW
    + ow."""
    pid = tl.program_id(0)
    o = pid // NUM_CB
    ow = o % OW
    oh = (o // OW) % OH
    n = o // (OW * OH)
    c = (pid % NUM_CB) * BLOCK_C + tl.arange(0, BLOCK_C)
    kw = tl.arange(0, BLOCK_KW)
    if INDEX64:
        n = n.to(tl.int64)
        c = c.to(tl.int64)
        kw = kw.to(tl.int64)
    return o, n, oh, ow, c, kw


@triton.jit
def _max_across(acc, tap, NONE):
    """A (channels, lanes) tile's answer per channel, where each lane holds its running maximum
    acc and that maximum's tap (-1 where it took none), taken by the scan rule: the last NaN
    (the largest tap among NaN lanes) wins, else the first tap of the maximum. Returns
    (any NaN, that last NaN's tap, the maximum of the rest, the first tap holding it, or -1
    where no lane took a tap; NONE: a tap number above every real one)."""
    nan = acc != acc
    any_nan = tl.max(nan.to(tl.int32), axis=1) > 0
    last_nan = tl.max(tl.where(nan, tap, -1), axis=1)
    best = tl.max(tl.where(nan, float("-inf"), acc), axis=1)
    # lanes holding the maximum took it (a lane that took nothing holds -inf and tap -1: then
    # every lane does, and the window's first tap is the answer)
    first = tl.min(tl.where(acc == best[:, None], tap, NONE), axis=1)
    return any_nan, last_nan, best, first


# ---------------------------------------------------------------------------------------------
# kernels


@triton.jit
def _max_pool2d_fwd_kernel(
    # pointers
    x_ptr, y_ptr, idx_ptr,
    # sizes
    C, H, W, OH, OW, ROWS, COLS,
    # input strides
    stride_xn, stride_xc, stride_xh, stride_xw,
    # windows (KH, KW: the largest window for ADAPTIVE)
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    # options
    ADAPTIVE: tl.constexpr, CHANNELS_LAST: tl.constexpr, STORE_INDICES: tl.constexpr,
    ACC64: tl.constexpr, INDEX64: tl.constexpr, BLOCK: tl.constexpr, BLOCK_V: tl.constexpr,
    VEC: tl.constexpr,
):
    """y[n, c, oh, ow] = max over the window's taps; idx = ih*W + iw of the winning tap."""
    # CLAMP (NCHW, fixed undilated windows): a tap outside the input reads the input's nearest
    # edge element instead, unmasked. That element is a tap of the same window (a window of
    # consecutive taps holds the edge it overhangs: padding is at most half the kernel, and a
    # ceil_mode window starts inside), and its copy sits next to it in the (kh, kw) scan
    # (copies of the first row or column before it, of the last after it), so the maximum, the
    # first maximum's element and the last NaN's are the masked scan's. Rows past the tile's end
    # read row ROWS - 1 (never stored). NCHW pays a mask per element and tap, channels_last one
    # per row of pixels and tap, whose channel vectors keep their column mask.
    CLAMP: tl.constexpr = (not ADAPTIVE) and (not CHANNELS_LAST) and DH == 1 and DW == 1
    r, col, mask, offs = _tile(ROWS, COLS, BLOCK, BLOCK_V, VEC, INDEX64)  # y and idx are dense in this layout
    if CLAMP:
        r = tl.minimum(r, ROWS - 1)  # (the stores keep the tile's own mask and offsets)
    n, c, oh, ow = _coords(r, col, C, OH, OW, CHANNELS_LAST)
    h0, nh = _window(oh, H, OH, KH, SH, PH, ADAPTIVE)
    w0, nw = _window(ow, W, OW, KW, SW, PW, ADAPTIVE)
    # compare in fp32 (fp64 for fp64): exact for every input dtype
    if ACC64:
        best = tl.full(mask.shape, float("-inf"), tl.float64)
    else:
        best = tl.full(mask.shape, float("-inf"), tl.float32)
    # the winning tap's number kh*KW + kw, a constant per tap; its (ih, iw) is worked out once
    # at the end. -1: no tap taken (a window of -inf alone), which keeps the first valid tap
    # (with CLAMP, 0: tap (0, 0) clamped, the same element)
    best_k = tl.full(mask.shape, 0 if CLAMP else -1, tl.int32)
    # each element's window corner, then one constant offset per tap (with CLAMP, the
    # element's plane, then a clamped row and column per tap)
    x_nc = x_ptr + n * stride_xn + c * stride_xc
    x_win = x_nc + h0 * stride_xh + w0 * stride_xw
    for kh in range(KH):
        if CLAMP:
            x_row = x_nc + tl.minimum(tl.maximum(h0 + kh, 0), H - 1) * stride_xh
        else:
            ok_h = mask & inside(h0 + kh * DH, H) & (kh < nh)
        for kw in range(KW):
            if CLAMP:
                iw = tl.minimum(tl.maximum(w0 + kw, 0), W - 1)  # the same for every row
                v = tl.load(x_row + iw * stride_xw).to(best.dtype)
            else:
                # masked-off taps read -inf, which never beats the running maximum (not even
                # -inf), so the comparison needs no mask of its own
                ok = ok_h & inside(w0 + kw * DW, W) & (kw < nw)
                v = tl.load(x_win + (kh * DH * stride_xh + kw * DW * stride_xw), mask=ok,
                            other=float("-inf")).to(best.dtype)
            take = (v > best) | (v != v)  # v != v: NaN wins
            best = tl.where(take, v, best)
            if STORE_INDICES:
                best_k = tl.where(take, kh * KW + kw, best_k)
    tl.store(y_ptr + offs, best.to(y_ptr.dtype.element_ty), mask=mask)
    if STORE_INDICES:
        if CLAMP:
            ih = tl.minimum(tl.maximum(h0 + best_k // KW, 0), H - 1)
            iw = tl.minimum(tl.maximum(w0 + best_k % KW, 0), W - 1)
        else:
            # first valid tap (h0 < 0 only in the padding of a fixed window)
            fh = h0 + ((tl.maximum(-h0, 0) + DH - 1) // DH) * DH
            fw = w0 + ((tl.maximum(-w0, 0) + DW - 1) // DW) * DW
            ih = tl.where(best_k < 0, fh, h0 + (best_k // KW) * DH)
            iw = tl.where(best_k < 0, fw, w0 + (best_k % KW) * DW)
        tl.store(idx_ptr + offs, (ih * W + iw).to(tl.int64), mask=mask)


@triton.jit
def _avg_pool2d_fwd_kernel(
    # pointers
    x_ptr, y_ptr,
    # sizes
    C, H, W, OH, OW, ROWS, COLS,
    # input strides
    stride_xn, stride_xc, stride_xh, stride_xw,
    # windows (KH, KW: the largest window for ADAPTIVE)
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr,
    # options; DIV: the divisor every window shares (divisor_override, or KH*KW where no window
    # is clipped, _const_divisor), 0 where it varies and each window counts its own
    ADAPTIVE: tl.constexpr, COUNT_PAD: tl.constexpr, DIV: tl.constexpr, RECIP: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, ACC64: tl.constexpr, INDEX64: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_V: tl.constexpr, VEC: tl.constexpr,
):
    """y[n, c, oh, ow] = (sum of the window's taps) / divisor(oh, ow)."""
    r, col, mask, offs = _tile(ROWS, COLS, BLOCK, BLOCK_V, VEC, INDEX64)  # y is dense in this layout
    n, c, oh, ow = _coords(r, col, C, OH, OW, CHANNELS_LAST)
    h0, nh = _window(oh, H, OH, KH, SH, PH, ADAPTIVE)
    w0, nw = _window(ow, W, OW, KW, SW, PW, ADAPTIVE)
    if ACC64:
        acc = tl.zeros(mask.shape, dtype=tl.float64)
    else:
        acc = tl.zeros(mask.shape, dtype=tl.float32)  # accumulate in fp32 for fp16/bf16 input
    # each element's window corner, then one constant offset per tap
    x_win = x_ptr + n * stride_xn + c * stride_xc + h0 * stride_xh + w0 * stride_xw
    for kh in range(KH):
        ok_h = mask & inside(h0 + kh, H) & (kh < nh)
        for kw in range(KW):
            ok = ok_h & inside(w0 + kw, W) & (kw < nw)
            v = tl.load(x_win + (kh * stride_xh + kw * stride_xw), mask=ok, other=0.0)
            acc += v.to(acc.dtype)
    if DIV != 0:
        y = _div_const(acc, DIV, RECIP)
    else:
        ext_h = _extent(h0, nh, H, KH, PH, ADAPTIVE, COUNT_PAD)
        ext_w = _extent(w0, nw, W, KW, PW, ADAPTIVE, COUNT_PAD)
        y = _div(acc, tl.where(mask, ext_h * ext_w, 1).to(acc.dtype))  # masked lanes: no 0 / 0
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@launcher
@triton.jit
def _global_pool_kernel(
    # pointers: x, the output and its indices, or the partials (SPLIT > 1)
    x_ptr, y_ptr, idx_ptr,
    # sizes: L taps a plane, CHUNK taps a split, NUM_CB channel blocks a sample; OUTS = N*C
    C, L, CHUNK, NUM_CB, OUTS, DIVISOR,
    # input strides; stride_t: between neighbouring taps of the plane's run
    stride_xn, stride_xc, stride_t,
    IS_MAX: tl.constexpr, STORE_INDICES: tl.constexpr, PARTIAL: tl.constexpr,
    ACC64: tl.constexpr, INDEX64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """One window per (n, c) over its whole (H, W) plane, a run of L taps t (offset
    t * stride_t): a (BLOCK_C channels, BLOCK_T taps) tile walks split s's taps [s*CHUNK,
    (s+1)*CHUNK), then reduces across its taps. max: each lane scans its taps in order (a tap
    replaces the lane's maximum when greater or NaN), then across lanes the last NaN wins, else
    the first tap of the maximum: the fixed kernel's answer. avg: an fp32 (fp64) sum.
    PARTIAL: the split's maximum (and tap) or sum goes to row s of an (SPLIT, OUTS) buffer in
    the accumulator's dtype, for _combine_kernel; else the result to y (and idx)."""
    s, n, c, lanes, t_first, t_end = _plane_program(NUM_CB, CHUNK, L, BLOCK_C, BLOCK_T, INDEX64)
    cmask = c < C
    x_row = x_ptr + n * stride_xn + c * stride_xc  # (BLOCK_C,) plane starts
    if ACC64:
        acc_dtype = tl.float64
    else:
        acc_dtype = tl.float32
    if IS_MAX:
        acc = tl.full((BLOCK_C, BLOCK_T), float("-inf"), acc_dtype)
        best_t = tl.full((BLOCK_C, BLOCK_T), -1, lanes.dtype)
    else:
        acc = tl.zeros((BLOCK_C, BLOCK_T), acc_dtype)
    for start in range(t_first, t_end, BLOCK_T):
        t = start + lanes
        ok = cmask[:, None] & (t < t_end)[None, :]
        ptrs = x_row[:, None] + (t * stride_t)[None, :]
        if IS_MAX:
            v = tl.load(ptrs, mask=ok, other=float("-inf")).to(acc_dtype)
            take = (v > acc) | (v != v)  # masked taps read -inf: never taken
            acc = tl.where(take, v, acc)
            best_t = tl.where(take, t[None, :], best_t)
        else:
            acc += tl.load(ptrs, mask=ok, other=0.0).to(acc_dtype)
    offs = s * OUTS + n * C + c  # row s of the partials; the output itself when SPLIT == 1
    if IS_MAX:
        any_nan, last_nan, best, first = _max_across(acc, best_t, L)
        tap = tl.where(any_nan, last_nan, tl.maximum(first, t_first))  # -1: the split's first tap
        # a NaN's own bits (sign, payload), as the fixed kernel keeps them
        best = tl.where(any_nan, tl.load(x_row + tap * stride_t, mask=cmask & any_nan).to(acc_dtype),
                        best)
        if PARTIAL:
            tl.store(y_ptr + offs, best, mask=cmask)
            tl.store(idx_ptr + offs, tap.to(tl.int64), mask=cmask)
        else:
            tl.store(y_ptr + offs, best.to(y_ptr.dtype.element_ty), mask=cmask)
            if STORE_INDICES:
                tl.store(idx_ptr + offs, tap.to(tl.int64), mask=cmask)
    else:
        total = tl.sum(acc, axis=1)
        if PARTIAL:
            tl.store(y_ptr + offs, total, mask=cmask)
        else:
            y = _div(total, tl.zeros_like(total) + DIVISOR)
            tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=cmask)


@launcher
@triton.jit
def _combine_kernel(part_ptr, part_idx_ptr, y_ptr, idx_ptr, OUTS, SPLIT, DIVISOR,
                           C, H, W, OH, OW,
                           IS_MAX: tl.constexpr, STORE_INDICES: tl.constexpr, WINDOWS: tl.constexpr,
                           CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
    """The splits' partials (rows of an (SPLIT, OUTS) buffer, OUTS = y's elements in its
    memory order) combined in split order: max by the tap rule (a later split's maximum
    replaces when greater or NaN, so ties keep the first tap and the last NaN wins, as one scan
    would), avg summed, then divided: by DIVISOR, or with WINDOWS (_window_pool_kernel's
    splits of (N, C, OH, OW) adaptive windows over (H, W)) by each window's tap count."""
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = o < OUTS
    acc = tl.load(part_ptr + o, mask=mask, other=0.0)
    if IS_MAX:
        tap = tl.load(part_idx_ptr + o, mask=mask, other=0)
    for s in range(1, SPLIT):
        v = tl.load(part_ptr + s * OUTS + o, mask=mask, other=0.0)
        if IS_MAX:
            take = (v > acc) | (v != v)
            acc = tl.where(take, v, acc)
            tap = tl.where(take, tl.load(part_idx_ptr + s * OUTS + o, mask=mask, other=0), tap)
        else:
            acc += v
    if IS_MAX:
        tl.store(y_ptr + o, acc.to(y_ptr.dtype.element_ty), mask=mask)
        if STORE_INDICES:
            tl.store(idx_ptr + o, tap, mask=mask)
    else:
        if WINDOWS:
            if CHANNELS_LAST:
                p = o // C  # the output position (n, oh, ow)
            else:
                p = o
            ow = p % OW
            oh = (p // OW) % OH
            count = ((((oh + 1) * H + OH - 1) // OH - (oh * H) // OH)
                     * (((ow + 1) * W + OW - 1) // OW - (ow * W) // OW))
            y = _div(acc, tl.zeros_like(acc) + count)
        else:
            y = _div(acc, tl.zeros_like(acc) + DIVISOR)
        tl.store(y_ptr + o, y.to(y_ptr.dtype.element_ty), mask=mask)


@launcher
@triton.jit
def _window_pool_kernel(
    # pointers: x, the output and its indices, or the partials (PARTIAL)
    x_ptr, y_ptr, idx_ptr,
    # sizes; NUM_CB channel blocks an output position, CHUNK rows of a window a split, OUTS
    # outputs (N*C*OH*OW)
    C, H, W, OH, OW, NUM_CB, CHUNK, OUTS,
    # input strides
    stride_xn, stride_xc, stride_xh, stride_xw,
    IS_MAX: tl.constexpr, STORE_INDICES: tl.constexpr, CHANNELS_LAST: tl.constexpr,
    PARTIAL: tl.constexpr,
    ACC64: tl.constexpr, INDEX64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_KW: tl.constexpr,
):
    """Adaptive windows, few and large: one program a window (n, oh, ow), BLOCK_C channels and
    split s of the window's rows (CHUNK of them from its first), walking those rows, BLOCK_KW
    taps of a row at a time, in the tile the global kernel uses (channels x taps, along the
    contiguous axis). The window's bounds are scalars here, so no tap is divided. max: as
    _global_pool_kernel, with plane indices ih*W + iw for taps (their order is the scan's);
    avg: the sum over the window's count. PARTIAL (windows split over programs): the split's
    maximum (and tap) or sum goes to row s of an (SPLIT, OUTS) buffer in the accumulator's
    dtype, at the output's offset, for _combine_kernel."""
    o, n, oh, ow, c, kw = _window_program(NUM_CB, OH, OW, BLOCK_C, BLOCK_KW, INDEX64)
    cmask = c < C
    h0 = (oh * H) // OH
    h1 = ((oh + 1) * H + OH - 1) // OH
    hs = h0 + tl.program_id(1) * CHUNK  # this split's rows [hs, he); none past the window
    he = tl.minimum(h1, hs + CHUNK)
    w0 = (ow * W) // OW
    nw = ((ow + 1) * W + OW - 1) // OW - w0
    x_win = x_ptr + n * stride_xn + c * stride_xc  # (BLOCK_C,)
    if ACC64:
        acc_dtype = tl.float64
    else:
        acc_dtype = tl.float32
    if IS_MAX:
        acc = tl.full((BLOCK_C, BLOCK_KW), float("-inf"), acc_dtype)
        best_p = tl.full((BLOCK_C, BLOCK_KW), -1, kw.dtype)
    else:
        acc = tl.zeros((BLOCK_C, BLOCK_KW), acc_dtype)
    for ih in range(hs, he):
        x_row = x_win + ih * stride_xh
        for k0 in range(0, nw, BLOCK_KW):
            iw = w0 + k0 + kw
            ok = cmask[:, None] & (k0 + kw < nw)[None, :]
            ptrs = x_row[:, None] + (iw * stride_xw)[None, :]
            if IS_MAX:
                v = tl.load(ptrs, mask=ok, other=float("-inf")).to(acc_dtype)
                take = (v > acc) | (v != v)  # masked taps read -inf: never taken
                acc = tl.where(take, v, acc)
                best_p = tl.where(take, (ih * W + iw)[None, :], best_p)
            else:
                acc += tl.load(ptrs, mask=ok, other=0.0).to(acc_dtype)
    if CHANNELS_LAST:
        offs = o * C + c
    else:
        offs = (n * C + c) * (OH * OW) + oh * OW + ow
    if PARTIAL:
        offs += tl.program_id(1) * OUTS
    if IS_MAX:
        any_nan, last_nan, best, first = _max_across(acc, best_p, H * W)
        # -1: the split's first tap (an empty split's -inf is never taken by the combine)
        tap = tl.where(any_nan, last_nan, tl.maximum(first, hs * W + w0))
        nan_x = x_win + (tap // W) * stride_xh + (tap % W) * stride_xw
        best = tl.where(any_nan, tl.load(nan_x, mask=cmask & any_nan).to(acc_dtype), best)
        if PARTIAL:
            tl.store(y_ptr + offs, best, mask=cmask)
            tl.store(idx_ptr + offs, tap.to(tl.int64), mask=cmask)
        else:
            tl.store(y_ptr + offs, best.to(y_ptr.dtype.element_ty), mask=cmask)
            if STORE_INDICES:
                tl.store(idx_ptr + offs, tap.to(tl.int64), mask=cmask)
    else:
        total = tl.sum(acc, axis=1)
        if PARTIAL:
            tl.store(y_ptr + offs, total, mask=cmask)
        else:
            y = _div(total, tl.zeros_like(total) + (h1 - h0) * nw)
            tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=cmask)


_tuned: dict = {}


def _autotuned(name, fn, key, configs=None):
    """The autotuned wrapper of a pool kernel (this file's or pool_backward's) or of a
    depthwise stencil (depthwise.py, tiled as these), built on first use from _configs (or
    from ``configs()``)."""
    if name not in _tuned:
        _tuned[name] = autotune(fn, configs=(configs or _configs)(), key=key)
    return _tuned[name]


FWD_KEY = ["ROWS", "COLS", "OH", "OW", "KH", "KW", "CHANNELS_LAST", "BLOCK_V"]


# ---------------------------------------------------------------------------------------------
# launchers: 4-D tensors (N, C, H, W); channels_last picks the layout of what they allocate


# widest column block: BLOCK_V = min(next power of 2 >= COLS, this); small under the interpreter,
# so that the tests' shapes span several column blocks with ragged ends
MAX_BLOCK_V = 8 if INTERPRET else 128


def _view(N, C, H, W, channels_last):
    """(ROWS, COLS, BLOCK_V, VEC) of the 2-D view of a dense (N, C, H, W) tensor: rows of
    pixels by channel columns (channels_last), rows of (n, c, h) by w columns (NCHW); VEC is
    the largest power of 2 up to 8 (16 bytes of bf16) that divides COLS (and fits BLOCK_V).
    BLOCK_V is COLS rounded up to a power of 2, at most MAX_BLOCK_V; but in channels_last,
    where the largest power of 2 dividing C holds a whole vector, that power (at most
    MAX_BLOCK_V): 144 channels (MobileNetV2) take 16-wide blocks, none idle, where 128-wide
    ones would leave 112 of every 256 lanes without a channel, and 96 take 32-wide ones."""
    cols = C if channels_last else W
    rows = N * H * W if channels_last else N * C * H
    block_v = min(next_power_of_2(max(cols, 1)), MAX_BLOCK_V)
    if channels_last and (C & -C) >= min(8, block_v):
        block_v = min(C & -C, block_v)
    return rows, cols, block_v, min(cols & -cols if cols else 8, 8, block_v)


def _grid(rows, cols, block_v):
    """The (rows, cols) view's tiles, one program each, in one grid axis (_block_ids)."""
    return lambda meta: (cdiv(rows, max(1, meta["BLOCK"] // block_v)) * cdiv(cols, block_v),)


def _alloc(shape, like, channels_last, dtype=None):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device, memory_format=fmt)


@functools.lru_cache(maxsize=1024)
def _adaptive_max_taps(i, o):
    """Largest adaptive window along one dimension: max over k of ceil((k+1)*i/o) - floor(k*i/o)."""
    return max(((k + 1) * i + o - 1) // o - (k * i) // o for k in range(o)) if o > 0 else 1


def _max_forward(x, out_hw, window, channels_last, need_indices, adaptive):
    N, C, H, W = x.shape
    OH, OW = out_hw
    (KH, KW), (SH, SW), (PH, PW), (DH, DW) = window
    y = _alloc((N, C, OH, OW), x, channels_last)
    if need_indices:
        idx = _alloc((N, C, OH, OW), x, channels_last, torch.int64)
    else:  # inference without return_indices: the output alone is written
        idx = x.new_empty(0, dtype=torch.int64)
    rows, cols, block_v, vec = _view(N, C, OH, OW, channels_last)
    if y.numel():
        _autotuned("max_fwd", _max_pool2d_fwd_kernel, FWD_KEY)[_grid(rows, cols, block_v)](
            x, y, idx if need_indices else y,
            C, H, W, OH, OW, rows, cols,
            *x.stride(),
            KH=KH, KW=KW, SH=SH, SW=SW, PH=PH, PW=PW, DH=DH, DW=DW,
            ADAPTIVE=adaptive, CHANNELS_LAST=channels_last, STORE_INDICES=need_indices,
            ACC64=x.dtype == torch.float64, INDEX64=index64(x, y), BLOCK_V=block_v, VEC=vec,
        )
    return y, idx


def _avg_forward(x, out_hw, window, count_include_pad, divisor_override, channels_last, adaptive):
    N, C, H, W = x.shape
    OH, OW = out_hw
    (KH, KW), (SH, SW), (PH, PW) = window
    y = _alloc((N, C, OH, OW), x, channels_last)
    rows, cols, block_v, vec = _view(N, C, OH, OW, channels_last)
    if y.numel():
        _autotuned("avg_fwd", _avg_pool2d_fwd_kernel, FWD_KEY)[_grid(rows, cols, block_v)](
            x, y,
            C, H, W, OH, OW, rows, cols,
            *x.stride(),
            KH=KH, KW=KW, SH=SH, SW=SW, PH=PH, PW=PW,
            ADAPTIVE=adaptive, COUNT_PAD=count_include_pad,
            **_const_divisor((H, W), (OH, OW), window, count_include_pad, divisor_override, adaptive),
            CHANNELS_LAST=channels_last, ACC64=x.dtype == torch.float64, INDEX64=index64(x, y),
            BLOCK_V=block_v, VEC=vec,
        )
    return y


def _const_divisor(in_hw, out_hw, window, count_include_pad, divisor_override, adaptive) -> dict:
    """The avg kernels' DIV, the divisor every window shares (divisor_override, else KH*KW when
    no window is clipped: count_include_pad clips only a window hanging past the padding, in
    ceil_mode, and without it any padding clips) or 0 where windows count their own, and RECIP,
    1/DIV where a product by it rounds exactly as the division (DIV = +-2**k), else 0.0."""
    div = 0
    if divisor_override:
        div = int(divisor_override)
    elif not adaptive:
        (KH, KW), (SH, SW), (PH, PW) = window[:3]
        clipped = any((o - 1) * s - p + k > i + p or (p and not count_include_pad)
                      for i, o, k, s, p in ((in_hw[0], out_hw[0], KH, SH, PH),
                                            (in_hw[1], out_hw[1], KW, SW, PW)))
        div = 0 if clipped else KH * KW
    exact = div != 0 and (abs(div) & (abs(div) - 1)) == 0
    return {"DIV": div, "RECIP": 1.0 / div if exact else 0.0}


# ---------------------------------------------------------------------------------------------
# global pools: one window over the whole plane (adaptive to 1x1, or a fixed window of the
# plane's size), where one lane per output would leave the GPU nearly idle


def _plane_run(x):
    """The stride between neighbouring taps when x's (H, W) planes are each one strided run
    (NCHW and channels_last tensors, and slices along N or C), else None."""
    _, _, H, W = x.shape
    _, _, sh, sw = x.stride()
    if W == 1:
        return sh
    if H == 1 or sh == W * sw:
        return sw
    return None


def _global_window(input_hw, window, out_hw) -> bool:
    """Whether a pool of (H, W) planes to out_hw has one window, the whole plane: adaptive
    (window None) to 1x1, or a fixed window of the plane's size, unpadded and undilated."""
    if tuple(out_hw) != (1, 1) or input_hw[0] * input_hw[1] == 0:
        return False
    if window is None:
        return True
    (KH, KW), _, (PH, PW), *dilation = window
    return (KH, KW) == tuple(input_hw) and PH == PW == 0 and all(d == (1, 1) for d in dilation)


def _global_ok(x, window=None, out_hw=(1, 1)):
    """Whether a pool of x takes the global kernel: one window, the whole plane, over planes
    that are strided runs."""
    return _global_window(x.shape[-2:], window, out_hw) and _plane_run(x) is not None


# tile steps a split keeps at least (2 under the interpreter, so that the tests' planes split)
MIN_SPLIT_STEPS = 2 if INTERPRET else 8


def _global_plan(N, C, L, stride_c, stride_t, device):
    """(BLOCK_C, BLOCK_T, SPLIT, CHUNK). The tile (2048 elements, 16 a thread at 4 warps) runs
    along the contiguous axis: channels for channels_last (stride_c == 1), taps otherwise. The
    planes split into SPLIT runs of CHUNK taps where N * channel blocks would give fewer than
    4 programs an SM (one program's 4 KB of bf16 loads in flight is a quarter of what an SM needs
    to stream at the copy rate), keeping MIN_SPLIT_STEPS tile steps a split (the combine is
    one launch more, which a small input, such as ResNet's 7x7 head, does not repay)."""
    tile = 32 if INTERPRET else 2048
    if stride_c == 1 and stride_t != 1 and C > 1:
        block_c = min(next_power_of_2(C), 8 if INTERPRET else 128)
        block_t = tile // block_c
    else:
        block_t = min(next_power_of_2(L), 16 if INTERPRET else 1024)
        block_c = tile // block_t
    programs = N * cdiv(C, block_c)
    steps = cdiv(L, block_t)
    split = max(1, min(cdiv(4 * num_sms(device), programs), steps // MIN_SPLIT_STEPS))
    chunk = cdiv(steps, split) * block_t
    return block_c, block_t, cdiv(L, chunk), chunk


def _partials(split, x, y, idx, is_max):
    """(accumulator dtype, dst, dst_idx): where a split pool kernel writes. One split: y and
    idx (y again when there are no indices); more: (split, y.numel()) partials in the
    accumulator's dtype (fp64 for fp64 x, else fp32), with their int64 taps for max."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    if split == 1:
        return acc, y, idx if idx is not None else y
    part = torch.empty((split, y.numel()), dtype=acc, device=x.device)
    taps = torch.empty((split, y.numel()), dtype=torch.int64, device=x.device) if is_max else part
    return acc, part, taps


def _combine(part, part_idx, y, idx, is_max, split, divisor, sizes, windows, channels_last):
    """_combine_kernel over _partials' buffers into y (and idx); sizes (C, H, W, OH, OW)."""
    block = 128
    _combine_kernel[(cdiv(y.numel(), block),)](
        part, part_idx, y, idx if idx is not None else y, y.numel(), split, divisor, *sizes,
        IS_MAX=is_max, STORE_INDICES=idx is not None, WINDOWS=windows, CHANNELS_LAST=channels_last,
        BLOCK=block, num_warps=4,
    )


def _global_forward(x, channels_last, is_max, need_indices=False, divisor=None):
    """Max (with the indices when need_indices) or mean (sum / divisor, default H*W) over each
    whole (H, W) plane of x: (N, C, 1, 1), and the int64 indices for max."""
    N, C, H, W = x.shape
    L = H * W
    stride_t = _plane_run(x)
    y = _alloc((N, C, 1, 1), x, channels_last)
    idx = _alloc((N, C, 1, 1), x, channels_last, torch.int64) if need_indices else None
    if y.numel():
        block_c, block_t, split, chunk = _global_plan(N, C, L, x.stride(1), stride_t, x.device)
        acc, dst, dst_idx = _partials(split, x, y, idx, is_max)
        num_cb = cdiv(C, block_c)
        _global_pool_kernel[(N * num_cb, split)](
            x, dst, dst_idx,
            C, L, chunk, num_cb, N * C, divisor or L,
            x.stride(0), x.stride(1), stride_t,
            IS_MAX=is_max, STORE_INDICES=need_indices, PARTIAL=split > 1,
            ACC64=acc == torch.float64, INDEX64=index64(x, y, dst), BLOCK_C=block_c, BLOCK_T=block_t,
            num_warps=4,
        )
        if split > 1:
            _combine(dst, dst_idx, y, idx, is_max, split, divisor or L, (C, H, W, 1, 1), False, False)
    return y, idx


def _few_windows(input_hw, out_hw) -> bool:
    """Whether adaptive windows are few and large enough for _window_pool_kernel: the output
    at most 1/16 of the input and no larger along either dimension (as the max gradient's
    scatter asks: then at most two windows cover an input along a dimension)."""
    (H, W), (OH, OW) = input_hw, out_hw
    return 0 < OH <= H and 0 < OW <= W and 16 * OH * OW <= H * W


def _window_plan(C, max_nw, channels_last):
    """(BLOCK_C, BLOCK_KW): a 2048-element tile (32 under the interpreter) along the contiguous
    axis, channels for channels_last, a window row's taps otherwise."""
    tile = 32 if INTERPRET else 2048
    if channels_last and C > 1:
        block_c = min(next_power_of_2(C), 8 if INTERPRET else 128)
        return block_c, min(tile // block_c, next_power_of_2(max_nw))
    block_kw = min(next_power_of_2(max_nw), tile)
    return min(tile // block_kw, next_power_of_2(C)), block_kw


def _window_split(programs, rows, row_steps, device):
    """(SPLIT, CHUNK): the windows' rows (``rows`` in the tallest, ``row_steps`` tile steps a
    row) split over programs where ``programs`` (windows x channel blocks) would give fewer
    than 4 an SM (a batch-1 PSPNet bin: 4 or 9 windows of 16 channel blocks), keeping
    MIN_SPLIT_STEPS tile steps a split, as _global_plan does."""
    want = cdiv(4 * num_sms(device), max(programs, 1))
    split = max(1, min(want, rows * row_steps // MIN_SPLIT_STEPS, rows))
    chunk = cdiv(rows, split)
    return cdiv(rows, chunk), chunk


def _window_forward(x, out_hw, channels_last, is_max, need_indices=False):
    N, C, H, W = x.shape
    OH, OW = out_hw
    y = _alloc((N, C, OH, OW), x, channels_last)
    idx = _alloc((N, C, OH, OW), x, channels_last, torch.int64) if need_indices else None
    if y.numel():
        max_nw = _adaptive_max_taps(W, OW)
        block_c, block_kw = _window_plan(C, max_nw, channels_last)
        num_cb = cdiv(C, block_c)
        programs = N * OH * OW * num_cb
        split, chunk = _window_split(programs, _adaptive_max_taps(H, OH), cdiv(max_nw, block_kw),
                                     x.device)
        acc, dst, dst_idx = _partials(split, x, y, idx, is_max)
        _window_pool_kernel[(programs, split)](
            x, dst, dst_idx,
            C, H, W, OH, OW, num_cb, chunk, y.numel(),
            *x.stride(),
            IS_MAX=is_max, STORE_INDICES=need_indices, CHANNELS_LAST=channels_last,
            PARTIAL=split > 1, ACC64=acc == torch.float64, INDEX64=index64(x, y, dst),
            BLOCK_C=block_c, BLOCK_KW=block_kw, num_warps=4,
        )
        if split > 1:
            _combine(dst, dst_idx, y, idx, is_max, split, 1, (C, H, W, OH, OW), True, channels_last)
    return y, idx


def _fixed_cover(k, s, d):
    return -(-((k - 1) * d + 1) // s)  # cdiv(effective kernel, stride)


def _adaptive_window(input_hw, output_size):
    (H, W), (OH, OW) = input_hw, output_size
    ks = (_adaptive_max_taps(H, OH), _adaptive_max_taps(W, OW))
    return ks, (1, 1), (0, 0), (1, 1)


def max_pool2d_forward(input, kernel_size, stride, padding, dilation, output_size, channels_last,
                       need_indices):
    """input (N, C, H, W) -> (output (N, C, OH, OW), indices int64 of the same shape, or an
    empty tensor when not need_indices). output_size = (OH, OW) from ceil_mode's rule."""
    window = (tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation))
    if _global_ok(input, window, output_size):
        return _max_result(_global_forward(input, channels_last, True, need_indices), input)
    return _max_forward(input, output_size, window, channels_last, need_indices, False)


def avg_pool2d_forward(input, kernel_size, stride, padding, output_size, count_include_pad,
                       divisor_override, channels_last):
    window = (tuple(kernel_size), tuple(stride), tuple(padding))
    if _global_ok(input, window, output_size):
        return _global_forward(input, channels_last, False, divisor=divisor_override)[0]
    return _avg_forward(input, output_size, window, count_include_pad, divisor_override,
                        channels_last, False)


def adaptive_max_pool2d_forward(input, output_size, channels_last, need_indices):
    if _global_ok(input, None, output_size):
        return _max_result(_global_forward(input, channels_last, True, need_indices), input)
    if _few_windows(input.shape[-2:], output_size):
        return _max_result(_window_forward(input, output_size, channels_last, True, need_indices), input)
    window = _adaptive_window(input.shape[-2:], output_size)
    return _max_forward(input, output_size, window, channels_last, need_indices, True)


def adaptive_avg_pool2d_forward(input, output_size, channels_last):
    if _global_ok(input, None, output_size):
        return _global_forward(input, channels_last, False)[0]
    if _few_windows(input.shape[-2:], output_size):
        return _window_forward(input, output_size, channels_last, False)[0]
    window = _adaptive_window(input.shape[-2:], output_size)[:3]
    return _avg_forward(input, output_size, window, True, None, channels_last, True)


def _max_result(result, input):
    """(y, indices) of the global and window launchers, the indices an empty int64 tensor when
    not asked for (None there), as _max_forward gives them."""
    y, idx = result
    return y, idx if idx is not None else input.new_empty(0, dtype=torch.int64)
