"""Convolution primitives in plain PyTorch: im2col made explicit, then one GEMM per group
over the whole batch (M = N*OH*OW, as in the kernels' implicit GEMM).

The readable spec of kernels/conv.py (which does the same gather inside its tile loads):
  cols = im2col(x)                    (N, C, H, W) -> (G, Cg*KH*KW, N*OH*OW)
  y    = w_g @ cols + b               (Og, Cg*KH*KW) x (Cg*KH*KW, N*OH*OW) per group
  dx   = col2im(w_g^T @ dy_g)         the transposed convolution
  dw   = dy_g @ cols^T                db = sum of dy over (n, oh, ow)
"""

from __future__ import annotations

import torch

from ._common import acc_dtype, activation, conv_memory_format, conv_positions
from .im2col import fold_forward, windows

__all__ = ["conv2d_forward", "conv2d_input_grad", "conv2d_weight_grad"]


def im2col(x, kernel, stride, padding, dilation, groups):
    """(N, C, H, W) -> (G, Cg*KH*KW, N, OH, OW): a row per (channel, kh, kw) like the weight,
    a column per output pixel of the batch."""
    win = windows(x, kernel, dilation, padding, stride)  # (N, C, OH, OW, KH, KW), a view
    N, C, OH, OW, KH, KW = win.shape
    return win.permute(1, 4, 5, 0, 2, 3).reshape(groups, C // groups * KH * KW, N, OH, OW)


def col2im(cols, size, kernel, stride, padding, dilation):
    """(N, C*KH*KW, L) -> (N, C, H, W): sums every column back onto the pixels it read."""
    return fold_forward(cols, size, kernel, dilation, padding, stride)


def _by_group(t, groups):
    """(N, C, H, W) -> (G, C/G, N*H*W): the batch folded into the GEMM's other dimension."""
    N, C, H, W = t.shape
    return t.transpose(0, 1).reshape(groups, C // groups, N * H * W)


def conv2d_forward(input, weight, bias, stride, padding, dilation, groups, act="none"):
    acc = acc_dtype(input.dtype)
    N, C_in, H, W = input.shape
    C_out, Cg, KH, KW = weight.shape
    OH, OW = conv_positions((H, W), (KH, KW), stride, padding, dilation)
    cols = im2col(input.to(acc), (KH, KW), stride, padding, dilation, groups)
    w = weight.to(acc).reshape(groups, C_out // groups, Cg * KH * KW)
    y = torch.bmm(w, cols.reshape(groups, Cg * KH * KW, N * OH * OW))  # (G, Og, N*OH*OW)
    y = y.reshape(C_out, N, OH, OW).transpose(0, 1)
    if bias is not None:
        y = y + bias.to(acc).view(1, -1, 1, 1)
    y = activation(y, act)
    out = torch.empty((N, C_out, OH, OW), dtype=input.dtype, device=input.device,
                      memory_format=conv_memory_format(input, weight))
    return out.copy_(y)


def conv2d_input_grad(grad_output, weight, input_size, stride, padding, dilation, groups, bias=None):
    """dx, the transposed convolution of grad_output; also conv_transpose2d's forward, whose
    ``bias`` is added before the one rounding to dx's dtype."""
    acc = acc_dtype(grad_output.dtype)
    N, C_out, OH, OW = grad_output.shape
    _, Cg, KH, KW = weight.shape
    H, W = input_size[-2], input_size[-1]
    w = weight.to(acc).reshape(groups, C_out // groups, Cg * KH * KW)
    # conv_transpose2d with output_padding < dilation (stride 1 allows it) asks for an input
    # whose convolution has more positions than dy: those last positions contribute nothing
    FH, FW = conv_positions((H, W), (KH, KW), stride, padding, dilation)
    dy = torch.nn.functional.pad(grad_output.to(acc), (0, FW - OW, 0, FH - OH))
    cols = torch.bmm(w.transpose(1, 2), _by_group(dy, groups))  # (G, Cg*KH*KW, N*FH*FW)
    cols = cols.reshape(groups * Cg * KH * KW, N, FH * FW).transpose(0, 1)  # a view
    dx = col2im(cols, (H, W), (KH, KW), stride, padding, dilation)
    if bias is not None:
        dx = dx + bias.to(acc).view(1, -1, 1, 1)
    out = torch.empty((N, groups * Cg, H, W), dtype=grad_output.dtype, device=grad_output.device,
                      memory_format=conv_memory_format(grad_output, weight))
    return out.copy_(dx)


def conv2d_weight_grad(grad_output, input, weight_size, stride, padding, dilation, groups,
                       bias_grad=True):
    acc = acc_dtype(grad_output.dtype)
    N, C_out, OH, OW = grad_output.shape
    _, Cg, KH, KW = weight_size
    cols = im2col(input.to(acc), (KH, KW), stride, padding, dilation, groups)
    # positions past dy's (conv_transpose2d's output_padding, see conv2d_input_grad) drop out
    cols = cols[..., :OH, :OW].reshape(groups, Cg * KH * KW, N * OH * OW)
    dy = _by_group(grad_output.to(acc), groups)  # (G, Og, N*OH*OW)
    dw = torch.bmm(dy, cols.transpose(1, 2)).reshape(C_out, Cg, KH, KW)
    db = dy.sum(2).reshape(C_out) if bias_grad else dy.new_empty(0)
    # allocated, not .contiguous(): that keeps the strides of size-1 dims, which torch sets
    out = torch.empty(dw.shape, dtype=grad_output.dtype, device=grad_output.device,
                      memory_format=conv_memory_format(grad_output, input))
    dw = out.copy_(dw)
    return dw, db.to(grad_output.dtype)
