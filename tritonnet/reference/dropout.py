"""Dropout primitives in plain PyTorch (twins of kernels/dropout.py).

Same contract as the kernels: keep = u >= p with u ~ U[0, 1) drawn for each element (dropout)
or each (n, c) channel (dropout2d) in LOGICAL row-major order, y = x * (keep ? 1/(1-p) : 0)
computed in fp32 (fp64 for fp64), and the backward regenerates the mask from (seed, p). Here u
comes from a CPU ``torch.Generator`` seeded with ``seed`` (on the CPU whatever the tensor's
device, so the reference mask of a seed is the same on every device); the kernels draw u from
Triton's Philox. So for one seed the two backends drop different elements: each is a
Bernoulli(1 - p) mask, reproducible from the seed, but the bits differ.
"""

from __future__ import annotations

__all__ = ["dropout_forward", "dropout_backward", "dropout2d_forward", "dropout2d_backward"]

import torch

from ._common import acc_dtype


def _factor(shape, p, seed, dtype, device):
    """(keep ? 1/(1-p) : 0) of the given shape, from a generator seeded with ``seed``."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))  # (a device seed: read with a sync, which graph capture refuses)
    u = torch.rand(shape, generator=gen, dtype=torch.float32).to(device)
    scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
    return (u >= p).to(dtype) * scale  # scale rounded to dtype (the kernels: to fp32)


def _apply(x, p, seed, feature, out):
    if feature and x.dim() < 2:
        raise RuntimeError(
            "Feature dropout requires at least 2 dimensions in the input, got shape "
            f"{tuple(x.shape)}"
        )
    acc = acc_dtype(x.dtype)
    if feature:
        # (N, C) draws, broadcast over the spatial dims: (N, C, 1, ..., 1)
        shape = tuple(x.shape[:2]) + (1,) * (x.dim() - 2)
    else:
        shape = tuple(x.shape)
    # a multiply, not a select: 0 * NaN and 0 * Inf stay NaN, as in torch
    y = x.to(acc) * _factor(shape, p, seed, acc, x.device)
    if out is None:
        out = torch.empty_like(x)  # the layout the kernels give (and torch's dropout)
    return out.copy_(y)


def dropout_forward(input, p, seed, out=None):
    return _apply(input, p, seed, False, out)


def dropout_backward(grad_output, p, seed):
    return _apply(grad_output, p, seed, False, None)


def dropout2d_forward(input, p, seed, out=None):
    return _apply(input, p, seed, True, out)


def dropout2d_backward(grad_output, p, seed):
    return _apply(grad_output, p, seed, True, None)
