"""softmax / log_softmax: reference vs torch, gradcheck through the reference, Triton kernels vs
reference (single- and multi-block rows, strided class axis), NaN/Inf like torch, the legacy
dim=None rule, autocast, modules and errors."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as TF

import tritonnet
import tritonnet.functional as F
from tests.helpers import DTYPES, HAS_CUDA, KERNEL_DEVICE, assert_close_rel, bench_recorder, opcheck
from tritonnet import reference

# the interpreter computes masked-out lanes too (exp/log of -inf there): numpy warns, harmlessly
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")

OPS = {"softmax": (F.softmax, TF.softmax), "log_softmax": (F.log_softmax, TF.log_softmax)}
LOG = {"softmax": False, "log_softmax": True}

# (shape, dim) through the functional API
CASES = [
    ((7,), 0),  # 1-d
    ((4, 9), 1),  # last dim
    ((4, 9), -2),  # negative dim, first of two
    ((2, 5, 3), 1),  # middle dim: strided class axis
    ((2, 3, 4, 5), 0),  # first dim of a 4-d tensor
    ((2, 3, 4, 5), -1),
    ((), 0),  # 0-d: softmax 1, log_softmax 0
]

# (outer, C, inner) for the primitives. Interpreter blocks hold at most 32 classes, 16 rows.
KERNEL_SHAPES = [
    (3, 1, 1),  # one class
    (5, 7, 1),  # odd C, several rows per program, a partial row block
    (2, 32, 1),  # C exactly one block
    (3, 70, 1),  # C over two blocks + a remainder: the two-pass (online max) path
    (2, 9, 3),  # strided class axis (NCHW-like), odd sizes
    (2, 45, 5),  # strided and multi-block
    (17, 3, 1),  # 17 rows: one full row block of 16 and a partial one
]


def _grads(fn, x, g):
    y = fn(x)
    return y, torch.autograd.grad(y, x, g)[0]


@pytest.fixture
def poison(monkeypatch):
    """New float tensors start as NaN, so an element a kernel forgets to write shows up."""
    empty, empty_like = torch.empty, torch.empty_like

    def _nan(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: _nan(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: _nan(empty_like(*a, **k)))


# ---------------------------------------------------------------------------------------------
# reference path (forward + our backward) against torch, float64


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape,dim", CASES)
def test_reference_matches_torch(shape, dim, op):
    tritonnet.set_backend("reference")
    ours, ref = OPS[op]
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    g = torch.randn(shape, dtype=torch.float64)
    y, gx = _grads(lambda x: ours(x, dim), x, g)
    yr, gr = _grads(lambda x: ref(x, dim), x, g)
    torch.testing.assert_close(y, yr)
    torch.testing.assert_close(gx, gr)


@pytest.mark.parametrize("op", OPS)
def test_dtype_argument_casts_first(op):
    """dtype= casts the input before the op (also an integer input), as torch."""
    tritonnet.set_backend("reference")
    ours, ref = OPS[op]
    x = torch.randn(3, 6, dtype=torch.float16)
    y, yr = ours(x, 1, dtype=torch.float64), ref(x, 1, dtype=torch.float64)
    assert y.dtype == yr.dtype == torch.float64
    torch.testing.assert_close(y, yr)
    k = torch.arange(6).reshape(2, 3)
    torch.testing.assert_close(ours(k, 1, dtype=torch.float32), ref(k, 1, dtype=torch.float32))


@pytest.mark.parametrize("op", OPS)
def test_gradcheck(op):
    tritonnet.set_backend("reference")
    fn = OPS[op][0]
    x = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: fn(x, 1), (x,))
    assert torch.autograd.gradcheck(lambda x: fn(x, -1), (x,))


# ---------------------------------------------------------------------------------------------
# Triton kernels against the reference primitives


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", KERNEL_SHAPES)
def test_kernels_match_reference(shape, op, dtype, tol, poison):
    from tritonnet import kernels

    log = LOG[op]
    x = (3 * torch.randn(shape, device=KERNEL_DEVICE)).to(dtype)
    g = torch.randn(shape, device=KERNEL_DEVICE).to(dtype)
    y = kernels.softmax_forward(x, log)
    assert y.dtype == dtype and y.shape == x.shape
    yr = reference.softmax_forward(x, log)
    assert_close_rel(y, yr, tol, "forward")
    # both backwards from the same saved output (the reference's)
    dx = kernels.softmax_backward(g, yr, log)
    assert_close_rel(dx, reference.softmax_backward(g, yr, log), tol, "backward")


def test_interpreter_blocks_reach_the_multi_block_path():
    """The shapes above are only meaningful if C = 70 is longer than one block."""
    from tritonnet.kernels.softmax import row_tile

    if HAS_CUDA:
        pytest.skip("GPU blocks are larger; test_kernels_long_rows_gpu covers them")
    assert row_tile(3, 70, 1)[1] < 70 and row_tile(10, 45, 5)[1] < 45


@pytest.mark.gpu
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", [(4, 10000, 1), (2, 5000, 3), (1000, 10, 1)])
def test_kernels_long_rows_gpu(shape, op):
    from tritonnet import kernels

    x = 3 * torch.randn(shape, device="cuda")
    g = torch.randn(shape, device="cuda")
    log = LOG[op]
    yr = reference.softmax_forward(x, log)
    assert_close_rel(kernels.softmax_forward(x, log), yr, 1e-5, "forward")
    assert_close_rel(kernels.softmax_backward(g, yr, log), reference.softmax_backward(g, yr, log), 1e-5)


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_triton_backend_end_to_end(op, dtype, tol):
    """The functional op (forward + autograd) on the Triton backend against torch in fp32."""
    tritonnet.set_backend("triton")
    ours, ref = OPS[op]
    x = torch.randn(3, 40, 2, device=KERNEL_DEVICE).to(dtype).requires_grad_()
    g = torch.randn(3, 40, 2, device=KERNEL_DEVICE).to(dtype)
    y, gx = _grads(lambda x: ours(x, 1), x, g)
    xr = x.detach().float().requires_grad_()
    yr, gr = _grads(lambda x: ref(x, 1), xr, g.float())
    assert y.dtype == gx.dtype == dtype
    assert_close_rel(y, yr, tol, "y")
    assert_close_rel(gx, gr, tol, "dx")


@pytest.mark.parametrize("op", OPS)
def test_kernels_strided_layouts(op):
    """channels_last (class axis contiguous, dim 1) and a transposed input go through strides."""
    tritonnet.set_backend("triton")
    ours, ref = OPS[op]
    x = torch.randn(2, 5, 3, 4, device=KERNEL_DEVICE).to(memory_format=torch.channels_last)
    torch.testing.assert_close(ours(x, 1), ref(x, 1))
    xt = torch.randn(6, 9, device=KERNEL_DEVICE).t()  # (9, 6), stride (1, 9)
    torch.testing.assert_close(ours(xt, 1), ref(xt, 1))
    torch.testing.assert_close(ours(xt, 0), ref(xt, 0))


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("op", OPS)
def test_result_and_gradient_layouts_like_torch(op, backend):
    """torch returns softmax's result and gradient contiguous whatever the input's layout (so
    a .view() of either works as it does with torch): channels_last on every dim, a transposed
    and a permuted input, and a gradient arriving in another layout."""
    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    ours, ref = OPS[op]
    cases = [(torch.randn(2, 5, 3, 4, device=dev).to(memory_format=torch.channels_last), d) for d in range(4)]
    cases += [(torch.randn(6, 9, device=dev).t(), d) for d in (0, 1)]
    cases += [(torch.randn(3, 4, 5, device=dev).permute(2, 0, 1), d) for d in (0, 2)]
    for x, d in cases:
        x = x.detach().requires_grad_()
        g = torch.randn(tuple(reversed(x.shape)), device=dev).permute(*reversed(range(x.dim())))
        y, gx = _grads(lambda x, d=d: ours(x, d), x, g)
        yr, gr = _grads(lambda x, d=d: ref(x, d), x, g)
        what = f"{tuple(x.shape)} {x.stride()} dim {d}"
        assert (y.stride(), gx.stride()) == (yr.stride(), gr.stride()), what
        torch.testing.assert_close(y, yr, msg=what)
        torch.testing.assert_close(gx, gr, msg=what)


# ---------------------------------------------------------------------------------------------
# NaN / Inf, empty tensors


def _special_rows(C):
    inf, nan = float("inf"), float("nan")
    x = torch.randn(6, C)
    x[0, 1] = -inf  # one -inf: probability 0, log-probability -inf
    x[1, :] = -inf  # all -inf: NaN everywhere (torch computes -inf - -inf)
    x[2, 2] = inf  # +inf: NaN
    x[3, 0] = nan  # NaN poisons its row only
    x[4, : C // 2] = -inf  # a first block of -inf, then very negative values: the running
    x[4, C // 2 :] = -200.0 - torch.rand(C - C // 2)  # max must not start from 0
    return x


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("C", [5, 70])  # one block, and the multi-block path
def test_nan_inf_like_torch(C, op, backend):
    tritonnet.set_backend(backend)
    ours, ref = OPS[op]
    x = _special_rows(C).to(KERNEL_DEVICE if backend == "triton" else "cpu").requires_grad_()
    g = torch.randn_like(x)
    y, gx = _grads(lambda x: ours(x, 1), x, g)
    yr, gr = _grads(lambda x: ref(x, 1), x, g)
    torch.testing.assert_close(y, yr, equal_nan=True)
    torch.testing.assert_close(gx, gr, equal_nan=True)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("C", [5, 70])  # one block, and the two-pass path
def test_log_softmax_keeps_a_confident_rows_precision(C, backend):
    """log_softmax at a row's maximum is -log(s), s = sum exp(x - max) near 1, ~1e-6 here. As
    x - lse it would be rounded to the ulp of the max (~8e-6 for maxima of 60-100); log(s) of a
    rounded s (torch's way) keeps only a few ulps of 1. As (x - max) - log1p(s - 1), s - 1
    summed without the max's 1, it keeps a few ulps of itself."""
    tritonnet.set_backend(backend)
    g = torch.Generator().manual_seed(0)
    top = 60 + 40 * torch.rand(8, 1, generator=g)
    x = top - 12 - 6 * torch.rand(8, 1, generator=g) - torch.randn(8, C, generator=g).abs()
    x[:, 3] = top.squeeze(1)
    x = x.to(KERNEL_DEVICE if backend == "triton" else "cpu")
    truth = TF.log_softmax(x.double(), 1)
    assert truth[:, 3].min() > -1e-3  # the rows are as confident as meant
    err = (F.log_softmax(x, 1).double() - truth).abs()
    assert (err / truth.abs())[:, 3].max() < 8 * torch.finfo(torch.float32).eps, err[:, 3]
    others = torch.arange(C) != 3
    assert (err / truth.abs())[:, others].max() < 4 * torch.finfo(torch.float32).eps


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_ties_at_the_maximum(backend):
    """log(s) is summed without one copy of the row's max (online_rest): ties must still count
    every other copy, within a block, across blocks (the interpreter's blocks hold 32 classes)
    and when a later block only ties the running max. cross_entropy shares the sum."""
    tritonnet.set_backend(backend)
    C = 70
    x = torch.randn(7, C) - 3
    x[0] = 2.5  # all equal: log_softmax = -log(C)
    x[1, [4, 9]] = 4.0  # two copies in one block
    x[2, [4, 50]] = 4.0  # in two blocks
    x[3, [40, 41, 69]] = 4.0  # three copies, none in the first block
    x[4, [3, 33, 66]] = 30.0  # one in every block, confident
    x[5, 60] = 30.0  # the max in the last block, after a first max that it outgrows
    x[5, 10] = 29.0
    x[6, :] = float("-inf")  # -inf but for two tied copies
    x[6, [5, 40]] = 1.0
    x = x.to(KERNEL_DEVICE if backend == "triton" else "cpu")
    truth = TF.log_softmax(x.double(), 1)
    torch.testing.assert_close(F.log_softmax(x, 1).double(), truth, rtol=4e-7, atol=1e-12)
    t = torch.tensor([4, 4, 50, 41, 66, 60, 40], device=x.device)
    torch.testing.assert_close(F.cross_entropy(x, t, reduction="none").double(),
                               TF.cross_entropy(x.double(), t, reduction="none"), rtol=4e-7, atol=1e-12)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("shape", [(0, 3), (3, 0)])
def test_empty(shape, backend):
    tritonnet.set_backend(backend)
    x = torch.randn(shape, device=KERNEL_DEVICE if backend == "triton" else "cpu").requires_grad_()
    y = F.softmax(x, 1)
    assert y.shape == shape
    y.sum().backward()
    assert x.grad.shape == shape


# ---------------------------------------------------------------------------------------------
# torch's API details: dim=None, autocast, modules, errors


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4), (2, 3, 4, 5)])
def test_implicit_dim_warns_and_follows_torch(shape, op):
    tritonnet.set_backend("reference")
    ours, ref = OPS[op]
    x = torch.randn(shape)
    with pytest.warns(UserWarning, match=f"Implicit dimension choice for {op}") as rec:
        y = ours(x)
    assert rec[0].filename == __file__  # points at the caller, as torch's does
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(y, ref(x))


def test_autocast_cpu_keeps_dtype_like_torch():
    """CPU autocast does not touch softmax (its fp32 list lacks it); CUDA autocast does."""
    tritonnet.set_backend("reference")
    x = torch.randn(3, 5).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, yr = F.softmax(x, 1), TF.softmax(x, 1)
        z, zr = F.log_softmax(x.float(), 1), TF.log_softmax(x.float(), 1)
    assert y.dtype == yr.dtype == torch.bfloat16 and z.dtype == zr.dtype == torch.float32
    assert_close_rel(y, yr, 1.6e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("op", OPS)
def test_autocast_cuda_runs_fp32_like_torch(op):
    ours, ref = OPS[op]
    x = torch.randn(4, 7, device="cuda").half()
    with torch.autocast("cuda", dtype=torch.float16):
        y, yr = ours(x, 1), ref(x, 1)
        yd, yrd = ours(x, 1, dtype=torch.float16), ref(x, 1, dtype=torch.float16)
    assert y.dtype == yr.dtype == torch.float32 and yd.dtype == yrd.dtype == torch.float16
    assert_close_rel(y, yr, 1e-5)


@pytest.mark.parametrize("cls", ["Softmax", "LogSoftmax"])
def test_modules_match_torch(cls):
    ours = getattr(tritonnet.nn, cls)(dim=1)
    ref = getattr(torch.nn, cls)(dim=1)
    assert repr(ours) == repr(ref) and repr(getattr(tritonnet.nn, cls)()) == repr(getattr(torch.nn, cls)())
    assert ours.state_dict() == ref.state_dict() == {}
    x = torch.randn(3, 5, 2)
    torch.testing.assert_close(ours(x), ref(x))
    # the implicit-dim warning points where torch's module points it (its _stacklevel=5)
    with pytest.warns(UserWarning, match="Implicit dimension") as rec:
        getattr(tritonnet.nn, cls)()(torch.randn(2, 3))
    with pytest.warns(UserWarning, match="Implicit dimension") as rec_torch:
        getattr(torch.nn, cls)()(torch.randn(2, 3))
    assert rec[0].filename == rec_torch[0].filename


@pytest.mark.parametrize(
    "args,exc,match",
    [
        ((torch.randn(2, 3), 2), IndexError, r"range of \[-2, 1\], but got 2"),
        ((torch.randn(2, 3), -3), IndexError, r"range of \[-2, 1\], but got -3"),
        ((torch.tensor(1.0), 1), IndexError, r"range of \[-1, 0\], but got 1"),
        ((torch.ones(2, 3, dtype=torch.long), 1), NotImplementedError, "torch.int64"),
        ((torch.randn(2, 3), 1.0), TypeError, "'dim'.*must be int, not float"),
    ],
)
@pytest.mark.parametrize("op", OPS)
def test_errors_like_torch(op, args, exc, match):
    ours, ref = OPS[op]
    with pytest.raises(exc, match=match):
        ours(*args)
    with pytest.raises(exc):  # torch raises the same type for the same mistake
        ref(*args)


def test_not_a_tensor():
    with pytest.raises(TypeError, match="must be Tensor, not list"):
        F.softmax([1.0, 2.0], 0)
    assert math.isclose(F.softmax(torch.tensor([0.0, 0.0]), 0)[0].item(), 0.5)


@pytest.mark.parametrize("log", [False, True])
def test_custom_op_passes_opcheck(log):
    """Schema, fake (meta) implementation and AOT dispatch agree with the real op."""
    from tritonnet.ops.softmax import softmax

    tritonnet.set_backend("reference")
    opcheck(softmax, (torch.randn(3, 6, 2, dtype=torch.float64, requires_grad=True), log))


def test_convert_swaps_softmax_modules():
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.LogSoftmax(dim=1))
    x = torch.randn(3, 4)
    before = model(x)
    tritonnet.convert(model)
    assert type(model[1]) is tritonnet.nn.LogSoftmax
    torch.testing.assert_close(model(x), before)


# ---------------------------------------------------------------------------------------------
# the benchmark module, on CPU with a fake timer (the numbers come from a GPU run)


def test_bench_softmax_runs_and_counts_bytes():
    from tritonnet.bench import softmax as bsm

    ce = bsm.Case("tiny.ce", "cross_entropy", (2, 5, 3, 4))
    # 120 logits, 24 rows of int64 targets: forward reads both; backward also writes dx
    assert bsm.min_bytes(ce, "forward", 2) == 2 * 120 + 8 * 24
    assert bsm.min_bytes(ce, "forward+backward", 4) == (4 * 120 + 8 * 24) + (8 * 120 + 8 * 24)
    sm = bsm.Case("tiny.ls", "log_softmax", (3, 70))
    assert bsm.min_bytes(sm, "backward", 4) == 3 * 4 * 210  # dy, y read; dx written

    rec = bench_recorder()
    cases = [ce, bsm.Case("tiny.ce", "cross_entropy", (2, 5, 3, 4), layout="channels_last"), sm]
    bsm.run(rec, device=KERNEL_DEVICE, dtypes=["fp32-tf32", "fp32"], cases=cases)
    df = rec.frame()
    assert not rec.failures, rec.failures
    assert set(df["dtype"]) == {"fp32"} and set(df["label"]) == {"tiny.ce", "tiny.ce.cl", "tiny.ls"}
    assert set(df["layout"]) == {"contiguous", "channels_last"}
    assert (df[df["metric"] == "rel_err"]["check"] == "ok").all()
    gbs = df[(df["metric"] == "GB/s") & (df["label"] == "tiny.ls") & (df["mode"] == "forward")]
    assert len(gbs) == 2  # tritonnet and torch
    assert gbs["p50"].iloc[0] == pytest.approx(bsm.min_bytes(sm, "forward", 4) / 0.01e6)
    # the real cases: the issue-bound ones past one block are there, and --quick keeps some
    assert {c.fn for c in bsm.select_cases(quick=True)} == {"softmax", "log_softmax", "cross_entropy"}
    assert any(c.shape[1] > 4096 for c in bsm.CASES)
