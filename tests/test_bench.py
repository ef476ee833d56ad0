"""The benchmark suite without a GPU: the CSV schema from injected timers, FLOP and byte
counts, the correctness gate, the plot step, the no-CUDA exit; and one GPU run end to end."""

import argparse
import importlib
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from tritonnet.bench import conv, harness, linear, plot, suite

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ["op", "provider", "mode", "shape", "dtype", "layout", "metric", "p50", "p20", "p80",
            "device", "versions", "timestamp"]
ENV = {"device": "fake", "versions": "torch x; triton y", "timestamp": "2026-01-01T00:00:00+00:00"}
TINY = [
    linear.Case("odd", 37, 70, 45, quick=True),  # odd sizes, above one interpreter block (32)
    linear.Case("batch1", 1, 33, 5),  # batch 1; K one past a block
]


def fake_timer(times=(2.0, 1.5, 3.0), calls=None):
    """Returns fixed quantiles (ms); calls fn once so the timed closure really runs."""

    def timer(fn, grad_to_none=None):
        fn()
        for t in grad_to_none or ():
            t.grad = None
        if calls is not None:
            calls.append(fn)
        return times

    return timer


def parse(*argv):
    return suite.add_arguments(argparse.ArgumentParser()).parse_args(list(argv))


# ---------------------------------------------------------------------------------------------
# arithmetic


def test_flops():
    # 2*M*N*K per GEMM: forward 1, backward 2 (dx, dW), both 3
    assert linear.flops(128, 10, 64, "forward") == 2 * 128 * 10 * 64 == 163840
    assert linear.flops(128, 10, 64, "backward") == 2 * 163840
    assert linear.flops(128, 10, 64, "forward+backward") == 3 * 163840
    with pytest.raises(KeyError):
        linear.flops(1, 1, 1, "sideways")


def test_min_bytes():
    M, N, K = 3, 5, 7
    x, w, b, y = M * K, N * K, N, M * N  # 21, 35, 5, 15
    assert linear.min_bytes(M, N, K, "forward", 2) == 2 * (x + w + b + y) == 152
    # backward: read dy, W, x; write dx, dW, db
    assert linear.min_bytes(M, N, K, "backward", 4) == 4 * (y + w + x + x + w + b) == 528
    # both: read x, W, b, dy; write y, dx, dW, db
    assert linear.min_bytes(M, N, K, "forward+backward", 2) == 2 * 2 * (x + w + b + y) == 304
    assert linear.min_bytes(M, N, K, "forward", 2, bias=False) == 2 * (x + w + y)


def test_rates_and_fractions():
    """TFLOP/s, GB/s and fractions from a known time, with quantiles mirrored for rates."""
    rec = harness.Recorder(ENV, fake_timer((2.0, 1.0, 4.0)))
    rec.ceilings.update({"matmul:bf16": 100.0, "copy": 1000.0})
    flops, nbytes = 4e9, 1e9  # 2 ms -> 2 TFLOP/s, 500 GB/s
    rec.measure(lambda: None, op="linear", provider="tritonnet", mode="forward", shape="s",
                dtype="fp16", layout="contiguous", flops=flops, nbytes=nbytes)
    df = rec.frame().set_index("metric")
    assert list(df.index) == ["time", "TFLOP/s", "GB/s"]
    t, tf, gb = df.loc["time"], df.loc["TFLOP/s"], df.loc["GB/s"]
    assert (t.p50, t.p20, t.p80, t.unit) == (2.0, 1.0, 4.0, "ms")
    # the 20th percentile of a rate is the work over the 80th percentile of time
    assert (tf.p50, tf.p20, tf.p80) == pytest.approx((2.0, 1.0, 4.0))
    assert (gb.p50, gb.p20, gb.p80) == pytest.approx((500.0, 250.0, 1000.0))
    # fp16 has no ceiling of its own here: bf16's is used, and named
    assert tf.fraction_of_ceiling == pytest.approx(0.02) and tf.ceiling == "matmul:bf16"
    assert gb.fraction_of_ceiling == pytest.approx(0.5) and gb.ceiling == "copy"
    # floor = max(4e9 / 100e12 s, 1e9 / 1000e9 s) = max(0.04 ms, 1 ms) = 1 ms; 2 ms measured
    assert t.fraction_of_ceiling == pytest.approx(0.5) and t.ceiling == "floor"


def test_rel_err():
    ref = torch.tensor([3.0, 4.0])
    assert harness.rel_err(ref, ref) == 0
    assert harness.rel_err(torch.tensor([3.0, 4.5]), ref) == pytest.approx(0.1)
    assert harness.rel_err(torch.tensor([3.0, float("nan")]), ref) == math.inf
    assert harness.rel_err(torch.ones(3), ref) == math.inf  # shape mismatch


def test_precision_sets_tf32_on_both_flags_and_restores():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with harness.precision("fp32-tf32"):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    with harness.precision("fp32"):
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == saved


def test_slug():
    assert harness.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


# ---------------------------------------------------------------------------------------------
# the CSV: schema and content from the real linear benchmark on CPU with a fake timer


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """linear on CPU (Triton's interpreter for tritonnet) with fake timers: rows and CSV."""
    tmp_path = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    calls = []
    rec = harness.Recorder(harness.environment("cpu"), fake_timer(calls=calls),
                           loop=fake_timer((0.5, 0.4, 0.6)), csv_path=tmp_path / "results.csv",
                           log=lambda *a: None)
    rec.ceilings.update({"matmul:bf16": 500.0, "copy": 2000.0})
    linear.run(rec, device="cpu", dtypes=["fp32", "bf16"], cases=TINY)
    return rec, calls, tmp_path / "results.csv"


def test_csv_schema(cpu_run):
    rec, calls, csv = cpu_run
    assert not rec.failures, rec.failures
    df = pd.read_csv(csv)
    assert list(df.columns[: len(REQUIRED)]) == REQUIRED
    assert list(df.columns) == harness.COLUMNS + harness.EXTRA_COLUMNS
    assert df[REQUIRED].notna().all().all()
    assert set(df["metric"]) == {"rel_err", "first_call", "time", "TFLOP/s", "GB/s", "time_loop"}
    assert set(df["provider"]) == {"tritonnet", "torch"}
    assert set(df["mode"]) == {"forward", "backward", "forward+backward"}
    assert set(df["dtype"]) == {"fp32", "bf16"}
    assert set(df["shape"]) == {"M=37,K=70,N=45", "M=1,K=33,N=5"}
    assert (df["layout"] == "contiguous").all() and (df["op"] == "linear").all()
    assert (df["p20"] <= df["p50"]).all() and (df["p50"] <= df["p80"]).all()
    # 2 cases x 2 dtypes x 2 providers: 2 check rows + 3 modes x 4 metrics each
    assert len(df) == 2 * 2 * 2 * (2 + 3 * 4)
    # every mode of every (case, dtype, provider) was timed, and really ran
    assert len(calls) == 2 * 2 * 2 * 3
    # the TFLOP/s row is flops over the (fake) 2 ms
    row = df[(df["metric"] == "TFLOP/s") & (df["shape"] == "M=37,K=70,N=45")
             & (df["mode"] == "backward")].iloc[0]
    assert row["p50"] == pytest.approx(linear.flops(37, 45, 70, "backward") / 2e-3 / 1e12)
    assert row["unit"] == "TFLOP/s" and row["ceiling"] == "matmul:bf16"


def test_correctness_recorded(cpu_run):
    rec, _, csv = cpu_run
    df = pd.read_csv(csv)
    checks = df[df["metric"] == "rel_err"]
    assert len(checks) == 2 * 2 * 2 and (checks["check"] == "ok").all()
    for dtype, tol in harness.TOLERANCE.items():
        errs = checks.loc[checks["dtype"] == dtype, "p50"]
        assert (errs <= tol).all() and (errs >= 0).all()
    assert (df.loc[df["metric"] == "time", "rel_err"] >= 0).all()


def test_wrong_provider_fails_loudly_and_is_not_timed(monkeypatch):
    """The correctness gate can fail: a provider off by 1% is recorded FAIL, never timed."""
    real = linear.make_provider

    def make(name):
        fn = real(name)
        return (lambda x, w, b: fn(x, w, b) * 1.01) if name == "torch" else fn

    monkeypatch.setattr(linear, "make_provider", make)
    rec = harness.Recorder(ENV, fake_timer(), log=lambda *a: None)
    linear.run(rec, device="cpu", dtypes=["fp32"], cases=TINY[:1])
    df = rec.frame()
    bad = df[df["provider"] == "torch"]
    assert set(bad["metric"]) == {"rel_err", "first_call"} and (bad["check"] == "FAIL").all()
    assert bad["rel_err"].iloc[0] == pytest.approx(0.01, rel=0.05)
    assert len(rec.failures) == 1 and "torch" in rec.failures[0]
    assert "relative error" in rec.failures[0]
    table = harness.summary_table(df)
    assert (table["check"] == "FAIL torch").all()


def test_deadline_skips_cases():
    rec = harness.Recorder(ENV, fake_timer(), log=lambda *a: None)
    linear.run(rec, device="cpu", dtypes=["fp32"], cases=TINY, deadline=0.0)
    assert rec.rows == [] and len(rec.skipped) == 2


def test_select_cases():
    assert [c.label for c in linear.select_cases(quick=True)] == [
        "mlp.fc1", "lenet.fc1", "resnet.fc", "square4096"]
    assert {c.label for c in linear.select_cases(shapes=["lenet"])} == {
        "lenet.fc1", "lenet.fc2", "lenet.fc3"}
    # the sizes the brief names: the MLP, LeNet-5's FC layers, ResNet's head, square GEMMs
    sizes = {(c.M, c.K, c.N) for c in linear.CASES}
    assert {(128, 64, 128), (128, 128, 64), (128, 64, 10), (128, 400, 120), (128, 120, 84),
            (128, 84, 10), (128, 512, 1000), (4096, 4096, 4096)} <= sizes


# ---------------------------------------------------------------------------------------------
# the plot step and the table


def synthetic_frame():
    rec = harness.Recorder(ENV, fake_timer())
    rec.ceilings.update({"matmul:bf16": 700.0, "copy": 3000.0})
    rec.add(op="ceiling", provider="torch", mode="matmul", shape="8192x8192x8192", dtype="bf16",
            layout="contiguous", metric="TFLOP/s", p50=700.0, unit="TFLOP/s")
    for label, (M, K, N) in {"a": (128, 64, 10), "b": (4096, 4096, 4096)}.items():
        for p, ms in [("tritonnet", 0.02), ("torch", 0.01)]:
            for mode in linear.MODES:
                rec.timer = fake_timer((ms, ms * 0.9, ms * 1.2))
                rec.measure(lambda: None, op="linear", provider=p, mode=mode,
                            shape=f"M={M},K={K},N={N}", dtype="bf16", layout="contiguous",
                            label=label, flops=linear.flops(M, N, K, mode),
                            nbytes=linear.min_bytes(M, N, K, mode, 2))
    return rec.frame()


def test_plot_writes_png(tmp_path):
    csv = tmp_path / "results.csv"
    synthetic_frame().to_csv(csv, index=False)
    paths = plot.plot_csv(csv)
    assert paths == [tmp_path / "linear.png"]
    data = paths[0].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_plot_main_writes_table(tmp_path, capsys):
    csv = tmp_path / "results.csv"
    synthetic_frame().to_csv(csv, index=False)
    assert plot.main([str(csv)]) == 0
    text = (tmp_path / "table.txt").read_text()
    assert "ratio" in text and len(text.splitlines()) == 1 + 6  # header + 2 cases x 3 modes
    assert text.strip() in capsys.readouterr().out
    assert (tmp_path / "linear.png").exists()


def test_summary_table():
    t = harness.summary_table(synthetic_frame())
    assert list(t["mode"]) == ["fwd", "bwd", "fwd+bwd"] * 2  # run order, modes in order
    assert t["ratio"].tolist() == pytest.approx([0.5] * 6)  # 0.02 ms against 0.01 ms
    assert t["ours_us"].tolist() == pytest.approx([20.0] * 6)
    assert (t["check"] == "ok").all()


# ---------------------------------------------------------------------------------------------
# the suite's entry points


def test_arguments_defaults():
    args = parse()
    assert args.ops == list(suite.OPS) and {"linear", "conv"} <= set(args.ops)
    assert args.dtypes == ["bf16", "fp16", "fp32-tf32", "fp32"]
    assert args.plot and not args.quick and args.out is None and args.providers is None
    args = parse("--quick", "--no-plot", "--dtypes", "bf16", "--out", "x")
    assert args.quick and not args.plot and args.dtypes == ["bf16"] and args.out == Path("x")


def test_run_without_cuda_exits_with_message(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        suite.run(parse("--quick"))
    assert "timings come from a GPU only; no CUDA device found" in str(e.value.code)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA exit status")
def test_module_without_cuda_exit_status():
    r = subprocess.run([sys.executable, "-m", "tritonnet.bench", "--quick"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "no CUDA device found" in r.stderr


def test_suite_run_cpu_fake_timer(tmp_path):
    """The whole run (ceilings, cases, CSV, env.json, table, plot) on CPU with a fake timer."""
    args = parse("--shapes", "mlp.fc3", "--dtypes", "fp32", "--ceiling-size", "64",
                 "--out", str(tmp_path), "--no-loop-timing")
    rc = suite.run(args, device="cpu", timer=lambda fn, g=None: (0.01, 0.009, 0.012))
    assert rc == 0
    assert {p.name for p in tmp_path.iterdir()} == {"results.csv", "env.json", "table.txt",
                                                    "linear.png"}
    df = pd.read_csv(tmp_path / "results.csv")
    ceil = df[df["op"] == "ceiling"]
    assert set(ceil["mode"]) == {"copy", "matmul"} and set(ceil["dtype"]) >= {"bf16", "fp32"}
    assert "mlp.fc3" in (tmp_path / "table.txt").read_text()


def test_budget_keeps_a_share_for_each_later_op(tmp_path, monkeypatch):
    """Under --budget-s the first op stops starting cases early enough for the ones after it:
    each later op keeps LATER_OP_SHARE of the budget; the last op gets the whole deadline."""
    seen = {}
    for name in ("conv", "linear", "pool"):
        mod = importlib.import_module(suite.OPS[name])
        monkeypatch.setattr(mod, "run", lambda rec, *, deadline, n=name, **kw: seen.setdefault(n, deadline))
    args = parse("--ops", "conv", "linear", "pool", "--budget-s", "200", "--dtypes", "fp32",
                 "--ceiling-size", "64", "--out", str(tmp_path), "--no-loop-timing", "--no-plot")
    t0 = time.monotonic()
    assert suite.run(args, device="cpu", timer=lambda fn, g=None: (0.01, 0.009, 0.012)) == 0
    share = suite.LATER_OP_SHARE * 200
    assert seen["linear"] - seen["conv"] == pytest.approx(share)
    assert seen["pool"] - seen["linear"] == pytest.approx(share)
    assert t0 + 200 <= seen["pool"] <= time.monotonic() + 200
    assert suite.op_deadline(None, None, 2) is None


def test_gpu_session_script_parses():
    r = subprocess.run(["bash", "-n", str(REPO / "bench" / "gpu_session.sh")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------------------------
# GPU


@pytest.mark.gpu
def test_quick_linear_benchmark_on_gpu(tmp_path):
    """Ceilings, checks and timings of the small MLP layers in bf16, end to end on the GPU."""
    args = parse("--quick", "--shapes", "mlp", "--dtypes", "bf16", "--out", str(tmp_path),
                 "--rep", "20", "--warmup", "5", "--ceiling-size", "4096")
    assert suite.run(args) == 0
    df = pd.read_csv(tmp_path / "results.csv")
    assert (df.loc[df["metric"] == "rel_err", "check"] == "ok").all()
    rates = df[(df["op"] == "linear") & (df["metric"] == "TFLOP/s")]
    assert set(rates["provider"]) == {"tritonnet", "torch"}
    assert len(rates) == 1 * 3 * 2  # --quick keeps one MLP layer (mlp.fc1): 3 modes x 2
    assert (rates["p50"] > 0).all() and rates["p50"].map(math.isfinite).all()
    ceilings = df[df["op"] == "ceiling"]
    assert set(ceilings["mode"]) == {"copy", "matmul"} and (ceilings["p50"] > 0).all()
    assert (tmp_path / "linear.png").exists()
    assert os.path.getsize(tmp_path / "env.json") > 0


# ---------------------------------------------------------------------------------------------
# conv: arithmetic, the case list and run order, a CPU run through the interpreter, the gate

TINY_CONV = [
    # stride 2 with padding on an odd 9x9 input, 5 -> 7 channels: the input grad's masked taps
    conv.Case("resnet18", "tiny.s2", 2, 5, 7, 9, 9, 3, 3, 2, 1, quick=True),
    # 1x1 with a bias on a non-square input, batch 1 (LeNet's layers carry a bias)
    conv.Case("lenet5", "tiny.1x1", 1, 3, 4, 6, 5, 1, 1, bias=True),
]
# torchvision's resnet18 on 224x224, its distinct convs: (C_in, C_out, kernel, stride, H)
RESNET18 = {
    (3, 64, 7, 2, 224),
    (64, 64, 3, 1, 56),
    (64, 128, 3, 2, 56), (64, 128, 1, 2, 56), (128, 128, 3, 1, 28),
    (128, 256, 3, 2, 28), (128, 256, 1, 2, 28), (256, 256, 3, 1, 14),
    (256, 512, 3, 2, 14), (256, 512, 1, 2, 14), (512, 512, 3, 1, 7),
}


def test_conv_flops_and_bytes():
    c = conv.Case("resnet18", "x", 2, 4, 6, 9, 9, 3, 3, stride=2, padding=1)
    assert (c.OH, c.OW) == (5, 5)
    one = 2 * 2 * 5 * 5 * 6 * 4 * 3 * 3  # 2*N*OH*OW*C_out*Cg*KH*KW
    for mode in ("forward", "input-grad", "weight-grad"):
        assert conv.flops(c, mode) == one == 21600
    assert conv.flops(c, "forward+backward") == 3 * one
    g = conv.Case("resnet18", "x", 2, 4, 6, 9, 9, 3, 3, stride=2, padding=1, groups=2)
    assert g.Cg == 2 and conv.flops(g, "forward") == one // 2
    x, w, y = 2 * 4 * 81, 6 * 4 * 9, 2 * 6 * 25  # 648, 216, 300
    assert conv.min_bytes(c, "forward", 2) == 2 * (x + w + y) == 2328
    assert conv.min_bytes(c, "input-grad", 2) == 2 * (y + w + x)  # read dy, w; write dx
    assert conv.min_bytes(c, "weight-grad", 4) == 4 * (y + x + w)  # no bias: no db
    b = conv.Case("lenet5", "x", 2, 4, 6, 9, 9, 3, 3, stride=2, padding=1, bias=True)
    assert conv.min_bytes(b, "weight-grad", 4) == 4 * (y + x + w + 6)  # db written too
    assert conv.min_bytes(b, "forward", 2) == 2 * (x + w + 6 + y)
    assert conv.min_bytes(b, "forward+backward", 2) == 2 * 2 * (x + w + 6 + y)
    with pytest.raises(KeyError):
        conv.flops(c, "backward")  # conv times the two gradients on their own


def test_conv_cases_cover_resnet18_and_lenet5():
    convs = [c for c in conv.CASES if not c.transposed and c.groups == 1]
    for n in conv.BATCHES:
        at = [c for c in convs if c.N == n]
        assert {(c.C_in, c.C_out, c.KH, c.stride, c.H) for c in at if c.net == "resnet18"} == RESNET18
        assert {(c.C_in, c.C_out, c.KH, c.stride, c.H) for c in at if c.net == "lenet5"} == {
            (1, 6, 5, 1, 32), (6, 16, 5, 1, 14)}
    assert set(conv.BATCHES) == {1, 32, 128}
    assert len({c.label for c in conv.CASES}) == len(conv.CASES) == len(convs) + 9 + 2 == 13 * 3 + 11
    for c in [c for c in conv.CASES if c.groups > 1]:  # MobileNetV2's depthwise 3x3s
        assert c.net == "mobilenetv2" and c.groups == c.C_in == c.C_out and c.w_shape[1] == 1
    for c in convs:
        assert c.H == c.W and c.KH == c.KW and c.groups == 1
        assert (c.bias, c.padding) == ((False, c.KH // 2) if c.net == "resnet18" else (True, 0))
    # the layers chain: each stage starts where the last one ended
    L = {c.layer: c for c in conv.CASES if c.net == "resnet18" and c.N == 32}
    assert L["stem"].OH == 112 and (112 + 2 - 3) // 2 + 1 == L["layer1"].H  # 3x3/2 max pool
    prev = L["layer1"]
    assert prev.OH == prev.H == 56
    for s in (2, 3, 4):
        s2, down, same = L[f"layer{s}.s2"], L[f"layer{s}.down"], L[f"layer{s}"]
        assert s2.H == down.H == prev.OH and s2.C_in == down.C_in == prev.C_out
        assert s2.OH == down.OH == same.H == same.OH
        assert s2.C_out == down.C_out == same.C_in == same.C_out == 2 * prev.C_out
        prev = same
    assert (prev.OH, prev.C_out) == (7, 512)
    lenet = {c.layer: c for c in conv.CASES if c.net == "lenet5" and c.N == 32}
    assert lenet["conv1"].OH == 28 and lenet["conv1"].OH // 2 == lenet["conv2"].H
    assert lenet["conv2"].OH == 10


def test_conv_transposed_cases_chain_and_are_adjoint_convs():
    """The DCGAN generator's and the U-Net decoder's up-sampling layers: each doubles the
    map its predecessor made; each is the adjoint of a conv2d from its output to its input,
    with that conv's FLOPs and bytes."""
    T = {c.label: c for c in conv.CASES if c.transposed}
    assert len(T) == 9 and all(c.N in (128, 16) and not c.quick for c in T.values())
    for net, layers, size in [("dcgan", ["up0", "up1", "up2", "up3", "rgb"], 64),
                              ("unet", ["up1", "up2", "up3", "up4"], 256)]:
        chain = [next(c for c in T.values() if c.net == net and c.layer == n) for n in layers]
        for a, b in zip(chain, chain[1:]):
            assert (a.OH, a.OW, a.C_out) == (b.H, b.W, b.C_in)
        assert chain[-1].OH == size and chain[0].N == chain[-1].N
    up = T["dcgan.up1.b128"]
    assert (up.H, up.OH, up.w_shape) == (4, 8, (512, 256, 4, 4))
    assert up.shape == "T:x=128x512x4x4,w=512x256x4x4,s=2,p=1"
    t = conv.Case("unet", "x", 2, 6, 4, 5, 7, 3, 3, stride=2, padding=1, groups=2, bias=True,
                  transposed=True, output_padding=1)
    assert (t.OH, t.OW, t.w_shape) == (10, 14, (6, 2, 3, 3))
    assert t.shape == "T:x=2x6x5x7,w=6x2x3x3,s=2,p=1,op=1,g=2"
    # the conv2d it is the adjoint of: from (4 channels, 10x14) back to (6 channels, 5x7)
    c = conv.Case("unet", "x", 2, 4, 6, 10, 14, 3, 3, stride=2, padding=1, groups=2, bias=True)
    assert (c.OH, c.OW) == (t.H, t.W) and c.w_shape == t.w_shape
    for mode in conv.MODES:
        assert conv.flops(t, mode) == conv.flops(c, mode) > 0
    x, w, y = 2 * 6 * 5 * 7, 6 * 2 * 3 * 3, 2 * 4 * 10 * 14
    assert conv.min_bytes(t, "forward", 2) == 2 * (x + w + 4 + y)  # read x, w, b; write y
    assert conv.min_bytes(t, "weight-grad", 4) == 4 * (y + x + w + 4)


def test_conv_plan_puts_the_target_first():
    order = conv.plan(conv.CASES, list(harness.DTYPES), conv.LAYOUTS)
    assert len(order) == len(set(order)) == (13 * 3 + 11) * 4 * 2  # everything, once
    head = [(d, lay, c.label) for d, lay, c in order[:2]]
    assert head == [("bf16", "channels_last", "resnet18.layer1.b32"),
                    ("bf16", "channels_last", "resnet18.layer2.s2.b32")]
    target = order[:22]  # the quick two, then the rest of ResNet-18 at batch 32, then 128
    assert all(d == "bf16" and lay == "channels_last" and c.net == "resnet18" for d, lay, c in target)
    assert [c.N for _, _, c in target[2:]] == [32] * 9 + [128] * 11
    # then the quick cases in the other dtypes, channels_last, in the order
    assert [(d, lay, c.quick) for d, lay, c in order[22:28]] == [
        (d, "channels_last", True) for d in ("fp32-tf32", "fp32", "fp16") for _ in range(2)]
    assert all(d != "bf16" or lay != "channels_last" or c.N == 1 or c.net == "lenet5" or c.transposed
               or c.groups > 1 for d, lay, c in order[28:])
    # conv_transpose2d after every conv2d case of its dtype and layout
    for d, lay in {(d, lay) for d, lay, _ in order}:
        kinds = [c.transposed for dd, ll, c in order if (dd, ll) == (d, lay)]
        assert kinds == sorted(kinds) and sum(kinds) == 9
    # --quick: the quick cases in the first dtype by priority only
    assert [(d, c.label) for d, _, c in conv.plan(conv.CASES, ["fp16", "bf16"], quick=True)] == [
        ("bf16", "resnet18.layer1.b32"), ("bf16", "resnet18.layer2.s2.b32")]
    assert {d for d, _, _ in conv.plan(conv.CASES, ["fp16", "fp32"], quick=True)} == {"fp32"}
    assert {c.label for c in conv.select_cases(shapes=["layer4.down"])} == {
        f"resnet18.layer4.down.b{n}" for n in conv.BATCHES}


def test_conv_inputs_in_layout():
    gen = torch.Generator().manual_seed(0)
    x, w, b, dy = conv._inputs(TINY_CONV[0], "channels_last", torch.bfloat16, "cpu", gen)
    for t in (x, w, dy):
        assert t.dtype == torch.bfloat16 and not t.is_contiguous()
        assert t.is_contiguous(memory_format=torch.channels_last)
    assert b is None and tuple(dy.shape) == (2, 7, 5, 5) and (x != 0).all()
    x, w, b, dy = conv._inputs(TINY_CONV[1], "contiguous", torch.float32, "cpu", gen)
    assert all(t.is_contiguous() for t in (x, w, b, dy)) and tuple(b.shape) == (4,)


@pytest.fixture(scope="module")
def conv_cpu_run():
    """conv on CPU (Triton's interpreter for tritonnet), bf16, both layouts, a fake timer."""
    torch.manual_seed(0)
    calls = []
    rec = harness.Recorder(harness.environment("cpu"), fake_timer(calls=calls), log=lambda *a: None)
    rec.ceilings.update({"matmul:bf16": 500.0, "copy": 2000.0})
    conv.run(rec, device="cpu", dtypes=["bf16"], cases=TINY_CONV)
    return rec, calls


def test_conv_cpu_run_rows(conv_cpu_run):
    rec, calls = conv_cpu_run
    assert not rec.failures, rec.failures
    df = rec.frame()
    assert df[REQUIRED].notna().all().all() and (df["op"] == "conv").all()
    assert set(df["mode"]) == set(conv.MODES) and set(df["provider"]) == {"tritonnet", "torch"}
    assert set(df["layout"]) == {"channels_last", "contiguous"}
    assert set(df["label"]) == {"resnet18.tiny.s2.b2", "resnet18.tiny.s2.b2.cl",
                                "lenet5.tiny.1x1.b1", "lenet5.tiny.1x1.b1.cl"}
    # per (case, layout, provider): rel_err and first_call per mode, then time, TFLOP/s, GB/s
    assert len(df) == 2 * 2 * 2 * 4 * (2 + 3)
    assert len(calls) == 2 * 2 * 2 * 4  # every mode of every provider really ran
    checks = df[df["metric"] == "rel_err"]
    assert (checks["check"] == "ok").all() and (checks["p50"] <= harness.TOLERANCE["bf16"]).all()
    c = TINY_CONV[0]
    row = df[(df["metric"] == "TFLOP/s") & (df["label"] == "resnet18.tiny.s2.b2.cl")
             & (df["mode"] == "weight-grad") & (df["provider"] == "tritonnet")].iloc[0]
    assert row["p50"] == pytest.approx(conv.flops(c, "weight-grad") / 2e-3 / 1e12)
    assert row["shape"] == "x=2x5x9x9,w=7x5x3x3,s=2,p=1"


def test_conv_cpu_run_table_and_geomean(conv_cpu_run):
    rec, _ = conv_cpu_run
    df = rec.frame()
    t = harness.summary_table(df)
    assert list(t["mode"][:4]) == ["fwd", "dx", "dw", "fwd+bwd"] and len(t) == 4 * 4
    assert (t["check"] == "ok").all() and t["ratio"].tolist() == pytest.approx([1.0] * 16)
    lines = conv.headline(df)  # only the ResNet-18 case in bf16 channels_last counts
    assert len(lines) == 1 + 4 and "bf16 channels_last" in lines[0]
    assert lines[2].split()[:3] == ["input-grad", "1x", "n=1"]
    text = suite.report(df)
    assert text.endswith("\n".join(lines)) and "resnet18.tiny.s2.b2.cl" in text


def test_conv_transposed_cpu_run():
    """A conv_transpose2d case (stride 2, output padding, groups, a bias) through the
    interpreter: each provider's forward, both gradients and the training step agree with
    float64 (a tritonnet call with x and dy swapped, or a missing bias, would fail the check)
    and every mode is timed; the headline ignores it."""
    case = conv.Case("unet", "tiny.T", 2, 6, 4, 5, 4, 3, 3, stride=2, padding=1, groups=2, bias=True,
                     transposed=True, output_padding=1)
    calls = []
    rec = harness.Recorder(harness.environment("cpu"), fake_timer(calls=calls), log=lambda *a: None)
    rec.ceilings.update({"matmul:fp32": 50.0, "copy": 2000.0})
    conv.run(rec, device="cpu", dtypes=["fp32"], cases=[case])
    assert not rec.failures, rec.failures
    df = rec.frame()
    checks = df[df["metric"] == "rel_err"]
    assert len(checks) == 2 * 2 * 4 and (checks["check"] == "ok").all()
    assert (checks["p50"] <= 1e-5).all()  # fp32 with TF32 off: far inside the tolerance
    assert len(calls) == 2 * 2 * 4 and set(df["shape"]) == {case.shape}
    row = df[(df["metric"] == "TFLOP/s") & (df["mode"] == "forward")].iloc[0]
    assert row["p50"] == pytest.approx(conv.flops(case, "forward") / 2e-3 / 1e12)
    assert conv.headline(df) == []


def test_conv_headline_geomean():
    rec = harness.Recorder(ENV, fake_timer())
    cases = [  # (label, dtype, layout, tritonnet ms, torch ms)
        ("resnet18.a.b32.cl", "bf16", "channels_last", 1.0, 2.0),  # 2x
        ("resnet18.b.b32.cl", "bf16", "channels_last", 4.0, 2.0),  # 0.5x
        ("resnet18.a.b128.cl", "bf16", "channels_last", 4.0, 1.0),  # 0.25x
        ("resnet18.a.b32", "bf16", "contiguous", 1.0, 9.0),  # other layout: not counted
        ("resnet18.a.b32.cl", "fp16", "channels_last", 1.0, 9.0),  # other dtype: not counted
        ("lenet5.a.b32.cl", "bf16", "channels_last", 1.0, 9.0),  # other net: not counted
    ]
    for label, dtype, layout, ours, theirs in cases:
        for p, ms in [("tritonnet", ours), ("torch", theirs)]:
            rec.timer = fake_timer((ms, ms, ms))
            rec.measure(lambda: None, op="conv", provider=p, mode="forward", shape=label,
                        dtype=dtype, layout=layout, label=label, flops=1e9)
    lines = conv.headline(rec.frame())
    assert len(lines) == 2
    # geomean(2, 0.5, 0.25) = 0.63; batch 32: geomean(2, 0.5) = 1
    assert lines[1].split() == ["forward", "0.63x", "n=3", "(b32", "1x", "n=2,", "b128", "0.25x",
                                "n=1)"]
    assert conv.headline(rec.frame().iloc[:0]) == []
    # the input gradient: also a geomean without the stem's (training never computes it)
    for label, ours in [("resnet18.stem.b32.cl", 10.0), ("resnet18.a.b32.cl", 2.0),
                        ("resnet18.b.b32.cl", 0.5)]:
        for p, ms in [("tritonnet", ours), ("torch", 1.0)]:
            rec.timer = fake_timer((ms, ms, ms))
            rec.measure(lambda: None, op="conv", provider=p, mode="input-grad", shape=label,
                        dtype="bf16", layout="channels_last", label=label, flops=1e9)
    lines = conv.headline(rec.frame())
    assert len(lines) == 4 and lines[2].split()[:3] == ["input-grad", "0.464x", "n=3"]
    assert lines[3].split()[:5] == ["1x", "n=2", "without", "the", "stem,"]
    # no such line where the stem is all there is, or absent
    assert len(conv.headline(rec.frame()[lambda d: ~d["label"].str.contains("stem")])) == 3
    only_stem = rec.frame()[lambda d: (d["mode"] != "input-grad") | d["label"].str.contains("stem")]
    assert len(conv.headline(only_stem)) == 3


def test_conv_wrong_provider_fails_and_is_not_timed(monkeypatch):
    """A torch input grad off by 1% fails the gate: recorded FAIL, never timed; ours is timed."""
    real = conv.make_provider

    def make(name, case):
        calls = dict(real(name, case))
        if name == "torch":
            grad = calls["input-grad"]
            calls["input-grad"] = lambda *a: grad(*a) * 1.01
        return calls

    monkeypatch.setattr(conv, "make_provider", make)
    rec = harness.Recorder(ENV, fake_timer(), log=lambda *a: None)
    conv.run(rec, device="cpu", dtypes=["fp32"], cases=TINY_CONV[:1], layouts=("contiguous",))
    df = rec.frame()
    bad = df[df["provider"] == "torch"]
    assert set(bad["metric"]) == {"rel_err", "first_call"}
    assert set(bad.loc[bad["check"] == "FAIL", "mode"]) == {"input-grad"}
    assert bad.loc[(bad["mode"] == "input-grad"), "rel_err"].iloc[0] == pytest.approx(0.01, rel=0.05)
    assert len(rec.failures) == 1 and "torch" in rec.failures[0] and "dx 1.0" in rec.failures[0]
    ours = df[(df["provider"] == "tritonnet") & (df["metric"] == "time")]
    assert set(ours["mode"]) == set(conv.MODES)
    assert (harness.summary_table(df)["check"] == "FAIL torch").all()


def test_suite_runs_conv_on_cpu(tmp_path, monkeypatch):
    """--ops conv through the suite on CPU: CSV, table.txt with the geomean lines, plot."""
    monkeypatch.setattr(conv, "CASES", TINY_CONV[:1])
    args = parse("--ops", "conv", "--dtypes", "bf16", "--ceiling-size", "64", "--out",
                 str(tmp_path), "--no-loop-timing")
    assert suite.run(args, device="cpu", timer=lambda fn, g=None: (0.01, 0.009, 0.012)) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"results.csv", "env.json", "table.txt",
                                                    "conv.png"}
    df = pd.read_csv(tmp_path / "results.csv")
    assert set(df.loc[df["op"] == "conv", "layout"]) == {"channels_last", "contiguous"}
    text = (tmp_path / "table.txt").read_text()
    assert "conv, issue 3's target" in text and "weight-grad" in text
    assert text == suite.report(df) + "\n"  # the plot step writes the same from the CSV


def _compile_env():
    """The environment of a compile-only run: Triton's compiler, not its interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # Triton 3.9 warns when it is unset
    return env


@pytest.mark.slow
def test_compile_check_compiles_every_kernel_for_sm90(tmp_path):
    """Every kernel family compiles for an H100 (sm_90) with the installed Triton, no GPU
    needed: the interpreter never runs Triton's compiler, so this is the CPU suite's only
    guard against kernels that fail to compile, or ask for more shared memory or registers
    than the GPU has. One dtype (bf16: tensor-core dots) over the small shapes of ``misc``;
    `python -m tritonnet.bench.compile_check` with no arguments checks the benchmark's."""
    pytest.importorskip("triton.backends.nvidia")
    r = subprocess.run(
        [sys.executable, "-m", "tritonnet.bench.compile_check", "--ops", "misc", "--dtypes", "bf16",
         "--jobs", "2", "--out", str(tmp_path)],
        cwd=REPO, env=_compile_env(), capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    df = pd.read_csv(tmp_path / "compile_check.csv")
    kernels = set(df.kernel)
    for name in ["_matmul_kernel", "_conv2d_fwd_kernel", "_conv2d_bwd_input_kernel",
                 "_conv2d_bwd_weight_kernel", "_max_pool2d_fwd_kernel", "_max_pool2d_bwd_kernel",
                 "_avg_pool2d_fwd_kernel", "_avg_pool2d_bwd_kernel", "_softmax_fwd_kernel",
                 "_cross_entropy_fwd_kernel", "_cross_entropy_bwd_kernel", "_dropout_fwd_kernel",
                 "_upsample_nearest_fwd_kernel", "_unfold_kernel", "_fold_kernel",
                 "_global_pool_kernel", "_combine_kernel", "_global_avg_bwd_kernel",
                 "_window_pool_kernel", "_window_avg_bwd_kernel", "_dw_fwd_kernel",
                 "_dw_bwd_input_kernel", "_dw_bwd_weight_kernel"]:
        assert name in kernels, f"{name} was not compiled; got {sorted(kernels)}"
    # rows past one block too: the two-pass softmax, the multi-block cross-entropy backward
    for name in ("_softmax_fwd_kernel", "_cross_entropy_bwd_kernel"):
        assert df[df.kernel == name].config.str.contains("SINGLE=False").any(), name
    assert (df.regs > 0).all() and (df.error.isna()).all()
    assert (df.problems.isna()).all()
    # the GEMM kernels reach the tensor cores in bf16
    assert (df[df.kernel.str.contains("conv2d|matmul")].mma != "-").all()
    assert (df.loads.fillna("-") != "-").all()  # every kernel reads global memory
    assert (df.sass > 10).all()
    assert "target sm_90" in r.stdout
    # channels_last with channels in multiples of 16: the conv tiles load as cp.async vectors
    # (16 bytes; 8 in the 16-wide tiles), never as scalar 2-byte bf16 loads, which would mean
    # an index change cost the gathers their vectors (the input gradient's 4-byte loads are
    # its tap table)
    cl = df[df.case == "misc bf16 channels_last conv"]
    assert set(cl.kernel) == {"_conv2d_fwd_kernel", "_conv2d_bwd_input_kernel", "_conv2d_bwd_weight_kernel"}
    for _, row in cl.iterrows():
        assert "2" not in row.loads.split() and "cp16" in row.loads, (row.kernel, row.config, row.loads)


def test_global_load_widths_from_ptx():
    """The loads column: widths of ld.global (scalar, v2, v4, with cache modifiers) and of
    cp.async copies (hex or decimal sizes), as Triton's PTX spells them."""
    from tritonnet.bench.compile_check import global_loads

    assert global_loads("mov.u32 %r1, 0;\nst.global.v4.b32 [%rd1], {%r1, %r1, %r1, %r1};") == "-"
    ptx = "\n".join([
        "  @%p1 ld.global.b16 { %rs1 }, [ %rd2 + 0 ];",
        "  ld.global.L1::evict_last.v2.b32 { %r1, %r2 }, [ %rd3 + 0 ];",
        "  @%p2 ld.global.nc.v4.b32 { %r3, %r4, %r5, %r6 }, [ %rd4 + 0 ];",
        "  cp.async.cg.shared.global [ %r7 + 0 ], [ %rd5 + 0 ], 0x10, %r8;",
        "  cp.async.ca.shared.global [ %r7 + 0 ], [ %rd5 + 0 ], 4, %r8;",
        "  ld.global.b64 %rd6, [ %rd7 + 0 ];",
    ])
    assert global_loads(ptx) == "2 8 16 cp4 cp16"


def test_sass_instruction_count():
    """count_sass counts cuobjdump -sass instruction lines, predicated ones too, not NOPs,
    labels or the encoding lines."""
    from tritonnet.bench.compile_check import count_sass

    sass = "\n".join([
        "        .text._kernel:",
        "        /*0000*/                   LDC R1, c[0x0][0x28] ;",
        "                                                          /* 0x00000a00ff017b82 */",
        "        /*0010*/                   S2R R0, SR_CTAID.X ;",
        "        /*0020*/               @!P0 LDG.E.128 R4, desc[UR4][R2.64] ;",
        "        /*0030*/                @P1 BRA `(.L_x_1) ;",
        ".L_x_1:",
        "        /*0040*/                   NOP;",
        "        /*0050*/                   EXIT ;",
    ])
    assert count_sass(sass) == 5


def test_compile_check_refuses_the_interpreter():
    r = subprocess.run([sys.executable, "-m", "tritonnet.bench.compile_check", "--ops", "misc"],
                       cwd=REPO, env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "TRITON_INTERPRET" in r.stderr
