"""Depthwise convolution (groups = C_in = C_out: one input channel and one filter per channel)
as a direct stencil, not a GEMM: its forward and input gradient.

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

Padding and the taps between strides load zeros and multiply like the GEMM kernels' (a NaN or
Inf weight over one gives NaN, as the README says of convolutions). The weight gradient stays
on the GEMM path (kernels/conv_backward.py), whose flat walk over the filter serves one channel
a group.
"""

from __future__ import annotations

__all__ = ["depthwise", "depthwise_forward", "depthwise_input_grad"]

import triton
import triton.language as tl

from ._common import apply_activation, index64, inside
from .pool import _alloc, _autotuned, _coords, _grid, _tile, _view

# the largest filter the stencil takes (its tap loops compile in; a larger one, such as a
# per-sample weight gradient that vmap computes as a convolution by dy, runs the GEMM)
MAX_TAPS = 81


def depthwise(weight, groups) -> bool:
    """Whether a convolution with this weight (C_out, C_in / groups, KH, KW) is depthwise with
    one filter per channel (groups = C_in = C_out) of at most MAX_TAPS taps."""
    C_out, Cg, KH, KW = weight.shape
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
