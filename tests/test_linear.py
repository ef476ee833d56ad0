"""linear: reference vs torch, gradcheck through the reference, Triton kernels vs reference,
module state_dict round trip, errors."""

import pytest
import torch
import torch.nn.functional as TF

import tritonnet
import tritonnet.functional as F
from tests.helpers import DTYPES, KERNEL_DEVICE, assert_close_rel, assert_like_torch, tf32_off
from tritonnet import reference

# (M, K, N): every GEMM mask. Interpreter blocks are 32, so sizes straddle 32 and 64.
SHAPES = [
    (1, 1, 1),  # degenerate: one element
    (1, 70, 10),  # batch 1
    (37, 70, 45),  # odd, above one block in every dim
    (64, 32, 32),  # exact multiples of the block
    (5, 33, 97),  # K one past a block; N prime and > 3 blocks
]
ACTS = ["none", "relu", "sigmoid", "tanh"]
TORCH_ACT = {"none": lambda x: x, "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}


def _torch_linear(x, w, b, act):
    return TORCH_ACT[act](TF.linear(x, w, b))


def _grads(fn, *tensors, grad):
    out = fn(*tensors)
    gs = torch.autograd.grad(out, [t for t in tensors if t is not None], grad)
    return out, gs


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", [(), (3,), (2, 3)], ids=["1d", "2d", "3d"])
def test_reference_matches_torch(lead, bias, act):
    """The reference path (forward + our backward) against torch, float64, leading dims."""
    tritonnet.set_backend("reference")
    x = torch.randn(*lead, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True) if bias else None
    g = torch.randn(*lead, 5, dtype=torch.float64)
    ours, gs = _grads(lambda x, w, b: F.linear(x, w, b, activation=act), x, w, b, grad=g)
    ref, rs = _grads(lambda x, w, b: _torch_linear(x, w, b, act), x, w, b, grad=g)
    torch.testing.assert_close(ours, ref)
    for a, r in zip(gs, rs):
        torch.testing.assert_close(a, r)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("act", ACTS)
def test_gradcheck(act, backend):
    """float64 gradcheck; on the Triton backend fp64 GEMMs go to the reference primitives
    (before, the kernels' fp32 accumulator gave garbage for fp64 operands)."""
    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    x = torch.randn(4, 6, dtype=torch.float64, device=dev, requires_grad=True)
    w = torch.randn(3, 6, dtype=torch.float64, device=dev, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, device=dev, requires_grad=True)
    if act == "relu":  # keep pre-activations away from the kink at 0
        with torch.no_grad():
            b += 0.3 * torch.sign(b)
    assert torch.autograd.gradcheck(lambda x, w, b: F.linear(x, w, b, activation=act), (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w: F.linear(x, w), (x, w))


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("act", ["none", "relu"])
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_kernels_match_reference(M, K, N, act, dtype, tol):
    """Each Triton primitive against its reference twin (interpreter on CPU, native on GPU)."""
    tf32_off()
    from tritonnet import kernels

    dev = KERNEL_DEVICE
    x = torch.randn(M, K, device=dev).to(dtype)
    w = torch.randn(N, K, device=dev).to(dtype)
    b = torch.randn(N, device=dev).to(dtype)
    g = torch.randn(M, N, device=dev).to(dtype)
    y = kernels.linear_forward(x, w, b, act)
    assert y.dtype == dtype and y.shape == (M, N)
    assert_close_rel(y, reference.linear_forward(x, w, b, act), tol, "forward")
    assert_close_rel(kernels.linear_input_grad(g, w), reference.linear_input_grad(g, w), tol, "dx")
    gw, gb = kernels.linear_weight_grad(g, x)
    rw, rb = reference.linear_weight_grad(g, x)
    assert_close_rel(gw, rw, tol, "dW")
    assert_close_rel(gb, rb, tol, "db")


def test_autotune_prune_keeps_tiles_that_fit():
    """The early prune drops tiles far larger than the problem and 16-wide N tiles where N
    needs more, and never returns nothing."""
    import triton

    from tritonnet.kernels._common import prune_tiles

    cfgs = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}) for m, n in [(16, 32), (64, 64), (128, 256)]]
    prune = prune_tiles(lambda a: a["M"], lambda a: a["N"])
    sizes = lambda kept: [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in kept]  # noqa: E731
    assert sizes(prune(cfgs, {"M": 8, "N": 10})) == [(16, 32)]
    assert sizes(prune(cfgs, {"M": 50, "N": 64})) == [(16, 32), (64, 64)]
    assert len(prune(cfgs, {"M": 4096, "N": 4096})) == 3
    assert sizes(prune(cfgs[1:], {"M": 1, "N": 1})) == [(64, 64)]  # smallest, not none
    # 16-wide N tiles only where N fits one (the stem's 3-channel input gradient)
    narrow = [triton.Config({"BLOCK_M": 64, "BLOCK_N": n}) for n in (16, 32, 64)]
    assert sizes(prune(narrow, {"M": 4096, "N": 3})) == [(64, 16)]
    assert sizes(prune(narrow, {"M": 4096, "N": 20})) == [(64, 32)]
    assert sizes(prune(narrow, {"M": 4096, "N": 64})) == [(64, 32), (64, 64)]


def test_fit_shared_lowers_stages_then_drops():
    """fp32 tiles that overflow an H100's 227 KB lose pipeline stages (never below 2) until
    they fit; a tile that fits at no stage count goes; bf16 keeps its configs unchanged."""
    import triton

    from tritonnet.kernels._common import fit_shared, pipeline_bytes

    h100 = 232448
    cfgs = [
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64}, num_stages=4, num_warps=4),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64}, num_stages=3, num_warps=8),
        triton.Config({"BLOCK_M": 256, "BLOCK_N": 256, "BLOCK_K": 128}, num_stages=3, num_warps=8),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_stages=4, num_warps=4),
    ]
    # the sizes Triton allocated for the first two on sm_90 (bench/compile_check.py): fp32
    # 263168 and 295936 bytes, bf16 half the pipeline
    assert pipeline_bytes(cfgs[0], 4) == 263168 and pipeline_bytes(cfgs[1], 4) == 295936
    fp32 = fit_shared(cfgs, 4, h100)
    assert [(c.kwargs["BLOCK_N"], c.num_stages) for c in fp32] == [(128, 3), (256, 2), (64, 4)]
    assert all(pipeline_bytes(c, 4) <= h100 for c in fp32)
    assert fp32[0].num_warps == 4 and fp32[1].num_warps == 8
    bf16 = fit_shared(cfgs, 2, h100)
    assert [(c.kwargs["BLOCK_N"], c.num_stages) for c in bf16] == [(128, 4), (256, 3), (64, 4)]
    assert fit_shared(cfgs, 4, None) == cfgs  # the CPU: no limit
    # two configs that become one after lowering are merged
    twin = [cfgs[0], triton.Config(dict(cfgs[0].kwargs), num_stages=3, num_warps=4)]
    assert len(fit_shared(twin, 4, h100)) == 1


def test_prune_fits_the_operands_dtype(monkeypatch):
    """The autotuner's prune reads the element size from the kernel's first tensor."""
    import triton

    from tritonnet.kernels import _common

    monkeypatch.setattr(_common, "SHARED_MEMORY_LIMIT", 232448)
    cfg = triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64}, num_stages=4, num_warps=4)
    prune = _common.prune_tiles(lambda a: a["M"], lambda a: a["N"])
    for dtype, stages in [(torch.float32, 3), (torch.bfloat16, 4)]:
        nargs = {"a_ptr": torch.empty(1, dtype=dtype), "M": 4096, "N": 4096}
        assert [c.num_stages for c in prune([cfg], nargs)] == [stages]


def test_kernels_strided_inputs():
    """Non-contiguous operands (a transposed weight, a sliced input) go through the strides."""
    from tritonnet import kernels

    tf32_off()
    dev = KERNEL_DEVICE
    x = torch.randn(40, 90, device=dev)[:, ::2]  # (40, 45), stride (90, 2)
    w = torch.randn(45, 33, device=dev).t()  # (33, 45), transposed
    torch.testing.assert_close(
        kernels.linear_forward(x, w, None, "none"), reference.linear_forward(x, w, None, "none")
    )


def test_kernel_nan_propagates():
    from tritonnet import kernels

    x = torch.randn(3, 4, device=KERNEL_DEVICE)
    x[1, 2] = float("nan")
    w = torch.randn(5, 4, device=KERNEL_DEVICE)
    y = kernels.linear_forward(x, w, None, "relu")
    assert torch.isnan(y[1]).all() and torch.isfinite(y[[0, 2]]).all()


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_triton_backend_end_to_end(dtype, tol):
    """The functional op with backend 'triton' (forward + autograd) against torch."""
    tf32_off()
    tritonnet.set_backend("triton")
    dev = KERNEL_DEVICE
    x = torch.randn(2, 9, 20, device=dev).to(dtype).requires_grad_()
    w = torch.randn(11, 20, device=dev).to(dtype).requires_grad_()
    b = torch.randn(11, device=dev).to(dtype).requires_grad_()
    g = torch.randn(2, 9, 11, device=dev).to(dtype)
    ours, gs = _grads(lambda x, w, b: F.linear(x, w, b, activation="relu"), x, w, b, grad=g)
    xr, wr, br = (t.detach().float().requires_grad_() for t in (x, w, b))
    ref, rs = _grads(lambda x, w, b: _torch_linear(x, w, b, "relu"), xr, wr, br, grad=g.float())
    assert ours.dtype == dtype
    assert_close_rel(ours, ref, tol, "y")
    for a, r, name in zip(gs, rs, ["dx", "dW", "db"]):
        assert a.dtype == dtype
        assert_close_rel(a, r, tol, name)


def test_autocast_casts_like_torch():
    tritonnet.set_backend("reference")
    x, w = torch.randn(4, 8), torch.randn(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = F.linear(x, w)
        ref = TF.linear(x, w)
    assert ours.dtype == ref.dtype == torch.bfloat16
    assert_close_rel(ours, ref, 1.6e-2)


def test_module_state_dict_round_trip():
    ref = torch.nn.Linear(6, 4)
    ours = tritonnet.nn.Linear(6, 4)
    ours.load_state_dict(ref.state_dict())
    assert list(ours.state_dict()) == ["weight", "bias"]
    x = torch.randn(3, 6)
    torch.testing.assert_close(ours(x), ref(x))
    back = torch.nn.Linear(6, 4, bias=True)
    back.load_state_dict(ours.state_dict())
    torch.testing.assert_close(back.weight, ref.weight)
    assert repr(ours) == repr(ref)
    assert repr(tritonnet.nn.Linear(2, 3, bias=False)) == repr(torch.nn.Linear(2, 3, bias=False))


def test_convert_swaps_layers_in_place():
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    x = torch.randn(3, 4)
    before = model(x)
    tritonnet.convert(model)
    assert isinstance(model[0], tritonnet.nn.Linear) and isinstance(model[1], tritonnet.nn.ReLU)
    torch.testing.assert_close(model(x), before)


def test_convert_keeps_parametrizations():
    """A parametrized layer (weight_norm, spectral_norm: a GAN's) lives in a class that
    torch.nn.utils.parametrize made for it; convert once left it torch's, silently. Now it
    becomes the same parametrized class on tritonnet's layer: same outputs and state_dict
    keys, gradients reach the parametrization's originals, and parametrize's own functions
    (deepcopy, remove_parametrizations, a second parametrization) still work."""
    import copy

    from torch.nn.utils import parametrizations, parametrize

    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(64, 5))
    parametrizations.weight_norm(model[0])
    parametrizations.spectral_norm(model[2])
    model.eval()
    x = torch.randn(2, 3, 4, 4)
    before, keys = model(x), list(model.state_dict())
    tritonnet.convert(model)
    assert isinstance(model[0], tritonnet.nn.Conv2d) and isinstance(model[2], tritonnet.nn.Linear)
    assert parametrize.type_before_parametrizations(model[0]) is tritonnet.nn.Conv2d
    torch.testing.assert_close(model(x), before)
    assert list(model.state_dict()) == keys
    model(x).sum().backward()
    assert model[0].parametrizations.weight.original1.grad is not None
    assert isinstance(copy.deepcopy(model)[0], tritonnet.nn.Conv2d)
    parametrize.remove_parametrizations(model[0], "weight")
    assert type(model[0]) is tritonnet.nn.Conv2d
    torch.testing.assert_close(model(x), before)
    parametrizations.weight_norm(model[0])
    assert isinstance(model[0], tritonnet.nn.Conv2d)


@pytest.mark.parametrize(
    "x_shape,w_shape,b_shape,match",
    [
        ((3, 5), (4, 6), None, r"cannot be multiplied \(3x5 and 6x4\)"),
        ((3, 5), (4, 5, 1), None, r"weight to be 2-D.*\(4, 5, 1\)"),
        ((3, 5), (4, 5), (3,), r"bias of shape \(4,\).*got \(3,\)"),
        ((3, 5), (4, 5), (2, 4), r"broadcasts to the result's \(3, 4\), got \(2, 4\)"),
        ((2, 3, 5), (4, 5), (5, 4), r"broadcasts to the result's \(2, 3, 4\), got \(5, 4\)"),
        ((2, 3, 5), (4, 5), (2, 4), r"broadcasts to the result's \(2, 3, 4\), got \(2, 4\)"),
        ((5,), (1, 5), (1, 1), r"got \(1, 1\)"),  # a 1-D input takes (1, N) only for N != 1
        ((3, 5), (5,), (), r"mat2 must be a matrix"),  # torch's quirk: 1-D weight, 2-D input
        ((2, 3, 5), (5,), (1,), r"mat2 must be a matrix"),
    ],
)
def test_bad_shapes_raise(x_shape, w_shape, b_shape, match):
    b = torch.randn(b_shape) if b_shape is not None else None
    with pytest.raises(RuntimeError, match=match):
        F.linear(torch.randn(x_shape), torch.randn(w_shape), b)
    # torch raises the same type for the same mistake
    with pytest.raises(RuntimeError):
        TF.linear(torch.randn(x_shape), torch.randn(w_shape), b)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_strided_operands_like_torch(backend):
    """A bias slice (stride 2: the epilogue once read it as dense, giving wrong values), a
    transposed weight and input, a strided 3-D input; values and gradients against torch."""
    tf32_off()
    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    r = torch.randn
    cases = [
        (lambda f, x, w, b: f.linear(x, w, b[::2]), r(3, 5), r(4, 5), r(8)),
        (lambda f, x, w, b: f.linear(x.transpose(1, 2), w, b[1::2]), r(2, 5, 3), r(4, 5), r(8)),
        (lambda f, x, w, b: f.linear(x.t(), w.t(), b), r(5, 3), r(5, 4), r(4)),
        (lambda f, x, w, b: f.linear(x[:, ::2], w, b), r(3, 10), r(4, 5), r(4)),
    ]
    assert_like_torch(cases, F, dev)


# views that reach the GEMM as (M, K) inputs and (N, K) weights of every stride kind torch's
# mm backward tells apart (FunctionsManual's mm_mat1_backward / mm_mat2_backward)
_INPUT_VIEWS = {
    "contiguous": (lambda x: x, (5, 4)),
    "transposed": (lambda x: x.t(), (4, 5)),
    "rows sliced": (lambda x: x[::2], (10, 4)),
    "columns sliced": (lambda x: x[:, ::2], (5, 8)),
    "3-D, folds into a transposed (M, K)": (lambda x: x.permute(1, 2, 0), (4, 2, 5)),
    "3-D, does not fold (copied)": (lambda x: x.transpose(1, 2), (2, 4, 5)),
}
_WEIGHT_VIEWS = {
    "contiguous": (lambda w: w, (3, 4)),
    "transposed": (lambda w: w.t(), (4, 3)),
    "rows sliced": (lambda w: w[::2], (6, 4)),
    "columns sliced": (lambda w: w[:, ::2], (3, 8)),
    "one row": (lambda w: w[:1], (3, 4)),
}


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_gradient_layouts_like_torch(backend):
    """Input and weight gradients in the layouts torch's mm backward gives them: a transposed
    input's gradient column-major, a weight's row-major only when the weight is (a transposed
    or sliced weight gets a column-major one); values too, with and without a bias, and what
    the fake kernels (torch.compile's plan) say matches."""
    from tests.helpers import fake_layouts_checked

    tf32_off()
    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    cases = []
    for xv, x_shape in _INPUT_VIEWS.values():
        for wv, w_shape in _WEIGHT_VIEWS.values():
            out_features = wv(torch.empty(w_shape)).shape[0]
            cases.append((lambda f, x, w, xv=xv, wv=wv: f.linear(xv(x), wv(w)),
                          torch.randn(x_shape), torch.randn(w_shape)))
            cases.append((lambda f, x, w, b, xv=xv, wv=wv: f.linear(xv(x), wv(w), b),
                          torch.randn(x_shape), torch.randn(w_shape), torch.randn(out_features)))
    with fake_layouts_checked():
        assert_like_torch(cases, F, dev)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize(
    "x_shape,w_shape,b_shape",
    [
        ((3, 0), (4, 0), (4,)),  # an empty reduction: the bias alone (and zeros without one)
        ((2, 3, 0), (4, 0), None),
        ((3, 5), (4, 5), ()),  # biases that broadcast to the result, as torch's addmm takes them
        ((3, 5), (4, 5), (1,)),
        ((3, 5), (4, 5), (3, 4)),
        ((2, 3, 5), (4, 5), (1, 4)),
        ((2, 3, 5), (4, 5), (3, 4)),  # one bias a row of the 3-D input's result
        ((5,), (4, 5), (1, 4)),  # a 1-D input with a (1, N) bias: torch's result is 1-D
        ((5,), (5,), ()),  # a 1-D weight: input @ weight, the last dim dropped
        ((2, 3, 5), (5,), ()),
        ((2, 3, 5), (5,), None),
    ],
)
def test_shapes_torch_accepts(backend, x_shape, w_shape, b_shape):
    """Shapes beyond (out_features, in_features) weights and (out_features,) biases that torch
    accepts, with their gradients."""
    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    x, w = torch.randn(x_shape, device=dev), torch.randn(w_shape, device=dev)
    b = torch.randn(b_shape, device=dev) if b_shape is not None else None
    want = TF.linear(x, w, b)
    g = torch.randn_like(want)
    leaves = [t.detach().requires_grad_() for t in (x, w, b) if t is not None]
    args = leaves if b is not None else [*leaves, None]
    got = F.linear(*args)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want)
    ours = torch.autograd.grad(got, leaves, g)
    theirs = torch.autograd.grad(TF.linear(*args), leaves, g)
    for a, r in zip(ours, theirs):
        torch.testing.assert_close(a, r)
    torch.testing.assert_close(F.linear(*args, activation="relu"), want.relu())


def test_bad_dtype_and_activation():
    with pytest.raises(RuntimeError, match="same dtype.*float32.*float64"):
        F.linear(torch.randn(2, 3), torch.randn(4, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="floating-point.*torch.int64"):
        F.linear(torch.ones(2, 3, dtype=torch.long), torch.ones(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="activation must be one of.*'gelu'"):
        F.linear(torch.randn(2, 3), torch.randn(4, 3), activation="gelu")


def test_triton_backend_on_cpu_without_interpreter_raises(monkeypatch):
    from tritonnet import backend

    monkeypatch.setattr(backend, "interpreter_enabled", lambda: False)
    tritonnet.set_backend("triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        F.linear(torch.randn(2, 3), torch.randn(4, 3))


def test_set_backend_rejects_unknown_name():
    with pytest.raises(ValueError, match="'cudnn'"):
        tritonnet.set_backend("cudnn")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_every_autotune_config_is_correct(dtype, tol):
    """Each config of the tuned set, launched directly, on shapes with ragged edges."""
    import triton

    from tritonnet.kernels import linear as klin
    from tritonnet.kernels._common import upcast_dot

    tf32_off()
    M, K, N = 300, 200, 130
    a = torch.randn(M, K, device="cuda").to(dtype)
    b = torch.randn(K, N, device="cuda").to(dtype)
    bias = torch.randn(N, device="cuda").to(dtype)
    ref = torch.relu(a.float() @ b.float() + bias.float())
    for cfg in klin._configs():
        out = torch.full((M, N), float("nan"), device="cuda", dtype=dtype)  # poison
        rowsum = torch.full((M,), float("nan"), device="cuda", dtype=torch.float32)
        grid = (triton.cdiv(M, cfg.kwargs["BLOCK_M"]) * triton.cdiv(N, cfg.kwargs["BLOCK_N"]),)
        klin._matmul_kernel[grid](
            a, b, out, bias, rowsum, M, N, K,
            a.stride(0), a.stride(1), b.stride(0), b.stride(1), out.stride(0), out.stride(1),
            HAS_BIAS=True, ACTIVATION="relu", ROWSUM_A=True, INPUT_PRECISION="ieee",
            UPCAST=upcast_dot(dtype),  # False on a GPU; the interpreter cannot dot bf16
            num_warps=cfg.num_warps, num_stages=cfg.num_stages, **cfg.kwargs,
        )
        assert_close_rel(out, ref, tol, f"config {cfg}")
        assert_close_rel(rowsum, a.float().sum(1), 1e-5, f"rowsum {cfg}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_large_gpu_shapes(dtype, tol):
    tf32_off()
    tritonnet.set_backend("triton")
    x = torch.randn(4096, 1024, device="cuda").to(dtype).requires_grad_()
    w = torch.randn(2048, 1024, device="cuda").to(dtype).requires_grad_()
    b = torch.randn(2048, device="cuda").to(dtype).requires_grad_()
    g = torch.randn(4096, 2048, device="cuda").to(dtype)
    ours, gs = _grads(lambda x, w, b: F.linear(x, w, b), x, w, b, grad=g)
    xr, wr, br = (t.detach().double().requires_grad_() for t in (x, w, b))
    ref, rs = _grads(lambda x, w, b: TF.linear(x, w, b), xr, wr, br, grad=g.double())
    assert_close_rel(ours, ref, tol, "y")
    for a, r in zip(gs, rs):
        assert_close_rel(a, r, tol)


@pytest.mark.gpu
def test_cuda_graph_capture():
    tritonnet.set_backend("triton")
    model = torch.nn.Sequential(tritonnet.nn.Linear(64, 64), tritonnet.nn.ReLU()).cuda()
    x = torch.randn(32, 64, device="cuda")
    model(x)  # warm up: autotune + compile outside the capture
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        model(x)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = model(x)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.testing.assert_close(y, model(x))
