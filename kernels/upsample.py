"""Nearest-neighbour resampling (interpolate mode='nearest' / 'nearest-exact') of 3-D, 4-D and
5-D input, forward and backward. Every input is viewed as 5-D (N, C, D, H, W), missing spatial
dimensions of size 1.

Source index of output position o along one dimension (PyTorch's CPU rule, float32 math):
  scale  = 1/scale_factor when one was given (and not recomputed), else I/O, rounded to fp32
  'nearest'        src(o) = min(floor(o * scale), I - 1)
  'nearest-exact'  src(o) = min(floor((o + 0.5) * scale), I - 1)
  PyTorch's CPU 4-D 'nearest' (only) short-cuts O == I to src = o and O == 2*I to src = o >> 1,
  which differs from the formula when a scale_factor like 1.2 rounds to those sizes; the
  launcher picks one of the maps "copy", "half", "scale" per dimension to match.

Forward (one read, one write): the output is tiled as the pool kernels tile theirs
(kernels/pool.py _tile): a 2-D view in its memory order, rows of (n, c, od, oh) by ow columns
(NCDHW), rows of pixels (n, od, oh, ow) by channel columns (channels_last(_3d)). A row's
source row is worked out once per row, not per element, and each thread stores VEC
neighbouring outputs of one row as one vector; the input is read through its strides.

Backward, a gather (no atomics, deterministic): src is monotone, so the outputs read from
input position i are the contiguous range [first(i), first(i+1)), first(i) = the least o with
src(o) >= i (O if none). The kernel finds first(i) exactly from the estimate e = i*O // I,
counting the six candidates e-2 .. e+3 whose src is below i (the true value lies in that
window for every map: the scale differs from I/O by less than one position over the axis).
One program computes BLOCK input gradients, each summing its range in ascending order, fp32.
"""

from __future__ import annotations

__all__ = ["upsample_nearest_forward", "upsample_nearest_backward"]

import functools

import torch
import triton
import triton.language as tl

from ._common import INTERPRET, autotune, cdiv, index64
from .pool import _block_ids, _grid, _tile, _view


def _configs():
    if INTERPRET:
        return [triton.Config({"BLOCK": 128})]
    return [
        triton.Config({"BLOCK": 512}, num_warps=4),
        triton.Config({"BLOCK": 1024}, num_warps=4),
        triton.Config({"BLOCK": 2048}, num_warps=8),
    ]


@triton.jit
def _unravel5(offs, C, D, H, W, CHANNELS_LAST: tl.constexpr):
    """(n, c, d, h, w) of flat offsets into a dense (N, C, D, H, W) tensor stored NCDHW or NDHWC."""
    if CHANNELS_LAST:
        c = offs % C
        t = offs // C
        w = t % W
        t = t // W
        h = t % H
        t = t // H
        d = t % D
        n = t // D
    else:
        w = offs % W
        t = offs // W
        h = t % H
        t = t // H
        d = t % D
        t = t // D
        c = t % C
        n = t // C
    return n, c, d, h, w


@triton.jit
def _src(o, I, scale, MAP: tl.constexpr, EXACT: tl.constexpr):
    """Input position read by output position o along one dimension."""
    if MAP == "copy":
        s = o
    elif MAP == "half":
        s = o >> 1
    else:
        if EXACT:
            f = (o.to(tl.float32) + 0.5) * scale
        else:
            f = o.to(tl.float32) * scale
        s = tl.minimum(tl.floor(f).to(tl.int32), I - 1)
    return s


@triton.jit
def _first(i, I, O, scale, MAP: tl.constexpr, EXACT: tl.constexpr, WIDE: tl.constexpr):
    """The least output position o with src(o) >= i, or O (see the module docstring)."""
    if MAP == "copy":
        first = i
    elif MAP == "half":
        first = 2 * i
    else:
        if WIDE:  # i*O may pass 2**31 (64-bit division is slow, so only then)
            e = ((i.to(tl.int64) * O) // I).to(tl.int32)
        else:
            e = (i * O) // I
        first = e - 2
        for j in tl.static_range(6):
            cand = e - 2 + j
            below = (cand < 0) | ((cand < O) & (_src(tl.maximum(cand, 0), I, scale, MAP, EXACT) < i))
            first += below.to(tl.int32)
    return first


@triton.jit
def _upsample_nearest_fwd_kernel(
    # pointers
    x_ptr, y_ptr,
    # sizes; (ROWS, COLS): the output's 2-D view (module docstring)
    C, ID, IH, IW, OD, OH, OW, ROWS, COLS,
    # input strides
    stride_xn, stride_xc, stride_xd, stride_xh, stride_xw,
    # fp32 scales (input positions per output position)
    scale_d, scale_h, scale_w,
    # options
    MAP_D: tl.constexpr, MAP_H: tl.constexpr, MAP_W: tl.constexpr, EXACT: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, INDEX64: tl.constexpr, BLOCK: tl.constexpr,
    BLOCK_V: tl.constexpr, VEC: tl.constexpr,
):
    """y[n, c, od, oh, ow] = x[n, c, src(od), src(oh), src(ow)]."""
    r, v, mask, offs = _tile(ROWS, COLS, BLOCK, BLOCK_V, VEC, INDEX64)  # y is dense in this view
    if CHANNELS_LAST:  # a row is a pixel (n, od, oh, ow), a column a channel
        n, _, od, oh, ow = _unravel5(r, 1, OD, OH, OW, True)
        row = (n * stride_xn + _src(od, ID, scale_d, MAP_D, EXACT) * stride_xd
               + _src(oh, IH, scale_h, MAP_H, EXACT) * stride_xh
               + _src(ow, IW, scale_w, MAP_W, EXACT) * stride_xw)
        val = tl.load(x_ptr + row[:, None] + (v * stride_xc)[None, :], mask=mask)
    else:  # a row is (n, c, od, oh), a column ow: unravelled as (n, c, 1, od, oh)
        n, c, _, od, oh = _unravel5(r, C, 1, OD, OH, False)
        row = (n * stride_xn + c * stride_xc + _src(od, ID, scale_d, MAP_D, EXACT) * stride_xd
               + _src(oh, IH, scale_h, MAP_H, EXACT) * stride_xh)
        if MAP_W == "half":
            # OW = 2*IW: each input column feeds two neighbouring outputs; load the BLOCK_V / 2
            # input columns once (contiguous, so vectors) and write each twice, interleaved
            _, pid_v = _block_ids(tl.cdiv(ROWS, BLOCK // BLOCK_V))  # (_tile's v // BLOCK_V)
            j = pid_v * (BLOCK_V // 2) + tl.arange(0, BLOCK_V // 2)
            half = tl.load(x_ptr + row[:, None] + (j * stride_xw)[None, :],
                           mask=(r < ROWS)[:, None] & (j < IW)[None, :])
            val = tl.interleave(half, half)
        else:
            col = _src(v, IW, scale_w, MAP_W, EXACT) * stride_xw
            val = tl.load(x_ptr + row[:, None] + col[None, :], mask=mask)
    tl.store(y_ptr + offs, val, mask=mask)


@triton.jit
def _upsample_nearest_bwd_kernel(
    # pointers
    dy_ptr, dx_ptr,
    # sizes
    C, ID, IH, IW, OD, OH, OW, total,
    # grad_output strides
    stride_gn, stride_gc, stride_gd, stride_gh, stride_gw,
    # fp32 scales, as in the forward
    scale_d, scale_h, scale_w,
    # most output positions reading one input position, per dimension
    MAX_D: tl.constexpr, MAX_H: tl.constexpr, MAX_W: tl.constexpr,
    # options
    MAP_D: tl.constexpr, MAP_H: tl.constexpr, MAP_W: tl.constexpr, EXACT: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, ACC64: tl.constexpr, WIDE: tl.constexpr, INDEX64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """dx[n, c, d, h, w] = sum of dy[n, c, od, oh, ow] over od in [first(d), first(d+1)), ..."""
    pid = tl.program_id(0)
    if INDEX64:
        pid = pid.to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    n, c, d, h, w = _unravel5(offs, C, ID, IH, IW, CHANNELS_LAST)
    d0 = _first(d, ID, OD, scale_d, MAP_D, EXACT, WIDE)
    nd = _first(d + 1, ID, OD, scale_d, MAP_D, EXACT, WIDE) - d0
    h0 = _first(h, IH, OH, scale_h, MAP_H, EXACT, WIDE)
    nh = _first(h + 1, IH, OH, scale_h, MAP_H, EXACT, WIDE) - h0
    w0 = _first(w, IW, OW, scale_w, MAP_W, EXACT, WIDE)
    nw = _first(w + 1, IW, OW, scale_w, MAP_W, EXACT, WIDE) - w0
    if ACC64:
        acc = tl.zeros([BLOCK], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK], dtype=tl.float32)  # accumulate in fp32 for fp16/bf16
    g_base = dy_ptr + n * stride_gn + c * stride_gc
    for jd in range(MAX_D):
        ok_d = mask & (jd < nd)
        for jh in range(MAX_H):
            ok_h = ok_d & (jh < nh)
            for jw in range(MAX_W):
                ok = ok_h & (jw < nw)
                ptr = g_base + (d0 + jd) * stride_gd + (h0 + jh) * stride_gh + (w0 + jw) * stride_gw
                acc += tl.load(ptr, mask=ok, other=0.0).to(acc.dtype)
    tl.store(dx_ptr + offs, acc.to(dx_ptr.dtype.element_ty), mask=mask)


_tuned: dict = {}


def _kernel(name):
    if name not in _tuned:
        fn, key = {
            "fwd": (_upsample_nearest_fwd_kernel,
                    ["ROWS", "COLS", "OD", "OH", "OW", "CHANNELS_LAST", "BLOCK_V"]),
            "bwd": (_upsample_nearest_bwd_kernel,
                    ["total", "ID", "IH", "IW", "MAX_D", "MAX_H", "MAX_W", "CHANNELS_LAST"]),
        }[name]
        _tuned[name] = autotune(fn, configs=_configs(), key=key)
    return _tuned[name]


# ---------------------------------------------------------------------------------------------
# launchers


def _as5d(t):
    """(N, C, W) -> (N, C, 1, 1, W); (N, C, H, W) -> (N, C, 1, H, W); 5-D unchanged (views)."""
    while t.dim() < 5:
        t = t.unsqueeze(2)
    return t


def _maps(input_sizes, output_sizes, scales, exact, rank):
    """Per spatial dimension: (map, fp32 scale), padded to three dimensions."""
    out = [("copy", 1.0)] * (3 - len(input_sizes))
    for i, o, s in zip(input_sizes, output_sizes, scales):
        if rank == 4 and not exact and o == i:
            out.append(("copy", 1.0))
        elif rank == 4 and not exact and o == 2 * i:
            out.append(("half", 0.5))
        else:
            # in fp32 as PyTorch: 1/scale_factor computed in double then rounded, or I/O in fp32
            if s > 0:
                scale = torch.tensor(1.0 / s, dtype=torch.float32, device="cpu")
            else:
                scale = torch.tensor(i, dtype=torch.float32, device="cpu") / o
            out.append(("scale", scale.item()))
    return out


@functools.lru_cache(maxsize=1024)
def _max_fan(i, o, m, scale, exact):
    """Most output positions reading one input position: the backward's loop bound."""
    if m == "copy":
        return 1
    if m == "half":
        return 2
    # host arithmetic (fp32, as PyTorch's kernels), on the CPU whatever the default device
    pos = torch.arange(o, dtype=torch.float32, device="cpu") + (0.5 if exact else 0.0)
    src = torch.floor(pos * torch.tensor(scale, dtype=torch.float32, device="cpu")).long().clamp(max=i - 1)
    return int(torch.bincount(src, minlength=i).max())


def _alloc(shape, like, channels_last):
    fmt = torch.contiguous_format
    if channels_last:
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)


def upsample_nearest_forward(input, output_size, scales, exact, channels_last):
    """input (N, C, *I) -> (N, C, *output_size) for 1, 2 or 3 spatial dims. scales: one float
    per spatial dim, the scale_factor PyTorch's kernel gets (<= 0 when none)."""
    y = _alloc((*input.shape[:2], *output_size), input, channels_last)
    if y.numel() == 0:
        return y
    maps = _maps(input.shape[2:], output_size, scales, exact, input.dim())
    x5, y5 = _as5d(input), _as5d(y)
    _, C, ID, IH, IW = x5.shape
    OD, OH, OW = y5.shape[2:]
    # (OD*OH) stands in for _view's H: rows of (n, c, od, oh) or of pixels (n, od, oh, ow)
    rows, cols, block_v, vec = _view(y5.shape[0], C, OD * OH, OW, channels_last)
    _kernel("fwd")[_grid(rows, cols, block_v)](
        x5, y5,
        C, ID, IH, IW, OD, OH, OW, rows, cols,
        *x5.stride(),
        maps[0][1], maps[1][1], maps[2][1],
        MAP_D=maps[0][0], MAP_H=maps[1][0], MAP_W=maps[2][0], EXACT=exact,
        CHANNELS_LAST=channels_last, INDEX64=index64(x5, y5), BLOCK_V=block_v, VEC=vec,
    )
    return y


def upsample_nearest_backward(grad_output, input_size, scales, exact, channels_last):
    """grad_output (N, C, *O) -> grad_input (N, C, *input_size[2:])."""
    dx = _alloc(tuple(input_size), grad_output, channels_last)
    if dx.numel() == 0:
        return dx
    if grad_output.numel() == 0:
        return dx.zero_()
    maps = _maps(input_size[2:], grad_output.shape[2:], scales, exact, len(input_size))
    g5, dx5 = _as5d(grad_output), _as5d(dx)
    _, C, ID, IH, IW = dx5.shape
    OD, OH, OW = g5.shape[2:]
    fans = [_max_fan(i, o, m, s, exact) for i, o, (m, s) in zip((ID, IH, IW), (OD, OH, OW), maps)]
    total = dx.numel()
    _kernel("bwd")[lambda meta: (cdiv(total, meta["BLOCK"]),)](
        g5, dx5,
        C, ID, IH, IW, OD, OH, OW, total,
        *g5.stride(),
        maps[0][1], maps[1][1], maps[2][1],
        MAX_D=fans[0], MAX_H=fans[1], MAX_W=fans[2],
        MAP_D=maps[0][0], MAP_H=maps[1][0], MAP_W=maps[2][0], EXACT=exact,
        CHANNELS_LAST=channels_last, ACC64=dx.dtype == torch.float64,
        WIDE=max(i * o for i, o in zip((ID, IH, IW), (OD, OH, OW))) >= 2**31 - 2**16,
        INDEX64=index64(g5, dx5),
    )
    return dx
