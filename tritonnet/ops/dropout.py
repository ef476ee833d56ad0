"""dropout / dropout2d: forward, in-place forward and backward as custom ops.

``feature`` selects dropout2d (one draw per (n, c) channel) over dropout (one per element).
Derivation (s = 1/(1-p), m the 0/1 keep mask drawn from ``seed``):
  y  = x * m * s                       (dropout_forward / dropout2d_forward)
  dx = dy * m * s                      (dropout_backward: the same map applied to dy)
No mask is saved: the backward regenerates it from (seed, p), so a dropout layer keeps no
activation-sized tensor for autograd (torch saves a bool mask). The mask of a seed depends on
the shape only, not on the layout, so dy may arrive in any layout. The backward is linear in dy
with the same mask, so its own backward is itself (double backward works).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..backend import backend_for
from ._primitive import front, linear_jvp, primitive


def _forward(prims, feature):
    return prims.dropout2d_forward if feature else prims.dropout_forward


def _backward_prim(prims, feature):
    return prims.dropout2d_backward if feature else prims.dropout_backward


# The seed travels as a 0-d int64 tensor, read inside the op: torch.compile then traces the
# draw (torch.randint) and the op without a graph break on .item(). A CPU seed becomes a host
# int; one on the device (drawn there under CUDA graph capture, functional/dropout.py) goes
# to the kernel as a pointer, read on the device: no host sync, and each replay's draw.


def _seed(seed: Tensor):
    return int(seed) if seed.device.type == "cpu" else seed


@primitive
def dropout(input: Tensor, p: float, seed: Tensor, feature: bool) -> Tensor:
    return _forward(backend_for(input), feature)(input, p, _seed(seed))


@dropout.register_fake
def _(input, p, seed, feature):
    return torch.empty_like(input)


@torch.library.custom_op("tritonnet::dropout_", mutates_args=("input",))
def dropout_(input: Tensor, p: float, seed: Tensor, feature: bool) -> None:
    """In place, without autograd of its own (dropout_inplace below adds it)."""
    _forward(backend_for(input), feature)(input, p, _seed(seed), out=input)


@dropout_.register_fake
def _(input, p, seed, feature):
    return None


@primitive
def dropout_backward(grad_output: Tensor, p: float, seed: Tensor, feature: bool) -> Tensor:
    return _backward_prim(backend_for(grad_output), feature)(grad_output, p, _seed(seed))


@dropout_backward.register_fake
def _(grad_output, p, seed, feature):
    return torch.empty_like(grad_output)


def _setup(ctx, inputs, output):
    _, ctx.p, seed, ctx.feature = inputs
    ctx.save_for_backward(seed)


def _backward(ctx, grad):
    (seed,) = ctx.saved_tensors
    return dropout_backward(grad, ctx.p, seed, ctx.feature), None, None, None


dropout.register_autograd(_backward, setup_context=_setup)
dropout_backward.register_autograd(_backward, setup_context=_setup)
dropout.register_jvp(linear_jvp(dropout))  # the same mask on the tangent
dropout_backward.register_jvp(linear_jvp(dropout_backward))


# torch.vmap. randomness='different' batches the seed (one draw per sample): the samples fold
# into one launch under the first sample's seed, each at its own Philox counters (sample b's
# elements follow sample b-1's), so their masks are independent; the backward folds the same
# way and regenerates the same masks. randomness='same' leaves the seed unbatched: every
# sample must take the one mask, so each runs alone with that seed. Feature dropout's
# (N, C, *) channels fold as (B*N, C, *).


def _vmap_rule(prim):
    def rule(info, in_dims, input, p, seed, feature):
        if in_dims[2] is None:
            return prim.per_sample(info, in_dims, input, p, seed, feature)
        B = info.batch_size
        x = front(input, in_dims[0], B)
        first = front(seed, in_dims[2], B)[0]
        if not feature:
            return prim.op(x, p, first, feature), 0
        return prim.op(x.flatten(0, 1), p, first, feature).unflatten(0, (B, x.shape[1])), 0

    return rule


dropout.register_vmap(_vmap_rule(dropout))
dropout_backward.register_vmap(_vmap_rule(dropout_backward))


# dropout of ``input`` in place, differentiable, as torch's ``dropout(..., inplace=True)``: the
# backward regenerates the mask from the seed, so nothing activation-sized is saved
dropout_inplace = dropout.inplace_variant(dropout_)
