"""Timing, ceilings, the environment record and the long-format results table.

Every op's benchmark hands the :class:`Recorder` a zero-argument function and its work
(floating-point operations, fewest bytes moved); the recorder times it and appends rows of
one long-format table, one row per metric:

    op, provider, mode, shape, dtype, layout, metric, p50, p20, p80, device, versions, timestamp
    + unit, fraction_of_ceiling, ceiling, label, rel_err, check

metric      unit      what
time        ms        triton.testing.do_bench: CUDA events around each call, L2 flushed
                      before each call, quantiles 0.5/0.2/0.8 of the calls
TFLOP/s     TFLOP/s   flops / time; fraction of the same-dtype matmul ceiling
GB/s        GB/s      fewest bytes / time; fraction of the copy ceiling
time_loop   ms        back-to-back calls timed with the host clock, per call: includes the
                      host's dispatch cost where it exceeds the device's work (small layers)
first_call  s         wall time of the first call (Triton autotuning, torch.compile)

Memory-bound ops (pool) add provider ``copy``: a device-to-device copy of the case's bytes,
timed the same way (Recorder.measure_copy), the ceiling a case of that size can reach.

Throughput quantiles come from the time quantiles mirrored: the 20th percentile of TFLOP/s is
the work over the 80th percentile of time, so p20 <= p50 <= p80 holds in every row.
The time row's fraction_of_ceiling is floor / time, the floor being the larger of
flops / matmul ceiling and bytes / copy ceiling (the two numbers of bench/NOTES.md).

Input rotation: do_bench writes a 256 MB buffer between calls, more than the L2 of the GPUs
we run on (env.json records l2_mib), so every timed call starts cold whether or not its inputs
fit in L2; rotating input sets would change nothing and is not done. time_loop keeps caches
warm on purpose.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import torch

COLUMNS = [
    "op", "provider", "mode", "shape", "dtype", "layout", "metric", "p50", "p20", "p80",
    "device", "versions", "timestamp",
]
EXTRA_COLUMNS = ["unit", "fraction_of_ceiling", "ceiling", "label", "rel_err", "check"]
QUANTILES = (0.5, 0.2, 0.8)

# name -> (torch dtype, TF32 allowed). TF32 is set the same for both sides of a comparison:
# torch's flag is what tritonnet's kernels read too (kernels/_common.py dot_precision).
DTYPES: dict[str, tuple[torch.dtype, bool]] = {
    "bf16": (torch.bfloat16, False),
    "fp16": (torch.float16, False),
    "fp32-tf32": (torch.float32, True),
    "fp32": (torch.float32, False),
}
# ||out - ref|| / ||ref|| against float64 on the same inputs, per dtype (METHOD.md's bands):
TOLERANCE = {
    "bf16": 1e-2,  # bf16 output rounding alone is ~2e-3
    "fp16": 2e-3,  # fp16 output rounding ~3e-4, plus reduced-precision split-K in cuBLAS
    "fp32-tf32": 2e-3,  # tf32 operands (10-bit mantissa): ~3e-4 typical
    "fp32": 1e-4,  # true fp32: far under 1e-3
}

# a timer: (fn, grad_to_none) -> (p50, p20, p80) in milliseconds
Timer = Callable[[Callable[[], object], Sequence[torch.Tensor] | None], tuple[float, float, float]]


# ---------------------------------------------------------------------------------------------
# timers


def do_bench_timer(warmup: float = 25, rep: float = 100) -> Timer:
    """triton.testing.do_bench with quantiles (0.5, 0.2, 0.8); warmup and rep in ms."""

    def timer(fn, grad_to_none=None):
        import triton.testing

        qs = triton.testing.do_bench(
            fn, warmup=warmup, rep=rep, grad_to_none=grad_to_none, quantiles=list(QUANTILES)
        )
        return float(qs[0]), float(qs[1]), float(qs[2])

    return timer


def loop_timer(budget_ms: float = 40, batches: int = 7, sync=None) -> Timer:
    """Per-call time of back-to-back calls, one synchronize per batch, host clock; quantiles
    over ``batches`` batches. Shows the host's dispatch cost that do_bench's L2 flush hides."""

    def timer(fn, grad_to_none=None):
        wait = sync or torch.cuda.synchronize
        fn()
        wait()
        t0 = time.perf_counter()
        fn()
        wait()
        one = max(time.perf_counter() - t0, 1e-6)
        n = max(1, min(1000, int(budget_ms / 1e3 / batches / one)))
        per_call = []
        for _ in range(batches):
            t0 = time.perf_counter()
            for _ in range(n):
                for t in grad_to_none or ():
                    t.grad = None
                fn()
            wait()
            per_call.append((time.perf_counter() - t0) / n * 1e3)
        return _quantiles(per_call)

    return timer


def _quantiles(values: Sequence[float]) -> tuple[float, float, float]:
    t = torch.tensor(list(values), dtype=torch.float64)
    q = torch.quantile(t, torch.tensor(QUANTILES, dtype=torch.float64))
    return float(q[0]), float(q[1]), float(q[2])


# ---------------------------------------------------------------------------------------------
# numerics and precision


@contextlib.contextmanager
def precision(dtype_name: str):
    """TF32 on or off for both sides (cuBLAS/cuDNN and tritonnet) for one dtype's cases."""
    _, tf32 = DTYPES[dtype_name]
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; inf for a shape mismatch or any non-finite value."""
    if out is None or ref is None or tuple(out.shape) != tuple(ref.shape):
        return math.inf
    out, ref = out.detach().double(), ref.detach().double()
    if not torch.isfinite(out).all():
        return math.inf
    denom = ref.norm().item()
    return (out - ref).norm().item() / (denom if denom > 0 else 1.0)


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# environment


def slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def environment(device="cuda") -> dict:
    """Device, versions, timestamp and the precision flags in force when the run started."""
    import triton

    import tritonnet

    env = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "tritonnet": tritonnet.__version__,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "bf16_reduced_precision_reduction":
            torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction,
        "fp16_reduced_precision_reduction":
            torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    if torch.device(device).type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(
            device=p.name,
            capability=f"sm_{p.major}{p.minor}",
            sm_count=p.multi_processor_count,
            memory_gib=round(p.total_memory / 2**30, 1),
            l2_mib=round(getattr(p, "L2_cache_size", 0) / 2**20, 1),
        )
    else:
        env["device"] = f"cpu ({platform.processor() or platform.machine()})"
    env["device_slug"] = slug(env["device"])
    env["versions"] = (
        f"torch {env['torch']}; triton {env['triton']}; cuda {env['cuda']}; "
        f"cudnn {env['cudnn']}; tritonnet {env['tritonnet']}"
    )
    return env


# ---------------------------------------------------------------------------------------------
# the recorder


class Recorder:
    """Times functions and collects the rows of the long-format table.

    ``timer`` and ``loop`` are injectable (tests pass fakes; no GPU needed). ``csv_path``, if
    given, is rewritten after every :meth:`flush`, so a run cut short keeps what it measured.
    """

    def __init__(self, env: dict, timer: Timer, loop: Timer | None = None,
                 csv_path: str | Path | None = None, log=print):
        self.env = env
        self.timer = timer
        self.loop = loop
        self.csv_path = Path(csv_path) if csv_path else None
        self.log = log
        self.rows: list[dict] = []
        self.ceilings: dict[str, float] = {}  # "matmul:bf16" -> TFLOP/s, "copy" -> GB/s
        self.failures: list[str] = []  # correctness failures and errors, printed at the end
        self.skipped: list[str] = []
        self._copies: dict[tuple, tuple[float, float, float]] = {}  # (device, bytes) -> quantiles

    # -- rows --------------------------------------------------------------------------------
    def add(self, *, op, provider, mode, shape, dtype, layout, metric, p50, p20=None, p80=None,
            unit="", fraction_of_ceiling=math.nan, ceiling="", label="", rel_err=math.nan,
            check=""):
        self.rows.append({
            "op": op, "provider": provider, "mode": mode, "shape": shape, "dtype": dtype,
            "layout": layout, "metric": metric, "p50": p50,
            "p20": p50 if p20 is None else p20, "p80": p50 if p80 is None else p80,
            "device": self.env["device"], "versions": self.env["versions"],
            "timestamp": self.env["timestamp"], "unit": unit,
            "fraction_of_ceiling": fraction_of_ceiling, "ceiling": ceiling, "label": label,
            "rel_err": rel_err, "check": check,
        })

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=COLUMNS + EXTRA_COLUMNS)

    def flush(self) -> None:
        if self.csv_path is not None:
            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
            self.frame().to_csv(self.csv_path, index=False)

    # -- ceilings ----------------------------------------------------------------------------
    def matmul_ceiling(self, dtype: str) -> tuple[float, str]:
        """(TFLOP/s, name) of the same-dtype matmul ceiling, else bf16's, else (nan, '')."""
        for key in (f"matmul:{dtype}", "matmul:bf16"):
            if key in self.ceilings:
                return self.ceilings[key], key
        return math.nan, ""

    def floor_ms(self, flops: float, nbytes: float, dtype: str) -> float:
        """The larger of the two numbers: flops at the matmul ceiling, bytes at the copy one."""
        tflops, _ = self.matmul_ceiling(dtype)
        gbps = self.ceilings.get("copy", math.nan)
        t_math = flops / (tflops * 1e9) if flops else 0.0
        t_mem = nbytes / (gbps * 1e6) if nbytes else 0.0
        return max(t_math, t_mem)

    # -- timing ------------------------------------------------------------------------------
    def measure(self, fn, *, op, provider, mode, shape, dtype, layout, flops=0.0, nbytes=0.0,
                label="", rel_err=math.nan, check="", grad_to_none=None) -> float:
        """Time ``fn`` and append its time, TFLOP/s and GB/s rows (and time_loop with a loop
        timer). Returns the median time in ms."""
        key = dict(op=op, provider=provider, mode=mode, shape=shape, dtype=dtype, layout=layout,
                   label=label, rel_err=rel_err, check=check)
        p50 = self._add_timed(key, self.timer(fn, grad_to_none), flops, nbytes)
        if self.loop is not None:
            floor = self.floor_ms(flops, nbytes, dtype)
            l50, l20, l80 = self.loop(fn, grad_to_none)
            self.add(**key, metric="time_loop", p50=l50, p20=l20, p80=l80, unit="ms",
                     fraction_of_ceiling=floor / l50 if l50 > 0 else math.nan, ceiling="floor")
        return p50

    def _add_timed(self, key: dict, quantiles, flops: float, nbytes: float) -> float:
        """The time row of ``quantiles`` (p50, p20, p80 in ms) under ``key``, and its TFLOP/s
        and GB/s rows where there is work to rate. Returns p50."""
        p50, p20, p80 = quantiles
        floor = self.floor_ms(flops, nbytes, key["dtype"])
        self.add(**key, metric="time", p50=p50, p20=p20, p80=p80, unit="ms",
                 fraction_of_ceiling=floor / p50 if p50 > 0 else math.nan, ceiling="floor")
        if flops:
            tflops, name = self.matmul_ceiling(key["dtype"])
            rate = [flops / (t * 1e9) for t in (p50, p80, p20)]  # p20 of a rate = p80 of time
            self.add(**key, metric="TFLOP/s", p50=rate[0], p20=rate[1], p80=rate[2],
                     unit="TFLOP/s", fraction_of_ceiling=rate[0] / tflops, ceiling=name)
        if nbytes:
            rate = [nbytes / (t * 1e6) for t in (p50, p80, p20)]
            self.add(**key, metric="GB/s", p50=rate[0], p20=rate[1], p80=rate[2], unit="GB/s",
                     fraction_of_ceiling=rate[0] / self.ceilings.get("copy", math.nan),
                     ceiling="copy")
        return p50

    def measure_copy(self, *, nbytes: int, device, **key) -> float:
        """The same-size ceiling of a memory-bound case: a device-to-device copy that moves
        ``nbytes`` (half read, half written), timed as the cases are and added as provider
        ``copy`` (time and GB/s rows under ``key``). The 1 GiB copy ceiling is what no small
        case reaches (a launch and the ramp-up of a few microseconds weigh on a few MB);
        this is what any kernel moving the same bytes could do. Timed once per size and
        device. Returns the median time in ms."""
        half = max(int(nbytes) // 2, 1)
        ck = (str(device), half)
        if ck not in self._copies:
            src = torch.empty(half, dtype=torch.uint8, device=device)
            dst = torch.empty_like(src)
            self._copies[ck] = self.timer(lambda: dst.copy_(src), None)
            del src, dst
        return self._add_timed({**key, "provider": "copy"}, self._copies[ck], 0.0, 2 * half)

    def measure_ceilings(self, device="cuda", dtypes: Sequence[str] = ("bf16",), n: int = 8192,
                         copy_bytes: int = 1 << 30) -> dict[str, float]:
        """The two ceilings, measured now on this device: a device-to-device copy of
        ``copy_bytes`` (GB/s, bytes read + written) and an n^3 matmul per dtype (TFLOP/s),
        on random data (zeros run faster than real data)."""
        src = torch.randn(copy_bytes // 4, device=device)
        dst = torch.empty_like(src)
        moved = 2 * src.numel() * src.element_size()
        p50, p20, p80 = self.timer(lambda src=src, dst=dst: dst.copy_(src), None)
        gbps = [moved / (t * 1e6) for t in (p50, p80, p20)]
        self.ceilings["copy"] = gbps[0]
        self.add(op="ceiling", provider="torch", mode="copy", shape=f"{moved / 2**30:g} GiB moved",
                 dtype="fp32", layout="contiguous", metric="GB/s", p50=gbps[0], p20=gbps[1],
                 p80=gbps[2], unit="GB/s", fraction_of_ceiling=1.0, ceiling="copy")
        del src, dst
        for name in ["bf16"] + [d for d in dtypes if d != "bf16"]:
            with precision(name):
                a = torch.randn(n, n, device=device).to(DTYPES[name][0])
                b = torch.randn(n, n, device=device).to(DTYPES[name][0])
                c = torch.empty_like(a)
                p50, p20, p80 = self.timer(lambda a=a, b=b, c=c: torch.matmul(a, b, out=c), None)
            rate = [2 * n**3 / (t * 1e9) for t in (p50, p80, p20)]
            self.ceilings[f"matmul:{name}"] = rate[0]
            self.add(op="ceiling", provider="torch", mode="matmul", shape=f"{n}x{n}x{n}",
                     dtype=name, layout="contiguous", metric="TFLOP/s", p50=rate[0],
                     p20=rate[1], p80=rate[2], unit="TFLOP/s", fraction_of_ceiling=1.0,
                     ceiling=f"matmul:{name}")
            del a, b, c
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
        self.flush()
        return dict(self.ceilings)


# ---------------------------------------------------------------------------------------------
# the short table


# in table order; conv times its two gradients on their own (dx, dw)
MODE_SHORT = {"forward": "fwd", "input-grad": "dx", "weight-grad": "dw", "backward": "bwd",
              "forward+backward": "fwd+bwd"}


def summary_table(df: pd.DataFrame, ours: str = "tritonnet", theirs: str = "torch") -> pd.DataFrame:
    """One line per (op, dtype, shape, mode): our median TFLOP/s (GB/s for ops without a FLOP
    count) and time in us, theirs (and torch.compile's where it ran), the ratio ours/theirs,
    our fraction of the ceiling (frac_ceil), of a copy of the same bytes where one was timed
    (frac_copy) and of the speed of light (frac_floor = floor / time); a case whose
    correctness check failed shows FAIL and the providers that failed."""
    df = df[df["op"] != "ceiling"].fillna({"label": ""})
    if df.empty:
        return pd.DataFrame()
    case_keys = ["op", "dtype", "label", "shape"]
    checks = df[df["metric"] == "rel_err"]
    failed = {
        k: sorted(g.loc[g["check"] != "ok", "provider"])
        for k, g in checks.groupby(case_keys, sort=False, dropna=False)
    }
    timed = df[df["metric"].isin(["time", "TFLOP/s", "GB/s"])]
    out = []
    seen = set()
    for key, g in timed.groupby(case_keys + ["mode"], sort=False, dropna=False):
        seen.add(key[:4])
        metric = "TFLOP/s" if (g["metric"] == "TFLOP/s").any() else "GB/s"  # ours, theirs
        rate = g[g["metric"] == metric].set_index("provider")
        ms = g[g["metric"] == "time"].set_index("provider")["p50"]
        out.append({
            **dict(zip(case_keys, key[:4], strict=True)), "mode": key[4],
            "ours": rate["p50"].get(ours, math.nan), "theirs": rate["p50"].get(theirs, math.nan),
            "compiled": rate["p50"].get("torch-compile", math.nan),
            "copy": rate["p50"].get("copy", math.nan),
            "ours_us": ms.get(ours, math.nan) * 1e3, "theirs_us": ms.get(theirs, math.nan) * 1e3,
            "frac_ceil": rate["fraction_of_ceiling"].get(ours, math.nan),
            "frac_floor": g[g["metric"] == "time"]
            .set_index("provider")["fraction_of_ceiling"]
            .get(ours, math.nan),
        })
    for key in failed:
        if key not in seen:  # nothing timed: every provider failed or raised
            out.append({**dict(zip(case_keys, key, strict=True)), "mode": ""})
    if not out:
        return pd.DataFrame()
    t = pd.DataFrame(out)
    t["ratio"] = t["ours"] / t["theirs"]
    t["frac_copy"] = t["ours"] / t["copy"]  # of a copy of the same bytes (memory-bound ops)
    t["check"] = [
        "FAIL " + ",".join(failed[k]) if failed.get(k) else "ok"
        for k in zip(*(t[c] for c in case_keys), strict=True)
    ]
    order = {m: i for i, m in enumerate(MODE_SHORT)}
    t["_m"] = t["mode"].map(lambda m: order.get(m, len(order)))
    t["_c"] = range(len(t))
    first = t.groupby(case_keys, sort=False)["_c"].transform("min")  # cases in run order
    t = t.assign(_f=first).sort_values(["_f", "_m"]).drop(columns=["_m", "_c", "_f"])
    t["mode"] = t["mode"].map(lambda m: MODE_SHORT.get(m, m))
    t["case"] = [lab or shp for lab, shp in zip(t["label"], t["shape"], strict=True)]
    cols = ["op", "dtype", "case", "mode", "ours", "theirs", "ratio", "ours_us", "theirs_us",
            "frac_ceil", "frac_floor", "check"]
    if t["compiled"].notna().any():  # torch.compile ran: its rate next to torch's
        cols.insert(cols.index("ratio"), "compiled")
    if t["copy"].notna().any():  # a same-size copy ran: our fraction of it after frac_ceil
        cols.insert(cols.index("frac_floor"), "frac_copy")
    return t[cols].reset_index(drop=True)


def format_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "(no results)"
    g3, f1 = (lambda v: f"{v:.3g}"), (lambda v: f"{v:.1f}")
    fmt = {c: g3 for c in ("ours", "theirs", "compiled", "ratio", "frac_ceil", "frac_copy",
                           "frac_floor")}
    fmt.update(ours_us=f1, theirs_us=f1)
    return table.to_string(index=False, formatters=fmt, na_rep="-")


def select_cases(cases, quick=False, shapes=None) -> list:
    """Filter an op's case list: --quick keeps the cases marked quick; --shapes keeps those
    whose label contains any given word (or whose shape string equals one)."""
    cases = list(cases)
    if quick:
        cases = [c for c in cases if c.quick]
    if shapes:
        cases = [c for c in cases if any(s in c.label or s == c.shape for s in shapes)]
    return cases


def quick_first(dtypes, cases) -> list[tuple]:
    """(dtype, case) pairs: the quick cases of every dtype first, then the rest, so a run cut
    short by its budget loses extra shapes rather than whole dtypes."""
    return [(d, c) for d in dtypes for c in cases if c.quick] + [
        (d, c) for d in dtypes for c in cases if not c.quick
    ]


# Compile a case's Triton configs in parallel before it is first checked (see precompile).
PRECOMPILE = os.environ.get("TRITONNET_BENCH_PRECOMPILE", "1") != "0"


def precompile(rec: Recorder, key: dict, what: str, provider: str, device, step, *args) -> None:
    """For tritonnet on CUDA: run ``step(*args)`` (the provider's first check) once with every Triton
    launch turned into a compile of each config its autotuner would try, cpu_count() compiles
    at a time, nothing launched (bench/compile_check.py's compile_only). Triton's autotuner
    compiles its configs one by one as it first times them, and on the benchmark's shapes that
    is most of a case's first call. Adds a ``compile`` row (wall s; first_call then holds the
    tuning and the check). Any error is logged and the case compiles as usual."""
    if provider != "tritonnet" or torch.device(device).type != "cuda" or not PRECOMPILE:
        return
    from .compile_check import compile_only

    t0 = time.perf_counter()
    try:
        with compile_only(jobs=os.cpu_count() or 1):
            step(*args)
        synchronize(device)
    except Exception as e:  # the normal path will meet (and record) any real compile error
        rec.log(f"  precompile {what}: {type(e).__name__}: {e}; compiling as the autotuner goes")
        return
    rec.add(**key, provider=provider, mode="forward+backward", metric="compile",
            p50=time.perf_counter() - t0, unit="s")


def run_step(rec: Recorder, name: str, dtype: str, device, deadline, fn) -> None:
    """One case of an op's benchmark: listed as skipped once ``deadline`` (time.monotonic())
    has passed, else ``fn()`` under the dtype's precision flags, then the CSV rewritten and
    the CUDA cache emptied (the next case starts from the same free memory)."""
    if deadline is not None and time.monotonic() > deadline:
        rec.skipped.append(name)
        return
    with precision(dtype):
        fn()
    rec.flush()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# one case of an op whose providers are checked as a whole, then timed mode by mode

MODES = ("forward", "backward", "forward+backward")


def check_then_time(rec: Recorder, key: dict, what: str, providers, device, *, make, check, timed,
                    extra, names, log_as: str, modes=MODES, same_size_copy=False) -> None:
    """The body of a case (linear, pool, softmax). Each provider's function ``make(p)`` is
    checked once against float64, ``check(fn) -> (max rel. error, errors, first-call s)``
    (compiled ahead first, see precompile); its rel_err and first_call rows are added, and one
    over TOLERANCE is listed in ``rec.failures`` with every error (``names``) and not timed.
    Then each mode is timed, ``timed(fn, mode) -> (function, tensors whose grad to reset)``,
    providers alternating within a mode so that drift hits both, with ``extra(mode)`` (flops,
    nbytes) passed to Recorder.measure; one log line per provider, ``log_as`` before its name.
    With ``same_size_copy`` (memory-bound ops), each mode also times a copy of its bytes
    (Recorder.measure_copy: provider ``copy``).
    One broken provider never ends the run: its error is listed and the rest go on."""
    tol = TOLERANCE[key["dtype"]]
    fns = {}
    for p in providers:
        try:
            fn = make(p)
            precompile(rec, key, what, p, device, check, fn)
            err, errs, first = check(fn)
        except Exception as e:
            rec.failures.append(f"{what} {p}: {type(e).__name__}: {e}")
            rec.log(f"  ERROR {what} {p}: {type(e).__name__}: {e}")
            continue
        verdict = "ok" if err <= tol else "FAIL"
        for metric, value, unit in [("rel_err", err, ""), ("first_call", first, "s")]:
            rec.add(**key, provider=p, mode="forward+backward", metric=metric, p50=value,
                    unit=unit, rel_err=err, check=verdict)
        if verdict == "FAIL":
            detail = ", ".join(f"{n} {e:.2e}" for n, e in zip(names, errs, strict=True))
            rec.failures.append(f"{what} {p}: relative error {err:.3g} > {tol:g} ({detail})")
            rec.log(f"  FAIL {what} {p}: relative error {err:.3g} ({detail}); not timed")
            continue
        fns[p] = (fn, err)

    times = {p: {} for p in fns}
    for mode in modes:
        for p, (fn, err) in fns.items():
            try:
                f, grads = timed(fn, mode)
                times[p][mode] = rec.measure(f, **key, provider=p, mode=mode, grad_to_none=grads,
                                             rel_err=err, check="ok", **extra(mode))
            except Exception as e:
                rec.failures.append(f"{what} {p} {mode}: {type(e).__name__}: {e}")
                rec.log(f"  ERROR {what} {p} {mode}: {type(e).__name__}: {e}")
        nbytes = extra(mode).get("nbytes", 0) if same_size_copy and fns else 0
        if nbytes:
            times.setdefault("copy", {})[mode] = rec.measure_copy(nbytes=nbytes, device=device,
                                                                  mode=mode, **key)
    for p, t in times.items():
        ms = "  ".join(f"{m} {t[m] * 1e3:9.1f} us" for m in modes if m in t)
        err = f"err {fns[p][1]:.1e}" if p in fns else " " * 11
        rec.log(f"  {log_as} {p:13} {err}  {ms}")


def check_one(fn, x, dy, ref, device):
    """check for a provider of one input x -> y: forward and backward once on a copy of x
    against ref = (y, dx) in float64: (max rel. error, [y's, dx's], wall s)."""
    xs = x.detach().clone().requires_grad_()
    synchronize(device)
    t0 = time.perf_counter()
    y = fn(xs)
    y.backward(dy)
    synchronize(device)
    first = time.perf_counter() - t0
    errs = [rel_err(y, ref[0]), rel_err(xs.grad, ref[1])]
    return max(errs), errs, first


def timed_one(fn, mode, x, dy):
    """timed for a provider of one input x -> y: (function to time, tensors whose .grad
    do_bench resets between calls)."""
    if mode == "forward":
        return (lambda: fn(x)), None
    if mode == "backward":
        y = fn(x)
        return (lambda: y.backward(dy, retain_graph=True)), [x]
    return (lambda: fn(x).backward(dy)), [x]
