"""Pooling (max, average, adaptive) and nearest resampling as custom ops, with their backward.

Derivations, per (N, C) plane, W(o) the window of output o (kernels/pool.py):
  max      y[o] = x[a(o)], a(o) = argmax over W(o)     dx[i] = sum_{o : a(o) = i} dy[o]
  average  y[o] = sum_{i in W(o)} x[i] / div(o)        dx[i] = sum_{o : i in W(o)} dy[o] / div(o)
  nearest  y[o] = x[src(o)]                            dx[i] = sum_{o : src(o) = i} dy[o]
Each backward is linear in dy and written as a gather over the outputs that touch input i, so
the kernels need no atomics and are deterministic. Max pooling saves its int64 indices (the
forward skips writing them when nothing needs them: inference without return_indices).

The ops take 3-D (unbatched) or 4-D input for pooling and 3-D, 4-D or 5-D input for
resampling; the output is channels_last exactly when PyTorch's would be (4-D or 5-D input
whose strides suggest it), the gradient likewise follows the input.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..backend import backend_for
from ..reference._common import strides_like_channels_last, vmapped
from ._primitive import front, linear_jvp, primitive, rows_rule


def pool_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int,
                     ceil_mode: bool) -> int:
    """PyTorch's pooling output size along one dimension; with ceil_mode the last window must
    start inside the input or its left padding."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def is_channels_last(x: Tensor) -> bool:
    """Whether PyTorch's pooling/resampling would give x's output a channels_last layout."""
    if x.dim() == 4:  # suggest_memory_format's walk, ported, with its cached-flag fast path
        return strides_like_channels_last(x)
    if x.dim() != 5 or vmapped(x):
        return False
    try:
        from torch._prims_common import suggest_memory_format
    except ImportError:  # older torch: dense channels_last_3d only
        return x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()
    return suggest_memory_format(x) != torch.contiguous_format


def _new(like: Tensor, shape, cl: bool, dtype=None) -> Tensor:
    """Fake-tensor allocation with the layout the primitives give."""
    fmt = torch.contiguous_format
    if cl:
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device, memory_format=fmt)


def _batched(*tensors):
    """(C, H, W) -> (1, C, H, W) views; 4-D unchanged."""
    return [t.unsqueeze(0) if t.dim() == 3 else t for t in tensors]


def _unbatch(t: Tensor, rank: int) -> Tensor:
    return t.squeeze(0) if rank == 3 and t.dim() == 4 else t


def _pooled_shape(input, kernel_size, stride, padding, dilation, ceil_mode):
    hw = [pool_output_size(i, k, s, p, d, ceil_mode) for i, k, s, p, d in
          zip(input.shape[-2:], kernel_size, stride, padding, dilation)]
    return (*input.shape[:-2], *hw)


def _no_indices(input):
    return input.new_empty(0, dtype=torch.int64)


# ---------------------------------------------------------------------------------------------
# max_pool2d


@primitive
def max_pool2d(input: Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
               dilation: list[int], ceil_mode: bool, need_indices: bool) -> tuple[Tensor, Tensor]:
    out_hw = _pooled_shape(input, kernel_size, stride, padding, dilation, ceil_mode)[-2:]
    (x,) = _batched(input)
    y, idx = backend_for(input).max_pool2d_forward(
        x, kernel_size, stride, padding, dilation, out_hw, is_channels_last(input), need_indices)
    return _unbatch(y, input.dim()), _unbatch(idx, input.dim())


@max_pool2d.register_fake
def _(input, kernel_size, stride, padding, dilation, ceil_mode, need_indices):
    shape = _pooled_shape(input, kernel_size, stride, padding, dilation, ceil_mode)
    cl = is_channels_last(input)
    idx = _new(input, shape, cl, torch.int64) if need_indices else _no_indices(input)
    return _new(input, shape, cl), idx


@primitive
def max_pool2d_backward(grad_output: Tensor, indices: Tensor, input_size: list[int],
                        kernel_size: list[int], stride: list[int], padding: list[int],
                        dilation: list[int], channels_last: bool) -> Tensor:
    g, idx = _batched(grad_output, indices)
    size = [1, *input_size] if len(input_size) == 3 else input_size
    dx = backend_for(grad_output).max_pool2d_backward(
        g, idx, size, kernel_size, stride, padding, dilation, channels_last)
    return _unbatch(dx, len(input_size))


@max_pool2d_backward.register_fake
def _(grad_output, indices, input_size, kernel_size, stride, padding, dilation, channels_last):
    return _new(grad_output, input_size, channels_last)


def _check_indices(indices, grad, op):
    if indices.numel() == 0 and grad.numel() != 0:
        raise RuntimeError(
            f"{op}: the forward ran without saving indices (need_indices=False), so it cannot be "
            "differentiated; call it through tritonnet.functional"
        )


def _max_setup(ctx, inputs, output):
    input, kernel_size, stride, padding, dilation, _, _ = inputs
    # the indices never carry a gradient: without this autograd would hand the backward a
    # zero tensor of their size (an int64 memset on every backward, as large as dx in bf16)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(output[1])
    ctx.args = (list(input.shape), kernel_size, stride, padding, dilation, is_channels_last(input))


def _max_backward(ctx, grad, _grad_indices):
    if grad is None:  # not materialized (see _max_setup): no gradient reached the output
        return (None,) * 7
    (indices,) = ctx.saved_tensors
    _check_indices(indices, grad, "max_pool2d")
    return (max_pool2d_backward(grad, indices, *ctx.args),) + (None,) * 6


max_pool2d.register_autograd(_max_backward, setup_context=_max_setup)


def _gather_jvp(tangent: Tensor, shape, indices: Tensor) -> Tensor:
    """A max pool's tangent: the input tangent at each window's argmax (indices flat in
    each plane, as torch's). A window of padding only (-inf, an index that may lie outside
    the plane) takes 0."""
    plane = tangent.shape[-2] * tangent.shape[-1]
    flat = indices.flatten(-2)
    inside = (flat >= 0) & (flat < plane)
    picked = tangent.flatten(-2).gather(-1, flat.clamp(0, max(plane - 1, 0)))
    return torch.where(inside, picked, torch.zeros_like(picked)).view(shape)


def _argmax_jvp(prim):
    """The jvp of a max pool (``prim``'s last argument is need_indices): the gather above, at
    the indices the call returned, or recomputed where the call skipped them."""

    def jvp(args, output, tangents):
        y, indices = output
        if tangents[0] is None:
            return None, None
        if indices.numel() != y.numel():  # the call skipped the indices (none needed then)
            indices = prim(*args[:-1], True)[1]
        return _gather_jvp(tangents[0], y.shape, indices), None

    return jvp


max_pool2d.register_jvp(_argmax_jvp(max_pool2d))


# ---------------------------------------------------------------------------------------------
# avg_pool2d


@primitive
def avg_pool2d(input: Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
               ceil_mode: bool, count_include_pad: bool, divisor_override: Optional[int]) -> Tensor:
    out_hw = _pooled_shape(input, kernel_size, stride, padding, [1, 1], ceil_mode)[-2:]
    (x,) = _batched(input)
    y = backend_for(input).avg_pool2d_forward(
        x, kernel_size, stride, padding, out_hw, count_include_pad, divisor_override,
        is_channels_last(input))
    return _unbatch(y, input.dim())


@avg_pool2d.register_fake
def _(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    shape = _pooled_shape(input, kernel_size, stride, padding, [1, 1], ceil_mode)
    return _new(input, shape, is_channels_last(input))


@primitive
def avg_pool2d_backward(grad_output: Tensor, input_size: list[int], kernel_size: list[int],
                        stride: list[int], padding: list[int], count_include_pad: bool,
                        divisor_override: Optional[int], channels_last: bool) -> Tensor:
    (g,) = _batched(grad_output)
    size = [1, *input_size] if len(input_size) == 3 else input_size
    dx = backend_for(grad_output).avg_pool2d_backward(
        g, size, kernel_size, stride, padding, count_include_pad, divisor_override, channels_last)
    return _unbatch(dx, len(input_size))


@avg_pool2d_backward.register_fake
def _(grad_output, input_size, kernel_size, stride, padding, count_include_pad, divisor_override,
      channels_last):
    return _new(grad_output, input_size, channels_last)


def _avg_setup(ctx, inputs, output):
    input, kernel_size, stride, padding, _, count_include_pad, divisor_override = inputs
    ctx.args = (list(input.shape), kernel_size, stride, padding, count_include_pad,
                divisor_override, is_channels_last(input))


def _avg_backward(ctx, grad):
    return (avg_pool2d_backward(grad, *ctx.args),) + (None,) * 6


avg_pool2d.register_autograd(_avg_backward, setup_context=_avg_setup)
avg_pool2d.register_jvp(linear_jvp(avg_pool2d))


# ---------------------------------------------------------------------------------------------
# adaptive_max_pool2d / adaptive_avg_pool2d


@primitive
def adaptive_max_pool2d(input: Tensor, output_size: list[int],
                        need_indices: bool) -> tuple[Tensor, Tensor]:
    (x,) = _batched(input)
    y, idx = backend_for(input).adaptive_max_pool2d_forward(
        x, output_size, is_channels_last(input), need_indices)
    return _unbatch(y, input.dim()), _unbatch(idx, input.dim())


@adaptive_max_pool2d.register_fake
def _(input, output_size, need_indices):
    shape = (*input.shape[:-2], *output_size)
    cl = is_channels_last(input)
    idx = _new(input, shape, cl, torch.int64) if need_indices else _no_indices(input)
    return _new(input, shape, cl), idx


@primitive
def adaptive_max_pool2d_backward(grad_output: Tensor, indices: Tensor, input_size: list[int],
                                 channels_last: bool) -> Tensor:
    g, idx = _batched(grad_output, indices)
    size = [1, *input_size] if len(input_size) == 3 else input_size
    dx = backend_for(grad_output).adaptive_max_pool2d_backward(g, idx, size, channels_last)
    return _unbatch(dx, len(input_size))


@adaptive_max_pool2d_backward.register_fake
def _(grad_output, indices, input_size, channels_last):
    return _new(grad_output, input_size, channels_last)


def _amax_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)  # no zeros for the indices' gradient (see _max_setup)
    ctx.save_for_backward(output[1])
    ctx.args = (list(inputs[0].shape), is_channels_last(inputs[0]))


def _amax_backward(ctx, grad, _grad_indices):
    if grad is None:
        return None, None, None
    (indices,) = ctx.saved_tensors
    _check_indices(indices, grad, "adaptive_max_pool2d")
    return adaptive_max_pool2d_backward(grad, indices, *ctx.args), None, None


adaptive_max_pool2d.register_autograd(_amax_backward, setup_context=_amax_setup)


adaptive_max_pool2d.register_jvp(_argmax_jvp(adaptive_max_pool2d))


@primitive
def adaptive_avg_pool2d(input: Tensor, output_size: list[int]) -> Tensor:
    (x,) = _batched(input)
    y = backend_for(input).adaptive_avg_pool2d_forward(x, output_size, is_channels_last(input))
    return _unbatch(y, input.dim())


@adaptive_avg_pool2d.register_fake
def _(input, output_size):
    return _new(input, (*input.shape[:-2], *output_size), is_channels_last(input))


@primitive
def adaptive_avg_pool2d_backward(grad_output: Tensor, input_size: list[int],
                                 channels_last: bool) -> Tensor:
    (g,) = _batched(grad_output)
    size = [1, *input_size] if len(input_size) == 3 else input_size
    dx = backend_for(grad_output).adaptive_avg_pool2d_backward(g, size, channels_last)
    return _unbatch(dx, len(input_size))


@adaptive_avg_pool2d_backward.register_fake
def _(grad_output, input_size, channels_last):
    return _new(grad_output, input_size, channels_last)


def _aavg_setup(ctx, inputs, output):
    ctx.args = (list(inputs[0].shape), is_channels_last(inputs[0]))


def _aavg_backward(ctx, grad):
    return adaptive_avg_pool2d_backward(grad, *ctx.args), None


adaptive_avg_pool2d.register_autograd(_aavg_backward, setup_context=_aavg_setup)
adaptive_avg_pool2d.register_jvp(linear_jvp(adaptive_avg_pool2d))


# ---------------------------------------------------------------------------------------------
# nearest resampling (interpolate mode='nearest' / 'nearest-exact')


@primitive
def upsample_nearest(input: Tensor, output_size: list[int], scales: list[float],
                     exact: bool) -> Tensor:
    return backend_for(input).upsample_nearest_forward(
        input, output_size, scales, exact, is_channels_last(input))


@upsample_nearest.register_fake
def _(input, output_size, scales, exact):
    return _new(input, (*input.shape[:2], *output_size), is_channels_last(input))


@primitive
def upsample_nearest_backward(grad_output: Tensor, input_size: list[int], scales: list[float],
                              exact: bool, channels_last: bool) -> Tensor:
    return backend_for(grad_output).upsample_nearest_backward(
        grad_output, input_size, scales, exact, channels_last)


@upsample_nearest_backward.register_fake
def _(grad_output, input_size, scales, exact, channels_last):
    return _new(grad_output, input_size, channels_last)


def _up_setup(ctx, inputs, output):
    input, _, scales, exact = inputs
    ctx.args = (list(input.shape), scales, exact)


def _up_backward(ctx, grad):
    # torch's layout rule for this gradient: the incoming gradient's format for 4-D (its
    # upsample_nearest2d_backward), contiguous for 3-D and 5-D
    channels_last = grad.dim() == 4 and is_channels_last(grad)
    return upsample_nearest_backward(grad, *ctx.args, channels_last), None, None, None


upsample_nearest.register_autograd(_up_backward, setup_context=_up_setup)
upsample_nearest.register_jvp(linear_jvp(upsample_nearest))


# ---------------------------------------------------------------------------------------------
# double backward: every backward here is linear in its gradient alone (indices and sizes are
# constants), so its own gradient is the forward map again: a gather at the indices for the
# max pools, the average pool, the adaptive average and the resampling of gg.


def _max_grad_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])
    ctx.out_shape = inputs[0].shape


def _max_grad_backward(ctx, gg):
    (indices,) = ctx.saved_tensors
    d_g = _gather_jvp(gg, ctx.out_shape, indices) if ctx.needs_input_grad[0] else None
    return (d_g,) + (None,) * (len(ctx.needs_input_grad) - 1)


max_pool2d_backward.register_autograd(_max_grad_backward, setup_context=_max_grad_setup)
adaptive_max_pool2d_backward.register_autograd(_max_grad_backward, setup_context=_max_grad_setup)


def _avg_grad_setup(ctx, inputs, output):
    grad_output, input_size, kernel_size, stride, padding, count_include_pad, divisor, _ = inputs
    # ceil_mode is not an argument of the backward: the one that gives grad_output's size
    floor = [pool_output_size(input_size[-2 + i], kernel_size[i], stride[i], padding[i], 1, False)
             for i in (0, 1)]
    ceil_mode = floor != list(grad_output.shape[-2:])
    ctx.args = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor)


def _avg_grad_backward(ctx, gg):
    d_g = avg_pool2d(gg, *ctx.args) if ctx.needs_input_grad[0] else None
    return (d_g,) + (None,) * 7


avg_pool2d_backward.register_autograd(_avg_grad_backward, setup_context=_avg_grad_setup)


def _aavg_grad_setup(ctx, inputs, output):
    ctx.out_size = list(inputs[0].shape[-2:])


def _aavg_grad_backward(ctx, gg):
    return (adaptive_avg_pool2d(gg, ctx.out_size) if ctx.needs_input_grad[0] else None), None, None


adaptive_avg_pool2d_backward.register_autograd(_aavg_grad_backward, setup_context=_aavg_grad_setup)


def _up_grad_setup(ctx, inputs, output):
    grad_output, _, scales, exact, _ = inputs
    ctx.args = (list(grad_output.shape[2:]), scales, exact)


def _up_grad_backward(ctx, gg):
    d_g = upsample_nearest(gg, *ctx.args) if ctx.needs_input_grad[0] else None
    return d_g, None, None, None, None


upsample_nearest_backward.register_autograd(_up_grad_backward, setup_context=_up_grad_setup)

# and their jvps: the backward itself on the tangent of the gradient
for _prim in (max_pool2d_backward, adaptive_max_pool2d_backward, avg_pool2d_backward,
              adaptive_avg_pool2d_backward, upsample_nearest_backward):
    _prim.register_jvp(linear_jvp(_prim))


# ---------------------------------------------------------------------------------------------
# torch.vmap: the vmap dimension B folds into the batch, one launch for all samples. A sample
# is (C, H, W) or (N, C, H, W); the batched tensor, (B, C, H, W) or (B, N, C, H, W), goes in
# as a batch of B or B*N planes-by-channels. Indices are within a plane, so folding keeps them.


def _fold(x: Tensor, bdim, batch_size: int):
    """x batched on dim 0 as a 4-D tensor, and the function that puts a result back."""
    x = front(x, bdim, batch_size)
    if x.dim() == 4:
        return x, lambda t: t
    return x.flatten(0, 1), lambda t: t.unflatten(0, x.shape[:2])


def _folded_size(size: list[int], batch_size: int) -> list[int]:
    return [batch_size, *size] if len(size) == 3 else [batch_size * size[0], *size[1:]]


def _forward_rule(prim):
    """A pool's batching rule: the input folded, each result put back."""

    def rule(info, in_dims, input, *args):
        x, back = _fold(input, in_dims[0], info.batch_size)
        out = prim.op(x, *args)
        if isinstance(out, tuple):  # (y, indices)
            y, idx = out
            # indices not asked for: the (0,) placeholder, (B, 0) batched (each sample's (0,))
            idx = back(idx) if idx.dim() == 4 else idx.new_empty((info.batch_size, 0))
            return (back(y), idx), (0, 0)
        return back(out), 0

    return rule


def _backward_rule(prim, indices: bool):
    """A pool gradient's batching rule: dy (and the indices) folded, input_size with them."""

    def rule(info, in_dims, grad_output, *args):
        B = info.batch_size
        g, back = _fold(grad_output, in_dims[0], B)
        if indices:
            idx, _ = _fold(args[0], in_dims[1], B)
            return back(prim.op(g, idx, _folded_size(args[1], B), *args[2:])), 0
        return back(prim.op(g, _folded_size(args[0], B), *args[1:])), 0

    return rule


for _prim in (max_pool2d, avg_pool2d, adaptive_max_pool2d, adaptive_avg_pool2d):
    _prim.register_vmap(_forward_rule(_prim))
for _prim, _indices in ((max_pool2d_backward, True), (avg_pool2d_backward, False),
                        (adaptive_max_pool2d_backward, True), (adaptive_avg_pool2d_backward, False)):
    _prim.register_vmap(_backward_rule(_prim, _indices))


# nearest resampling: a sample is (N, C, *spatial) with N always there, so B folds into N
upsample_nearest.register_vmap(rows_rule(upsample_nearest))
upsample_nearest_backward.register_vmap(rows_rule(upsample_nearest_backward, sizes=(1,)))
