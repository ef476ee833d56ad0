"""relu / sigmoid / tanh: reference vs torch, gradcheck, kernels vs reference, in-place, layouts."""

import pytest
import torch

import tritonnet
import tritonnet.functional as F
from tests.helpers import DTYPES, KERNEL_DEVICE, assert_close_rel, tf32_off
from tritonnet import reference

ACTS = ["relu", "sigmoid", "tanh"]
TORCH = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}
# sizes around the 1024-element block: one element, below, exactly one, one past, several
SIZES = [(1,), (7, 13), (1024,), (1025,), (3, 5, 7, 31)]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_matches_torch_forward_backward(act, backend):
    tritonnet.set_backend(backend)
    x = torch.randn(6, 37, device=KERNEL_DEVICE, requires_grad=True)
    g = torch.randn(6, 37, device=KERNEL_DEVICE)
    y = getattr(F, act)(x)
    (gx,) = torch.autograd.grad(y, x, g)
    xr = x.detach().requires_grad_()
    yr = TORCH[act](xr)
    (gr,) = torch.autograd.grad(yr, xr, g)
    torch.testing.assert_close(y, yr)
    torch.testing.assert_close(gx, gr)


@pytest.mark.parametrize("act", ACTS)
def test_gradcheck(act):
    tritonnet.set_backend("reference")
    x = torch.randn(5, 4, dtype=torch.float64)
    x = (x + 0.2 * torch.sign(x)).requires_grad_()  # away from relu's kink
    assert torch.autograd.gradcheck(getattr(F, act), (x,))


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize("act", ACTS)
def test_kernels_match_reference(act, size, dtype, tol):
    from tritonnet import kernels

    x = torch.randn(size, device=KERNEL_DEVICE).to(dtype)
    y = kernels.activation_forward(x, act)
    assert_close_rel(y, reference.activation_forward(x, act), tol, "forward")
    g = torch.randn(size, device=KERNEL_DEVICE).to(dtype)
    assert_close_rel(
        kernels.activation_backward(g, y, act), reference.activation_backward(g, y, act), tol, "dx"
    )


@pytest.mark.parametrize("act", ACTS)
def test_kernel_channels_last_and_strided(act):
    """Dense channels_last input keeps its layout; a strided view is handled via a copy."""
    from tritonnet import kernels

    x = torch.randn(2, 3, 5, 7, device=KERNEL_DEVICE).to(memory_format=torch.channels_last)
    y = kernels.activation_forward(x, act)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, TORCH[act](x))
    v = torch.randn(8, 10, device=KERNEL_DEVICE)[:, ::3]
    torch.testing.assert_close(kernels.activation_forward(v, act), TORCH[act](v))
    g = torch.randn(2, 3, 5, 7, device=KERNEL_DEVICE)  # NCHW grad for a channels_last output
    torch.testing.assert_close(
        kernels.activation_backward(g, y, act), reference.activation_backward(g, y, act)
    )


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_nan_inf_propagate(backend):
    tritonnet.set_backend(backend)
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), -1.0, 2.0], device=KERNEL_DEVICE)
    g = torch.tensor([3.0, 5.0, 7.0, 11.0, float("nan")], device=KERNEL_DEVICE)
    for act in ACTS:
        xo, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
        y, ty = getattr(F, act)(xo), TORCH[act](xt)
        torch.testing.assert_close(y, ty, equal_nan=True)
        # the gradients too: relu passes dy on at a NaN (torch zeroes only where y <= 0)
        y.backward(g)
        ty.backward(g)
        torch.testing.assert_close(xo.grad, xt.grad, equal_nan=True)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_relu_inplace(backend):
    tritonnet.set_backend(backend)
    x = torch.randn(4, 9, device=KERNEL_DEVICE)
    expect = torch.relu(x)
    out = F.relu(x, inplace=True)
    assert out is x
    torch.testing.assert_close(x, expect)
    # with autograd: a non-leaf modified in place, gradients as torch's
    a = torch.randn(4, 9, device=KERNEL_DEVICE, requires_grad=True)
    h = a * 2
    F.relu_(h)
    h.sum().backward()
    torch.testing.assert_close(a.grad, 2.0 * (a > 0).float())
    # in place for autograd too: one node that marks h dirty, no out-of-place copy
    assert type(h.grad_fn).__name__ == "_ActivationInplaceBackward", type(h.grad_fn)
    # what backward keeps is h's own memory, not an activation-sized temporary
    h2 = a * 2
    F.relu_(h2)
    (saved,) = h2.grad_fn.saved_tensors
    assert saved.data_ptr() == h2.data_ptr()
    # a leaf that requires grad cannot be modified in place, as in torch, and is left as it was
    leaf = torch.tensor([-1.0, 2.0, -3.0], requires_grad=True, device=KERNEL_DEVICE)  # relu changes it
    before = leaf.detach().clone()
    with pytest.raises(RuntimeError, match="leaf Variable"):
        F.relu(leaf, inplace=True)
    with pytest.raises(RuntimeError, match="a view of a leaf Variable"):
        F.relu_(leaf[:2])
    torch.testing.assert_close(leaf.detach(), before, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_relu_inplace_autograd_semantics(backend):
    """In-place relu on tensors that need grad behaves as torch.relu_: the version counter
    catches a tensor saved for backward and then overwritten, and in-place on a view rebases
    its base (gradients as torch's)."""
    tritonnet.set_backend(backend)
    a = torch.randn(4, 6, device=KERNEL_DEVICE, requires_grad=True)
    h = a * 1.5
    version = h._version
    F.relu_(h)
    assert h._version > version
    # saved by a later op, then overwritten in place: backward refuses, as torch's does
    s = torch.sigmoid(h)
    F.relu_(h)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        s.sum().backward()
    # in place on a view: the base's gradient flows through the rebased view
    for relu_ in (F.relu_, torch.relu_):
        a.grad = None
        base = a * 1.0
        relu_(base[:, 1:4])
        (base * torch.arange(6.0, device=KERNEL_DEVICE)).sum().backward()
        if relu_ is F.relu_:
            ours = a.grad.clone()
    torch.testing.assert_close(ours, a.grad)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_inplace_on_an_inference_tensor(backend):
    """An inference tensor (made under torch.inference_mode) has no version counter: torch
    refuses to update it in place outside inference mode. The Triton kernels wrote it anyway
    (the reference backend's copy_ refused, with torch's message); inside inference mode both
    write, as torch's."""
    tritonnet.set_backend(backend)
    calls = [lambda t: F.relu_(t), lambda t: F.relu(t, inplace=True),
             lambda t: F.dropout(t, 0.5, True, inplace=True),
             lambda t: F.dropout2d(t, 0.5, True, inplace=True)]
    for i, call in enumerate(calls):
        with torch.inference_mode():
            x = torch.randn(2, 3, 4, 5, device=KERNEL_DEVICE)
            y = call(x.clone())  # inside: allowed
            assert y.is_inference()
        before = x.clone()
        with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside InferenceMode"):
            call(x)
        assert torch.equal(x, before), f"call {i} wrote the tensor before refusing"
        with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside InferenceMode"):
            torch.relu_(x) if i < 2 else torch.nn.functional.dropout(x, 0.5, True, inplace=True)


def test_modules_match_torch():
    for ours, theirs in [
        (tritonnet.nn.ReLU(), torch.nn.ReLU()),
        (tritonnet.nn.ReLU(inplace=True), torch.nn.ReLU(inplace=True)),
        (tritonnet.nn.Sigmoid(), torch.nn.Sigmoid()),
        (tritonnet.nn.Tanh(), torch.nn.Tanh()),
    ]:
        assert repr(ours) == repr(theirs)
        x = torch.randn(3, 4)
        torch.testing.assert_close(ours(x.clone()), theirs(x.clone()))


def test_non_float_raises():
    with pytest.raises(RuntimeError, match="floating-point.*torch.int64"):
        F.sigmoid(torch.ones(3, dtype=torch.long))
    with pytest.raises(TypeError, match="must be Tensor, not list"):
        F.relu([1.0, 2.0])


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_non_dense_inputs_keep_torchs_layout(backend):
    """A non-dense input (a transposed tensor, a slice of a channels_last one, an expanded one)
    gives the result and gradient layouts torch's elementwise ops give, and the fake kernels
    (what torch.compile plans with) say the same. The Triton path once copied such an input to
    contiguous memory and returned that, against its fake's empty_like."""
    from tests.helpers import fake_layouts_checked

    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    cl = torch.randn(2, 6, 3, 4, device=dev).to(memory_format=torch.channels_last)
    inputs = [torch.randn(2, 3, 5, 4, device=dev).transpose(2, 3), cl[:, ::2],
              torch.randn(3, 1, device=dev).expand(3, 4)]
    for x in inputs:
        for act in ACTS:
            xo, xt = x.detach().requires_grad_(), x.detach().requires_grad_()
            with fake_layouts_checked():
                y = getattr(F, act)(xo)
                (gx,) = torch.autograd.grad(y, xo, torch.ones_like(y))
            ty = TORCH[act](xt)
            (tgx,) = torch.autograd.grad(ty, xt, torch.ones_like(ty))
            assert y.stride() == ty.stride(), (act, x.stride(), y.stride(), ty.stride())
            assert gx.stride() == tgx.stride(), (act, x.stride(), gx.stride(), tgx.stride())
            torch.testing.assert_close(y, ty)
            torch.testing.assert_close(gx, tgx)


@pytest.mark.parametrize("dtype,ulps", [(torch.float32, 4), (torch.float64, 8)])
def test_kernels_relative_accuracy(dtype, ulps):
    """tanh and sigmoid through the Triton kernels hold a few ulps of relative error at every
    magnitude, the fused linear epilogue's tanh included. tanh was 2 sigmoid(2x) - 1, which
    cancels near 0 (tanh(1e-9) gave 0, tanh(1e-6) was 1% off in fp32); fp64 inputs were
    computed in fp32. Signed zeros, infinities and NaN as torch."""
    tritonnet.set_backend("triton")
    mags = torch.logspace(-30 if dtype == torch.float32 else -300, 1.5, 200, dtype=torch.float64)
    x = torch.cat([mags, -mags, torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan")],
                                             dtype=torch.float64)])
    x = x.to(dtype).to(KERNEL_DEVICE)
    eps = torch.finfo(dtype).eps
    for ours, theirs in ((F.tanh, torch.tanh), (F.sigmoid, torch.sigmoid)):
        y, want = ours(x), theirs(x.double())  # the float64 truth
        finite = want.isfinite() & (want != 0)
        rel = ((y.double() - want) / want)[finite].abs().max().item()
        assert rel <= ulps * eps, (ours.__name__, rel)
        torch.testing.assert_close(y[~finite], want[~finite].to(dtype), equal_nan=True)
        signed = ~finite & ~want.isnan()
        assert torch.equal(torch.signbit(y[signed]), torch.signbit(want[signed]))
    if dtype == torch.float32:
        tf32_off()
        w = torch.eye(4, device=KERNEL_DEVICE)  # y = tanh(x) exactly through the GEMM's epilogue
        small = (torch.randn(8, 4) * 1e-6).to(KERNEL_DEVICE)
        fused = F.linear(small, w, activation="tanh").double()
        want = torch.tanh(small.double())
        assert ((fused - want) / want).abs().max() <= ulps * eps
