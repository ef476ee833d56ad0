"""The benchmark suite: argument parsing and the run (``python -m tritonnet.bench``,
``tritonnet bench``).

A run measures the ceilings (copy bandwidth, matmul rate per dtype) first, then every
selected op's cases, writes ``results.csv`` (rewritten after every case), ``env.json`` and
``table.txt`` under --out, plots (bench/plot.py), and prints the short table last.
Timings come from a CUDA device only; without one the run exits at once, non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import torch

from . import harness

# op name -> module (one per op family) with OP, PROVIDERS, DEFAULT_PROVIDERS and run(), and
# optionally headline(df): lines printed and written under the table (conv's geomean)
# run in this order under one --budget-s: convolution, the heart of the library, first
OPS = {"conv": "tritonnet.bench.conv", "linear": "tritonnet.bench.linear",
       "pool": "tritonnet.bench.pool", "softmax": "tritonnet.bench.softmax"}

# Of a --budget-s, the share each op after the current one keeps for itself: with conv, linear
# and pool selected, conv starts no case after 70% of the budget, linear none after 85%. Time an
# op leaves unused passes on, since the deadlines are absolute.
LATER_OP_SHARE = 0.15

NO_CUDA = "tritonnet bench: timings come from a GPU only; no CUDA device found"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--ops", nargs="+", choices=list(OPS), default=list(OPS),
                        help="ops to benchmark (default: all)")
    parser.add_argument("--dtypes", nargs="+", choices=list(harness.DTYPES),
                        default=list(harness.DTYPES),
                        help="precisions; fp32 runs with TF32 off on both sides, fp32-tf32 "
                             "with TF32 on on both (default: all)")
    parser.add_argument("--providers", nargs="+", default=None,
                        help="tritonnet, torch, torch-compile (default: tritonnet torch)")
    parser.add_argument("--shapes", nargs="+", default=None, metavar="WORD",
                        help="keep only cases whose label contains one of these words "
                             "(e.g. mlp lenet resnet square)")
    parser.add_argument("--quick", action="store_true", help="fewer sizes")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="results folder (default: bench/results/<device-slug>/)")
    parser.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True,
                        help="write one PNG per op (default: on)")
    parser.add_argument("--warmup", type=float, default=25, metavar="MS",
                        help="do_bench warm-up time in ms (default: 25)")
    parser.add_argument("--rep", type=float, default=100, metavar="MS",
                        help="do_bench repetition time in ms (default: 100)")
    parser.add_argument("--loop-timing", action=argparse.BooleanOptionalAction, default=True,
                        help="also time back-to-back calls with the host clock (time_loop)")
    parser.add_argument("--ceiling-size", type=int, default=8192, metavar="N",
                        help="ceilings: an N^3 matmul per dtype and a copy of 16*N*N bytes "
                             "(default: 8192, i.e. 1 GiB)")
    parser.add_argument("--budget-s", type=float, default=None, metavar="S",
                        help="start no new case after S seconds, the rest listed as skipped; each op "
                        f"keeps {LATER_OP_SHARE * 100:.0f}%% of S for every selected op after it")
    return parser


def default_out(device_slug: str) -> Path:
    """bench/results/<device-slug>/ of the checkout (bench/ is installed in place, -e)."""
    here = Path(__file__).resolve().parent / "results"
    base = here if here.is_dir() else Path.cwd() / "bench-results"
    return base / device_slug


def report(df) -> str:
    """The short table, then the headline lines of every op in ``df`` whose module has a
    ``headline(df)`` (conv: the issue's geomean over ResNet-18): table.txt and the printout."""
    text = harness.format_table(harness.summary_table(df))
    lines = []
    for name in dict.fromkeys(df["op"]):
        if name in OPS:
            headline = getattr(importlib.import_module(OPS[name]), "headline", None)
            lines += headline(df) if headline else []
    return text + ("\n\n" + "\n".join(lines) if lines else "")


def run(args: argparse.Namespace, *, device="cuda", timer=None, loop=None) -> int:
    """Run the selected benchmarks. Returns 0, or 1 when any case failed its correctness check
    or raised; raises SystemExit (non-zero, with a message) when there is no CUDA device.
    ``device``, ``timer`` and ``loop`` exist for the tests (a CPU run with a fake timer)."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(NO_CUDA + " (torch.cuda.is_available() is False)")
    ops = {}
    for name in args.ops:
        mod = importlib.import_module(OPS[name])
        providers = args.providers or list(mod.DEFAULT_PROVIDERS)
        unknown = [p for p in providers if p not in mod.PROVIDERS]
        if unknown:
            raise SystemExit(f"tritonnet bench: {name} has no provider {unknown}; "
                             f"expected some of {list(mod.PROVIDERS)}")
        ops[name] = mod, providers
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest algorithm, as users run it
    try:
        return _run(args, ops, device, timer, loop)
    finally:
        torch.backends.cudnn.benchmark = saved


def op_deadline(deadline, budget_s, later_ops: int):
    """The time after which an op starts no new case: ``deadline`` less the shares kept for
    the ``later_ops`` ops that run after it, so the first op cannot starve the rest."""
    if deadline is None:
        return None
    return deadline - LATER_OP_SHARE * budget_s * later_ops


def _run(args, ops, device, timer, loop) -> int:
    start = time.monotonic()
    deadline = start + args.budget_s if args.budget_s else None
    env = harness.environment(device)
    out = Path(args.out) if args.out else default_out(env["device_slug"])
    out.mkdir(parents=True, exist_ok=True)
    env["command"] = " ".join(sys.argv)
    env["args"] = {k: str(v) for k, v in vars(args).items() if k != "func"}
    (out / "env.json").write_text(json.dumps(env, indent=2) + "\n")
    print(f"device {env['device']} ({env.get('capability')}, {env.get('sm_count')} SMs); "
          f"{env['versions']}; {env['timestamp']}; results in {out}")

    if args.loop_timing and loop is None:
        loop = harness.loop_timer()
    rec = harness.Recorder(
        env,
        timer or harness.do_bench_timer(args.warmup, args.rep),
        loop=loop if args.loop_timing else None,
        csv_path=out / "results.csv",
    )
    n = args.ceiling_size
    ceilings = rec.measure_ceilings(device, dtypes=args.dtypes, n=n, copy_bytes=16 * n * n)
    print("ceilings: " + ", ".join(
        f"{k} {v:.4g} {'GB/s' if k == 'copy' else 'TFLOP/s'}" for k, v in ceilings.items()
    ))

    for i, (name, (mod, providers)) in enumerate(ops.items()):
        print(f"{name}: providers {providers}, dtypes {args.dtypes}")
        mod.run(rec, device=device, dtypes=args.dtypes, providers=providers, quick=args.quick,
                shapes=args.shapes, deadline=op_deadline(deadline, args.budget_s, len(ops) - 1 - i))
    rec.flush()

    df = rec.frame()
    if args.plot:
        from .plot import plot_frame

        for path in plot_frame(df, out):
            print(f"plot: {path}")
    table = report(df)
    (out / "table.txt").write_text(table + "\n")
    elapsed = time.monotonic() - start
    print(f"\nfinished in {elapsed:.0f} s; {len(df)} rows in {out / 'results.csv'}")
    if rec.skipped:
        more = f"; and {len(rec.skipped) - 40} more" if len(rec.skipped) > 40 else ""
        print(f"SKIPPED (budget of {args.budget_s} s spent): {len(rec.skipped)} cases: "
              + "; ".join(rec.skipped[:40]) + more)
    if rec.failures:
        print(f"FAILED: {len(rec.failures)}")
        for f in rec.failures:
            print(f"  {f}")
    print("\n" + table)
    if rec.failures or rec.skipped:
        print(f"{len(rec.failures)} failed, {len(rec.skipped)} skipped (listed above the table)")
    return 1 if rec.failures else 0
