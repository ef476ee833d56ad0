"""conv2d / conv1d / conv_transpose2d / conv_transpose1d: reference vs torch, gradcheck,
Triton kernels vs reference, modules, errors."""

import functools
import importlib
import math
import os

import pytest
import torch
import torch.nn.functional as TF

import tritonnet
import tritonnet.functional as F
from tests.helpers import DTYPES, FULL, KERNEL_DEVICE, assert_close_rel, assert_like_torch, tf32_off
from tritonnet import reference

# (N, C_in, H, W, C_out, kernel, stride, padding, dilation, groups): shapes that break kernels
CASES = [
    (2, 3, 7, 9, 5, 3, 1, 1, 1, 1),  # 3x3, odd non-square input
    (1, 4, 8, 8, 6, 3, 2, 1, 1, 2),  # batch 1, stride 2, groups 2
    (2, 4, 6, 7, 4, 3, 1, 2, 2, 4),  # depthwise, dilation 2
    (1, 3, 5, 5, 4, 1, 1, 0, 1, 1),  # 1x1
    (2, 2, 9, 9, 3, 5, 2, 2, 1, 1),  # 5x5 stride 2
    (1, 3, 11, 10, 2, 7, 2, 3, 1, 1),  # 7x7 stride 2 (the ResNet stem)
    (3, 17, 5, 6, 19, 3, 1, 1, 1, 1),  # channels not a multiple of any block, above one block
    (1, 2, 6, 9, 3, (3, 5), (2, 1), (1, 2), (1, 2), 1),  # non-square kernel/stride/padding/dilation
]
IDS = ["3x3", "s2g2", "depthwise", "1x1", "5x5s2", "7x7s2", "C17", "nonsquare"]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _torch_grads(fn, x, w, b, g):
    xs = [t.detach().requires_grad_() if t is not None else None for t in (x, w, b)]
    y = fn(*xs)
    grads = torch.autograd.grad(y, [t for t in xs if t is not None], g)
    return y, grads


def _assert_like_torch(fn, x, w, b, g):
    """fn(F) and fn(TF) (fn takes the functional module) give the same result and gradients;
    torch's are returned."""
    ours, og = _torch_grads(fn(F), x, w, b, g)
    ref, rg = _torch_grads(fn(TF), x, w, b, g)
    torch.testing.assert_close(ours, ref)
    for a, r in zip(og, rg):
        torch.testing.assert_close(a, r)
    return ref, rg


# ---------------------------------------------------------------------------------------------
# the reference path (our autograd + reference primitives) against torch, float64


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reference_conv2d_matches_torch(case, bias):
    tritonnet.set_backend("reference")
    N, C, H, W, O, k, s, p, d, g = case
    x = torch.randn(N, C, H, W, dtype=torch.float64)
    w = torch.randn(O, C // g, *_pair(k), dtype=torch.float64)
    b = torch.randn(O, dtype=torch.float64) if bias else None
    out = TF.conv2d(x, w, b, s, p, d, g)
    gy = torch.randn_like(out)
    ours, og = _torch_grads(lambda x, w, b: F.conv2d(x, w, b, s, p, d, g), x, w, b, gy)
    ref, rg = _torch_grads(lambda x, w, b: TF.conv2d(x, w, b, s, p, d, g), x, w, b, gy)
    torch.testing.assert_close(ours, ref)
    for a, r in zip(og, rg):
        torch.testing.assert_close(a, r)


@pytest.mark.parametrize(
    "padding,kernel,dilation",
    [("same", 3, 1), ("same", 4, 1), ("same", (2, 5), (2, 1)), ("valid", 3, 1)],
    ids=["same3", "same-even", "same-nonsquare-dilated", "valid"],
)
def test_reference_padding_strings(padding, kernel, dilation):
    tritonnet.set_backend("reference")
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    w = torch.randn(4, 3, *_pair(kernel), dtype=torch.float64)
    y = TF.conv2d(x, w, None, 1, padding, dilation)
    gy = torch.randn_like(y)
    ours, og = _torch_grads(lambda x, w, b: F.conv2d(x, w, None, 1, padding, dilation), x, w, None, gy)
    ref, rg = _torch_grads(lambda x, w, b: TF.conv2d(x, w, None, 1, padding, dilation), x, w, None, gy)
    torch.testing.assert_close(ours, ref)
    for a, r in zip(og, rg):
        torch.testing.assert_close(a, r)


def test_reference_unbatched_and_channels_last():
    tritonnet.set_backend("reference")
    x = torch.randn(3, 6, 6)
    w = torch.randn(4, 3, 3, 3)
    torch.testing.assert_close(F.conv2d(x, w, padding=1), TF.conv2d(x, w, padding=1))
    xc = torch.randn(2, 3, 6, 6).to(memory_format=torch.channels_last)
    y = F.conv2d(xc, w, padding=1)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, TF.conv2d(xc, w, padding=1))


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_result_and_gradient_layouts_like_torch(backend):
    """y, x.grad and w.grad (and conv_transpose2d's) are laid out as torch lays them out for
    each pairing of NCHW and channels_last operands: channels_last when either operand is.
    A channels_last weight's .grad then comes from the kernel in its own layout, with no copy
    by autograd's accumulation (which copies a gradient whose strides differ from the
    parameter's)."""
    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    cl, nchw = torch.channels_last, torch.contiguous_format

    def run(conv, x, w):
        x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = conv(x, w)
        dx, dw = torch.autograd.grad(y, (x, w), torch.ones_like(y))  # as computed, not accumulated
        return y.stride(), dx.stride(), dw.stride()

    for xf in (nchw, cl):
        for wf in (nchw, cl):
            x = torch.randn(2, 16, 6, 6, device=dev).to(memory_format=xf)
            w = torch.randn(32, 16, 3, 3, device=dev).to(memory_format=wf)
            got = run(lambda x, w: F.conv2d(x, w, padding=1), x, w)
            assert got == run(lambda x, w: TF.conv2d(x, w, padding=1), x, w), (xf, wf)
            wt = torch.randn(16, 8, 3, 3, device=dev).to(memory_format=wf)
            got = run(lambda x, w: F.conv_transpose2d(x, w, stride=2), x, wt)
            assert got == run(lambda x, w: TF.conv_transpose2d(x, w, stride=2), x, wt), (xf, wf)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_layouts_when_the_output_gradient_comes_in_another(backend):
    """torch lays a convolution's gradients out by its input and weight alone (it copies an
    output gradient of another layout first): a channels_last result whose gradient comes back
    contiguous (through a .contiguous()), an NCHW result with a channels_last gradient. And
    conv1d makes a permuted (N, C, L) input contiguous, so its result is contiguous, not
    channels_last seen as 1-D. Size-1 dims (one output channel, N = 1 with a 1-pixel row, a
    1x1 output) leave an output gradient contiguous in both formats, its strides suggesting
    the other one: the gradients still follow input and weight. conv_transpose2d's input
    gradient, cropped where the output holds more windows than the input has pixels, is dense
    as torch's. Strides and values against torch."""
    tf32_off()
    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    cl, nchw = torch.channels_last, torch.contiguous_format

    def run(m, conv, x, w, gfmt):
        x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = conv(m, x, w)
        g = torch.randn(y.shape, device=dev)
        if callable(gfmt):
            g = gfmt(g)
        else:
            g = g.to(memory_format=gfmt) if y.dim() == 4 else g.transpose(1, 2).contiguous().transpose(1, 2)
        return (y, *torch.autograd.grad(y, (x, w), g))

    x4, x3 = torch.randn(2, 16, 6, 6, device=dev), torch.randn(2, 7, 16, device=dev).transpose(1, 2)
    w4, wt4 = torch.randn(8, 16, 3, 3, device=dev), torch.randn(16, 8, 3, 3, device=dev)
    cases = [
        (lambda m, x, w: m.conv2d(x, w, padding=1), x4.to(memory_format=cl), w4, nchw),
        (lambda m, x, w: m.conv2d(x, w, padding=1), x4, w4, cl),
        (lambda m, x, w: m.conv2d(x, w, padding=1), x4, w4.to(memory_format=cl), nchw),
        (lambda m, x, w: m.conv_transpose2d(x, w, stride=2), x4.to(memory_format=cl), wt4, nchw),
        (lambda m, x, w: m.conv_transpose2d(x, w, stride=2), x4, wt4, cl),
        (lambda m, x, w: m.conv1d(x, w, padding=1), x3, torch.randn(8, 16, 3, device=dev), None),
        (lambda m, x, w: m.conv_transpose1d(x, w, stride=2), x3, torch.randn(16, 8, 3, device=dev), None),
        # size-1 dims
        (lambda m, x, w: m.conv2d(x, w), x4.to(memory_format=cl), torch.randn(1, 16, 3, 3, device=dev), nchw),
        (lambda m, x, w: m.conv2d(x, w, stride=2, padding=(0, 1)), x4[:1, :, :3, :2],
         torch.randn(8, 16, 2, 3, device=dev).to(memory_format=cl), nchw),
        (lambda m, x, w: m.conv2d(x, w), x4, torch.randn(8, 16, 6, 6, device=dev),
         lambda g: torch.empty_like(g, memory_format=cl).copy_(g)),
        (lambda m, x, w: m.conv_transpose2d(x, w, dilation=2, output_padding=1), x4, wt4, nchw),
        # a (2, 1, 1, 1) output: no strides of it suggest channels_last, the weight's does
        (lambda m, x, w: m.conv2d(x, w, padding="same", dilation=(3, 1)), x4[:, :, :1, :1].contiguous(),
         torch.randn(1, 16, 3, 1, device=dev).to(memory_format=cl), nchw),
    ]
    for i, (conv, x, w, gfmt) in enumerate(cases):
        torch.manual_seed(i)
        ours = run(F, conv, x, w, gfmt)
        torch.manual_seed(i)
        theirs = run(TF, conv, x, w, gfmt)
        for what, a, b in zip(("y", "dx", "dw"), ours, theirs):
            assert a.stride() == b.stride(), (i, what, a.stride(), b.stride())
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=f"case {i} {what}")  # summation order


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_strided_operands_like_torch(backend):
    """Non-contiguous operands a user can hand in: a bias slice (stride 2: the epilogue once
    read it as dense, giving wrong values), a weight slice and a transposed weight, an expanded
    input; values and every gradient against torch."""
    tf32_off()
    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    x, r = torch.randn(2, 4, 6, 7, device=dev), torch.randn
    cases = [
        (lambda f, x, w, b: f.conv2d(x, w, b[::2], padding=1), x, r(3, 4, 3, 3), r(6)),
        (lambda f, x, w, b: f.conv2d(x, w[::2], b, stride=2), x, r(6, 4, 3, 3), r(3)),
        (lambda f, x, w, b: f.conv2d(x, w.transpose(2, 3), b, padding=1), x, r(3, 4, 3, 3), r(3)),
        (lambda f, x, w, b: f.conv2d(x.expand(3, 4, 6, 7), w, b), x[:1], r(3, 4, 3, 3), r(3)),
        (lambda f, x, w, b: f.conv1d(x[:, :, 0], w, b[1::2]), x, r(3, 4, 3), r(6)),
        (lambda f, x, w, b: f.conv_transpose2d(x, w[:, ::2], b[::2], stride=2), x, r(4, 6, 3, 3), r(6)),
    ]
    assert_like_torch(cases, F, dev)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_empty_batch_like_torch(backend):
    """A batch of 0 (a detection head's empty proposals): an empty result of the right shape,
    zero weight and bias gradients. The Triton launchers once divided by the empty output's
    tile count (ZeroDivisionError). (torch's own results for 0 input channels have the
    input's channel count, a torch quirk not followed.)"""
    tf32_off()
    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    x, r = torch.randn(0, 4, 6, 7, device=dev), torch.randn
    cl = x.to(memory_format=torch.channels_last)
    cases = [
        (lambda f, x, w, b: f.conv2d(x, w, b, padding=1), x, r(3, 4, 3, 3), r(3)),
        (lambda f, x, w, b: f.conv2d(x, w, b, stride=2, groups=2), cl, r(6, 2, 3, 3), r(6)),
        (lambda f, x, w, b: f.conv2d(x, w, b), x, r(32, 4, 1, 1), r(32)),
        (lambda f, x, w, b: f.conv1d(x[:, :, 0], w, b), x, r(3, 4, 3), r(3)),
        (lambda f, x, w, b: f.conv_transpose2d(x, w, b, stride=2, output_padding=1), cl, r(4, 2, 3, 3), r(2)),
    ]
    assert_like_torch(cases, F, dev)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_empty_pixels_like_torch(backend):
    """torch convolves an empty batch or no channels (an empty result) and refuses any other
    empty input, a zero spatial size, with a RuntimeError (ours returned a result). An empty
    batch of no pixels has zero gradients: conv_transpose's output can then be narrower than
    one window, which the gradients' convolutions cannot take."""
    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    x, r = torch.randn(2, 3, 6, 0, device=dev), functools.partial(torch.randn, device=dev)
    calls = [
        lambda m: m.conv2d(x, r(4, 3, 2, 1), padding=1),
        lambda m: m.conv1d(x[:, :, 0], r(4, 3, 1), padding=1),
        lambda m: m.conv_transpose2d(x, r(3, 2, 2, 3), stride=2),
        lambda m: m.conv_transpose1d(x[:, :, 0], r(3, 2, 3), stride=2),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match=r"Only zero batch or zero channel inputs.*\[2, 3, "):
            call(F)
        with pytest.raises(RuntimeError):
            call(TF)
    grads = []
    for m in (F, TF):
        x0, w = torch.zeros(0, 3, 0, device=dev, requires_grad=True), r(3, 1, 3, requires_grad=True)
        b = r(3, requires_grad=True)
        y = m.conv_transpose1d(x0, w, b, dilation=3, groups=3)
        grads.append((y, *torch.autograd.grad(y, (x0, w, b), torch.ones_like(y))))
    for a, want in zip(*grads):
        assert a.shape == want.shape
        torch.testing.assert_close(a, want)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_layout_rule_on_slices_and_size_one_dims(backend):
    """The layout rule is torch's suggest_memory_format: a slice of a channels_last tensor
    counts as channels_last, and size-1 dimensions (1 channel, a 1x1 kernel, H = 1) are
    settled by their strides as torch settles them, for y, dx and dw alike."""
    from torch._prims_common import suggest_memory_format

    from tritonnet.reference._common import strides_like_channels_last

    tritonnet.set_backend(backend)
    tf32_off()
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    cl = torch.channels_last

    def odd(shape, strides):  # size-1 dims with strides of their own
        return torch.randn(math.prod(shape) * 8, device=dev).as_strided(shape, strides)

    def r(*shape, fmt=torch.contiguous_format):
        return torch.randn(*shape, device=dev).to(memory_format=fmt)

    cases = [
        (r(2, 16, 7, 7, fmt=cl)[..., :6], r(8, 16, 3, 3)),  # a slice of a channels_last input
        (r(2, 1, 6, 6, fmt=cl), r(4, 1, 3, 3)),  # one channel
        (r(2, 16, 5, 5), r(8, 16, 1, 1, fmt=cl)),  # a 1x1 kernel
        (odd((1, 3, 1, 5), (15, 1, 1, 3)), r(4, 3, 1, 3)),
        (odd((1, 3, 1, 5), (3, 1, 15, 3)), r(4, 3, 1, 3)),
    ]
    for x, w in cases:
        for t in (x, w):
            assert strides_like_channels_last(t) == (suggest_memory_format(t) == cl), (t.shape, t.stride())
        what = f"x {tuple(x.shape)} {x.stride()}, w {tuple(w.shape)} {w.stride()}"
        out = []
        for mod in (F, TF):
            xs, ws = x.detach().requires_grad_(), w.detach().requires_grad_()
            y = mod.conv2d(xs, ws)
            out.append((y, *torch.autograd.grad(y, (xs, ws), torch.ones_like(y))))
        for a, b in zip(*out):
            assert a.stride() == b.stride(), what
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "case",
    [
        (2, 4, 5, 6, 4, 3, 2, 1, 2, 2, "none"),
        (1, 2, 6, 5, 3, (2, 3), 1, "same", 1, 1, "relu"),
        (2, 3, 5, 5, 3, 3, 1, 1, 1, 3, "tanh"),
    ],
    ids=["s2d2g2", "same-even-relu", "depthwise-tanh"],
)
def test_gradcheck_conv2d(case):
    """float64 gradcheck of the hand-written backward through the reference primitives."""
    tritonnet.set_backend("reference")
    N, C, H, W, O, k, s, p, d, g, act = case
    x = torch.randn(N, C, H, W, dtype=torch.float64, requires_grad=True)
    w = torch.randn(O, C // g, *_pair(k), dtype=torch.float64, requires_grad=True)
    b = torch.randn(O, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: F.conv2d(x, w, b, s, p, d, g, activation=act), (x, w, b)
    )


@pytest.mark.parametrize(
    "case",
    [
        (2, 4, 4, 5, 3, 3, 2, 1, 1, 1, 1),  # stride 2, output_padding 1
        (1, 4, 3, 3, 2, 3, 1, 0, 0, 2, 2),  # groups 2, dilation 2
        (2, 2, 5, 4, 3, (2, 3), (2, 1), (1, 0), (1, 0), 1, 1),  # non-square everything
        # output_padding < dilation but >= stride: the output holds more window positions
        # than the input has pixels (the reference's fold and the backward's dx once broke)
        (1, 4, 5, 5, 2, 3, 1, 0, 1, 1, 2),
        (1, 2, 4, 4, 3, 3, 2, 1, (1, 2), 1, 3),
    ],
    ids=["s2op1", "g2d2", "nonsquare", "s1op1d2", "s2op2d3"],
)
def test_conv_transpose2d(case):
    """Reference path vs torch (with gradients), gradcheck, and the Triton path."""
    N, C, H, W, O, k, s, p, op, g, d = case  # O: output channels per group
    x = torch.randn(N, C, H, W, dtype=torch.float64)
    w = torch.randn(C, O, *_pair(k), dtype=torch.float64)  # (C_in, C_out/groups, KH, KW)
    b = torch.randn(O * g, dtype=torch.float64)

    def fn(mod):
        return lambda x, w, b: mod.conv_transpose2d(x, w, b, s, p, op, g, d)

    tritonnet.set_backend("reference")
    y = TF.conv_transpose2d(x, w, b, s, p, op, g, d)
    gy = torch.randn_like(y)
    ref, rg = _assert_like_torch(fn, x, w, b, gy)
    xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
    assert torch.autograd.gradcheck(fn(F), (xs, ws, bs))

    tf32_off()
    tritonnet.set_backend("triton")
    dev = KERNEL_DEVICE
    xf, wf, bf, gf = (t.float().to(dev) for t in (x, w, b, gy))
    ours, og = _torch_grads(fn(F), xf, wf, bf, gf)
    assert_close_rel(ours, ref, 1e-5, "y")
    for a, r in zip(og, rg):
        assert_close_rel(a, r, 1e-5)


def test_float64_on_the_triton_backend():
    """float64 conv2d and conv_transpose2d on the Triton backend (which hands fp64 GEMMs to the
    reference primitives: Triton's fp64 dot wants an fp64 accumulator) equal torch's, with
    gradients; before, the kernels computed garbage (an fp32 accumulator)."""
    tritonnet.set_backend("triton")
    dev = KERNEL_DEVICE
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64, device=dev)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, device=dev)
    b = torch.randn(6, dtype=torch.float64, device=dev)
    for fn in (lambda m: lambda x, w, b: m.conv2d(x, w, b, 2, 1, 1, 2),
               lambda m: lambda x, w, b: m.conv_transpose2d(x, w[:4], b[:2], 2, 1, 1)):
        y = fn(TF)(x, w, b)
        _assert_like_torch(fn, x, w, b, torch.randn_like(y))


def test_conv1d_and_transpose1d():
    tritonnet.set_backend("reference")
    x = torch.randn(2, 4, 11, dtype=torch.float64)
    w = torch.randn(6, 2, 3, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    for kw in [dict(stride=2, padding=1, groups=2), dict(padding="same", dilation=2, groups=2)]:
        y = TF.conv1d(x, w, b, **kw)
        gy = torch.randn_like(y)
        ours, og = _torch_grads(lambda x, w, b, kw=kw: F.conv1d(x, w, b, **kw), x, w, b, gy)
        ref, rg = _torch_grads(lambda x, w, b, kw=kw: TF.conv1d(x, w, b, **kw), x, w, b, gy)
        torch.testing.assert_close(ours, ref)
        for a, r in zip(og, rg):
            torch.testing.assert_close(a, r)
    torch.testing.assert_close(F.conv1d(x[0], w, b, groups=2), TF.conv1d(x[0], w, b, groups=2))
    wt = torch.randn(4, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(
        F.conv_transpose1d(x, wt, None, 2, 1, 1), TF.conv_transpose1d(x, wt, None, 2, 1, 1)
    )


# ---------------------------------------------------------------------------------------------
# Triton kernels against their reference twins (interpreter on CPU, native on a GPU)


def _kernel_args(case, dtype, channels_last=False, dev=KERNEL_DEVICE):
    N, C, H, W, O, k, s, p, d, g = case
    x = torch.randn(N, C, H, W, device=dev).to(dtype)
    w = torch.randn(O, C // g, *_pair(k), device=dev).to(dtype)
    b = torch.randn(O, device=dev).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return x, w, b, (_pair(s), _pair(p), _pair(d), g)


def test_tuned_launches_skip_the_autotuner_once_it_has_chosen(monkeypatch):
    """kernels._common.Tuned: the first launch of a key goes through triton's autotuner; later
    launches of that key reuse its choice without it, with the same result; a new shape or
    dtype tunes afresh; and a launch after which the autotuner holds no choice for the key
    (compile_check's compile-only run) leaves nothing to reuse. Two configs and a fake timing
    (the interpreter cannot time), so that the choice is the autotuner's."""
    import triton
    from triton.runtime.autotuner import Autotuner

    from tritonnet import kernels
    from tritonnet.kernels import conv as kconv

    configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 4}) for bm in (32, 16)]
    monkeypatch.setattr(kconv, "_configs", lambda: configs)
    monkeypatch.setattr(kconv, "_tuned", {})
    monkeypatch.setattr(Autotuner, "_bench", lambda self, *a, config, **k: [config.kwargs["BLOCK_M"]] * 3)
    monkeypatch.setattr(Autotuner, "check_disk_cache", lambda self, key, configs, bench: bench() or False,
                        raising=False)
    calls = []
    run = Autotuner.run

    def counted(self, *args, **kwargs):
        calls.append(self)
        return run(self, *args, **kwargs)

    monkeypatch.setattr(Autotuner, "run", counted)
    x, w, b, conv = _kernel_args((2, 5, 7, 6, 9, 3, 1, 1, 1, 1), torch.float32)
    y = kernels.conv2d_forward(x, w, b, *conv)
    assert len(calls) == 1
    tuned = kconv._tuned["fwd"]
    assert list(tuned._configs.values()) == [configs[1].all_kwargs()]  # the faster one
    torch.testing.assert_close(kernels.conv2d_forward(x, w, b, *conv), y, rtol=0, atol=0)
    assert len(calls) == 1  # the memo's launch
    kernels.conv2d_forward(x[:, :, :5], w, b, *conv)  # another shape
    kernels.conv2d_forward(x.bfloat16(), w.bfloat16(), b.bfloat16(), *conv)  # another dtype
    assert len(calls) == 3 and len(tuned._configs) == 3

    # an autotuner that launched without choosing (no cache entry): no memo, every time
    def untuned(self, *args, **kwargs):
        calls.append(self)
        return self.fn.run(*args, **kwargs, **self.configs[0].all_kwargs())

    monkeypatch.setattr(Autotuner, "run", untuned)
    for _ in range(2):
        kernels.conv2d_forward(x[:1], w, b, *conv)
    assert len(calls) == 5 and len(tuned._configs) == 3


KERNEL_CASES = CASES if FULL else [CASES[i] for i in (0, 1, 2, 3, 5, 7)]
KERNEL_IDS = IDS if FULL else [IDS[i] for i in (0, 1, 2, 3, 5, 7)]


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("case", KERNEL_CASES, ids=KERNEL_IDS)
def test_kernels_match_reference(case, dtype, tol):
    tf32_off()
    from tritonnet import kernels

    x, w, b, conv = _kernel_args(case, dtype)
    y = kernels.conv2d_forward(x, w, b, *conv)
    assert y.dtype == dtype
    assert_close_rel(y, reference.conv2d_forward(x, w, b, *conv), tol, "forward")
    gy = torch.randn(y.shape, device=y.device).to(dtype)
    assert_close_rel(
        kernels.conv2d_input_grad(gy, w, x.shape, *conv),
        reference.conv2d_input_grad(gy, w, x.shape, *conv), tol, "dx",
    )
    dw, db = kernels.conv2d_weight_grad(gy, x, w.shape, *conv)
    rw, rb = reference.conv2d_weight_grad(gy, x, w.shape, *conv)
    assert_close_rel(dw, rw, tol, "dw")
    assert_close_rel(db, rb, tol, "db")


# (N, C, H, W, kernel, stride, padding, dilation, layout): depthwise convolutions (groups = C)
DEPTHWISE_CASES = [
    (2, 5, 9, 11, 3, 1, 1, 1, "nchw"),  # MobileNet's 3x3
    (2, 19, 9, 11, 3, 2, 1, 1, "channels_last"),  # stride 2, a ragged channel block
    (1, 6, 8, 7, (5, 3), (2, 1), (2, 0), (1, 2), "channels_last"),  # non-square, dilated
    (1, 4, 13, 12, 7, 1, 3, 1, "nchw"),  # ConvNeXt's 7x7
    (3, 4, 10, 10, 3, 3, 0, 2, "strided"),  # stride 3 over a dilated window, a sliced input
]


def test_depthwise_runs_as_a_stencil(monkeypatch, poisoned_empty):
    """A depthwise convolution (groups = C_in = C_out) runs kernels/depthwise.py, forward (bias,
    fused activation), input gradient (also conv_transpose2d's forward, with its bias) and
    weight and bias gradients, against the reference: odd sizes, strides, dilation,
    non-square windows, both layouts and a sliced input, results laid out as the
    reference's; forced int64 offsets the same; the weight gradient split over programs and
    not, every partial written (torch.empty poisoned), an empty batch. A channel multiplier
    of 2, or a filter of more than 81 taps, keeps the GEMM."""
    tf32_off()
    from tritonnet import kernels
    from tritonnet.kernels import depthwise as kdw

    plans = []
    real_plan = kdw._wgrad_plan
    monkeypatch.setattr(kdw, "_wgrad_plan", lambda *a: plans.append(real_plan(*a)) or plans[-1])
    calls = []
    for name in ("depthwise_forward", "depthwise_input_grad", "depthwise_weight_grad"):
        real = getattr(kdw, name)
        for mod in (importlib.import_module("tritonnet.kernels.conv"),
                    importlib.import_module("tritonnet.kernels.conv_backward")):
            if hasattr(mod, name):
                spy = lambda *a, real=real, name=name: calls.append(name) or real(*a)  # noqa: E731
                monkeypatch.setattr(mod, name, spy)
    for i, (N, C, H, W, k, s, p, d, layout) in enumerate(DEPTHWISE_CASES):
        monkeypatch.setattr(kdw, "index64", lambda *t, f=i % 2 == 1: f or kernels._common.index64(*t))
        dtypes = [(torch.float32, 1e-5)] + [(torch.bfloat16, 1.6e-2)] * (i == 1)
        for dtype, tol in dtypes:
            x = torch.randn(N, C, H, 2 * W if layout == "strided" else W, device=KERNEL_DEVICE).to(dtype)
            x = x[..., ::2] if layout == "strided" else x
            if layout == "channels_last":
                x = x.to(memory_format=torch.channels_last)
            w = torch.randn(C, 1, *_pair(k), device=KERNEL_DEVICE).to(dtype)
            b = torch.randn(C, device=KERNEL_DEVICE).to(dtype)
            conv = (_pair(s), _pair(p), _pair(d), C)
            n = len(calls)
            for bias, act in ((b, "relu"), (None, "none"), (b, "tanh")):
                y = kernels.conv2d_forward(x, w, bias, *conv, act)
                ry = reference.conv2d_forward(x, w, bias, *conv, act)
                assert_close_rel(y, ry, tol, f"forward {act}")
                assert y.stride() == ry.stride()
            gy = torch.randn(y.shape, device=KERNEL_DEVICE).to(dtype)
            for bias in (None, b):  # with a bias: conv_transpose2d's forward
                dx = kernels.conv2d_input_grad(gy, w, x.shape, *conv, bias=bias)
                rdx = reference.conv2d_input_grad(gy, w, x.shape, *conv, bias=bias)
                assert_close_rel(dx, rdx, tol, "dx")
                assert dx.stride() == rdx.stride()
            for bias_grad in (True, False):
                dw, db = kernels.conv2d_weight_grad(gy, x, w.shape, *conv, bias_grad=bias_grad)
                rdw, rdb = reference.conv2d_weight_grad(gy, x, w.shape, *conv, bias_grad=bias_grad)
                assert_close_rel(dw, rdw, tol, "dw")
                assert dw.stride() == rdw.stride() and dw.dtype == dtype
                assert db.shape == rdb.shape and db.dtype == dtype
                if bias_grad:
                    assert_close_rel(db, rdb, tol, "db")
            assert calls[n:] == (["depthwise_forward"] * 3 + ["depthwise_input_grad"] * 2
                                 + ["depthwise_weight_grad"] * 2)
    # the weight gradient of one program a channel (no split), and of an empty batch
    for N, cl in ((1, False), (0, True)):
        x = torch.randn(N, 16, 3, 5, device=KERNEL_DEVICE)
        x = x.to(memory_format=torch.channels_last) if cl else x
        w, conv = torch.randn(16, 1, 3, 3, device=KERNEL_DEVICE), ((1, 1), (1, 1), (1, 1), 16)
        gy = torch.randn(N, 16, 3, 5, device=KERNEL_DEVICE)
        for got, want in zip(kernels.conv2d_weight_grad(gy, x, w.shape, *conv),
                             reference.conv2d_weight_grad(gy, x, w.shape, *conv)):
            assert_close_rel(got, want, 1e-5, f"dw, batch {N}")
    assert calls[-2:] == ["depthwise_weight_grad"] * 2
    assert min(split for split, _ in plans) == 1 and max(split for split, _ in plans) > 1
    n = len(calls)
    x, w = torch.randn(2, 4, 6, 6, device=KERNEL_DEVICE), torch.randn(8, 1, 3, 3, device=KERNEL_DEVICE)
    conv = ((1, 1), (1, 1), (1, 1), 4)
    y = kernels.conv2d_forward(x, w, None, *conv)
    assert_close_rel(y, reference.conv2d_forward(x, w, None, *conv), 1e-5, "multiplier 2")
    x, w = torch.randn(1, 2, 12, 12, device=KERNEL_DEVICE), torch.randn(2, 1, 10, 9, device=KERNEL_DEVICE)
    conv = ((1, 1), (0, 0), (1, 1), 2)  # 90 taps: more than the stencil compiles in
    assert_close_rel(kernels.conv2d_forward(x, w, None, *conv),
                     reference.conv2d_forward(x, w, None, *conv), 1e-5, "90 taps")
    assert len(calls) == n


def _conv_by_definition(x, w, dy, s, p):
    """y, dx, dw of a conv2d (square stride s, padding p, no dilation) in float64 by loops over
    output pixels: zero padding enters the products as values (forward, dw); dx sums over the
    outputs that exist."""
    _, _, H, W = x.shape
    K = w.shape[-1]
    xp, wd, dyd = TF.pad(x.double(), (p, p, p, p)), w.double(), dy.double()
    y = xp.new_zeros(x.shape[0], w.shape[0], *dy.shape[2:])
    dxp, dw = torch.zeros_like(xp), torch.zeros_like(wd)
    for i in range(dy.shape[2]):
        for j in range(dy.shape[3]):
            patch = xp[:, :, i * s:i * s + K, j * s:j * s + K]
            y[:, :, i, j] = torch.einsum("nckl,ockl->no", patch, wd)
            dxp[:, :, i * s:i * s + K, j * s:j * s + K] += torch.einsum("no,ockl->nckl", dyd[:, :, i, j], wd)
            dw += torch.einsum("no,nckl->ockl", dyd[:, :, i, j], patch)
    return y, dxp[:, :, p:p + H, p:p + W], dw


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("s,p", [(1, 1), (2, 1), (2, 0)])
def test_nan_inf_reach_what_the_definition_says(backend, s, p):
    """NaN in the input and NaN/Inf in the output gradient reach exactly the forward, dx and dw
    positions the definition says (README: non-finite *weights* may reach more dx positions on
    the Triton backend, and torch's CPU kernels differ, so the float64 loop is the judge)."""
    torch.manual_seed(s + p)
    mod = importlib.import_module("tritonnet.kernels") if backend == "triton" else reference
    x, w = torch.randn(2, 5, 7, 6), torch.randn(3, 5, 3, 3)
    dy = torch.randn(2, 3, (7 + 2 * p - 3) // s + 1, (6 + 2 * p - 3) // s + 1)
    # an edge pixel and a corner (their windows meet the padding), a corner of dy and a middle
    x[0, 1, 0, 2] = x[1, 3, 6, 5] = float("nan")
    dy[0, 2, 0, 0] = float("nan")
    dy[1, 0, -1, 1] = float("inf")
    conv = ((s, s), (p, p), (1, 1), 1)
    x, w, dy = x.to(KERNEL_DEVICE), w.to(KERNEL_DEVICE), dy.to(KERNEL_DEVICE)
    got = (mod.conv2d_forward(x, w, None, *conv), mod.conv2d_input_grad(dy, w, x.shape, *conv),
           mod.conv2d_weight_grad(dy, x, w.shape, *conv)[0])
    for a, b, what in zip(got, _conv_by_definition(x.cpu(), w.cpu(), dy.cpu(), s, p), ("y", "dx", "dw")):
        a = a.cpu()
        assert b.isnan().any() and not b.isnan().all(), what  # the case shows something
        assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.isinf(), b.isinf()), what
        fin = b.isfinite()
        torch.testing.assert_close(a[fin].double(), b[fin], rtol=1e-4, atol=1e-4, msg=what)


def test_int64_offsets_path(monkeypatch):
    """Offsets are int32 unless a tensor can pass 2**31 elements; the int64 variant of all
    three kernels, forced here on small shapes, gives the same numbers (on a GPU the
    > 2**31-element test reaches it for real)."""
    tf32_off()
    from tritonnet import kernels
    from tritonnet.kernels import _common
    from tritonnet.kernels import conv as kconv
    from tritonnet.kernels import conv_backward as kconvb

    assert not _common.index64(torch.empty(4, 3, 8, 8))
    assert _common.index64(torch.empty(2, 2**30, device="meta"))  # 2**31 elements
    assert _common.index64(torch.empty(2, 2, device="meta").as_strided((2, 2), (2**31, 1)))  # a span
    big = torch.empty(2, 2**14, 2**8, 2**8, device="meta")  # 2**31 elements
    assert _common.index64(big.to(memory_format=torch.channels_last))  # dense: by the count
    assert not _common.index64(big[:, :4].contiguous(memory_format=torch.channels_last))
    assert _common.index64(torch.empty(4, 2**30, device="meta")[:, :2])  # 8 elements, a span past 2**31
    assert not _common.index64(big[:1, :4, :2])  # not dense, a small span
    seen = []
    for mod in (kconv, kconvb):
        monkeypatch.setattr(mod, "index64", lambda *t: seen.append(len(t)) or True)
    for case in (CASES[1], CASES[5], CASES[6]):
        x, w, b, conv = _kernel_args(case, torch.float32)
        y = kernels.conv2d_forward(x, w, b, *conv)
        assert_close_rel(y, reference.conv2d_forward(x, w, b, *conv), 1e-5, "forward")
        gy = torch.randn(y.shape, device=y.device)
        assert_close_rel(kernels.conv2d_input_grad(gy, w, x.shape, *conv),
                         reference.conv2d_input_grad(gy, w, x.shape, *conv), 1e-5, "dx")
        dw, db = kernels.conv2d_weight_grad(gy, x, w.shape, *conv)
        rw, rb = reference.conv2d_weight_grad(gy, x, w.shape, *conv)
        assert_close_rel(dw, rw, 1e-5, "dw")
        assert_close_rel(db, rb, 1e-5, "db")
    assert len(seen) == 9 + 2  # every launch asked: 3 cases x 3 kernels, the stem's 2 channel pads


@pytest.mark.parametrize(
    "case",
    [(2, 32, 5, 7, 20, 3, 1, 1, 1, 1), (2, 20, 5, 7, 32, 3, 2, 1, 1, 1), (1, 64, 6, 5, 36, 3, 1, 2, 2, 2)],
    ids=["C32-O20", "C20-O32s2", "C32g2d2"],
)
def test_tap_loop_full_channel_blocks_and_ragged_tiles(case):
    """The tap loops load without a channel mask when BLOCK_K divides the channels (C_ALIGN),
    and the forward without row or column masks (edge rows and columns gather clamped,
    in-bounds pixels that are never stored; the bounds check sees every address). Cases: the
    forward's K channels full and the input gradient's not, then the other way round, and
    groups with dilation; every one with a ragged last row block (M = 70 or 60 pixels) and a
    ragged column block (20 or 18)."""
    tf32_off()
    from tritonnet import kernels
    from tritonnet.kernels import conv as kconv

    x, w, b, conv = _kernel_args(case, torch.float32, channels_last=True)
    assert not kconv._flat(w.shape[1])  # the tap loop, not the flat walk
    y = kernels.conv2d_forward(x, w, b, *conv)
    assert_close_rel(y, reference.conv2d_forward(x, w, b, *conv), 1e-5, "forward")
    gy = torch.randn(y.shape, device=y.device).to(memory_format=torch.channels_last)
    assert_close_rel(kernels.conv2d_input_grad(gy, w, x.shape, *conv),
                     reference.conv2d_input_grad(gy, w, x.shape, *conv), 1e-5, "dx")
    # the weight gradient: full or ragged output-channel and column tiles, pixel steps past
    # the end of the reduction, dy read as dense pixels (channels_last) or through its strides
    rw, rb = reference.conv2d_weight_grad(gy, x, w.shape, *conv)
    for dy in (gy, gy.contiguous()):
        dw, db = kernels.conv2d_weight_grad(dy, x, w.shape, *conv)
        assert_close_rel(dw, rw, 1e-5, "dw")
        assert_close_rel(db, rb, 1e-5, "db")


@pytest.mark.parametrize("split,cases", [(3, (0, 1, 2, 3)), (64, (0,))],
                         ids=["split3", "split64-empty-shares"])
def test_split_k_forward_and_input_grad(split, cases, monkeypatch):
    """Split-K (small M: batch 1, late layers): programs share a tile's K loop and write fp32
    partials that one more kernel sums (with the forward's bias and activation). Forced here on
    the per-tap and flat walks, groups, stride 2 (the input gradient's phases), bias, fused
    activations and both layouts; 64 shares leave some with no K step at all (they must still
    write their zeros)."""
    tf32_off()
    from tritonnet import kernels
    from tritonnet.kernels import conv as kconv
    from tritonnet.kernels import conv_backward as kconvb

    for mod in (kconv, kconvb):
        monkeypatch.setattr(mod, "_split_gemm", lambda *a: split)
    runs = ((CASES[6], "none"), (CASES[5], "relu"), (CASES[1], "sigmoid"),
            ((2, 32, 5, 7, 20, 3, 1, 1, 1, 1), "tanh"))
    for case, act in (runs[i] for i in cases):
        for cl in (False, True):
            x, w, b, conv = _kernel_args(case, torch.float32, channels_last=cl)
            fmt = torch.channels_last if cl else torch.contiguous_format
            y = kernels.conv2d_forward(x, w, b, *conv, activation=act)
            assert y.is_contiguous(memory_format=fmt)
            assert_close_rel(y, reference.conv2d_forward(x, w, b, *conv, act), 1e-5, f"{act} cl={cl}")
            gy = torch.randn(y.shape, device=y.device).to(memory_format=fmt)
            dx = kernels.conv2d_input_grad(gy, w, x.shape, *conv)
            assert dx.is_contiguous(memory_format=fmt)
            assert_close_rel(dx, reference.conv2d_input_grad(gy, w, x.shape, *conv), 1e-5, f"dx cl={cl}")
            bx = torch.randn(x.shape[1], device=x.device)  # conv_transpose2d's bias, in the reduction
            assert_close_rel(kernels.conv2d_input_grad(gy, w, x.shape, *conv, bias=bx),
                             reference.conv2d_input_grad(gy, w, x.shape, *conv, bias=bx), 1e-5, "dx + bias")
        y = kernels.conv2d_forward(x, w, None, *conv)
        assert_close_rel(y, reference.conv2d_forward(x, w, None, *conv), 1e-5, "no bias")


@pytest.mark.parametrize("backend,split", [
    ("reference", 1), ("triton", 1), ("triton", 3),
    pytest.param("triton", 0, marks=pytest.mark.gpu, id="gpu-autotuned"),  # the GPU session's -m gpu
])
def test_conv_transpose_bias_rounds_once(backend, split, monkeypatch):
    """conv_transpose2d adds its bias in fp32 before the one rounding to fp16 (the input-grad
    kernel's epilogue, or its split-K reduction), as torch's CPU kernel does: within half an
    ulp of float64 (checked with room for the fp32 sum's own error near zero, which a GPU's
    summation order may show), also where the sum and the bias cancel. Adding the bias to the
    rounded result cost up to hundreds of the result's ulps there (15 on these inputs), and a
    second pass over the output."""
    from tritonnet.kernels import conv_backward as kconvb

    tritonnet.set_backend(backend)
    if split:  # 0: as the launcher plans it
        monkeypatch.setattr(kconvb, "_split_gemm", lambda *a: split)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 5, device=dev).half()
    w = (torch.randn(8, 3, 3, 3, device=dev) / 5).half()
    b = torch.randn(6, device=dev).half()
    for args in ((x, w, b[:3], 2), (x, w[:, :2], b[:4], 2, 1, 1, 2)):  # stride 2; and groups 2
        truth = TF.conv_transpose2d(*(a.double() if torch.is_tensor(a) else a for a in args))
        y = F.conv_transpose2d(*args).double()
        ulps = (y - truth).abs() / (torch.finfo(torch.half).eps * truth.abs().clamp_min(2**-14))
        assert ulps.max() < 1.0, (len(args), ulps.max().item())


def test_split_gemm_only_where_tiles_leave_sms_idle():
    from tritonnet.kernels import conv as kconv

    cpu = torch.device("cpu")  # 4 "SMs" off a GPU
    assert kconv._split_gemm(64 * 64, 64, 4608, cpu) == 1  # 4 tiles fill 4 SMs
    assert kconv._split_gemm(49, 512, 4608, cpu) == 1  # 8 tiles
    assert kconv._split_gemm(49, 64, 4608, cpu) == 8  # one tile: 2 * 4 SMs
    assert kconv._split_gemm(49, 64, 600, cpu) == 2  # each share keeps >= 256 K elements
    assert kconv._split_gemm(49, 64, 27, cpu) == 1


def test_align_and_dense_pixels():
    from tritonnet.kernels.conv import _align
    from tritonnet.kernels.conv_backward import _pixels_dense

    cl = torch.empty(2, 8, 5, 7).to(memory_format=torch.channels_last)
    assert _pixels_dense(cl) and not _pixels_dense(torch.empty(2, 8, 5, 7))
    assert _pixels_dense(torch.empty(2, 1, 5, 7))  # one channel: NCHW is pixel-dense too
    assert not _pixels_dense(cl[:, :, :, :6])  # a cropped row
    assert _pixels_dense(cl[:, :4])  # half the channels: pixels still 8 apart, in order

    cs = (1, 3, 6, 16, 20, 48, 64, 96, 256, 1024)
    assert [_align(c) for c in cs] == [1, 1, 2, 16, 4, 16, 64, 32, 256, 256]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per-tap"])
def test_both_filter_walks(flat, layout, monkeypatch):
    """The forward's K and the weight gradient's N run over the filter two ways, each forced
    on every case: flat over (kh, kw, c) (used when a group has few channels) and one tap at a
    time in channel blocks (used otherwise)."""
    tf32_off()
    from tritonnet import kernels
    from tritonnet.kernels import conv as kconv

    monkeypatch.setattr(kconv, "FLAT_K_BELOW", 10**9 if flat else 0)
    for case in CASES:
        x, w, b, conv = _kernel_args(case, torch.float32, channels_last=layout == "channels_last")
        y = kernels.conv2d_forward(x, w, b, *conv)
        assert_close_rel(y, reference.conv2d_forward(x.contiguous(), w, b, *conv), 1e-5, f"forward {case}")
        gy = torch.randn(y.shape, device=y.device)
        dw, db = kernels.conv2d_weight_grad(gy, x, w.shape, *conv)
        rw, rb = reference.conv2d_weight_grad(gy, x.contiguous(), w.shape, *conv)
        assert_close_rel(dw, rw, 1e-5, f"dw {case}")
        assert_close_rel(db, rb, 1e-5, f"db {case}")


def test_conv_max_warps_knob(monkeypatch):
    """TRITONNET_CONV_MAX_WARPS (read at import) caps the warps of the three convolution GEMMs'
    configs (8 by default; 4 drops the 8-warp tiles, the fallback if a GPU shows them wrong:
    PyTorch issue 173068); other values are refused, naming the value."""
    import subprocess
    import sys

    from tritonnet.kernels import conv as kconv
    from tritonnet.kernels import conv_backward as kconvb

    monkeypatch.setattr(kconv, "INTERPRET", False)  # the GPU's config lists
    monkeypatch.setattr(kconvb, "INTERPRET", False)
    full = [kconv._configs(), kconvb._wgrad_configs()]
    assert all(any(c.num_warps == 8 for c in cfgs) for cfgs in full)
    monkeypatch.setattr(kconv, "CONV_MAX_WARPS", 4)
    capped = [kconv._configs(), kconvb._wgrad_configs()]
    for before, after in zip(full, capped):
        assert [str(c) for c in after] == [str(c) for c in before if c.num_warps <= 4] and after
    code = "import tritonnet.kernels.conv as k; print(k.CONV_MAX_WARPS)"
    for value, ok in (("4", True), ("3", False)):
        env = {**os.environ, "TRITONNET_CONV_MAX_WARPS": value}
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if ok:
            assert run.returncode == 0 and run.stdout.strip() == "4", run.stderr[-2000:]
        else:
            assert run.returncode != 0 and "must be 2, 4 or 8, got 3" in run.stderr, run.stderr[-2000:]


def test_weight_gradient_splits_summed_in_one_pass(monkeypatch):
    """A weight gradient split over programs (the GEMM's and the depthwise stencil's) sums its
    dw and db partials, which share one buffer, and casts them in one pass (_reduce_split):
    no torch sum or cast runs; one split (the GEMM's) stores dw and db with no pass at all.
    The results are the reference's, laid out as torch's, with and without db, fp32 and bf16."""
    from tests.helpers import dispatched_ops
    from tritonnet import kernels
    from tritonnet.kernels import conv as kconv
    from tritonnet.kernels import conv_backward as kconvb

    passes = []
    real = kconv._reduce_split
    spy = lambda *a: passes.append(a[0].shape[0]) or real(*a)  # noqa: E731
    monkeypatch.setattr(kconv, "_reduce_split", spy)
    monkeypatch.setattr(kconvb, "_reduce_split", spy)
    # (x, weight shape, groups, splits expected, dtype, channels_last): 400 pixels split over
    # programs, 4 do not; the depthwise stencil always sums its partials
    f32, bf16 = torch.float32, torch.bfloat16
    cases = [((1, 8, 20, 20), (16, 8, 3, 3), 1, True, f32, True),
             ((1, 8, 20, 20), (8, 1, 3, 3), 8, True, f32, False),
             ((1, 8, 2, 2), (16, 8, 3, 3), 1, False, f32, True),
             ((1, 8, 20, 20), (16, 8, 3, 3), 1, True, bf16, False),
             ((1, 8, 20, 20), (8, 1, 3, 3), 8, True, bf16, True)]
    for xs, ws, g, splits, dtype, cl in cases:
        x = torch.randn(xs, device=KERNEL_DEVICE).to(dtype)
        x = x.to(memory_format=torch.channels_last) if cl else x
        gy = torch.randn(xs[0], ws[0], *xs[2:], device=KERNEL_DEVICE).to(dtype)
        conv = ((1, 1), (ws[2] // 2, ws[3] // 2), (1, 1), g)
        for bias_grad in (True, False):
            n = len(passes)
            with dispatched_ops() as ops:
                dw, db = kernels.conv2d_weight_grad(gy, x, ws, *conv, bias_grad=bias_grad)
            rdw, rdb = reference.conv2d_weight_grad(gy, x, ws, *conv, bias_grad=bias_grad)
            packets = {op.split(".")[1] for op in ops}  # aten.sum.dim_IntList -> sum
            assert not {"sum", "_to_copy", "add"} & packets, ops
            assert len(passes) - n == (1 if splits or g > 1 else 0) and (not splits or passes[-1] > 1)
            tol = 1e-5 if dtype == torch.float32 else 2e-2
            assert_close_rel(dw, rdw, tol, "dw")
            assert dw.dtype == dtype and dw.stride() == rdw.stride()
            assert db.shape == rdb.shape and db.dtype == dtype
            if bias_grad:
                assert_close_rel(db, rdb, tol, "db")


def test_rgb_convs_pad_to_4_channels(monkeypatch):
    """A 3-channel group (RGB stems) is walked over a zero-padded 4-channel channels_last copy
    (one aligned vector a pixel) by the forward (x padded, the weight read in place with its
    4th channel masked) and the weight gradient (x padded, dw written as (C_out, KH, KW, 3),
    the padding channel not stored: channels_last without a copy); x's
    copy carries the convolution's zero padding too (the kernels then run unpadded, without
    bounds checks); the output keeps the layout torch gives, whatever the input's layout; 3
    channels in one of two groups keep the plain walk."""
    tf32_off()
    from tritonnet import kernels
    from tritonnet.kernels import conv as kconv
    from tritonnet.kernels import conv_backward as kconvb

    x = torch.randn(2, 3, 5, 7, device=KERNEL_DEVICE)[:, :, :, ::2]  # strided: read through strides
    x4 = kconv._pad_channels(x, 4)
    assert x4.is_contiguous(memory_format=torch.channels_last) and x4.shape == (2, 4, 5, 4)
    assert torch.equal(x4, torch.cat([x, torch.zeros_like(x[:, :1])], 1))
    x4 = kconv._pad_channels(x, 4, (2, 1))  # a border of 2 rows and 1 column
    assert x4.is_contiguous(memory_format=torch.channels_last) and x4.shape == (2, 4, 9, 6)
    assert torch.equal(x4, TF.pad(torch.cat([x, torch.zeros_like(x[:, :1])], 1), (1, 1, 2, 2)))
    pads = []
    real = kconv._pad_channels
    for mod in (kconv, kconvb):
        monkeypatch.setattr(mod, "_pad_channels",
                            lambda t, c, p=(0, 0): pads.append((c, tuple(p))) or real(t, c, p))
    split = []
    real_split = kconvb._split_k
    monkeypatch.setattr(kconvb, "_split_k", lambda *a: split.append(real_split(*a)) or split[-1])
    cases = [(CASES[5], True), (CASES[0], True), ((1, 6, 9, 9, 4, 3, 2, 1, 1, 2), False),
             ((1, 3, 40, 40, 4, 7, 2, 3, 1, 1), True),  # 400 pixels: dw split over programs
             ((2, 3, 8, 9, 4, 3, 2, 0, 1, 1), True),  # no padding
             ((1, 3, 9, 8, 4, (3, 5), (2, 1), (1, 2), (1, 2), 1), True)]  # uneven padding, dilated
    for case, padded in cases:
        for layout in ("nchw", "channels_last", "strided"):
            x, w, b, conv = _kernel_args(case, torch.float32, channels_last=layout == "channels_last")
            if layout == "strided":
                x = torch.cat([x, x], 3)[..., ::2]
            n = len(pads)
            y = kernels.conv2d_forward(x, w, b, *conv, activation="relu")
            ref = reference.conv2d_forward(x.contiguous(), w, b, *conv, "relu")
            assert_close_rel(y, ref, 1e-5, f"{case} {layout}")
            cl = layout == "channels_last"
            assert y.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
            gy = torch.randn(y.shape, device=y.device)
            dw, db = kernels.conv2d_weight_grad(gy, x, w.shape, *conv)
            rw, rb = reference.conv2d_weight_grad(gy, x.contiguous(), w.shape, *conv)
            assert dw.shape == w.shape  # laid out as torch's weight gradient is:
            assert dw.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
            if cl and padded:  # written (C_out, KH, KW, 3) by the kernels: a view, no copy
                assert dw._base is not None
            assert_close_rel(dw, rw, 1e-5, f"dw {case} {layout}")
            assert_close_rel(db, rb, 1e-5, f"db {case} {layout}")
            p = _pair(case[7])
            assert pads[n:] == ([(4, p), (4, p)] if padded else []), (case, layout)  # x, twice
    assert max(split) > 1 and min(split) == 1
    # the forward reads the weight in place, its 4th channel masked: a slice of a 4-channel
    # weight whose 4th channel is NaN gives no NaN
    x, w, b, conv = _kernel_args(CASES[5], torch.float32)
    w4 = torch.full((w.shape[0], 4, *w.shape[2:]), float("nan"), device=w.device)
    w4[:, :3] = w
    assert_close_rel(kernels.conv2d_forward(x, w4[:, :3], b, *conv),
                     reference.conv2d_forward(x, w, b, *conv), 1e-5, "a sliced weight")


@pytest.mark.parametrize("case", [CASES[0], CASES[1]], ids=["3x3", "s2g2"])
def test_kernels_channels_last(case):
    """channels_last in -> channels_last out, and the same numbers as NCHW."""
    tf32_off()
    from tritonnet import kernels

    x, w, b, conv = _kernel_args(case, torch.float32, channels_last=True)
    y = kernels.conv2d_forward(x, w, b, *conv)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close_rel(y, reference.conv2d_forward(x.contiguous(), w, b, *conv), 1e-5, "forward")
    gy = torch.randn(y.shape, device=y.device).to(memory_format=torch.channels_last)
    dx = kernels.conv2d_input_grad(gy, w, x.shape, *conv)
    assert dx.is_contiguous(memory_format=torch.channels_last)
    assert_close_rel(dx, reference.conv2d_input_grad(gy, w, x.shape, *conv), 1e-5, "dx")
    dw, _ = kernels.conv2d_weight_grad(gy, x, w.shape, *conv)
    assert_close_rel(dw, reference.conv2d_weight_grad(gy, x, w.shape, *conv)[0], 1e-5, "dw")


@pytest.mark.parametrize(
    "case",
    [(2, 16, 5, 6, 32, 3, 2, 1, 1, 1), (1, 32, 4, 5, 32, 3, 1, 1, 1, 2)],
    ids=["C16s2", "C32g2"],
)
def test_nchw_staged_through_channels_last(case, monkeypatch):
    """NCHW operands whose group channels are multiples of 16 are copied to channels_last
    for the kernels (16-byte loads), and the outputs come back NCHW as torch gives them,
    with the numbers of the direct strided path and of the reference."""
    tf32_off()
    from tritonnet import kernels
    from tritonnet.kernels import conv as kconv
    from tritonnet.kernels import conv_backward as kconvb

    x, w, b, conv = _kernel_args(case, torch.float32)
    gy = torch.randn(reference.conv2d_forward(x, w, b, *conv).shape, device=x.device)
    staged = []
    real_stage = kconv._stage

    def spy(t, *args):
        out = real_stage(t, *args)
        staged.append(out is not t)
        return out

    monkeypatch.setattr(kconv, "_stage", spy)
    monkeypatch.setattr(kconvb, "_stage", spy)

    def run():
        staged.clear()
        y = kernels.conv2d_forward(x, w, b, *conv)
        dx = kernels.conv2d_input_grad(gy, w, x.shape, *conv)
        dw, db = kernels.conv2d_weight_grad(gy, x, w.shape, *conv)
        for t in (y, dx):
            assert t.is_contiguous() and not t.is_contiguous(memory_format=torch.channels_last)
        return [y, dx, dw, db], list(staged)

    via_cl, copies = run()
    assert all(copies) and len(copies) == 6  # x, w; dy, w; dy, x
    monkeypatch.setattr(kconv, "NCHW_VIA_CHANNELS_LAST", False)
    direct, copies = run()
    assert not any(copies)
    ref = [reference.conv2d_forward(x, w, b, *conv), reference.conv2d_input_grad(gy, w, x.shape, *conv),
           *reference.conv2d_weight_grad(gy, x, w.shape, *conv)]
    for name, a, d, r in zip(["y", "dx", "dw", "db"], via_cl, direct, ref):
        assert_close_rel(a, r, 1e-5, name)
        assert_close_rel(a, d, 1e-5, name + " staged vs direct")


@pytest.mark.parametrize(
    "case",
    [
        (2, 3, 9, 8, 4, 1, 2, 0, 1, 1),  # 1x1 stride 2: three of four phases get no tap (zeros)
        (1, 2, 11, 10, 3, 3, 2, 1, 2, 1),  # stride 2, dilation 2: odd phases get no tap
        (2, 2, 10, 11, 3, (2, 3), (3, 2), (2, 1), 1, 1),  # stride 3 > kernel 2, padding 2
        (1, 4, 7, 9, 4, 5, (2, 3), 3, (3, 1), 2),  # dilation 3 with stride 2, groups
    ],
    ids=["1x1s2", "s2d2", "s3k2", "s2x3d3g2"],
)
def test_input_grad_parity_phases(case):
    """The input gradient's parity split: every phase, with and without taps, every pixel."""
    tf32_off()
    from tritonnet import kernels

    x, w, b, conv = _kernel_args(case, torch.float32)
    y = reference.conv2d_forward(x, w, b, *conv)
    gy = torch.randn(y.shape, device=y.device)
    dx = kernels.conv2d_input_grad(gy, w, x.shape, *conv)
    assert_close_rel(dx, reference.conv2d_input_grad(gy, w, x.shape, *conv), 1e-5, "dx")
    xt = x.detach().requires_grad_()
    TF.conv2d(xt, w, b, *conv).backward(gy)
    assert_close_rel(dx, xt.grad, 1e-5, "dx vs torch")


def test_phase_taps_table():
    from tritonnet.kernels.conv_backward import _first_tap

    assert _first_tap(0, 1, 2, 3) == (0, 2)  # kh in {0, 2} for even phase
    assert _first_tap(1, 1, 2, 3) == (1, 2)
    assert _first_tap(1, 2, 2, 3)[0] >= 3  # dilation 2, stride 2: odd phase unreachable
    assert _first_tap(2, 2, 3, 5) == (1, 3)  # 1*2 = 2 (mod 3), then every 3rd tap
    assert _first_tap(0, 1, 3, 2) == (0, 3)


def test_weight_grad_split_k_covers_every_pixel():
    """A reduction long enough that the weight gradient is split over several programs."""
    tf32_off()
    from tritonnet import kernels
    from tritonnet.kernels import conv_backward as kconvb

    x = torch.randn(4, 2, 16, 16, device=KERNEL_DEVICE)
    gy = torch.randn(4, 3, 16, 16, device=KERNEL_DEVICE)
    conv = ((1, 1), (1, 1), (1, 1), 1)
    assert kconvb._split_k(4 * 16 * 16, 1, x.device) > 1
    dw, db = kernels.conv2d_weight_grad(gy, x, (3, 2, 3, 3), *conv)
    rw, rb = reference.conv2d_weight_grad(gy, x, (3, 2, 3, 3), *conv)
    assert_close_rel(dw, rw, 1e-5, "dw")
    assert_close_rel(db, rb, 1e-5, "db")



@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_weight_grad_sums_db_only_for_a_bias_that_needs_it(backend, monkeypatch):
    """A conv without a bias (every ResNet conv) asks the weight gradient for no db, so its
    kernel compiles without the reduction; dw is the same either way, and a bias that needs
    its gradient still gets it."""
    tf32_off()
    if backend == "triton":
        from tritonnet import kernels as prims
    else:
        prims = reference
    x = torch.randn(2, 4, 9, 9, device=KERNEL_DEVICE)
    gy = torch.randn(2, 6, 5, 5, device=KERNEL_DEVICE)
    conv = ((2, 2), (1, 1), (1, 1), 2)
    dw, db = prims.conv2d_weight_grad(gy, x, (6, 2, 3, 3), *conv, bias_grad=False)
    rw, rb = reference.conv2d_weight_grad(gy, x, (6, 2, 3, 3), *conv)
    assert_close_rel(dw, rw, 1e-5, "dw")
    assert db.shape == (0,)

    seen = []
    inner = prims.conv2d_weight_grad

    def spy(*args):
        seen.append(args[-1])
        return inner(*args)

    monkeypatch.setattr(prims, "conv2d_weight_grad", spy)
    w = torch.randn(6, 2, 3, 3, device=KERNEL_DEVICE, requires_grad=True)
    b = torch.randn(6, device=KERNEL_DEVICE)
    with tritonnet.use_backend(backend):
        for bias, wants in ((None, False), (b, False), (b, True)):
            b.requires_grad_(wants)
            w.grad = None
            F.conv2d(x, w, bias, 2, 1, 1, 2).backward(gy)
            assert seen[-1] is wants
            assert_close_rel(w.grad, rw, 1e-5, "dw")
        assert_close_rel(b.grad, rb, 1e-5, "db")

def test_triton_backend_end_to_end_fused_relu():
    tf32_off()
    tritonnet.set_backend("triton")
    x, w, b, _ = _kernel_args(CASES[1], torch.float32)
    y = TF.relu(TF.conv2d(x, w, b, 2, 1, 1, 2))
    gy = torch.randn_like(y)
    ours, og = _torch_grads(lambda x, w, b: F.conv2d(x, w, b, 2, 1, 1, 2, activation="relu"), x, w, b, gy)
    ref, rg = _torch_grads(lambda x, w, b: TF.relu(TF.conv2d(x, w, b, 2, 1, 1, 2)), x, w, b, gy)
    assert_close_rel(ours, ref, 1e-5, "y")
    for a, r, name in zip(og, rg, ["dx", "dw", "db"]):
        assert_close_rel(a, r, 1e-5, name)


def test_nan_propagates():
    tritonnet.set_backend("triton")
    x = torch.randn(1, 2, 5, 5, device=KERNEL_DEVICE)
    x[0, 1, 2, 2] = float("nan")
    w = torch.randn(3, 2, 3, 3, device=KERNEL_DEVICE)
    y = F.conv2d(x, w, padding=1)
    ref = TF.conv2d(x, w, padding=1)
    assert torch.equal(torch.isnan(y), torch.isnan(ref)) and torch.isnan(y).sum() == 27


def test_autocast_casts_like_torch():
    tritonnet.set_backend("reference")
    x, w = torch.randn(1, 3, 6, 6), torch.randn(4, 3, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, ref = F.conv2d(x, w), TF.conv2d(x, w)
    assert ours.dtype == ref.dtype == torch.bfloat16
    assert_close_rel(ours, ref, 1.6e-2)


@pytest.mark.parametrize("op", ["conv2d", "conv1d", "conv_transpose2d", "conv_transpose1d"])
def test_autocast_casts_mixed_dtypes_like_torch(op):
    """Under autocast a layer's input is often the previous layer's bf16 output while its
    weight and bias stay fp32: torch casts all three. conv1d and the transposed convs'
    1-D form checked the dtypes before casting, so a Conv1d or ConvTranspose1d after another
    layer raised 'input type (torch.bfloat16) and weight type (torch.float32) ... should be
    the same'. float64 stays float64 (and mixed with float32 raises, as torch's)."""
    tritonnet.set_backend("reference")
    torch.manual_seed(0)
    dims = 2 if op.endswith("2d") else 1
    x = torch.randn(2, 4, *([6] * dims))
    w = torch.randn(4, 3, *([3] * dims))  # (C_out, C_in/g) for conv, (C_in, C_out/g) for transposed
    w = w if "transpose" in op else w.transpose(0, 1).contiguous()
    b = torch.randn(3)
    for xd, wd in [(torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16), (torch.float32,) * 2]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ours = getattr(F, op)(x.to(xd), w.to(wd), b)
            ref = getattr(TF, op)(x.to(xd), w.to(wd), b)
        assert ours.dtype == ref.dtype == torch.bfloat16, (xd, wd)
        assert_close_rel(ours.float(), ref.float(), 1.6e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert getattr(F, op)(x.double(), w.double()).dtype == torch.float64
        with pytest.raises(RuntimeError):
            getattr(TF, op)(x.double(), w)
        with pytest.raises(RuntimeError, match="should be the same"):
            getattr(F, op)(x.double(), w)


# ---------------------------------------------------------------------------------------------
# modules


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv2d_module_matches_torch(padding_mode):
    torch.manual_seed(1)
    ref = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, padding_mode=padding_mode)
    torch.manual_seed(1)
    ours = tritonnet.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, padding_mode=padding_mode)
    # same constructor => same initialisation under the same seed
    torch.testing.assert_close(ours.weight, ref.weight)
    assert repr(ours) == repr(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(2, 4, 7, 7)
    torch.testing.assert_close(ours(x), ref(x))


def test_modules_state_dict_both_ways():
    pairs = [
        (tritonnet.nn.Conv1d(3, 4, 3), torch.nn.Conv1d(3, 4, 3)),
        (tritonnet.nn.ConvTranspose2d(3, 4, 3, stride=2), torch.nn.ConvTranspose2d(3, 4, 3, stride=2)),
        (tritonnet.nn.ConvTranspose1d(3, 4, 3), torch.nn.ConvTranspose1d(3, 4, 3)),
    ]
    for ours, ref in pairs:
        ours.load_state_dict(ref.state_dict())
        ref.load_state_dict(ours.state_dict())
        one_d = isinstance(ref, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))
        x = torch.randn((2, 3, 9) if one_d else (2, 3, 5, 5))
        torch.testing.assert_close(ours(x), ref(x))
        assert repr(ours) == repr(ref)
    up_ours, up_ref = pairs[1]
    x = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(up_ours(x, output_size=(12, 12)), up_ref(x, output_size=(12, 12)))
    # the transposed modules' forward refuses a padding_mode other than zeros set after
    # construction (their constructors refuse it), as torch's
    for ours, ref in pairs[1:]:
        x = torch.randn((2, 3, 9) if isinstance(ref, torch.nn.ConvTranspose1d) else (2, 3, 5, 5))
        for m in (ours, ref):
            m.padding_mode = "reflect"
            with pytest.raises(ValueError, match="Only `zeros` padding mode"):
                m(x)


# ---------------------------------------------------------------------------------------------
# errors: torch's exception type, a message with the values


@pytest.mark.parametrize(
    "kwargs,weight_shape,match",
    [
        ({}, (6, 3, 3, 3), r"expected input\[2, 4, 5, 5\] to have 3 channels, but got 4"),
        ({"groups": 2}, (5, 2, 3, 3), r"divisible by 2 at dimension 0.*\[5, 2, 3, 3\]"),
        ({"groups": 0}, (6, 4, 3, 3), "non-positive groups"),
        ({"stride": 0}, (6, 4, 3, 3), r"non-positive stride.*\[0, 0\]"),
        ({"stride": -1}, (6, 4, 3, 3), "non-positive stride"),
        ({"padding": -1}, (6, 4, 3, 3), "negative padding"),
        ({"dilation": 0}, (6, 4, 3, 3), "non-positive dilation"),
        ({"padding": "same", "stride": 2}, (6, 4, 3, 3), "'same' is not supported for strided"),
        ({"padding": "full"}, (6, 4, 3, 3), "Invalid padding string: 'full'"),
        ({}, (6, 4, 7, 7), r"padded input size per channel: \(5 x 5\). Kernel size: \(7 x 7\)"),
        ({"stride": (1, 1, 1)}, (6, 4, 3, 3), "list of 2 values"),
        ({}, (0, 4, 3, 3), r"expected weight to be at least 1 at dimension 0.*\[0, 4, 3, 3\]"),
        ({"groups": 2}, (0, 2, 3, 3), r"expected weight to be at least 2 at dimension 0"),
        ({}, (6, 4, 0, 3), "kernel size should be greater than zero.*kernel_height: 0 kernel_width: 3"),
    ],
)
def test_conv2d_errors(kwargs, weight_shape, match):
    x = torch.randn(2, 4, 5, 5)
    w = torch.randn(weight_shape)
    with pytest.raises(RuntimeError, match=match):
        F.conv2d(x, w, **kwargs)
    with pytest.raises(RuntimeError):  # torch raises the same type
        TF.conv2d(x, w, **kwargs)


def test_conv_arguments_must_be_ints():
    """stride, padding, dilation and output_padding take ints (numpy ints, 0-d integer tensors)
    as torch's argument parser does: a float, a bare bool or a string is torch's TypeError, not
    a silent int() (which made stride=1.5 a stride of 1) or int("s")'s ValueError."""
    import numpy as np

    x, w, wt = torch.randn(1, 4, 6, 6), torch.randn(6, 4, 3, 3), torch.randn(4, 6, 3, 3)
    calls = [
        (lambda m: m.conv2d(x, w, stride=1.5), "argument 'stride' must be tuple of ints, not float"),
        (lambda m: m.conv2d(x, w, stride=(2.0, 1)), "element of type float at pos 0"),
        (lambda m: m.conv2d(x, w, dilation=True), "argument 'dilation' must be tuple of ints, not bool"),
        (lambda m: m.conv1d(x[0], w[..., 0], stride=1.5), "conv1d.*'stride'"),
        (lambda m: m.conv_transpose2d(x, wt, stride=2.0), "conv_transpose2d.*'stride'"),
        (lambda m: m.conv_transpose2d(x, wt, padding=("same", "same")), "element of type str at pos 0"),
        (lambda m: m.conv_transpose2d(x, wt, output_padding=0.5, stride=2), "'output_padding'"),
        # types before any other check, as torch's argument parser: a 5-D weight, an integer
        # input, a wrong channel count
        (lambda m: m.conv2d(x, w[..., None], stride=(1, None)), "'stride'.*NoneType at pos 1"),
        (lambda m: m.conv2d(x.long(), w.long(), padding=1.5), "'padding'.*not float"),
        (lambda m: m.conv_transpose1d(x[0], w[..., 0], groups=1.0), "'groups'"),
        (lambda m: m.conv1d(x[0, :3], w[..., 0], dilation="1"), "'dilation'"),
    ]
    for call, match in calls:
        with pytest.raises(TypeError, match=match):
            call(F)
        with pytest.raises(TypeError):  # torch raises the same type
            call(TF)
    for kw in ({"stride": np.int64(2)}, {"stride": torch.tensor(2)}, {"padding": (1, True)}):
        torch.testing.assert_close(F.conv2d(x, w, **kw), TF.conv2d(x, w, **kw))


def test_1d_messages_show_1d_values():
    """conv1d and conv_transpose1d run on (N, C, 1, L) views; their messages show the shapes
    and values as the caller passed them, and name the op."""
    x, w = torch.randn(1, 2, 3), torch.randn(4, 2, 5)
    for call, match in [
        (lambda: F.conv1d(x, w), r"padded input size per channel: \(3\). Kernel size: \(5\)"),
        (lambda: F.conv1d(torch.randn(1, 3, 8), w), r"weight of size \[4, 2, 5\], expected input\[1, 3, 8\]"),
        (lambda: F.conv1d(x, w, stride=0), r"stride=\[0\]"),
        (lambda: F.conv_transpose1d(x, torch.randn(2, 4, 1), padding=3),
         r"conv_transpose1d: output size \[-3\].*input \[1, 2, 3\], weight \[2, 4, 1\]"),
        (lambda: F.conv_transpose1d(x, torch.randn(2, 4, 1), stride=2, output_padding=2),
         r"output_padding=\[2\], stride=\[2\], dilation=\[1\]"),
    ]:
        with pytest.raises(RuntimeError, match=match):
            call()


def test_conv2d_errors_bias_rank_dtype():
    x, w = torch.randn(2, 4, 5, 5), torch.randn(6, 4, 3, 3)
    with pytest.raises(RuntimeError, match="bias to be 1-dimensional with 6 elements.*\\[5\\]"):
        F.conv2d(x, w, torch.randn(5))
    with pytest.raises(RuntimeError, match=r"Expected 3D \(unbatched\) or 4D.*\[5, 5\]"):
        F.conv2d(torch.randn(5, 5), w)
    with pytest.raises(RuntimeError, match="torch.float32.*torch.float64"):
        F.conv2d(x, w.double())
    with pytest.raises(RuntimeError, match="output padding must be smaller"):
        F.conv_transpose2d(x, torch.randn(4, 3, 3, 3), stride=2, output_padding=2)
    with pytest.raises(RuntimeError, match="kernel size should be greater than zero.*kernel_height: 0"):
        F.conv_transpose2d(x, torch.randn(4, 3, 0, 3))
    for f in (F, TF):  # no input channels: torch rejects the weight (ours returned the bias)
        with pytest.raises(RuntimeError, match=r"at least 1 at dimension 0.*\[0, 4, 3, 3\]"):
            f.conv_transpose2d(x[:, :0], torch.randn(0, 4, 3, 3), torch.randn(4))
    for g in (1, 2):  # no output channels: torch raises too (for groups=2, from oneDNN)
        with pytest.raises(RuntimeError, match=r"non-empty 4D weight tensor expected.*\[4, 0, 3, 3\]"):
            F.conv_transpose2d(x, torch.randn(4, 0, 3, 3), groups=g)
        with pytest.raises(RuntimeError):
            TF.conv_transpose2d(x, torch.randn(4, 0, 3, 3), groups=g)


# ---------------------------------------------------------------------------------------------
# GPU only


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_every_config_including_num_warps_8(dtype, tol, monkeypatch):
    """Each autotune config of all three kernels, pinned one at a time, on 3x3 and 7x7 layers
    with ragged edges: guards the implicit-GEMM num_warps=8 hazard (PyTorch issue 173068)."""
    import triton

    from tritonnet import kernels
    from tritonnet.kernels import conv as kconv
    from tritonnet.kernels import conv_backward as kconvb

    tf32_off()
    pinned = {}
    monkeypatch.setattr(kconv, "_tuned", pinned)
    for case in [(4, 37, 15, 13, 45, 3, 1, 1, 1, 1), (2, 3, 33, 31, 20, 7, 2, 3, 1, 1)]:
        x, w, b, conv = _kernel_args(case, dtype, dev="cuda")
        ref = reference.conv2d_forward(x, w, b, *conv)
        gy = torch.randn(ref.shape, device="cuda").to(dtype)
        rdx = reference.conv2d_input_grad(gy, w, x.shape, *conv)
        rdw, rdb = reference.conv2d_weight_grad(gy, x, w.shape, *conv)
        for name, configs, kernel in [
            ("fwd", kconv._configs(), kconv._conv2d_fwd_kernel),
            ("dx", kconv._configs(), kconvb._conv2d_bwd_input_kernel),
            ("dw", kconvb._wgrad_configs(), kconvb._conv2d_bwd_weight_kernel),
        ]:
            for cfg in configs:
                pinned.clear()
                pinned[name] = triton.autotune(configs=[cfg], key=[])(kernel)
                if name == "fwd":
                    assert_close_rel(kernels.conv2d_forward(x, w, b, *conv), ref, tol, f"{case} {cfg}")
                elif name == "dx":
                    dx = kernels.conv2d_input_grad(gy, w, x.shape, *conv)
                    assert_close_rel(dx, rdx, tol, f"dx {case} {cfg}")
                else:
                    dw, db = kernels.conv2d_weight_grad(gy, x, w.shape, *conv)
                    assert_close_rel(dw, rdw, tol, f"dw {case} {cfg}")
                    assert_close_rel(db, rdb, tol, f"db {case} {cfg}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "channels_last"])
def test_depthwise_every_config_gpu(dtype, tol, cl, monkeypatch):
    """The depthwise stencil kernels with each config of their tuned sets pinned in turn, on
    MobileNet-like layers (a ragged 3x3 with each config; a 3x3 at stride 2, a 5x5 and a 7x7
    in turn), forward, input gradient and weight and bias gradients, against torch's CUDA
    convolution. (Each config compiles every kernel anew: two layers a config keep the test
    within the GPU session's test budget.)"""
    from tritonnet import kernels
    from tritonnet.kernels import depthwise as kdw
    from tritonnet.kernels import pool as kpool  # the stencils take the pool kernels' configs

    tritonnet.set_backend("triton")
    tf32_off()
    ragged = (8, 96, 57, 55, 3, 1)
    others = [(4, 144, 56, 56, 3, 2), (2, 40, 29, 31, 5, 1), (2, 24, 14, 14, 7, 1)]
    configs = kpool._configs()
    wgrad_configs = kdw._wgrad_configs(cl)
    for i in range(max(len(configs), len(wgrad_configs))):
        cfg, wcfg = configs[i % len(configs)], wgrad_configs[i % len(wgrad_configs)]
        monkeypatch.setattr(kpool, "_configs", lambda cfg=cfg: [cfg])
        monkeypatch.setattr(kdw, "_wgrad_configs", lambda cl, wcfg=wcfg: [wcfg])
        kpool._tuned.clear()
        for N, C, H, W, k, s in (ragged, others[i % len(others)]):
            x = torch.randn(N, C, H, W, device="cuda").to(dtype)
            x = x.to(memory_format=torch.channels_last) if cl else x
            w = torch.randn(C, 1, k, k, device="cuda").to(dtype)
            conv = ((s, s), (k // 2, k // 2), (1, 1), C)
            y = kernels.conv2d_forward(x, w, None, *conv)
            ref = TF.conv2d(x.float(), w.float(), None, s, k // 2, 1, C)
            assert_close_rel(y, ref, tol, f"{cfg} forward")
            gy = torch.randn(y.shape, device="cuda").to(dtype)
            dx = kernels.conv2d_input_grad(gy, w, x.shape, *conv)
            rdx = torch.nn.grad.conv2d_input(x.shape, w.float(), gy.float(), s, k // 2, 1, C)
            assert_close_rel(dx, rdx, tol, f"{cfg} dx")
            dw, db = kernels.conv2d_weight_grad(gy, x, w.shape, *conv)
            rdw = torch.nn.grad.conv2d_weight(x.float(), w.shape, gy.float(), s, k // 2, 1, C)
            assert_close_rel(dw, rdw, tol, f"{wcfg} dw")
            assert_close_rel(db, gy.float().sum((0, 2, 3)), tol, f"{wcfg} db")
    kpool._tuned.clear()


@pytest.mark.gpu
def test_split_k_every_config_gpu(monkeypatch):
    """The split-K variants (SPLIT_K compiles apart) of the forward and the input gradient,
    each autotune config pinned in turn, bf16, 3 shares forced on a ragged 3x3 layer."""
    import triton

    from tritonnet import kernels
    from tritonnet.kernels import conv as kconv
    from tritonnet.kernels import conv_backward as kconvb

    pinned = {}
    monkeypatch.setattr(kconv, "_tuned", pinned)
    for mod in (kconv, kconvb):
        monkeypatch.setattr(mod, "_split_gemm", lambda *a: 3)
    x, w, b, conv = _kernel_args((4, 37, 15, 13, 45, 3, 1, 1, 1, 1), torch.bfloat16, dev="cuda")
    ref = reference.conv2d_forward(x, w, b, *conv, "relu")
    gy = torch.randn(ref.shape, device="cuda").to(torch.bfloat16)
    rdx = reference.conv2d_input_grad(gy, w, x.shape, *conv)
    for cfg in kconv._configs():
        pinned.clear()
        pinned["fwd"] = triton.autotune(configs=[cfg], key=[])(kconv._conv2d_fwd_kernel)
        pinned["dx"] = triton.autotune(configs=[cfg], key=[])(kconvb._conv2d_bwd_input_kernel)
        assert_close_rel(kernels.conv2d_forward(x, w, b, *conv, activation="relu"), ref, 1.6e-2, f"{cfg}")
        assert_close_rel(kernels.conv2d_input_grad(gy, w, x.shape, *conv), rdx, 1.6e-2, f"dx {cfg}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_resnet_shapes_gpu(dtype, tol, channels_last):
    tf32_off()
    tritonnet.set_backend("triton")
    for case in [(32, 64, 56, 56, 64, 3, 1, 1, 1, 1), (32, 128, 28, 28, 256, 3, 2, 1, 1, 1),
                 (32, 3, 224, 224, 64, 7, 2, 3, 1, 1), (32, 256, 14, 14, 512, 1, 2, 0, 1, 1)]:
        x, w, b, (s, p, d, g) = _kernel_args(case, dtype, channels_last, dev="cuda")
        y = F.conv2d(x, w, b, s, p, d, g)
        ref = TF.conv2d(x.double(), w.double(), b.double(), s, p, d, g)
        assert_close_rel(y, ref, tol, f"{case}")


@pytest.mark.gpu
def test_more_than_2_31_elements():
    """int64 offsets: an input of more than 2**31 elements (bf16, ~4.3 GB)."""
    tritonnet.set_backend("triton")
    x = torch.randn(1, 2, 32769, 32769, device="cuda", dtype=torch.bfloat16)  # 2**31 + 131074
    assert x.numel() > 2**31
    w = torch.randn(2, 2, 1, 1, device="cuda", dtype=torch.bfloat16)
    y = F.conv2d(x, w)
    ref = TF.conv2d(x[:, :, -8:, -8:].float(), w.float())
    assert_close_rel(y[:, :, -8:, -8:], ref, 1.6e-2, "last rows")
