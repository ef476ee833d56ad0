"""Dropout (one draw per element) and dropout2d (one draw per (n, c) channel), forward and
backward, with Philox random numbers generated in the kernel.

Math (p the drop probability, s = 1 / (1 - p), or 0 when p == 1):
  keep = u >= p with u ~ U[0, 1) from Philox(seed, counter)
  y    = x * (keep ? s : 0)              # a dropped NaN or Inf gives NaN, as torch's x * noise
Backward: dy/dx is the same diagonal, so  dx = dy * (keep ? s : 0)  is the forward applied to dy
with the same seed. No mask is saved: the backward regenerates it from (seed, p), which costs
one Philox per element in a memory-bound kernel and saves a mask tensor per dropout layer.

The counter of an element is its LOGICAL row-major index (n*C*L + c*L + l; for dropout2d the
channel index n*C + c), never its memory position, so the mask depends on (seed, p, shape)
only: NCHW and channels_last inputs drop the same elements, and a gradient arriving in another
layout than the forward's input still meets the forward's mask.

The seed: an int, or a 0-d int64 tensor on the input's device that the kernel reads (the
functional layer draws it so under CUDA graph capture, where a host int would be frozen into
the graph and every replay would drop the same elements). Either gives the same mask.

Layout: the tensor is viewed as (N, C, L) = (dim 0, dim 1, the remaining dims merged), with
strides, for input and output separately (NCHW: stride_l 1; channels_last: stride_c 1). A
contiguous tensor in plain dropout is viewed as (1, 1, numel). One program handles a
(BLOCK_C, BLOCK_L) tile of one n, the tile's long side on the stride-1 axis; the grid is
N * cdiv(C, BLOCK_C) * cdiv(L, BLOCK_L), L blocks fastest.
"""

from __future__ import annotations

__all__ = ["dropout_forward", "dropout_backward", "dropout2d_forward", "dropout2d_backward"]

import torch
import triton
import triton.language as tl

from ._common import cdiv, next_power_of_2
from ._launch import launcher

BLOCK = 1024  # elements per program


@launcher
@triton.jit(do_not_specialize=["seed"])
def _dropout_fwd_kernel(
    # pointers
    x_ptr, y_ptr,
    # random stream and scale
    seed, p, scale,
    # sizes of the (N, C, L) view
    C, L,
    # strides
    stride_xn, stride_xc, stride_xl, stride_yn, stride_yc, stride_yl,
    # options and tile sizes
    FEATURE: tl.constexpr, SEED_PTR: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    """y = x * (keep ? scale : 0), keep = rand(seed, counter) >= p; see the module docstring.
    SEED_PTR: ``seed`` points at the seed (an int64 in device memory, as drawn inside a
    captured CUDA graph: each replay draws anew), else it is the seed."""
    if SEED_PTR:
        seed = tl.load(seed)
    pid = tl.program_id(0)
    num_l = tl.cdiv(L, BLOCK_L)
    num_c = tl.cdiv(C, BLOCK_C)
    pid_l = pid % num_l
    pid_c = (pid // num_l) % num_c
    n = (pid // (num_l * num_c)).to(tl.int64)
    # int64 offsets and counters: a tensor may exceed 2**31 elements
    rc = pid_c.to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    rl = pid_l.to(tl.int64) * BLOCK_L + tl.arange(0, BLOCK_L)
    mask = (rc < C)[:, None] & (rl < L)[None, :]

    channel = n * C + rc  # (BLOCK_C,) logical channel index
    if FEATURE:
        u = tl.rand(seed, channel)[:, None]  # one draw per (n, c), broadcast over L
    else:
        u = tl.rand(seed, channel[:, None] * L + rl[None, :])  # one draw per element
    factor = tl.where(u >= p, scale, 0.0)

    x_ptrs = x_ptr + n * stride_xn + rc[:, None] * stride_xc + rl[None, :] * stride_xl
    x = tl.load(x_ptrs, mask=mask).to(ACC)  # fp32 (fp64 for fp64), one cast on store
    # a multiply, not a select: 0 * NaN and 0 * Inf stay NaN, as in torch
    y = x * factor.to(ACC)
    y_ptrs = y_ptr + n * stride_yn + rc[:, None] * stride_yc + rl[None, :] * stride_yl
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# launchers


def _ncl_strides(t):
    """Strides of ``t`` (dim >= 2) viewed as (N, C, L), L the dims after the first two merged,
    or None when those dims do not merge into one stride (a sliced H, a permuted H and W)."""
    dims = zip(t.shape[2:], t.stride()[2:], strict=True)
    rest = [(size, stride) for size, stride in dims if size != 1]
    stride_l = rest[-1][1] if rest else 1
    expected = stride_l
    for size, stride in reversed(rest):
        if stride != expected:
            return None
        expected *= size
    return t.stride(0), t.stride(1), stride_l


def _launch(x, p, seed, feature, out):
    if feature and x.dim() < 2:
        raise RuntimeError(
            "Feature dropout requires at least 2 dimensions in the input, got shape "
            f"{tuple(x.shape)}"
        )
    if out is None:
        out = torch.empty_like(x)  # keeps the input's layout (NCHW or channels_last), as torch
    result = out  # (out may become a (1, 1, n) view below)
    if x.numel() == 0:
        return result
    if not feature and x.is_contiguous() and out.is_contiguous():
        # (*) -> (1, 1, numel): the counter is the flat index, tiles are 1-D
        N, C, L = 1, 1, x.numel()
        sx = sy = (0, 0, 1)
        target = out
    else:
        if x.dim() < 2:  # plain dropout of a strided 1-D tensor: (n,) -> (1, 1, n)
            x, out = x.view(1, 1, -1), out.view(1, 1, -1)
        # (N, C, *) -> (N, C, L)
        N, C = x.shape[:2]
        L = x.numel() // (N * C)
        sx = _ncl_strides(x)
        if sx is None:
            x = x.contiguous()
            sx = _ncl_strides(x)
        target, sy = out, _ncl_strides(out)
        if sy is None:  # write a contiguous temporary, copy into out's layout afterwards
            target = torch.empty_like(x, memory_format=torch.contiguous_format)
            sy = _ncl_strides(target)
        if N > 1 and sx[0] == C * sx[1] and sy[0] == C * sy[1]:
            # (N, C, L) -> (1, N*C, L) where n and c merge (NCHW): the same counters (n*C + c
            # is the merged channel index), fuller tiles when C*L is small
            N, C, sx, sy = 1, N * C, (0, *sx[1:]), (0, *sy[1:])
    # the tile's long side on the axis that is contiguous in memory
    if sx[2] == 1 or C == 1:
        block_l = min(next_power_of_2(L), BLOCK)
        block_c = min(next_power_of_2(C), BLOCK // block_l)
    else:
        block_c = min(next_power_of_2(C), BLOCK)
        block_l = min(next_power_of_2(L), BLOCK // block_c)
    scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
    grid = (N * cdiv(C, block_c) * cdiv(L, block_l),)
    _dropout_fwd_kernel[grid](
        x, target, seed, p, scale, C, L, *sx, *sy,
        FEATURE=feature, SEED_PTR=torch.is_tensor(seed),
        ACC=tl.float64 if x.dtype == torch.float64 else tl.float32,
        BLOCK_C=block_c, BLOCK_L=block_l,
    )
    if target is not out:
        out.copy_(target)
    return result


def dropout_forward(input, p, seed, out=None):
    """y = input * keep / (1 - p), one Philox draw per element; ``out`` may be ``input`` itself
    (the in-place variant). Masks differ bit-wise from the reference backend's (torch's CPU
    generator): both are Bernoulli(1 - p) streams of the same seed, not the same bits."""
    return _launch(input, p, seed, False, out)


def dropout_backward(grad_output, p, seed):
    """dx = dy * keep / (1 - p): the forward's mask regenerated from (seed, p), any layout of dy."""
    return _launch(grad_output, p, seed, False, None)


def dropout2d_forward(input, p, seed, out=None):
    """Channel dropout of input (N, C, *): one draw per (n, c), the whole channel kept (scaled)
    or zeroed."""
    return _launch(input, p, seed, True, out)


def dropout2d_backward(grad_output, p, seed):
    return _launch(grad_output, p, seed, True, None)
