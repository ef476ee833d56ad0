"""torch.func transforms (grad, vmap, jacrev) over tritonnet's ops, against the same transforms
over torch.nn.functional: per-sample gradients of a small CNN, a Jacobian, the second
derivative a gradient primitive refuses, vmap's randomness modes for dropout, and in-place ops."""

import importlib
import warnings

import pytest
import torch
import torch.nn.functional as TF
from torch.func import grad, jacrev, vmap

import tritonnet
import tritonnet.functional as F
from tests.helpers import KERNEL_DEVICE, tf32_off

BACKENDS = ["reference", "triton"]


@pytest.fixture(autouse=True)
def _full_fp32():
    tf32_off()  # on a GPU, fp32 compared at full precision on both sides


def _device(backend):
    return KERNEL_DEVICE if backend == "triton" else "cpu"


def _params(device):
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return (torch.randn(*shape, generator=g) / 3).to(device)

    return {"w1": r(4, 3, 3, 3), "b1": r(4), "w2": r(6, 4, 3, 3), "fc": r(5, 6), "fcb": r(5)}


def _loss(f, p, x, t):
    """One sample (C, H, W) through conv(+bias), ReLU, max pool, conv with stride, adaptive
    average pool, linear and cross-entropy, written once for both functional modules."""
    h = f.relu(f.conv2d(x, p["w1"], p["b1"], padding=1))
    h = f.max_pool2d(h, 2)
    h = f.conv2d(h, p["w2"], stride=2, padding=1)
    h = f.adaptive_avg_pool2d(h, 1).flatten()
    return f.cross_entropy(f.linear(h, p["fc"], p["fcb"]), t)


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_sample_gradients(backend):
    """vmap(grad(loss)) over a batch: each sample's gradient of every parameter, as torch.func
    gives them for torch.nn.functional (the transforms' canonical use)."""
    dev = _device(backend)
    p = _params(dev)
    x = torch.randn(3, 3, 9, 9, device=dev)
    t = torch.tensor([0, 4, 2], device=dev)
    with tritonnet.use_backend(backend):
        ours = vmap(grad(lambda p, x, t: _loss(F, p, x, t)), in_dims=(None, 0, 0))(p, x, t)
    want = vmap(grad(lambda p, x, t: _loss(TF, p, x, t)), in_dims=(None, 0, 0))(p, x, t)
    for name in p:
        assert ours[name].shape == (3, *p[name].shape)
        torch.testing.assert_close(ours[name], want[name], rtol=1e-4, atol=1e-5, msg=name)
    # and each sample's gradient is the plain autograd gradient of that sample alone
    q = {k: v.clone().requires_grad_() for k, v in p.items()}
    with tritonnet.use_backend(backend):
        _loss(F, q, x[1], t[1]).backward()
    for name in p:
        torch.testing.assert_close(ours[name][1], q[name].grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_jacobian_of_conv_and_pool(backend):
    dev = _device(backend)
    x = torch.randn(2, 5, 5, device=dev)
    w = torch.randn(3, 2, 3, 3, device=dev)

    def f(m):
        return lambda x: m.avg_pool2d(m.conv2d(x, w, padding=1), 2, 1)

    with tritonnet.use_backend(backend):
        ours = jacrev(f(F))(x)
    torch.testing.assert_close(ours, jacrev(f(TF))(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_derivatives_under_torch_func(backend):
    """Gradient primitives have formulas of their own: grad of grad, and jacrev of jacrev (a
    Hessian), through conv, ReLU, pooling, linear and cross-entropy equal torch's."""
    tf32_off()
    dev = _device(backend)
    torch.manual_seed(0)
    x = torch.randn(6, device=dev)
    w = torch.randn(3, 2, 3, 3, device=dev)
    img = torch.randn(1, 2, 5, 5, device=dev)
    target = torch.tensor([1], device=dev)

    def net(m):
        def f(v):
            h = m.max_pool2d(m.sigmoid(m.conv2d(v, w, padding=1)), 2)
            return m.cross_entropy(m.linear(h.flatten(1), h.new_ones(4, 12)), target)
        return f

    with tritonnet.use_backend(backend):
        second = grad(lambda y: grad(lambda z: F.tanh(z).pow(3).sum())(y).sum())(x)
        hessian = jacrev(jacrev(net(F)))(img)
    torch.testing.assert_close(second, grad(lambda y: grad(lambda z: torch.tanh(z).pow(3).sum())(y).sum())(x))
    torch.testing.assert_close(hessian, jacrev(jacrev(net(TF)))(img), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_dropout_randomness(backend):
    """As for torch's dropout: randomness='error' (vmap's default) refuses the draw, 'same'
    drops the same elements of every sample, 'different' draws per sample."""
    x = torch.ones(4, 64, device=_device(backend))
    with tritonnet.use_backend(backend):
        with pytest.raises(RuntimeError, match="randomness"):
            vmap(lambda r: F.dropout(r, 0.5))(x)
        same = vmap(lambda r: F.dropout(r, 0.5), randomness="same")(x)
        different = vmap(lambda r: F.dropout(r, 0.5), randomness="different")(x)
    for y in (same, different):
        assert set(y.unique().tolist()) <= {0.0, 2.0}
    assert (same == same[0]).all()
    assert not (different == different[0]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_dropout_rule(backend, monkeypatch):
    """Dropout's batching rule: randomness='different' folds the samples into one launch
    (no fallback warning), and the backward regenerates each sample's own mask (per-sample
    gradients agree with the forward's output); feature dropout keeps whole channels per
    sample; 'same' gives every sample the one mask."""
    ops = importlib.import_module("tritonnet.ops.dropout")
    calls = {"fwd": 0}
    real = ops.dropout.op

    def counted(*args):
        calls["fwd"] += 1
        return real(*args)

    monkeypatch.setattr(ops.dropout, "op", counted)
    dev = _device(backend)
    w = torch.arange(8.0, device=dev)

    def f(r):
        y = F.dropout(r, 0.5)
        return (y * w).sum(), y

    with tritonnet.use_backend(backend), warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's per-sample fallback warns
        g, y = vmap(grad(f, has_aux=True), randomness="different")(torch.randn(5, 3, 8, device=dev))
        assert calls["fwd"] == 1
        torch.testing.assert_close(g, (y != 0) * 2.0 * w)
        assert not (y[0] == 0).eq(y[1] == 0).all()
        x = torch.ones(4, 2, 3, 5, 5, device=dev)
        d = vmap(lambda r: F.dropout2d(r, 0.5), randomness="different")(x)
        whole = (d == 0).all(-1).all(-1) | (d == 2).all(-1).all(-1)
        assert whole.all() and not (d == d[0]).all()
        same = vmap(lambda r: F.dropout2d(r, 0.5), randomness="same")(x)
        assert (same == same[0]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_inplace_ops_under_grad(backend):
    x = torch.randn(3, 8, device=_device(backend))

    def f(m):
        return lambda y: m.relu(y * 2, inplace=True).pow(2).sum()

    with tritonnet.use_backend(backend):
        ours = grad(f(F))(x)
        ours_vmapped = vmap(grad(f(F)))(x)
    torch.testing.assert_close(ours, grad(f(TF))(x))
    torch.testing.assert_close(ours_vmapped, vmap(grad(f(TF)))(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_sample_gradients_of_a_module(backend):
    """The recipe of torch.func's per-sample-gradient tutorial (functional_call over a model's
    parameters) with tritonnet.nn layers, against the same model built from torch.nn with the
    same state_dict."""
    dev = _device(backend)

    def model(nn):
        return torch.nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                   torch.nn.Flatten(0), nn.Linear(4 * 3 * 3, 5)).to(dev)

    ours, theirs = model(tritonnet.nn), model(torch.nn)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 2, 7, 6, device=dev)
    t = torch.tensor([1, 0, 4], device=dev)

    def per_sample(m):
        params = {k: v.detach() for k, v in m.named_parameters()}

        def loss(params, x, t):
            return TF.cross_entropy(torch.func.functional_call(m, params, (x,)), t)

        return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, t)

    with tritonnet.use_backend(backend):
        got = per_sample(ours)
    want = per_sample(theirs)
    assert got.keys() == want.keys()
    for k in got:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5, msg=k)


def test_bad_class_index_under_vmap_raises():
    """The class-index check reads the values under vmap's wrapper (it cannot branch on the
    wrapped tensor): torch's IndexError, as in eager, not a NaN loss."""
    x = torch.randn(2, 3, 5)
    with pytest.raises(IndexError, match="Target 7 is out of bounds"):
        vmap(F.cross_entropy)(x, torch.tensor([[0, 1, 2], [4, 7, 0]]))
    torch.testing.assert_close(vmap(F.cross_entropy)(x, torch.tensor([[0, 1, 2], [4, 3, 0]])),
                               vmap(TF.cross_entropy)(x, torch.tensor([[0, 1, 2], [4, 3, 0]])))


def _count_calls(monkeypatch, prims, names):
    """Each named backend primitive wrapped to count its calls into the returned dict."""
    calls = {}

    def counting(name, fn):
        def counted(*a, **k):
            calls[name] = calls.get(name, 0) + 1
            return fn(*a, **k)

        return counted

    for name in names:
        monkeypatch.setattr(prims, name, counting(name, getattr(prims, name)))
    return calls


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_folds_samples_into_one_call(backend, monkeypatch):
    """Under vmap the conv, pool, activation, linear and loss primitives run through batching rules
    that fold the samples into the batch: one backend call for all 5 samples, not 5 (torch's
    fallback). The linear weight gradient is the exception: one GEMM per sample."""
    dev = _device(backend)
    prims = importlib.import_module("tritonnet.kernels" if backend == "triton" else "tritonnet.reference")
    calls = _count_calls(monkeypatch, prims, [
        "conv2d_forward", "conv2d_input_grad", "conv2d_weight_grad", "max_pool2d_forward",
        "max_pool2d_backward", "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward",
        "activation_forward", "activation_backward", "linear_forward", "linear_weight_grad",
        "cross_entropy_forward", "cross_entropy_backward"])
    p = _params(dev)
    x, t = torch.randn(5, 3, 9, 9, device=dev), torch.tensor([0, 4, 2, 1, 3], device=dev)
    with tritonnet.use_backend(backend), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # torch's fallback warns; no op may take it
        vmap(grad(lambda p, x, t: _loss(F, p, x, t)), in_dims=(None, 0, 0))(p, x, t)
    # two convs (the second's input gradient feeds the first), one ReLU, one max pool, one
    # adaptive pool, one linear; linear's weight gradient per sample
    assert calls == {"conv2d_forward": 2, "conv2d_input_grad": 1, "conv2d_weight_grad": 2,
                     "activation_forward": 1, "activation_backward": 1, "max_pool2d_forward": 1,
                     "max_pool2d_backward": 1, "adaptive_avg_pool2d_forward": 1,
                     "adaptive_avg_pool2d_backward": 1, "linear_forward": 1, "linear_weight_grad": 5,
                     "cross_entropy_forward": 1, "cross_entropy_backward": 1}


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_rules_against_torch(backend):
    """The rules' other paths: per-sample 4-D inputs, an adaptive max pool, an average pool,
    log_softmax and conv_transpose2d with their gradients, and weights batched per model (an
    ensemble), which run sample by sample."""
    dev = _device(backend)
    x = torch.randn(4, 2, 3, 7, 6, device=dev)  # 4 samples of (2, 3, 7, 6)
    ws = torch.randn(4, 5, 3, 3, 3, device=dev)  # 4 models

    wt = torch.randn(3, 2, 3, 3, device=dev)

    def per_sample(m):
        def f(x):
            return (m.adaptive_max_pool2d(x, (2, 3)).pow(2).sum() + m.avg_pool2d(x, 3, 2, 1).pow(2).sum()
                    + m.relu(x).sum() + m.log_softmax(x, 1).pow(2).sum()
                    + m.conv_transpose2d(x, wt, stride=2).pow(2).sum())

        return vmap(grad(f))(x)

    lws, lbs = torch.randn(4, 2, 6, device=dev), torch.randn(4, 2, device=dev)

    def ensemble(m):  # weights (and a linear's bias) of each model: sample by sample
        return (vmap(lambda w: m.conv2d(x[0], w, padding=1))(ws),
                vmap(lambda w, b: m.linear(x[0, 0, 0], w, b))(lws, lbs))

    with tritonnet.use_backend(backend):
        got = per_sample(F), *ensemble(F)
    for a, b in zip(got, (per_sample(TF), *ensemble(TF)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_max_pools_without_gradients(backend):
    """vmap of a max pool where no gradient is taken (inference, an ensemble's forward): its
    primitive then skips the indices and returns an empty placeholder, which the batching
    rule unflattened as if it were an output ("unflatten: Provided sizes [4, 2] don't
    multiply up to ...") whenever each sample had a batch dimension of its own."""
    dev = _device(backend)
    x = torch.randn(4, 2, 3, 7, 6, device=dev)  # 4 samples of (2, 3, 7, 6)
    ws = torch.randn(4, 3, 3, 3, 3, device=dev)  # an ensemble of 4 convs

    def pools(m, x):
        y = m.max_pool2d(x, 2, ceil_mode=True)
        y2, i2 = m.max_pool2d(x, 3, 2, 1, return_indices=True)
        a = m.adaptive_max_pool2d(x, (2, 3))
        a2, ai = m.adaptive_max_pool2d(x, 3, return_indices=True)
        line = x[..., 0, :]
        return (y, y2, i2, a, a2, ai, m.max_pool1d(line, 2), m.adaptive_max_pool1d(line, 4))

    def ensemble(m):  # each model's conv, then a pool of its (N, C, H, W) map
        return vmap(lambda w: m.max_pool2d(m.conv2d(x[0], w, padding=1), 2))(ws)

    for xs in (x, x[:, 0]):  # samples with a batch dimension, and without
        with tritonnet.use_backend(backend):
            got = vmap(lambda s: pools(F, s))(xs)
        want = vmap(lambda s: pools(TF, s))(xs)
        for a, b in zip(got, want, strict=True):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b)
    with tritonnet.use_backend(backend):
        got = ensemble(F)
    torch.testing.assert_close(got, ensemble(TF), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_folds_resampling_and_im2col(backend, monkeypatch):
    """Nearest upsampling (1-D, 2-D, 3-D; nearest and nearest-exact), unfold and fold under
    vmap(grad): the samples fold into the batch, one backend call per primitive use for all 4
    samples (no fallback warning), gradients as torch.func over torch's ops."""
    dev = _device(backend)
    prims = importlib.import_module("tritonnet.kernels" if backend == "triton" else "tritonnet.reference")
    calls = _count_calls(monkeypatch, prims, ["upsample_nearest_forward", "upsample_nearest_backward",
                                              "unfold_forward", "fold_forward"])
    x = torch.randn(4, 2, 3, 5, 6, device=dev)  # 4 samples of (2, 3, 5, 6)

    def per_sample(m):
        def f(x):
            u = m.unfold(x, 2, padding=1)
            return (m.interpolate(x, scale_factor=2).pow(2).sum()
                    + m.interpolate(x[:, :, 0], size=7, mode="nearest-exact").pow(2).sum()
                    + m.interpolate(x.unsqueeze(2), scale_factor=(1, 2, 3)).pow(2).sum()
                    + u.pow(2).sum() + m.fold(u, (5, 6), 2, padding=1).pow(2).sum())

        return vmap(grad(f))(x)

    with tritonnet.use_backend(backend), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # torch's per-sample fallback warns
        got = per_sample(F)
    # 3 upsamplings, forward and backward; unfold: forward and fold's backward; fold: forward
    # and unfold's backward
    assert calls == {"upsample_nearest_forward": 3, "upsample_nearest_backward": 3,
                     "unfold_forward": 2, "fold_forward": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        want = per_sample(TF)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_loss_rules_against_torch(backend):
    """The losses fold the samples into their rows: cross-entropy with class weights, label
    smoothing, probability targets and K-dim logits, an unbatched sample, NLL with
    ignore_index, and MSE elementwise (folded) and summed (sample by sample); the gradients
    of logits, probability targets and MSE operands, with no fallback warning."""
    dev = _device(backend)
    x, y = torch.randn(4, 3, 5, device=dev), torch.randn(4, 3, 5, device=dev)
    t, w = torch.randint(0, 5, (4, 3), device=dev), torch.rand(5, device=dev) + 0.1
    p = torch.rand(4, 3, 5, device=dev).softmax(-1)
    x4, t4 = torch.randn(4, 2, 5, 3, device=dev), torch.randint(0, 5, (4, 2, 3), device=dev)

    def per_sample(m):
        def f(x, t, p, x4, t4, y):
            return (m.cross_entropy(x, t, weight=w, label_smoothing=0.1)
                    + m.cross_entropy(x, p, reduction="sum") + m.cross_entropy(x4, t4)
                    + m.nll_loss(m.log_softmax(x, 1), t, weight=w, ignore_index=2)
                    + m.cross_entropy(x[0], t[0]) + m.mse_loss(x, y)
                    + m.mse_loss(x, y, reduction="none").pow(2).sum())

        return vmap(grad(f, argnums=(0, 2, 3, 5)))(x, t, p, x4, t4, y)

    with tritonnet.use_backend(backend), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # torch's per-sample fallback warns
        got = per_sample(F)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        want = per_sample(TF)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # a class weight batched per sample: sample by sample
    ws = torch.rand(4, 5, device=dev) + 0.1
    with tritonnet.use_backend(backend):
        got = vmap(lambda x, t, w: F.cross_entropy(x, t, weight=w))(x, t, ws)
    torch.testing.assert_close(got, vmap(lambda x, t, w: TF.cross_entropy(x, t, weight=w))(x, t, ws))


def _jvp_cases(dt):
    r = lambda *s: torch.randn(*s, dtype=dt)  # noqa: E731
    idx = torch.tensor([[0, 2, 1], [3, 1, 0]])
    return {  # name: (fn(module, *tensors), tensors, which of them carry tangents)
        "relu": (lambda m, x: m.relu(x), [r(2, 3, 5)], None),
        "relu_": (lambda m, x: m.relu_(x * 1), [r(2, 3, 5)], None),
        "sigmoid": (lambda m, x: m.sigmoid(x), [r(2, 3, 5)], None),
        "tanh": (lambda m, x: m.tanh(x), [r(2, 3, 5)], None),
        "conv2d": (lambda m, x, w, b: m.conv2d(x, w, b, 2, 1), [r(2, 3, 7, 6), r(4, 3, 3, 3), r(4)], None),
        "conv2d groups": (lambda m, x, w: m.conv2d(x, w, None, 1, 1, 1, 2),
                          [r(2, 4, 5, 5), r(4, 2, 3, 3)], None),
        "conv1d": (lambda m, x, w, b: m.conv1d(x, w, b), [r(2, 3, 9), r(4, 3, 3), r(4)], None),
        "conv_transpose2d": (lambda m, x, w, b: m.conv_transpose2d(x, w, b, 2, 1, 1),
                             [r(2, 3, 4, 5), r(3, 2, 3, 3), r(2)], None),
        # output_padding < dilation at stride 1: convolutions of its output have more windows
        # than its input has pixels (its second derivatives raised a shape error)
        "conv_transpose2d output_padding": (
            lambda m, x, w: m.conv_transpose2d(x, w, None, (1, 2), 0, 1, 1, 2),
            [r(2, 3, 4, 5), r(3, 2, 2, 3)], None),
        "linear": (lambda m, x, w, b: m.linear(x, w, b), [r(2, 5, 6), r(3, 6), r(3)], None),
        "max_pool2d": (lambda m, x: m.max_pool2d(x, 3, 2, 1), [r(2, 3, 7, 6)], None),
        "max_pool1d": (lambda m, x: m.max_pool1d(x, 2), [r(2, 3, 7)], None),
        "avg_pool2d": (lambda m, x: m.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
                       [r(2, 3, 7, 6)], None),
        "adaptive_avg_pool2d": (lambda m, x: m.adaptive_avg_pool2d(x, (3, 2)), [r(2, 3, 7, 6)], None),
        "adaptive_max_pool2d": (lambda m, x: m.adaptive_max_pool2d(x, (3, 2)), [r(2, 3, 7, 6)], None),
        "interpolate": (lambda m, x: m.interpolate(x, scale_factor=2), [r(2, 3, 4, 5)], None),
        "interpolate area": (lambda m, x: m.interpolate(x, size=(2, 3), mode="area"), [r(2, 3, 4, 5)], None),
        "unfold": (lambda m, x: m.unfold(x, 2, padding=1), [r(2, 3, 4, 5)], None),
        "fold": (lambda m, x: m.fold(x, (3, 4), 2), [r(2, 12, 6)], None),
        "softmax": (lambda m, x: m.softmax(x, 1), [r(2, 4, 5)], None),
        "log_softmax": (lambda m, x: m.log_softmax(x, -1), [r(2, 4, 5)], None),
        # class-index targets: torch's weight is not differentiable (its tangent is ignored)
        "cross_entropy": (lambda m, x, w: m.cross_entropy(x, idx, weight=w, label_smoothing=0.2,
                                                           ignore_index=2),
                          [r(2, 4, 3), r(4).abs()], [0]),
        "cross_entropy none": (lambda m, x: m.cross_entropy(x, idx, reduction="none"), [r(2, 4, 3)], None),
        "cross_entropy probabilities": (
            lambda m, x, t, w: m.cross_entropy(x, t, weight=w, label_smoothing=0.1),
            [r(2, 4, 3), r(2, 4, 3).softmax(1), r(4).abs()], None),
        "nll_loss": (lambda m, x, w: m.nll_loss(x, idx, weight=w), [r(2, 4, 3), r(4).abs()], [0]),
        "mse_loss": (lambda m, x, t: m.mse_loss(x, t), [r(2, 3, 4), r(2, 3, 4)], None),
        "mse_loss none": (lambda m, x, t: m.mse_loss(x, t, reduction="none"), [r(2, 3, 4), r(2, 3, 4)], None),
        "dropout eval": (lambda m, x: m.dropout(x, 0.3, training=False), [r(2, 3, 4)], None),
    }


def _differentiable(case):
    """A _jvp_cases entry's fn, its tensors and the positions of those that take tangents."""
    fn, args, which = case
    return fn, args, which if which is not None else list(range(len(args)))


def _of_picked(fn, module, args, which):
    """fn(module, *args) as a function of the tensors at the positions ``which`` alone."""

    def f(*picked):
        full = list(args)
        for i, v in zip(which, picked):
            full[i] = v
        return fn(module, *full)

    return f


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_mode_ad_against_torch(backend):
    """Forward-mode AD (the jvp formulas) against torch's: forward_ad dual tensors with a
    tangent on every differentiable input at once and on each alone, and torch.func.jvp.
    float64 on the reference, float32 through the Triton kernels."""
    import torch.autograd.forward_ad as fwAD

    tf32_off()
    tritonnet.set_backend(backend)
    dt = torch.float64 if backend == "reference" else torch.float32
    tol = 1e-8 if dt == torch.float64 else 2e-4
    dev = _device(backend)
    torch.manual_seed(0)
    for name, case in _jvp_cases(dt).items():
        fn, args, which = _differentiable(case)
        args = [a.to(dev) for a in args]
        tangents = [torch.randn_like(a) for a in args]
        for sel in [which] + ([[i] for i in which] if len(which) > 1 else []):
            results = []
            for m in (F, TF):
                with fwAD.dual_level():
                    duals = [fwAD.make_dual(a, t) if i in sel else a
                             for i, (a, t) in enumerate(zip(args, tangents))]
                    results.append(fwAD.unpack_dual(fn(m, *duals)))
            (y, ty), (want_y, want_ty) = results
            torch.testing.assert_close(y, want_y, atol=tol, rtol=tol, msg=name)
            assert ty is not None, name
            torch.testing.assert_close(ty, want_ty, atol=tol, rtol=tol, msg=f"{name}: tangent")
        primals = tuple(args[i] for i in which)
        picked = tuple(tangents[i] for i in which)
        torch.testing.assert_close(torch.func.jvp(_of_picked(fn, F, args, which), primals, picked)[1],
                                   torch.func.jvp(_of_picked(fn, TF, args, which), primals, picked)[1],
                                   atol=tol, rtol=tol, msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_mode_ad_of_a_network(backend):
    """jacfwd equals jacrev through a small network (training-mode dropout included: the
    tangent takes the same mask, so both see one function). Forward over reverse goes through
    the gradient primitives' own jvps: torch.func.hessian and a forward_ad tangent of an
    autograd gradient equal torch's."""
    from torch.func import jacfwd

    tf32_off()
    tritonnet.set_backend(backend)
    torch.manual_seed(0)
    nn = tritonnet.nn
    net = torch.nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.3),
                              torch.nn.Flatten(), nn.Linear(12, 2), nn.Softmax(1)).to(_device(backend))
    x = torch.randn(1, 2, 4, 4, device=_device(backend))

    def f(v):
        torch.manual_seed(1)  # the same dropout seed in every call
        return net(v)

    torch.testing.assert_close(jacfwd(f, randomness="same")(x), jacrev(f)(x), atol=1e-5, rtol=1e-4)

    w = torch.randn(3, 2, 3, 3, device=x.device)

    def g(m):
        return lambda v: m.softmax(m.max_pool2d(m.tanh(m.conv2d(v, w, padding=1)), 2), 1).pow(2).sum()

    hessian = torch.func.hessian
    torch.testing.assert_close(hessian(g(F))(x), hessian(g(TF))(x), atol=1e-5, rtol=1e-4)
    import torch.autograd.forward_ad as fwAD

    tangent = torch.randn_like(x)
    hvp = []
    for m in (F, TF):  # the same through forward_ad and autograd: a jvp of a gradient
        with fwAD.dual_level():
            dual = fwAD.make_dual(x.clone().requires_grad_(), tangent)
            (dx,) = torch.autograd.grad(g(m)(dual), dual, create_graph=True)
            hvp.append(fwAD.unpack_dual(dx).tangent)
    torch.testing.assert_close(hvp[0], hvp[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(_jvp_cases(torch.float64)))
def test_double_backward_gradgradcheck(name):
    """Every op's second derivatives (the gradient primitives' own backward formulas), by
    torch.autograd.gradgradcheck in float64 through the reference primitives; and forward
    over reverse (the gradient primitives' jvp formulas: the weight gradients' bias sum once
    took a tangent from the input, which it does not depend on)."""
    tritonnet.set_backend("reference")
    torch.manual_seed(0)
    fn, args, which = _differentiable(_jvp_cases(torch.float64)[name])
    inputs = tuple(args[i].clone().requires_grad_() for i in which)
    f = _of_picked(fn, F, args, which)
    assert torch.autograd.gradgradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, check_fwd_over_rev=True)


def test_vectorized_jacobians_against_torch():
    """torch.autograd.functional.jacobian(vectorize=True) (and gradcheck's batched gradients)
    runs the backward under torch's legacy vmap, whose BatchedTensors cannot answer a
    memory-format query: the resampling backward, and conv's output-gradient layout, raised
    "NYI: querying is_contiguous inside of vmap" there. Every op case, NCHW and channels_last
    where 4-D, against torch's jacobians (float64, reference primitives)."""
    from torch.autograd.functional import jacobian

    tritonnet.set_backend("reference")
    torch.manual_seed(0)
    for name, case in _jvp_cases(torch.float64).items():
        fn, args, which = _differentiable(case)
        inputs = tuple(args[i] for i in which)
        layouts = [inputs]
        if inputs[0].dim() == 4:
            layouts.append((inputs[0].to(memory_format=torch.channels_last), *inputs[1:]))
        for ins in layouts:
            ours = jacobian(_of_picked(fn, F, args, which), ins, vectorize=True)
            theirs = jacobian(_of_picked(fn, TF, args, which), ins, vectorize=True)
            torch.testing.assert_close(ours, theirs, msg=f"{name} {ins[0].stride()}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_double_backward_against_torch(backend):
    """A gradient penalty (WGAN-GP, R1) through conv, activations, pooling, linear and
    cross-entropy: the penalty's gradients equal torch's, Triton kernels included."""
    tf32_off()
    tritonnet.set_backend(backend)
    dev = _device(backend)
    torch.manual_seed(0)
    params = [torch.randn(4, 3, 3, 3, device=dev), torch.randn(4, device=dev), torch.randn(2, 64, device=dev)]
    x = torch.randn(2, 3, 6, 6, device=dev)
    target = torch.tensor([1, 0], device=dev)

    def penalty(m):
        ps = [p.clone().requires_grad_() for p in params]
        xs = x.clone().requires_grad_()
        h = m.avg_pool2d(m.max_pool2d(m.sigmoid(m.conv2d(xs, ps[0], ps[1], padding=1)), 2), 2, ceil_mode=True)
        h = m.interpolate(h, scale_factor=2)
        loss = m.cross_entropy(m.linear(m.tanh(h.flatten(1)), ps[2]), target)
        (gx,) = torch.autograd.grad(loss, xs, create_graph=True)
        return torch.autograd.grad(gx.pow(2).sum(), ps)

    for ours, theirs in zip(penalty(F), penalty(TF)):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-3)


def _block(nn, p):
    """Every op family with a gradient of its own: conv (+bias), ReLU, max pool, dropout,
    transposed conv, nearest upsampling, average pools, unfold/fold, linear."""
    return torch.nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True), nn.Dropout(p),
        nn.ConvTranspose2d(4, 4, 2, stride=2), nn.Tanh(), nn.Upsample(scale_factor=2),
        nn.AvgPool2d(3, stride=2, padding=1), nn.Sigmoid(), nn.Unfold(2), nn.Fold((6, 8), 2),
        nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), nn.Linear(16, 5),
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_activation_checkpointing(backend):
    """torch.utils.checkpoint, both kinds, recomputes the forward in the backward: the same
    gradients as without it (dropout's mask drawn again from the restored RNG state), and
    torch's without dropout."""
    from torch.utils.checkpoint import checkpoint

    dev = _device(backend)
    x = torch.randn(2, 3, 5, 7, device=dev)
    t = torch.tensor([1, 4], device=dev)

    def grads(model, how):
        model.zero_grad()
        torch.manual_seed(3)
        inp = x.clone().requires_grad_(how == "reentrant")  # reentrant needs an input with grad
        out = model(inp) if how == "plain" else checkpoint(model, inp, use_reentrant=how == "reentrant")
        TF.cross_entropy(out, t).backward()
        return [p.grad.clone() for p in model.parameters()]

    for p in (0.0, 0.5):
        theirs = _block(torch.nn, p).to(dev)
        ours = _block(tritonnet.nn, p).to(dev)
        ours.load_state_dict(theirs.state_dict())
        with tritonnet.use_backend(backend):
            plain = grads(ours, "plain")
            for how in ("reentrant", "non-reentrant"):
                for a, b in zip(grads(ours, how), plain, strict=True):
                    torch.testing.assert_close(a, b, msg=f"{how} p={p}")
        if p == 0.0:
            for a, b in zip(plain, grads(theirs, "plain"), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_saved_tensor_hooks_see_every_saved_tensor(backend):
    """Every tensor an op keeps for its backward goes through torch's saved-tensor hooks
    (save_on_cpu, activation offloading and compression rely on them): the graph's nodes hold
    no tensor of their own, and with hooks that save copies, gradients come out right after
    the input and the parameters are overwritten in place."""
    dev = _device(backend)
    model = _block(tritonnet.nn, 0.0).to(dev)
    x = torch.randn(2, 3, 5, 7, device=dev, requires_grad=True)
    t = torch.tensor([1, 4], device=dev)
    with tritonnet.use_backend(backend):
        TF.cross_entropy(model(x), t).backward()
        want = [x.grad, *(p.grad for p in model.parameters())]
        x.grad = None
        model.zero_grad()
        copies = []

        def pack(tensor):
            copies.append(tensor.clone())
            return len(copies) - 1

        with torch.autograd.graph.saved_tensors_hooks(pack, copies.__getitem__):
            loss = TF.cross_entropy(model(x), t)
        seen, stack, ours = set(), [loss.grad_fn], 0
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            stack.extend(n for n, _ in node.next_functions)
            if isinstance(node, torch.autograd.function.BackwardCFunction):  # a Function's node is its ctx
                ours += 1
                held = [k for k, v in vars(node).items()
                        if isinstance(v, torch.Tensor)
                        or (isinstance(v, (tuple, list)) and any(isinstance(e, torch.Tensor) for e in v))]
                assert not held, f"{type(node).__name__} keeps tensors outside save_for_backward: {held}"
        assert ours >= 10, ours  # the walk reached our ops' nodes
        with torch.no_grad():
            x.mul_(-3)  # the saved copies are what the backward must use
            for p in model.parameters():
                p.add_(1)
        loss.backward()
    got = [x.grad, *(p.grad for p in model.parameters())]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
