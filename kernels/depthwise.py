"""Depthwise convolution (groups = C_in = C_out: one input channel and one filter per channel)
as a direct stencil, not a GEMM: its forward, input gradient and weight gradient.

The implicit GEMM (kernels/conv.py) gives a depthwise layer one output channel and one input
channel per group, so its smallest tile (64 x 16 x 16) uses 1 of 16 columns and 1 of 16 K
lanes of each MMA: ~1/256 of the issued tensor-core work, one group per grid row. Here the
output is tiled as the pool kernels tile theirs (kernels/pool.py: rows of pixels by channel
columns for channels_last, rows of (n, c, oh) by ow columns for NCHW), and each element sums
its KH x KW taps in fp32, the weight of a tap loaded once per tile column (channels_last) or
row (NCHW), not per element.

  forward     y[n, c, oh, ow] = act(b[c] + sum_kh,kw x[n, c, oh*S - P + kh*D, ow*S - P + kw*D] w[c, kh, kw])
  input grad  dx[n, c, ih, iw] = b[c] + sum_kh,kw dy[n, c, oh, ow] w[c, kh, kw] over the taps with
              oh = (ih + P - kh*D) / S a whole number in [0, OH) (and ow likewise); the bias is
              conv_transpose2d's, whose forward this is
  weight grad dw[c, kh, kw] = sum_n,oh,ow dy[n, c, oh, ow] x[n, c, oh*S - P + kh*D, ow*S - P + kw*D],
              db[c] = sum_n,oh,ow dy[n, c, oh, ow]

The weight gradient is a reduction over dy's pixels: a program walks its share of dy's rows in
tiles, holding one fp32 sum per (tap, tile element) in registers, each step loading a dy tile
and, per tap, the x tile it meets (a 3-D (taps, rows, columns) gather whose neighbouring taps
the cache serves, as the forward's), and reduces over its rows (and columns) at the end. The
taps stay within each thread (the tile gives each thread a whole vector or more), so dy's tile
multiplies them in registers. channels_last: rows of dy's pixels by channel columns, a program
per filter row kh (its KW taps: 16-byte loads of 8 channels a thread, 4 x 8 sums for a 3x3),
the KH programs of a tile adjacent in the grid so that they meet its dy and x in the cache.
NCHW: a program per channel, rows of (n, oh) by ow columns, all KH x KW taps (scalar loads).
dy's rows are split over programs enough to fill the GPU; the fp32 partials (split, C, KH*KW)
are summed in split order (deterministic, no atomics); db comes from the kh = 0 programs.

Padding and the taps between strides load zeros and multiply like the GEMM kernels' (a NaN or
Inf weight over one gives NaN, as the README says of convolutions; in the weight gradient a NaN
or Inf in dy gives NaN at the taps that reach padding, as the GEMM's).
"""

from __future__ import annotations

__all__ = ["depthwise", "depthwise_forward", "depthwise_input_grad", "depthwise_weight_grad"]

import torch
import triton
import triton.language as tl

from ._common import INTERPRET, apply_activation, cdiv, index64, inside, next_power_of_2, num_sms
from .pool import _alloc, _autotuned, _coords, _grid, _tile, _view

# the largest filter the stencil takes (its tap loops compile in; a larger one, such as a
# per-sample weight gradient that vmap computes as a convolution by dy, runs the GEMM)
MAX_TAPS = 81


def depthwise(weight_shape, groups) -> bool:
    """Whether a convolution with a weight of this shape (C_out, C_in / groups, KH, KW) is
    depthwise with one filter per channel (groups = C_in = C_out) of at most MAX_TAPS taps."""
    C_out, Cg, KH, KW = weight_shape
    return Cg == 1 and C_out == groups and KH * KW <= MAX_TAPS


@triton.jit
def _dw_fwd_kernel(
    # pointers
    x_ptr, w_ptr, b_ptr, y_ptr,
    # sizes
    C, H, W, OH, OW, ROWS, COLS,
    # strides: input, weight (its channel, kh and kw)
    stride_xn, stride_xc, stride_xh, stride_xw, stride_wc, stride_wh, stride_ww,
    # the convolution
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, CHANNELS_LAST: tl.constexpr,
    INDEX64: tl.constexpr, BLOCK: tl.constexpr, BLOCK_V: tl.constexpr, VEC: tl.constexpr,
):
    r, col, mask, offs = _tile(ROWS, COLS, BLOCK, BLOCK_V, VEC, INDEX64)  # y is dense in this layout
    n, c, oh, ow = _coords(r, col, C, OH, OW, CHANNELS_LAST)
    h0 = oh * SH - PH
    w0 = ow * SW - PW
    acc = tl.zeros(mask.shape, dtype=tl.float32)
    x_win = x_ptr + n * stride_xn + c * stride_xc + h0 * stride_xh + w0 * stride_xw
    w_c = w_ptr + c * stride_wc  # a column's (channels_last) or a row's (NCHW) filter
    c_ok = c < C
    for kh in range(KH):
        ok_h = mask & inside(h0 + kh * DH, H)
        for kw in range(KW):
            ok = ok_h & inside(w0 + kw * DW, W)
            v = tl.load(x_win + (kh * DH * stride_xh + kw * DW * stride_xw), mask=ok, other=0.0)
            wt = tl.load(w_c + (kh * stride_wh + kw * stride_ww), mask=c_ok, other=0.0)
            acc += v.to(tl.float32) * wt.to(tl.float32)
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    acc = apply_activation(acc, ACTIVATION)
    tl.store(y_ptr + offs, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dw_bwd_input_kernel(
    # pointers
    dy_ptr, w_ptr, b_ptr, dx_ptr,
    # sizes
    C, H, W, OH, OW, ROWS, COLS,
    # strides: grad_output, weight (its channel, kh and kw)
    stride_gn, stride_gc, stride_gh, stride_gw, stride_wc, stride_wh, stride_ww,
    # the convolution
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    HAS_BIAS: tl.constexpr, CHANNELS_LAST: tl.constexpr,
    INDEX64: tl.constexpr, BLOCK: tl.constexpr, BLOCK_V: tl.constexpr, VEC: tl.constexpr,
):
    r, col, mask, offs = _tile(ROWS, COLS, BLOCK, BLOCK_V, VEC, INDEX64)  # dx is dense in this layout
    n, c, ih, iw = _coords(r, col, C, H, W, CHANNELS_LAST)
    acc = tl.zeros(mask.shape, dtype=tl.float32)
    g_nc = dy_ptr + n * stride_gn + c * stride_gc
    w_c = w_ptr + c * stride_wc
    c_ok = c < C
    for kh in range(KH):
        th = ih + PH - kh * DH  # oh * SH where this tap of window oh is input row ih
        oh = th // SH  # read only where th >= 0 (a floor there)
        ok_h = mask & (th >= 0) & (oh < OH)
        if SH > 1:
            ok_h = ok_h & (th % SH == 0)
        for kw in range(KW):
            tw = iw + PW - kw * DW
            ow = tw // SW
            ok = ok_h & (tw >= 0) & (ow < OW)
            if SW > 1:
                ok = ok & (tw % SW == 0)
            g = tl.load(g_nc + oh * stride_gh + ow * stride_gw, mask=ok, other=0.0)
            wt = tl.load(w_c + (kh * stride_wh + kw * stride_ww), mask=c_ok, other=0.0)
            acc += g.to(tl.float32) * wt.to(tl.float32)
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    tl.store(dx_ptr + offs, acc.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dw_bwd_weight_kernel(
    # pointers: dw_ptr / db_ptr a split's fp32 partials (C, KH*KW) / (C), each split's
    # SPLIT_STRIDE elements after the previous's (dw's and db's in one buffer)
    dy_ptr, x_ptr, dw_ptr, db_ptr,
    # sizes: the (ROWS, COLS) view of dy, each split's CHUNK of rows; OH and OW compile in, so
    # that splitting a row index into (n, oh, ow), the loop's main integer cost, divides by
    # constants (a multiply and a shift) rather than by values
    C, H, W, OH: tl.constexpr, OW: tl.constexpr, ROWS, COLS, CHUNK, SPLIT_STRIDE,
    # strides: grad_output, input
    stride_gn, stride_gc, stride_gh, stride_gw, stride_xn, stride_xc, stride_xh, stride_xw,
    # the convolution; a program takes TAP_ROWS filter rows (1 or KH), TAPS = TAP_ROWS * KW taps
    # (TAPS_P2: to a power of 2)
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    TAP_ROWS: tl.constexpr, TAPS_P2: tl.constexpr,
    BIAS_GRAD: tl.constexpr, CHANNELS_LAST: tl.constexpr,
    # BLOCK: elements of a step's (rows, BLOCK_V) tile of dy (_wgrad_configs)
    INDEX64: tl.constexpr, BLOCK: tl.constexpr, BLOCK_V: tl.constexpr, VEC: tl.constexpr,
):
    BLOCK_R: tl.constexpr = BLOCK // BLOCK_V
    # this program's first filter row, fastest in the grid, so that the programs of a tile run
    # together and share its dy and x in the cache; then its channel or channel block (folded
    # into the first axis: CUDA caps the others at 65535, and NCHW has a program a channel)
    pid = tl.program_id(0)
    kh0 = (pid % (KH // TAP_ROWS)) * TAP_ROWS
    block = pid // (KH // TAP_ROWS)
    split = tl.program_id(1)
    if INDEX64:
        split = split.to(tl.int64)
    start = split * CHUNK
    end = tl.minimum(start + CHUNK, ROWS)
    # the taps: no contiguity along them, else the compiler would lay threads or warps along the
    # tap axis (whose NCHW taps read neighbouring x) rather than keep them within a thread
    t = tl.max_contiguous(tl.arange(0, TAPS_P2), 1)
    t_ok = (t < TAP_ROWS * KW)[:, None, None]
    kh = (kh0 + t // KW)[:, None, None]
    kw = (t % KW)[:, None, None]
    if CHANNELS_LAST:  # this program's channels (one column block)
        v_lo = block * BLOCK_V
    else:  # this program's channel, every column block of its rows
        c = block
        v_lo = 0
    # the sums of (tap, row, column): a tile holds a vector a thread or more, so the taps lie
    # within each thread and dy's (row, column) tile broadcasts over them in registers
    acc = tl.zeros((TAPS_P2, BLOCK_R, BLOCK_V), dtype=tl.float32)
    if BIAS_GRAD:
        acc_b = tl.zeros((BLOCK_R, BLOCK_V), dtype=tl.float32)
    for r0 in range(start, end, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        for v0 in range(0, BLOCK_V if CHANNELS_LAST else COLS, BLOCK_V):
            v = v_lo + v0 + tl.arange(0, BLOCK_V)
            if not CHANNELS_LAST:  # (v0: a multiple of BLOCK_V, a loop variable)
                v = tl.max_contiguous(tl.multiple_of(v, VEC), VEC)
            mask = (r < end)[:, None] & ((v // VEC) < (COLS // VEC))[None, :]  # v < COLS in runs of VEC
            if CHANNELS_LAST:
                n, c, oh, ow = _coords(r, v, C, OH, OW, True)
            else:  # rows (n, oh): (n, c, h) rows of one channel
                n, _, oh, ow = _coords(r, v, 1, OH, OW, False)
            g = tl.load(dy_ptr + (n * stride_gn + c * stride_gc + oh * stride_gh + ow * stride_gw),
                        mask=mask, other=0.0).to(tl.float32)
            h0 = oh * SH - PH  # (rows, 1): the window's first row and column
            w0 = ow * SW - PW  # (rows or 1, columns or 1)
            ih = h0[None, :, :] + kh * DH  # (TAPS_P2, rows, 1)
            iw = w0[None, :, :] + kw * DW  # (TAPS_P2, rows or 1, columns or 1)
            ok = mask[None, :, :] & t_ok & inside(ih, H) & inside(iw, W)
            if CHANNELS_LAST:
                x_off = (n * stride_xn + c * stride_xc)[None, :, :] + ih * stride_xh + iw * stride_xw
                xv = tl.load(x_ptr + x_off, mask=ok, other=0.0)
            else:  # each filter row's start, then its taps at constant offsets (stride_xw = 1
                # compiles in): the loads take them as immediates, 84 instructions an element
                # in the loop where 96 computed each tap's 64-bit address
                x_win = x_ptr + (n * stride_xn + c * stride_xc + h0 * stride_xh + w0 * stride_xw)
                x_row = x_win[None, :, :] + kh * (DH * stride_xh)
                xv = tl.load(x_row + kw * (DW * stride_xw), mask=ok, other=0.0)
            acc = tl.where(t_ok, acc + xv.to(tl.float32) * g[None, :, :], acc)  # (no padded taps)
            if BIAS_GRAD:
                acc_b += g
    t_ok = t < TAP_ROWS * KW
    tap = kh0 * KW + t  # (kh, kw) in the filter
    if CHANNELS_LAST:
        c = block * BLOCK_V + tl.arange(0, BLOCK_V)
        c_ok = c < C
        part = tl.sum(acc, axis=1)  # (TAPS_P2, BLOCK_V)
        tl.store(dw_ptr + split * SPLIT_STRIDE + c[None, :] * (KH * KW) + tap[:, None], part,
                 mask=t_ok[:, None] & c_ok[None, :])
        if BIAS_GRAD:
            if kh0 == 0:
                tl.store(db_ptr + split * SPLIT_STRIDE + c, tl.sum(acc_b, axis=0), mask=c_ok)
    else:
        part = tl.sum(tl.sum(acc, axis=2), axis=1)  # (TAPS_P2,)
        tl.store(dw_ptr + split * SPLIT_STRIDE + c * (KH * KW) + tap, part, mask=t_ok)
        if BIAS_GRAD:
            if kh0 == 0:
                tl.store(db_ptr + split * SPLIT_STRIDE + c, tl.sum(tl.sum(acc_b, axis=1), axis=0))


# the pool kernels' configs and tuned-kernel cache (pool._autotuned), under these keys
KEY = ["ROWS", "COLS", "KH", "KW", "SH", "SW", "DH", "DW", "CHANNELS_LAST", "BLOCK_V"]


def depthwise_forward(input, weight, bias, out_hw, stride, padding, dilation, activation,
                      channels_last):
    """y (N, C, OH, OW) = act(conv2d(input, weight, bias, groups=C)) for a depthwise weight
    (C, 1, KH, KW), (OH, OW) = out_hw, laid out channels_last or contiguous as asked; the
    input is read through its strides."""
    N, C, H, W = input.shape
    _, _, KH, KW = weight.shape
    OH, OW = out_hw
    (SH, SW), (PH, PW), (DH, DW) = stride, padding, dilation
    y = _alloc((N, C, OH, OW), input, channels_last)
    if bias is not None:
        bias = bias.contiguous()  # read by channel index
    rows, cols, block_v, vec = _view(N, C, OH, OW, channels_last)
    if y.numel():
        _autotuned("dw_fwd", _dw_fwd_kernel, KEY)[_grid(rows, cols, block_v)](
            input, weight, bias if bias is not None else weight, y,
            C, H, W, OH, OW, rows, cols,
            *input.stride(), weight.stride(0), weight.stride(2), weight.stride(3),
            KH=KH, KW=KW, SH=SH, SW=SW, PH=PH, PW=PW, DH=DH, DW=DW,
            HAS_BIAS=bias is not None, ACTIVATION=activation, CHANNELS_LAST=channels_last,
            INDEX64=index64(input, weight, y), BLOCK_V=block_v, VEC=vec,
        )
    return y


def depthwise_input_grad(grad_output, weight, input_size, stride, padding, dilation, bias,
                         channels_last):
    """dx (N, C, H, W) of a depthwise convolution, (H, W) = input_size[-2:] (also
    conv_transpose2d's forward, with its ``bias``), laid out as asked."""
    N, C, OH, OW = grad_output.shape
    _, _, KH, KW = weight.shape
    H, W = input_size[-2], input_size[-1]
    (SH, SW), (PH, PW), (DH, DW) = stride, padding, dilation
    dx = _alloc((N, C, H, W), grad_output, channels_last)
    if bias is not None:
        bias = bias.contiguous()
    rows, cols, block_v, vec = _view(N, C, H, W, channels_last)
    if dx.numel():
        _autotuned("dw_dx", _dw_bwd_input_kernel, KEY)[_grid(rows, cols, block_v)](
            grad_output, weight, bias if bias is not None else weight, dx,
            C, H, W, OH, OW, rows, cols,
            *grad_output.stride(), weight.stride(0), weight.stride(2), weight.stride(3),
            KH=KH, KW=KW, SH=SH, SW=SW, PH=PH, PW=PW, DH=DH, DW=DW,
            HAS_BIAS=bias is not None, CHANNELS_LAST=channels_last,
            INDEX64=index64(grad_output, weight, dx), BLOCK_V=block_v, VEC=vec,
        )
    return dx


def _wgrad_configs(channels_last):
    """BLOCK (dy elements a step) and warps: channels_last, 8 elements (a 16-byte bf16 vector)
    or 16 a thread, each with its filter row's KW taps (the programs split KH); NCHW, 1 or 2
    elements a thread with all KH * KW taps (scalar loads: the whole filter in one pass)."""
    if INTERPRET:
        return [triton.Config({"BLOCK": 64 if channels_last else 16})]
    per_thread = (8, 16) if channels_last else (1, 2)
    return [triton.Config({"BLOCK": p * 32 * w}, num_warps=w) for p in per_thread for w in (4, 8)]


# rows a split takes at least, in elements of dy (a few tile steps; few under the interpreter,
# so that the tests' shapes split)
MIN_SPLIT_ELEMENTS = 32 if INTERPRET else 16384


def _wgrad_plan(rows, cols, programs, device):
    """(split, chunk): dy's rows split over enough programs to fill the GPU four times over
    (``programs`` per split), each taking at least MIN_SPLIT_ELEMENTS of dy."""
    want = cdiv(4 * num_sms(device), max(programs, 1))
    split = max(1, min(want, rows * cols // MIN_SPLIT_ELEMENTS))
    chunk = cdiv(rows, split)
    return cdiv(rows, chunk), chunk


def depthwise_weight_grad(grad_output, input, weight_size, stride, padding, dilation, bias_grad,
                          channels_last):
    """(dw of weight_size (C, 1, KH, KW), db (C,), empty (0,) unless bias_grad) of a depthwise
    convolution, in grad_output's dtype, dw laid out channels_last or contiguous as asked."""
    N, C, OH, OW = grad_output.shape
    _, _, H, W = input.shape
    _, _, KH, KW = weight_size
    (SH, SW), (PH, PW), (DH, DW) = stride, padding, dilation
    # dy's view: rows of pixels by channels (channels_last), rows of (n, oh) by ow (NCHW, one
    # channel a program)
    rows, cols, block_v, vec = _view(N, C if channels_last else 1, OH, OW, channels_last)
    programs = cdiv(C, block_v) if channels_last else C
    tap_rows = 1 if channels_last else KH  # a program's filter rows: one, or all
    split, chunk = (_wgrad_plan(rows, cols, programs * (KH // tap_rows), grad_output.device)
                    if rows else (1, 1))
    new = torch.empty if rows and C else torch.zeros  # the kernel writes every partial
    # one buffer, each split's dw partials (C, KH*KW) then its db partials (C): one pass sums
    # both and casts (conv._sum_splits), where torch's sums and casts took four launches
    n_dw, n_db = C * KH * KW, C if bias_grad else 0
    buf = new((split, n_dw + n_db), device=grad_output.device, dtype=torch.float32)
    if rows and C:
        _autotuned(f"dw_dw_{'cl' if channels_last else 'nchw'}", _dw_bwd_weight_kernel, KEY,
                   lambda: _wgrad_configs(channels_last))[((KH // tap_rows) * programs, split)](
            grad_output, input, buf, buf[:, n_dw:] if bias_grad else buf,  # no empty pointers
            C, H, W, OH, OW, rows, cols, chunk, n_dw + n_db,
            *grad_output.stride(), *input.stride(),
            KH=KH, KW=KW, SH=SH, SW=SW, PH=PH, PW=PW, DH=DH, DW=DW,
            TAP_ROWS=tap_rows, TAPS_P2=next_power_of_2(tap_rows * KW),
            BIAS_GRAD=bias_grad, CHANNELS_LAST=channels_last,
            INDEX64=index64(grad_output, input, buf), BLOCK_V=block_v, VEC=vec,
        )
    # the partials summed in split order (deterministic), one rounding
    from .conv import _sum_splits  # (conv imports this module)

    out = _sum_splits(buf, grad_output.dtype)
    dw, db = out[:n_dw], out[n_dw:]
    if channels_last:  # strides (KH*KW, 1, KW, 1), as PyTorch's channels_last weight gradient
        dw = dw.view(C, KH, KW, 1).permute(0, 3, 1, 2)
    else:
        dw = dw.view(C, 1, KH, KW)
    return dw, db
