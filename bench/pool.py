"""pool: tritonnet's pooling and nearest-upsampling kernels against torch.nn.functional's
(PyTorch's CUDA kernels), and optionally torch.compile of the same call, forward, backward and
both, NCHW and channels_last.

Memory-bound ops: no FLOP count, GB/s over the fewest bytes, as a fraction of the copy
bandwidth measured in the same run (a 1 GiB copy) and of a copy of the same bytes timed the
same way (provider ``copy``, the table's frac_copy): a case of a few MB (LeNet's pools) pays a
launch and a ramp-up that the 1 GiB copy does not, and the same-size copy pays them too. The
table ends with the issue's target (``headline``). Fewest bytes, with x the input, y the output, i the int64
indices max pooling keeps for its backward (inputs require grad in every mode, so both
providers write them):
  forward            read x; write y (and i)
  backward           read dy (and i); write dx
  forward+backward   both of the above
Cases: the pooling layers of LeNet-5 and ResNet-18 at batch 128, global pools of large planes
(squeeze-and-excitation, DeepLab's image pooling) and PSPNet's few large bins, nearest x2
upsampling of a decoder, and large bandwidth-bound tensors. fp32-tf32 is not run (no matmul in these ops).

Before timing, each provider's output and input gradient are checked against float64 on the
same inputs (harness.TOLERANCE); a provider that fails is recorded with check=FAIL, not timed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .harness import (
    DTYPES,
    MODE_SHORT,
    MODES,
    Recorder,
    check_one,
    check_then_time,
    quick_first,
    run_step,
    timed_one,
)
from .harness import select_cases as harness_select

OP = "pool"
LAYOUTS = ("nchw", "channels_last")
PROVIDERS = ("tritonnet", "torch", "torch-compile")
DEFAULT_PROVIDERS = ("tritonnet", "torch")
MAX_OPS = ("max_pool2d", "adaptive_max_pool2d")


@dataclass(frozen=True)
class Case:
    label: str
    fn: str  # the torch.nn.functional / tritonnet.functional name
    N: int
    C: int
    H: int
    W: int
    kwargs: dict = field(default_factory=dict, hash=False)
    quick: bool = False  # part of --quick

    @property
    def shape(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.fn}(N={self.N},C={self.C},H={self.H},W={self.W},{args})"


CASES = [
    # LeNet-5, batch 128: 2x2 subsampling after conv1 (6x28x28) and conv2 (16x10x10)
    Case("lenet.pool1", "max_pool2d", 128, 6, 28, 28, {"kernel_size": 2}, quick=True),
    Case("lenet.pool2", "max_pool2d", 128, 16, 10, 10, {"kernel_size": 2}),
    Case("lenet.avgpool1", "avg_pool2d", 128, 6, 28, 28, {"kernel_size": 2}),
    # ResNet-18, batch 128: the stem's 3x3/2 max pool and the head's global average pool
    Case("resnet.maxpool", "max_pool2d", 128, 64, 112, 112,
         {"kernel_size": 3, "stride": 2, "padding": 1}, quick=True),
    Case("resnet.avgpool", "adaptive_avg_pool2d", 128, 512, 7, 7, {"output_size": 1}, quick=True),
    # global average pools where one lane per plane would leave the GPU idle: the
    # squeeze-and-excitation of SE-ResNet-50's first stage (batch 128), and the image-level
    # pooling of DeepLabv3's ASPP at batch 1 (2048 planes of 64x64: split over programs)
    Case("se.avgpool", "adaptive_avg_pool2d", 128, 256, 56, 56, {"output_size": 1}, quick=True),
    Case("deeplab.imagepool", "adaptive_avg_pool2d", 1, 2048, 64, 64, {"output_size": 1}),
    # few large adaptive windows: PSPNet's 3x3 bins of a 64x64 map (overlapping 22x22 windows)
    Case("psp.bins3", "adaptive_avg_pool2d", 8, 2048, 64, 64, {"output_size": 3}),
    # ... and its 2x2 bins at batch 1 (inference): 4 windows, their rows split over programs
    Case("psp.bins2.b1", "adaptive_avg_pool2d", 1, 2048, 64, 64, {"output_size": 2}),
    # nearest x2 upsampling (a decoder / FPN step)
    Case("upsample.x2", "interpolate", 128, 256, 28, 28, {"scale_factor": 2}, quick=True),
    # large bandwidth-bound tensors: 268M input elements
    Case("large.maxpool", "max_pool2d", 128, 128, 128, 128, {"kernel_size": 2}),
    Case("large.avgpool", "avg_pool2d", 128, 128, 128, 128, {"kernel_size": 2}, quick=True),
    Case("large.adaptive_max", "adaptive_max_pool2d", 128, 128, 128, 128, {"output_size": 7}),
    Case("large.upsample", "interpolate", 64, 128, 128, 128, {"scale_factor": 2}),
]


def min_bytes(case: Case, out_numel: int, mode: str, itemsize: int) -> int:
    """Each tensor read or written once (see the module docstring)."""
    x = case.N * case.C * case.H * case.W * itemsize
    y = out_numel * itemsize
    idx = out_numel * 8 if case.fn in MAX_OPS else 0
    fwd, bwd = x + y + idx, y + idx + x
    return {"forward": fwd, "backward": bwd, "forward+backward": fwd + bwd}[mode]


# ---------------------------------------------------------------------------------------------
# providers


def make_provider(name: str, case: Case):
    """A function x -> y. torch-compile compiles afresh (dynamo reset) for every case."""
    if name == "tritonnet":
        import tritonnet.functional

        fn = getattr(tritonnet.functional, case.fn)
        return lambda x: fn(x, **case.kwargs)
    if name in ("torch", "torch-compile"):
        fn = getattr(F, case.fn)

        def call(x):
            return fn(x, **case.kwargs)

        if name == "torch":
            return call
        torch._dynamo.reset()
        return torch.compile(call, dynamic=False)
    raise ValueError(f"pool: unknown provider {name!r}; expected one of {PROVIDERS}")


# ---------------------------------------------------------------------------------------------
# one case


def _inputs(case: Case, layout: str, dtype: torch.dtype, device, gen: torch.Generator):
    x = torch.randn(case.N, case.C, case.H, case.W, device=device, generator=gen).to(dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    return x.requires_grad_()


def _reference(case: Case, x, dy):
    """(y, dx) in float64 from the same (rounded) inputs."""
    xd = x.detach().double().requires_grad_()
    y = getattr(F, case.fn)(xd, **case.kwargs)
    y.backward(dy.double())
    return y.detach(), xd.grad


def run_case(rec: Recorder, case: Case, layout: str, dtype: str, providers, device, gen) -> None:
    """Check, then time, every provider on one (case, layout, dtype); appends rows to ``rec``."""
    x = _inputs(case, layout, DTYPES[dtype][0], device, gen)
    with torch.no_grad():
        out = getattr(F, case.fn)(x, **case.kwargs)
    dy = torch.randn(out.shape, device=device, generator=gen).to(x.dtype)
    ref = _reference(case, x, dy)
    # the layout in the label too: the table and the plot tell cases apart by label
    label = case.label if layout == "nchw" else f"{case.label}.cl"
    check_then_time(
        rec, dict(op=OP, shape=case.shape, dtype=dtype, layout=layout, label=label),
        f"{OP} {dtype} {label}", providers, device,
        make=lambda p: make_provider(p, case),
        check=lambda fn: check_one(fn, x, dy, ref, device),
        timed=lambda fn, mode: timed_one(fn, mode, x, dy),
        extra=lambda mode: dict(nbytes=min_bytes(case, out.numel(), mode, x.element_size())),
        names=["y", "dx"], log_as=f"{dtype:5} {label:21}", modes=MODES, same_size_copy=True,
    )


# ---------------------------------------------------------------------------------------------
# the op's benchmark


def select_cases(cases=None, quick=False, shapes=None) -> list[Case]:
    """This op's cases (or ``cases``) filtered by --quick and --shapes (harness.select_cases)."""
    return harness_select(CASES if cases is None else cases, quick, shapes)


def run(rec: Recorder, *, device="cuda", dtypes=tuple(DTYPES), providers=DEFAULT_PROVIDERS,
        quick=False, shapes=None, cases=None, layouts=LAYOUTS, deadline=None, seed=0) -> None:
    """Every selected (dtype, case, layout); the quick cases of every dtype first, so a run
    stopped by its ``deadline`` (time.monotonic()) loses the extra shapes, not dtypes."""
    from tritonnet import use_backend

    dtypes = [d for d in dtypes if d != "fp32-tf32"]  # the same numbers as fp32 here
    order = quick_first(dtypes, select_cases(cases, quick, shapes))
    gen = torch.Generator(device=device).manual_seed(seed)
    with use_backend("triton"):  # tritonnet's side runs the Triton kernels, never the reference
        for dtype, case in order:
            for layout in layouts:
                run_step(rec, f"{OP} {dtype} {layout} {case.label}", dtype, device, deadline,
                         lambda: run_case(rec, case, layout, dtype, providers, device, gen))  # noqa: B023


# ---------------------------------------------------------------------------------------------
# the target

TARGET = 0.8  # of the measured copy bandwidth


def headline(df, shown: int = 6) -> list[str]:
    """Issue 4's target as lines of text, per dtype over every (case, layout, mode) timed for
    both tritonnet and torch: how many reach TARGET of the 1 GiB copy's bandwidth and of a
    copy of the same bytes (provider ``copy``, Recorder.measure_copy), and which are slower
    than PyTorch or under TARGET of the same-size copy (the ``shown`` worst of each, by
    ratio). [] when no pool case was timed by both."""
    d = df[(df["op"] == OP) & (df["metric"] == "time")]
    if d.empty:
        return []
    lines = []
    for dtype, g in d.groupby("dtype", sort=False):
        t = g.pivot_table(index=["label", "mode"], columns="provider", values="p50", aggfunc="first")
        if not {"tritonnet", "torch"} <= set(t.columns):
            continue
        t = t.dropna(subset=["tritonnet", "torch"])
        gbs = df[(df["op"] == OP) & (df["metric"] == "GB/s") & (df["dtype"] == dtype)
                 & (df["provider"] == "tritonnet")].set_index(["label", "mode"])["fraction_of_ceiling"]
        of_copy = gbs.reindex(t.index)
        vs_torch = t["torch"] / t["tritonnet"]
        same = t["copy"] / t["tritonnet"] if "copy" in t.columns else None
        n = len(t)
        lines.append(f"pool, issue 4's target (>= {TARGET:g} of copy bandwidth, never slower than "
                     f"PyTorch), {dtype}: n = {n} (case, layout, mode) timed")
        parts = [f">= {TARGET:g} of the copy ceiling: {int((of_copy >= TARGET).sum())}/{n}"]
        if same is not None:
            parts.append(f"of a same-size copy: {int((same >= TARGET).sum())}/{int(same.notna().sum())}")
        lines.append("  " + "; ".join(parts))
        lines += _worst(vs_torch[vs_torch < 1.0], "slower than PyTorch (speed ratio)", n, shown, "x")
        if same is not None:
            lines += _worst(same[same < TARGET], f"under {TARGET:g} of a same-size copy (fraction)", n, shown)
    return lines


def _worst(r, what: str, n: int, shown: int, unit: str = "") -> list[str]:
    """One line: how many of ``n`` are in ``r`` ((label, mode) -> value), the ``shown`` lowest."""
    r = r.dropna().sort_values()
    if r.empty:
        return []
    low = ", ".join(f"{lab} {MODE_SHORT.get(m, m)} {v:.2f}{unit}" for (lab, m), v in r.head(shown).items())
    more = f", +{len(r) - shown} more" if len(r) > shown else ""
    return [f"  {what}: {len(r)}/{n}: {low}{more}"]
