"""Package-level promises: import without a device or Triton, backend choice, torch.compile."""

import os
import subprocess
import sys

import pytest
import torch

import tritonnet
from tests.helpers import KERNEL_DEVICE, TORCH_VERSION, older_torch_differs


def _python(code, **env):
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full)


def test_import_does_not_load_triton_or_touch_cuda():
    code = (
        "import sys, torch\n"
        "torch.cuda.is_available = lambda: (_ for _ in ()).throw(RuntimeError('queried'))\n"
        "import tritonnet, tritonnet.nn, tritonnet.functional\n"
        "assert 'triton' not in sys.modules, 'triton imported'\n"
        "assert 'tritonnet.kernels' not in sys.modules\n"
        "print('ok')\n"
    )
    r = _python(code)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_works_without_triton_installed():
    """With triton unimportable, the reference backend still trains a layer; 'triton' says why."""
    code = (
        "import sys, importlib.util\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'triton' else real(n, *a)\n"
        "sys.modules['triton'] = None\n"
        "import torch, tritonnet\n"
        "m = tritonnet.nn.Linear(3, 2); m(torch.randn(4, 3)).sum().backward()\n"
        "tritonnet.set_backend('triton')\n"
        "try:\n"
        "    m(torch.randn(4, 3))\n"
        "except RuntimeError as e:\n"
        "    print('raised:', e)\n"
    )
    r = _python(code, TRITONNET_BACKEND="auto")
    assert r.returncode == 0, r.stderr
    assert "raised:" in r.stdout and "not installed" in r.stdout


def test_env_variable_sets_backend():
    r = _python("import tritonnet; print(tritonnet.get_backend())", TRITONNET_BACKEND="reference")
    assert r.stdout.strip() == "reference"
    r = _python("import tritonnet; tritonnet.get_backend()", TRITONNET_BACKEND="bogus")
    assert r.returncode != 0 and "'bogus'" in r.stderr


def test_auto_picks_reference_for_cpu_tensors():
    from tritonnet.backend import backend_for

    tritonnet.set_backend("auto")
    assert backend_for(torch.zeros(1)).__name__ == "tritonnet.reference"
    with tritonnet.use_backend("triton"):
        if KERNEL_DEVICE == "cpu":  # interpreter on
            assert backend_for(torch.zeros(1)).__name__ == "tritonnet.kernels"
    assert tritonnet.get_backend() == "auto"


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_torch_compile_small_model(backend):
    """A small tritonnet model trains under torch.compile: the ops are torch.library custom ops,
    opaque to the compiler, so there is no graph break, and the numbers match eager mode."""
    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        tritonnet.nn.Linear(8, 16), tritonnet.nn.ReLU(), tritonnet.nn.Dropout(0.25),
        tritonnet.nn.Linear(16, 4), tritonnet.nn.Tanh(),
    ).to(dev)
    x = torch.randn(5, 8, device=dev)
    torch.manual_seed(1)  # the dropout seed is drawn from torch's generator, compiled or not
    eager = model(x)
    torch._dynamo.reset()
    # inductor draws random numbers its own way unless told to use eager's generator; with
    # this, the compiled dropout seed (and so its mask) equals eager's
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model, fullgraph=True)
    torch.manual_seed(1)
    with inductor_config.patch(fallback_random=True):
        out = compiled(x)
    torch.testing.assert_close(out, eager)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.manual_seed(1)
    model(x).square().sum().backward()
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad)


@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_torch_compile_conv_pool_loss(backend, memory_format):
    """conv (with bias), an in-place ReLU, max and average pooling, a residual add compiled by
    inductor, and mse_loss under torch.compile with fullgraph=True: each op's autograd.Function
    is traced around its opaque operator, and the loss and every gradient equal eager mode's.
    channels_last: the compiled code runs with the layouts the fake kernels promise (a fake
    that said contiguous once failed inductor's stride assert here)."""
    tritonnet.set_backend(backend)
    dev = KERNEL_DEVICE
    fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    torch.manual_seed(0)
    conv = tritonnet.nn.Conv2d(2, 4, 3, padding=1)
    head = torch.nn.Sequential(
        tritonnet.nn.ReLU(inplace=True), tritonnet.nn.MaxPool2d(2),
        tritonnet.nn.Conv2d(4, 3, 1), tritonnet.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    )
    model = torch.nn.ModuleList([conv, head]).to(dev).to(memory_format=fmt)
    x = torch.randn(2, 2, 6, 6, device=dev).to(memory_format=fmt)
    target = torch.randn(2, 3, device=dev)

    def step(x):
        h = conv(x)
        h = h + torch.arange(4.0, device=dev).view(1, 4, 1, 1) * h.detach().sign()  # inductor's
        return tritonnet.functional.mse_loss(head(h), target)

    eager = step(x)
    eager.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch._dynamo.reset()
    out = torch.compile(step, fullgraph=True)(x)
    torch.testing.assert_close(out, eager)
    out.backward()
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(p.grad, g)


@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_fake_kernels_give_the_real_layouts(backend, memory_format):
    """Every operator the functional layer calls, forward and backward, on NCHW and
    channels_last operands (mixed for conv, as torch's layout rule reads both): its fake
    kernel gives the real result's shape, dtype and strides (tests/helpers.py
    fake_layouts_checked). conv2d and its input gradient once said contiguous for
    channels_last results, which broke compiled channels_last models."""
    from tests.helpers import fake_layouts_checked

    tritonnet.set_backend(backend)
    F = tritonnet.functional
    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    x = torch.randn(2, 4, 6, 6, device=dev).to(memory_format=fmt).requires_grad_()
    w = torch.randn(8, 4, 3, 3, device=dev).requires_grad_()  # NCHW: x alone sets the layout
    wt = torch.randn(4, 8, 3, 3, device=dev).to(memory_format=fmt).requires_grad_()
    b = torch.randn(8, device=dev, requires_grad=True)
    t = torch.randint(0, 4, (2, 6, 6), device=dev)
    x2 = torch.randn(5, 6, device=dev, requires_grad=True)
    lw = torch.randn(3, 6, device=dev, requires_grad=True)
    u = torch.randn(2, 36, 16, device=dev, requires_grad=True)

    def grads(y, *inputs):
        torch.autograd.grad(y.sum(), inputs)

    with fake_layouts_checked():
        grads(F.conv2d(x, w, b, 1, 1), x, w, b)
        grads(F.conv2d(x.detach().contiguous(), w.to(memory_format=fmt), b, 2, 1, activation="relu"), w)
        grads(F.conv_transpose2d(x, wt, None, 2, 1), x, wt)
        grads(F.max_pool2d(x, 3, 2, 1), x)
        grads(F.avg_pool2d(x, 2), x)
        grads(F.adaptive_avg_pool2d(x, 1), x)
        grads(F.adaptive_max_pool2d(x, 4), x)
        grads(F.interpolate(x, scale_factor=2), x)
        grads(F.relu(x), x)
        grads(F.dropout(x, 0.5), x)
        grads(F.softmax(x, 1), x)
        grads(F.unfold(x, 3), x)
        grads(F.fold(u, (6, 6), 3), u)
        grads(F.cross_entropy(x, t), x)
        grads(F.cross_entropy(x, torch.rand(2, 4, 6, 6, device=dev).to(memory_format=fmt)), x)
        grads(F.nll_loss(x, t), x)
        grads(F.mse_loss(x, torch.randn(2, 4, 6, 6, device=dev)), x)
        grads(F.linear(x2, lw, activation="relu"), x2, lw)


def _bare_primitive():
    """A primitive without autograd (every op of the library has one), defined once."""
    from tritonnet.ops._primitive import primitive

    if not hasattr(_bare_primitive, "prim"):
        @primitive
        def test_bare_double(x: torch.Tensor) -> torch.Tensor:
            return x * 2

        _bare_primitive.prim = test_bare_double
    return _bare_primitive.prim


def test_primitive_autograd_goes_through_the_function():
    """An op's public callable takes its autograd.Function exactly when an input needs a
    gradient; the bare operator never records a graph (not even the reference backend's aten
    one); a gradient primitive differentiates through its own Function (double backward); a
    primitive without autograd refuses an input that needs a gradient rather than returning a
    silently detached result."""
    from tritonnet.ops import conv as ops

    tritonnet.set_backend("reference")
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    args = ([1, 1], [1, 1], [1, 1], 1, "none")
    assert ops.conv2d(x, w, None, *args).grad_fn is None
    wg = w.clone().requires_grad_()
    y = ops.conv2d(x, wg, None, *args)
    assert type(y.grad_fn).__name__ == "conv2dBackward", type(y.grad_fn)
    with torch.no_grad():
        assert ops.conv2d(x, wg, None, *args).grad_fn is None
    assert not ops.conv2d.op(x, wg, None, *args).requires_grad
    y.sum().backward()
    torch.testing.assert_close(wg.grad, torch.nn.grad.conv2d_weight(x, w.shape, torch.ones_like(y), 1, 1))

    dy = torch.randn(1, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    dx = ops.conv2d_input_grad(dy, w, [1, 2, 5, 5], *args[:4])
    assert type(dx.grad_fn).__name__ == "conv2d_input_gradBackward", type(dx.grad_fn)
    with torch.no_grad():
        assert ops.conv2d_input_grad(dy, w, [1, 2, 5, 5], *args[:4]).grad_fn is None
    bare = _bare_primitive()
    with pytest.raises(RuntimeError, match="tritonnet::test_bare_double has no autograd formula"):
        bare(dy)
    torch.testing.assert_close(bare(dy.detach()), 2 * dy.detach())
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level(), pytest.raises(RuntimeError, match="test_bare_double has no autograd formula"):
        bare(fwAD.make_dual(dy.detach(), torch.ones_like(dy)))  # a tangent is refused too

    # keywords and defaults bind as for a Python function; a wrong count is a TypeError
    y2 = ops.conv2d(x, wg, None, *args[:3], act="none", groups=1)
    torch.testing.assert_close(y2, y)
    assert y2.grad_fn is not None
    dw, db = ops.conv2d_weight_grad(dy.detach(), x, [3, 2, 3, 3], *args[:4])  # bias_grad=True
    assert db.shape == (3,)
    with pytest.raises(TypeError):
        ops.conv2d(x, w, None, *args[:4])


def test_host_arithmetic_matches_triton():
    """kernels._common's cdiv and next_power_of_2 (plain Python, for the host's grids) give
    triton.cdiv's and triton.next_power_of_2's values."""
    triton = pytest.importorskip("triton")
    from tritonnet.kernels._common import cdiv, next_power_of_2

    for n in range(-3, 600):
        assert next_power_of_2(n) == triton.next_power_of_2(n), n
        for d in (1, 2, 3, 16, 64, 128):
            assert cdiv(n, d) == triton.cdiv(n, d), (n, d)
    assert next_power_of_2(2**40 + 1) == 2**41


_META_OPS = {
    "conv2d": lambda f, x: f.conv2d(x, torch.empty(4, 3, 3, 3, device="meta"), None, 2, 1),
    "conv_transpose2d": lambda f, x: f.conv_transpose2d(x, torch.empty(3, 2, 3, 3, device="meta"), stride=2),
    "max_pool2d": lambda f, x: f.max_pool2d(x, 3, 2, 1, return_indices=True)[1],
    "avg_pool2d": lambda f, x: f.avg_pool2d(x, 3, 2, 1, ceil_mode=True),
    "adaptive_avg_pool2d": lambda f, x: f.adaptive_avg_pool2d(x, (3, 2)),
    "interpolate": lambda f, x: f.interpolate(x, scale_factor=1.5),
    "relu": lambda f, x: f.relu(x),
    "softmax": lambda f, x: f.softmax(x, 1),
    "log_softmax": lambda f, x: f.log_softmax(x, 1),
    "unfold": lambda f, x: f.unfold(x, 2),
    "linear": lambda f, x: f.linear(x, torch.empty(5, x.shape[-1], device="meta")),
    "cross_entropy": lambda f, x: f.cross_entropy(x, torch.empty(2, 8, 7, dtype=torch.long, device="meta")),
    "mse_loss": lambda f, x: f.mse_loss(x, torch.empty_like(x)),
}


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_meta_tensors_like_torch(backend):
    """Shape inference on meta tensors (a model built or traced on device="meta"): each op
    gives torch's shape and dtype, with no data. softmax once asked autocast about the meta
    device, which raises."""
    import torch.nn.functional as TF

    tritonnet.set_backend(backend)
    x = torch.empty(2, 3, 8, 7, device="meta", requires_grad=True)
    for name, fn in _META_OPS.items():
        ours, theirs = fn(tritonnet.functional, x), fn(TF, x)
        assert ours.device.type == "meta", name
        assert (ours.shape, ours.dtype) == (theirs.shape, theirs.dtype), name


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_export_with_dynamic_sizes(backend):
    """torch.export with a symbolic batch, height and width: the exported program runs at
    other sizes and equals eager. Sizes once turned constant (specialized) there:
    interpolate's scale_factor times a size (int()), and sizes handed to interpolate's size
    (the U-Net/FPN pattern), fold's and ConvTranspose2d's output_size, and an adaptive pool's
    None entries (int() or __index__ of a symbolic int)."""
    tritonnet.set_backend(backend)
    torch.manual_seed(0)
    nn, F = tritonnet.nn, tritonnet.functional

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(
                nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Upsample(scale_factor=2),
                nn.Conv2d(4, 2, 1), nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), nn.Linear(2, 3),
            )
            self.up = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1)

        def forward(self, x):
            folded = F.fold(F.unfold(x, 2, padding=1), x.shape[-2:], 2, padding=1)
            up = self.up(x, output_size=(2 * x.shape[2], 2 * x.shape[3]))
            skip = F.interpolate(F.max_pool2d(x, 2), size=x.shape[-2:]) + x
            rows = F.adaptive_max_pool2d(x, (None, 1))
            return self.body(x), folded, up, skip, rows

    model = Model().to(KERNEL_DEVICE)
    dims = {0: torch.export.Dim("B", min=2, max=16), 2: 2 * torch.export.Dim("H", min=2, max=16),
            3: 2 * torch.export.Dim("W", min=2, max=16)}
    example = torch.randn(2, 3, 8, 6, device=KERNEL_DEVICE)
    program = torch.export.export(model, (example,), dynamic_shapes=(dims,))
    for shape in [(2, 3, 8, 6), (3, 3, 10, 12), (5, 3, 4, 16)]:
        x = torch.randn(shape, device=KERNEL_DEVICE)
        torch.testing.assert_close(program.module()(x), model(x))


def test_float64_keeps_float64_precision_on_the_triton_backend():
    """float64 is the checking dtype: on the Triton backend its results and gradients agree
    with torch's to float64 rounding. softmax, the losses and the activations computed float64
    in fp32 (errors ~1e-7); they now run the reference primitives (softmax, losses) or compute
    in fp64 (activations)."""
    import torch.nn.functional as TF

    tritonnet.set_backend("triton")
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4, dtype=torch.float64, device=KERNEL_DEVICE)
    t = torch.randint(0, 5, (3, 4), device=KERNEL_DEVICE)
    p = torch.randn(3, 5, 4, dtype=torch.float64, device=KERNEL_DEVICE).softmax(1)
    w = torch.rand(5, dtype=torch.float64, device=KERNEL_DEVICE)
    cases = {
        "softmax": lambda m, v: m.softmax(v, 1),
        "log_softmax": lambda m, v: m.log_softmax(v, 1),
        "cross_entropy": lambda m, v: m.cross_entropy(v, t, weight=w, label_smoothing=0.1),
        "cross_entropy probabilities": lambda m, v: m.cross_entropy(v, p, reduction="none"),
        "nll_loss": lambda m, v: m.nll_loss(v, t, weight=w),
        "mse_loss": lambda m, v: m.mse_loss(v, v.detach() * 0.3 + 0.1),
        "tanh": lambda m, v: torch.tanh(v) if m is TF else m.tanh(v),
        "sigmoid": lambda m, v: torch.sigmoid(v) if m is TF else m.sigmoid(v),
    }
    for name, fn in cases.items():
        ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
        y, want = fn(tritonnet.functional, ours), fn(TF, theirs)
        torch.testing.assert_close(y, want, atol=1e-13, rtol=1e-12, msg=name)
        g = torch.randn_like(want)
        (dx,), (want_dx,) = torch.autograd.grad(y, ours, g), torch.autograd.grad(want, theirs, g)
        torch.testing.assert_close(dx, want_dx, atol=1e-13, rtol=1e-12, msg=name)


def test_tf32_policy_follows_torchs_fp32_precision_settings():
    """torch sets TF32 by fp32_precision now (torch.backends.cudnn.conv.fp32_precision,
    torch.backends.cuda.matmul.fp32_precision, ...); the legacy flags write the same settings
    but raise when read after the new API set something they cannot express. The kernels
    read the settings, resolved as ATen resolves them, whichever API set them: fp32 conv and
    linear on the Triton backend run under the new API (they raised: they read the legacy
    flags) and ask for TF32 exactly when torch's own kernels would."""
    import torch.nn.functional as TF

    import tritonnet.functional as F
    from tritonnet.kernels import _common

    get, put = torch._C._get_fp32_precision_getter, torch._C._set_fp32_precision_setter
    ops = ("all", "conv", "rnn", "matmul")
    pairs = [("generic", "all")] + [(b, o) for b in ("cuda", "mkldnn") for o in ops]
    saved, saved_matmul = {p: get(*p) for p in pairs}, torch.get_float32_matmul_precision()
    saved_legacy = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        # the new API alone: each legacy flag now raises when read (the case is as meant)
        torch.backends.cudnn.conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        with pytest.raises(RuntimeError):
            bool(torch.backends.cudnn.allow_tf32)
        with pytest.raises(RuntimeError):
            bool(torch.backends.cuda.matmul.allow_tf32)
        # fp32 conv and linear through the Triton kernels under these settings
        tritonnet.set_backend("triton")
        x, w = torch.randn(2, 3, 5, 5, device=KERNEL_DEVICE), torch.randn(4, 3, 3, 3, device=KERNEL_DEVICE)
        y, ref = F.conv2d(x, w, padding=1), TF.conv2d(x, w, padding=1)
        torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-4)
        a, b = torch.randn(8, 16, device=KERNEL_DEVICE), torch.randn(4, 16, device=KERNEL_DEVICE)
        torch.testing.assert_close(F.linear(a, b), TF.linear(a, b), atol=2e-2, rtol=2e-2)  # TF32 allowed
        assert not _common.tf32_enabled("conv") and _common.tf32_enabled("matmul")
        # "none" inherits: conv from cuda's "all", then from the generic setting
        torch.backends.cudnn.conv.fp32_precision = "none"
        torch.backends.fp32_precision = "tf32"
        assert _common.tf32_enabled("conv")
        torch.backends.cudnn.fp32_precision = "ieee"
        assert not _common.tf32_enabled("conv")
        for flag in (True, False):  # the legacy flags, which write the same settings
            torch.backends.cudnn.allow_tf32 = flag
            torch.backends.cuda.matmul.allow_tf32 = flag
            assert _common.tf32_enabled("conv") == flag == _common.tf32_enabled("matmul")
        torch.set_float32_matmul_precision("high")
        assert _common.tf32_enabled("matmul")
    finally:  # as found (the legacy flags keep values of their own), for the tests after this one
        torch.set_float32_matmul_precision(saved_matmul)
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved_legacy
        for p, v in saved.items():
            put(*p, v)
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == saved_legacy


def test_calls_that_warn_compile_with_fullgraph():
    """torch's deprecation and broadcasting warnings (dim=None, size_average/reduce, mse_loss
    with a broadcast target, dropout2d of 3-D/2-D input) came from warnings.warn, which
    dynamo cannot trace: each of these calls failed torch.compile(fullgraph=True), where
    torch's own compile. Compiled code now skips the warning (eager code still warns)."""
    import warnings

    import torch.nn.functional as TF

    import tritonnet.functional as F

    tritonnet.set_backend("reference")
    x = torch.randn(2, 3, 4, 4)
    cases = [
        lambda m: m.mse_loss(x, torch.zeros(1)),
        lambda m: m.softmax(x),
        lambda m: m.log_softmax(x),
        lambda m: m.cross_entropy(x[:, :, 0, 0], torch.tensor([0, 1]), size_average=False),
        lambda m: m.mse_loss(x, x * 2, reduce=False),
        lambda m: m.dropout2d(x[0], 0.0, training=True),
    ]
    for i, case in enumerate(cases):
        torch._dynamo.reset()
        with warnings.catch_warnings(record=True) as eager:
            warnings.simplefilter("always")
            expected = case(F)
        assert eager, f"case {i} does not warn (the case is as meant)"
        got = torch.compile(lambda c=case: c(F), fullgraph=True)()
        torch.testing.assert_close(got, expected, msg=f"case {i}")
        torch.testing.assert_close(got, case(TF), msg=f"case {i}")


def test_numpy_arguments_compile_with_fullgraph():
    """numpy ints as arguments (sizes, strides computed with numpy) under
    torch.compile(fullgraph=True): the argument checks asked hasattr of the numpy type, which
    dynamo cannot trace. interpolate's size failed where torch's compiles; torch's own
    convolutions and pools fail with numpy strides and paddings (its fake kernels guard on
    the value), ours now compile. Not before torch 2.12: 2.10 and 2.11 compile cannot trace
    ``operator.index`` of a numpy int (README, "Versions")."""
    import numpy as np
    import torch.nn.functional as TF

    if TORCH_VERSION < (2, 12):
        pytest.skip("torch before 2.12 compile cannot trace operator.index of a numpy int")

    import tritonnet.functional as F

    tritonnet.set_backend("reference")
    x, w = torch.randn(2, 3, 5, 6), torch.randn(4, 3, 3, 3)
    cases = [
        lambda m, a: m.interpolate(x, size=a),
        lambda m, a: m.interpolate(x, size=(a, 3), mode="nearest-exact"),
        lambda m, a: m.cross_entropy(x, torch.zeros(2, 5, 6, dtype=torch.long), ignore_index=a),
        lambda m, a: m.conv2d(x, w, stride=a, dilation=(1, a)),
        lambda m, a: m.conv_transpose2d(x, w.transpose(0, 1), stride=a, padding=(a, 1)),
        lambda m, a: m.max_pool2d(x, a, padding=1),
        lambda m, a: m.avg_pool2d(x, (a, 2), divisor_override=a),
        lambda m, a: m.adaptive_max_pool2d(x, (a, 3)),
        lambda m, a: m.softmax(x, a),
    ]
    for i, case in enumerate(cases):
        torch._dynamo.reset()
        got = torch.compile(case, backend="aot_eager", fullgraph=True)(F, np.int64(2))
        torch.testing.assert_close(got, case(TF, np.int64(2)), msg=f"case {i}")


def test_jit_trace_under_no_grad_saves_and_loads(tmp_path):
    """torch.jit.trace of a tritonnet model under torch.no_grad() (how models are traced for
    deployment) records the tritonnet:: operators: the trace checks, saves and loads (in a
    process that imports tritonnet) and follows new inputs. The README's limits: with autograd
    on, the trace records Python autograd Functions, which TorchScript cannot save."""
    import warnings

    import tritonnet.nn as tnn

    tritonnet.set_backend("reference")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        tnn.Conv2d(3, 4, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2), torch.nn.Flatten(), tnn.Linear(16, 5)
    ).eval()
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation warnings
        traced = torch.jit.trace(model, x)
        torch.jit.save(traced, tmp_path / "model.pt")
        loaded = torch.jit.load(tmp_path / "model.pt")
        assert "tritonnet::conv2d" in str(loaded.graph) or "tritonnet::conv2d" in str(loaded.inlined_graph)
        for inp in (x, 2 * x + 1):
            torch.testing.assert_close(loaded(inp), model(inp))


def _functional_calls():
    """A valid call of every public function of tritonnet.functional: op -> (its tensor
    arguments in order, the positional arguments after them, how many tensors are required)."""
    x4, x3, x2 = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6), torch.randn(3, 5)
    t = torch.tensor([0, 1, 4])
    calls = {
        "relu": ((x4,), (), 1), "relu_": ((x4.clone(),), (), 1), "sigmoid": ((x4,), (), 1),
        "tanh": ((x4,), (), 1), "softmax": ((x2,), (1,), 1), "log_softmax": ((x2,), (1,), 1),
        "dropout": ((x4,), (0.5,), 1), "dropout2d": ((x4,), (0.5,), 1),
        "max_pool2d": ((x4,), (2,), 1), "avg_pool2d": ((x4,), (2,), 1),
        "max_pool1d": ((x3,), (2,), 1), "avg_pool1d": ((x3,), (2,), 1),
        "adaptive_max_pool2d": ((x4,), (2,), 1), "adaptive_avg_pool2d": ((x4,), (2,), 1),
        "adaptive_max_pool1d": ((x3,), (2,), 1), "adaptive_avg_pool1d": ((x3,), (2,), 1),
        "interpolate": ((x4,), (None, 2), 1), "unfold": ((x4,), (2,), 1),
        "fold": ((torch.randn(2, 8, 9),), (4, 2), 1),
        "conv2d": ((x4, torch.randn(3, 4, 3, 3), torch.randn(3)), (), 2),
        "conv1d": ((x3, torch.randn(3, 4, 3), torch.randn(3)), (), 2),
        "conv_transpose2d": ((x4, torch.randn(4, 3, 3, 3), torch.randn(3)), (), 2),
        "conv_transpose1d": ((x3, torch.randn(4, 3, 3), torch.randn(3)), (), 2),
        "linear": ((x2, torch.randn(4, 5), torch.randn(4)), (), 2),
        "mse_loss": ((x2, x2), (), 2),
        "cross_entropy": ((x2, t, torch.rand(5)), (), 2),
        "nll_loss": ((x2, t, torch.rand(5)), (), 2),
    }
    for op in ("max_pool2d", "adaptive_max_pool2d", "max_pool1d", "adaptive_max_pool1d"):
        calls[op + "_with_indices"] = calls[op]
    return calls


def _tensor_params(op):
    """The names of an op's tensor arguments, in the order _functional_calls gives them."""
    losses = ("mse_loss", "cross_entropy", "nll_loss")
    second = "target" if op in losses else "weight"
    return ["input", second, "weight" if op in ("cross_entropy", "nll_loss") else "bias"]


def _functional_names():
    """Every name in the __all__ of tritonnet.functional's op families."""
    import importlib
    import pkgutil

    import tritonnet.functional as F

    return {
        name
        for info in pkgutil.iter_modules(F.__path__)
        if not info.name.startswith("_")
        for name in importlib.import_module(f"tritonnet.functional.{info.name}").__all__
    }


def test_a_non_tensor_where_a_tensor_goes_raises_torchs_type_error():
    """Every tensor argument of every functional op, given a list, a number or None (where a
    tensor is required): torch's TypeError naming the argument. conv2d, conv_transpose2d,
    linear's bias and the losses' None input/target raised AttributeErrors ('list' object has
    no attribute 'device') from code that read the argument before checking it."""
    import tritonnet.functional as F

    tritonnet.set_backend("reference")
    calls = _functional_calls()
    checked = 0
    for op, (tensors, rest, required) in calls.items():
        params = _tensor_params(op)
        getattr(F, op)(*tensors, *rest)  # the call itself is valid
        for i in range(len(tensors)):
            for bad in ([1.0, 2.0], 1.5, None if i < required else 2):
                args = list(tensors)
                args[i] = bad
                with pytest.raises(TypeError, match=f"argument '{params[i]}'.* must be Tensor"):
                    getattr(F, op)(*args, *rest)
                checked += 1
    assert checked == 3 * sum(len(c[0]) for c in calls.values())
    assert set(calls) == _functional_names()  # every public function is covered


def _int_forms():
    import numpy as np

    return {"np.int64": np.int64(2), "np.int32": np.int32(2), "0-d long": torch.tensor(2),
            "0-d uint8": torch.tensor(2, dtype=torch.uint8), "bool": True, "np.bool": np.True_,
            "float": 2.0, "0-d float": torch.tensor(2.0), "1-d long": torch.tensor([2]),
            "0-d bool": torch.tensor(True)}


@pytest.mark.parametrize("form", list(_int_forms()))
def test_int_arguments_take_what_torchs_parser_takes(form):
    """An int argument given as a numpy int or an integer tensor works where torch's takes it
    (softmax's dim, avg_pool2d's divisor_override refused numpy ints and 0-d tensors; conv's
    groups and the losses' ignore_index took 0-d float tensors, truncated, and raised a
    RuntimeError for a float); a bool, a float or another tensor raises torch's TypeError
    (a bool kernel size passed as 1). torch raises an internal assert's RuntimeError for a
    0-d bool tensor given as a SymInt; ours a TypeError."""
    import torch.nn.functional as TF

    import tritonnet.functional as F

    tritonnet.set_backend("reference")
    v = _int_forms()[form]
    x, logits, t = torch.randn(2, 3, 6, 6), torch.randn(4, 3), torch.tensor([0, 1, 2, 2])
    calls = {
        "softmax dim": lambda m: m.softmax(x, v),
        "log_softmax dim": lambda m: m.log_softmax(x, v),
        "avg_pool2d divisor_override": lambda m: m.avg_pool2d(x, 2, divisor_override=v),
        "max_pool2d kernel_size": lambda m: m.max_pool2d(x, v),
        "avg_pool1d kernel_size": lambda m: m.avg_pool1d(x[0], v),
        "conv2d stride": lambda m: m.conv2d(x, torch.ones(4, 3, 3, 3), None, v),
        "conv2d groups": lambda m: m.conv2d(x[:, :2], torch.ones(2, 1, 3, 3), None, 1, 0, 1, v),
        "conv_transpose2d groups": lambda m: m.conv_transpose2d(x[:, :2], torch.ones(2, 1, 3, 3),
                                                                None, 1, 0, 0, v),
        "cross_entropy ignore_index": lambda m: m.cross_entropy(logits, t, ignore_index=v),
        "nll_loss ignore_index": lambda m: m.nll_loss(logits, t, ignore_index=v),
    }
    for what, call in calls.items():
        try:
            want = call(TF)
        except Exception as e:  # torch refuses the form: ours must refuse it too
            with pytest.raises((type(e), TypeError)) as got:
                call(F)
            if isinstance(e, TypeError):
                assert isinstance(got.value, TypeError), what
            if "must be" in str(e) and "must be" in str(got.value):  # "... int, not float"
                assert str(got.value).split("must be")[1].startswith(str(e).split("must be")[1]), what
            continue
        torch.testing.assert_close(call(F), want, msg=what)


def _same_as_torch(what, call, ours, theirs):
    """call(ours) and call(theirs) both succeed with equal results (True), or both raise
    (False): ours torch's type (or a TypeError where torch's own Python code trips over the
    value), and a TypeError with its words after "must be"."""
    try:
        want = call(theirs)
    except Exception as e:
        with pytest.raises((type(e), TypeError)) as got:
            call(ours)
        if isinstance(e, TypeError):
            assert isinstance(got.value, TypeError), (what, got.value)
            if "must be" in str(e) and "must be" in str(got.value):  # "tuple of ints, but found"
                assert str(got.value).split("must be")[1][:14] == str(e).split("must be")[1][:14], (
                    what, str(got.value), str(e))
        return False
    got = call(ours)
    for a, b in zip(got if isinstance(got, tuple) else [got], want if isinstance(want, tuple) else [want]):
        torch.testing.assert_close(a, b, msg=what)
    return True


def _bool_forms():
    import numpy as np

    return {"True": True, "False": False, "1": 1, "0": 0, "None": None, "np.bool": np.True_,
            "0-d bool": torch.tensor(True), "float": 1.0}


@pytest.mark.parametrize("form", list(_bool_forms()))
def test_bool_arguments_take_what_torchs_parser_takes(form):
    """A bool argument that torch's argument parser types as bool takes a Python bool only:
    1, 0, None, numpy's bool, a tensor or a float is torch's TypeError naming the argument.
    Ours took any of them by its truth (ceil_mode=1 and count_include_pad=None passed). The
    flags torch reads in Python (return_indices, inplace, align_corners...) take any value
    in both."""
    import torch.nn.functional as TF

    import tritonnet.functional as F

    tritonnet.set_backend("reference")
    v = _bool_forms()[form]
    x = torch.randn(2, 3, 6, 6)
    calls = {
        "max_pool2d ceil_mode": lambda m: m.max_pool2d(x, 4, 3, ceil_mode=v),
        "max_pool2d(indices) ceil_mode": lambda m: m.max_pool2d(x, 4, 3, ceil_mode=v, return_indices=True),
        "max_pool1d ceil_mode": lambda m: m.max_pool1d(x[0], 4, 3, ceil_mode=v),
        "avg_pool2d ceil_mode": lambda m: m.avg_pool2d(x, 4, 3, 1, ceil_mode=v),
        "avg_pool2d count_include_pad": lambda m: m.avg_pool2d(x, 3, 2, 1, count_include_pad=v),
        "avg_pool1d ceil_mode": lambda m: m.avg_pool1d(x[0], 4, 3, 1, ceil_mode=v),
        "avg_pool1d count_include_pad": lambda m: m.avg_pool1d(x[0], 3, 2, 1, count_include_pad=v),
        "dropout training": lambda m: m.dropout(x, 0.0, training=v),
        "dropout2d training": lambda m: m.dropout2d(x, 0.0, training=v),
        "max_pool2d return_indices": lambda m: m.max_pool2d(x, 2, return_indices=v),
        "adaptive_max_pool2d return_indices": lambda m: m.adaptive_max_pool2d(x, 4, return_indices=v),
        "relu inplace": lambda m: m.relu(x.clone(), inplace=v),
    }
    refused = {what for what, call in calls.items() if not _same_as_torch(what, call, F, TF)}
    if form in ("True", "False"):
        assert not refused
    else:  # the parser's bools refuse it, the Python flags take it
        parsed = ("ceil_mode", "count_include_pad", "training")
        assert refused == {w for w in calls if w.split()[-1] in parsed}


def _float_forms():
    import fractions

    import numpy as np

    return {"float": 0.25, "int": 0, "np.float32": np.float32(0.25), "np.int64": np.int64(0),
            "0-d float": torch.tensor(0.25), "0-d long": torch.tensor(0),
            "0-d requires_grad": torch.tensor(0.25, requires_grad=True), "1-d": torch.tensor([0.25]),
            "Fraction": fractions.Fraction(1, 4)}


@pytest.mark.parametrize("form", list(_float_forms()))
def test_float_arguments_take_what_torchs_parser_takes(form):
    """dropout's p and cross_entropy's label_smoothing as torch's parser takes a float: a
    Python or numpy number or a 0-d tensor without grad; a Fraction, a 1-d tensor or a tensor
    that requires grad is its TypeError (ours took them, even with training=False)."""
    import torch.nn.functional as TF

    import tritonnet.functional as F

    tritonnet.set_backend("reference")
    v = _float_forms()[form]
    x, logits, t = torch.randn(2, 3, 6, 6), torch.randn(4, 3), torch.tensor([0, 1, 2, 2])
    calls = {
        "dropout p (eval)": lambda m: m.dropout(x, v, training=False),
        "dropout p": lambda m: (torch.manual_seed(0), m.dropout(x, v))[1].shape,
        "dropout2d p": lambda m: (torch.manual_seed(0), m.dropout2d(x, v))[1].shape,
        "cross_entropy label_smoothing": lambda m: m.cross_entropy(logits, t, label_smoothing=v),
    }
    worked = {what for what, call in calls.items() if _same_as_torch(what, call, F, TF)}
    assert worked == (set() if form in ("0-d requires_grad", "1-d", "Fraction") else set(calls))


def test_dtype_and_reduction_arguments_like_torch():
    """softmax's dtype takes a torch.dtype or a Python scalar type, as torch's parser does; a
    string or an int is its TypeError (ours read a string as a device and raised "Invalid
    device string"). The losses take torch's deprecated reduction='elementwise_mean' as
    'mean', with its warning (ours raised ValueError)."""
    import numpy as np
    import torch.nn.functional as TF

    import tritonnet.functional as F

    tritonnet.set_backend("reference")
    x, logits, t = torch.randn(2, 3, 4), torch.randn(4, 3), torch.tensor([0, 1, 2, 2])
    worked = set()
    for name, v in {"float64": torch.float64, "float": float, "str": "float32", "int": 1,
                    "np.float32": np.float32}.items():
        for op in ("softmax", "log_softmax"):
            if _same_as_torch(op, lambda m, op=op, v=v: getattr(m, op)(x, 1, dtype=v), F, TF):
                worked.add(name)
    assert worked == {"float64", "float"}
    old = "elementwise_mean"
    for op, call in {"cross_entropy": lambda m: m.cross_entropy(logits, t, reduction=old),
                     "nll_loss": lambda m: m.nll_loss(logits, t, reduction=old),
                     "mse_loss": lambda m: m.mse_loss(logits, logits * 2, reduction=old)}.items():
        with pytest.warns(UserWarning, match=old):
            got = call(F)
        torch.testing.assert_close(got, call(TF), msg=op)


def _odd_values():
    import math

    import numpy as np

    return {"None": None, "True": True, "False": False, "0": 0, "1": 1, "2": 2, "-1": -1,
            "1.5": 1.5, "0.5": 0.5, "'x'": "x", "[1]": [1], "(1, 1)": (1, 1), "()": (),
            "tensor(1)": torch.tensor(1), "tensor(0.5)": torch.tensor(0.5), "int64(1)": np.int64(1),
            "nan": math.nan, "inf": math.inf, "'mean'": "mean", "'same'": "same",
            "float64": torch.float64, "'reflect'": "reflect"}


def _difference(theirs, ours, values=True):
    """How two outcomes ((status, results) pairs) differ, or None: the status, then each
    result's shape and dtype, and its values unless ``values`` is False."""
    (want, a), (got, b) = theirs, ours
    if want != got:
        return f"torch {want}, ours {got}"
    if want == "ok" and not all(
        x.shape == y.shape and x.dtype == y.dtype
        and (not values or torch.allclose(x.double(), y.double(), atol=1e-5, equal_nan=True))
        for x, y in zip(a, b, strict=True)
    ):
        return "results differ"
    return None


def _outcome(module, op, args, kwargs):
    """("ok", results) of module.op on copies of the tensors, or (exception type name, None)."""
    args = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    torch.manual_seed(0)
    try:
        out = getattr(module, op)(*args, **kwargs)
    except Exception as e:
        return type(e).__name__, None
    return "ok", out if isinstance(out, tuple) else (out,)


def test_every_argument_with_odd_values_like_torch():
    """Every non-tensor argument of every functional op that torch.nn.functional has, given
    each of 21 odd values (None, bools, 0, -1, 1.5, NaN, inf, a string, lists, tensors, a
    numpy int, a dtype) in a valid call: torch and ours both succeed with the same result
    (dropout's shapes only), or both raise the same exception type. It found softmax's
    `_stacklevel` read when `dim` was given, and interpolate's NaN / inf scale factors
    raising ValueError / OverflowError where torch raises RuntimeError."""
    import inspect

    import torch.nn.functional as TF

    import tritonnet.functional as F

    tritonnet.set_backend("reference")
    values = _odd_values()
    tensor_names = {"input", "target", "weight", "bias", "size_average", "reduce", "activation"}
    differences, calls = [], 0
    for op, (tensors, rest, _) in _functional_calls().items():
        if not hasattr(TF, op):
            continue
        names = list(inspect.signature(getattr(F, op)).parameters)
        for name in (n for n in names if n not in tensor_names):
            for label, v in values.items():
                args, kwargs, i = [*tensors, *rest], {}, names.index(name)
                if i < len(args):
                    args[i] = v
                else:
                    kwargs[name] = v
                calls += 1
                theirs, ours = (_outcome(m, op, args, kwargs) for m in (TF, F))
                diff = _difference(theirs, ours, "dropout" not in op)
                if diff and not older_torch_differs(op, {name: v}, theirs[0], ours[0]):
                    differences.append(f"{op}({name}={label}): {diff}")
    assert calls > 1500 and not differences, "\n".join(differences)


def _module_outcome(cls, args, kwargs, inputs):
    """("ok", outputs) of cls(*args, **kwargs) applied to copies of inputs, or where it raised
    (init or forward) and the exception type's name."""
    torch.manual_seed(0)
    try:
        module = cls(*args, **kwargs)
    except Exception as e:
        return "init " + type(e).__name__, None
    torch.manual_seed(1)
    try:
        out = module(*[i.clone() for i in inputs])
    except Exception as e:
        return "forward " + type(e).__name__, None
    return "ok", out if isinstance(out, tuple) else (out,)


def test_every_module_argument_with_odd_values_like_torch():
    """Every constructor argument of every tritonnet.nn module (torch's signature), given
    each odd value of _odd_values in an otherwise valid construction, then a forward: torch's
    module and ours fail at the same step with the same exception type, or give the same
    result (Dropout's shapes only)."""
    import inspect

    import tritonnet.nn as tnn

    tritonnet.set_backend("reference")
    x4, x3, x2, t = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6), torch.randn(3, 5), torch.tensor([0, 1, 4])
    modules = {  # name: (the valid positional arguments, the forward's inputs)
        "Conv2d": ((4, 3, 3), (x4,)), "Conv1d": ((4, 3, 3), (x3,)),
        "ConvTranspose2d": ((4, 3, 3), (x4,)), "ConvTranspose1d": ((4, 3, 3), (x3,)),
        "MaxPool2d": ((2,), (x4,)), "AvgPool2d": ((2,), (x4,)), "MaxPool1d": ((2,), (x3,)),
        "AvgPool1d": ((2,), (x3,)), "AdaptiveAvgPool2d": ((2,), (x4,)), "AdaptiveMaxPool2d": ((2,), (x4,)),
        "AdaptiveAvgPool1d": ((2,), (x3,)), "AdaptiveMaxPool1d": ((2,), (x3,)),
        "Upsample": ((None, 2), (x4,)), "UpsamplingNearest2d": ((None, 2), (x4,)),
        "Unfold": ((2,), (x4,)), "Fold": ((4, 2), (torch.randn(2, 8, 9),)), "Linear": ((5, 4), (x2,)),
        "ReLU": ((), (x4,)), "Sigmoid": ((), (x4,)), "Tanh": ((), (x4,)), "Softmax": ((1,), (x2,)),
        "LogSoftmax": ((1,), (x2,)), "Dropout": ((0.5,), (x4,)), "Dropout2d": ((0.5,), (x4,)),
        "MSELoss": ((), (x2, x2)), "CrossEntropyLoss": ((), (x2, t)), "NLLLoss": ((), (x2, t)),
    }
    skip = {"self", "device", "dtype", "size_average", "reduce"}
    differences, calls = [], 0
    for name, (base, inputs) in modules.items():
        ours, theirs = getattr(tnn, name), getattr(torch.nn, name)
        params = inspect.signature(theirs.__init__).parameters
        names = [n for n, p in params.items()
                 if n not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        for arg in names:
            for label, v in _odd_values().items():
                args, kwargs, i = list(base), {}, names.index(arg)
                if i < len(args):
                    args[i] = v
                else:
                    kwargs[arg] = v
                calls += 1
                want, got = (_module_outcome(c, args, kwargs, inputs) for c in (theirs, ours))
                diff = _difference(want, got, "Dropout" not in name)
                # (a constructor's error keeps its "init " and matches no older torch's)
                if diff and not older_torch_differs(name, {arg: v}, want[0].removeprefix("forward "),
                                                    got[0].removeprefix("forward ")):
                    differences.append(f"{name}({arg}={label}): {diff}")
    assert calls > 2000 and not differences, "\n".join(differences)


def test_non_float_dtypes_raise_torchs_exception_type():
    """Integer, bool and complex inputs to the float-only ops: where torch refuses the dtype
    too, ours raise its exception type (a NotImplementedError for complex relu and dropout,
    bool convs and linear, the transposed convs' small integers; ours raised RuntimeError);
    where torch takes it (README: a documented limitation) a RuntimeError or
    NotImplementedError naming the dtype."""
    import torch.nn.functional as TF

    import tritonnet.functional as F

    tritonnet.set_backend("reference")
    x4, x3 = torch.randn(2, 4, 6, 6) * 3, torch.randn(2, 4, 6) * 3
    w4, w3, wl = torch.randn(3, 4, 3, 3), torch.randn(3, 4, 3), torch.randn(5, 6)
    calls = {
        "relu": lambda m, d: m.relu(x4.to(d)),
        "relu_": lambda m, d: m.relu_(x4.to(d)),
        "sigmoid": lambda m, d: m.sigmoid(x4.to(d)),
        "tanh": lambda m, d: m.tanh(x4.to(d)),
        "dropout": lambda m, d: m.dropout(x4.to(d), 0.5),
        "dropout2d": lambda m, d: m.dropout2d(x4.to(d), 0.5),
        "conv2d": lambda m, d: m.conv2d(x4.to(d), w4.to(d)),
        "conv1d": lambda m, d: m.conv1d(x3.to(d), w3.to(d)),
        "conv_transpose2d": lambda m, d: m.conv_transpose2d(x4.to(d), w4.transpose(0, 1).to(d)),
        "conv_transpose1d": lambda m, d: m.conv_transpose1d(x3.to(d), w3.transpose(0, 1).to(d)),
        "linear": lambda m, d: m.linear(x3.to(d), wl.to(d)),
        "softmax": lambda m, d: m.softmax(x3.to(d), 1),
        "mse_loss": lambda m, d: m.mse_loss(x3.to(d), x3.to(d)),
    }
    names = {torch.int64: "Long", torch.int32: "Int", torch.uint8: "Byte", torch.bool: "Bool",
             torch.complex64: "ComplexFloat"}  # torch's names, which the losses' messages use
    not_implemented = 0
    for op, call in calls.items():
        for d in names:
            try:
                call(TF, d)
                theirs = None
            except Exception as e:
                theirs = type(e)
            with pytest.raises(theirs or (RuntimeError, NotImplementedError)) as got:
                call(F, d)
            assert str(d).split(".")[1] in str(got.value) or names[d] in str(got.value), (op, got.value)
            not_implemented += got.type is NotImplementedError
    assert not_implemented >= 25


def _sequence_forms():
    import numpy as np

    return {"int": 3, "np.int64": np.int64(3), "0-d long": torch.tensor(3), "None": None,
            "[3]": [3], "(3, 3)": (3, 3), "(True, 3)": (True, 3), "(3, True)": (3, True),
            "(3.0, 3)": (3.0, 3), "(3, None)": (3, None), "1-d long [3, 3]": torch.tensor([3, 3]),
            "np.array [3, 3]": np.array([3, 3]), "range(3, 5)": range(3, 5), "'3'": "3"}


@pytest.mark.parametrize("form", list(_sequence_forms()))
def test_size_arguments_take_what_torch_takes(form):
    """Sizes and windows given in every form: what torch takes works the same, what it refuses
    is refused with its exception type. Before: adaptive pools took a one-element size ([3],
    (3,), a 1-d tensor) as a square and a bare numpy int, 0-d tensor or None, where torch
    refuses them, and refused the 1-d tensor and array of two it takes; a bool first in a
    sequence passed as 1 (torch's parser checks the first element's type, then converts the
    rest, so (3, True) passes there); unfold/fold refused iterables other than lists and
    tuples and took a 0-d tensor; interpolate took a tensor or a string as a scale factor."""
    import torch.nn.functional as TF

    import tritonnet.functional as F

    tritonnet.set_backend("reference")
    v = _sequence_forms()[form]
    x, cols = torch.randn(2, 3, 7, 7), torch.randn(2, 12, 16)
    w, wt = torch.randn(4, 3, 3, 3), torch.randn(3, 4, 3, 3)
    calls = {
        "adaptive_avg_pool2d": lambda m: m.adaptive_avg_pool2d(x, v),
        "adaptive_max_pool2d": lambda m: m.adaptive_max_pool2d(x, v, True),
        "adaptive_avg_pool1d": lambda m: m.adaptive_avg_pool1d(x[0], v),
        "adaptive_max_pool1d": lambda m: m.adaptive_max_pool1d(x[0], v),
        "unfold kernel_size": lambda m: m.unfold(x, v),
        "unfold stride": lambda m: m.unfold(x, 2, stride=v),
        "fold output_size": lambda m: m.fold(cols[:, :, :4], v, 2),
        "fold kernel_size": lambda m: m.fold(cols[:, :, :4], 5, v),
        "conv2d stride": lambda m: m.conv2d(x, w, None, v),
        "conv2d dilation": lambda m: m.conv2d(x, w, None, 1, 0, v),
        "conv_transpose2d stride": lambda m: m.conv_transpose2d(x, wt, None, v),
        "max_pool2d kernel_size": lambda m: m.max_pool2d(x, v),
        "avg_pool2d stride": lambda m: m.avg_pool2d(x, 2, v),
        "max_pool1d kernel_size": lambda m: m.max_pool1d(x[0], v),
        "interpolate size": lambda m: m.interpolate(x, size=v),
        "interpolate scale_factor": lambda m: m.interpolate(x, scale_factor=v),
    }
    worked = {what for what, call in calls.items() if _same_as_torch(what, call, F, TF)}
    assert ("adaptive_avg_pool2d" in worked) == (form in ("int", "(3, 3)", "(3, None)", "(3, True)")
                                                 or form.endswith("[3, 3]") or form == "range(3, 5)")


def test_sparse_and_nested_tensors_are_refused_naming_the_argument():
    """Every tensor argument of every functional op, given as a sparse COO tensor or a nested
    (jagged) tensor: a NotImplementedError naming the argument and what it got, before any
    kernel runs. The pools and interpolate failed on a nested tensor with an AttributeError
    ('NestedIntNode' object has no attribute 'add') from their size arithmetic; others raised
    dispatcher messages about a 'tritonnet::...' operator, or a RuntimeError."""
    import tritonnet.functional as F

    tritonnet.set_backend("reference")
    checked = 0
    for op, (tensors, rest, _) in _functional_calls().items():
        params = _tensor_params(op)
        for i, t in enumerate(tensors):
            nested = torch.nested.as_nested_tensor([t, t], layout=torch.jagged)
            for bad, kind in ((t.to_sparse(), "layout torch.sparse_coo"), (nested, "a nested tensor")):
                args = list(tensors)
                args[i] = bad
                with pytest.raises(NotImplementedError, match=f"argument '{params[i]}'.*dense.*{kind}"):
                    getattr(F, op)(*args, *rest)
                checked += 1
    assert checked == 2 * sum(len(c[0]) for c in _functional_calls().values())


class _Recorded(torch.Tensor):
    """A tensor subclass that records the functions its __torch_function__ is called with."""

    seen: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.seen.append(func)
        return super().__torch_function__(func, types, args, kwargs or {})


@pytest.mark.parametrize("position", ["first", "last"])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_tensor_subclasses_see_one_call_of_the_public_function(backend, position):
    """The __torch_function__ protocol, as torch.nn.functional's functions have it: a tensor
    subclass among any tensor argument (the first, or the last one given) sees the public
    tritonnet function called once, and gets its result as the subclass with the plain call's
    values; a TorchFunctionMode sees the same. Before, the subclass saw every torch op inside
    (3 to 15 of them) and never the function itself."""
    import tritonnet.functional as F

    tritonnet.set_backend(backend)

    class Mode(torch.overrides.TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.seen.append(func)
            return func(*args, **(kwargs or {}))

    dev = KERNEL_DEVICE if backend == "triton" else "cpu"
    for op, (tensors, rest, _) in _functional_calls().items():
        fn = getattr(F, op)
        tensors = [t.to(dev) for t in tensors]
        i = 0 if position == "first" else len(tensors) - 1
        torch.manual_seed(0)
        expected = fn(*[t.clone() for t in tensors], *rest)
        args = [t.clone() for t in tensors]
        args[i] = args[i].as_subclass(_Recorded)
        _Recorded.seen = []
        torch.manual_seed(0)
        got = fn(*args, *rest)
        assert _Recorded.seen == [fn], (op, _Recorded.seen[:4])
        for g, e in zip(*((v if isinstance(v, tuple) else (v,)) for v in (got, expected))):
            assert type(g) is _Recorded, (op, type(g))
            torch.testing.assert_close(g.as_subclass(torch.Tensor), e, msg=op)
        args = [t.clone() for t in tensors]
        with Mode() as mode:
            torch.manual_seed(0)
            got = fn(*args, *rest)
        assert mode.seen[:1] == [fn] and fn not in mode.seen[1:], (op, mode.seen[:4])
        torch.testing.assert_close(got, expected, msg=op)


def test_fx_symbolic_trace_records_the_functional_calls():
    """torch.fx.symbolic_trace (what FX tools such as feature extractors and graph rewriters
    run) traces a model built from every tritonnet module into calls of tritonnet's functions,
    and the traced module computes what the model does, forward and backward. It failed
    before ("conv2d(): argument 'input' must be Tensor, not Proxy")."""
    import tritonnet.nn as tnn

    tritonnet.set_backend("reference")
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Sequential(
                tnn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"), tnn.ReLU(), tnn.Dropout2d(0.0),
                tnn.MaxPool2d(2, ceil_mode=True), tnn.Conv2d(8, 8, 3, groups=8), tnn.Sigmoid(),
                tnn.ConvTranspose2d(8, 4, 2, stride=2), tnn.Tanh(), tnn.AvgPool2d(2, padding=1),
                tnn.Upsample(scale_factor=2), tnn.AdaptiveMaxPool2d(3), tnn.AdaptiveAvgPool2d((2, 2)),
            )
            self.seq = torch.nn.Sequential(
                tnn.Conv1d(4, 4, 2), tnn.ConvTranspose1d(4, 4, 2), tnn.MaxPool1d(2), tnn.AvgPool1d(1),
                tnn.AdaptiveMaxPool1d(2), tnn.AdaptiveAvgPool1d(2),
            )
            self.unfold, self.fold = tnn.Unfold(1), tnn.Fold((2, 2), 1)
            self.head = torch.nn.Sequential(tnn.Linear(24, 5), tnn.Dropout(0.0), tnn.LogSoftmax(1))
            self.softmax = tnn.Softmax(1)
            self.ce, self.nll, self.mse = tnn.CrossEntropyLoss(), tnn.NLLLoss(), tnn.MSELoss()

        def forward(self, x, target):
            f = self.fold(self.unfold(self.features(x)))
            s = self.seq(f.flatten(2))
            y = self.head(torch.cat([f.flatten(1), s.flatten(1)], 1))
            return self.ce(y, target) + self.nll(y, target) + self.mse(self.softmax(y), y.exp())

    net = Net()
    traced = torch.fx.symbolic_trace(net)
    called = {n.target.__module__ for n in traced.graph.nodes if n.op == "call_function"}
    assert "tritonnet.functional.conv" in called and "tritonnet.functional.pool" in called
    x, target = torch.randn(2, 3, 9, 9), torch.tensor([1, 4])
    ours = torch.fx.GraphModule(net, traced.graph)
    expected, got = net(x, target), ours(x, target)
    torch.testing.assert_close(got, expected)
    g_expected = torch.autograd.grad(expected, list(net.parameters()))
    g_got = torch.autograd.grad(got, list(net.parameters()))
    for a, b in zip(g_got, g_expected):
        torch.testing.assert_close(a, b)


_FLOPS_CHECK = """
import sys, torch
first, second = sys.argv[1:]
for name in (first, second):
    __import__(name)
import tritonnet
import tritonnet.nn as tnn
from torch.utils.flop_counter import FlopCounterMode

tritonnet.set_backend("reference")


def nets(nn, groups):
    return torch.nn.ModuleDict({
        "2d": torch.nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, groups=groups),
            nn.MaxPool2d(2), nn.ConvTranspose2d(8, 4, 3, stride=2, output_padding=1), torch.nn.Flatten(),
            nn.Linear(4 * 8 * 8, 10),
        ),
        "1d": torch.nn.Sequential(
            nn.Conv1d(3, 4, 3), nn.ConvTranspose1d(4, 2, 2, stride=2), nn.Linear(12, 5),
        ),
    })


def per_module(model, backward, device="cpu"):
    out = {}
    for part, shape in (("2d", (2, 3, 16, 16)), ("1d", (2, 3, 8))):
        with FlopCounterMode(display=False) as counter:
            y = model[part](torch.randn(shape, device=device, requires_grad=backward))
            if backward:
                y.sum().backward()
        out.update({(part, m): sum(ops.values()) for m, ops in counter.get_flop_counts().items()})
    return out


for groups in (1, 4):
    torch.manual_seed(0)
    ours = nets(tnn, groups)
    theirs = nets(torch.nn, 1)
    for backward in (False, True):
        got, expected = per_module(ours, backward), per_module(theirs, backward)
        if groups == 1:
            assert got == expected and min(expected.values()) > 0, (backward, got, expected)
        else:  # torch counts a grouped conv's weight gradient as if ungrouped (groups x)
            conv = ("2d", "Sequential.2")  # the grouped conv, as the tracker names it
            grouped = 2 * 2 * 7 * 7 * 8 * (8 // groups) * 3 * 3
            assert got[conv] == grouped * (3 if backward else 1), (backward, got[conv], grouped)
    with torch.device("meta"):
        meta = nets(tnn, groups)
    assert per_module(meta, True, "meta") == per_module(ours, True)
print("ok", expected[("2d", "Global")])
"""


@pytest.mark.parametrize("order", ["tritonnet first", "flop_counter first"])
def test_flop_counter_counts_convolutions_and_linear_layers(order):
    """torch.utils.flop_counter.FlopCounterMode (how training scripts measure a model's flops
    and MFU) counted 0 flops for tritonnet's convolutions and linear layers: it has formulas
    for aten ops only. The conv and linear operators (forward, input and weight gradients,
    conv_transpose2d) now register torch's formulas, so a model of tritonnet layers counts,
    module by module, forward and backward, what the same torch.nn model counts, on real and
    meta tensors. Whichever is imported first: importing torch.utils.flop_counter imports
    Triton, which `import tritonnet` must not, so the formulas go in when it is imported.
    For a grouped conv's weight gradient ours counts by group; torch's counts groups times
    more."""
    modules = ["tritonnet", "torch.utils.flop_counter"]
    if order != "tritonnet first":
        modules.reverse()
    r = subprocess.run([sys.executable, "-c", _FLOPS_CHECK, *modules], capture_output=True, text=True,
                       env={**os.environ, "TRITONNET_BACKEND": "reference"}, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stdout[-2000:] + r.stderr[-3000:]


def test_a_flop_counter_of_another_shape_gets_a_warning_not_an_error(monkeypatch):
    """The formulas go into torch.utils.flop_counter from inside its import (see above): a
    torch whose module reads otherwise must still import, with a warning, not an exception
    raised from a module tritonnet does not own."""
    import types

    from tritonnet.ops import _primitive

    other = types.ModuleType("torch.utils.flop_counter")
    other.flop_registry = {}  # and no register_flop_formula
    monkeypatch.setitem(sys.modules, "torch.utils.flop_counter", other)
    with pytest.warns(UserWarning, match="FlopCounterMode will not count tritonnet's operators"):
        _primitive._register_flops()
