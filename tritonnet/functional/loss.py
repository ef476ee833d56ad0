"""cross_entropy, nll_loss and mse_loss with torch.nn.functional's signatures, shape rules,
reductions, dtypes and exceptions.

Every check runs here, on the host, before a kernel sees the tensors; the kernels only ever
get in-range class indices (or ignore_index, which they mask). Checking the targets costs one
device-to-host sync per call on a GPU (torch's own CUDA kernels assert on the device instead).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as _torch_F

from ..ops.loss import cross_entropy as _ce_op
from ..ops.loss import mse_loss as _mse_op
from ..ops.loss import nll_loss as _nll_op
from ..reference._common import functorch_active
from ._utils import (
    FLOATS,
    autocast_fp32,
    autocast_off,
    check_tensors,
    float_arg,
    int_arg,
    overridable,
    warn,
)

__all__ = ["cross_entropy", "nll_loss", "mse_loss"]

REDUCTIONS = ("none", "mean", "sum")
_LOWP = (torch.float16, torch.bfloat16)
_SCALAR_NAMES = {
    torch.float32: "Float", torch.float64: "Double", torch.float16: "Half",
    torch.bfloat16: "BFloat16", torch.int64: "Long", torch.int32: "Int", torch.int16: "Short",
    torch.int8: "Char", torch.uint8: "Byte", torch.bool: "Bool",
}


def _name(dtype: torch.dtype) -> str:
    """torch's scalar type name (Float, Long, ...), as its loss messages print them."""
    return _SCALAR_NAMES.get(dtype, str(dtype))


# ---------------------------------------------------------------------------------------------
# argument handling shared by the losses


def _reduction(size_average, reduce, reduction: str) -> str:
    """The reduction in force; the legacy size_average/reduce pair overrides it, as in torch."""
    if size_average is not None or reduce is not None:
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        reduction = "none" if not reduce else ("mean" if size_average else "sum")
        warn(
            "size_average and reduce args will be deprecated, please use "
            f"reduction='{reduction}' instead.",
            stacklevel=3,
        )
    if reduction == "elementwise_mean":  # torch's old name for it, still taken with a warning
        warn("reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead.",
             stacklevel=3)
        reduction = "mean"
    if reduction not in REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction (expected one of {REDUCTIONS})")
    return reduction


def _check_tensors(op: str, **tensors) -> None:
    check_tensors(op, ("weight",), **tensors)
    named = [(k, v) for k, v in tensors.items() if v is not None]
    k0, t0 = named[0]
    for k, t in named[1:]:
        if t.device != t0.device:
            raise RuntimeError(
                f"{op}: expected all tensors to be on the same device, but {k0} is on "
                f"{t0.device} and {k} is on {t.device}"
            )


def _to_fp32(t):
    """autocast's cast for ops on its fp32 list: fp16/bf16 -> fp32; fp64 and others stay."""
    return t.float() if t is not None and t.dtype in _LOWP else t


def _check_weight(weight, C: int, prefix: str = "") -> None:
    if weight is not None and (weight.dim() != 1 or weight.numel() != C):
        raise RuntimeError(
            f"{prefix}weight tensor should be defined either for all {C} classes or no classes "
            f"but got weight tensor of shape: {list(weight.shape)}"
        )


def _index_target_layout(input, target):
    """nll_loss's shape rules for class-index targets (torch's nll_loss_nd, same exception
    types). Returns (x (N, C, R), target (N, R), the shape of a 'none' result)."""
    nd = input.dim()
    if nd < 1:
        raise ValueError(f"Expected 1 or more dimensions (got {nd})")
    if nd != 1 and (target.dim() == 0 or input.shape[0] != target.shape[0]):
        tb = target.shape[0] if target.dim() else 0
        raise ValueError(f"Expected input batch_size ({input.shape[0]}) to match target batch_size ({tb}).")
    if nd <= 2:
        if target.dim() > 1:
            raise RuntimeError(
                f"0D or 1D target tensor expected, multi-target not supported (got target of "
                f"shape {list(target.shape)})"
            )
        if nd == 1 and target.dim() == 1 and target.shape[0] != 1:
            raise ValueError(
                f"For 1D input, 1D target must have size 1, but got target size: {target.shape[0]}"
            )
    elif nd == 4:
        if target.dim() != 3:
            raise RuntimeError(
                "only batches of spatial targets supported (3D tensors) but got targets of "
                f"dimension: {target.dim()}"
            )
        if tuple(target.shape[1:]) != tuple(input.shape[2:]):
            raise RuntimeError(
                f"size mismatch (got input: {list(input.shape)} , target: {list(target.shape)}"
            )
    elif tuple(target.shape[1:]) != tuple(input.shape[2:]):
        raise RuntimeError(
            f"Expected target size {[input.shape[0], *input.shape[2:]]}, got {list(target.shape)}"
        )
    if target.dtype not in (torch.int64, torch.uint8):
        raise RuntimeError(f"expected target dtype to be Long or Byte, but got {_name(target.dtype)}")
    if nd == 1:
        return input.reshape(1, input.shape[0], 1), target.reshape(1, 1), ()
    N, C, R = input.shape[0], input.shape[1], math.prod(input.shape[2:])
    return input.reshape(N, C, R), target.reshape(N, R), tuple(target.shape)


def _check_index_values(target, C: int, ignore_index: int) -> None:
    """Every class index is in [0, C) or is ignore_index.

    Eager on the CPU: an IndexError naming the first bad value, as torch's CPU kernels raise.
    On a GPU, and under torch.compile: a device-side assert, as torch's CUDA kernels make. It
    costs no host sync and keeps the call traceable with fullgraph=True; a failure poisons the
    CUDA context and surfaces as a RuntimeError at the next synchronisation (torch's "device-
    side assert triggered" behaves the same). The kernels read nothing at such an index."""
    if not target.numel():
        return
    while functorch_active() and torch._C._functorch.is_functorch_wrapped_tensor(target):
        # under torch.func's transforms, which cannot branch on a wrapped tensor's value: the
        # values underneath (a vmapped target is one tensor of every sample's classes)
        target = torch._C._functorch.get_unwrapped(target)
    bad = (target != ignore_index) & ((target < 0) | (target >= C))
    if target.device.type == "cpu" and not torch.compiler.is_compiling():
        if bool(bad.any()):
            raise IndexError(f"Target {target[bad][0].item()} is out of bounds.")
        return
    torch._assert_async(
        ~bad.any(),
        f"Target out of bounds: a class index outside [0, {C}) that is not ignore_index ({ignore_index})",
    )


def _check_index_weight(op, input, weight, C):
    """-> the weight, detached: with class-index targets torch's weight is not differentiable,
    which forward-mode AD shows too (a tangent on it is ignored)."""
    _check_weight(weight, C)
    if weight is None:
        return None
    if weight.dtype != input.dtype:
        raise RuntimeError(
            f"{op}: expected scalar type {_name(input.dtype)} but found {_name(weight.dtype)} "
            "(weight must have the input's dtype)"
        )
    if weight.requires_grad and torch.is_grad_enabled():
        raise RuntimeError(
            "The function 'nll_loss_forward' is not differentiable with respect to argument "
            "'weight'. This input cannot have requires_grad True."
        )
    return weight.detach()


def _mean(loss_rows, denom):
    """'mean': the rows' sum over ``denom``. With no rows (denom 0, probability targets) NaN
    made as torch makes it, a fill of the sum: its tangent and the gradient that reaches the
    incoming one are then 0 as torch's, not 0 / 0."""
    if isinstance(denom, int) and denom == 0:
        return loss_rows.sum().fill_(float("nan"))
    return loss_rows.sum() / denom


# ---------------------------------------------------------------------------------------------
# cross_entropy


@overridable
def cross_entropy(
    input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
    reduction="mean", label_smoothing=0.0,
):
    """Cross-entropy of logits ``input`` ((C,), (N, C) or (N, C, d1, ...)) against class
    indices or class probabilities, as ``torch.nn.functional.cross_entropy``: log_softmax
    and the loss fused in one kernel."""
    _check_tensors("cross_entropy", input=input, target=target, weight=weight)
    ignore_index = int_arg("cross_entropy", "ignore_index", ignore_index, symint=True)
    reduction = _reduction(size_average, reduce, reduction)
    float_arg("cross_entropy", "label_smoothing", label_smoothing, 6)
    if label_smoothing > 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    eps = float(label_smoothing) if label_smoothing > 0 else 0.0  # torch ignores eps <= 0
    if autocast_fp32(input):  # cross_entropy runs in fp32 under autocast
        input, weight = _to_fp32(input), _to_fp32(weight)
    if input.dtype not in FLOATS:
        raise NotImplementedError(f'"cross_entropy" not implemented for {_name(input.dtype)} input')

    if input.shape == target.shape:  # class probabilities (torch's rule: same shape)
        if not target.is_floating_point():
            raise RuntimeError(
                "Expected floating point type for target with class probabilities, got "
                f"{_name(target.dtype)}"
            )
        if input.dim() == 0:
            raise IndexError("Dimension specified as 1 but tensor has no dimensions")
        if ignore_index >= 0:
            raise RuntimeError(
                f"ignore_index is not supported for floating point target (got {ignore_index})"
            )
        C = input.shape[1] if input.dim() > 1 else input.shape[0]
        _check_weight(weight, C, "cross_entropy: ")
        if C == 0:
            return _no_classes(input, target, weight, ignore_index, reduction, label_smoothing)
        out_dtype = torch.promote_types(input.dtype, target.dtype)
        if weight is not None:
            out_dtype = torch.promote_types(out_dtype, weight.dtype)
        N = input.shape[0] if input.dim() > 1 else 1
        R = math.prod(input.shape[2:])
        x3, t3 = input.reshape(N, C, R), target.reshape(N, C, R)
        out_shape = (input.shape[0], *input.shape[2:]) if input.dim() > 1 else ()
        with autocast_off(input):
            loss_rows = _ce_op(x3, t3, weight, ignore_index, eps)[0]
        denom = input.numel() // C if input.numel() else 0  # rows; an empty input gives NaN
    else:
        if input.dim() == 0:  # torch's log_softmax over dim 1 of it, before nll's checks
            raise IndexError(
                "Dimension out of range (expected to be in range of [-1, 0], but got 1): "
                f"cross_entropy of a 0-d input against a target of shape {tuple(target.shape)}"
            )
        x3, t2, out_shape = _index_target_layout(input, target)
        C = x3.shape[1]
        weight = _check_index_weight("cross_entropy", input, weight, C)
        if C == 0:
            return _no_classes(input, target, weight, ignore_index, reduction, label_smoothing)
        t2 = t2.long() if t2.dtype == torch.uint8 else t2
        _check_index_values(t2, C, ignore_index)
        out_dtype = input.dtype
        with autocast_off(input):
            loss_rows = _ce_op(x3, t2, weight, ignore_index, eps)[0]
        denom = _index_denominator(t2, weight, ignore_index, loss_rows.dtype) if reduction == "mean" else None

    if reduction == "none":
        return loss_rows.reshape(out_shape).to(out_dtype)
    if reduction == "sum":
        return loss_rows.sum().to(out_dtype)
    return _mean(loss_rows, denom).to(out_dtype)


def _no_classes(input, target, weight, ignore_index, reduction, label_smoothing=None):
    """An input of no classes (checked as any other): torch's own loss, which computes nothing
    and returns 0 or NaN where every target is ignored or a probability, and raises naming
    the first class index otherwise (the kernels would divide by C, or gather from nothing)."""
    if label_smoothing is None:
        return _torch_F.nll_loss(input, target, weight, ignore_index=ignore_index, reduction=reduction)
    return _torch_F.cross_entropy(input, target, weight, ignore_index=ignore_index, reduction=reduction,
                                  label_smoothing=label_smoothing)


def _index_denominator(target, weight, ignore_index, dtype):
    """'mean' over class-index targets divides by the summed weight of the non-ignored rows
    (their count without weights), also with label smoothing, as torch."""
    valid = target != ignore_index
    if weight is None:
        return valid.sum().to(dtype)
    return torch.where(valid, weight.to(dtype)[target.masked_fill(~valid, 0)], 0).sum()


# ---------------------------------------------------------------------------------------------
# nll_loss


@overridable
def nll_loss(
    input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
    reduction="mean",
):
    """Negative log-likelihood of log-probabilities ``input`` ((C,), (N, C) or
    (N, C, d1, ...)) at class indices ``target``, as ``torch.nn.functional.nll_loss``."""
    _check_tensors("nll_loss", input=input, target=target, weight=weight)
    ignore_index = int_arg("nll_loss", "ignore_index", ignore_index, symint=True)
    reduction = _reduction(size_average, reduce, reduction)
    if autocast_fp32(input):  # nll_loss runs in fp32 under autocast
        input, weight = _to_fp32(input), _to_fp32(weight)
    x3, t2, out_shape = _index_target_layout(input, target)
    if input.dtype not in FLOATS:
        raise NotImplementedError(f'"nll_loss" not implemented for {_name(input.dtype)} input')
    C = x3.shape[1]
    weight = _check_index_weight("nll_loss", input, weight, C)
    if C == 0:
        return _no_classes(input, target, weight, ignore_index, reduction)
    t2 = t2.long() if t2.dtype == torch.uint8 else t2
    _check_index_values(t2, C, ignore_index)
    with autocast_off(input):
        loss_rows = _nll_op(x3, t2, weight, ignore_index)
    if reduction == "none":
        return loss_rows.reshape(out_shape).to(input.dtype)
    if reduction == "sum":
        return loss_rows.sum().to(input.dtype)
    denom = _index_denominator(t2, weight, ignore_index, loss_rows.dtype)
    return _mean(loss_rows, denom).to(input.dtype)


# ---------------------------------------------------------------------------------------------
# mse_loss


@overridable
def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Mean squared error, optionally weighted per element, as ``torch.nn.functional.mse_loss``
    (broadcasting with torch's warning; weighted 'mean' divides by the sum of the weights)."""
    _check_tensors("mse_loss", input=input, target=target, weight=weight)
    if target.size() != input.size():
        warn(
            f"Using a target size ({target.size()}) that is different to the input size "
            f"({input.size()}). This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.",
            stacklevel=2,
        )
    x, t = torch.broadcast_tensors(input, target)  # torch's RuntimeError when they do not
    if weight is not None and weight.size() != input.size():
        raise ValueError(
            f"Weights and input must have the same size (weight {tuple(weight.shape)}, input "
            f"{tuple(input.shape)})."
        )
    reduction = _reduction(size_average, reduce, reduction)  # (after the shapes, as torch's)
    # autocast: mse_loss is on the fp32 list; torch's weighted variant is plain arithmetic,
    # which CPU autocast leaves alone and CUDA autocast runs in fp32 (pow)
    if autocast_fp32(input) and (weight is None or input.device.type != "cpu"):
        x, t = _to_fp32(x), _to_fp32(t)
    # broadcast to one shape, so result_type is plain promotion (which torch.compile traces)
    dtype = torch.promote_types(x.dtype, t.dtype)
    if weight is not None:
        dtype = torch.promote_types(dtype, weight.dtype)
    if dtype not in FLOATS:
        raise NotImplementedError(f'"mse_loss" not implemented for {_name(dtype)}')
    x, t = x.to(dtype), t.to(dtype)
    w = weight.to(dtype).expand(x.shape) if weight is not None else None
    with autocast_off(input):
        out = _mse_op(x, t, w, reduction != "none")
    if reduction == "mean":
        # unweighted: over every element; weighted: over the weights (of input's shape)
        if x.numel() == 0 and weight is None:
            # torch's NaN, as a mean of nothing: the gradient that reaches the incoming one is
            # then a sum of nothing (0, as torch's), not 0 / 0
            out = out.expand(x.shape).mean()
        else:
            out = out / (x.numel() if weight is None else weight.to(out.dtype).sum())
    return out.to(dtype)
