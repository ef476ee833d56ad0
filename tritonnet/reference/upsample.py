"""Nearest-neighbour resampling in plain PyTorch (twin of kernels/upsample.py): the source-index
rule, and the gather-form backward over the contiguous range of outputs that read each input
position. 3-D, 4-D and 5-D tensors (1, 2 or 3 spatial dimensions)."""

from __future__ import annotations

__all__ = ["upsample_nearest_forward", "upsample_nearest_backward"]

import torch

from ._common import acc_dtype


def _src(I, O, scale_factor, exact, rank, device):
    """Input position read by every output position along one dimension (PyTorch's CPU rule,
    fp32 math; the O == I and O == 2*I short-cuts exist in its 4-D 'nearest' only)."""
    o = torch.arange(O, device=device)
    if rank == 4 and not exact and O == I:
        return o
    if rank == 4 and not exact and O == 2 * I:
        return o // 2
    if scale_factor > 0:
        scale = torch.tensor(1.0 / scale_factor, dtype=torch.float32, device=device)
    else:
        scale = torch.tensor(I, dtype=torch.float32, device=device) / O
    pos = o.to(torch.float32) + (0.5 if exact else 0.0)
    return torch.floor(pos * scale).long().clamp(max=I - 1)


def _empty(shape, like, channels_last):
    fmt = torch.contiguous_format
    if channels_last:
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)


def upsample_nearest_forward(input, output_size, scales, exact, channels_last):
    out = input
    for dim, (i, o, s) in enumerate(zip(input.shape[2:], output_size, scales)):
        out = out.index_select(2 + dim, _src(i, o, s, exact, input.dim(), input.device))
    return _empty((*input.shape[:2], *output_size), input, channels_last).copy_(out)


def upsample_nearest_backward(grad_output, input_size, scales, exact, channels_last):
    """dx[i] = sum of dy[o] over o in [first(i), first(i+1)) in every spatial dimension, where
    first(i) is the least o with src(o) >= i."""
    dev = grad_output.device
    firsts, counts = [], []
    for i, o, s in zip(input_size[2:], grad_output.shape[2:], scales):
        src = _src(i, o, s, exact, len(input_size), dev)
        first = torch.searchsorted(src, torch.arange(i + 1, device=dev))
        firsts.append(first[:-1])
        counts.append(first[1:] - first[:-1])
    acc = torch.zeros(tuple(input_size), dtype=acc_dtype(grad_output.dtype), device=dev)
    if grad_output.numel():
        spatial = len(firsts)
        # the same loop nest as the kernel: every combination of offsets, in ascending order
        grids = torch.cartesian_prod(*[torch.arange(int(c.max()), device="cpu") for c in counts])
        grids = grids.reshape(-1, spatial)
        for offsets in grids.tolist():
            g, ok = grad_output, None
            for dim, (first, count, j) in enumerate(zip(firsts, counts, offsets)):
                size = grad_output.shape[2 + dim]
                g = g.index_select(2 + dim, (first + j).clamp(max=size - 1))
                shape = [1] * spatial
                shape[dim] = -1
                m = (j < count).reshape(shape)
                ok = m if ok is None else ok & m
            acc += torch.where(ok, g.to(acc.dtype), 0.0)
    return _empty(tuple(input_size), grad_output, channels_last).copy_(acc)
