"""conv2d, conv1d, conv_transpose2d, conv_transpose1d with torch.nn.functional's signatures,
argument normalisation ('same'/'valid', int -> pair) and torch's errors."""

from __future__ import annotations

import torch
import torch.nn.functional as _torch_F

from ..ops import conv as _ops
from ._utils import (
    autocast_dtype,
    autocast_off,
    cast,
    check_float,
    check_tensors,
    int_arg,
    int_list,
    overridable,
)

__all__ = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"]

ACTIVATIONS = ("none", "relu", "sigmoid", "tanh")
# the dtypes torch's own convolutions raise NotImplementedError for (the transposed ones take
# int64 only of the integers); they take the other non-float dtypes, which tritonnet refuses
_TORCH_REFUSES = (torch.bool,)
_TORCH_REFUSES_T = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32)


def _types(op, stride, padding, dilation, groups):
    """The int arguments as torch's argument parser takes them, checked before anything else
    (a float stride with a 5-D weight is its TypeError): tuples of ints (a float or a bare
    bool is a TypeError; int() would have truncated 1.5 to 1), groups an int; a string
    padding stays a string where torch's overloads take one (not the transposed ones)."""
    stride = int_list(op, "stride", stride)
    if not (isinstance(padding, str) and "transpose" not in op):
        padding = int_list(op, "padding", padding)
    dilation = int_list(op, "dilation", dilation)
    return stride, padding, dilation, int_arg(op, "groups", groups, symint=True)


def _tuple(value, n, name):
    """A tuple of 1 or n ints (as _types returns them) -> n-tuple; the wrong length is a
    RuntimeError with torch's message."""
    if len(value) == 1:
        return value * n
    if len(value) != n:
        raise RuntimeError(
            f"expected {name} to be a single integer value or a list of {n} values to match the "
            f"convolution dimensions, but got {name}={list(value)}"
        )
    return value


def _without_h(seq):
    """A 4-D shape or a pair for a 1-D op's message, as its caller passed it: conv1d's
    (N, C, 1, L) views and (1, s) pairs without their H."""
    seq = list(seq)
    return seq[:2] + seq[3:] if len(seq) == 4 else seq[1:]


def _shown(op):
    """How ``op``'s messages show shapes and pairs: a list, without H for a 1-D op."""
    return _without_h if op.endswith("1d") else list


def _check_kernel_size(weight):
    """A weight with an empty spatial dim: torch's RuntimeError (the GEMM would have summed
    nothing and returned the bias)."""
    kh, kw = weight.shape[2:]
    if kh <= 0 or kw <= 0:
        raise RuntimeError(
            f"kernel size should be greater than zero, but got kernel_height: {kh} kernel_width: {kw}"
        )


def _checked(op, input, weight, bias, ndim):
    """input, weight and bias (past check_tensors) checked as torch checks them, cast first as
    autocast casts them (a layer's input is often the previous layer's bf16 output, its
    weight fp32)."""
    input, weight, bias = _autocast(input, weight, bias)
    if input.dim() not in (ndim + 1, ndim + 2):
        raise RuntimeError(
            f"Expected {ndim + 1}D (unbatched) or {ndim + 2}D (batched) input to {op}, but got "
            f"input of size: {list(input.shape)}"
        )
    if weight.dim() != ndim + 2:
        raise RuntimeError(
            f"{op}: expected weight to be {ndim + 2}-D, got weight of size {list(weight.shape)}"
        )
    check_float(f"{op}(): input", input, _TORCH_REFUSES_T if "transpose" in op else _TORCH_REFUSES)
    if input.dtype != weight.dtype or (bias is not None and bias.dtype != input.dtype):
        raise RuntimeError(
            f"{op}: input type ({input.dtype}) and weight type ({weight.dtype})"
            + (f" and bias type ({bias.dtype})" if bias is not None else "")
            + " should be the same"
        )
    devices = {t.device for t in (input, weight, bias) if t is not None}
    if len(devices) > 1:
        raise RuntimeError(
            f"{op}: expected all tensors to be on the same device, got {sorted(map(str, devices))}"
        )
    return input, weight, bias


def _check_spatial(input):
    """torch sends an empty batch or no channels to its empty convolution and refuses any
    other empty input (a zero spatial size), after the other checks."""
    N, C = input.shape[:2]
    if N != 0 and C != 0 and input.numel() == 0:
        raise RuntimeError(
            "Only zero batch or zero channel inputs are supported, but got input shape: "
            f"{list(input.shape)}"
        )


def _check_params(stride, padding, dilation, groups, show=list):
    if groups <= 0:
        raise RuntimeError(f"non-positive groups is not supported, got groups={groups}")
    if any(s <= 0 for s in stride):
        raise RuntimeError(f"non-positive stride is not supported, got stride={show(stride)}")
    if any(p < 0 for p in padding):
        raise RuntimeError(f"negative padding is not supported, got padding={show(padding)}")
    if any(d <= 0 for d in dilation):
        raise RuntimeError(
            f"non-positive dilation is not supported, got dilation={show(dilation)}"
        )


def _autocast(input, weight, bias):
    lowp = autocast_dtype(input)
    if lowp is None:
        return input, weight, bias
    return cast(input, lowp), cast(weight, lowp), cast(bias, lowp)


@overridable
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation="none"):
    """2-D convolution as ``torch.nn.functional.conv2d``; ``activation`` ("relu", "sigmoid",
    "tanh") is fused into the implicit GEMM's epilogue (a tritonnet extension)."""
    check_tensors("conv2d", ("bias",), input=input, weight=weight, bias=bias)
    stride, padding, dilation, groups = _types("conv2d", stride, padding, dilation, groups)
    input, weight, bias = _checked("conv2d", input, weight, bias, 2)
    return _conv2d(input, weight, bias, stride, padding, dilation, groups, activation)


def _conv2d(input, weight, bias, stride, padding, dilation, groups, activation="none", op="conv2d"):
    """conv2d past its argument and tensor checks and autocast's cast (conv1d's, on its
    (.., 1, L) views, come here without running them twice; their messages show them
    without H)."""
    _check_kernel_size(weight)
    show = _shown(op)
    if activation not in ACTIVATIONS:
        raise ValueError(f"conv2d(): activation must be one of {ACTIVATIONS}, got {activation!r}")
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    stride = _tuple(stride, 2, "stride")
    dilation = _tuple(dilation, 2, "dilation")
    kernel = tuple(weight.shape[2:])
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise RuntimeError(
                    f"padding='same' is not supported for strided convolutions, got stride={show(stride)}"
                )
            _check_params(stride, (0, 0), dilation, groups, show)
            # total padding d*(k-1); PyTorch puts the odd pixel at the bottom/right
            total = [d * (k - 1) for d, k in zip(dilation, kernel)]
            padding = tuple(t // 2 for t in total)
            extra = [t - 2 * p for t, p in zip(total, padding)]
            if any(extra):
                input = _torch_F.pad(input, (0, extra[1], 0, extra[0]))
        else:
            raise RuntimeError(f"Invalid padding string: {padding!r}")
    padding = _tuple(padding, 2, "padding")
    _check_params(stride, padding, dilation, groups, show)

    N, C_in, H, W = input.shape
    C_out = weight.shape[0]
    if C_out < groups:  # no output channels (torch's check, before divisibility)
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be at least {groups} at dimension 0, "
            f"but got weight of size {show(weight.shape)} instead"
        )
    if C_out % groups != 0:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
            f"but got weight of size {show(weight.shape)} instead"
        )
    if weight.shape[1] * groups != C_in:
        raise RuntimeError(
            f"Given groups={groups}, weight of size {show(weight.shape)}, expected input"
            f"{show(input.shape)} to have {weight.shape[1] * groups} channels, but got {C_in} "
            "channels instead"
        )
    if bias is not None and tuple(bias.shape) != (C_out,):
        raise RuntimeError(
            f"Given weight of size {show(weight.shape)}, expected bias to be 1-dimensional with "
            f"{C_out} elements, but got bias of size {list(bias.shape)} instead"
        )
    padded = [H + 2 * padding[0], W + 2 * padding[1]]
    extent = [d * (k - 1) + 1 for d, k in zip(dilation, kernel)]
    if extent[0] > padded[0] or extent[1] > padded[1]:
        raise RuntimeError(
            f"Calculated padded input size per channel: ({' x '.join(map(str, show(padded)))}). "
            f"Kernel size: ({' x '.join(map(str, show(extent)))}). "
            "Kernel size can't be greater than actual input size"
        )
    _check_spatial(input)
    with autocast_off(input):
        y = _ops.conv2d(input, weight, bias, list(stride), list(padding), list(dilation), groups, activation)
    return y.squeeze(0) if unbatched else y


@overridable
def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution as ``torch.nn.functional.conv1d``, through the 2-D kernels with H = 1."""
    check_tensors("conv1d", ("bias",), input=input, weight=weight, bias=bias)
    stride, padding, dilation, groups = _types("conv1d", stride, padding, dilation, groups)
    input, weight, bias = _checked("conv1d", input, weight, bias, 1)
    input = input.contiguous()  # as torch's: a permuted (N, C, L) input must not read as NHWC
    pad = padding if isinstance(padding, str) else (0, _tuple(padding, 1, "padding")[0])
    y = _conv2d(
        input.unsqueeze(-2), weight.unsqueeze(-2), bias, (1, _tuple(stride, 1, "stride")[0]), pad,
        (1, _tuple(dilation, 1, "dilation")[0]), groups, op="conv1d",
    )
    return y.squeeze(-2)


@overridable
def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 2-D convolution as ``torch.nn.functional.conv_transpose2d`` (the input
    gradient of conv2d); output size (H-1)*S - 2*P + D*(K-1) + output_padding + 1."""
    check_tensors("conv_transpose2d", ("bias",), input=input, weight=weight, bias=bias)
    stride, padding, dilation, groups = _types("conv_transpose2d", stride, padding, dilation, groups)
    output_padding = int_list("conv_transpose2d", "output_padding", output_padding)
    input, weight, bias = _checked("conv_transpose2d", input, weight, bias, 2)
    return _conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)


def _conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation,
                      op="conv_transpose2d"):
    """conv_transpose2d past its argument and tensor checks and autocast's cast
    (conv_transpose1d's come here without running them twice, messages naming ``op`` and
    showing its shapes without H)."""
    _check_kernel_size(weight)
    show = _shown(op)
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    stride = _tuple(stride, 2, "stride")
    padding = _tuple(padding, 2, "padding")
    dilation = _tuple(dilation, 2, "dilation")
    output_padding = _tuple(output_padding, 2, "output_padding")
    _check_params(stride, padding, dilation, groups, show)
    if any(o >= s and o >= d for o, s, d in zip(output_padding, stride, dilation)) or any(
        o < 0 for o in output_padding
    ):
        raise RuntimeError(
            "output padding must be smaller than either stride or dilation, but got "
            f"output_padding={show(output_padding)}, stride={show(stride)}, dilation={show(dilation)}"
        )
    N, C_in, H, W = input.shape
    if weight.shape[0] < groups:  # no input channels (torch's check, before the others)
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be at least {groups} at dimension 0, "
            f"but got weight of size {show(weight.shape)} instead"
        )
    if C_in != weight.shape[0]:
        raise RuntimeError(
            f"Given transposed=1, weight of size {show(weight.shape)}, expected input"
            f"{show(input.shape)} to have {weight.shape[0]} channels, but got {C_in} channels instead"
        )
    if C_in % groups != 0:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
            f"but got weight of size {show(weight.shape)} instead"
        )
    C_out = weight.shape[1] * groups
    if C_out == 0:
        raise RuntimeError(f"non-empty 4D weight tensor expected, but got: {list(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (C_out,):
        raise RuntimeError(
            f"Given transposed=1, weight of size {show(weight.shape)}, expected bias to be "
            f"1-dimensional with {C_out} elements, but got bias of size {list(bias.shape)} instead"
        )
    _check_spatial(input)
    kernel = weight.shape[2:]
    out_hw = [
        (i - 1) * s - 2 * p + d * (k - 1) + o + 1
        for i, s, p, d, k, o in zip((H, W), stride, padding, dilation, kernel, output_padding)
    ]
    if any(o <= 0 for o in out_hw):
        raise RuntimeError(
            f"{op}: output size {show(out_hw)} is too small for input {show(input.shape)}, "
            f"weight {show(weight.shape)}, stride {show(stride)}, padding {show(padding)}"
        )
    with autocast_off(input):
        y = _ops.conv_transpose2d(
            input, weight, bias, [N, C_out, *out_hw], list(stride), list(padding), list(dilation), groups
        )
    return y.squeeze(0) if unbatched else y


@overridable
def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 1-D convolution, through the 2-D kernels with H = 1."""
    check_tensors("conv_transpose1d", ("bias",), input=input, weight=weight, bias=bias)
    stride, padding, dilation, groups = _types("conv_transpose1d", stride, padding, dilation, groups)
    output_padding = int_list("conv_transpose1d", "output_padding", output_padding)
    input, weight, bias = _checked("conv_transpose1d", input, weight, bias, 1)
    input = input.contiguous()  # as torch's: a permuted (N, C, L) input must not read as NHWC
    one = lambda v, name: (_tuple(v, 1, name)[0],)  # noqa: E731
    y = _conv_transpose2d(
        input.unsqueeze(-2), weight.unsqueeze(-2), bias, (1, *one(stride, "stride")),
        (0, *one(padding, "padding")), (0, *one(output_padding, "output_padding")), groups,
        (1, *one(dilation, "dilation")), op="conv_transpose1d",
    )
    return y.squeeze(-2)
