"""kernels._launch held to Triton's own launch path, compiled for sm_90 without a GPU.

Run by tests/test_launch.py as ``python -m tests.launch_check`` in a process without
TRITON_INTERPRET (the memo keeps compiled kernels, which the interpreter never makes). Only the
C launcher (``CompiledKernel.run``) is replaced, by a recorder: every check compares what a
memoised launch hands it with what ``JITFunction.run`` hands it for the same call. Prints
``ok <n> checks`` and exits 0, or raises.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler.compiler import CompiledKernel, LazyDict
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction

from tritonnet.bench.compile_check import on_target
from tritonnet.kernels import _launch
from tritonnet.kernels._common import Tuned


@triton.jit(do_not_specialize=["seed"])
def _probe(x_ptr, y_ptr, n, stride, scale, seed, FLAG: tl.constexpr, MODE: tl.constexpr = "a",
           BLOCK: tl.constexpr = 64, ACC: tl.constexpr = tl.float32):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    v = tl.load(x_ptr + i * stride, mask=m).to(ACC)
    if FLAG:
        v = v * scale
    if MODE == "b":
        v = v + seed
    tl.store(y_ptr + i, v, mask=m)


LOG = []


def _record(kernel):
    return lambda *args: LOG.append((kernel, args))


class _NoSlowPath:
    """Stands in for a Launcher's kernel once its memo must serve every call."""

    def __getitem__(self, grid):
        raise AssertionError("launched through JITFunction.run, not the memo")

    def run(self, *args, **kwargs):
        raise AssertionError("launched through JITFunction.run, not the memo")


def _tensor(t, address=True):
    return (t.data_ptr() if address else None, t.dtype, t.shape, t.stride())


def _same(a, b, what, address=True):
    """Two recorded launches are the same: kernel object, grid, stream, handles, metadata,
    hooks, and every argument (a tensor by address, dtype, shape and strides; by all but the
    address when ``address`` is False, for buffers a call allocates)."""
    (ka, args_a), (kb, args_b) = a, b
    assert ka is kb, f"{what}: memo launched {ka.hash[:8]}, Triton {kb.hash[:8]}"
    assert len(args_a) == len(args_b), (what, len(args_a), len(args_b))
    for i, (u, v) in enumerate(zip(args_a, args_b)):
        if isinstance(u, LazyDict) and isinstance(v, LazyDict):  # launch metadata (3.9 always)
            u, v = u.get(), v.get()
        if isinstance(u, torch.Tensor) and isinstance(v, torch.Tensor):
            u, v = _tensor(u, address), _tensor(v, address)
        assert type(u) is type(v) and u == v, f"{what}: launcher argument {i} differs: {u!r} vs {v!r}"


def _check(call, launcher, what, keys_before=None):
    """call(k) launches through k. The memo's second launch must equal Triton's."""
    with _launch.tritons_own_path():
        LOG.clear()
        call(launcher.fn)
        want = LOG[-1]
    LOG.clear()
    call(launcher)  # first: Triton's path, kept
    first = LOG[-1]
    _same(first, want, what + " (first launch)")
    slow = "tuner" if isinstance(launcher, Tuned) else "fn"  # what Launcher._first launches
    saved = getattr(launcher, slow)
    setattr(launcher, slow, _NoSlowPath())
    try:
        LOG.clear()
        call(launcher)
        _same(LOG[-1], want, what)
    finally:
        setattr(launcher, slow, saved)
    return want[0]


def main() -> int:
    target = GPUTarget("cuda", 90, 32)
    CompiledKernel._init_handles = lambda self: None
    CompiledKernel.run = property(_record)
    assert _launch.ENABLED, "unset TRITONNET_FAST_LAUNCH=0 for this check"
    checks = 0
    with on_target(target):
        x = torch.randn(300)
        y = torch.empty(300)
        xh, yh = x.half(), y.half()
        lau = _launch.Launcher(_probe)
        cases = {
            "base": lambda k: k[(2,)](x, y, 100, 1, 2.0, 5, True),
            "x 4 bytes off 16-byte alignment": lambda k: k[(2,)](x[1:], y, 100, 1, 2.0, 5, True),
            "n == 1": lambda k: k[(1,)](x, y, 1, 1, 2.0, 5, True),
            "n divisible by 16": lambda k: k[(2,)](x, y, 96, 1, 2.0, 5, True),
            "stride 2 (not 1)": lambda k: k[(2,)](x, y, 100, 2, 2.0, 5, True),
            "fp16": lambda k: k[(2,)](xh, yh, 100, 1, 2.0, 5, True),
            "another float": lambda k: k[(2,)](x, y, 100, 1, 3.5, 5, True),
            "seed past int32": lambda k: k[(2,)](x, y, 100, 1, 2.0, 2**40, True),
            "seed past int64": lambda k: k[(2,)](x, y, 100, 1, 2.0, 2**63 + 7, True),
            "constexpr False": lambda k: k[(2,)](x, y, 100, 1, 2.0, 5, False),
            "keywords, default left out":
                lambda k: k[(2,)](x, y, 100, 1, scale=2.0, seed=5, FLAG=True, MODE="b"),
            "keywords in another order":
                lambda k: k[(2,)](x, y, 100, 1, MODE="b", FLAG=True, seed=5, scale=2.0),
            "a constexpr passed": lambda k: k[(1,)](x, y, 100, 1, 2.0, 5, True, "a", 128),
            "an option": lambda k: k[(2,)](x, y, 100, 1, 2.0, 5, True, num_warps=2),
            "a Triton dtype constexpr": lambda k: k[(2,)](x, y, 100, 1, 2.0, 5, True, ACC=tl.float64),
            "a callable grid": lambda k: k[lambda m: (triton.cdiv(m["n"], m["BLOCK"]), 1, 1)](
                x, y, 100, 1, 2.0, 5, True),
            "a 2-D grid, y an offset view": lambda k: k[(2, 3)](x, y[16:], 100, 1, 2.0, 5, True),
        }
        kernels = {what: _check(call, lau, what) for what, call in cases.items()}
        checks += len(cases)
        # Triton's own specialisation, seen through the kernels both paths chose
        base = kernels["base"]
        for what in ("x 4 bytes off 16-byte alignment", "n == 1", "n divisible by 16", "stride 2 (not 1)",
                     "fp16", "seed past int32", "seed past int64", "constexpr False", "an option",
                     "a Triton dtype constexpr", "keywords, default left out"):
            assert kernels[what] is not base, f"{what}: expected a kernel of its own"
        for what in ("another float", "a callable grid", "a 2-D grid, y an offset view"):
            assert kernels[what] is base, f"{what}: expected the base kernel"
        assert kernels["keywords in another order"] is kernels["keywords, default left out"]
        # a seed is keyed by its size class: another int32 seed reuses the base's entry
        lau.fn = _NoSlowPath()
        LOG.clear()
        lau[(2,)](x, y, 100, 1, 2.0, 123456, True)
        # the launcher gets (..., seed, FLAG, MODE, BLOCK, ACC)
        assert LOG[-1][0] is base and LOG[-1][1][-5] == 123456, LOG[-1][1]
        lau.fn = _probe
        checks += 1

        # an autotuned kernel through Tuned: the memo launches the config the autotuner chose
        configs = [triton.Config({"BLOCK": 32}), triton.Config({"BLOCK": 128}, num_warps=2)]
        Autotuner._bench = lambda self, *a, config, **k: [1.0 / config.kwargs["BLOCK"]] * 3
        tuned = Tuned(triton.autotune(configs=configs, key=["n"])(_probe))
        grid = lambda m: (triton.cdiv(m["n"], m["BLOCK"]),)  # noqa: E731
        pick = configs[1].all_kwargs()  # the choice, as Autotuner.run passes it
        for what, call in {
            "tuned": lambda k: k[grid](x, y, 100, 1, 2.0, 5, True),
            "tuned, another n": lambda k: k[grid](x, y, 37, 1, 2.0, 5, True),
        }.items():
            if isinstance(tuned.tuner, Autotuner):
                call(tuned)  # tune first, so that Triton's path below can name the choice

            def direct(k, call=call, pick=pick):
                return call(k) if not isinstance(k, JITFunction) else call(_Pinned(k, pick))

            got = _check(direct, tuned, what)
            assert got.metadata.num_warps == 2, got.metadata
            checks += 1

        # the real conv forward (split-K at batch 1: the conv launch and its epilogue)
        from tritonnet import kernels as tk
        from tritonnet.kernels import conv as kconv

        kconv._configs = lambda: [triton.Config({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8},
                                                num_warps=4, num_stages=3)]
        xc = torch.randn(1, 64, 9, 9, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        wc = torch.randn(64, 64, 3, 3, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        out = torch.empty(0)

        def conv(k):
            nonlocal out
            out = tk.conv2d_forward(xc, wc, None, (1, 1), (1, 1), (1, 1), 1)

        with _launch.tritons_own_path():
            LOG.clear()
            conv(None)
            want = list(LOG)
        conv(None)  # keeps both launches
        LOG.clear()
        conv(None)
        assert len(LOG) == len(want) == 2, (len(LOG), len(want))
        for got, ref in zip(LOG, want):  # the output and partial sums are new buffers each call
            _same(got, ref, "conv2d_forward", address=False)
        checks += 1
        checks += _every_family_is_served()
    print(f"ok {checks} checks")
    return 0


def _every_family_is_served() -> int:
    """Each op family's second identical call is served by the memo: nothing new is kept and
    no launch falls back for want of a key (a seed keyed by value, an argument of a type the
    memo does not key, both seen while writing this). The first config of each autotuner."""
    import tritonnet.functional as F
    import tritonnet.kernels

    Autotuner.prune_configs = lambda self, kwargs: self.configs[:1]
    Autotuner._bench = lambda self, *a, config, **k: [1.0] * 3
    kept, unkeyed = [], []
    keep, slot = _launch.Memo.keep, _launch.Memo.slot

    def counted_keep(self, *args):
        kept.append(self.fn.__name__)
        return keep(self, *args)

    def counted_slot(self, args, kwargs):
        got = slot(self, args, kwargs)
        if got is None:
            unkeyed.append(self.fn.__name__)
        return got

    _launch.Memo.keep, _launch.Memo.slot = counted_keep, counted_slot
    bf = torch.bfloat16
    x4 = torch.randn(2, 16, 12, 12, dtype=bf).to(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(16, 16, 3, 3, dtype=bf, requires_grad=True)
    x2 = torch.randn(8, 10, requires_grad=True)
    t = torch.tensor([1, 2, 3, 4, 5, 6, 7, -100])
    lw = torch.randn(32, 10, requires_grad=True)
    t2 = torch.randn(8, 10)
    wd = torch.randn(16, 1, 3, 3, dtype=bf, requires_grad=True)
    xs = torch.randn(1, 16, 64, 64, dtype=bf, requires_grad=True)  # 2x2 windows: rows split
    seed = torch.tensor(5)

    def grad(y):
        y.float().sum().backward()

    calls = {
        "conv2d": lambda: grad(F.conv2d(x4, w, padding=1)),
        "conv_transpose2d": lambda: grad(F.conv_transpose2d(x4, w, stride=2)),
        "max_pool2d": lambda: grad(F.max_pool2d(x4, 3, 2, 1)),
        "avg_pool2d": lambda: grad(F.avg_pool2d(x4, 2)),
        "adaptive_max_pool2d": lambda: grad(F.adaptive_max_pool2d(x4, 5)),
        "adaptive_avg_pool2d": lambda: grad(F.adaptive_avg_pool2d(x4, 1)),
        "interpolate": lambda: grad(F.interpolate(x4, scale_factor=2)),
        "unfold": lambda: grad(F.unfold(x4, 3)),
        "relu": lambda: grad(F.relu(x4)),
        "dropout": lambda: grad(F.dropout(x4, 0.3)),
        "dropout, the seed in memory (CUDA graph capture)":
            lambda: tritonnet.kernels.dropout_forward(x4.detach(), 0.3, seed),
        "depthwise conv2d (the stencils)": lambda: grad(F.conv2d(x4, wd, padding=1, groups=16)),
        "adaptive pools, window rows split": lambda: (grad(F.adaptive_avg_pool2d(xs, 2)),
                                                      grad(F.adaptive_max_pool2d(xs, 2))),
        "softmax": lambda: grad(F.softmax(x2, 1)),
        "cross_entropy": lambda: grad(F.cross_entropy(x2, t)),
        "nll_loss": lambda: grad(F.nll_loss(x2, t)),
        "mse_loss": lambda: grad(F.mse_loss(x2, t2)),
        "linear": lambda: grad(F.linear(x2, lw)),
    }
    try:
        for what, call in calls.items():
            call()
            kept.clear()
            call()
            assert not kept and not unkeyed, f"{what}: kept again {kept}, not keyed {unkeyed}"
    finally:
        _launch.Memo.keep, _launch.Memo.slot = keep, slot
    return len(calls)


class _Pinned:
    """Triton's own launch of a JITFunction with a config's constexprs and options added."""

    def __init__(self, fn, config):
        self.fn, self.config = fn, config

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.fn.run(*args, grid=grid, warmup=False, **kwargs, **self.config)


if __name__ == "__main__":
    raise SystemExit(main())
