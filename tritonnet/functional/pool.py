"""Pooling and resampling with torch.nn.functional's names, signatures and errors.

max_pool1d / avg_pool1d run through the 2-D ops on an (.., C, 1, L) view. interpolate runs
'nearest' and 'nearest-exact' on tritonnet's resampling op and 'area' on adaptive_avg_pool1d
(3-D input) or adaptive_avg_pool2d (4-D), as torch's; every other mode, and 'area' on 5-D
input, is torch.nn.functional's own.
Integer tensors (which carry no gradient) are passed to torch.nn.functional after validation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as TF

from ..ops import pool as _ops
from ..ops.pool import pool_output_size
from ._utils import (
    bool_arg,
    check_tensors,
    has_slot,
    int_arg,
    int_elements,
    int_list,
    is_number,
    not_ints,
    overridable,
    typename,
)

__all__ = [
    "max_pool2d",
    "max_pool2d_with_indices",
    "avg_pool2d",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_with_indices",
    "adaptive_avg_pool2d",
    "max_pool1d",
    "max_pool1d_with_indices",
    "avg_pool1d",
    "adaptive_max_pool1d",
    "adaptive_max_pool1d_with_indices",
    "adaptive_avg_pool1d",
    "interpolate",
]

# ---------------------------------------------------------------------------------------------
# argument checks (PyTorch's exception types, with the values in the message)


def _check_rank(op, input, spatial, exc=RuntimeError, empty_channels_ok=False):
    """(C, *spatial) or (N, C, *spatial) with non-zero non-batch sizes (N may be 0)."""
    names = {1: "L", 2: "H, W"}[spatial]
    if input.dim() not in (spatial + 1, spatial + 2):
        raise exc(
            f"{op}: expected a {spatial + 1}-D (C, {names}) or {spatial + 2}-D (N, C, {names}) "
            f"input, got a {input.dim()}-D tensor of shape {tuple(input.shape)}"
        )
    dims = input.shape[-spatial:] if empty_channels_ok else input.shape[-spatial - 1:]
    if 0 in dims:
        raise RuntimeError(
            f"{op}: expected non-zero sizes for the non-batch dimensions, got input of shape "
            f"{tuple(input.shape)}"
        )


def _not_a_bare_bool(op, name, value):
    """torch's argument parser refuses a bool where it takes an int or a tuple of ints (True
    would pass here as 1)."""
    if isinstance(value, bool) or type(value).__name__ == "bool":  # numpy's bool too
        raise TypeError(not_ints(op, name, value))


def _window_args(op, kernel_size, stride, padding, dilation=1):
    """The window arguments' types, checked as torch's argument parser checks them: all of
    them, before any check of the input or of their lengths and values (a string padding on
    an empty input is torch's TypeError) -> (kernel, stride, padding, dilation) as tuples of
    ints, () for a stride of None."""
    no_stride = stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0)
    return (int_list(op, "kernel_size", kernel_size), () if no_stride else int_list(op, "stride", stride),
            int_list(op, "padding", padding), int_list(op, "dilation", dilation))


def _ints(op, name, vals, n):
    """A tuple of 1 or n ints -> a list of n ints (PyTorch's broadcasting rule)."""
    if len(vals) == 1:
        return list(vals) * n
    if len(vals) != n:
        what = "a single int" + (f", or a tuple of {n} ints" if n > 1 else " or a tuple of one int")
        raise RuntimeError(f"{op}: {name} must be {what}, got {vals!r}")
    return list(vals)


def _lengths(op, n, args):
    """_window_args's tuples -> (kernel, stride, padding, dilation) lists of n ints, their
    lengths checked (torch's RuntimeError, with the values)."""
    kernel_size, stride, padding, dilation = args
    kernel = _ints(op, "kernel_size", kernel_size, n)
    stride = _ints(op, "stride", stride, n) if stride else kernel
    return kernel, stride, _ints(op, "padding", padding, n), _ints(op, "dilation", dilation, n)


def _values(op, window):
    """The window's values checked (torch's RuntimeErrors, with the values); returns it."""
    kernel, stride, padding, dilation = window
    for name, vals in [("kernel_size", kernel), ("stride", stride), ("dilation", dilation)]:
        if any(v <= 0 for v in vals):
            raise RuntimeError(f"{op}: {name} must be greater than zero, but got {name}={vals}")
    if any(p < 0 for p in padding):
        raise RuntimeError(f"{op}: padding must be non-negative, but got padding={padding}")
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise RuntimeError(
            f"{op}: padding should be at most half of kernel size, but got padding={padding} "
            f"and kernel_size={kernel}"
        )
    return window


def _window(op, n, args):
    return _values(op, _lengths(op, n, args))


def _check_output(op, input, window, ceil_mode, spatial):
    kernel, stride, padding, dilation = window
    sizes = list(input.shape[-spatial:])
    out = [pool_output_size(i, k, s, p, d, bool(ceil_mode))
           for i, k, s, p, d in zip(sizes, kernel, stride, padding, dilation)]
    if any(o < 1 for o in out):
        c = input.shape[-spatial - 1]
        raise RuntimeError(
            f"{op}: given input size ({'x'.join(map(str, [c, *sizes]))}), the calculated output "
            f"size ({'x'.join(map(str, [c, *out]))}) is too small (kernel_size={kernel}, "
            f"stride={stride}, padding={padding}, dilation={dilation}, ceil_mode={bool(ceil_mode)})"
        )


def _need_indices(input, return_indices):
    return bool(return_indices) or (torch.is_grad_enabled() and input.requires_grad)


# ---------------------------------------------------------------------------------------------
# 2-D pooling


@overridable
def max_pool2d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1,
                            ceil_mode=False, return_indices=False):
    """(output, indices); indices are flat per (H, W) plane, as max_unpool2d expects."""
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


@overridable
def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    check_tensors("max_pool2d", input=input)
    args = _window_args("max_pool2d", kernel_size, stride, padding, dilation)
    bool_arg("max_pool2d", "ceil_mode", ceil_mode, 6)
    _check_rank("max_pool2d", input, 2)
    window = _window("max_pool2d", 2, args)
    _check_output("max_pool2d", input, window, ceil_mode, 2)
    if not input.is_floating_point():
        return TF.max_pool2d(input, *window, ceil_mode=ceil_mode, return_indices=return_indices)
    y, idx = _ops.max_pool2d(input, *window, bool(ceil_mode), _need_indices(input, return_indices))
    return (y, idx) if return_indices else y


@overridable
def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    check_tensors("avg_pool2d", input=input)
    args = _window_args("avg_pool2d", kernel_size, stride, padding)
    bool_arg("avg_pool2d", "ceil_mode", ceil_mode)
    bool_arg("avg_pool2d", "count_include_pad", count_include_pad)
    if divisor_override is not None:
        divisor_override = int_arg("avg_pool2d", "divisor_override", divisor_override)
    # torch's order: the window's lengths, a zero divisor, then the input's rank (IndexError
    # for fewer than 3 dimensions, RuntimeError for more than 4), then the window's values
    window = _lengths("avg_pool2d", 2, args)
    if divisor_override == 0:
        raise RuntimeError("avg_pool2d: divisor_override must be non-zero, got 0")
    _check_rank("avg_pool2d", input, 2, exc=IndexError if input.dim() < 3 else RuntimeError)
    kernel, stride, padding, _ = _values("avg_pool2d", window)
    _check_output("avg_pool2d", input, (kernel, stride, padding, [1, 1]), ceil_mode, 2)
    if not input.is_floating_point():
        return TF.avg_pool2d(input, kernel, stride, padding, ceil_mode, count_include_pad,
                             divisor_override)
    return _ops.avg_pool2d(input, kernel, stride, padding, bool(ceil_mode), bool(count_include_pad),
                           divisor_override)


def _check_size_rank(op, input, output_size):
    """torch's first check of an adaptive pool's output_size (torch.nn.functional's
    _list_with_default, before the op's own): a Python int stands for both sizes; anything
    else is a sequence (a numpy int, a 0-d tensor or None is torch's TypeError), and needs an
    input of more dims than its length."""
    if isinstance(output_size, (int, torch.SymInt)):  # a bool too: _adaptive_size refuses it
        return
    try:
        n = len(output_size)
    except TypeError:
        raise TypeError(
            f"{op}(): output_size must be an int or a sequence of ints and Nones, not "
            f"{typename(output_size)} (got {output_size!r})"
        ) from None
    if input.dim() <= n:
        raise ValueError(f"Input dimension should be at least {n + 1}")


def _adaptive_size(op, input, output_size):
    """An int, or a sequence of two ints whose None entries take the input's size (a 1-D
    tensor or array of two ints too, as torch's) -> [OH, OW]. Element types are checked
    before the length, as torch's argument parser does."""
    _not_a_bare_bool(op, "output_size", output_size)
    if isinstance(output_size, (int, torch.SymInt)):
        vals = [output_size, output_size]
    else:
        n = len(output_size)
        vals = [d if v is None else v for v, d in zip(output_size, input.shape[-n:] if n else ())]
        vals = list(int_elements(op, "output_size", vals, output_size))
    if len(vals) != 2:
        raise RuntimeError(f"{op}: output_size must be an int or 2 ints, got {output_size!r}")
    if any(v < 0 for v in vals):
        raise RuntimeError(f"{op}: elements of output_size must be >= 0, but got {vals}")
    return vals


@overridable
def adaptive_max_pool2d_with_indices(input, output_size, return_indices=False):
    return adaptive_max_pool2d(input, output_size, True)


@overridable
def adaptive_max_pool2d(input, output_size, return_indices=False):
    check_tensors("adaptive_max_pool2d", input=input)
    _check_size_rank("adaptive_max_pool2d", input, output_size)
    size = _adaptive_size("adaptive_max_pool2d", input, output_size)
    # torch checks the sizes of dims 1 and up: an unbatched input may have no channels
    _check_rank("adaptive_max_pool2d", input, 2, empty_channels_ok=input.dim() == 3)
    return _adaptive_max(input, size, return_indices)


def _adaptive_max(input, size, return_indices):
    """adaptive_max_pool2d past its checks (adaptive_max_pool1d's come here too)."""
    if not input.is_floating_point():
        return TF.adaptive_max_pool2d(input, size, return_indices)
    y, idx = _ops.adaptive_max_pool2d(input, size, _need_indices(input, return_indices))
    return (y, idx) if return_indices else y


@overridable
def adaptive_avg_pool2d(input, output_size):
    check_tensors("adaptive_avg_pool2d", input=input)
    _check_size_rank("adaptive_avg_pool2d", input, output_size)
    size = _adaptive_size("adaptive_avg_pool2d", input, output_size)
    _check_rank("adaptive_avg_pool2d", input, 2, empty_channels_ok=True)
    return _adaptive_avg(input, size)


def _adaptive_avg(input, size):
    """adaptive_avg_pool2d past its checks (adaptive_avg_pool1d's come here too)."""
    if not input.is_floating_point():
        return TF.adaptive_avg_pool2d(input, size)
    return _ops.adaptive_avg_pool2d(input, size)


# ---------------------------------------------------------------------------------------------
# 1-D pooling through the 2-D ops: (N, C, L) -> (N, C, 1, L), windows (1, k)


def _as2d(window):
    """1-D window (kernel, stride, padding, dilation) -> the 2-D window of a (1, L) plane."""
    kernel, stride, padding, dilation = window
    return [1, kernel[0]], [1, stride[0]], [0, padding[0]], [1, dilation[0]]


@overridable
def max_pool1d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1,
                            ceil_mode=False, return_indices=False):
    return max_pool1d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


@overridable
def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    check_tensors("max_pool1d", input=input)
    args = _window_args("max_pool1d", kernel_size, stride, padding, dilation)
    bool_arg("max_pool1d", "ceil_mode", ceil_mode, 6)
    _check_rank("max_pool1d", input, 1)
    window = _window("max_pool1d", 1, args)
    _check_output("max_pool1d", input, window, ceil_mode, 1)
    if not input.is_floating_point():
        return TF.max_pool1d(input, *window, ceil_mode=ceil_mode, return_indices=return_indices)
    y, idx = _ops.max_pool2d(input.unsqueeze(-2), *_as2d(window), bool(ceil_mode),
                             _need_indices(input, return_indices))
    return (y.squeeze(-2), idx.squeeze(-2)) if return_indices else y.squeeze(-2)


@overridable
def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    check_tensors("avg_pool1d", input=input)
    args = _window_args("avg_pool1d", kernel_size, stride, padding)
    bool_arg("avg_pool1d", "ceil_mode", ceil_mode)
    bool_arg("avg_pool1d", "count_include_pad", count_include_pad)
    _check_rank("avg_pool1d", input, 1)
    kernel, stride, padding, _ = _window("avg_pool1d", 1, args)
    window = (kernel, stride, padding, [1])
    _check_output("avg_pool1d", input, window, ceil_mode, 1)
    if not input.is_floating_point():
        return TF.avg_pool1d(input, kernel, stride, padding, ceil_mode, count_include_pad)
    k, s, p, _ = _as2d(window)
    return _ops.avg_pool2d(input.unsqueeze(-2), k, s, p, bool(ceil_mode), bool(count_include_pad),
                           None).squeeze(-2)


def _adaptive_size_1d(op, input, output_size, empty_channels_ok=False):
    """torch's checks of a 1-D adaptive pool, in its order (the output size's type, the rank,
    then one output size), with this op's name and the caller's shape in the messages."""
    vals = int_list(op, "output_size", output_size)
    _check_rank(op, input, 1, empty_channels_ok=empty_channels_ok)
    if len(vals) != 1:
        raise RuntimeError(f"{op}: output_size must be an int or a tuple of one int, got {output_size!r}")
    size = vals[0]
    if size < 0:
        raise RuntimeError(f"{op}: output_size must be >= 0, but got {size}")
    return size


@overridable
def adaptive_max_pool1d_with_indices(input, output_size, return_indices=False):
    return adaptive_max_pool1d(input, output_size, True)


@overridable
def adaptive_max_pool1d(input, output_size, return_indices=False):
    """(N, C, L) or (C, L) through adaptive_max_pool2d's body on a (1, L) plane: its indices
    are the positions along L, as torch's."""
    check_tensors("adaptive_max_pool1d", input=input)
    size = _adaptive_size_1d("adaptive_max_pool1d", input, output_size, empty_channels_ok=input.dim() == 2)
    out = _adaptive_max(input.unsqueeze(-2), [1, size], return_indices)
    return (out[0].squeeze(-2), out[1].squeeze(-2)) if return_indices else out.squeeze(-2)


@overridable
def adaptive_avg_pool1d(input, output_size):
    """(N, C, L) or (C, L) through adaptive_avg_pool2d's body on a (1, L) plane."""
    check_tensors("adaptive_avg_pool1d", input=input)
    size = _adaptive_size_1d("adaptive_avg_pool1d", input, output_size, empty_channels_ok=True)
    return _adaptive_avg(input.unsqueeze(-2), [1, size]).squeeze(-2)


# ---------------------------------------------------------------------------------------------
# interpolate

_OURS = ("nearest", "nearest-exact", "area")


def _floats(op, name, items):
    """Scale factors as torch's argument parser takes them: it checks the first one's type (a
    Python or numpy number, a bool included; a tensor, a string or a Fraction is its
    TypeError) and converts the rest through __float__ (or __index__)."""
    out = []
    for i, v in enumerate(items):
        if not (is_number(v) if i == 0 else has_slot(v, "__float__") or has_slot(v, "__index__")):
            raise TypeError(
                f"{op}(): argument '{name}' must be tuple of floats, but found element of type "
                f"{typename(v)} at pos {i} (got {items!r})"
            )
        out.append(v if isinstance(v, torch.SymFloat) else float(v))
    return out


def _is_integer(v):
    """torch.nn.functional.interpolate's check of a size's elements: an int (a bool too), a
    numpy int, or a tensor of integers (its argument parser later takes 0-d ones only)."""
    if isinstance(v, torch.Tensor):
        return not v.is_floating_point()
    return isinstance(v, (int, torch.SymInt)) or (type(v).__module__ == "numpy" and has_slot(v, "__index__"))


@overridable
def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """torch.nn.functional.interpolate. 'nearest' and 'nearest-exact' run on tritonnet's op
    (source index as PyTorch's CPU kernels compute it), 'area' on adaptive_avg_pool1d/2d for 3-D
    and 4-D input; other modes are torch.nn.functional.interpolate itself."""
    check_tensors("interpolate", input=input)
    ours = mode in _OURS and input.is_floating_point() and not (mode == "area" and input.dim() == 5)
    if not ours or antialias:
        return TF.interpolate(input, size, scale_factor, mode, align_corners,
                              recompute_scale_factor, antialias)
    if align_corners is not None:
        raise ValueError(
            f"interpolate: align_corners can only be set with the interpolating modes linear, "
            f"bilinear, bicubic and trilinear, not mode={mode!r} (got align_corners={align_corners})"
        )
    # torch.nn.functional.interpolate's order: the size or scale's count against the input's
    # spatial dims, a size's element types, recompute_scale_factor, the recomputed sizes, and
    # only then the input's rank
    dim = input.dim() - 2
    in_sizes = list(input.shape[2:])
    if (size is None) == (scale_factor is None):
        raise ValueError(
            "interpolate: exactly one of size or scale_factor must be given, got "
            f"size={size!r} and scale_factor={scale_factor!r}"
        )
    if size is not None:
        if isinstance(size, (list, tuple)):
            if len(size) != dim:
                raise ValueError(
                    f"interpolate: input has {dim} spatial dimensions {in_sizes} but size={size!r}"
                )
            if not all(_is_integer(v) for v in size):
                raise TypeError(
                    f"interpolate: size must be an int or a tuple of ints, got size={size!r} with "
                    f"element types {[typename(v) for v in size]}"
                )
        if recompute_scale_factor:
            raise ValueError("interpolate: recompute_scale_factor is not meaningful with an explicit size")
        # torch repeats a bare size (a numpy int, a 0-d tensor) for every spatial dim
        given = list(size) if isinstance(size, (list, tuple)) else [size] * dim
    elif isinstance(scale_factor, (list, tuple)):
        factors = list(scale_factor)
        if len(factors) != dim:
            raise ValueError(
                f"interpolate: input has {dim} spatial dimensions {in_sizes} but "
                f"scale_factor={scale_factor!r}"
            )
    else:  # (torch counts a list or tuple only: a bare factor of a 1-D input meets the rank check)
        factors = [scale_factor] * dim
    recompute = size is None and (recompute_scale_factor or mode == "area")
    if recompute:
        # torch's own expression, on the factors as given (no argument parser reads them on
        # this path: a 0-d tensor or a Fraction works; NaN is ValueError, Inf OverflowError)
        sizes = [torch.sym_int(i * f) for i, f in zip(in_sizes, factors)]
    if input.dim() not in (3, 4, 5):
        raise NotImplementedError(
            f"interpolate: only 3-D, 4-D and 5-D input is supported (got a {input.dim()}-D tensor "
            f"of shape {tuple(input.shape)}, mode={mode!r})"
        )
    if mode == "area":  # torch's adaptive_avg_pool1d/2d, with their checks: an empty output works
        pool = adaptive_avg_pool1d if dim == 1 else adaptive_avg_pool2d
        return pool(input, sizes if recompute else given)
    if size is not None:
        _not_a_bare_bool("interpolate", "size", size)
        sizes = list(int_elements("interpolate", "size", given, size))
        scales = [0.0] * dim
    elif recompute:
        scales = [0.0] * dim
    else:
        factors = _floats("interpolate", "scale_factor", factors)
        if any(isinstance(f, float) and not math.isfinite(f) for f in factors):
            raise RuntimeError(  # torch's: "value cannot be converted to type int64_t without overflow"
                f"interpolate: scale_factor={scale_factor!r} gives no finite output size for input "
                f"sizes {in_sizes}"
            )
        # truncation, as PyTorch (sym_int: a symbolic size stays symbolic under torch.export)
        sizes = [torch.sym_int(i * f) for i, f in zip(in_sizes, factors)]
        scales = factors
    if any(s <= 0 for s in in_sizes + sizes):
        raise RuntimeError(
            f"interpolate: input and output sizes should be greater than 0, but got input "
            f"{in_sizes} and output {sizes}"
        )
    if input.shape[1] == 0:
        raise RuntimeError(
            f"interpolate: expected non-empty channels, got input of shape {tuple(input.shape)}"
        )
    return _ops.upsample_nearest(input, sizes, scales, mode == "nearest-exact")
