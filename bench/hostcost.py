"""Host time of tritonnet's calls, measured without a GPU: the Python a call runs before its
kernels reach the GPU (argument checks, autograd, dispatch, planning, allocation, Triton's
launch path).

The kernels compile for sm_90 through compile_check's stand-in driver, and only the last step
of a launch is stubbed: the C launcher (``CompiledKernel.run``). The autotuner "times" every
config as equal, so it keeps the first that survives pruning. Everything else runs as on a GPU
machine, on CPU tensors. The figures are this machine's CPU; a GPU machine's faster CPU takes
less. They are host time only, never kernel time (bench/NOTES.md, "The op layer's host cost").

    python -m tritonnet.bench.hostcost                  # ResNet-18's layer4 and layer1 at batch 1
    python -m tritonnet.bench.hostcost --repeat 30      # more repeats on a noisy machine

Each figure is the best of ``--repeat`` rounds of ``--calls`` calls, in two interleaved
passes. ``without_launch_memo_us`` is the same call with every launch through Triton's
``JITFunction.run`` (kernels/_launch.py's memo off), timed alternately in the same process:
this machine's noise moves whole runs by up to 2x, so only figures taken side by side compare.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time


def _stub_launches():
    """Triton launches that run everything but the C launcher; the autotuner "times" every
    config as equal. For the rest of the process (this is a command, not a library)."""
    from triton.compiler.compiler import CompiledKernel
    from triton.runtime.autotuner import Autotuner

    CompiledKernel._init_handles = lambda self: None
    CompiledKernel.function = None
    CompiledKernel.packed_metadata = None
    CompiledKernel.run = staticmethod(lambda *args: None)
    Autotuner._bench = lambda self, *args, config, **kwargs: [1.0, 1.0, 1.0]


def _best(fn, calls: int, repeat: int) -> float:
    """Best per-call microseconds over ``repeat`` rounds of ``calls`` calls."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls * 1e6)
    return best


def cases(layer: str):
    """(label, call) pairs for one ResNet-18 layer at batch 1, bf16 channels_last."""
    import torch

    import tritonnet.functional as F
    from tritonnet import kernels
    from tritonnet.ops import conv as ops

    c, hw = {"layer4": (512, 7), "layer1": (64, 56)}[layer]
    cl = torch.channels_last
    x = torch.randn(1, c, hw, hw, dtype=torch.bfloat16).to(memory_format=cl)
    w = torch.randn(c, c, 3, 3, dtype=torch.bfloat16).to(memory_format=cl)
    wg = w.clone().requires_grad_()
    xg = x.clone().requires_grad_()
    dy = torch.randn_like(x)
    a = ([1, 1], [1, 1], [1, 1], 1)
    w2 = w.clone().requires_grad_()

    def block():
        """Two conv+ReLU layers' training step: forward, then the backward from a given
        gradient (autograd runs every gradient kernel). Only tritonnet ops: a CPU aten op
        here (a residual add, a sum, gradient accumulation) would compute for real. One
        still does: the weight gradient's split-K partials are summed by torch (layer1 at
        batch 1 splits), on the CPU here, asynchronously on a GPU."""
        wg.grad = w2.grad = None
        h = F.relu(F.conv2d(x, wg, None, 1, 1))
        F.relu(F.conv2d(h, w2, None, 1, 1)).backward(dy)

    return [
        ("primitive kernels.conv2d_forward", lambda: kernels.conv2d_forward(x, w, None, *a)),
        ("op conv2d, no grad", lambda: ops.conv2d(x, w, None, *a, "none")),
        ("op conv2d, weight needs grad", lambda: ops.conv2d(x, wg, None, *a, "none")),
        ("functional.conv2d, weight needs grad", lambda: F.conv2d(x, wg, None, 1, 1)),
        ("op conv2d_input_grad", lambda: ops.conv2d_input_grad(dy, w, list(x.shape), *a)),
        ("op conv2d_weight_grad", lambda: ops.conv2d_weight_grad(dy, x, list(w.shape), *a, False)),
        ("functional.max_pool2d 3x3/s2/p1, needs grad", lambda: F.max_pool2d(xg, 3, 2, 1)),
        ("2 x (conv, ReLU): forward and backward", block),
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tritonnet.bench.hostcost",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", nargs="+", default=["layer4", "layer1"], choices=["layer4", "layer1"])
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--repeat", type=int, default=10)
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        p.error("unset TRITON_INTERPRET: this times the compiled kernels' launch path")

    import pandas as pd
    import torch
    import triton
    from triton.backends.compiler import GPUTarget

    from tritonnet.kernels._launch import tritons_own_path

    from .compile_check import compile_only, on_target

    target = GPUTarget("cuda", 90, 32)
    rows = []
    for layer in args.layers:
        calls = cases(layer)
        with compile_only(target, jobs=2):  # every config of every kernel these calls launch
            for _, fn in calls:
                out = fn()
                if isinstance(out, torch.Tensor) and out.requires_grad:
                    out.sum().backward()
        _stub_launches()
        best = {}
        with on_target(target):
            for _ in range(2):  # two passes, interleaved: a call's figure is its best in either
                for label, fn in calls:
                    for memo in (True, False):
                        with contextlib.nullcontext() if memo else tritons_own_path():
                            fn()  # tune (first config), memoise
                            us = _best(fn, args.calls, args.repeat)
                        best[label, memo] = min(best.get((label, memo), float("inf")), us)
        rows += [{"layer": layer, "call": label, "host_us": round(best[label, True], 1),
                  "without_launch_memo_us": round(best[label, False], 1)} for label, _ in calls]
    table = pd.DataFrame(rows)
    print(f"host time per call, torch {torch.__version__}, triton {triton.__version__}, "
          f"{os.cpu_count()} CPUs (launches stubbed at the C launcher; no GPU)")
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
