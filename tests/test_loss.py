"""cross_entropy, nll_loss, mse_loss: reference vs torch for every option (outputs and
gradients, float64), gradcheck through the reference, Triton kernels vs reference on shapes that
hit every mask, NaN/Inf like torch, empty batches, autocast, modules and errors."""

import warnings

import pytest
import torch
import torch.nn.functional as TF

import tritonnet
import tritonnet.functional as F
from tests.helpers import DTYPES, HAS_CUDA, KERNEL_DEVICE, assert_close_rel, opcheck
from tritonnet import reference

# the interpreter computes masked-out lanes too (exp/log of -inf there): numpy warns, harmlessly
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")

REDUCTIONS = ["none", "sum", "mean"]
# input shapes: (C,), (N, C), (N, C, d1), (N, C, d1, d2)
CE_SHAPES = [(5,), (4, 5), (2, 7, 3), (3, 6, 2, 3)]


@pytest.fixture
def poison(monkeypatch):
    """New float tensors start as NaN, so an element a kernel forgets to write shows up."""
    empty, empty_like = torch.empty, torch.empty_like

    def _nan(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: _nan(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: _nan(empty_like(*a, **k)))


def _classes(shape):
    return shape[1] if len(shape) > 1 else shape[0]


def _index_target(shape, ignore_index=None, device="cpu"):
    """Random class indices for logits of ``shape``; some set to ignore_index if given, and
    always some to class 2 (so an in-range ignore_index of 2 really ignores rows)."""
    tshape = (shape[0], *shape[2:]) if len(shape) > 1 else ()
    t = torch.randint(0, _classes(shape), tshape, device=device)
    flat = t.view(-1)
    flat[:: 3] = 2
    if ignore_index is not None and flat.numel() > 1:
        flat[1::4] = ignore_index
    return t


def _prob_target(shape, dtype=torch.float64, device="cpu"):
    return torch.rand(shape, dtype=dtype, device=device).softmax(1 if len(shape) > 1 else 0)


def _compare(ours_fn, ref_fn, inputs, grad_inputs, **tol):
    """Outputs and the gradients of ``grad_inputs`` agree (same upstream gradient). NaN
    matches NaN: a 'mean' over only ignored rows is 0/0 in torch too."""
    tol.setdefault("equal_nan", True)
    y, yr = ours_fn(*inputs), ref_fn(*inputs)
    assert y.dtype == yr.dtype and y.shape == yr.shape
    torch.testing.assert_close(y, yr, **tol)
    if grad_inputs:
        g = torch.randn_like(y)
        gs = torch.autograd.grad(y, grad_inputs, g)
        rs = torch.autograd.grad(yr, grad_inputs, g)
        for a, r in zip(gs, rs):
            torch.testing.assert_close(a, r, **tol)


# ---------------------------------------------------------------------------------------------
# reference path against torch, float64, every option


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [-100, 2])  # 2: in range, hits rows
@pytest.mark.parametrize("shape", CE_SHAPES)
def test_cross_entropy_index_reference(shape, ignore_index, weighted, eps, reduction):
    tritonnet.set_backend("reference")
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    t = _index_target(shape, ignore_index)
    w = torch.rand(_classes(shape), dtype=torch.float64) + 0.1 if weighted else None
    kw = dict(weight=w, ignore_index=ignore_index, reduction=reduction, label_smoothing=eps)
    _compare(lambda x: F.cross_entropy(x, t, **kw), lambda x: TF.cross_entropy(x, t, **kw), [x], [x])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", CE_SHAPES)
def test_cross_entropy_prob_reference(shape, weighted, eps, reduction):
    """Probability targets: gradients for input, target and (torch differentiates it here)
    the class weights."""
    tritonnet.set_backend("reference")
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    p = _prob_target(shape).requires_grad_()
    w = (torch.rand(_classes(shape), dtype=torch.float64) + 0.1).requires_grad_() if weighted else None
    kw = dict(reduction=reduction, label_smoothing=eps)
    _compare(
        lambda x, p, w: F.cross_entropy(x, p, weight=w, **kw),
        lambda x, p, w: TF.cross_entropy(x, p, weight=w, **kw),
        [x, p, w], [x, p] + ([w] if weighted else []),
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [-100, 2])
@pytest.mark.parametrize("shape", CE_SHAPES)
def test_nll_loss_reference(shape, ignore_index, weighted, reduction):
    tritonnet.set_backend("reference")
    x = torch.randn(shape, dtype=torch.float64).log_softmax(1 if len(shape) > 1 else 0)
    x.requires_grad_()
    t = _index_target(shape, ignore_index)
    w = torch.rand(_classes(shape), dtype=torch.float64) + 0.1 if weighted else None
    kw = dict(weight=w, ignore_index=ignore_index, reduction=reduction)
    _compare(lambda x: F.nll_loss(x, t, **kw), lambda x: TF.nll_loss(x, t, **kw), [x], [x])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(
    "x_shape,t_shape",
    [((7,), (7,)), ((3, 4, 5), (3, 4, 5)), ((3, 1), (4,)), ((), ())],
    ids=["1d", "3d", "broadcast", "0d"],
)
def test_mse_loss_reference(x_shape, t_shape, weighted, reduction):
    """Gradients for input, target and weight; broadcasting (with torch's warning)."""
    tritonnet.set_backend("reference")
    x = torch.randn(x_shape, dtype=torch.float64, requires_grad=True)
    t = torch.randn(t_shape, dtype=torch.float64, requires_grad=True)
    w = torch.rand(x_shape, dtype=torch.float64, requires_grad=True) if weighted else None
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        y = F.mse_loss(x, t, reduction=reduction, weight=w)
        yr = TF.mse_loss(x, t, reduction=reduction, weight=w)
    # torch's broadcasting warning, from both (and pointing at the caller), or from neither
    msgs = [(str(r.message), r.filename) for r in rec if "different to the input size" in str(r.message)]
    assert len(msgs) == (2 if x_shape != t_shape else 0)
    assert all(m == msgs[0][0] and f == __file__ for m, f in msgs)
    assert y.shape == yr.shape and y.dtype == yr.dtype
    torch.testing.assert_close(y, yr)
    ins = [x, t] + ([w] if weighted else [])
    g = torch.randn_like(y)
    for a, r in zip(torch.autograd.grad(y, ins, g), torch.autograd.grad(yr, ins, g)):
        torch.testing.assert_close(a, r)


def test_label_smoothing_edges_reference():
    """eps = 1 (uniform target), eps < 0 (ignored by torch), uint8 targets."""
    tritonnet.set_backend("reference")
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 5, 2, 2])
    p = _prob_target((4, 6))
    for eps in (1.0, -0.3):
        for tgt in (t, p):
            _compare(
                lambda x, tgt=tgt, eps=eps: F.cross_entropy(x, tgt, label_smoothing=eps),
                lambda x, tgt=tgt, eps=eps: TF.cross_entropy(x, tgt, label_smoothing=eps), [x], [x],
            )
    tb = t.to(torch.uint8)
    _compare(lambda x: F.cross_entropy(x, tb), lambda x: TF.cross_entropy(x, tb), [x], [x])
    _compare(lambda x: F.nll_loss(x, tb), lambda x: TF.nll_loss(x, tb), [x], [x])


def test_legacy_size_average_reduce():
    tritonnet.set_backend("reference")
    x, t = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    for sa, rd in [(False, None), (None, False), (True, True)]:
        with pytest.warns(UserWarning, match="size_average and reduce"):
            y = F.cross_entropy(x, t, size_average=sa, reduce=rd)
            yn = F.nll_loss(x, t, size_average=sa, reduce=rd)
            ym = F.mse_loss(x, x.flip(0), size_average=sa, reduce=rd)
        with pytest.warns(UserWarning):
            torch.testing.assert_close(y, TF.cross_entropy(x, t, size_average=sa, reduce=rd))
            torch.testing.assert_close(yn, TF.nll_loss(x, t, size_average=sa, reduce=rd))
            torch.testing.assert_close(ym, TF.mse_loss(x, x.flip(0), size_average=sa, reduce=rd))


@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float64), (torch.float64, torch.float16)])
def test_mixed_dtypes_promote_like_torch(dtypes):
    """Probability targets and mse promote the result dtype as torch's arithmetic does."""
    tritonnet.set_backend("reference")
    a, b = dtypes
    x = torch.randn(3, 5, dtype=a)
    p = _prob_target((3, 5), dtype=b)
    y, yr = F.cross_entropy(x, p), TF.cross_entropy(x, p)
    assert y.dtype == yr.dtype
    torch.testing.assert_close(y, yr, atol=1e-3, rtol=1e-3)  # fp16 targets on one side
    y, yr = F.mse_loss(x, p, reduction="none"), TF.mse_loss(x, p, reduction="none")
    assert y.dtype == yr.dtype
    torch.testing.assert_close(y, yr)
    xi = torch.arange(15).reshape(3, 5)  # an integer input promotes with a float target
    torch.testing.assert_close(F.mse_loss(xi, p.to(a)), TF.mse_loss(xi, p.to(a)))


# ---------------------------------------------------------------------------------------------
# gradcheck of every custom backward (float64, reference)


def test_gradcheck_cross_entropy():
    tritonnet.set_backend("reference")
    x = torch.randn(4, 5, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0, 4], [-100, 2], [2, 2], [1, 3]])
    w = torch.rand(5, dtype=torch.float64) + 0.1
    assert torch.autograd.gradcheck(
        lambda x: F.cross_entropy(x, t, weight=w, label_smoothing=0.1), (x,)
    )
    p = _prob_target((4, 5, 2)).requires_grad_()
    wg = w.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, p, w: F.cross_entropy(x, p, weight=w, label_smoothing=0.3, reduction="sum"),
        (x, p, wg),
    )


def test_gradcheck_nll_and_mse():
    tritonnet.set_backend("reference")
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 4, -100, 2])
    w = torch.rand(5, dtype=torch.float64) + 0.1
    assert torch.autograd.gradcheck(lambda x: F.nll_loss(x, t, weight=w), (x,))
    assert torch.autograd.gradcheck(lambda x: F.nll_loss(x, t, reduction="none"), (x,))
    y = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    wm = torch.rand(4, 5, dtype=torch.float64, requires_grad=True)
    for red in REDUCTIONS:
        fn = lambda x, y, w, red=red: F.mse_loss(x, y, reduction=red, weight=w)
        assert torch.autograd.gradcheck(fn, (x, y, wm))
        assert torch.autograd.gradcheck(lambda x, y, red=red: F.mse_loss(x, y, reduction=red), (x, y))


# ---------------------------------------------------------------------------------------------
# Triton kernels against the reference primitives

# (N, C, R): interpreter blocks hold at most 32 classes and 16 rows
KERNEL_SHAPES = [
    (3, 1, 1),  # one class
    (5, 7, 1),  # odd C, rows packed in one program, a partial row block
    (2, 32, 1),  # C exactly one block
    (3, 70, 1),  # C over two blocks + a remainder: the multi-block loop
    (2, 9, 3),  # spatial: strided class axis, odd sizes
    (2, 45, 5),  # spatial and multi-block
    (17, 3, 1),  # 17 rows: one full row block and a partial one
]
# (probability target, weighted, label smoothing); index targets also carry ignored rows
CE_OPTIONS = [(False, False, 0.0), (False, True, 0.1), (True, False, 0.0), (True, True, 0.2)]


def _ce_inputs(shape, prob, weighted, dtype, device=KERNEL_DEVICE):
    N, C, R = shape
    x = (3 * torch.randn(shape, device=device)).to(dtype)
    if prob:
        t = torch.rand(shape, device=device).softmax(1)
    else:
        t = torch.randint(0, C, (N, R), device=device)
        t.view(-1)[1::4] = -100
    w = (torch.rand(C, device=device) + 0.1).to(dtype) if weighted else None
    return x, t, w


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("prob,weighted,eps", CE_OPTIONS)
@pytest.mark.parametrize("shape", KERNEL_SHAPES)
def test_cross_entropy_kernels_match_reference(shape, prob, weighted, eps, dtype, tol, poison):
    from tritonnet import kernels

    x, t, w = _ce_inputs(shape, prob, weighted, dtype)
    loss, lse, wsum = kernels.cross_entropy_forward(x, t, w, -100, eps)
    ref = reference.cross_entropy_forward(x, t, w, -100, eps)
    assert loss.dtype == torch.float32 and loss.shape == (shape[0], shape[2])
    # row values are fp32 from the same (rounded) inputs on both sides: fp32 tolerance
    for a, r, what in zip((loss, lse, wsum), ref, ("loss", "lse", "S")):
        assert_close_rel(a, r, 1e-5, what)
    g = torch.rand(shape[0], shape[2], device=KERNEL_DEVICE)
    _, rlse, rwsum = ref
    dx = kernels.cross_entropy_backward(g, x, t, w, rlse, rwsum, -100, eps)
    assert dx.dtype == dtype
    assert_close_rel(dx, reference.cross_entropy_backward(g, x, t, w, rlse, rwsum, -100, eps), tol, "dx")
    if prob:
        dt = kernels.cross_entropy_target_grad(g, x, w, rlse, eps)
        assert_close_rel(dt, reference.cross_entropy_target_grad(g, x, w, rlse, eps), 1e-5, "dp")


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", KERNEL_SHAPES)
def test_nll_loss_kernels_match_reference(shape, weighted, dtype, tol, poison):
    from tritonnet import kernels

    x, t, w = _ce_inputs(shape, False, weighted, dtype)
    loss = kernels.nll_loss_forward(x, t, w, -100)
    assert loss.dtype == torch.float32
    # a gather and one product: exact up to fp32 rounding
    assert_close_rel(loss, reference.nll_loss_forward(x, t, w, -100), 1e-6, "loss")
    g = torch.randn(shape[0], shape[2], device=KERNEL_DEVICE)
    dx = kernels.nll_loss_backward(g, t, w, -100, shape[1], dtype)
    assert dx.dtype == dtype
    assert_close_rel(dx, reference.nll_loss_backward(g, t, w, -100, shape[1], dtype), tol, "dx")


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n", [1, 255, 700])  # one element; under / over the interpreter block
def test_mse_kernels_match_reference(n, weighted, dtype, tol, poison):
    from tritonnet import kernels

    x, t = (torch.randn(n, device=KERNEL_DEVICE).to(dtype) for _ in range(2))
    w = torch.rand(n, device=KERNEL_DEVICE).to(dtype) if weighted else None
    s = kernels.mse_loss_forward(x, t, w, True)
    assert s.dtype == torch.float32 and s.shape == ()
    assert_close_rel(s, reference.mse_loss_forward(x, t, w, True), 1e-5, "sum")  # fp32 sums
    e = kernels.mse_loss_forward(x, t, w, False)
    assert_close_rel(e, reference.mse_loss_forward(x, t, w, False), tol, "elementwise")
    for g, reduce in [(torch.randn((), device=KERNEL_DEVICE), True), (torch.randn_like(x), False)]:
        dx = kernels.mse_loss_backward(g, x, t, w, reduce)
        assert_close_rel(dx, reference.mse_loss_backward(g, x, t, w, reduce), tol, f"dx {reduce=}")


def test_interpreter_blocks_reach_the_multi_block_path():
    from tritonnet.kernels.softmax import row_tile

    if HAS_CUDA:
        pytest.skip("GPU blocks are larger; test_cross_entropy_long_rows_gpu covers them")
    assert row_tile(3, 70, 1)[1] < 70 and row_tile(10, 45, 5)[1] < 45


@pytest.mark.gpu
@pytest.mark.parametrize("prob,weighted,eps", CE_OPTIONS)
@pytest.mark.parametrize("shape", [(8, 10000, 1), (2, 5000, 3), (1000, 10, 1)])
def test_cross_entropy_long_rows_gpu(shape, prob, weighted, eps):
    from tritonnet import kernels

    x, t, w = _ce_inputs(shape, prob, weighted, torch.float32)
    out = kernels.cross_entropy_forward(x, t, w, -100, eps)
    ref = reference.cross_entropy_forward(x, t, w, -100, eps)
    for a, r in zip(out, ref):
        assert_close_rel(a, r, 1e-5)
    g = torch.rand(shape[0], shape[2], device="cuda")
    assert_close_rel(
        kernels.cross_entropy_backward(g, x, t, w, ref[1], ref[2], -100, eps),
        reference.cross_entropy_backward(g, x, t, w, ref[1], ref[2], -100, eps), 1e-5,
    )


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_triton_backend_end_to_end(dtype, tol):
    """The functional losses (forward + autograd) on the Triton backend against torch in fp32."""
    tritonnet.set_backend("triton")
    dev = KERNEL_DEVICE
    shape = (3, 40, 2)
    x = torch.randn(shape, device=dev).to(dtype).requires_grad_()
    t = _index_target(shape, -100, device=dev)
    w = (torch.rand(40, device=dev) + 0.1).to(dtype)
    p = _prob_target(shape, torch.float32, dev)
    lp = torch.randn(shape, device=dev).log_softmax(1).to(dtype).requires_grad_()
    y = torch.randn(shape, device=dev).to(dtype)
    # (loss, its input, the result dtype): a fp32 probability target promotes the result
    cases = [
        (lambda f, x: f.cross_entropy(x, t, weight=w, label_smoothing=0.1), x, dtype),
        (lambda f, x: f.cross_entropy(x, p, reduction="sum"), x, torch.float32),
        (lambda f, x: f.nll_loss(x, t, weight=w, reduction="none"), lp, dtype),
        (lambda f, x: f.mse_loss(x, y), x, dtype),
    ]
    for fn, inp, out_dtype in cases:
        out = fn(F, inp)
        (g,) = torch.autograd.grad(out, inp, torch.ones_like(out))
        ir = inp.detach().float().requires_grad_()
        ref = fn(_Fp32(TF), ir)
        (gr,) = torch.autograd.grad(ref, ir, torch.ones_like(ref))
        assert out.dtype == out_dtype and g.dtype == dtype
        assert_close_rel(out, ref, tol, "loss")
        assert_close_rel(g, gr, tol, "grad")


class _Fp32:
    """torch.nn.functional with every tensor argument in fp32 (the comparison's reference)."""

    def __init__(self, mod):
        self.mod = mod

    def __getattr__(self, name):
        fn = getattr(self.mod, name)

        def call(*args, **kw):
            up = lambda a: a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            return fn(*[up(a) for a in args], **{k: up(v) for k, v in kw.items()})

        return call


# ---------------------------------------------------------------------------------------------
# NaN / Inf, empty batches, ignored everything


def _special_logits(C):
    inf, nan = float("inf"), float("nan")
    x = torch.randn(6, C)
    x[0, 1] = -inf  # -inf on a non-target class: finite loss
    x[1, 0] = -inf  # -inf on the target: loss inf
    x[2, 2] = inf  # +inf: NaN
    x[3, 1] = nan  # NaN in a row that is ignored: loss 0
    x[4, 3] = nan  # NaN in a counted row: NaN
    x[5, : C // 2] = -inf  # a first block of -inf: the running max must not start from 0
    x[5, C // 2 :] = -200.0 - torch.rand(C - C // 2)
    return x


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("C", [5, 70])
def test_nan_inf_like_torch(C, eps, backend):
    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    x = _special_logits(C).to(dev).requires_grad_()
    t = torch.tensor([0, 0, 0, -100, 0, C - 1], device=dev)
    for red in REDUCTIONS:
        y = F.cross_entropy(x, t, reduction=red, label_smoothing=eps)
        yr = TF.cross_entropy(x, t, reduction=red, label_smoothing=eps)
        torch.testing.assert_close(y, yr, equal_nan=True)
    # gradients of the finite rows (torch's own NaN rows give NaN gradients on both sides)
    rows = [0, 5] if eps == 0 else [5]
    xf = x.detach()[rows].requires_grad_()
    tf_ = t[rows]
    _compare(
        lambda x: F.cross_entropy(x, tf_, reduction="sum", label_smoothing=eps),
        lambda x: TF.cross_entropy(x, tf_, reduction="sum", label_smoothing=eps), [xf], [xf],
    )
    # probability targets: 0 * -inf is NaN in torch's formula, and in ours
    p = torch.rand(6, C, device=dev).softmax(1)
    p[0, 1] = 0.0
    torch.testing.assert_close(
        F.cross_entropy(x, p, reduction="none"), TF.cross_entropy(x, p, reduction="none"), equal_nan=True
    )
    # infinite target weights (probabilities of +-inf): torch's sum q * log_softmax is +-inf;
    # ours gave NaN (inf * 0) where the infinite weight sat at the row's max, or (past one
    # block) in any block after it that left the max alone
    inf = float("inf")
    xq = torch.randn(5, C, device=dev)
    xq[:, 0] = 5.0  # the max in the first block ...
    xq[3, C - 1] = 6.0  # ... but for row 3, whose max comes in the last block
    q = torch.rand(5, C, device=dev)
    q[0] = inf  # every class
    q[1, 0] = inf  # at the max
    q[2, 0] = -inf
    q[3, 0] = inf  # before the max grows
    q[4, 1] = inf  # elsewhere
    for smoothing in (0.0, 0.1):
        torch.testing.assert_close(
            F.cross_entropy(xq, q, reduction="none", label_smoothing=smoothing),
            TF.cross_entropy(xq, q, reduction="none", label_smoothing=smoothing), equal_nan=True,
        )
    lp = x.detach().log_softmax(1)
    torch.testing.assert_close(
        F.nll_loss(lp, t, reduction="none"), TF.nll_loss(lp, t, reduction="none"), equal_nan=True
    )
    y = torch.randn(6, C, device=dev)
    torch.testing.assert_close(F.mse_loss(x, y), TF.mse_loss(x, y), equal_nan=True)


def _confident_logits(C, dev):
    """Rows whose largest logit (60-100, the target's) leads the others by 12 or more: the
    loss is about log(sum exp(x - max)), below 1e-3, and the ulp of the max is ~8e-6."""
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, C, (8,), generator=g)
    top = 60 + 40 * torch.rand(8, 1, generator=g)
    x = top - 12 - 6 * torch.rand(8, 1, generator=g) - torch.randn(8, C, generator=g).abs()
    x[torch.arange(8), t] = top.squeeze(1)
    return x.to(dev), t.to(dev)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("C", [5, 70])  # one block, and the multi-block path
def test_confident_rows_keep_their_precision(C, backend):
    """A confident row's loss is log(s), s = sum exp(x - max) near 1, and its gradient at the
    target p_t - 1, both ~1e-6 here. lse - x_t would round log(s) to the ulp of the max logit
    (~8e-6); log(s) of a rounded s, torch's way, loses digits as s - 1 shrinks; exp(x_t - lse)
    - 1 loses them both ways. Ours: loss = (max - x_t) + log1p(s - 1) with s - 1 summed
    without the max's 1, and p_t - 1 = -(sum of the other classes' e) / s: a few ulps of the
    values themselves (torch's fp32 losses and gradients are 18% to 100% off on these rows)."""
    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    x, t = _confident_logits(C, dev)
    w = torch.rand(C, device=dev) + 0.5
    cases = [
        ("index", lambda f, x: f.cross_entropy(x, t, reduction="none")),
        ("weighted", lambda f, x: f.cross_entropy(x, t, weight=w.to(x.dtype), reduction="none")),
        ("one-hot", lambda f, x: f.cross_entropy(x, TF.one_hot(t, C).to(x.dtype), reduction="none")),
    ]
    ulps = 8 * torch.finfo(torch.float32).eps
    rows = torch.arange(8, device=dev)
    for what, loss in cases:
        xd = x.double().requires_grad_()
        truth = loss(TF, xd)
        (gd,) = torch.autograd.grad(truth.sum(), xd)
        assert truth.max() < 1e-3, truth  # the rows are as confident as meant
        xo = x.clone().requires_grad_()
        ours = loss(F, xo)
        err = ((ours.double() - truth) / truth).abs().max().item()
        assert err < ulps, f"{what}: loss relative error {err:.3g}"
        if what != "one-hot":  # probability targets: S p_t - q_t, as torch's
            (go,) = torch.autograd.grad(ours.sum(), xo)
            gt, gdt = go[rows, t].double(), gd[rows, t]
            err = ((gt - gdt) / gdt).abs().max().item()
            assert err < ulps, f"{what}: relative error of the target's gradient {err:.3g}"


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_mse_gradient_does_not_overflow_before_torchs(backend):
    """torch computes dx = (x - t) * (2 g); 2 (x - t) first overflows for |x - t| > max / 2."""
    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    x = torch.tensor([2e38, -2e38, 1.0, 0.0], device=dev)
    t = torch.tensor([-1e38, 1e38, 0.0, 0.0], device=dev)
    for red in REDUCTIONS:
        xo, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
        (go,) = torch.autograd.grad(F.mse_loss(xo, t, reduction=red).sum(), xo)
        (gt,) = torch.autograd.grad(TF.mse_loss(xt, t, reduction=red).sum(), xt)
        assert torch.isfinite(gt).all() == (red == "mean")  # the case is as meant
        torch.testing.assert_close(go, gt, msg=red)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_mse_higher_derivatives_do_not_overflow(backend):
    """The double backward and the jvp formulas multiply (x - t) by 2 g, not 2 by (x - t):
    at |x - t| > max / 2 they stay finite, equal to float64's (torch's fp32 gives inf or NaN)."""
    from torch.func import grad, jvp

    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    x32 = torch.tensor([2e38, -2e38, 1.0, 0.0], device=dev)
    t32 = torch.tensor([-1e38, 1e38, 0.0, 0.0], device=dev)

    def derivatives(m, x, t):
        out = {}
        for red in ("mean", "none"):
            xx = x.clone().requires_grad_()
            y = m.mse_loss(xx, t, reduction=red)
            gy = torch.ones_like(y).requires_grad_()
            (dx,) = torch.autograd.grad(y, xx, gy, create_graph=True)
            (out["d(dx)/dg " + red],) = torch.autograd.grad(dx, gy, torch.full_like(dx, 0.25))
        tan = torch.full_like(x, 0.25)
        out["jvp"] = jvp(lambda a: m.mse_loss(a, t, reduction="none"), (x,), (tan,))[1]
        dx = grad(lambda b: m.mse_loss(b, t, reduction="sum"))
        out["jvp of grad"] = jvp(dx, (x,), (tan,))[1]
        return out

    ours = derivatives(F, x32, t32)
    truth = derivatives(TF, x32.double(), t32.double())
    for what, v in ours.items():
        torch.testing.assert_close(v, truth[what].float(), msg=what)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_input_gradient_layouts_like_torch(backend):
    """torch's losses return the logits' gradient contiguous whatever their layout (so a
    .view() of it works as with torch): channels_last 4-D logits (index and probability
    targets) and transposed 2-D logits. MSE's gradient is elementwise and follows torch too."""
    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    cl = torch.randn(2, 5, 3, 4, device=dev).to(memory_format=torch.channels_last)
    tr = torch.randn(5, 3, device=dev).t()
    idx4, idx2 = torch.randint(0, 5, (2, 3, 4), device=dev), torch.tensor([0, 4, 2], device=dev)
    cases = [
        ("ce", cl, lambda f, x: f.cross_entropy(x, idx4, label_smoothing=0.1)),
        ("ce prob", cl, lambda f, x: f.cross_entropy(x, torch.ones_like(x) / 5)),
        ("ce", tr, lambda f, x: f.cross_entropy(x, idx2)),
        ("nll", tr, lambda f, x: f.nll_loss(x, idx2)),
        ("mse", cl, lambda f, x: f.mse_loss(x, torch.zeros_like(x))),
        ("mse", tr, lambda f, x: f.mse_loss(x, torch.zeros_like(x))),
    ]
    for what, x, loss in cases:
        xo, xt = x.detach().requires_grad_(), x.detach().requires_grad_()
        (go,), (gt,) = torch.autograd.grad(loss(F, xo), xo), torch.autograd.grad(loss(TF, xt), xt)
        assert go.stride() == gt.stride(), (what, x.stride(), go.stride(), gt.stride())
        torch.testing.assert_close(go, gt, msg=what)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_mse_none_keeps_the_input_layout(backend):
    """torch's elementwise mse_loss(reduction='none') is laid out as its input (a channels_last
    regression map gives a channels_last loss); so is ours, and its fake kernel says so (what
    torch.compile plans with). Targets and weights of another layout, values and gradients."""
    from tests.helpers import fake_layouts_checked

    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    cl = torch.randn(2, 3, 4, 5, device=dev).to(memory_format=torch.channels_last)
    tr = torch.randn(5, 3, device=dev).t()
    cases = [
        (cl, torch.randn(2, 3, 4, 5, device=dev), None),
        (cl, torch.randn(2, 3, 4, 5, device=dev).to(memory_format=torch.channels_last), None),
        (cl, torch.randn(2, 3, 4, 5, device=dev), torch.rand(2, 3, 4, 5, device=dev)),
        (tr, torch.randn(3, 5, device=dev), None),
        (tr, torch.randn(5, 3, device=dev).t(), torch.rand(3, 5, device=dev)),
    ]
    for x, t, w in cases:
        for red in REDUCTIONS:
            xo, xt = x.detach().requires_grad_(), x.detach().requires_grad_()
            with fake_layouts_checked():
                ours = F.mse_loss(xo, t, reduction=red, weight=w)
            theirs = TF.mse_loss(xt, t, reduction=red, weight=w)
            what = (red, x.stride(), t.stride(), w is not None)
            assert ours.stride() == theirs.stride(), (what, ours.stride(), theirs.stride())
            torch.testing.assert_close(ours, theirs, msg=str(what))
            g = torch.randn(ours.shape, device=dev)
            (go,), (gt,) = torch.autograd.grad(ours, xo, g), torch.autograd.grad(theirs, xt, g)
            torch.testing.assert_close(go, gt, msg=str(what))


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_empty_and_all_ignored_like_torch(backend):
    """mean of nothing is NaN, sum 0, none empty; all rows ignored: mean NaN, sum 0."""
    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    cases = [
        (torch.randn(0, 5, device=dev), torch.zeros(0, dtype=torch.long, device=dev)),
        (torch.randn(2, 5, 0, 2, device=dev), torch.zeros(2, 0, 2, dtype=torch.long, device=dev)),
        (torch.randn(3, 5, device=dev), torch.full((3,), -100, device=dev)),
        (torch.randn(0, 5, device=dev), torch.rand(0, 5, device=dev)),
        (torch.randn(2, 0, device=dev), torch.rand(2, 0, device=dev)),  # zero classes
    ]
    for x, t in cases:
        for red in REDUCTIONS:
            torch.testing.assert_close(
                F.cross_entropy(x, t, reduction=red), TF.cross_entropy(x, t, reduction=red), equal_nan=True
            )
            if not t.is_floating_point():
                torch.testing.assert_close(
                    F.nll_loss(x, t, reduction=red), TF.nll_loss(x, t, reduction=red), equal_nan=True
                )
    e = torch.randn(0, 3, device=dev)
    for red in REDUCTIONS:
        torch.testing.assert_close(
            F.mse_loss(e, e, reduction=red), TF.mse_loss(e, e, reduction=red), equal_nan=True
        )


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_derivatives_of_nothing_like_torch(backend):
    """Second derivatives and tangents where 'mean' divides by zero: every row ignored (the
    rows then get an infinite gradient), an empty batch. The loss is NaN, as torch's, but an
    ignored row's gradient is 0 whatever reaches it, so its second derivative is 0 too, not
    inf * 0; and torch's mean of nothing passes no 0 / 0 back to the incoming gradient (ours
    gave NaN in both; found by tests/test_fuzz_args.py)."""
    from tests.helpers import assert_derivatives_close, second_order, tangent

    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    r = lambda *s: torch.randn(*s, dtype=torch.float64, device=dev)  # noqa: E731
    ignored = torch.full((3,), 1, device=dev)
    cases = [
        ("cross_entropy", (r(3, 4), ignored), {"ignore_index": 1}),
        ("cross_entropy", (r(3, 4), ignored), {"ignore_index": 1, "label_smoothing": 0.2}),
        ("cross_entropy", (r(3, 4), ignored), {"ignore_index": 1, "weight": r(4).abs()}),
        ("cross_entropy", (r(4), torch.tensor(-100, device=dev)), {}),
        ("cross_entropy", (r(0, 4), r(0, 4).softmax(1)), {}),
        ("mse_loss", (r(2, 0, 3), r(2, 0, 3)), {}),
    ]
    for op, args, kw in cases:
        for red in REDUCTIONS:
            for order in (second_order, tangent):
                kwr = {**kw, "reduction": red}
                ours, theirs = (order(getattr(m, op), args, kwr, 0) for m in (F, TF))
                assert_derivatives_close(ours, theirs, f"{op} {kw} {red} {order.__name__}")


# ---------------------------------------------------------------------------------------------
# autocast, modules


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cpu_runs_fp32_like_torch(dtype):
    tritonnet.set_backend("reference")
    x = torch.randn(4, 6).to(dtype)
    t = torch.tensor([0, 5, 1, 2])
    w = torch.rand(6).to(dtype)
    wm = w.expand(4, 6)
    with torch.autocast("cpu", dtype=dtype):
        pairs = [
            (F.cross_entropy(x, t, weight=w), TF.cross_entropy(x, t, weight=w)),
            (F.nll_loss(x, t), TF.nll_loss(x, t)),
            (F.mse_loss(x, x.flip(0)), TF.mse_loss(x, x.flip(0))),
            (F.mse_loss(x, x.flip(0), weight=wm), TF.mse_loss(x, x.flip(0), weight=wm)),
        ]
    for ours, ref in pairs:
        assert ours.dtype == ref.dtype
        # torch's CPU cross_entropy rounds its log_softmax to bf16/fp16 before the fp32 nll
        assert_close_rel(ours, ref, 1.6e-2)


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        ("CrossEntropyLoss", dict(weight=torch.rand(5), ignore_index=3, label_smoothing=0.1)),
        ("CrossEntropyLoss", dict(reduction="sum")),
        ("CrossEntropyLoss", dict()),
        ("NLLLoss", dict(weight=torch.rand(5), reduction="none")),
        ("MSELoss", dict(reduction="sum")),
    ],
)
def test_modules_match_torch(cls, kwargs):
    ours = getattr(tritonnet.nn, cls)(**kwargs)
    ref = getattr(torch.nn, cls)(**kwargs)
    assert repr(ours) == repr(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ref2 = getattr(torch.nn, cls)(**kwargs)
    ref2.load_state_dict(ours.state_dict())  # checkpoints move both ways
    ours.load_state_dict(ref.state_dict())
    for k in ref.state_dict():
        torch.testing.assert_close(ours.state_dict()[k], ref.state_dict()[k])
    x = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5) if cls == "MSELoss" else torch.tensor([0, 3, 4, 1])
    if cls == "NLLLoss":
        x = x.detach().log_softmax(1).requires_grad_()
    _compare(ours, ref, [x, t], [x])


# ---------------------------------------------------------------------------------------------
# errors: torch's exception type for the same mistake, with the offending values

_x = torch.randn(3, 5)
_t = torch.tensor([0, 1, 2])
_L = torch.long
# (function, args, kwargs, exception, message pattern)
ERRORS = [
    # class index out of range (torch's CPU kernels raise IndexError)
    ("cross_entropy", (_x, torch.tensor([0, 1, 5])), {}, IndexError, "Target 5 is out of bounds"),
    ("cross_entropy", (_x, torch.tensor([0, -1, 2])), {}, IndexError, "Target -1 is out of bounds"),
    ("nll_loss", (torch.randn(2, 5, 3, 3), torch.full((2, 3, 3), 9)), {}, IndexError, "Target 9"),
    ("cross_entropy", (_x, torch.tensor([0, 1, 5])), {"reduction": "none", "label_smoothing": 0.1},
     IndexError, "Target 5"),
    # target shape
    ("cross_entropy", (_x, torch.tensor([0, 1])), {},
     ValueError, r"batch_size \(3\) to match target batch_size \(2\)"),
    ("nll_loss", (torch.randn(2, 5, 3), torch.zeros(2, 4, dtype=_L)), {},
     RuntimeError, r"Expected target size \[2, 3\], got \[2, 4\]"),
    ("cross_entropy", (torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=_L)), {},
     RuntimeError, r"size mismatch.*\[2, 4, 5\]"),
    ("nll_loss", (_x, torch.zeros(3, 4, dtype=_L)), {}, RuntimeError, "0D or 1D target"),
    ("cross_entropy", (torch.randn(5), torch.tensor([1, 2])), {}, ValueError, "target size: 2"),
    ("nll_loss", (torch.tensor(1.0), torch.tensor(0)), {}, ValueError, r"1 or more dimensions \(got 0\)"),
    ("cross_entropy", (torch.tensor(1.0), _t), {}, IndexError, r"Dimension out of range.*0-d input.*\(3,\)"),
    ("cross_entropy", (_x, torch.rand(3, 4)), {}, RuntimeError, "0D or 1D target"),
    # weight
    ("cross_entropy", (_x, _t), {"weight": torch.ones(4)}, RuntimeError, r"all 5 classes.*\[4\]"),
    ("nll_loss", (_x, _t), {"weight": torch.ones(5, 1)}, RuntimeError, r"all 5 classes.*\[5, 1\]"),
    ("cross_entropy", (_x, torch.rand(3, 5)), {"weight": torch.ones(4)},
     RuntimeError, r"all 5 classes.*\[4\]"),
    ("cross_entropy", (_x, _t), {"weight": torch.ones(5, dtype=torch.float64)},
     RuntimeError, "Float but found Double"),
    ("nll_loss", (_x, _t), {"weight": torch.ones(5, requires_grad=True)},
     RuntimeError, "not differentiable with respect to argument 'weight'"),
    # dtypes
    ("cross_entropy", (torch.ones(3, 5, dtype=_L), _t), {}, NotImplementedError, "Long"),
    ("nll_loss", (torch.ones(3, 5, dtype=_L), _t), {}, NotImplementedError, "Long"),
    ("mse_loss", (torch.ones(3, dtype=_L), torch.ones(3, dtype=_L)), {}, NotImplementedError, "Long"),
    ("cross_entropy", (_x, torch.tensor([0.0, 1.0, 2.0])), {}, RuntimeError, "Long or Byte, but got Float"),
    ("nll_loss", (_x, _t.int()), {}, RuntimeError, "Long or Byte, but got Int"),
    ("cross_entropy", (_x, torch.ones(3, 5, dtype=_L)), {}, RuntimeError, "class probabilities, got Long"),
    # options
    ("cross_entropy", (_x, _t), {"reduction": "avg"}, ValueError, "avg is not a valid value for reduction"),
    ("nll_loss", (_x, _t), {"reduction": "avg"}, ValueError, "avg is not a valid"),
    ("mse_loss", (_x, _x), {"reduction": "avg"}, ValueError, "avg is not a valid"),
    ("mse_loss", (_x, _x), {"reduction": "avg", "weight": torch.ones(3, 5)}, ValueError, "avg"),
    ("cross_entropy", (_x, _t), {"label_smoothing": 1.1}, RuntimeError, "between 0.0 and 1.0. Got: 1.1"),
    ("cross_entropy", (_x, torch.rand(3, 5)), {"ignore_index": 1},
     RuntimeError, r"not supported for floating point target \(got 1\)"),
    # mse shapes
    ("mse_loss", (torch.ones(3), torch.ones(4)), {}, RuntimeError, r"size of tensor a \(3\) must match"),
    ("mse_loss", (torch.ones(3), torch.ones(3)), {"weight": torch.ones(2)},
     ValueError, r"same size \(weight \(2,\)"),
]


@pytest.mark.filterwarnings("ignore:Using a target size")
@pytest.mark.parametrize(
    "name,args,kwargs,exc,match", ERRORS, ids=[f"{e[0]}-{i}" for i, e in enumerate(ERRORS)]
)
def test_errors_like_torch(name, args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        getattr(F, name)(*args, **kwargs)
    with pytest.raises(exc):  # torch raises the same type for the same mistake
        getattr(TF, name)(*args, **kwargs)


def test_kernels_never_see_out_of_range_targets(monkeypatch):
    """Validation happens before any primitive runs (nothing reaches a kernel)."""
    def boom(*a, **k):
        raise AssertionError("a primitive ran")

    for name in ("cross_entropy_forward", "nll_loss_forward"):
        monkeypatch.setattr(reference, name, boom)
    tritonnet.set_backend("reference")
    for fn in (F.cross_entropy, F.nll_loss):
        with pytest.raises(IndexError):
            fn(_x, torch.tensor([0, 7, 1]))


def test_out_of_range_index_reads_nothing_and_gives_nan():
    """The kernels themselves, given a class index outside [0, C) that is not ignore_index
    (which the functional layer rejects first: on a GPU only by a device assert, so the
    kernels may still run), read nothing at it (every access is bounds-checked under the
    interpreter) and give that row a NaN loss and no gradient; other rows are untouched."""
    from tritonnet import kernels

    if KERNEL_DEVICE != "cpu" and not HAS_CUDA:
        pytest.skip("no kernel device")
    x = torch.randn(4, 5, 1, device=KERNEL_DEVICE)
    w = torch.rand(5, device=KERNEL_DEVICE)
    t = torch.tensor([[1], [99], [-3], [-100]], device=KERNEL_DEVICE)
    good = torch.tensor([[1], [0], [0], [-100]], device=KERNEL_DEVICE)
    for weight in (None, w):
        loss = kernels.cross_entropy_forward(x, t, weight, -100, 0.0)[0]
        ref = kernels.cross_entropy_forward(x, good, weight, -100, 0.0)[0]
        assert loss[1:3].isnan().all() and loss[3] == 0
        torch.testing.assert_close(loss[0], ref[0])
        loss = kernels.nll_loss_forward(x, t, weight, -100)
        assert loss[1:3].isnan().all() and loss[3] == 0
        torch.testing.assert_close(loss[0], kernels.nll_loss_forward(x, good, weight, -100)[0])
        g = torch.ones(4, 1, device=KERNEL_DEVICE)
        dx = kernels.nll_loss_backward(g, t, weight, -100, 5, torch.float32)
        assert (dx[1:] == 0).all() and dx[0, 1, 0] != 0


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_torch_compile_index_target_losses(backend):
    """cross_entropy and nll_loss with class-index targets (one ignored) trace with
    fullgraph=True: the index check is then a device-side assert (torch._assert_async), not
    a host branch. Loss and gradients equal eager's; a bad index still fails, as the
    assert's RuntimeError."""
    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    x = torch.randn(4, 5, device=dev, requires_grad=True)
    t = torch.tensor([1, 4, -100, 0], device=dev)

    def step(x, t):
        return F.cross_entropy(x, t, label_smoothing=0.1) + F.nll_loss(x.log_softmax(1), t)

    eager = step(x, t)
    (gx,) = torch.autograd.grad(eager, x)
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    out = compiled(x, t)
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(torch.autograd.grad(out, x)[0], gx)
    if dev == "cpu":  # on a GPU a failed device assert would poison the test process
        with pytest.raises(RuntimeError, match=r"Target out of bounds: .* outside \[0, 5\)"):
            compiled(x, torch.tensor([1, 5, -100, 0], device=dev))


def test_custom_ops_pass_opcheck():
    """Schemas, fake (meta) implementations and autograd registration of the loss ops agree
    with what the ops really return (what torch.compile relies on)."""
    from tritonnet.ops import loss as ops

    tritonnet.set_backend("reference")
    x = torch.randn(3, 6, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0, 5], [-100, 2], [3, 3]])
    p = _prob_target((3, 6, 2)).requires_grad_()
    w = torch.rand(6, dtype=torch.float64) + 0.1
    wm = torch.rand(3, 6, 2, dtype=torch.float64, requires_grad=True)
    for op, args in [
        (ops.cross_entropy, (x, t, w, -100, 0.1)),
        (ops.cross_entropy, (x, p, w.clone().requires_grad_(), -100, 0.2)),
        (ops.nll_loss, (x, t, w, -100)),
        (ops.mse_loss, (x, p, None, True)),
        (ops.mse_loss, (x, p, wm, False)),
    ]:
        opcheck(op, args)


@pytest.mark.gpu
def test_cuda_graph_captures_a_step_with_index_targets():
    """A training step's forward and backward with cross_entropy on class indices captures
    in a CUDA graph (the index check is a device assert, no host sync) and its replay on new
    data and targets equals an eager step."""
    tritonnet.set_backend("triton")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        tritonnet.nn.Conv2d(3, 16, 3, padding=1), tritonnet.nn.ReLU(), tritonnet.nn.MaxPool2d(2),
        tritonnet.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), tritonnet.nn.Linear(16, 10),
    ).cuda()
    x = torch.randn(8, 3, 16, 16, device="cuda")
    t = torch.randint(0, 10, (8,), device="cuda")
    params = list(model.parameters())

    def step():
        loss = F.cross_entropy(model(x), t)
        return [loss, *torch.autograd.grad(loss, params)]

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):  # autotune and compile outside the capture
            step()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    x.copy_(torch.randn_like(x))
    t.copy_(torch.randint(0, 10, (8,), device="cuda"))
    graph.replay()
    for got, want in zip(captured, step()):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_cross_entropy_backward_fills_no_gradients_of_its_saved_rows(backend):
    """The cross-entropy primitive also returns each row's lse and weight sum (kept for the
    backward, never differentiated): autograd filled a zero tensor for each of their
    gradients on every backward, two memsets a training step. The backward now dispatches
    the backward primitive alone, and an undefined gradient at the loss leaves the logits'
    gradient undefined, as torch's."""
    from tests.helpers import StopGradient, dispatched_ops

    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    x = torch.randn(6, 5, device=dev, requires_grad=True)
    t = torch.tensor([0, 4, 2, 1, 3, 0], device=dev)
    for kwargs in ({}, {"reduction": "none", "label_smoothing": 0.1}):
        loss = F.cross_entropy(x, t, **kwargs)
        with dispatched_ops() as ops:
            loss.backward(torch.ones_like(loss))
        assert "tritonnet.cross_entropy_backward.default" in ops
        assert not [op for op in ops if "zero" in op or "fill" in op], ops
        x.grad = None
        w = torch.ones((), device=dev, requires_grad=True)
        (StopGradient.apply(F.cross_entropy(x, t, **kwargs)).sum() * w).backward()
        assert x.grad is None and w.grad is not None
