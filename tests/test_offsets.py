"""Offsets past 2**31 on the CPU: every kernel, with operands whose elements lie more than 2**31
elements apart, under the interpreter's bounds check, against the reference.

Such an operand here is a strided view into a buffer of over 2**31 elements that is never
filled: a large ``torch.empty`` is a lazily committed mapping, so only the pages that hold the
view's few elements are touched, and a case costs what its small shape costs. The
interpreter computes int32 offsets in int32 and wraps as a GPU does; a wrapped offset lands
outside every argument and the bounds check (tests/helpers.py) names it. So each case is the
GPU tests' > 2**31-element case (test_conv.py, test_im2col.py, test_dropout.py) for the
addressing of the inputs, at a few milliseconds. What it cannot reach is an *output* past
2**31 elements: outputs are allocated dense by the launchers, and one that large is a grid
of 2**31 elements to interpret.

Where a kernel family switches between int32 and int64 offsets (``_common.index64``), each
case also runs with the switch forced to int32 and must then be caught: that shows the far
operand reached a kernel, and that the switch is what keeps it right."""

import contextlib
import importlib
import math

import pytest
import torch

from tests.helpers import HAS_CUDA, OutOfBounds
from tritonnet import reference

pytestmark = pytest.mark.skipif(HAS_CUDA, reason="interpreter: the bounds check and lazy buffers")

FAR = 2**31


def far(t: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """``t``'s values in a view whose outermost dim of size >= 3 has a stride of at least
    2**31 / (size - 1) elements, so that its last element lies 2**31 elements past its first;
    the inner dims dense (channels_last for a 4-D tensor when asked). Size 3 or more keeps
    that stride an int32 (Triton passes an int of 2**31 or more as int64): the product of an
    index and the stride is what must not wrap, as in a dense tensor that large."""
    d = next(i for i, n in enumerate(t.shape) if n >= 3)
    inner = t.shape[d + 1:]
    if channels_last:
        assert t.dim() == 4 and d == 0, t.shape
        C, H, W = inner
        inner_strides = [1, W * C, C]
    else:
        inner_strides = [math.prod(inner[i + 1:]) for i in range(len(inner))]
    span = math.prod(inner)
    step = -(-FAR // (t.shape[d] - 1))
    step = -(-max(step, span) // 16) * 16  # keep every slab 64-byte aligned
    assert step < FAR, t.shape
    strides = [step * t.shape[d]] * d + [step] + inner_strides
    try:
        buf = torch.empty((t.shape[d] - 1) * step + span, dtype=t.dtype)
    except RuntimeError as e:  # a machine that refuses to reserve the address space
        pytest.skip(f"cannot reserve {FAR * t.element_size() / 2**30:.0f} GiB of address space: {e}")
    view = buf.as_strided(t.shape, strides)
    view.copy_(t)
    assert view.storage_offset() == 0 and view.untyped_storage().nbytes() >= FAR * t.element_size()
    return view


@contextlib.contextmanager
def launched_storages():
    """The set of storage addresses of every tensor handed to a kernel launch within."""
    from triton.runtime import interpreter as ti

    seen = set()
    call = ti.GridExecutor.__call__

    def spy(self, *args, **kwargs):
        for a in list(args) + list(kwargs.values()):
            if isinstance(a, torch.Tensor):
                seen.add(a.untyped_storage().data_ptr())
        return call(self, *args, **kwargs)

    ti.GridExecutor.__call__ = spy
    try:
        yield seen
    finally:
        ti.GridExecutor.__call__ = call


def _r(*shape):
    return torch.randn(shape)


def _idx(n, *shape):
    return torch.randint(0, n, shape)


CONV = ((1, 1), (1, 1), (1, 1), 1)
CONV_S2 = ((2, 1), (0, 1), (1, 2), 1)
CONV_G = ((1, 1), (1, 1), (1, 1), 2)
POOL = ((3, 3), (2, 2), (1, 1), (1, 1))  # kernel, stride, padding, dilation: overlapping windows
POOL_IN = (3, 3, 7, 6)


def _maxpool_bwd_args():
    x = _r(*POOL_IN)
    y, i = reference.max_pool2d_forward(x, *POOL, (4, 3), False, True)
    return [_r(*y.shape), i]


def _adaptive_max_bwd_args():
    y, i = reference.adaptive_max_pool2d_forward(_r(*POOL_IN), (3, 4), False, True)
    return [_r(*y.shape), i]


def _ce_bwd_args():
    x, t = _r(3, 5, 4), _idx(5, 3, 4)
    _, lse, wsum = reference.cross_entropy_forward(x, t, None, -100, 0.1)
    return [_r(3, 4), x, t, lse, wsum]


# id, the call (kernels or reference as m, then the operands), the operands, which operands
# go far, whether they go far in channels_last, the kernel modules with an int32/int64 switch
CASES = [
    ("conv2d_forward", lambda m, x, w, b: m.conv2d_forward(x, w, b, *CONV),
     lambda: [_r(3, 5, 6, 7), _r(3, 5, 3, 3), _r(3)], (0, 1), False, ["conv"]),
    ("conv2d_forward-cl-s2", lambda m, x, w: m.conv2d_forward(x, w, None, *CONV_S2),
     lambda: [_r(3, 6, 7, 5), _r(3, 6, 2, 3)], (0, 1), True, ["conv"]),
    ("conv2d_forward-groups", lambda m, x, w: m.conv2d_forward(x, w, None, *CONV_G),
     lambda: [_r(3, 6, 5, 5), _r(4, 3, 3, 3)], (0,), False, ["conv"]),
    ("conv2d_forward-rgb", lambda m, x, w: m.conv2d_forward(x, w, None, *CONV),
     lambda: [_r(3, 3, 6, 5), _r(4, 3, 3, 3)], (0,), False, ["conv"]),  # the 3-channel pad
    ("conv2d_input_grad", lambda m, g, w: m.conv2d_input_grad(g, w, (3, 5, 6, 7), *CONV),
     lambda: [_r(3, 3, 6, 7), _r(3, 5, 3, 3)], (0, 1), False, ["conv_backward"]),
    ("conv2d_input_grad-cl-s2", lambda m, g, w: m.conv2d_input_grad(g, w, (3, 6, 7, 5), *CONV_S2),
     lambda: [_r(3, 3, 3, 3), _r(3, 6, 2, 3)], (0,), True, ["conv_backward"]),
    ("conv2d_weight_grad", lambda m, g, x: m.conv2d_weight_grad(g, x, (3, 5, 3, 3), *CONV),
     lambda: [_r(3, 3, 6, 7), _r(3, 5, 6, 7)], (0, 1), False, ["conv_backward"]),
    ("conv2d_weight_grad-cl-s2", lambda m, g, x: m.conv2d_weight_grad(g, x, (3, 6, 2, 3), *CONV_S2),
     lambda: [_r(3, 3, 3, 3), _r(3, 6, 7, 5)], (0, 1), True, ["conv_backward"]),
    ("max_pool2d_forward", lambda m, x: m.max_pool2d_forward(x, *POOL, (4, 3), False, True),
     lambda: [_r(*POOL_IN)], (0,), False, ["pool"]),
    ("max_pool2d_forward-cl", lambda m, x: m.max_pool2d_forward(x, *POOL, (4, 3), True, True),
     lambda: [_r(*POOL_IN)], (0,), True, ["pool"]),
    ("max_pool2d_backward", lambda m, g, i: m.max_pool2d_backward(g, i, POOL_IN, *POOL, False),
     _maxpool_bwd_args, (0, 1), False, ["pool_backward"]),
    ("avg_pool2d_forward", lambda m, x: m.avg_pool2d_forward(x, *POOL[:3], (4, 3), False, None, False),
     lambda: [_r(*POOL_IN)], (0,), False, ["pool"]),
    ("avg_pool2d_backward-cl",
     lambda m, g: m.avg_pool2d_backward(g, POOL_IN, *POOL[:3], True, None, True),
     lambda: [_r(3, 3, 4, 3)], (0,), True, ["pool_backward"]),
    ("adaptive_max_pool2d_forward", lambda m, x: m.adaptive_max_pool2d_forward(x, (3, 4), False, True),
     lambda: [_r(*POOL_IN)], (0,), False, ["pool"]),
    ("adaptive_max_pool2d_backward",
     lambda m, g, i: m.adaptive_max_pool2d_backward(g, i, POOL_IN, False),
     _adaptive_max_bwd_args, (0, 1), False, ["pool_backward"]),
    ("adaptive_avg_pool2d_forward-cl", lambda m, x: m.adaptive_avg_pool2d_forward(x, (3, 4), True),
     lambda: [_r(*POOL_IN)], (0,), True, ["pool"]),
    ("adaptive_avg_pool2d_backward", lambda m, g: m.adaptive_avg_pool2d_backward(g, POOL_IN, False),
     lambda: [_r(3, 3, 3, 4)], (0,), False, ["pool_backward"]),
    ("upsample_nearest_forward",
     lambda m, x: m.upsample_nearest_forward(x, (5, 9), (0.0, 0.0), False, False),
     lambda: [_r(3, 3, 4, 6)], (0,), False, ["upsample"]),
    ("upsample_nearest_backward-cl",
     lambda m, g: m.upsample_nearest_backward(g, (3, 3, 4, 6), (0.0, 0.0), True, True),
     lambda: [_r(3, 3, 5, 9)], (0,), True, ["upsample"]),
    ("unfold_forward", lambda m, x: m.unfold_forward(x, (2, 3), (1, 2), (1, 0), (2, 1)),
     lambda: [_r(3, 3, 5, 7)], (0,), False, []),
    ("fold_forward", lambda m, c: m.fold_forward(c, (5, 7), (2, 3), (1, 2), (1, 0), (2, 1)),
     lambda: [_r(3, 18, 9)], (0,), False, []),
    ("softmax_forward", lambda m, x: m.softmax_forward(x, False), lambda: [_r(3, 5, 4)], (0,), False, []),
    ("softmax_backward", lambda m, g, y: m.softmax_backward(g, y, True),
     lambda: [_r(3, 5, 4), _r(3, 5, 4)], (0, 1), False, []),
    ("cross_entropy_forward", lambda m, x, t: m.cross_entropy_forward(x, t, None, -100, 0.1),
     lambda: [_r(3, 5, 4), _idx(5, 3, 4)], (0, 1), False, []),
    ("cross_entropy_backward",
     lambda m, g, x, t, lse, ws: m.cross_entropy_backward(g, x, t, None, lse, ws, -100, 0.1),
     _ce_bwd_args, (0, 1, 2), False, []),
    ("nll_loss_forward", lambda m, x, t: m.nll_loss_forward(x, t, None, -100),
     lambda: [_r(3, 5, 4), _idx(5, 3, 4)], (0, 1), False, []),
    ("linear_forward", lambda m, x, w, b: m.linear_forward(x, w, b, "none"),
     lambda: [_r(3, 6), _r(5, 6), _r(5)], (0, 1), False, []),
    ("linear_input_grad", lambda m, g, w: m.linear_input_grad(g, w),
     lambda: [_r(3, 5), _r(5, 6)], (0, 1), False, []),
    ("linear_weight_grad", lambda m, g, x: m.linear_weight_grad(g, x),
     lambda: [_r(3, 5), _r(3, 6)], (0, 1), False, []),
]


def _flat(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _compare(got, ref, what):
    for a, b in zip(_flat(got), _flat(ref), strict=True):
        if a is None or b is None:
            assert a is None and b is None, what
            continue
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_operands_past_2_31_elements(case, monkeypatch):
    name, call, make, far_args, cl, switched = case
    kernels = importlib.import_module("tritonnet.kernels")
    args = make()
    ref = call(reference, *args)
    far_args = [far(a, cl and a.dim() == 4) if i in far_args else a for i, a in enumerate(args)]
    far_ptrs = {a.untyped_storage().data_ptr() for a in far_args if a.untyped_storage().nbytes() >= FAR}
    with launched_storages() as seen:
        got = call(kernels, *far_args)
    assert far_ptrs <= seen, f"{name}: a far operand was copied before any kernel saw it"
    _compare(got, ref, name)
    if switched:
        for mod in switched:
            monkeypatch.setattr(importlib.import_module(f"tritonnet.kernels.{mod}"), "index64",
                                lambda *t: False)
        with pytest.raises(Exception, match="outside every argument tensor") as info:
            call(kernels, *far_args)
        assert isinstance(info.value, OutOfBounds) or "OutOfBounds" in repr(info.value)


def test_dropout_far_operands():
    """dropout's counter is the logical index: a far input or gradient draws the same mask as a
    dense one (no reference twin of Triton's Philox stream to compare against here)."""
    kernels = importlib.import_module("tritonnet.kernels")
    p, seed = 0.4, 2**33 + 5
    for fwd, bwd, shape in [(kernels.dropout_forward, kernels.dropout_backward, (3, 5, 4)),
                            (kernels.dropout2d_forward, kernels.dropout2d_backward, (3, 4, 2, 3))]:
        x = _r(*shape)
        fx = far(x)
        with launched_storages() as seen:
            y = fwd(fx, p, seed)
        dense = fwd(x, p, seed)
        assert fx.untyped_storage().data_ptr() in seen
        torch.testing.assert_close(y, dense, rtol=0, atol=0)
        torch.testing.assert_close(bwd(fx, p, seed), bwd(x, p, seed), rtol=0, atol=0)
