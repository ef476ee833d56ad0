"""softmax / log_softmax primitives in plain PyTorch (twins of kernels/softmax.py): the same
(outer, C, inner) layout, max subtraction, fp32 (or fp64) math and one cast on output."""

from __future__ import annotations

__all__ = ["softmax_forward", "softmax_backward"]

import torch

from ._common import acc_dtype


def softmax_forward(input, log):
    """input (outer, C, inner) -> softmax (log_softmax if ``log``) over dim 1, contiguous."""
    out = torch.empty(input.shape, dtype=input.dtype, device=input.device)
    if input.numel() == 0:
        return out
    x = input.to(acc_dtype(input.dtype))
    m = x.amax(1, keepdim=True)
    m = m.masked_fill(m == float("-inf"), 0.0)  # an all -inf row: 0/0 = NaN, as torch
    e = (x - m).exp()
    s = e.sum(1, keepdim=True)
    return out.copy_(x - m - s.log() if log else e / s)


def softmax_backward(grad_output, output, log):
    """softmax: dx = y * (dy - sum(dy * y));  log_softmax: dx = dy - exp(y) * sum(dy)."""
    acc = acc_dtype(output.dtype)
    dy, y = grad_output.to(acc), output.to(acc)
    if log:
        dx = dy - y.exp() * dy.sum(1, keepdim=True)
    else:
        dx = y * (dy - (dy * y).sum(1, keepdim=True))
    return torch.empty(output.shape, dtype=output.dtype, device=output.device).copy_(dx)
