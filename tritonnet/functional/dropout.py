"""dropout, dropout2d with torch.nn.functional's signatures, checks and edge cases.

Randomness: each call that drops anything draws one 63-bit seed from torch's default CPU
generator (whatever the input's device; under CUDA graph capture from the input's device's
generator, so that each replay draws anew), and the primitives turn (seed, p) into the mask,
so ``torch.manual_seed`` makes a run repeatable. The masks are not torch's own bits (torch draws
from its Philox/MT state directly); the Triton and reference backends also differ bit-wise
(see kernels/dropout.py and tritonnet/reference/dropout.py).

Edge cases as torch: ``training=False``, ``p == 0`` or an empty input return ``input`` itself;
``p == 1`` returns ``input * 0`` (so a NaN or Inf input gives NaN); p outside [0, 1] raises
ValueError, a NaN p RuntimeError.
"""

from __future__ import annotations

import torch

from ..ops.dropout import dropout as _dropout_op
from ..ops.dropout import dropout_inplace as _dropout_inplace
from ._utils import COMPLEX, bool_arg, check_float, check_tensors, float_arg, overridable, warn

__all__ = ["dropout", "dropout2d"]


def _check_p(p) -> None:
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


def _seed(input) -> torch.Tensor:
    """A 0-d int64 CPU tensor from torch's default (CPU) generator, whatever
    torch.set_default_device says (no .item(): compile-friendly). Under CUDA graph capture
    the draw is on the input's device instead, from its generator, which graph capture
    supports: each replay of the graph draws a new seed (a CPU draw would be frozen into the
    graph, the same mask at every replay). Not while torch.compile traces (it would not
    trace the capture check): compiled code keeps the CPU draw, as before."""
    if input.is_cuda and not torch.compiler.is_compiling() and torch.cuda.is_current_stream_capturing():
        return torch.randint(2**63 - 1, (), dtype=torch.int64, device=input.device)
    return torch.randint(2**63 - 1, (), dtype=torch.int64, device="cpu")


def _apply(name, input, p, training, inplace, feature):
    float_arg(name, "p", p, 2)  # torch's parser, after the Python check of p
    bool_arg(name, "training", training, 3)
    if p != p:  # NaN passes the Python check in torch too and fails ATen's, as a RuntimeError
        raise RuntimeError(f"dropout probability has to be between 0 and 1, but got {p}")
    if p == 0 or not training or input.numel() == 0:
        return input
    if feature and input.dim() < 2 and p != 1:
        raise RuntimeError(
            "Feature dropout requires at least 2 dimensions in the input, got shape "
            f"{tuple(input.shape)}"
        )
    if p == 1:
        # every element is zeroed: no draw, and no channel structure needed (torch accepts a
        # 1-D input to dropout2d here); x * 0, so NaN and Inf give NaN
        if not input.is_floating_point():
            return input.mul_(0) if inplace else input * 0
        seed, feature = torch.zeros((), dtype=torch.int64, device="cpu"), False
    else:
        check_float(f"{name}(): input", input, COMPLEX)  # torch's: NotImplementedError for complex
        seed = _seed(input)
    p = float(p)
    if not inplace:
        return _dropout_op(input, p, seed, feature)
    return _dropout_inplace(input, p, seed, feature)


@overridable
def dropout(input, p: float = 0.5, training: bool = True, inplace: bool = False):
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p), as
    ``torch.nn.functional.dropout``."""
    check_tensors("dropout", input=input)
    _check_p(p)
    return _apply("dropout", input, p, training, inplace, False)


@overridable
def dropout2d(input, p: float = 0.5, training: bool = True, inplace: bool = False):
    """Zero whole channels ``input[n, c]`` with probability ``p`` and scale the rest by
    1/(1-p), as ``torch.nn.functional.dropout2d`` (a 3-D input is (N, C, L), with torch's
    warning; other than 3-D or 4-D inputs are deprecated there and warn the same way here)."""
    check_tensors("dropout2d", input=input)
    _check_p(p)
    dim = input.dim()
    if dim not in (3, 4):
        warn(
            f"dropout2d: Received a {dim}-D input to dropout2d, which is deprecated and will "
            "result in an error in a future release. To retain the behavior and silence this "
            "warning, please use dropout instead. Note that dropout2d exists to provide "
            "channel-wise dropout on inputs with 2 spatial dimensions, a channel dimension, and "
            "an optional batch dimension (i.e. 3D or 4D inputs).",
            stacklevel=2,
        )
    if dim == 3:
        # torch's historical reading of a 3-D input, kept for compatibility
        warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D "
            "dropout behavior is desired - input is interpreted as shape (N, C, L), where C is "
            "the channel dim. This behavior will change in a future release to interpret the "
            "input as one without a batch dimension, i.e. shape (C, H, W). To maintain the 1D "
            "channel-wise dropout behavior, please switch to using dropout1d instead.",
            stacklevel=2,
        )
    return _apply("dropout2d", input, p, training, inplace, True)
