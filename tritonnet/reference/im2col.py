"""unfold (im2col) and fold (col2im) in plain PyTorch: the readable spec of kernels/im2col.py,
written independently of torch.nn.functional.unfold / fold so the tests compare two
implementations against torch's.

unfold: a sliding-window view of the zero-padded input,
  cols[n, (c,kh,kw), (oh,ow)] = xpad[n, c, oh*SH + kh*DH, ow*SW + kw*DW]
fold:   its adjoint as a scatter: for each tap (kh, kw), the (OH, OW) column block is added
  onto the strided slice of the padded image that tap read, then the padding is cropped.
"""

from __future__ import annotations

import torch

from ._common import acc_dtype

__all__ = ["unfold_forward", "fold_forward"]


def _out_size(size, k, d, p, s):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def windows(input, kernel, dilation, padding, stride):
    """The (N, C, OH, OW, KH, KW) view of every window's taps over the zero-padded input."""
    (KH, KW), (DH, DW), (PH, PW), (SH, SW) = kernel, dilation, padding, stride
    N, C, H, W = input.shape
    xp = input.new_zeros((N, C, H + 2 * PH, W + 2 * PW))
    xp[:, :, PH : PH + H, PW : PW + W] = input
    # windows of the dilated kernel's extent (DH*(KH-1)+1) every SH rows, then every DH-th tap
    win = xp.unfold(2, DH * (KH - 1) + 1, SH).unfold(3, DW * (KW - 1) + 1, SW)
    return win[..., ::DH, ::DW]


def unfold_forward(input, kernel, dilation, padding, stride):
    """(N, C, H, W) -> (N, C*KH*KW, OH*OW), rows ordered (c, kh, kw)."""
    win = windows(input, kernel, dilation, padding, stride)
    N, C, OH, OW, KH, KW = win.shape
    # (N, C, OH, OW, KH, KW) -> (N, C*KH*KW, OH*OW)
    return win.permute(0, 1, 4, 5, 2, 3).reshape(N, C * KH * KW, OH * OW).contiguous()


def fold_forward(cols, output_size, kernel, dilation, padding, stride):
    """(N, C*KH*KW, L) -> (N, C, H, W): each column entry added onto the pixel it covers."""
    (KH, KW), (DH, DW), (PH, PW), (SH, SW) = kernel, dilation, padding, stride
    H, W = output_size
    N, R, _ = cols.shape
    C = R // (KH * KW)
    OH, OW = _out_size(H, KH, DH, PH, SH), _out_size(W, KW, DW, PW, SW)
    acc = acc_dtype(cols.dtype)  # sum in fp32 like the kernel, round once
    blocks = cols.to(acc).reshape(N, C, KH, KW, OH, OW)
    out = torch.zeros((N, C, H + 2 * PH, W + 2 * PW), dtype=acc, device=cols.device)
    for kh in range(KH):
        for kw in range(KW):
            h0, w0 = kh * DH, kw * DW  # where tap (kh, kw) of window (0, 0) reads
            out[:, :, h0 : h0 + SH * (OH - 1) + 1 : SH, w0 : w0 + SW * (OW - 1) + 1 : SW] += (
                blocks[:, :, kh, kw]
            )
    y = torch.empty((N, C, H, W), dtype=cols.dtype, device=cols.device)
    return y.copy_(out[:, :, PH : PH + H, PW : PW + W])
