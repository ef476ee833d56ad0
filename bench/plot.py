"""The plot step: a results CSV -> one PNG per op, and the short table.

    python -m tritonnet.bench.plot bench/results/<device>/results.csv [--out DIR]

Each PNG is a grid, one row per dtype and one column per mode: grouped bars of the median
TFLOP/s (GB/s for ops without a FLOP count) per shape, one bar per provider, whiskers from
p20 to p80, the ceiling measured in the same run as a dashed line, log scale. The title names
the device and the versions. Needs no GPU (matplotlib's Agg canvas, no pyplot state).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .harness import DTYPES
from .suite import report

MODE_ORDER = ["forward", "input-grad", "weight-grad", "backward", "forward+backward"]


def _ordered(values, order):
    values = list(dict.fromkeys(values))
    return [v for v in order if v in values] + [v for v in values if v not in order]


def _ceiling(df: pd.DataFrame, metric: str, dtype: str) -> tuple[float, str]:
    c = df[(df["op"] == "ceiling") & (df["metric"] == metric)]
    if metric == "TFLOP/s":
        for d in (dtype, "bf16"):
            row = c[c["dtype"] == d]
            if len(row):
                return float(row["p50"].iloc[0]), f"matmul {d}"
        return math.nan, ""
    return (float(c["p50"].iloc[0]), "copy") if len(c) else (math.nan, "")


def plot_op(df: pd.DataFrame, op: str, path: Path) -> Path | None:
    """One PNG for ``op`` from the long-format frame ``df`` (ceiling rows included)."""
    d = df[df["op"] == op].fillna({"label": ""})
    metric = "TFLOP/s" if (d["metric"] == "TFLOP/s").any() else "GB/s"
    d = d[d["metric"] == metric]
    if d.empty:
        return None
    d = d.assign(case=np.where(d["label"] != "", d["label"], d["shape"]))
    dtypes = _ordered(d["dtype"], list(DTYPES))
    modes = _ordered(d["mode"], MODE_ORDER)
    providers = _ordered(d["provider"], ["tritonnet", "torch", "torch-compile"])
    cases = list(dict.fromkeys(d["case"]))
    x = np.arange(len(cases))
    width = 0.8 / len(providers)

    # wide enough for every bar up to a cap (conv's full matrix has ~80 cases per panel)
    col_w = min(max(4.0, 0.3 * len(cases) * (len(providers) + 1) + 1.0), 40.0)
    fig = Figure(figsize=(col_w * len(modes), 3.4 * len(dtypes) + 1.2), layout="constrained")
    axes = fig.subplots(len(dtypes), len(modes), squeeze=False, sharey="row")
    for r, dtype in enumerate(dtypes):
        ceiling, cname = _ceiling(df, metric, dtype)
        for c, mode in enumerate(modes):
            ax = axes[r][c]
            sub = d[(d["dtype"] == dtype) & (d["mode"] == mode)].set_index(["provider", "case"])
            for i, p in enumerate(providers):
                vals, lo, hi = [], [], []
                for case in cases:
                    if (p, case) in sub.index:
                        row = sub.loc[(p, case)]
                        row = row.iloc[0] if isinstance(row, pd.DataFrame) else row
                        vals.append(row["p50"])
                        lo.append(max(row["p50"] - row["p20"], 0.0))
                        hi.append(max(row["p80"] - row["p50"], 0.0))
                    else:
                        vals.append(np.nan)
                        lo.append(0.0)
                        hi.append(0.0)
                ax.bar(x + (i - (len(providers) - 1) / 2) * width, vals, width,
                       label="copy of the same bytes" if p == "copy" else p,
                       yerr=[lo, hi], capsize=2)
            if not math.isnan(ceiling):
                ax.axhline(ceiling, color="k", ls="--", lw=1)
                ax.text(0.99, ceiling, f"ceiling: {cname} {ceiling:.4g}", fontsize=7,
                        ha="right", va="bottom", transform=ax.get_yaxis_transform())
            if (sub["p50"] > 0).any():
                ax.set_yscale("log")
            ax.set_title(f"{dtype}, {mode}", fontsize=10)
            ax.set_xticks(x, cases, rotation=40, ha="right", fontsize=8)
            ax.grid(axis="y", alpha=0.3, which="both")
            if c == 0:
                ax.set_ylabel(metric)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper right", fontsize=8)
    dev = d["device"].iloc[0]
    fig.suptitle(f"{op}: median {metric} (whiskers p20-p80) on {dev}\n"
                 f"{d['versions'].iloc[0]}; {d['timestamp'].iloc[0]}", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def plot_frame(df: pd.DataFrame, out_dir) -> list[Path]:
    """One PNG per op in ``df``, named <op>.png under ``out_dir``."""
    out = []
    for op in dict.fromkeys(df["op"]):
        if op != "ceiling":
            p = plot_op(df, op, Path(out_dir) / f"{op}.png")
            if p is not None:
                out.append(p)
    return out


def plot_csv(csv_path, out_dir=None) -> list[Path]:
    csv_path = Path(csv_path)
    return plot_frame(pd.read_csv(csv_path), out_dir or csv_path.parent)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tritonnet.bench.plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", type=Path, help="results.csv written by the suite")
    parser.add_argument("--out", type=Path, default=None, help="folder (default: the CSV's)")
    args = parser.parse_args(argv)
    out = args.out or args.csv.parent
    df = pd.read_csv(args.csv)
    for path in plot_frame(df, out):
        print(f"plot: {path}")
    table = report(df)
    (Path(out) / "table.txt").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
