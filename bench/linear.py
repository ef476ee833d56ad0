"""linear: tritonnet.functional.linear (Triton GEMMs) against torch.nn.functional.linear
(cuBLAS), and optionally torch.compile of F.linear, forward, backward and both.

GEMM view, x (M, K), W (N, K), b (N,), dy (M, N):
  forward            y = x W^T + b                     1 GEMM    2*M*N*K flops
  backward           dx = dy W, dW = dy^T x, db = sum  2 GEMMs   4*M*N*K flops
  forward+backward   all of it                         3 GEMMs   6*M*N*K flops
(the bias add and the bias-gradient sum, M*N adds each, are not counted.)
Fewest bytes, each input read once and each output written once:
  forward            read x, W, b; write y
  backward           read dy, W, x; write dx, dW, db
  forward+backward   read x, W, b, dy; write y, dx, dW, db

Before timing, each provider's forward and all three gradients are checked against float64
on the same inputs (harness.TOLERANCE); a provider that fails is recorded with check=FAIL
and not timed. Inputs require grad in every mode (the forward of a training step).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .harness import DTYPES, MODES, Recorder, check_then_time, quick_first, rel_err, run_step, synchronize
from .harness import select_cases as harness_select

OP = "linear"
LAYOUT = "contiguous"  # x (M, K) and W (N, K) row-major, as nn.Linear stores them
PROVIDERS = ("tritonnet", "torch", "torch-compile")
DEFAULT_PROVIDERS = ("tritonnet", "torch")


@dataclass(frozen=True)
class Case:
    label: str
    M: int  # batch
    K: int  # in_features
    N: int  # out_features
    quick: bool = False  # part of --quick

    @property
    def shape(self) -> str:
        return f"M={self.M},K={self.K},N={self.N}"


CASES = [
    # the MLP, batch 128: 64 -> 128 -> 64 -> 10
    Case("mlp.fc1", 128, 64, 128, quick=True),
    Case("mlp.fc2", 128, 128, 64),
    Case("mlp.fc3", 128, 64, 10),
    # LeNet-5's classifier, batch 128: 400 -> 120 -> 84 -> 10
    Case("lenet.fc1", 128, 400, 120, quick=True),
    Case("lenet.fc2", 128, 120, 84),
    Case("lenet.fc3", 128, 84, 10),
    # ResNet's head, batch 128: 512 -> 1000
    Case("resnet.fc", 128, 512, 1000, quick=True),
    # large square GEMMs: where the tensor cores, not launches, set the pace
    Case("square4096", 4096, 4096, 4096, quick=True),
    Case("square8192", 8192, 8192, 8192),
]

_GEMMS = {"forward": 1, "backward": 2, "forward+backward": 3}


def flops(M: int, N: int, K: int, mode: str) -> int:
    """2*M*N*K per GEMM: forward 1 GEMM, backward 2, both 3."""
    return 2 * M * N * K * _GEMMS[mode]


def min_bytes(M: int, N: int, K: int, mode: str, itemsize: int, bias: bool = True) -> int:
    """Each input read once, each output written once (see the module docstring)."""
    x, w, b, y = M * K, N * K, N if bias else 0, M * N
    elems = {
        "forward": x + w + b + y,
        "backward": (y + w + x) + (x + w + b),
        "forward+backward": (x + w + b + y) + (y + x + w + b),
    }[mode]
    return elems * itemsize


# ---------------------------------------------------------------------------------------------
# providers


def _torch_linear(x, w, b):
    return F.linear(x, w, b)


def _tritonnet_linear(x, w, b):
    import tritonnet.functional

    return tritonnet.functional.linear(x, w, b)


def make_provider(name: str):
    """A function (x, w, b) -> y. torch-compile compiles afresh (dynamo reset) so that no
    earlier case's guards or recompile limit apply, under the TF32 setting in force."""
    if name == "tritonnet":
        return _tritonnet_linear
    if name == "torch":
        return _torch_linear
    if name == "torch-compile":
        torch._dynamo.reset()
        return torch.compile(_torch_linear, dynamic=False)
    raise ValueError(f"linear: unknown provider {name!r}; expected one of {PROVIDERS}")


# ---------------------------------------------------------------------------------------------
# one case


def _inputs(case: Case, dtype: torch.dtype, device, gen: torch.Generator):
    M, K, N = case.M, case.K, case.N

    def randn(*shape, scale=1.0):  # fresh random data, never zeros
        return (torch.randn(*shape, device=device, generator=gen) * scale).to(dtype)

    x = randn(M, K).requires_grad_()
    w = randn(N, K, scale=1 / math.sqrt(K)).requires_grad_()  # nn.Linear's scale: y ~ O(1)
    b = randn(N, scale=0.1).requires_grad_()
    dy = randn(M, N)
    return x, w, b, dy


def _reference(x, w, b, dy):
    """(y, dx, dW, db) in float64 from the same (rounded) inputs."""
    xd, wd, bd = (t.detach().double().requires_grad_() for t in (x, w, b))
    y = F.linear(xd, wd, bd)
    y.backward(dy.double())
    return y.detach(), xd.grad, wd.grad, bd.grad


def _check(fn, x, w, b, dy, ref, device):
    """Forward and backward once on copies of the inputs: (max rel. error, errors, wall s)."""
    xs = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    synchronize(device)
    t0 = time.perf_counter()
    y = fn(*xs)
    y.backward(dy)
    synchronize(device)
    first = time.perf_counter() - t0
    errs = [rel_err(o, r) for o, r in zip([y] + [t.grad for t in xs], ref, strict=True)]
    return max(errs), errs, first


def _timed(fn, mode, x, w, b, dy):
    """(function to time, tensors whose .grad do_bench resets between calls)."""
    if mode == "forward":
        return (lambda: fn(x, w, b)), None
    if mode == "backward":
        y = fn(x, w, b)
        return (lambda: y.backward(dy, retain_graph=True)), [x, w, b]
    return (lambda: fn(x, w, b).backward(dy)), [x, w, b]


def run_case(rec: Recorder, case: Case, dtype: str, providers, device, gen) -> None:
    """Check, then time, every provider on one (shape, dtype); appends rows to ``rec``."""
    x, w, b, dy = _inputs(case, DTYPES[dtype][0], device, gen)
    ref = _reference(x, w, b, dy)
    itemsize = x.element_size()
    check_then_time(
        rec, dict(op=OP, shape=case.shape, dtype=dtype, layout=LAYOUT, label=case.label),
        f"{OP} {dtype} {case.label} ({case.shape})", providers, device,
        make=make_provider,
        check=lambda fn: _check(fn, x, w, b, dy, ref, device),
        timed=lambda fn, mode: _timed(fn, mode, x, w, b, dy),
        extra=lambda mode: dict(flops=flops(case.M, case.N, case.K, mode),
                                nbytes=min_bytes(case.M, case.N, case.K, mode, itemsize)),
        names=["y", "dx", "dW", "db"], log_as=f"{dtype:9} {case.label:10}", modes=MODES,
    )


# ---------------------------------------------------------------------------------------------
# the op's benchmark


def select_cases(cases=None, quick=False, shapes=None) -> list[Case]:
    """This op's cases (or ``cases``) filtered by --quick and --shapes (harness.select_cases)."""
    return harness_select(CASES if cases is None else cases, quick, shapes)


def run(rec: Recorder, *, device="cuda", dtypes=tuple(DTYPES), providers=DEFAULT_PROVIDERS,
        quick=False, shapes=None, cases=None, deadline=None, seed=0) -> None:
    """Every selected (dtype, case). The quick cases of every dtype come first, so a run
    stopped by its ``deadline`` (time.monotonic()) loses the extra shapes, not dtypes."""
    from tritonnet import use_backend

    order = quick_first(dtypes, select_cases(cases, quick, shapes))
    gen = torch.Generator(device=device).manual_seed(seed)
    with use_backend("triton"):  # tritonnet's side runs the Triton kernels, never the reference
        for dtype, case in order:
            run_step(rec, f"{OP} {dtype} {case.label}", dtype, device, deadline,
                     lambda: run_case(rec, case, dtype, providers, device, gen))  # noqa: B023
