"""softmax and log_softmax with torch.nn.functional's signatures, legacy dim rule and dtypes."""

from __future__ import annotations

import math

import torch

from ..ops.softmax import softmax as _softmax_op
from ._utils import FLOATS, autocast_off, check_tensors, int_arg, overridable, warn, wrong_type

__all__ = ["softmax", "log_softmax"]


def _legacy_dim(name: str, ndim: int, stacklevel: int) -> int:
    """torch's rule for dim=None (deprecated): dim 0 for 0-, 1- and 3-d input, else dim 1."""
    warn(
        f"Implicit dimension choice for {name} has been deprecated. "
        "Change the call to include dim=X as an argument.",
        stacklevel=stacklevel,
    )
    return 0 if ndim in (0, 1, 3) else 1


def _normalize_dim(dim: int, ndim: int) -> int:
    lo, hi = (-1, 0) if ndim == 0 else (-ndim, ndim - 1)  # a 0-d tensor takes dim 0 or -1
    if not lo <= dim <= hi:
        raise IndexError(
            f"Dimension out of range (expected to be in range of [{lo}, {hi}], but got {dim})"
        )
    return dim % max(ndim, 1)


def _autocast_fp32(input: torch.Tensor) -> bool:
    """torch's autocast runs softmax/log_softmax in fp32 ("fp32_set_opt_dtype") on CUDA and the
    other accelerators, for non-fp64 floating input and no explicit dtype; CPU autocast leaves
    them alone (and meta tensors, which have no autocast, too)."""
    dev = input.device.type
    return (
        dev not in ("cpu", "meta")
        and torch.is_autocast_enabled(dev)
        and input.dtype in (torch.float16, torch.bfloat16, torch.float32)
    )


def _apply(name, input, dim, stacklevel, dtype, log):
    check_tensors(name, input=input)
    if dim is None:
        dim = _legacy_dim(name, input.dim(), stacklevel + 1)  # read only here, as torch's
    dim = int_arg(name, "dim", dim, position=1)
    # torch's parser takes a dtype or Python's scalar types (compared by `is`: an array's ==
    # is elementwise); .to() would read a string as a device
    if (dtype is not None and not isinstance(dtype, torch.dtype)
            and not any(dtype is t for t in (bool, int, float, complex))):
        raise wrong_type(name, "dtype", None, "torch.dtype", dtype)
    if dtype is None and _autocast_fp32(input):
        dtype = torch.float32
    if dtype is not None:
        input = input.to(dtype)  # torch casts before the op
    dim = _normalize_dim(dim, input.dim())  # (before the dtype, as torch's)
    if input.dtype not in FLOATS:
        if input.numel() == 0:  # torch returns an empty tensor of any dtype unchecked
            return torch.empty_like(input)
        raise NotImplementedError(f'"{name}" not implemented for {input.dtype}')

    # (..., C, ...) -> (outer, C, inner): a view unless the dims around dim cannot merge
    shape = input.shape
    C = shape[dim] if input.dim() else 1
    outer, inner = math.prod(shape[:dim]), math.prod(shape[dim + 1 :])
    x3 = input.reshape(outer, C, inner)
    with autocast_off(input):
        y3 = _softmax_op(x3, log)
    return y3.view(shape)


@overridable
def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """exp(x_i) / sum_j exp(x_j) along ``dim``, as ``torch.nn.functional.softmax``."""
    return _apply("softmax", input, dim, _stacklevel, dtype, log=False)


@overridable
def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """x_i - log sum_j exp(x_j) along ``dim``, as ``torch.nn.functional.log_softmax``."""
    return _apply("log_softmax", input, dim, _stacklevel, dtype, log=True)
