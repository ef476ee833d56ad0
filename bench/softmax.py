"""softmax: tritonnet's softmax, log_softmax and cross-entropy kernels against
torch.nn.functional's (PyTorch's CUDA kernels), and optionally torch.compile of the same call,
forward, backward and both.

Memory-bound ops: no FLOP count, GB/s over the fewest bytes, as a fraction of the copy
bandwidth measured in the same run. Fewest bytes, with x the input (logits), y the output, t
the int64 class indices of cross-entropy (one per row; its output is one number):
  softmax, log_softmax   forward: read x, write y;  backward: read dy and y, write dx
  cross_entropy          forward: read x and t;     backward: read x and t, write dx
Cases: the classifier heads of LeNet-5 and ResNet-18 at batch 128 (launch-bound: a few
microseconds), a per-pixel loss over a segmentation map (NCHW and channels_last: the class
axis strided, and contiguous), and large rows. Why this exists: bench/NOTES.md, "Confident
rows in log_softmax and cross-entropy" (the precision of confident rows costs instructions;
this is where that cost shows, or not). fp32-tf32 is not run (no matmul in these ops).

Before timing, each provider's output and input gradient are checked against float64 on the
same inputs (harness.TOLERANCE); a provider that fails is recorded with check=FAIL, not timed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .harness import DTYPES, MODES, Recorder, check_one, check_then_time, quick_first, run_step, timed_one
from .harness import select_cases as harness_select

OP = "softmax"
PROVIDERS = ("tritonnet", "torch", "torch-compile")
DEFAULT_PROVIDERS = ("tritonnet", "torch")


@dataclass(frozen=True)
class Case:
    label: str
    fn: str  # softmax, log_softmax or cross_entropy (over dim 1)
    shape: tuple  # (N, C) or (N, C, H, W)
    layout: str = "contiguous"  # or channels_last (4-D)
    quick: bool = False  # part of --quick

    @property
    def name(self) -> str:
        return f"{self.fn}({'x'.join(map(str, self.shape))})"


CASES = [
    # classifier heads at batch 128: LeNet-5 (10 classes), ResNet-18 on ImageNet (1000)
    Case("lenet.ce", "cross_entropy", (128, 10)),
    Case("resnet.ce", "cross_entropy", (128, 1000), quick=True),
    Case("resnet.log_softmax", "log_softmax", (128, 1000)),
    # a per-pixel loss: 21 classes (Pascal VOC) over 8 maps of 512 x 512
    Case("seg.ce", "cross_entropy", (8, 21, 512, 512), quick=True),
    Case("seg.ce", "cross_entropy", (8, 21, 512, 512), layout="channels_last", quick=True),
    # large rows: 65536 x 1000 (ImageNet classes), 8192 x 32000 (past one block on a GPU)
    Case("large.softmax", "softmax", (65536, 1000), quick=True),
    Case("large.log_softmax", "log_softmax", (65536, 1000), quick=True),
    Case("large.ce", "cross_entropy", (65536, 1000), quick=True),
    Case("long.log_softmax", "log_softmax", (8192, 32000)),
    Case("long.ce", "cross_entropy", (8192, 32000)),
]


def min_bytes(case: Case, mode: str, itemsize: int) -> int:
    """Each tensor read or written once (see the module docstring)."""
    n = 1
    for s in case.shape:
        n *= s
    if case.fn == "cross_entropy":
        t = n // case.shape[1] * 8
        fwd, bwd = n * itemsize + t, 2 * n * itemsize + t
    else:
        fwd, bwd = 2 * n * itemsize, 3 * n * itemsize
    return {"forward": fwd, "backward": bwd, "forward+backward": fwd + bwd}[mode]


# ---------------------------------------------------------------------------------------------
# providers


def _call(module, case: Case, target):
    fn = getattr(module, case.fn)
    if case.fn == "cross_entropy":
        return lambda x: fn(x, target)
    return lambda x: fn(x, 1)


def make_provider(name: str, case: Case, target=None):
    """A function x -> y. torch-compile compiles afresh (dynamo reset) for every case."""
    if name == "tritonnet":
        import tritonnet.functional

        return _call(tritonnet.functional, case, target)
    if name in ("torch", "torch-compile"):
        call = _call(F, case, target)
        if name == "torch":
            return call
        torch._dynamo.reset()
        return torch.compile(call, dynamic=False)
    raise ValueError(f"softmax: unknown provider {name!r}; expected one of {PROVIDERS}")


# ---------------------------------------------------------------------------------------------
# one case


def _inputs(case: Case, dtype: torch.dtype, device, gen: torch.Generator):
    """Logits of a trained classifier's spread (a few units), and class-index targets."""
    x = (3 * torch.randn(case.shape, device=device, generator=gen)).to(dtype)
    if case.layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    target = None
    if case.fn == "cross_entropy":
        N, C, *rest = case.shape
        target = torch.randint(0, C, (N, *rest), device=device, generator=gen)
    return x.requires_grad_(), target


def run_case(rec: Recorder, case: Case, dtype: str, providers, device, gen) -> None:
    """Check, then time, every provider on one (case, dtype); appends rows to ``rec``."""
    x, target = _inputs(case, DTYPES[dtype][0], device, gen)
    torch_fn = _call(F, case, target)
    with torch.no_grad():
        out = torch_fn(x)
    dy = torch.randn(out.shape, device=device, generator=gen).to(x.dtype)
    xd = x.detach().double().requires_grad_()
    yd = torch_fn(xd)
    yd.backward(dy.double())
    ref = (yd.detach(), xd.grad)
    label = case.label if case.layout == "contiguous" else f"{case.label}.cl"
    check_then_time(
        rec, dict(op=OP, shape=case.name, dtype=dtype, layout=case.layout, label=label),
        f"{OP} {dtype} {label}", providers, device,
        make=lambda p: make_provider(p, case, target),
        check=lambda fn: check_one(fn, x, dy, ref, device),
        timed=lambda fn, mode: timed_one(fn, mode, x, dy),
        extra=lambda mode: dict(nbytes=min_bytes(case, mode, x.element_size())),
        names=["y", "dx"], log_as=f"{dtype:5} {label:21}", modes=MODES,
    )


# ---------------------------------------------------------------------------------------------
# the op's benchmark


def select_cases(cases=None, quick=False, shapes=None) -> list[Case]:
    """This op's cases (or ``cases``) filtered by --quick and --shapes (harness.select_cases)."""
    return harness_select(CASES if cases is None else cases, quick, shapes)


def run(rec: Recorder, *, device="cuda", dtypes=tuple(DTYPES), providers=DEFAULT_PROVIDERS,
        quick=False, shapes=None, cases=None, deadline=None, seed=0) -> None:
    """Every selected (dtype, case); the quick cases of every dtype first, so a run stopped by
    its ``deadline`` (time.monotonic()) loses the extra shapes, not dtypes."""
    from tritonnet import use_backend

    dtypes = [d for d in dtypes if d != "fp32-tf32"]  # the same numbers as fp32 here
    order = quick_first(dtypes, select_cases(cases, quick, shapes))
    gen = torch.Generator(device=device).manual_seed(seed)
    with use_backend("triton"):  # tritonnet's side runs the Triton kernels, never the reference
        for dtype, case in order:
            label = case.label if case.layout == "contiguous" else f"{case.label}.cl"
            run_step(rec, f"{OP} {dtype} {label}", dtype, device, deadline,
                     lambda: run_case(rec, case, dtype, providers, device, gen))  # noqa: B023
