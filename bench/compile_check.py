"""compile_check: compile the Triton kernels the benchmark and a training step would compile,
for a GPU target, on a machine without that GPU. Nothing is launched and nothing is timed.

Why: a GPU is lent to some sessions only, for a short time, and may carry another Triton
than the CPU machines (the lent H100/H200 image has Triton 3.6; the CPU setup installs 3.9).
The interpreter runs the kernels' Python semantics, not the compiler: a kernel can pass every
CPU test and still fail to compile, need more shared memory than the GPU has (the autotuner
then drops that config, after compiling it), spill registers, or miss Hopper's tensor-core
instructions. This finds those here, per autotune config, before any GPU time is spent.

How: Triton's own JIT path with a stand-in driver that names the target (sm_90 by default) and
patches that turn every launch into a compile (``warmup``) and every autotuned launch into a
compile of each config that survives the kernel's pruning. The kernels are driven by real calls
(tritonnet.functional on CPU tensors whose contents are never read), on the benchmark's cases,
so the specialisations are the ones a GPU run would meet. Per compiled kernel it reports, from
the cubin (cuobjdump -res-usage, which ships with Triton): registers per thread, local memory
(spills), shared memory (Triton's dynamic allocation), whether the PTX uses wgmma (Hopper's
warpgroup MMA) or mma.sync, the widths of its global loads (scalar or vectorised, cp.async),
its machine instruction count (cuobjdump -sass), and the compile time on this machine.

    python -m tritonnet.bench.compile_check [--ops conv linear pool misc] [--dtypes bf16 ...]
        [--quick] [--arch 90] [--jobs N] [--out DIR]

Exits 1 when a kernel fails to compile or when a config could not launch on the target (shared
memory or registers over its limits); spills are reported, not fatal. Must run without
TRITON_INTERPRET (the interpreter compiles nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

# per-block limits of the targets we meet (CUDA programming guide, compute capability table)
SHARED_LIMIT = {90: 232448, 100: 232448, 80: 166912, 89: 101376, 86: 101376}
REGS_PER_SM = 65536
# SMs of the targets' data-centre parts (H100/H200 SXM: 132; A100: 108)
NUM_SMS = {90: 132, 100: 148, 80: 108, 89: 128, 86: 84}


@dataclass
class Compiled:
    kernel: str
    config: str
    signature: str
    seconds: float
    shared: int = 0
    regs: int = -1
    local: int = -1
    mma: str = "-"
    loads: str = ""  # global load widths in bytes, e.g. "2 8 cp16" (see global_loads)
    sass: int = -1  # machine instructions (static; see count_sass)
    num_warps: int = 0
    case: str = ""  # the case whose call first compiled this kernel
    error: str = ""
    problems: list = field(default_factory=list)


class _StubDriver:
    """What Triton's JIT asks of the active driver before a launch: a device, a stream and the
    target. Launching needs a real driver; compiling does not."""

    def __init__(self, target):
        self.target = target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target

    def get_active_torch_device(self):
        return torch.device("cpu")


def _describe(fn, args, kwargs) -> tuple[str, str, str]:
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "fn", None), "__name__", "?")
    consts = {k: v for k, v in kwargs.items() if k not in ("grid", "warmup") and not torch.is_tensor(v)}
    config = ",".join(f"{k}={v}" for k, v in consts.items()
                      if k.isupper() or k in ("num_warps", "num_stages"))
    dtypes = sorted({str(a.dtype).replace("torch.", "") for a in args if torch.is_tensor(a)})
    return name, config, "/".join(dtypes)


@contextlib.contextmanager
def on_target(target):
    """Within: tritonnet launches for ``target`` (a GPUTarget) on CPU tensors: a stand-in
    driver, the 'triton' backend, and the target's shared-memory limit and SM count (so the
    split-K plans are the ones a GPU would make). Launches still need a real driver or a stub."""
    from triton.runtime import driver

    import tritonnet
    import tritonnet.backend as backend
    from tritonnet.kernels import _common

    saved = driver._active, backend.interpreter_enabled, _common.SHARED_MEMORY_LIMIT, _common.NUM_SMS
    driver.set_active(_StubDriver(target))
    backend.interpreter_enabled = lambda: True
    _common.SHARED_MEMORY_LIMIT = SHARED_LIMIT.get(target.arch, SHARED_LIMIT[90])
    _common.NUM_SMS = NUM_SMS.get(target.arch, NUM_SMS[90])
    try:
        with tritonnet.use_backend("triton"):
            yield
    finally:
        driver._active, backend.interpreter_enabled, _common.SHARED_MEMORY_LIMIT, _common.NUM_SMS = saved


@contextlib.contextmanager
def compile_only(target=None, on_compile=None, jobs: int = 1):
    """Within: Triton launches compile instead of running; autotuned launches compile every
    config that survives the kernel's pruning; ``jobs`` > 1 compiles in that many threads
    (Triton's async compile; its compiler releases the GIL), all finished on exit.
    ``target`` (a GPUTarget) compiles for that GPU through a stand-in driver, with tritonnet's
    'triton' backend taking CPU tensors and the target's shared-memory limit; None keeps the
    real driver (a GPU run precompiling before it autotunes). ``on_compile(fn, args, kwargs,
    kernel, seconds)`` sees each new compiled kernel (a future when jobs > 1)."""
    import triton  # noqa: F401
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    seen = set()
    jit_run, tuner_run = JITFunction.run, Autotuner.run

    def run(self, *args, grid, warmup, **kwargs):
        t0 = time.perf_counter()
        kernel = jit_run(self, *args, grid=grid, warmup=True, **kwargs)
        if on_compile is not None and kernel is not None and id(kernel) not in seen:
            seen.add(id(kernel))
            on_compile(self, args, kwargs, kernel, time.perf_counter() - t0)
        return kernel

    def tuned_run(self, *args, **kwargs):
        kwargs.pop("warmup", None)
        return self.warmup(*args, **kwargs)

    pool = None
    mode = contextlib.nullcontext()
    if jobs > 1:
        from triton.runtime._async_compile import AsyncCompileMode

        pool = ThreadPoolExecutor(jobs)
        mode = AsyncCompileMode(pool)
    JITFunction.run, Autotuner.run = run, tuned_run
    try:
        with on_target(target) if target is not None else contextlib.nullcontext(), mode:
            yield
    finally:
        JITFunction.run, Autotuner.run = jit_run, tuner_run
        if pool is not None:
            pool.shutdown()


_RES = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def cuobjdump(cubin: bytes) -> str:
    """cuobjdump -res-usage -sass of a cubin (the tool ships with Triton): one run gives both
    the resource line and the machine code."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        cmd = [str(tool), "-res-usage", "-sass", f.name]
        return subprocess.run(cmd, capture_output=True, text=True).stdout


_SASS = re.compile(r"^\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", re.M)


def count_sass(sass: str) -> int:
    """Machine instructions in cuobjdump -sass text (static count, NOPs left out): loop bodies
    count once, so compare configs and versions of one kernel, not different kernels."""
    return sum(1 for op in _SASS.findall(sass) if op != "NOP")


def resource_usage(dump: str) -> tuple[int, int, int]:
    """(registers per thread, static shared bytes, local bytes) from cuobjdump -res-usage text."""
    m = _RES.search(dump)
    if not m:
        return -1, 0, -1
    regs, _stack, shared, local = map(int, m.groups())
    return regs, shared, local


_LD = re.compile(r"\bld\.global(?:\.[\w:]+?)*?(?:\.v(\d))?\.[bfsu](\d+)\s")
_CP_ASYNC = re.compile(r"\bcp\.async\.c[ag]\.shared\.global(?:\.[\w:]+)*"
                       r"\s+\[[^\]]+\],\s*\[[^\]]+\],\s*(0x[0-9a-fA-F]+|\d+)")


def global_loads(ptx: str) -> str:
    """The widths (bytes) of the PTX's global loads, e.g. "2 16" for scalar 2-byte and 16-byte
    vector ``ld.global``, "cp16" for 16-byte ``cp.async`` copies into shared memory. A memory-bound
    kernel whose loads are all 2 bytes wide issues 8x the load instructions of a 16-byte one."""
    widths = {int(v or 1) * int(bits) // 8 for v, bits in _LD.findall(ptx)}
    copies = {int(n, 0) for n in _CP_ASYNC.findall(ptx)}
    return " ".join([str(w) for w in sorted(widths)] + [f"cp{n}" for n in sorted(copies)]) or "-"


def inspect_kernel(rec: Compiled, kernel, arch: int) -> Compiled:
    """Fill ``rec`` from the compiled kernel: resources, MMA instructions, limits exceeded."""
    if hasattr(kernel, "result"):  # a future from async compilation
        kernel = kernel.result()
    md = kernel.metadata
    rec.num_warps = md.num_warps
    dump = cuobjdump(kernel.asm["cubin"])
    regs, static_shared, local = resource_usage(dump)
    rec.regs, rec.local, rec.shared = regs, local, md.shared + static_shared
    ptx = kernel.asm.get("ptx", "")
    rec.mma = "wgmma" if "wgmma" in ptx else ("mma.sync" if "mma.sync" in ptx else "-")
    rec.loads = global_loads(ptx)
    rec.sass = count_sass(dump)
    limit = SHARED_LIMIT.get(arch, SHARED_LIMIT[90])
    if rec.shared > limit:
        rec.problems.append(f"shared {rec.shared} B > {limit} B")
    if regs > 0 and regs * 32 * rec.num_warps > REGS_PER_SM:
        rec.problems.append(f"{regs} regs x {32 * rec.num_warps} threads > {REGS_PER_SM}")
    return rec


# ---------------------------------------------------------------------------------------------
# drivers: real calls that reach each kernel with the benchmark's shapes (contents unread)


def _grad_step(y):
    """Backward from y (the first output if a tuple) with an unread gradient."""
    y = y[0] if isinstance(y, tuple) else y
    y.backward(torch.empty_like(y))


def _each(op, dtypes, layouts, cases, quick, step):
    """(label, thunk) for every (dtype, layout, case) of a benchmark, --quick cases only if
    asked; the thunk runs ``step(dtype name, memory format, case)``."""
    for dname in dtypes:
        for layout in layouts:
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            for c in cases:
                if not quick or c.quick:
                    yield f"{op} {dname} {layout} {c.label}", functools.partial(step, dname, fmt, c)


def _empty(*shape, dname, fmt=torch.contiguous_format, grad=True):
    from .harness import DTYPES

    return torch.empty(*shape, dtype=DTYPES[dname][0], memory_format=fmt, requires_grad=grad)


def cases_conv(dtypes, quick):
    from .conv import CASES, LAYOUTS, make_provider
    from .harness import precision

    def step(dname, fmt, c):
        x = _empty(c.N, c.C_in, c.H, c.W, dname=dname, fmt=fmt)
        w = _empty(*c.w_shape, dname=dname, fmt=fmt)
        b = _empty(c.C_out, dname=dname) if c.bias else None
        with precision(dname):
            _grad_step(make_provider("tritonnet", c)["forward+backward"](x, w, b, None))

    return _each("conv", dtypes, LAYOUTS, CASES, quick, step)


def cases_linear(dtypes, quick):
    from .harness import precision
    from .linear import CASES, LAYOUT, make_provider

    def step(dname, fmt, c):
        x, w, b = _empty(c.M, c.K, dname=dname), _empty(c.N, c.K, dname=dname), _empty(c.N, dname=dname)
        with precision(dname):
            _grad_step(make_provider("tritonnet")(x, w, b))

    return _each("linear", dtypes, (LAYOUT,), CASES, quick, step)


def cases_pool(dtypes, quick):
    from .pool import CASES, LAYOUTS, make_provider

    def step(dname, fmt, c):
        _grad_step(make_provider("tritonnet", c)(_empty(c.N, c.C, c.H, c.W, dname=dname, fmt=fmt)))

    return _each("pool", dtypes, LAYOUTS, CASES, quick, step)


def cases_misc(dtypes, quick):
    """Every kernel family once per dtype on small shapes, the ones no benchmark reaches
    included: linear, activations, dropout, softmax, the losses, upsampling, unfold/fold,
    conv_transpose2d (all three conv kernels), adaptive pools."""
    import tritonnet.functional as TF

    from .harness import DTYPES

    def step(dname):
        dtype = DTYPES[dname][0]

        def leaf(*shape, fmt=torch.contiguous_format):
            return torch.empty(*shape, dtype=dtype, memory_format=fmt, requires_grad=True)

        x = leaf(64, 130)
        _grad_step(TF.linear(x, leaf(40, 130), leaf(40)))
        for fn in (TF.relu, TF.sigmoid, TF.tanh):
            _grad_step(fn(x))
        for fn in (TF.softmax, TF.log_softmax):
            _grad_step(fn(x, dim=1))
        _grad_step(TF.dropout(x, 0.3, training=True))
        _grad_step(TF.dropout2d(leaf(8, 16, 10, 10), 0.3, training=True))
        target = torch.randint(0, 130, (64,))
        _grad_step(TF.cross_entropy(x, target, label_smoothing=0.1))
        # rows past one block (the two-pass softmax, the multi-block cross-entropy backward):
        # long contiguous rows, and a strided class axis (NCHW) of 100 classes
        xl = leaf(4, 5000)
        for fn in (TF.softmax, TF.log_softmax):
            _grad_step(fn(xl, dim=1))
        _grad_step(TF.cross_entropy(xl, torch.randint(0, 5000, (4,))))
        _grad_step(TF.cross_entropy(leaf(2, 100, 8, 8), torch.randint(0, 100, (2, 8, 8))))
        _grad_step(TF.nll_loss(x, target))
        _grad_step(TF.mse_loss(x, torch.empty_like(x)))
        for fmt in (torch.contiguous_format, torch.channels_last):
            x4 = leaf(8, 16, 10, 10, fmt=fmt)
            _grad_step(TF.interpolate(x4, scale_factor=2, mode="nearest"))
            _grad_step(TF.adaptive_avg_pool2d(x4, (3, 3)))
            _grad_step(TF.adaptive_max_pool2d(x4, 3))
            # global pools; channels_last 64x64 planes split (the combine kernel) on an sm_90
            xg = leaf(1, 16, 64, 64, fmt=fmt)
            _grad_step(TF.adaptive_avg_pool2d(xg, 1))
            _grad_step(TF.adaptive_max_pool2d(xg, 1))
            # few, large adaptive windows (the window kernels)
            _grad_step(TF.adaptive_avg_pool2d(xg, (3, 5)))
            _grad_step(TF.adaptive_max_pool2d(xg, (3, 5)))
            # depthwise: the stencil kernels (forward, input and weight gradients)
            _grad_step(TF.conv2d(x4, leaf(16, 1, 3, 3), leaf(16), 2, 1, 1, 16))
            w = leaf(16, 8, 3, 3)
            b = leaf(8) if fmt == torch.channels_last else None  # the bias in the epilogue
            _grad_step(TF.conv_transpose2d(x4, w, b, stride=2, padding=1, output_padding=1))
        _grad_step(TF.unfold(leaf(8, 16, 10, 10), 3, padding=1))
        _grad_step(TF.fold(leaf(8, 16 * 9, 100), (10, 10), 3, padding=1))

    def conv_cl(dname):
        # a channels_last conv whose channels are multiples of 16: each of its three kernels
        # should load its tiles with 16-byte cp.async only (the test checks the loads column)
        dtype = DTYPES[dname][0]
        x = torch.empty(4, 32, 12, 12, dtype=dtype, memory_format=torch.channels_last, requires_grad=True)
        w = torch.empty(48, 32, 3, 3, dtype=dtype, memory_format=torch.channels_last, requires_grad=True)
        _grad_step(TF.conv2d(x, w, None, 1, 1))

    for dname in dtypes:
        yield f"misc {dname}", lambda d=dname: step(d)
        yield f"misc {dname} channels_last conv", lambda d=dname: conv_cl(d)


CASES = {"conv": cases_conv, "linear": cases_linear, "pool": cases_pool, "misc": cases_misc}


# ---------------------------------------------------------------------------------------------


def run(args) -> int:
    import pandas as pd
    from triton.backends.compiler import GPUTarget

    pending, failures = [], []
    current = [""]  # the label of the case running

    def on_compile(fn, fargs, kwargs, kernel, seconds):
        name, config, sig = _describe(fn, fargs, kwargs)
        # a compile's own time is known only when compiles run one at a time
        rec = Compiled(name, config, sig, seconds if args.jobs == 1 else float("nan"), case=current[0])
        pending.append((rec, kernel))

    cases = [c for op in args.ops for c in CASES[op](args.dtypes, args.quick)]
    t0 = time.perf_counter()
    with compile_only(GPUTarget("cuda", args.arch, 32), on_compile, jobs=args.jobs):
        for label, step in _progress(cases):
            current[0] = label
            try:
                step()
            except Exception as e:  # a compile error names the case and goes on
                failures.append(f"{label}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    wall = time.perf_counter() - t0
    rows = []
    for rec, kernel in pending:
        try:
            rows.append(inspect_kernel(rec, kernel, args.arch))
        except Exception as e:
            rec.error = f"{type(e).__name__}: {e}"
            rows.append(rec)
    df = pd.DataFrame([{**r.__dict__, "problems": "; ".join(r.problems)} for r in rows])
    import triton

    print(f"compile_check: Triton {triton.__version__}, torch {torch.__version__}, target sm_{args.arch}; "
          f"{len(cases)} cases, {len(df)} kernels compiled in {wall:.0f} s wall (jobs={args.jobs})")
    if len(df):
        summary = df.groupby("kernel").agg(
            compiled=("config", "size"), seconds=("seconds", lambda s: s.sum(min_count=1)),
            max_regs=("regs", "max"),
            max_local=("local", "max"), max_shared=("shared", "max"),
            sass=("sass", lambda x: f"{x.min()}-{x.max()}"),
            mma=("mma", lambda m: "/".join(sorted(set(m)))),
            loads=("loads", lambda x: " | ".join(sorted(set(x)))),
            over_limit=("problems", lambda p: int((p != "").sum())))
        print(summary.to_string())
        bad = df[df.problems != ""]
        if len(bad):
            print("\nconfigs the target could not launch (the autotuner would compile, then drop them):")
            cols = ["kernel", "config", "signature", "shared", "regs", "num_warps", "problems"]
            print(bad[cols].to_string())
        spills = df[df.local > 0]
        if len(spills):
            print(f"\n{len(spills)} kernels spill to local memory:")
            print(spills[["kernel", "config", "signature", "regs", "local"]].to_string())
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out / "compile_check.csv", index=False)
    for f in failures:
        print("FAILED", f)
    return 1 if failures or (len(df) and (df.problems != "").any()) else 0


def _progress(items):
    try:
        from tqdm import tqdm

        return tqdm(items, desc="compile", unit="case", file=sys.stderr, mininterval=2)
    except ImportError:
        return items


def main(argv=None) -> int:
    from .harness import DTYPES

    p = argparse.ArgumentParser(prog="python -m tritonnet.bench.compile_check",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    p.add_argument("--quick", action="store_true", help="only the benchmark's --quick cases")
    p.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 for H100/H200")
    p.add_argument("--jobs", type=int, default=1, help="compile threads (Triton's async compile)")
    p.add_argument("--out", type=Path, default=None, help="write compile_check.csv here")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        p.error("unset TRITON_INTERPRET: the interpreter compiles nothing")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
