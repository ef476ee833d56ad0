"""softmax / log_softmax primitives in plain PyTorch (twins of kernels/softmax.py): the same
(outer, C, inner) layout, max subtraction, fp32 (or fp64) math and one cast on output."""

from __future__ import annotations

__all__ = ["softmax_forward", "softmax_backward"]

import torch

from ._common import acc_dtype, max_log_sum, shifted_exp


def softmax_forward(input, log):
    """input (outer, C, inner) -> softmax (log_softmax if ``log``) over dim 1, contiguous."""
    out = torch.empty(input.shape, dtype=input.dtype, device=input.device)
    if input.numel() == 0:
        return out
    x = input.to(acc_dtype(input.dtype))
    if log:  # (x - m) - log s, log s = log1p(s - 1) to keep a confident row's digits
        m, log_s = max_log_sum(x)
        return out.copy_((x - m.unsqueeze(1)) - log_s.unsqueeze(1))  # all -inf row: NaN
    m, e = shifted_exp(x)
    return out.copy_(e / e.sum(1, keepdim=True))  # an all -inf row: 0/0 = NaN, as torch


def softmax_backward(grad_output, output, log):
    """softmax: dx = y * (dy - sum(dy * y));  log_softmax: dx = dy - exp(y) * sum(dy)."""
    acc = acc_dtype(output.dtype)
    dy, y = grad_output.to(acc), output.to(acc)
    if log:
        dx = dy - y.exp() * dy.sum(1, keepdim=True)
    else:
        dx = y * (dy - (dy * y).sum(1, keepdim=True))
    return torch.empty(output.shape, dtype=output.dtype, device=output.device).copy_(dx)
