"""dropout / dropout2d: statistics and structure of the masks on both backends, the backward's
mask, torch's edge cases (eval, p=0, p=1, in place, NaN), gradcheck, the Triton kernels against
an independent Philox draw, modules and errors."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as TF

import tritonnet
import tritonnet.functional as F
from tests.helpers import HAS_CUDA, KERNEL_DEVICE, opcheck

BACKENDS = ["reference", "triton"]
FNS = {"dropout": (F.dropout, TF.dropout), "dropout2d": (F.dropout2d, TF.dropout2d)}


def _device(backend):
    return KERNEL_DEVICE if backend == "triton" else "cpu"


def _scale(p):
    return torch.tensor(1.0 / (1.0 - p), dtype=torch.float32).item()  # fp32, as the kernels


def _channels(t):
    """(N, C, *) -> (N*C, rest), in logical order whatever the layout."""
    return t.reshape(t.shape[0] * t.shape[1], -1)


def _assert_scaled_or_zero(x, y, p):
    """Every element of y is 0 (dropped) or x / (1 - p) (kept); returns the keep mask."""
    keep = y != 0
    assert (y[~keep] == 0).all()
    torch.testing.assert_close(y[keep], x[keep] * _scale(p))
    return keep


# ---------------------------------------------------------------------------------------------
# an independent Philox draw: u[i] = tl.rand(seed, base + i), what the kernels' contract says
# element (dropout) or channel (dropout2d) of logical row-major index i gets

_philox_kernel = None


def _philox_uniform(n, seed, base=0, device=KERNEL_DEVICE):
    global _philox_kernel
    triton = pytest.importorskip("triton")
    tl = triton.language
    if _philox_kernel is None:

        @triton.jit
        def _uniform(u_ptr, seed, base, n, BLOCK: tl.constexpr):
            offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
            tl.store(u_ptr + offs, tl.rand(seed, base + offs), mask=offs < n)

        _philox_kernel = _uniform
    u = torch.full((n,), float("nan"), device=device)
    _philox_kernel[(triton.cdiv(n, 1024),)](u, seed, base, n, BLOCK=1024)
    return u


def _triton_expected(x, p, seed, feature):
    """x * (keep ? 1/(1-p) : 0) in fp32 with keep from the independent draw, cast to x.dtype."""
    if feature:
        u = _philox_uniform(x.shape[0] * x.shape[1], seed, device=x.device)
        u = u.view(*x.shape[:2], *([1] * (x.dim() - 2)))
    else:
        u = _philox_uniform(x.numel(), seed, device=x.device).view(x.shape)
    factor = torch.where(u >= torch.tensor(p, dtype=torch.float32), _scale(p), 0.0)
    return (x.float() * factor).to(x.dtype)


def _make(shape, layout, dtype=torch.float32, device=KERNEL_DEVICE):
    if layout == "channels_last":
        return torch.randn(shape, device=device).to(dtype).to(memory_format=torch.channels_last)
    if layout == "strided":  # the trailing dims do not merge: the launcher copies
        return torch.randn(*shape[:-1], 2 * shape[-1], device=device).to(dtype)[..., ::2]
    return torch.randn(shape, device=device).to(dtype)


# shape, layouts; interpreter tiles hold 1024 elements
KERNEL_CASES = [
    ((1,), "contiguous"),  # one element
    ((7,), "contiguous"),  # below one block
    ((1025,), "contiguous"),  # one past a block
    ((7,), "strided"),  # a strided 1-D input (a column): its result came back (1, 1, 7)
    ((5, 7), "strided"),  # 2-D, dropout2d with L = 1
    ((3, 5, 7, 9), "contiguous"),  # odd everywhere
    ((3, 5, 7, 9), "channels_last"),
    ((3, 5, 7, 9), "strided"),
    ((2, 67, 3, 5), "channels_last"),  # C above a power of two, L = 15
    ((2, 3, 33, 33), "contiguous"),  # L = 1089 spans two tiles
    ((2, 1030, 1, 2), "channels_last"),  # C spans two tiles
]


@pytest.mark.parametrize("feature", [False, True], ids=["dropout", "dropout2d"])
@pytest.mark.parametrize("shape,layout", KERNEL_CASES)
def test_kernels_match_philox(shape, layout, feature):
    """Forward, in-place forward and backward primitives against the independent draw: the
    counter is the logical index, so layouts and the backward's dy layout cannot matter. A
    seed in device memory (as drawn under CUDA graph capture) gives the same masks."""
    if feature and len(shape) < 2:
        pytest.skip("dropout2d needs (N, C, *)")
    from tritonnet import kernels

    fwd = kernels.dropout2d_forward if feature else kernels.dropout_forward
    bwd = kernels.dropout2d_backward if feature else kernels.dropout_backward
    p, seed = 0.3, 2**40 + 12345  # a 64-bit seed
    x = _make(shape, layout)
    expected = _triton_expected(x, p, seed, feature)
    y = fwd(x, p, seed)
    assert y.stride() == torch.empty_like(x).stride()  # the input's layout, as torch
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    seed_t = torch.tensor(seed, dtype=torch.int64, device=x.device)  # read by the kernel
    torch.testing.assert_close(fwd(x, p, seed_t), expected, rtol=0, atol=0)
    # into a given, poisoned buffer
    out = torch.full_like(x, float("nan"))
    assert fwd(x, p, seed, out=out) is out
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # in place, in the same layout (a strided one goes through a temporary)
    xi = _make(shape, layout).copy_(x)
    assert fwd(xi, p, seed, out=xi) is xi
    torch.testing.assert_close(xi, expected, rtol=0, atol=0)
    # backward: dy in the other layout than x
    g = torch.randn(shape, device=x.device)
    if layout != "channels_last" and len(shape) == 4:
        g = g.to(memory_format=torch.channels_last)
    expected = _triton_expected(g, p, seed, feature)
    torch.testing.assert_close(bwd(g, p, seed), expected, rtol=0, atol=0)
    torch.testing.assert_close(bwd(g, p, seed_t), expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("feature", [False, True], ids=["dropout", "dropout2d"])
def test_kernels_dtypes(dtype, feature):
    from tritonnet import kernels

    fwd = kernels.dropout2d_forward if feature else kernels.dropout_forward
    x = _make((3, 5, 7, 9), "channels_last", dtype)
    y = fwd(x, 0.6, 99)
    assert y.dtype == dtype
    # fp32 compute, one rounding on store: bit-equal to the same fp32 math in torch, except
    # that Triton 3.9's interpreter truncates fp32 -> bf16 where torch and GPUs round to
    # nearest: one bf16 ulp (2**-7 relative at most) there
    rtol = 2**-7 if (dtype == torch.bfloat16 and not HAS_CUDA) else 0
    torch.testing.assert_close(y, _triton_expected(x, 0.6, 99, feature), rtol=rtol, atol=0)


def test_kernels_nan_inf():
    from tritonnet import kernels

    x = torch.randn(4000, device=KERNEL_DEVICE)
    x[::7], x[3::7] = float("nan"), float("inf")
    expected = _triton_expected(x, 0.5, 7, False)  # x * 0 for dropped: Inf -> NaN, as torch
    torch.testing.assert_close(kernels.dropout_forward(x, 0.5, 7), expected, equal_nan=True)


# ---------------------------------------------------------------------------------------------
# functional, both backends


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("fn", ["dropout", "dropout2d"])
def test_keep_fraction_binomial(backend, p, fn):
    tritonnet.set_backend(backend)
    x = torch.randn(100, 50, 1, 2, device=_device(backend))  # 10000 elements, 5000 channels
    y = FNS[fn][0](x, p)
    keep = _assert_scaled_or_zero(x, y, p)
    if fn == "dropout2d":
        per_channel = _channels(keep)
        assert (per_channel.all(1) | ~per_channel.any(1)).all(), "a channel partly dropped"
        keep = per_channel[:, 0]
    n, k = keep.numel(), keep.sum().item()
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(k - n * (1 - p)) <= 5 * sigma, f"kept {k} of {n} at p={p}"
    # the next call draws a fresh mask
    assert not torch.equal(FNS[fn][0](x, p) != 0, y != 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("feature", [False, True], ids=["dropout", "dropout2d"])
def test_same_seed_same_mask_any_layout(backend, feature):
    from tritonnet.backend import backend_for

    tritonnet.set_backend(backend)
    prims = backend_for(torch.empty(0, device=_device(backend)))
    fwd = prims.dropout2d_forward if feature else prims.dropout_forward
    x = torch.randn(4, 6, 5, 3, device=_device(backend))
    y = fwd(x, 0.5, 1234)
    torch.testing.assert_close(fwd(x, 0.5, 1234), y, rtol=0, atol=0)
    y_cl = fwd(x.to(memory_format=torch.channels_last), 0.5, 1234)
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_cl, y, rtol=0, atol=0)
    assert not torch.equal(fwd(x, 0.5, 1235) != 0, y != 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fn", ["dropout", "dropout2d"])
def test_manual_seed_repeatable(backend, fn):
    tritonnet.set_backend(backend)
    f = FNS[fn][0]
    x = torch.randn(4, 6, 5, 3, device=_device(backend))
    torch.manual_seed(123)
    a1, a2 = f(x, 0.5), f(x, 0.5)
    torch.manual_seed(123)
    b1, b2 = f(x, 0.5), f(x, 0.5)
    torch.testing.assert_close(a1, b1, rtol=0, atol=0)
    torch.testing.assert_close(a2, b2, rtol=0, atol=0)
    assert not torch.equal(a1, a2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fn", ["dropout", "dropout2d"])
@pytest.mark.parametrize("x_layout,g_layout", [("contiguous", "contiguous"),
                                               ("channels_last", "contiguous"),
                                               ("contiguous", "channels_last")])
def test_backward_uses_forward_mask(backend, fn, x_layout, g_layout):
    tritonnet.set_backend(backend)
    p = 0.4
    dev = _device(backend)
    x = _make((3, 8, 5, 7), x_layout, device=dev).requires_grad_()
    y = FNS[fn][0](x, p)
    keep = _assert_scaled_or_zero(x.detach(), y.detach(), p)
    g = _make((3, 8, 5, 7), g_layout, device=dev)
    (gx,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(gx, torch.where(keep, g * _scale(p), 0.0))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fn", ["dropout", "dropout2d"])
def test_gradcheck(backend, fn):
    """float64 gradcheck and gradgradcheck of the custom backward; the seed is fixed inside the
    checked function so every evaluation uses the same mask."""
    tritonnet.set_backend(backend)
    x = torch.randn(3, 4, 2, 3, dtype=torch.float64, device=_device(backend), requires_grad=True)

    def f(x):
        torch.manual_seed(7)
        return FNS[fn][0](x, 0.3)

    assert (f(x) == 0).any() and (f(x) != 0).any()  # the check covers both branches
    # the interpreter runs a launch in ~50 ms: fast mode (random projections) there
    fast = backend == "triton" and not HAS_CUDA
    assert torch.autograd.gradcheck(f, (x,), fast_mode=fast)
    assert torch.autograd.gradgradcheck(f, (x,), fast_mode=fast)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_dropout2d_whole_channels_and_layout(backend, layout):
    tritonnet.set_backend(backend)
    x = _make((4, 9, 5, 6), layout, device=_device(backend))
    y = F.dropout2d(x, 0.5)
    assert y.stride() == TF.dropout2d(x, 0.5).stride()
    keep = _channels(_assert_scaled_or_zero(x, y, 0.5))
    assert (keep.all(1) | ~keep.any(1)).all()
    assert keep.all(1).any() and (~keep.any(1)).any()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(6, 40, 3), (6, 40), (2, 3, 4, 2, 2)], ids=["3d", "2d", "5d"])
def test_dropout2d_other_ranks_like_torch(backend, shape):
    """3-D is (N, C, L), 2-D is one draw per element, 5-D one per (n, c); torch's warnings."""
    tritonnet.set_backend(backend)
    x = torch.randn(shape, device=_device(backend))
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        y = F.dropout2d(x, 0.5)
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        TF.dropout2d(x, 0.5)
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    assert len(ours) >= 1 and ours[0].filename == __file__  # stacklevel points at the caller
    keep = _channels(_assert_scaled_or_zero(x, y, 0.5))
    assert (keep.all(1) | ~keep.any(1)).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fn", ["dropout", "dropout2d"])
@pytest.mark.parametrize("inplace", [False, True])
def test_identity_cases_return_input(backend, fn, inplace):
    """training=False, p=0 and an empty input return the input itself and draw nothing."""
    tritonnet.set_backend(backend)
    f = FNS[fn][0]
    x = torch.randn(2, 3, 4, device=_device(backend), requires_grad=True)
    state = torch.get_rng_state()
    assert f(x, 0.5, training=False, inplace=inplace) is x
    assert f(x, 0.0, inplace=inplace) is x
    empty = torch.randn(0, 3, 4)
    assert f(empty, 0.5, inplace=inplace) is empty
    assert torch.equal(torch.get_rng_state(), state)
    ints = torch.ones(3, 2, dtype=torch.long)
    assert f(ints, 0.0) is ints  # any dtype when nothing is dropped


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fn", ["dropout", "dropout2d"])
def test_p1_is_x_times_zero(backend, fn):
    tritonnet.set_backend(backend)
    ours, theirs = FNS[fn]
    x = torch.randn(2, 3, 4, 5, device=_device(backend))
    x[0, 0, 0, :3] = torch.tensor([float("nan"), float("inf"), -2.0])
    x.requires_grad_()
    y = ours(x, 1.0)
    ref = theirs(x.detach(), 1.0)
    torch.testing.assert_close(y, ref, equal_nan=True, rtol=0, atol=0)
    assert torch.equal(torch.signbit(y), torch.signbit(ref))  # -x * 0 is -0
    (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert (g == 0).all()
    # torch accepts a 1-D input to dropout2d when p == 1 (nothing to draw per channel)
    torch.testing.assert_close(ours(torch.ones(5), 1.0), theirs(torch.ones(5), 1.0))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fn", ["dropout", "dropout2d"])
def test_nan_inf_like_torch(backend, fn):
    """Kept NaN/Inf pass through scaled; a dropped Inf or NaN becomes NaN (x * 0), as torch."""
    tritonnet.set_backend(backend)
    x = torch.randn(6, 8, 2, 2, device=_device(backend))
    x[:, :, 0, 0], x[:, :, 1, 1] = float("nan"), float("inf")
    torch.manual_seed(3)
    y = FNS[fn][0](x, 0.5)
    torch.manual_seed(3)
    keep = FNS[fn][0](torch.ones_like(x), 0.5) != 0  # the same mask on finite data
    torch.testing.assert_close(y, x * torch.where(keep, 2.0, 0.0), equal_nan=True)
    special = ~torch.isfinite(x)
    assert torch.isnan(y[special & ~keep]).all() and torch.isinf(y[special & keep]).any()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fn", ["dropout", "dropout2d"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_inplace(backend, fn, layout):
    tritonnet.set_backend(backend)
    f = FNS[fn][0]
    dev = _device(backend)
    x = _make((3, 6, 5, 7), layout, device=dev)
    torch.manual_seed(11)
    expected = f(x, 0.4)
    # without grad: the primitive writes into x
    x1 = _make((3, 6, 5, 7), layout, device=dev).copy_(x)
    torch.manual_seed(11)
    assert f(x1, 0.4, inplace=True) is x1
    torch.testing.assert_close(x1, expected, rtol=0, atol=0)
    # with grad on a non-leaf: autograd sees the in-place op, the gradient has the mask
    a = x.clone().requires_grad_()
    b = a * 1.0
    torch.manual_seed(11)
    assert f(b, 0.4, inplace=True) is b
    torch.testing.assert_close(b, expected, rtol=0, atol=0)
    (g,) = torch.autograd.grad(b, a, torch.ones_like(b))
    torch.testing.assert_close(g, torch.where(expected != 0, _scale(0.4), 0.0))
    # a leaf that requires grad cannot be modified in place, as in torch
    with pytest.raises(RuntimeError, match="leaf Variable"):
        f(x.clone().requires_grad_(), 0.4, inplace=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fn", ["dropout", "dropout2d"])
def test_inplace_autograd_semantics(backend, fn, monkeypatch):
    """In-place dropout on a tensor that needs grad is one in-place op to autograd, as
    torch's: it writes the input's own memory without the out-of-place op (no temporary, no
    copy back), bumps the version counter (a tensor saved by a later op and then overwritten
    is refused at backward), refuses a view of a leaf before writing it, and in place on a
    view of a non-leaf rebases the view on its base, with the gradient of the out-of-place op
    on the same seed."""
    import importlib

    fd = importlib.import_module("tritonnet.functional.dropout")  # the module, not the function
    tritonnet.set_backend(backend)
    f = FNS[fn][0]
    dev = _device(backend)
    out_of_place = []
    real = fd._dropout_op
    monkeypatch.setattr(fd, "_dropout_op", lambda *a: out_of_place.append(1) or real(*a))
    a = torch.randn(3, 4, 5, 6, device=dev, requires_grad=True)
    h = a * 1.5
    ptr, version = h.data_ptr(), h._version
    assert f(h, 0.3, inplace=True) is h
    assert h.data_ptr() == ptr and h._version > version
    s = h * h  # saves h for its backward
    f(h, 0.3, inplace=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        s.sum().backward()
    # a view of a leaf: refused, and the leaf is untouched
    before = a.detach().clone()
    with pytest.raises(RuntimeError, match="view of a leaf Variable"):
        f(a[1:], 0.3, inplace=True)
    torch.testing.assert_close(a.detach(), before, rtol=0, atol=0)
    assert not out_of_place
    # in place on a view: the base's gradient is the out-of-place op's on the same seed
    weights = torch.arange(6.0, device=dev)
    grads = []
    for inplace in (True, False):
        base = a * 1.0
        torch.manual_seed(5)
        if inplace:
            f(base[1:], 0.3, inplace=True)
        else:
            base = torch.cat([base[:1], f(base[1:], 0.3)])
        (g,) = torch.autograd.grad((base * weights).sum(), a)
        grads.append(g)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_default_device_does_not_move_the_draw(backend):
    """Under torch.set_default_device (LLM code sets "cuda"), dropout's seed came from the
    default device's generator, not the CPU one its docstring names, and p=1 returned
    uninitialised memory where that device was "meta". The draw is on the CPU generator
    whatever the default device: the same mask as without one, and zeros at p=1. Other ops
    whose reference code makes helper tensors (a ReLU gradient's zero, cross-entropy's
    ignored rows, nearest upsampling's fp32 scale) compute as without a default device."""
    tritonnet.set_backend(backend)
    dev = _device(backend)
    x = torch.randn(3, 4, 5, 6, device=dev)
    t = torch.tensor([0, -100, 3], device=dev)

    def run():
        torch.manual_seed(5)
        a = F.dropout(x, 0.5)
        xs = x.clone().requires_grad_()
        out = (F.dropout(xs, 1.0).sum() + F.relu(xs).sum() + F.interpolate(xs, scale_factor=1.7).sum()
               + F.cross_entropy(xs[:, :, 0, 0], t, label_smoothing=0.1))
        out.backward()
        return a, out.detach(), xs.grad

    want = run()
    torch.set_default_device("meta")
    try:
        got = run()
    finally:
        torch.set_default_device(None)
    for a, b in zip(got, want):
        assert a.device == b.device
        torch.testing.assert_close(a, b)


def test_custom_op_opcheck():
    """Schema, fake tensor and AOT dispatch of the operator."""
    tritonnet.set_backend("reference")
    x = torch.randn(2, 3, 4, requires_grad=True)
    opcheck(torch.ops.tritonnet.dropout.default, (x, 0.3, torch.tensor(5), True))


# ---------------------------------------------------------------------------------------------
# modules and errors


@pytest.mark.parametrize("name", ["Dropout", "Dropout2d"])
def test_modules_like_torch(name):
    ref = getattr(torch.nn, name)(p=0.3, inplace=True)
    ours = getattr(tritonnet.nn, name)(p=0.3, inplace=True)
    assert repr(ours) == repr(ref) and repr(getattr(tritonnet.nn, name)()) == repr(
        getattr(torch.nn, name)()
    )
    assert ours.state_dict() == ref.state_dict() == {}
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 4, 5, 6)
    y = ours(x.clone())
    _assert_scaled_or_zero(x, y, 0.3)
    assert not torch.equal(y, x)
    ours.eval()
    assert ours(x) is x
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), getattr(torch.nn, name)(0.2))
    tritonnet.convert(model)
    assert type(model[1]) is getattr(tritonnet.nn, name) and model[1].p == 0.2
    with pytest.raises(ValueError, match="but got 1.5"):
        getattr(tritonnet.nn, name)(1.5)


@pytest.mark.parametrize("fn", ["dropout", "dropout2d"])
@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_bad_p_raises_value_error(fn, p):
    ours, theirs = FNS[fn]
    x = torch.randn(2, 3, 4, 4)
    for f in (ours, theirs):  # the same type and message as torch, in eval too
        with pytest.raises(ValueError, match=rf"between 0 and 1, but got {p}"):
            f(x, p)
        with pytest.raises(ValueError, match=rf"but got {p}"):
            f(x, p, training=False)


@pytest.mark.parametrize("fn", ["dropout", "dropout2d"])
def test_other_errors_like_torch(fn):
    ours, theirs = FNS[fn]
    for f in (ours, theirs):
        with pytest.raises(RuntimeError, match="but got nan"):
            f(torch.randn(2, 3, 4, 4), float("nan"), training=False)
        with pytest.raises(RuntimeError):
            f(torch.ones(2, 3, 4, 4, dtype=torch.long), 0.5)
    with pytest.raises(RuntimeError, match="Feature dropout requires at least 2 dimensions"):
        F.dropout2d(torch.randn(5), 0.5)
    with pytest.raises(TypeError, match="must be Tensor"):
        ours([1.0, 2.0], 0.5)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_kernel_int64_counters_gpu():
    """Past 2**31 elements the counters and offsets must not wrap (checked at the tail)."""
    from tritonnet import kernels

    n = 2**31 + 3000
    x = torch.ones(n, device="cuda", dtype=torch.float16)
    y = kernels.dropout_forward(x, 0.5, 42)
    tail = 5000
    u = _philox_uniform(tail, 42, base=n - tail, device="cuda")
    expected = torch.where(u >= 0.5, 2.0, 0.0).half()
    torch.testing.assert_close(y[-tail:], expected, rtol=0, atol=0)


def test_seed_drawn_on_the_device_only_under_graph_capture(monkeypatch):
    """Where the seed is drawn (the GPU test below checks what it does to a captured graph):
    on the CPU generator, except for a CUDA input while its stream is capturing a CUDA
    graph, and not while torch.compile traces (which keeps the CPU draw)."""
    import importlib
    import types

    fdrop = importlib.import_module("tritonnet.functional.dropout")  # (the name is the function)

    draws = []
    real = torch.randint
    monkeypatch.setattr(torch, "randint", lambda *a, device=None, **k: draws.append(str(device))
                        or real(*a, **k))
    capturing, compiling = [False], [False]
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: capturing[0])
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiling[0])
    gpu_input = types.SimpleNamespace(is_cuda=True, device=torch.device("cuda", 1))
    cpu_input = torch.zeros(3)
    for capture, compile_, x, want in [(False, False, gpu_input, "cpu"), (True, False, gpu_input, "cuda:1"),
                                       (True, True, gpu_input, "cpu"), (True, False, cpu_input, "cpu")]:
        capturing[0], compiling[0] = capture, compile_
        fdrop._seed(x)
        assert draws[-1] == want, (capture, compile_, x, draws)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("fn", ["dropout", "dropout2d"])
def test_cuda_graph_replays_draw_new_masks(fn):
    """A training step captured in a CUDA graph draws dropout's seed on the device, so each
    replay drops other elements (a host seed would be frozen into the graph: one mask for
    every replay), and the backward captured with it meets its forward's mask."""
    tritonnet.set_backend("triton")
    op = getattr(F, fn)
    x = torch.randn(8, 16, 32, 32, device="cuda").abs_() + 0.5  # no zeros: y == 0 means dropped
    xs = x.clone().requires_grad_()
    g = torch.randn_like(x)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up (compiles, autotunes) outside the capture
        for _ in range(2):
            xs.grad = None
            op(xs, 0.5).backward(g)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    xs.grad = None
    with torch.cuda.graph(graph):
        y = op(xs, 0.5)
        y.backward(g)
    masks = []
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        keep = y != 0
        torch.testing.assert_close(y, torch.where(keep, 2 * x, 0.0), rtol=1e-6, atol=0)
        torch.testing.assert_close(xs.grad, torch.where(keep, 2 * g, 0.0), rtol=1e-6, atol=0)
        frac = keep.float().mean().item()
        assert 0.3 < frac < 0.7, frac
        masks.append(keep.clone())
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])
