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

from ._common import index64
from .pool import (
    _adaptive_window,
    _alloc,
    _autotuned,
    _const_divisor,
    _coords,
    _div,
    _div_const,
    _extent,
    _fixed_cover,
    _grid,
    _tile,
    _view,
    _window,
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


# ---------------------------------------------------------------------------------------------
# launchers


def _max_backward(grad_output, indices, input_size, window, channels_last, adaptive, max_cover):
    N, C, H, W = input_size
    OH, OW = grad_output.shape[-2:]
    (KH, KW), (SH, SW), (PH, PW), (DH, DW) = window
    dx = _alloc((N, C, H, W), grad_output, channels_last)
    if grad_output.numel() == 0:  # no windows: nothing flows back
        return dx.zero_()
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


def max_pool2d_backward(grad_output, indices, input_size, kernel_size, stride, padding, dilation,
                        channels_last):
    window = (tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation))
    cover = [_fixed_cover(k, s, d) for k, s, d in zip(kernel_size, stride, dilation)]
    return _max_backward(grad_output, indices, input_size, window, channels_last, False, cover)


def avg_pool2d_backward(grad_output, input_size, kernel_size, stride, padding, count_include_pad,
                        divisor_override, channels_last):
    window = (tuple(kernel_size), tuple(stride), tuple(padding))
    cover = [_fixed_cover(k, s, 1) for k, s in zip(kernel_size, stride)]
    return _avg_backward(grad_output, input_size, window, count_include_pad, divisor_override,
                         channels_last, False, cover)


def adaptive_max_pool2d_backward(grad_output, indices, input_size, channels_last):
    out_hw = grad_output.shape[-2:]
    window = _adaptive_window(input_size[-2:], out_hw)
    cover = [-(-o // i) + 1 for i, o in zip(input_size[-2:], out_hw)]
    return _max_backward(grad_output, indices, input_size, window, channels_last, True, cover)


def adaptive_avg_pool2d_backward(grad_output, input_size, channels_last):
    out_hw = grad_output.shape[-2:]
    window = _adaptive_window(input_size[-2:], out_hw)[:3]
    cover = [-(-o // i) + 1 for i, o in zip(input_size[-2:], out_hw)]
    return _avg_backward(grad_output, input_size, window, True, None, channels_last, True, cover)
