"""Seeded random sweeps of conv2d / conv_transpose2d and the pools against torch: odd sizes,
strides, paddings, dilations, groups, ceil_mode, layouts (NCHW, channels_last, slices of it,
unbatched), ties and NaN. Each case checks the result, the gradients (the incoming gradient
dense, expanded, channels_last or strided; weights and biases sliced, expanded or transposed)
and the result's layout.
Sweeps like these found the output_padding < dilation failure, the conv layout rule's misses
(slices, size-1 dims) and the windows of padding only; the fixed-shape tests had passed.

The counts are small (the Triton backend runs interpreted without a GPU, and on one every new
shape autotunes); TRITONNET_FULL=1 makes them larger. A failure prints the case, reproducible
by its seed."""

import os
import random

import pytest
import torch
import torch.nn.functional as TF

import tritonnet
import tritonnet.functional as F
from tests.helpers import KERNEL_DEVICE, tf32_off

BACKENDS = ["reference", "triton"]
BIG = os.environ.get("TRITONNET_FULL") == "1"  # not on a GPU alone: every new shape autotunes there


def _device(backend):
    return KERNEL_DEVICE if backend == "triton" else "cpu"


def _layout(rng, x):
    """NCHW, channels_last, a slice of a channels_last tensor (strided, channels_last to torch)."""
    kind = rng.choice(["nchw", "cl", "slice"])
    if kind == "cl":
        return x.to(memory_format=torch.channels_last)
    if kind == "slice":
        pad = torch.cat([x, x[:, :, :1]], 2).to(memory_format=torch.channels_last)
        return pad[:, :, : x.shape[2]]
    return x


def _weight_layout(u, io, k, dev):
    """A conv weight of shape (*io, *k) by ``u`` in [0, 1): channels_last, a step-2 slice along
    either channel dim, a view with its kernel's H and W transposed, expanded along the first
    dim (a weight shared by every channel), or dense."""
    (a, b), shape = io, (*io, *k)
    if u < 0.3:
        return torch.randn(shape, device=dev).to(memory_format=torch.channels_last)
    if u < 0.38:
        return torch.randn(2 * a, b, *k, device=dev)[::2]
    if u < 0.46:
        return torch.randn(a, 2 * b, *k, device=dev)[:, ::2]
    if u < 0.52:
        return torch.randn(a, b, k[1], k[0], device=dev).transpose(2, 3)
    if u < 0.58:
        return torch.randn(1, b, *k, device=dev).expand(shape)
    return torch.randn(shape, device=dev)


def _conv_case(rng, dev):
    g = rng.choice([1, 1, 2, 3])
    cg, og = rng.choice([1, 2, 3, 5, 16]), rng.choice([1, 2, 4, 7, 16])
    k = (rng.choice([1, 2, 3, 5]), rng.choice([1, 3, 4]))
    s = (rng.choice([1, 2, 3]), rng.choice([1, 2]))
    d = (rng.choice([1, 1, 2]), rng.choice([1, 2]))
    p = (rng.randint(0, 2), rng.randint(0, 2))
    size = [rng.randint(max(1, d[i] * (k[i] - 1) + 1 - 2 * p[i]), 11) for i in (0, 1)]
    x = _layout(rng, torch.randn(rng.choice([1, 2]), cg * g, *size, device=dev))
    transpose = rng.random() < 0.35
    w = _weight_layout(rng.random(), (cg * g, og) if transpose else (og * g, cg), k, dev)
    u = rng.random()  # no bias, or one dense, a step-2 slice or expanded from one value
    b = None if u >= 0.5 else torch.randn(og * g, device=dev) if u >= 0.15 else (
        torch.randn(2 * og * g, device=dev)[::2] if u >= 0.05 else torch.randn(1, device=dev).expand(og * g))
    if transpose:
        op = tuple(rng.randint(0, max(s[i], d[i]) - 1) for i in (0, 1))

        def fn(m):
            return lambda x, w, b: m.conv_transpose2d(x, w, b, s, p, op, g, d)
    else:

        def fn(m):
            return lambda x, w, b: m.conv2d(x, w, b, s, p, d, g)

    return fn, (x, w, b)


def _pool_case(rng, dev):
    # channel counts past one column block whose largest power-of-2 divisor is 4 or 16 (12, 48:
    # channels_last blocks that divide C, kernels/pool.py _view)
    x = torch.randn(rng.choice([1, 2]), rng.choice([1, 3, 8, 12, 48]), rng.randint(1, 13), rng.randint(1, 13),
                    device=dev)
    if rng.random() < 0.25:
        x = x.round()  # ties
    if rng.random() < 0.1:
        x[0, 0, rng.randrange(x.shape[2]), rng.randrange(x.shape[3])] = float("nan")
    x = _layout(rng, x)
    if rng.random() < 0.15:
        x = x[0]  # unbatched
    op = rng.choice(["max", "avg", "amax", "aavg"])
    k = (rng.randint(1, 4), rng.randint(1, 4))
    s = (rng.randint(1, 3), rng.randint(1, 3))
    p = (rng.randint(0, k[0] // 2), rng.randint(0, k[1] // 2))
    d = (rng.randint(1, 2), rng.randint(1, 2))
    ceil = rng.random() < 0.4
    out = (rng.randint(1, 6), rng.choice([None, 1, 3, 7]))
    include_pad, divisor = rng.random() < 0.5, rng.choice([None, None, 3])

    def fn(m):
        if op == "max":
            return lambda t: m.max_pool2d(t, k, s, p, d, ceil, True)
        if op == "avg":
            return lambda t: m.avg_pool2d(t, k, s, p, ceil, include_pad, divisor)
        if op == "amax":
            return lambda t: m.adaptive_max_pool2d(t, out, True)
        return lambda t: m.adaptive_avg_pool2d(t, out)

    return fn, (x,), op in ("max", "amax")


def _grad(rng, shape, dev):
    """The gradient arriving at an output: dense, expanded from a scalar (what ``.sum()`` sends
    back: every stride 0), channels_last, or a step-2 slice."""
    kind = rng.choice(["dense", "expanded", "cl", "step2"])
    if kind == "expanded":
        return torch.randn((), device=dev).expand(shape)
    if kind == "cl" and len(shape) == 4:
        return torch.randn(shape, device=dev).to(memory_format=torch.channels_last)
    if kind == "step2":
        return torch.randn(*shape[:-1], 2 * shape[-1], device=dev)[..., ::2]
    return torch.randn(shape, device=dev)


def _float64(a):
    """``a`` in float64 with ``a``'s own strides and offset (a slice, an expanded or a
    transposed view stays one), where ``a.double()`` would make a strided tensor dense: torch
    lays out a convolution's result by its operands' strides, the same in float64 as in
    float32 on the CPU (480 cases of this sweep). torch 2.13's CPU float32 conv2d segfaults on
    one case of the full sweep (channels_last with a bias, kernel (5, 1), stride 2, padding
    (0, 1), dilation (1, 2), W = 1); float64 takes another path."""
    if a is None:
        return None
    flat = torch.empty(0, dtype=a.dtype, device=a.device).set_(a.untyped_storage())
    return flat.double().as_strided(a.shape, a.stride(), a.storage_offset())


def _describe(*tensors):
    return " ".join(f"{tuple(t.shape)}@{t.stride()}" for t in tensors if t is not None)


def _sweep(backend, seed, count, make):
    """Cases from ``make(rng, device)`` that torch accepts (``case[0](TF)`` on the CPU copies of
    ``case[1]`` runs), ``count`` of them, each with a description naming it and the seed."""
    tritonnet.set_backend(backend)
    tf32_off()  # fp32 against float64 at full precision on a GPU too
    rng, dev = random.Random(seed), _device(backend)
    n = 0
    while n < count:
        case = make(rng, dev)
        fn, args = case[0], case[1]
        try:
            fn(TF)(*(a.cpu().double() if a is not None else None for a in args))
        except RuntimeError:
            continue  # a combination torch refuses (an output smaller than 1, say)
        n += 1
        yield f"case {n} (seed {seed}): {_describe(*args)}", case


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv_sweep(backend):
    count = 120 if BIG else 14 if backend == "triton" else 60
    for what, (fn, args) in _sweep(backend, 2026, count, _conv_case):
        dev = args[0].device
        want = fn(TF)(*(_float64(a) for a in args))
        ours = [a.detach().requires_grad_() if a is not None else None for a in args]
        theirs = [a.detach().double().requires_grad_() if a is not None else None for a in args]
        y, yr = fn(F)(*ours), fn(TF)(*theirs)
        gy = _grad(random.Random(what), yr.shape, dev)
        grads = torch.autograd.grad(y, [a for a in ours if a is not None], gy)
        rgrads = torch.autograd.grad(yr, [a for a in theirs if a is not None], gy.double())
        for a, r in zip((y, *grads), (want, *rgrads)):
            torch.testing.assert_close(a.double(), r, rtol=1e-4, atol=1e-4, msg=what)
        # torch's layout from the same strides: in float64 on the CPU (see _float64), and on a
        # GPU in the dtype itself (cuDNN's layout rule might treat float64 apart)
        assert y.stride() == (want if dev.type == "cpu" else fn(TF)(*args)).stride(), what


@pytest.mark.parametrize("backend", BACKENDS)
def test_pool_sweep(backend):
    count = 400 if BIG else 40 if backend == "triton" else 150
    for what, (fn, (x,), has_indices) in _sweep(backend, 1201, count, _pool_case):
        dev = x.device
        xs, xr = x.detach().requires_grad_(), x.detach().cpu().requires_grad_()
        y, yr = fn(F)(xs), fn(TF)(xr)
        if has_indices:
            (y, idx), (yr, ridx) = y, yr
            assert torch.equal(idx.cpu(), ridx) and idx.stride() == ridx.stride(), what
        torch.testing.assert_close(y.cpu(), yr, equal_nan=True, msg=what)
        assert y.stride() == yr.stride(), what
        if has_indices and (yr == float("-inf")).any():
            continue  # a window of padding only: torch's backward writes out of bounds there
        gy = _grad(random.Random(what), yr.shape, "cpu")
        (g,) = torch.autograd.grad(y, xs, gy.to(dev))
        (gr,) = torch.autograd.grad(yr, xr, gy)
        torch.testing.assert_close(g.cpu(), gr, equal_nan=True, msg=what)


# Layers of known networks, outside the sweeps' ranges (kernels to 16, strides to 16, dilations
# to 18, 32 groups), at small sizes: (N, C, H, W, C_out, kernel, stride, padding, dilation,
# groups, transposed output_padding or None). The Triton backend runs those marked True (the
# others take 6 s to minutes each in the interpreter); the reference backend runs all.
ARCH_CONVS = {
    "vit_patch16": ((2, 3, 32, 32, 8, 16, 16, 0, 1, 1, None), True),
    "alexnet_stem_11s4": ((1, 3, 35, 35, 8, 11, 4, 2, 1, 1, None), True),
    "aspp_d12": ((1, 4, 20, 20, 5, 3, 1, 12, 12, 1, None), True),
    "aspp_d18": ((1, 4, 20, 20, 5, 3, 1, 18, 18, 1, None), False),
    "inception_1x7": ((1, 6, 9, 9, 5, (1, 7), 1, (0, 3), 1, 1, None), True),
    "resnext_g32": ((1, 64, 6, 6, 64, 3, 1, 1, 1, 32, None), False),
    "convnext_dw7": ((2, 8, 9, 9, 8, 7, 1, 3, 1, 8, None), False),
    "effnet_dw5s2": ((1, 8, 11, 11, 8, 5, 2, 2, 1, 8, None), True),
    "srcnn_9x9": ((1, 1, 14, 14, 4, 9, 1, 4, 1, 1, None), False),
    "se_fc_1x1": ((2, 4, 1, 1, 300, 1, 1, 0, 1, 1, None), True),
    "fcn_up_16s8": ((1, 3, 3, 3, 3, 16, 8, 4, 1, 1, (0, 0)), True),
    "dcgan_4s2p1": ((2, 8, 4, 4, 4, 4, 2, 1, 1, 1, (0, 0)), True),
    "dw_up_4s2p1": ((1, 4, 5, 5, 4, 4, 2, 1, 1, 4, (0, 0)), False),
    "up_3s3_op2": ((1, 2, 3, 3, 2, 2, 3, 0, 1, 1, (2, 2)), True),
}
ARCH_POOLS = {  # name: (input shape, op(module), Triton)
    "yolo_spp_max13": ((1, 4, 13, 13), lambda m, x: m.max_pool2d(x, 13, 1, 6), True),
    "googlenet_max3s2_ceil": ((2, 3, 14, 14), lambda m, x: m.max_pool2d(x, 3, 2, ceil_mode=True), True),
    "inception_avg_nopad": ((2, 3, 9, 9),
                            lambda m, x: m.avg_pool2d(x, 3, 1, 1, count_include_pad=False), True),
    "vgg_adaptive7_up": ((1, 4, 5, 3), lambda m, x: m.adaptive_max_pool2d(x, 7), True),
    "alexnet_adaptive6": ((1, 4, 13, 13), lambda m, x: m.adaptive_avg_pool2d(x, 6), True),
    "nearest_1.7": ((1, 3, 5, 4), lambda m, x: m.interpolate(x, scale_factor=1.7), True),
}


def _arch_cases(backend):
    for name, (args, on_triton) in ARCH_CONVS.items():
        if backend == "reference" or on_triton:
            yield name, args
    for name, case in ARCH_POOLS.items():
        if backend == "reference" or case[2]:
            yield name, case[:2]


@pytest.mark.parametrize("backend", BACKENDS)
def test_layers_of_known_networks(backend):
    """Forward and every gradient against torch in float64; the cases' inputs NCHW and
    channels_last alternately."""
    tritonnet.set_backend(backend)
    tf32_off()
    dev = _device(backend)
    gen = torch.Generator().manual_seed(7)
    for i, (name, case) in enumerate(_arch_cases(backend)):
        if len(case) == 11:
            N, C, H, W, Co, k, s, p, d, g, op = case
            kh, kw = (k, k) if isinstance(k, int) else k
            wshape = (C, Co // g, kh, kw) if op is not None else (Co, C // g, kh, kw)
            x, w, b = (torch.randn(shape, generator=gen) for shape in ((N, C, H, W), wshape, (Co,)))
            if op is not None:
                def fn(m, x, w, b, s=s, p=p, op=op, g=g, d=d):
                    return m.conv_transpose2d(x, w, b, s, p, op, g, d)
            else:
                def fn(m, x, w, b, s=s, p=p, d=d, g=g):
                    return m.conv2d(x, w, b, s, p, d, g)
            tensors = [x, w, b]
        else:
            shape, op_fn = case
            tensors = [torch.randn(shape, generator=gen)]
            fn = op_fn
        if i % 2:
            tensors[0] = tensors[0].to(memory_format=torch.channels_last)
        ours = [t.to(dev).requires_grad_() for t in tensors]
        theirs = [t.double().requires_grad_() for t in tensors]
        y, yr = fn(F, *ours), fn(TF, *theirs)
        gy = torch.randn(yr.shape, generator=gen)
        grads = torch.autograd.grad(y, ours, gy.to(dev))
        rgrads = torch.autograd.grad(yr, theirs, gy.double())
        for a, r in zip((y, *grads), (yr, *rgrads)):
            torch.testing.assert_close(a.cpu().double(), r, rtol=1e-4, atol=1e-4, msg=name)
        assert y.stride() == fn(TF, *tensors).stride(), name
