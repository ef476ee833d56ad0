"""conv: tritonnet's conv2d primitives (implicit-GEMM Triton kernels) against cuDNN, and
optionally torch.compile of the same calls, on the conv layers of LeNet-5 and ResNet-18, and
conv_transpose2d on the up-sampling layers of a DCGAN generator and a U-Net decoder.

Modes, each timed on its own (the issue asks for every one of them against cuDNN):
  mode              computes                  tritonnet                       torch (cuDNN)
  forward           y = conv2d(x, w) + b      tritonnet::conv2d               F.conv2d
  input-grad        dx from dy and w          tritonnet::conv2d_input_grad    convolution_backward,
                                                                              mask [1, 0, 0]
  weight-grad       dw (and db with a bias)   tritonnet::conv2d_weight_grad   convolution_backward,
                    from dy and x                                             mask [0, 1, bias]
  forward+backward  y, then dx, dw (and db    tritonnet.functional.conv2d     F.conv2d
                    with a bias) by autograd
torch's gradients are torch.ops.aten.convolution_backward, the cuDNN call autograd makes.
A transposed case (``Case.transposed``) times conv_transpose2d the same way: its forward is
tritonnet::conv_transpose2d (conv2d's input-grad kernel, the bias in its epilogue) against
F.conv_transpose2d; its input grad is a conv2d forward (tritonnet::conv2d); its weight grad
tritonnet::conv2d_weight_grad with the roles of x and dy swapped, and db a sum of dy, as
autograd runs them; torch's, convolution_backward with transposed=True.
Both sides sum db in the weight-grad mode exactly when the case has a bias (ResNet's convs have none).
The forward runs on inputs that require grad (a training step's forward); the gradient
primitives on detached tensors. cudnn.benchmark is on (the suite sets it); TF32 per
harness.precision, the same on both sides.

GEMM view (M, N, K), G groups, Cg = C_in/G:
  forward       M = N*OH*OW, N = C_out/G, K = Cg*KH*KW
  input-grad    M = N*H*W,   N = Cg,      K = C_out/G*KH*KW (the transposed convolution)
  weight-grad   M = C_out/G, N = Cg*KH*KW, K = N*OH*OW
FLOPs: 2*N*OH*OW*C_out*Cg*KH*KW for each of the three (the useful multiply-adds; a stride-2
input grad issues more, see bench/NOTES.md), 3x that for forward+backward; the bias add and
the bias-gradient sum are not counted. A transposed case is the adjoint of a conv from its
output to its input: 2*N*H*W*C_in*(C_out/G)*KH*KW.
Fewest bytes, each input read once and each output written once:
  forward           read x, w, b; write y
  input-grad        read dy, w; write dx
  weight-grad       read dy, x; write dw, db (db only with a bias)
  forward+backward  read x, w, b, dy; write y, dx, dw, db (b and db only with a bias)

Layouts: "contiguous" (NCHW) and "channels_last"; x, w and dy all in that memory format
(``model.to(memory_format=torch.channels_last)`` converts the weights too). The label carries
the layout (".cl"), so the short table and the plot tell the two apart.

Before timing, each provider's forward, both gradients and the forward+backward are checked
against float64 on the same inputs (harness.TOLERANCE); a provider that fails any is recorded
with check=FAIL and not timed.

Run order (a run stopped by its budget loses the end of this list, see ``plan``): the quick
cases in bf16 channels_last, then the issue's target (bf16 channels_last ResNet-18 at batch
32, then 128), then the quick cases in the other dtypes, then everything else.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .harness import DTYPES, TOLERANCE, Recorder, precompile, rel_err, run_step, synchronize
from .harness import select_cases as harness_select

OP = "conv"
LAYOUTS = ("channels_last", "contiguous")
MODES = ("forward", "input-grad", "weight-grad", "forward+backward")
PROVIDERS = ("tritonnet", "torch", "torch-compile")
DEFAULT_PROVIDERS = ("tritonnet", "torch")
# the order of precisions: bf16, then fp32 with TF32 on, then off; fp16 last
DTYPE_PRIORITY = ("bf16", "fp32-tf32", "fp32", "fp16")
TARGET_NET, TARGET_BATCHES = "resnet18", (32, 128)


@dataclass(frozen=True)
class Case:
    net: str
    layer: str
    N: int
    C_in: int
    C_out: int
    H: int
    W: int
    KH: int
    KW: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    bias: bool = False
    quick: bool = False  # part of --quick
    transposed: bool = False  # conv_transpose2d (x: its input, y: its output)
    output_padding: int = 0  # transposed only

    @property
    def label(self) -> str:
        return f"{self.net}.{self.layer}.b{self.N}"

    @property
    def Cg(self) -> int:
        return self.C_in // self.groups

    def _out(self, size: int, k: int) -> int:
        if self.transposed:
            return (size - 1) * self.stride - 2 * self.padding + k + self.output_padding
        return (size + 2 * self.padding - k) // self.stride + 1

    @property
    def OH(self) -> int:
        return self._out(self.H, self.KH)

    @property
    def OW(self) -> int:
        return self._out(self.W, self.KW)

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        """conv2d's (C_out, C_in/G, KH, KW); conv_transpose2d's (C_in, C_out/G, KH, KW)."""
        if self.transposed:
            return (self.C_in, self.C_out // self.groups, self.KH, self.KW)
        return (self.C_out, self.Cg, self.KH, self.KW)

    @property
    def shape(self) -> str:
        w = "x".join(map(str, self.w_shape))
        s = f"x={self.N}x{self.C_in}x{self.H}x{self.W},w={w},s={self.stride},p={self.padding}"
        if self.transposed:
            s = "T:" + s + (f",op={self.output_padding}" if self.output_padding else "")
        return s + (f",g={self.groups}" if self.groups > 1 else "")

    def conv_args(self):
        """(stride, padding, dilation, groups) as the custom ops and aten take them."""
        return [self.stride] * 2, [self.padding] * 2, [1, 1], self.groups


# net, layer, C_in, C_out, H (= W), kernel, stride, padding, bias; square inputs and kernels
LAYERS = [
    # ResNet-18 on 224x224 (torchvision's layout, convs without bias): the 7x7 stem; per stage
    # the 3x3 that keeps the size (layer1's 4 convs, 3 of each later stage's 4 share it), the
    # first block's stride-2 3x3 and its 1x1 stride-2 downsample
    ("resnet18", "stem", 3, 64, 224, 7, 2, 3, False),
    ("resnet18", "layer1", 64, 64, 56, 3, 1, 1, False),
    ("resnet18", "layer2.s2", 64, 128, 56, 3, 2, 1, False),
    ("resnet18", "layer2.down", 64, 128, 56, 1, 2, 0, False),
    ("resnet18", "layer2", 128, 128, 28, 3, 1, 1, False),
    ("resnet18", "layer3.s2", 128, 256, 28, 3, 2, 1, False),
    ("resnet18", "layer3.down", 128, 256, 28, 1, 2, 0, False),
    ("resnet18", "layer3", 256, 256, 14, 3, 1, 1, False),
    ("resnet18", "layer4.s2", 256, 512, 14, 3, 2, 1, False),
    ("resnet18", "layer4.down", 256, 512, 14, 1, 2, 0, False),
    ("resnet18", "layer4", 512, 512, 7, 3, 1, 1, False),
    # LeNet-5 on 32x32, no padding, with bias: 1 -> 6 (28x28 out), pool, 6 -> 16 (10x10 out)
    ("lenet5", "conv1", 1, 6, 32, 5, 1, 0, True),
    ("lenet5", "conv2", 6, 16, 14, 5, 1, 0, True),
]
BATCHES = (32, 128, 1)
# --quick: a stride-1 and a stride-2 3x3 at batch 32 (two compile specialisations of each kernel)
QUICK = {("layer1", 32), ("layer2.s2", 32)}

CASES = [
    Case(net, layer, n, cin, cout, h, h, k, k, s, p, bias=bias, quick=(layer, n) in QUICK)
    for n in BATCHES
    for net, layer, cin, cout, h, k, s, p, bias in LAYERS
]

# depthwise conv2d (groups = C: the stencil kernels, kernels/depthwise.py): net, layer, batch,
# channels, H (= W), kernel, stride, padding. After the other conv2d cases, never --quick.
DEPTHWISE_LAYERS = [
    # MobileNetV2 at 224x224, batch 128: the 3x3 of a stride-1 block at 56x56 (144 channels)
    # and of the stride-2 block that enters it (96 channels at 112x112)
    ("mobilenetv2", "dw.56", 128, 144, 56, 3, 1, 1),
    ("mobilenetv2", "dw.s2", 128, 96, 112, 3, 2, 1),
]
CASES += [
    Case(net, layer, n, c, c, h, h, k, k, s, p, groups=c)
    for net, layer, n, c, h, k, s, p in DEPTHWISE_LAYERS
]

# conv_transpose2d: net, layer, batch, C_in, C_out, H (= W) of its input, kernel, stride, padding,
# bias. After every conv2d case in the run order (plan's last tier), never --quick.
TRANSPOSED_LAYERS = [
    # the PyTorch DCGAN tutorial's generator (nz 100, ngf 64, 64x64 images, batch 128):
    # 1x1 -> 4x4, then 4x4 stride-2 up-sampling convs, no bias (batch norm follows)
    ("dcgan", "up0", 128, 100, 512, 1, 4, 1, 0, False),
    ("dcgan", "up1", 128, 512, 256, 4, 4, 2, 1, False),
    ("dcgan", "up2", 128, 256, 128, 8, 4, 2, 1, False),
    ("dcgan", "up3", 128, 128, 64, 16, 4, 2, 1, False),
    ("dcgan", "rgb", 128, 64, 3, 32, 4, 2, 1, False),
    # a U-Net decoder on 256x256 inputs (base width 64): 2x2 stride-2 up-convs with a bias
    ("unet", "up1", 16, 1024, 512, 16, 2, 2, 0, True),
    ("unet", "up2", 16, 512, 256, 32, 2, 2, 0, True),
    ("unet", "up3", 16, 256, 128, 64, 2, 2, 0, True),
    ("unet", "up4", 16, 128, 64, 128, 2, 2, 0, True),
]
CASES += [
    Case(net, layer, n, cin, cout, h, h, k, k, s, p, bias=bias, transposed=True)
    for net, layer, n, cin, cout, h, k, s, p, bias in TRANSPOSED_LAYERS
]

_GEMMS = {"forward": 1, "input-grad": 1, "weight-grad": 1, "forward+backward": 3}


def flops(case: Case, mode: str) -> int:
    """2*N*OH*OW*C_out*Cg*KH*KW per GEMM-equivalent: 1 per primitive, 3 for both passes
    (transposed: 2*N*H*W*C_in*(C_out/G)*KH*KW, the conv from its output to its input)."""
    c = case
    if c.transposed:
        return 2 * c.N * c.H * c.W * c.C_in * (c.C_out // c.groups) * c.KH * c.KW * _GEMMS[mode]
    return 2 * c.N * c.OH * c.OW * c.C_out * c.Cg * c.KH * c.KW * _GEMMS[mode]


def min_bytes(case: Case, mode: str, itemsize: int) -> int:
    """Each input read once, each output written once (see the module docstring)."""
    c = case
    x, w, y = c.N * c.C_in * c.H * c.W, math.prod(c.w_shape), c.N * c.C_out * c.OH * c.OW
    b = c.C_out if c.bias else 0
    elems = {
        "forward": x + w + b + y,
        "input-grad": y + w + x,
        "weight-grad": y + x + w + b,  # db only with a bias, on both sides
        "forward+backward": (x + w + b + y) + (y + x + w + b),
    }[mode]
    return elems * itemsize


# ---------------------------------------------------------------------------------------------
# providers: per mode a function (x, w, b, dy) -> outputs; forward+backward returns y (the
# caller runs its backward)


def _torch_calls(case: Case) -> dict:
    stride, padding, dilation, groups = case.conv_args()
    conv_bwd = torch.ops.aten.convolution_backward
    tr, out_pad = case.transposed, [case.output_padding] * 2

    def forward(x, w, b, dy):
        if tr:
            return F.conv_transpose2d(x, w, b, stride, padding, out_pad, groups, dilation)
        return F.conv2d(x, w, b, stride, padding, dilation, groups)

    def input_grad(x, w, b, dy):
        return conv_bwd(dy, x, w, None, stride, padding, dilation, tr, out_pad, groups,
                        [True, False, False])[0]

    def weight_grad(x, w, b, dy):
        _, dw, db = conv_bwd(dy, x, w, [case.C_out] if case.bias else None, stride, padding,
                             dilation, tr, out_pad, groups, [False, True, case.bias])
        return dw, db

    return {"forward": forward, "input-grad": input_grad, "weight-grad": weight_grad,
            "forward+backward": forward}


def _tritonnet_calls(case: Case) -> dict:
    import tritonnet.functional
    from tritonnet.ops import conv as ops

    if case.transposed:
        return _tritonnet_transposed(case)
    stride, padding, dilation, groups = case.conv_args()

    def forward(x, w, b, dy):
        return ops.conv2d(x, w, b, stride, padding, dilation, groups, "none")

    def input_grad(x, w, b, dy):
        return ops.conv2d_input_grad(dy, w, list(x.shape), stride, padding, dilation, groups)

    def weight_grad(x, w, b, dy):
        return ops.conv2d_weight_grad(dy, x, list(w.shape), stride, padding, dilation, groups,
                                      case.bias)

    def train(x, w, b, dy):
        return tritonnet.functional.conv2d(x, w, b, case.stride, case.padding, 1, groups)

    return {"forward": forward, "input-grad": input_grad, "weight-grad": weight_grad,
            "forward+backward": train}


def _tritonnet_transposed(case: Case) -> dict:
    """conv_transpose2d's forward primitive, and its gradients as its autograd computes them
    (tritonnet/ops/conv.py ``_backward_t``)."""
    import tritonnet.functional
    from tritonnet.ops import conv as ops

    stride, padding, dilation, groups = case.conv_args()

    def forward(x, w, b, dy):
        return ops.conv_transpose2d(x, w, b, [case.N, case.C_out, case.OH, case.OW], stride, padding,
                                    dilation, groups)

    def input_grad(x, w, b, dy):
        return ops.conv2d(dy, w, None, stride, padding, dilation, groups, "none")

    def weight_grad(x, w, b, dy):
        dw, _ = ops.conv2d_weight_grad(x, dy, list(w.shape), stride, padding, dilation, groups, False)
        return dw, dy.sum((0, 2, 3)) if case.bias else None

    def train(x, w, b, dy):
        return tritonnet.functional.conv_transpose2d(x, w, b, case.stride, case.padding,
                                                     case.output_padding, groups)

    return {"forward": forward, "input-grad": input_grad, "weight-grad": weight_grad,
            "forward+backward": train}


def make_provider(name: str, case: Case) -> dict:
    """{mode: call}. torch-compile compiles torch's calls afresh (dynamo reset) for every case,
    under the TF32 setting in force."""
    if name == "tritonnet":
        return _tritonnet_calls(case)
    if name == "torch":
        return _torch_calls(case)
    if name == "torch-compile":
        torch._dynamo.reset()
        calls = _torch_calls(case)
        compiled = {m: torch.compile(f, dynamic=False) for m, f in calls.items() if m != "forward+backward"}
        compiled["forward+backward"] = compiled["forward"]
        return compiled
    raise ValueError(f"conv: unknown provider {name!r}; expected one of {PROVIDERS}")


# ---------------------------------------------------------------------------------------------
# one case


def _inputs(case: Case, layout: str, dtype: torch.dtype, device, gen: torch.Generator):
    """x, w, b (None without a bias) and dy: fresh random data in ``layout``, never zeros."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    c = case

    def randn(*shape, scale=1.0):
        t = (torch.randn(*shape, device=device, generator=gen) * scale).to(dtype)
        return t.contiguous(memory_format=fmt) if len(shape) == 4 else t

    x = randn(c.N, c.C_in, c.H, c.W)
    # y ~ O(1): each output sums Cg*KH*KW products (transposed: C_in/G*KH*KW/stride^2 of them)
    fan_in = c.Cg * c.KH * c.KW / (c.stride**2 if c.transposed else 1)
    w = randn(*c.w_shape, scale=1 / math.sqrt(max(fan_in, 1)))
    b = randn(c.C_out, scale=0.1) if c.bias else None
    dy = randn(c.N, c.C_out, c.OH, c.OW)
    return x, w, b, dy


def _reference(case: Case, x, w, b, dy) -> dict:
    """y, dx, dw, db in float64 from the same (rounded) inputs; cuDNN's algorithm search off
    (float64 is only the yardstick, not timed)."""
    stride, padding, dilation, groups = case.conv_args()
    xd, wd, dyd = x.double(), w.double(), dy.double()
    bd = b.double() if b is not None else None
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        out_pad = [case.output_padding] * 2
        if case.transposed:
            y = F.conv_transpose2d(xd, wd, bd, stride, padding, out_pad, groups, dilation)
        else:
            y = F.conv2d(xd, wd, bd, stride, padding, dilation, groups)
        dx, dw, db = torch.ops.aten.convolution_backward(
            dyd, xd, wd, [case.C_out], stride, padding, dilation, case.transposed, out_pad, groups,
            [True, True, True],
        )
    finally:
        torch.backends.cudnn.benchmark = saved
    return {"y": y, "dx": dx, "dw": dw, "db": db}


def _leaves(x, w, b):
    """Copies of x, w, b that require grad (the leaves of a training step)."""
    return [t.detach().clone().requires_grad_() if t is not None else None for t in (x, w, b)]


def _outputs(calls, mode, x, w, b, dy) -> dict:
    """One call of ``mode``: {name: tensor} to compare with the reference."""
    if mode == "forward":
        return {"y": calls[mode](*_leaves(x, w, b), dy)}
    if mode == "input-grad":
        return {"dx": calls[mode](x, w, b, dy)}
    if mode == "weight-grad":
        dw, db = calls[mode](x, w, b, dy)
        return {"dw": dw, "db": db} if b is not None else {"dw": dw}
    xl, wl, bl = _leaves(x, w, b)
    y = calls[mode](xl, wl, bl, dy)
    y.backward(dy)
    out = {"y": y, "dx": xl.grad, "dw": wl.grad}
    if bl is not None:
        out["db"] = bl.grad
    return out


def _check(calls, x, w, b, dy, ref, device) -> dict:
    """Each mode once: {mode: (max rel. error, {output: error}, wall s of that first call)}."""
    result = {}
    for mode in MODES:
        synchronize(device)
        t0 = time.perf_counter()
        out = _outputs(calls, mode, x, w, b, dy)
        synchronize(device)
        first = time.perf_counter() - t0
        errs = {k: rel_err(v, ref[k]) for k, v in out.items()}
        result[mode] = (max(errs.values()), errs, first)
    return result


def _timed(calls, mode, x, w, b, dy):
    """(function to time, tensors whose .grad do_bench resets between calls)."""
    if mode == "forward":
        leaves = _leaves(x, w, b)
        return (lambda: calls[mode](*leaves, dy)), None
    if mode in ("input-grad", "weight-grad"):
        return (lambda: calls[mode](x, w, b, dy)), None
    leaves = _leaves(x, w, b)
    return (lambda: calls[mode](*leaves, dy).backward(dy)), [t for t in leaves if t is not None]


def layout_label(case: Case, layout: str) -> str:
    return case.label + (".cl" if layout == "channels_last" else "")


def run_case(rec: Recorder, case: Case, layout: str, dtype: str, providers, device, gen) -> None:
    """Check, then time, every provider on one (case, layout, dtype); appends rows to ``rec``."""
    x, w, b, dy = _inputs(case, layout, DTYPES[dtype][0], device, gen)
    ref = _reference(case, x, w, b, dy)
    label = layout_label(case, layout)
    key = dict(op=OP, shape=case.shape, dtype=dtype, layout=layout, label=label)
    what = f"{OP} {dtype} {label} ({case.shape})"
    tol = TOLERANCE[dtype]
    good = {}
    for p in providers:
        try:
            calls = make_provider(p, case)
            precompile(rec, key, what, p, device, _check, calls, x, w, b, dy, ref, device)
            checks = _check(calls, x, w, b, dy, ref, device)
        except Exception as e:  # one broken provider must not end the run
            rec.failures.append(f"{what} {p}: {type(e).__name__}: {e}")
            rec.log(f"  ERROR {what} {p}: {type(e).__name__}: {e}")
            continue
        for mode, (err, _, first) in checks.items():
            check = "ok" if err <= tol else "FAIL"
            for metric, value, unit in [("rel_err", err, ""), ("first_call", first, "s")]:
                rec.add(**key, provider=p, mode=mode, metric=metric, p50=value, unit=unit,
                        rel_err=err, check=check)
        bad = {m: c for m, c in checks.items() if not c[0] <= tol}
        if bad:
            detail = "; ".join(
                f"{m}: " + ", ".join(f"{k} {e:.2e}" for k, e in c[1].items()) for m, c in bad.items()
            )
            worst = max(c[0] for c in bad.values())
            rec.failures.append(f"{what} {p}: relative error {worst:.3g} > {tol:g} ({detail})")
            rec.log(f"  FAIL {what} {p}: relative error {worst:.3g} ({detail}); not timed")
            continue
        good[p] = (calls, {m: c[0] for m, c in checks.items()})
    del ref  # the float64 copies: not needed while timing

    times = {p: {} for p in good}
    itemsize = x.element_size()
    for mode in MODES:
        for p, (calls, errs) in good.items():  # providers alternate within a mode
            try:
                f, grads = _timed(calls, mode, x, w, b, dy)
                times[p][mode] = rec.measure(
                    f, **key, provider=p, mode=mode, grad_to_none=grads, rel_err=errs[mode],
                    check="ok", flops=flops(case, mode), nbytes=min_bytes(case, mode, itemsize),
                )
            except Exception as e:
                rec.failures.append(f"{what} {p} {mode}: {type(e).__name__}: {e}")
                rec.log(f"  ERROR {what} {p} {mode}: {type(e).__name__}: {e}")
    for p, t in times.items():
        ms = "  ".join(f"{m} {t[m] * 1e3:8.1f} us" for m in MODES if m in t)
        err = max(good[p][1].values())
        rec.log(f"  {dtype:9} {label:29} {p:13} err {err:.1e}  {ms}")


# ---------------------------------------------------------------------------------------------
# the op's benchmark


def select_cases(cases=None, shapes=None) -> list[Case]:
    """--shapes keeps cases whose label contains any given word (resnet18, lenet5, layer3,
    down, s2, b32, ...) or whose shape equals one."""
    return harness_select(CASES if cases is None else cases, shapes=shapes)


def _first(values, priority):
    return sorted(values, key=lambda v: priority.index(v) if v in priority else len(priority))[0]


def plan(cases, dtypes, layouts=LAYOUTS, quick=False) -> list[tuple[str, str, Case]]:
    """(dtype, layout, case) in run order. With d0, l0 the first dtype and layout by priority
    (bf16 and channels_last when selected):
      0. the quick cases in d0, l0
      1. the target: resnet18 at batch 32, then 128, in d0, l0
      2. the quick cases in l0 in the other dtypes (each dtype gets numbers early)
      3. the rest: by dtype (bf16, fp32-tf32, fp32, fp16), layout, then case order
    --quick keeps step 0 only: every dtype compiles its own ~25 kernel configs per
    specialisation, too much for a quick run; pass --dtypes to choose another."""
    cases, dtypes, layouts = list(cases), list(dtypes), list(layouts)
    if not (cases and dtypes and layouts):
        return []
    d0, l0 = _first(dtypes, DTYPE_PRIORITY), _first(layouts, LAYOUTS)

    def tier(d, l, c):
        first = d == d0 and l == l0
        if c.quick and first:
            return 0
        if first and c.net == TARGET_NET and c.N in TARGET_BATCHES:
            return 1
        return 2 if c.quick and l == l0 else 3

    def rank(d):
        return DTYPE_PRIORITY.index(d) if d in DTYPE_PRIORITY else len(DTYPE_PRIORITY)

    items = [(tier(d, l, c), rank(d), layouts.index(l), i, d, l, c)
             for i, c in enumerate(cases) for d in dtypes for l in layouts]
    if quick:
        items = [it for it in items if it[0] == 0]
    return [(d, l, c) for *_, d, l, c in sorted(items, key=lambda it: it[:4])]


def run(rec: Recorder, *, device="cuda", dtypes=tuple(DTYPES), providers=DEFAULT_PROVIDERS,
        quick=False, shapes=None, cases=None, layouts=LAYOUTS, deadline=None, seed=0) -> None:
    """Every selected (dtype, layout, case) in ``plan`` order; a run stopped by its
    ``deadline`` (time.monotonic()) lists the rest as skipped."""
    from tritonnet import use_backend

    order = plan(select_cases(cases, shapes), dtypes, layouts, quick)
    gen = torch.Generator(device=device).manual_seed(seed)
    with use_backend("triton"):  # tritonnet's side runs the Triton kernels, never the reference
        for dtype, layout, case in order:
            run_step(rec, f"{OP} {dtype} {layout_label(case, layout)}", dtype, device, deadline,
                     lambda: run_case(rec, case, layout, dtype, providers, device, gen))  # noqa: B023


# ---------------------------------------------------------------------------------------------
# the number


def headline(df, dtype="bf16", layout="channels_last") -> list[str]:
    """The issue's target as lines of text: per mode, the geomean over the ResNet-18 cases
    measured in ``dtype`` / ``layout`` of tritonnet's speed over cuDNN's (torch time /
    tritonnet time, median), overall and per batch. [] when no such case was timed."""
    d = df[(df["op"] == OP) & (df["metric"] == "time") & (df["dtype"] == dtype)
           & (df["layout"] == layout) & df["label"].fillna("").str.startswith(TARGET_NET + ".")]
    if d.empty:
        return []
    t = d.pivot_table(index=["label", "mode"], columns="provider", values="p50", aggfunc="first")
    if not {"tritonnet", "torch"} <= set(t.columns):
        return []
    ratio = (t["torch"] / t["tritonnet"]).dropna()
    layers = sum(net == TARGET_NET for net, *_ in LAYERS)
    lines = [f"conv, issue 3's target (geomean >= 1.0x): tritonnet speed / cuDNN speed over the "
             f"ResNet-18 layers in {dtype} {layout}; n = cases timed, of {layers} layers x "
             f"{len(BATCHES)} batches"]
    for mode in MODES:
        r = ratio[ratio.index.get_level_values("mode") == mode]
        if r.empty:
            continue
        batch = r.index.get_level_values("label").map(lambda s: int(re.search(r"\.b(\d+)", s)[1]))
        parts = [f"b{n} {geomean(r[batch == n]):.3g}x n={int((batch == n).sum())}"
                 for n in sorted(set(batch))]
        lines.append(f"  {mode:17} {geomean(r):.3g}x n={len(r)}  ({', '.join(parts)})")
        stem = r.index.get_level_values("label").str.startswith(f"{TARGET_NET}.stem.")
        if mode == "input-grad" and stem.any() and not stem.all():
            # the RGB image never needs a gradient: training runs every gradient but this one
            lines.append(f"  {'':17} {geomean(r[~stem]):.3g}x n={int((~stem).sum())}  without the stem, "
                         f"whose input gradient training never computes")
    return lines


def geomean(values) -> float:
    v = [float(x) for x in values]
    return math.exp(sum(math.log(x) for x in v) / len(v)) if v else math.nan
