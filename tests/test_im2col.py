"""unfold / fold: reference vs torch (outputs and gradients), float64 gradcheck through the
reference, Triton kernels vs reference (interpreter on CPU, native on GPU), layouts, modules,
and torch's errors with torch's exception types."""

import pytest
import torch
import torch.nn.functional as TF

import tritonnet
import tritonnet.functional as F
from tests.helpers import DTYPES, KERNEL_DEVICE, assert_close_rel, opcheck
from tritonnet import reference

# (input shape, kernel_size, dilation, padding, stride): every index path of both kernels
CASES = [
    pytest.param((2, 3, 5, 6), 1, 1, 0, 1, id="1x1"),
    pytest.param((2, 3, 7, 9), 3, 1, 0, 1, id="3x3"),  # up to 9 overlapping windows per pixel
    pytest.param((2, 4, 8, 7), (2, 3), 1, 0, 1, id="2x3"),  # non-square kernel
    pytest.param((1, 3, 9, 11), 3, 1, 1, 2, id="stride2-pad1-batch1"),
    pytest.param((2, 3, 8, 8), 3, 1, 0, 2, id="stride2-last-row-unread"),  # fold leaves zeros
    pytest.param((2, 2, 11, 10), 3, 2, 2, 1, id="dilation2-pad2"),
    pytest.param((2, 5, 13, 7), (3, 2), (2, 3), (1, 0), (2, 3), id="odd-all-nonsquare"),
    pytest.param((2, 3, 7, 8), 2, 1, 0, 3, id="stride-gt-kernel"),  # pixels no window covers
    pytest.param((1, 17, 5, 5), 5, 1, 2, 1, id="5x5-C17"),  # channels one past a 16-block
    pytest.param((2, 3, 20, 21), 3, 1, 1, 1, id="many-tiles"),  # L and H*W span several tiles
    pytest.param((3, 7, 6), 3, 1, 1, 1, id="unbatched"),
]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _window(k, d, p, s):
    return _pair(k), _pair(d), _pair(p), _pair(s)


def _blocks(hw, k, d, p, s):
    (k, d, p, s) = _window(k, d, p, s)
    return [(n + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i, n in enumerate(hw)]


def _cols_shape(shape, k, d, p, s):
    oh, ow = _blocks(shape[-2:], k, d, p, s)
    kh, kw = _pair(k)
    return (*shape[:-3], shape[-3] * kh * kw, oh * ow)


def _grad(fn, x, g):
    x = x.detach().requires_grad_()
    y = fn(x)
    (gx,) = torch.autograd.grad(y, x, g)
    return y, gx


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("shape,k,d,p,s", CASES)
def test_reference_matches_torch(shape, k, d, p, s, dtype):
    """Functional ops on the reference backend, forward and backward, against torch."""
    tritonnet.set_backend("reference")
    x = torch.randn(shape, dtype=dtype)
    cols_shape = _cols_shape(shape, k, d, p, s)
    g = torch.randn(cols_shape, dtype=dtype)
    y, gx = _grad(lambda t: F.unfold(t, k, d, p, s), x, g)
    yr, gxr = _grad(lambda t: TF.unfold(t, k, d, p, s), x, g)
    torch.testing.assert_close(y, yr, rtol=0, atol=0)  # a copy: exact
    torch.testing.assert_close(gx, gxr)  # fold: sums in another order than torch

    c = torch.randn(cols_shape, dtype=dtype)
    gy = torch.randn(shape, dtype=dtype)
    z, gc = _grad(lambda t: F.fold(t, shape[-2:], k, d, p, s), c, gy)
    zr, gcr = _grad(lambda t: TF.fold(t, shape[-2:], k, d, p, s), c, gy)
    torch.testing.assert_close(z, zr)
    torch.testing.assert_close(gc, gcr, rtol=0, atol=0)


@pytest.mark.parametrize(
    "shape,k,d,p,s",
    [
        ((1, 2, 5, 6), 3, 1, 1, 2),  # stride 2, padding
        ((2, 1, 7, 5), (3, 2), (2, 1), (0, 1), (1, 2)),  # dilation, everything non-square
        ((2, 4, 5), 2, 1, 0, 1),  # unbatched
    ],
    ids=["stride2-pad", "dilation-nonsquare", "unbatched"],
)
def test_gradcheck(shape, k, d, p, s):
    """float64 gradcheck (and gradgradcheck: each backward is the other op) via the reference."""
    tritonnet.set_backend("reference")
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    c = torch.randn(_cols_shape(shape, k, d, p, s), dtype=torch.float64, requires_grad=True)
    unfold = lambda t: F.unfold(t, k, d, p, s)
    fold = lambda t: F.fold(t, shape[-2:], k, d, p, s)
    assert torch.autograd.gradcheck(unfold, (x,))
    assert torch.autograd.gradcheck(fold, (c,))
    assert torch.autograd.gradgradcheck(unfold, (x,))
    assert torch.autograd.gradgradcheck(fold, (c,))


def test_gradcheck_triton_fp64():
    """The kernels' fp64 path (fp64 accumulator in fold) through autograd."""
    tritonnet.set_backend("triton")
    k, d, p, s = (2, 2), 1, (1, 0), (2, 1)
    x = torch.randn(1, 1, 4, 3, dtype=torch.float64, device=KERNEL_DEVICE, requires_grad=True)
    c = torch.randn(_cols_shape(x.shape, k, d, p, s), dtype=torch.float64, device=KERNEL_DEVICE,
                    requires_grad=True)
    # fast mode (random projections of the Jacobian): each interpreted launch costs ~50 ms
    assert torch.autograd.gradcheck(lambda t: F.unfold(t, k, d, p, s), (x,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda t: F.fold(t, (4, 3), k, d, p, s), (c,), fast_mode=True)


# every dtype in NCHW, and channels_last input (the same code, other strides) in fp32
LAYOUTS = [
    pytest.param(*dt.values, "nchw", id=f"{dt.id}-nchw") for dt in DTYPES
] + [pytest.param(*DTYPES[0].values, "channels_last", id="fp32-channels_last")]


@pytest.mark.parametrize("dtype,tol,layout", LAYOUTS)
@pytest.mark.parametrize("shape,k,d,p,s", CASES)
def test_kernels_match_reference(shape, k, d, p, s, dtype, tol, layout):
    """Each Triton primitive against its reference twin; outputs poisoned with NaN first."""
    from tritonnet.kernels import im2col as kim

    window = _window(k, d, p, s)
    shape = shape if len(shape) == 4 else (1, *shape)
    x = torch.randn(shape, device=KERNEL_DEVICE).to(dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    ref = reference.unfold_forward(x, *window)
    cols = torch.full(ref.shape, float("nan"), device=KERNEL_DEVICE, dtype=dtype)
    kim._launch_unfold(x, cols, *window)
    torch.testing.assert_close(cols, ref, rtol=0, atol=0)  # a copy: exact in every dtype

    c = torch.randn(ref.shape, device=KERNEL_DEVICE).to(dtype)
    ref_y = reference.fold_forward(c, shape[-2:], *window)
    y = torch.full(shape, float("nan"), device=KERNEL_DEVICE, dtype=dtype)
    kim._launch_fold(c, y, *window)
    assert_close_rel(y, ref_y, tol, "fold")


def test_kernels_strided_operands():
    """Non-contiguous views go through the strides, no copy: a sliced input, a transposed
    (and an expanded) column tensor."""
    from tritonnet import kernels

    window = _window((3, 2), 1, 1, (1, 2))
    x = torch.randn(2, 6, 9, 16, device=KERNEL_DEVICE)[:, ::2, :, ::2]  # (2, 3, 9, 8)
    cols = kernels.unfold_forward(x, *window)
    assert cols.is_contiguous() and cols.shape == (2, 18, 45)
    torch.testing.assert_close(cols, reference.unfold_forward(x, *window), rtol=0, atol=0)
    L = 9 * 5  # (9 + 2 - 3 + 1) * ((8 + 2 - 2) // 2 + 1)
    c = torch.randn(2, L, 18, device=KERNEL_DEVICE).transpose(1, 2)  # (2, 18, L)
    y = kernels.fold_forward(c, (9, 8), *window)
    assert y.is_contiguous() and y.shape == (2, 3, 9, 8)
    torch.testing.assert_close(y, reference.fold_forward(c, (9, 8), *window))
    e = torch.randn(1, 18, 1, device=KERNEL_DEVICE).expand(2, 18, L)  # stride 0
    torch.testing.assert_close(
        kernels.fold_forward(e, (9, 8), *window), reference.fold_forward(e, (9, 8), *window)
    )


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_triton_backend_end_to_end(dtype, tol):
    """Functional ops with backend 'triton' (forward + autograd) against torch in fp32."""
    tritonnet.set_backend("triton")
    k, d, p, s = (3, 2), (1, 2), 1, (2, 1)
    x = torch.randn(2, 3, 9, 8, device=KERNEL_DEVICE).to(dtype)
    x = x.to(memory_format=torch.channels_last)
    g = torch.randn(_cols_shape(x.shape, k, d, p, s), device=KERNEL_DEVICE).to(dtype)
    y, gx = _grad(lambda t: F.unfold(t, k, d, p, s), x, g)
    yr, gxr = _grad(lambda t: TF.unfold(t, k, d, p, s), x.float(), g.float())
    assert y.dtype == gx.dtype == dtype
    torch.testing.assert_close(y.float(), yr, rtol=0, atol=0)
    assert_close_rel(gx, gxr, tol, "unfold dx")

    c = g.transpose(1, 2).contiguous().transpose(1, 2)  # a non-contiguous column tensor
    gy = torch.randn(x.shape, device=KERNEL_DEVICE).to(dtype)
    z, gc = _grad(lambda t: F.fold(t, (9, 8), k, d, p, s), c, gy)
    zr, gcr = _grad(lambda t: TF.fold(t, (9, 8), k, d, p, s), c.float(), gy.float())
    assert z.dtype == gc.dtype == dtype
    assert_close_rel(z, zr, tol, "fold")
    torch.testing.assert_close(gc.float(), gcr, rtol=0, atol=0)


def test_opcheck():
    """Schema, fake (meta) implementation and AOT dispatch of both operators (what
    torch.compile relies on)."""
    from tritonnet.ops import im2col as ops

    tritonnet.set_backend("reference")
    window = ([3, 2], [1, 1], [1, 0], [2, 1])
    x = torch.randn(1, 2, 4, 5, requires_grad=True)
    c = torch.randn(1, 12, 8, requires_grad=True)  # L = 2 * 4
    opcheck(ops.unfold, (x, *window))
    opcheck(ops.fold, (c, [4, 5], *window))


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_empty_batch_and_nan(backend):
    tritonnet.set_backend(backend)
    x = torch.randn(0, 3, 5, 5, device=KERNEL_DEVICE)
    assert F.unfold(x, 2).shape == TF.unfold(x, 2).shape == (0, 12, 16)
    c = torch.randn(0, 12, 16, device=KERNEL_DEVICE)
    assert F.fold(c, 5, 2).shape == (0, 3, 5, 5)
    x = torch.randn(1, 1, 4, 4, device=KERNEL_DEVICE)
    x[0, 0, 1, 2] = float("nan")
    torch.testing.assert_close(F.unfold(x, 2), TF.unfold(x, 2), equal_nan=True)
    cols = TF.unfold(x, 2)
    torch.testing.assert_close(F.fold(cols, 4, 2), TF.fold(cols, 4, 2), equal_nan=True)


def test_modules_match_torch():
    x = torch.randn(2, 3, 8, 9)
    for ours, theirs in [
        (tritonnet.nn.Unfold(3, padding=1, stride=2), torch.nn.Unfold(3, padding=1, stride=2)),
        (tritonnet.nn.Unfold((2, 3), dilation=(2, 1)), torch.nn.Unfold((2, 3), dilation=(2, 1))),
    ]:
        assert repr(ours) == repr(theirs)
        torch.testing.assert_close(ours(x), theirs(x))
    cols = torch.randn(2, 27, 20)
    ours = tritonnet.nn.Fold((8, 9), 3, padding=1, stride=2)
    theirs = torch.nn.Fold((8, 9), 3, padding=1, stride=2)
    assert repr(ours) == repr(theirs)
    torch.testing.assert_close(ours(cols), theirs(cols))
    model = torch.nn.Sequential(torch.nn.Unfold(2), torch.nn.Fold(4, 2))
    tritonnet.convert(model)
    assert isinstance(model[0], tritonnet.nn.Unfold) and isinstance(model[1], tritonnet.nn.Fold)


X = (2, 3, 5, 6)
C = (2, 27, 12)  # the columns of X with a 3x3 kernel, padding 0
# (function, input shape or value, args, kwargs, exception type, message regex)
ERRORS = [
    ("unfold", [1.0], (3,), {}, TypeError, "must be Tensor, not list"),
    ("unfold", X, (0,), {}, RuntimeError, "kernel size should be greater than zero.*kernel_height: 0"),
    ("unfold", X, (3,), {"stride": (1, 0)}, RuntimeError, "stride should be greater.*stride_width: 0"),
    ("unfold", X, (3,), {"dilation": 0}, RuntimeError, "dilation should be greater.*dilation_height: 0"),
    ("unfold", X, (3,), {"padding": -1}, RuntimeError, "padding should be non-negative.*pad_height: -1"),
    # torch tests dilation, then padding, then stride
    ("unfold", X, (1,), {"stride": 0, "dilation": 0}, RuntimeError, "dilation should be"),
    ("unfold", X, ((3, 3, 3),), {}, RuntimeError, "kernel_size equals to 2, but got size 3"),
    ("unfold", X, (3.0,), {}, TypeError, "must be tuple of ints.*float"),
    ("unfold", X, (3,), {"stride": True}, TypeError, "must be tuple of ints.*bool"),
    # every argument's type before any length, as torch's argument parser
    ("unfold", X, ((1, 2, 2),), {"dilation": 1.5}, TypeError, "'dilation' must be tuple of ints"),
    ("fold", C, ((5, 6, 7), 3), {"stride": "1"}, TypeError, "'stride' must be tuple of ints"),
    ("unfold", (5, 6), (3,), {}, IndexError, r"range of \[-2, 1\], but got 2"),
    ("unfold", (6,), (3,), {}, IndexError, r"range of \[-1, 0\], but got 1"),
    # torch's && stops at size 1 == 0: its RuntimeError, without reading size 2
    ("unfold", (2, 0), (2,), {}, RuntimeError, r"Expected 3D or 4D.*\[2, 0\]"),
    ("unfold", (1, 2, 3, 5, 6), (3,), {}, RuntimeError, r"Expected 3D or 4D.*\[1, 2, 3, 5, 6\]"),
    ("unfold", (2, 0, 5, 6), (3,), {}, RuntimeError, r"Expected 3D or 4D.*\[2, 0, 5, 6\]"),
    ("unfold", (0, 5, 6), (3,), {}, RuntimeError, r"Expected 3D or 4D.*\[0, 5, 6\]"),
    ("unfold", X, ((1, 7),), {}, RuntimeError, r"spatial size \(5, 6\).*blocks as \(5, 0\)"),
    ("unfold", X, (3,), {"dtype": torch.int64}, NotImplementedError, "int64"),
    ("fold", [1.0], ((5, 6), 3), {}, TypeError, "must be Tensor, not list"),
    ("fold", C, ((5, 5), 3), {}, RuntimeError, r"sliding blocks 3 \* 3 = 9, but got input.size\(2\)=12"),
    ("fold", C, ((5, 6), 3), {"padding": 1}, RuntimeError, r"blocks 5 \* 6 = 30, but got"),
    ("fold", (27, 12), ((5, 5), 3), {}, RuntimeError, r"blocks 3 \* 3 = 9, but got input.size\(2\)=12"),
    ("fold", (2, 26, 12), ((5, 6), 3), {}, RuntimeError, r"divisible by.*input.size\(1\)=26"),
    ("fold", (27,), ((5, 6), 3), {}, RuntimeError, r"Expected 2D or 3D.*\[27\]"),
    ("fold", (1, 2, 27, 12), ((5, 6), 3), {}, RuntimeError, r"Expected 2D or 3D.*\[1, 2, 27, 12\]"),
    ("fold", (2, 27, 0), ((5, 6), 3), {}, RuntimeError, r"Expected 2D or 3D.*\[2, 27, 0\]"),
    ("fold", C, ((5, 6), 0), {}, RuntimeError, "kernel size should be greater than zero"),
    # torch's col2im tests stride before dilation and padding
    ("fold", C, ((5, 6), 3), {"stride": 0, "padding": -1}, RuntimeError, "stride should be"),
    ("fold", C, ((5, 6), 3), {"padding": (0, -1)}, RuntimeError, "pad_width: -1"),
    ("fold", (1, 1, 4), ((0, 0), 1), {"padding": 1}, RuntimeError, r"positive.*output_size=\(0, 0\)"),
    ("fold", C, ((5, 6, 7), 3), {}, RuntimeError, "output_size equals to 2, but got size 3"),
    # two negative block counts whose product is L (the Triton kernels returned zeros)
    ("fold", (2, 9, 1), (1, 3), {}, RuntimeError, r"blocks as \(-1, -1\), which is too small"),
    ("fold", (1, 1, 1), (-1, 1), {}, RuntimeError, r"blocks as \(-1, -1\)"),
    ("fold", C, ((5, 6.0), 3), {}, TypeError, "must be tuple of ints.*float"),
    ("fold", C, ((5, 6), 3), {"dtype": torch.int32}, NotImplementedError, "int32"),
]


@pytest.mark.parametrize("op,x,args,kwargs,exc,match", ERRORS, ids=lambda v: None)
def test_errors_match_torch(op, x, args, kwargs, exc, match):
    """Our message (with the values) and torch's exception type for the same mistake."""
    kwargs = dict(kwargs)
    dtype = kwargs.pop("dtype", torch.float32)
    if isinstance(x, tuple):
        x = torch.randn(x).to(dtype)
    with pytest.raises(exc, match=match):
        getattr(F, op)(x, *args, **kwargs)
    with pytest.raises(exc):
        getattr(TF, op)(x, *args, **kwargs)


def test_bool_and_complex_go_to_torch():
    """unfold/fold of bool and complex tensors, which torch implements on the CPU and
    tritonnet's kernels do not: torch's own results (ours raised NotImplementedError), and a
    complex input's gradient through torch's autograd."""
    tritonnet.set_backend("reference")
    x = torch.randn(2, 3, 5, 6)
    for t in (x > 0, torch.complex(x, -x)):
        torch.testing.assert_close(F.unfold(t, 3, padding=1), TF.unfold(t, 3, padding=1))
        cols = TF.unfold(t, 2)
        torch.testing.assert_close(F.fold(cols, (5, 6), 2), TF.fold(cols, (5, 6), 2))
    z = torch.complex(x, x).requires_grad_()
    (g,) = torch.autograd.grad(F.unfold(z, 2).abs().sum(), z)
    (want,) = torch.autograd.grad(TF.unfold(z, 2).abs().sum(), z)
    torch.testing.assert_close(g, want)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_large_gpu_shapes(dtype, tol):
    """ResNet-sized feature maps, both layouts, against torch."""
    tritonnet.set_backend("triton")
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(8, 64, 56, 56, device="cuda").to(dtype).to(memory_format=layout)
        cols = F.unfold(x, 3, padding=1, stride=2)
        torch.testing.assert_close(cols, TF.unfold(x, 3, padding=1, stride=2), rtol=0, atol=0)
        y = F.fold(cols, (56, 56), 3, padding=1, stride=2)
        ref = TF.fold(cols.float(), (56, 56), 3, padding=1, stride=2)
        assert_close_rel(y, ref, tol, "fold")


@pytest.mark.gpu
def test_more_than_2_31_elements():
    """cols of 2.4e9 elements: rows past 2**31 / L are addressed with int64 offsets."""
    tritonnet.set_backend("triton")
    x = torch.randn(1, 256, 1024, 1024, device="cuda", dtype=torch.float16)
    cols = F.unfold(x, 3, padding=1)  # (1, 2304, 1048576)
    assert cols.numel() > 2**31
    last = slice(255 * 9, 256 * 9)  # the rows of the last channel
    torch.testing.assert_close(cols[:, last], TF.unfold(x[:, 255:], 3, padding=1), rtol=0, atol=0)
    y = F.fold(cols, (1024, 1024), 3, padding=1)
    del cols
    ref = TF.fold(TF.unfold(x[:, 255:].float(), 3, padding=1), (1024, 1024), 3, padding=1)
    assert_close_rel(y[:, 255:], ref, 2e-3, "fold, last channel")
