"""interpolate (nearest, nearest-exact, area; other modes are torch's) and Upsample: reference vs
torch in float64, gradcheck through the reference, Triton kernels vs reference, every output
written, modules, errors."""

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tritonnet
import tritonnet.functional as F
from tests.helpers import DTYPES, FULL, KERNEL_DEVICE, assert_close_rel
from tritonnet import reference

# (input shape, interpolate keyword arguments): 1, 2 and 3 spatial dimensions
CASES = [
    ((2, 3, 5), {"scale_factor": 2}),  # 1-D, x2
    ((2, 3, 7), {"size": 16}),  # 1-D, size that is no multiple
    ((2, 3, 5, 7), {"scale_factor": 2}),  # 2-D, x2 (the U-Net / FPN case)
    ((2, 3, 5, 7), {"scale_factor": (1.5, 0.7)}),  # up along H, down along W
    ((1, 2, 6, 9), {"size": (4, 13)}),
    ((2, 3, 7, 5), {"scale_factor": 2.6, "recompute_scale_factor": True}),
    ((1, 2, 3, 4, 5), {"scale_factor": (2, 1.5, 0.6)}),  # 3-D
    ((1, 2, 4, 3, 5), {"size": (5, 7, 2)}),
]
IDS = ["1d-x2", "1d-size", "2d-x2", "2d-up-down", "2d-size", "2d-recompute", "3d-scales", "3d-size"]


def _layout(x, channels_last):
    if not channels_last:
        return x
    return x.to(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)


def _is_cl(t):
    if t.dim() == 4:
        return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    if t.dim() == 5:
        return t.is_contiguous(memory_format=torch.channels_last_3d) and not t.is_contiguous()
    return False


def _grads(fn, x, g):
    xr = x.detach().requires_grad_()
    y = fn(xr)
    (gx,) = torch.autograd.grad(y, xr, g)
    return y, gx


def _params(cases, ids):
    return [
        pytest.param(case, cl, id=f"{name}{'-cl' if cl else ''}")
        for case, name in zip(cases, ids)
        for cl in ([False, True] if len(case[0]) > 3 else [False])
    ]


# ---------------------------------------------------------------------------------------------
# the reference path against torch, float64


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
@pytest.mark.parametrize("case,cl", _params(CASES, IDS))
def test_reference_matches_torch(case, cl, mode):
    tritonnet.set_backend("reference")
    shape, kw = case
    x = _layout(torch.randn(shape, dtype=torch.float64), cl)
    g = torch.randn_like(TF.interpolate(x, mode=mode, **kw))
    ref, rg = _grads(lambda t: TF.interpolate(t, mode=mode, **kw), x, g)
    ours, og = _grads(lambda t: F.interpolate(t, mode=mode, **kw), x, g)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    torch.testing.assert_close(og, rg)
    assert _is_cl(ours) == _is_cl(ref) and ours.is_contiguous() == ref.is_contiguous()


@pytest.mark.parametrize("rank", [3, 4, 5])
def test_scale_rounding_to_same_or_double_size(rank):
    """A scale_factor like 1.2 on 3 positions gives 3 outputs; torch's CPU 4-D 'nearest' then
    copies (src = o) and 1-D / 3-D use floor(o / 1.2). Forward as torch for each rank; the
    gradient is the true adjoint of that forward (torch's own 1-D / 3-D backward short-cuts
    there, so it does not match its forward in this corner)."""
    tritonnet.set_backend("reference")
    for size, sf in [(3, 1.2), (3, 2.1), (5, 2.1)]:
        shape = (1, 2) + (2,) * (rank - 3) + (size,)
        scale = (1.0,) * (rank - 3) + (sf,)
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        torch.testing.assert_close(F.interpolate(x, scale_factor=scale),
                                   TF.interpolate(x, scale_factor=scale), rtol=0, atol=0)
        assert torch.autograd.gradcheck(lambda t, sc=scale: F.interpolate(t, scale_factor=sc), (x,))


@pytest.mark.parametrize("case", [((2, 3, 9), 4), ((2, 3, 7, 9), (3, 5)), ((2, 3, 6, 6), 0.5)],
                         ids=["1d", "2d", "2d-scale"])
def test_area_mode_runs_adaptive_avg_pool(case):
    tritonnet.set_backend("reference")
    shape, arg = case
    kw = {"scale_factor": arg} if isinstance(arg, float) else {"size": arg}
    x = torch.randn(shape, dtype=torch.float64)
    g = torch.randn_like(TF.interpolate(x, mode="area", **kw))
    ref, rg = _grads(lambda t: TF.interpolate(t, mode="area", **kw), x, g)
    ours, og = _grads(lambda t: F.interpolate(t, mode="area", **kw), x, g)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(og, rg)


@pytest.mark.parametrize("mode,shape", [("linear", (1, 2, 5)), ("bilinear", (1, 2, 4, 5)),
                                        ("bicubic", (1, 2, 4, 5)), ("trilinear", (1, 1, 3, 4, 5)),
                                        ("area", (1, 1, 4, 4, 4))])
def test_other_modes_are_torch(mode, shape):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    for ac in ([None] if mode == "area" else [False, True]):
        torch.testing.assert_close(F.interpolate(x, scale_factor=2, mode=mode, align_corners=ac),
                                   TF.interpolate(x, scale_factor=2, mode=mode, align_corners=ac))


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
@pytest.mark.parametrize("shape,kw", [((1, 2, 5), {"scale_factor": 2.5}), ((1, 2, 3, 4), {"size": (7, 3)}),
                                      ((1, 1, 2, 3, 3), {"scale_factor": (1.5, 2, 0.7)})],
                         ids=["1d", "2d", "3d"])
def test_gradcheck(shape, kw, mode):
    tritonnet.set_backend("reference")
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: F.interpolate(t, mode=mode, **kw), (x,))


def test_empty_batch():
    tritonnet.set_backend("reference")
    x = torch.randn(0, 2, 3, 4, requires_grad=True)
    y = F.interpolate(x, scale_factor=2)
    assert y.shape == TF.interpolate(x, scale_factor=2).shape == (0, 2, 6, 8)
    y.sum().backward()
    assert x.grad.shape == x.shape


# ---------------------------------------------------------------------------------------------
# Triton kernels against the reference (interpreter on CPU, native on a GPU)


def _sizes(shape, kw):
    """(output spatial sizes, scales for the primitive) as F.interpolate computes them."""
    dim = len(shape) - 2
    if "size" in kw:
        size = kw["size"]
        return list(size) if isinstance(size, tuple) else [size] * dim, [0.0] * dim
    sf = kw["scale_factor"]
    sf = list(sf) if isinstance(sf, tuple) else [sf] * dim
    out = [int(i * s) for i, s in zip(shape[2:], sf)]
    return out, ([0.0] * dim if kw.get("recompute_scale_factor") else [float(s) for s in sf])


def _check(kernels, x, out, scales, exact, cl, tol):
    y = kernels.upsample_nearest_forward(x, out, scales, exact, cl)
    ry = reference.upsample_nearest_forward(x, out, scales, exact, cl)
    assert y.dtype == x.dtype and _is_cl(y) == cl
    assert torch.equal(y, ry)  # a copy: bitwise
    g = torch.randn(y.shape, device=y.device).to(x.dtype)
    dx = kernels.upsample_nearest_backward(g, x.shape, scales, exact, cl)
    rdx = reference.upsample_nearest_backward(g, x.shape, scales, exact, cl)
    assert dx.shape == x.shape and _is_cl(dx) == cl
    assert_close_rel(dx, rdx, tol, "dx")


KCASES = list(range(len(CASES))) if FULL else [0, 3, 5, 6]


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("exact", [False, True], ids=["nearest", "exact"])
@pytest.mark.parametrize("case,cl", _params([CASES[i] for i in KCASES], [IDS[i] for i in KCASES]))
def test_kernels_match_reference(case, cl, exact, dtype, tol):
    from tritonnet import kernels

    shape, kw = case
    x = _layout(torch.randn(shape, device=KERNEL_DEVICE).to(dtype), cl)
    out, scales = _sizes(shape, kw)
    _check(kernels, x, out, scales, exact, cl, tol)


def test_kernels_strided_input():
    from tritonnet import kernels

    x = torch.randn(2, 3, 5, 14, device=KERNEL_DEVICE)[..., ::2]
    _check(kernels, x, [9, 15], [1.8, 2.2], False, False, 1e-5)


@pytest.mark.parametrize("wide", [False, True], ids=["int32", "int64"])
def test_kernels_x2_loads_each_input_column_once(wide, monkeypatch):
    """4-D x2 nearest takes the 'half' map along W, where the forward loads each input column
    once and writes it twice (interleaved): both layouts, a strided input, widths that end a
    column block part-way and odd ones, against the reference bitwise; also with the int64
    offsets a tensor past 2**31 elements gets (forced here)."""
    from tritonnet import kernels
    from tritonnet.kernels import upsample as kup

    if wide:
        monkeypatch.setattr(kup, "index64", lambda *t: True)

    assert kup._maps((5, 7), (10, 14), (2.0, 2.0), False, 4)[1:] == [("half", 0.5)] * 2
    for shape in [(2, 3, 5, 7), (1, 2, 3, 9), (2, 2, 4, 6)]:
        for cl in (False, True):
            x = _layout(torch.randn(shape, device=KERNEL_DEVICE), cl)
            _check(kernels, x, [2 * shape[2], 2 * shape[3]], [2.0, 2.0], False, cl, 1e-5)
        xs = torch.randn(*shape[:3], 2 * shape[3] + 1, device=KERNEL_DEVICE)[..., 1::2]  # strided
        _check(kernels, xs, [2 * shape[2], 2 * shape[3]], [2.0, 2.0], False, False, 1e-5)


# adversarial (input size, scale_factor or None for a size): non-terminating binary scales,
# prime sizes, downsampling that skips inputs, and the same/double-size corners
FIRST_CASES = [
    (1, 3.0), (3, 1.2), (5, 2.1), (7, 1 / 3), (10, 2.7), (11, 0.7), (13, 3.3), (17, 0.45),
    (9, None), (23, 4.9),
]
if FULL:
    FIRST_CASES += [(2, 1.2), (3, 2.1), (7, 0.3), (13, 1.7), (6, None), (29, 0.9)]
    FIRST_CASES += [
        (i, s) for i in (2, 4, 8, 15, 31, 64) for s in (0.26, 0.5, 0.77, 1.01, 1.5, 2.0, 2.49, 3.14, 6.0)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("exact", [False, True], ids=["nearest", "exact"])
def test_kernel_backward_ranges_exact(exact):
    """The backward kernel finds each input's range of outputs from an estimate and six
    candidates; checked against the reference's searchsorted over many size/scale pairs, in
    1-D, 2-D (short-cut maps) and 3-D."""
    from tritonnet import kernels

    for i, sf in FIRST_CASES:
        for rank in (3, 4, 5):
            shape = (1, 2) + (1,) * (rank - 3) + (i,)
            if sf is None:
                out, scales = [1] * (rank - 3) + [2 * i + 3], [0.0] * (rank - 2)
            else:
                out, scales = [1] * (rank - 3) + [int(i * sf)], [1.0] * (rank - 3) + [sf]
            if out[-1] == 0:
                continue
            x = torch.randn(shape, device=KERNEL_DEVICE)
            _check(kernels, x, out, scales, exact, False, 1e-6)


def test_kernels_write_every_element(monkeypatch):
    from tritonnet import kernels

    real = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: real(*a, **k).fill_(float("nan")))
    for shape, out, scales in [((2, 3, 5, 4), [11, 3], [2.3, 0.0]), ((1, 2, 3, 2, 5), [2, 5, 9], [0.0] * 3)]:
        for cl in (False, True):
            x = _layout(torch.randn(shape, device=KERNEL_DEVICE), cl)
            y = kernels.upsample_nearest_forward(x, out, scales, False, cl)
            dx = kernels.upsample_nearest_backward(torch.randn(y.shape, device=y.device), x.shape,
                                                   scales, False, cl)
            assert not torch.isnan(y).any() and not torch.isnan(dx).any()


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_triton_backend_end_to_end(dtype, tol):
    tritonnet.set_backend("triton")
    x = torch.randn(2, 3, 5, 6, device=KERNEL_DEVICE).to(dtype)
    xr = x.float()
    for kw in [
        {"scale_factor": 2},
        {"size": (7, 4), "mode": "nearest-exact"},
        {"size": (2, 3), "mode": "area"},
    ]:
        ref = TF.interpolate(xr, **kw)
        g = torch.randn_like(ref)
        y, gx = _grads(lambda t, kw=kw: F.interpolate(t, **kw), x, g.to(dtype))
        r, rg = _grads(lambda t, kw=kw: TF.interpolate(t, **kw), xr, g)
        assert y.dtype == gx.dtype == dtype
        assert_close_rel(y, r, tol, "y")
        assert_close_rel(gx, rg, tol, "dx")


# ---------------------------------------------------------------------------------------------
# modules, errors


def test_modules_match_torch():
    tritonnet.set_backend("reference")
    x = torch.randn(2, 3, 4, 5)
    for name, kwargs in [
        ("Upsample", {"scale_factor": 2}),
        ("Upsample", {"size": (7, 3), "mode": "nearest-exact"}),
        ("Upsample", {"scale_factor": 1.5, "mode": "bilinear"}),
        ("UpsamplingNearest2d", {"scale_factor": 3}),
    ]:
        ours, theirs = getattr(tritonnet.nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs)
        assert type(ours).__bases__ == (type(theirs),)
        assert repr(ours) == repr(theirs)
        torch.testing.assert_close(ours(x), theirs(x))
    model = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2))
    tritonnet.convert(model)
    assert isinstance(model[0], tritonnet.nn.Upsample)


X4 = (1, 2, 9, 9)
ERRORS = [
    # (input shape, kwargs, words the message must contain)
    (X4, {"scale_factor": 2.0, "align_corners": True}, ["align_corners", "nearest"]),
    (X4, {"size": 3, "scale_factor": 2}, ["size=3", "scale_factor=2"]),
    (X4, {}, ["size=None", "scale_factor=None"]),
    (X4, {"size": (2, 2, 2)}, ["[9, 9]", "(2, 2, 2)"]),
    (X4, {"scale_factor": (2.0, 2.0, 2.0)}, ["[9, 9]", "(2.0, 2.0, 2.0)"]),
    (X4, {"size": 3, "recompute_scale_factor": True}, ["recompute_scale_factor"]),
    (X4, {"size": (3.0, 3)}, ["(3.0, 3)"]),
    (X4, {"size": 0}, ["[9, 9]", "[0, 0]"]),
    (X4, {"scale_factor": 0.1}, ["[9, 9]", "[0, 0]"]),
    ((3, 4), {"scale_factor": 2}, ["2-D", "(3, 4)"]),
    ((1, 1, 1, 1, 1, 4), {"scale_factor": 2}, ["6-D"]),
    ((1, 0, 3, 3), {"size": 3}, ["(1, 0, 3, 3)"]),
    ((1, 2, 0, 3), {"size": 3}, ["[0, 3]"]),
    # torch's order: counts and a size's types, recompute_scale_factor, then the input's rank
    ((5, 3), {"scale_factor": (2.0,)}, ["scale_factor=(2.0,)"]),
    ((1, 1, 1, 1, 1, 4), {"size": 3, "recompute_scale_factor": True}, ["recompute_scale_factor"]),
    (X4, {"size": (4, 2.0), "recompute_scale_factor": True}, ["(4, 2.0)"]),
    ((1, 1, 1, 1, 1, 4), {"size": (1, 2, 3, 4.0)}, ["(1, 2, 3, 4.0)"]),
    # the recomputed sizes are torch's int(size * scale): NaN ValueError, Inf OverflowError
    (X4, {"scale_factor": float("nan"), "recompute_scale_factor": True}, ["NaN"]),
    (X4, {"scale_factor": float("inf"), "mode": "area"}, ["infinity"]),
    (X4, {"scale_factor": -1.0, "mode": "area"}, ["-9"]),
]


def test_sizes_torch_takes():
    """'area' is torch's adaptive_avg_pool2d (1d for 3-D input), which takes an empty output
    and no channels; the recomputed path takes any factor that multiplies an int (a 0-d
    tensor, a Fraction), as torch's does."""
    for backend in ("reference", "triton"):
        tritonnet.set_backend(backend)
        for shape, kw in [((1, 3, 4, 4), {"size": (0, 2), "mode": "area"}),
                          ((1, 3, 4, 4), {"scale_factor": 0.2, "mode": "area"}),
                          ((1, 0, 4, 4), {"size": (3, 2), "mode": "area"}),
                          ((1, 0, 4), {"size": 3, "mode": "area"}),
                          ((1, 2, 4, 5), {"scale_factor": torch.tensor(1.5), "recompute_scale_factor": True}),
                          ((1, 2, 4, 5), {"scale_factor": Fraction(3, 2), "mode": "area"}),
                          ((1, 2, 7), {"scale_factor": (Fraction(1, 3),), "mode": "area"}),
                          ((1, 2, 4, 5), {"size": torch.tensor(3), "mode": "area"}),  # repeated per dim
                          ((1, 2, 7), {"size": np.int64(3), "mode": "area"})]:
            x = torch.randn(shape)
            ours, theirs = F.interpolate(x, **kw), TF.interpolate(x, **kw)
            assert ours.shape == theirs.shape, (shape, kw)
            torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("shape,kw,words", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_bad_input_raises_like_torch(shape, kw, words):
    x = torch.randn(shape)
    with pytest.raises(Exception) as theirs:
        TF.interpolate(x, **kw)
    with pytest.raises(theirs.type) as ours:
        F.interpolate(x, **kw)
    for w in words:
        assert w in str(ours.value), (w, str(ours.value))


# ---------------------------------------------------------------------------------------------
# GPU: decoder-sized shapes against torch's CUDA kernels (integer scales: torch's CUDA and CPU
# source indices agree there)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("cl", [False, True])
def test_gpu_large_shapes(cl, dtype, tol):
    tritonnet.set_backend("triton")
    for shape, kw in [((16, 256, 32, 32), {"scale_factor": 2}), ((8, 64, 100, 75), {"size": (200, 300)}),
                      ((4, 32, 8, 16, 16), {"scale_factor": 2}), ((32, 128, 1000), {"scale_factor": 4})]:
        x = _layout(torch.randn(shape, device="cuda").to(dtype), cl and len(shape) > 3).requires_grad_()
        xr = x.detach().requires_grad_()
        y, yr = F.interpolate(x, **kw), TF.interpolate(xr, **kw)
        assert torch.equal(y, yr) and _is_cl(y) == _is_cl(yr)
        g = torch.randn_like(yr)
        (gx,) = torch.autograd.grad(y, x, g)
        (gr,) = torch.autograd.grad(yr, xr, g)
        assert_close_rel(gx, gr, tol, "dx")


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_gradient_layouts_like_torch(backend):
    """torch lays nearest upsampling's input gradient out as the incoming gradient for 4-D
    input (so a contiguous gradient of a channels_last output gives a contiguous one) and
    contiguous for 3-D and 5-D, channels_last_3d included. Ours once followed the input."""
    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    cl = torch.randn(2, 3, 3, 4, device=dev).to(memory_format=torch.channels_last)
    cases = [
        (torch.randn(2, 3, 2, 3, 4, device=dev).to(memory_format=torch.channels_last_3d), None),
        (cl, torch.contiguous_format),  # a contiguous gradient for a channels_last output
        (cl.contiguous(), torch.channels_last),  # and the other way round
        (cl, None),
        (torch.randn(2, 5, 3, device=dev).transpose(1, 2), None),
    ]
    for x, grad_format in cases:
        for kw in (dict(scale_factor=2), dict(scale_factor=1.5, mode="nearest-exact")):
            xo, xt = x.detach().requires_grad_(), x.detach().requires_grad_()
            y, ty = F.interpolate(xo, **kw), TF.interpolate(xt, **kw)
            g = torch.randn_like(ty)
            if grad_format is not None:
                g = g.contiguous(memory_format=grad_format)
            (gx,), (tgx,) = torch.autograd.grad(y, xo, g), torch.autograd.grad(ty, xt, g)
            what = (tuple(x.shape), x.stride(), grad_format, kw)
            assert (y.stride(), gx.stride()) == (ty.stride(), tgx.stride()), what
            torch.testing.assert_close(y, ty, msg=str(what))
            torch.testing.assert_close(gx, tgx, msg=str(what))
