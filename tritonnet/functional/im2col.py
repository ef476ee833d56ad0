"""unfold and fold with torch.nn.functional's signatures, semantics and errors: the same checks
in the same order as torch's im2col / col2im, with their exception types and messages."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as _torch_F

from ..ops import im2col as _ops
from ._utils import FLOATS, check_tensors, int_elements, overridable

__all__ = ["unfold", "fold"]


def _pairs(op, **args):
    """Each argument an int, or an iterable of two ints (a 1-D tensor or array too) -> a list
    of (int, int), as torch.nn.functional's _pair and then its argument parser: TypeError for
    a non-integer element (bools and floats included; iterating a 0-d tensor is one too), for
    every argument before any length (torch's parser checks all the types first), then
    RuntimeError for the wrong length."""
    out = []
    for name, value in args.items():
        items = list(value) if isinstance(value, Iterable) else [value, value]
        out.append(int_elements(op, name, items, value))
    for name, vals in zip(args, out):
        if len(vals) != 2:
            raise RuntimeError(f"It is expected {name} equals to 2, but got size {len(vals)}")
    return out


def _check_kernel(kernel, dilation, padding, stride, fold):
    checks = {
        "kernel": (
            kernel[0] > 0 and kernel[1] > 0,
            "kernel size should be greater than zero, but got "
            f"kernel_height: {kernel[0]} kernel_width: {kernel[1]}",
        ),
        "dilation": (
            dilation[0] > 0 and dilation[1] > 0,
            "dilation should be greater than zero, but got "
            f"dilation_height: {dilation[0]} dilation_width: {dilation[1]}",
        ),
        "padding": (
            padding[0] >= 0 and padding[1] >= 0,
            f"padding should be non-negative, but got pad_height: {padding[0]} pad_width: {padding[1]}",
        ),
        "stride": (
            stride[0] > 0 and stride[1] > 0,
            "stride should be greater than zero, but got "
            f"stride_height: {stride[0]} stride_width: {stride[1]}",
        ),
    }
    # torch's im2col and col2im test the four in different orders
    if fold:
        order = ("kernel", "stride", "dilation", "padding")
    else:
        order = ("kernel", "dilation", "padding", "stride")
    for key in order:
        ok, message = checks[key]
        if not ok:
            raise RuntimeError(message)


def _theirs(t) -> bool:
    """Whether torch's own im2col/col2im takes ``t`` instead of tritonnet's kernels: bool and
    complex tensors, which torch implements on the CPU (and refuses elsewhere, with its own
    error), as the pools hand integer inputs to torch's functions; torch's autograd then
    computes a complex input's gradient."""
    return t.dtype == torch.bool or t.is_complex()


def _check_dtype(op, t):
    # torch refuses integer dtypes here too, with a NotImplementedError
    if t.dtype not in FLOATS:
        raise NotImplementedError(
            f"{op}(): not implemented for {t.dtype}; expected float32, float16, bfloat16 or float64"
        )


def _blocks(size, kernel, dilation, padding, stride):
    return tuple(
        (n + 2 * p - (d * (k - 1) + 1)) // s + 1
        for n, k, d, p, s in zip(size, kernel, dilation, padding, stride)
    )


@overridable
def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """Extract sliding local blocks: (N, C, H, W) -> (N, C*KH*KW, L), or (C, H, W) ->
    (C*KH*KW, L), as ``torch.nn.functional.unfold``; a new tensor, never a view of input."""
    check_tensors("unfold", input=input)
    kernel, dilation, padding, stride = _pairs(
        "unfold", kernel_size=kernel_size, dilation=dilation, padding=padding, stride=stride)
    _check_kernel(kernel, dilation, padding, stride, fold=False)

    ndim = input.dim()
    if ndim < 2 or (ndim == 2 and input.shape[1] != 0):
        # torch reads sizes 1 and 2 before it tests the number of dimensions (size 2 only
        # where size 1 is not 0)
        bad = 1 if ndim < 2 else 2
        if ndim == 0:
            raise IndexError(f"Dimension specified as {bad} but tensor has no dimensions")
        raise IndexError(
            f"Dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], but got {bad})"
        )
    shape = input.shape
    valid = shape[1] != 0 and shape[2] != 0
    if not ((ndim == 3 and shape[0] != 0 and valid) or (ndim == 4 and valid and shape[3] != 0)):
        raise RuntimeError(
            "Expected 3D or 4D (batch mode) tensor with possibly 0 batch size and other non-zero "
            f"dimensions for input, but got: {list(shape)}"
        )
    size = tuple(shape[-2:])
    oh, ow = _blocks(size, kernel, dilation, padding, stride)
    if oh < 1 or ow < 1:
        raise RuntimeError(
            f"Given input with spatial size {size}, kernel_size={kernel}, dilation={dilation}, "
            f"padding={padding}, calculated shape of the array of sliding blocks as ({oh}, {ow}), "
            "but its components must be at least one."
        )
    if _theirs(input):
        return _torch_F.unfold(input, kernel, dilation, padding, stride)
    _check_dtype("unfold", input)

    unbatched = ndim == 3
    x = input.unsqueeze(0) if unbatched else input
    cols = _ops.unfold(x, list(kernel), list(dilation), list(padding), list(stride))
    return cols.squeeze(0) if unbatched else cols


@overridable
def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """Sum sliding local blocks into an image: (N, C*KH*KW, L) -> (N, C, H, W), or
    (C*KH*KW, L) -> (C, H, W), as ``torch.nn.functional.fold`` (overlaps add up)."""
    check_tensors("fold", input=input)
    out_size, kernel, dilation, padding, stride = _pairs(
        "fold", output_size=output_size, kernel_size=kernel_size, dilation=dilation, padding=padding,
        stride=stride)
    _check_kernel(kernel, dilation, padding, stride, fold=True)

    ndim = input.dim()
    shape = input.shape
    if not (ndim in (2, 3) and shape[-2] != 0 and shape[-1] != 0):
        raise RuntimeError(
            "Expected 2D or 3D (batch mode) tensor for input with possibly 0 batch size and "
            f"non-zero dimensions for input, but got: {list(shape)}"
        )
    # torch words these as for the batched (N, C*KH*KW, L) input, unbatched input included
    rows, L = shape[-2], shape[-1]
    if rows % (kernel[0] * kernel[1]) != 0:
        raise RuntimeError(
            "Expected size of input's dimension 1 to be divisible by the product of kernel_size, "
            f"but got input.size(1)={rows} and kernel_size={kernel}."
        )
    bh, bw = _blocks(out_size, kernel, dilation, padding, stride)
    if L != bh * bw:
        raise RuntimeError(
            f"Given output_size={out_size}, kernel_size={kernel}, dilation={dilation}, "
            f"padding={padding}, stride={stride}, expected size of input's dimension 2 to match "
            f"the calculated number of sliding blocks {bh} * {bw} = {bh * bw}, but got "
            f"input.size(2)={L}."
        )
    if bh < 1 or bw < 1:  # two negative counts can multiply to L
        raise RuntimeError(
            f"Given output_size={out_size}, kernel_size={kernel}, dilation={dilation}, "
            f"padding={padding}, stride={stride}, calculated shape of the array of sliding blocks "
            f"as ({bh}, {bw}), which is too small (non-positive)"
        )
    if out_size[0] < 1 or out_size[1] < 1:
        raise RuntimeError(
            f"Expected output spatial size to be positive, but got: output_size={out_size}."
        )
    if _theirs(input):
        return _torch_F.fold(input, out_size, kernel, dilation, padding, stride)
    _check_dtype("fold", input)

    unbatched = ndim == 2
    cols = input.unsqueeze(0) if unbatched else input
    y = _ops.fold(cols, list(out_size), list(kernel), list(dilation), list(padding), list(stride))
    return y.squeeze(0) if unbatched else y
