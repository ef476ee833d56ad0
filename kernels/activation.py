"""Elementwise activations (relu, sigmoid, tanh) and their gradients.

Memory-bound: one read and one write per element. The tensor is viewed as flat contiguous
memory (the launcher makes it so); one program handles BLOCK elements; grid cdiv(numel, BLOCK).
Backward uses the forward's output y, never its input, so an in-place forward loses nothing:
  relu'    = (y > 0)      sigmoid' = y * (1 - y)      tanh' = 1 - y^2
(relu's as torch's threshold_backward: zero where y <= 0, so a NaN output passes dy on)
"""

from __future__ import annotations

__all__ = ["activation_forward", "activation_backward"]

import torch
import triton
import triton.language as tl

from ._common import apply_activation, cdiv, flat_view, in_layout_of
from ._launch import launcher

BLOCK = 1024


@launcher
@triton.jit
def _activation_fwd_kernel(x_ptr, y_ptr, n, ACTIVATION: tl.constexpr, ACC: tl.constexpr,
                           BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask).to(ACC)  # fp32 (fp64 for fp64), cast once on store
    y = apply_activation(x, ACTIVATION)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@launcher
@triton.jit
def _activation_bwd_kernel(dy_ptr, y_ptr, dx_ptr, n, ACTIVATION: tl.constexpr, ACC: tl.constexpr,
                           BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dy = tl.load(dy_ptr + offs, mask=mask).to(ACC)
    y = tl.load(y_ptr + offs, mask=mask).to(ACC)
    if ACTIVATION == "relu":
        dx = tl.where(y <= 0, 0.0, dy)
    elif ACTIVATION == "sigmoid":
        dx = dy * y * (1.0 - y)
    else:  # tanh
        dx = dy * (1.0 - y * y)
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _acc(dtype):
    """The compute precision: fp32, or fp64 for fp64 tensors (which fp32 would round)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def activation_forward(input, activation, out=None):
    """y = act(input); ``out`` may be ``input`` itself (the in-place variant)."""
    x = flat_view(input)
    if out is None:
        out = torch.empty_like(x)  # keeps a dense input's layout (NCHW or channels_last)
    target = out if (out.stride() == x.stride()) else torch.empty_like(x)
    n = x.numel()
    if n:
        _activation_fwd_kernel[(cdiv(n, BLOCK),)](x, target, n, ACTIVATION=activation,
                                                  ACC=_acc(x.dtype), BLOCK=BLOCK)
    if target is not out:
        out.copy_(target)
    return out


def activation_backward(grad_output, output, activation):
    """dx from dy and the forward's output y."""
    y = flat_view(output)
    dy = in_layout_of(grad_output, y)  # dy must walk memory in y's order
    dx = torch.empty_like(y)
    n = y.numel()
    if n:
        _activation_bwd_kernel[(cdiv(n, BLOCK),)](dy, y, dx, n, ACTIVATION=activation,
                                                  ACC=_acc(y.dtype), BLOCK=BLOCK)
    return dx
