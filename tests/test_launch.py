"""kernels._launch: launches that skip JITFunction.run once a call's kernel is compiled."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_memoised_launches_match_tritons_own():
    """For calls that differ in every way Triton specialises a kernel on (alignment, n == 1,
    divisibility by 16, dtype, constexprs, options, an int past int32 where it is
    do_not_specialize) and ways it does not (a float's value, keyword order, a callable
    grid), the memo picks the kernel JITFunction.run picks and hands the C launcher the same
    arguments; an autotuned kernel's memo launches the autotuner's choice; the real conv
    forward's two launches (split-K and its epilogue) match; and every op family's repeated
    call is served by the memo (nothing kept anew, nothing unkeyed). Compiled for sm_90 through
    compile_check's stand-in driver, in a process without the interpreter (tests/launch_check.py)."""
    pytest.importorskip("triton.backends.nvidia")
    from tritonnet.kernels import _launch

    if not _launch.memo_checked_triton():
        pytest.skip("the memo is off before Triton 3.5")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRITONNET_FAST_LAUNCH")}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    r = subprocess.run([sys.executable, "-m", "tests.launch_check"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.strip().endswith("ok 39 checks"), r.stdout[-2000:]


def test_memo_reads_tritons_run_before_it_stands_in_for_it(monkeypatch):
    """The memo is on only where the installed Triton's JITFunction.run ends with the launcher
    call the memo repeats (true for 3.5 to 3.9); another call turns it off."""
    from tritonnet.kernels import _launch

    if not _launch.memo_checked_triton():
        pytest.skip("the memo is off before Triton 3.5")
    assert _launch.tritons_run_matches()
    monkeypatch.setattr(_launch, "_RUN_CALL", _launch._RUN_CALL.replace("packed_metadata, ", ""))
    assert not _launch.tritons_run_matches()


@pytest.mark.parametrize("version", ["3.4.0", "3.2.0+git35c6c7c6", "2.3.1"])
def test_memo_is_off_before_triton_3_5(monkeypatch, version):
    """A Triton before 3.5 keeps its own launch path: 3.5's knobs made every compiled launch
    raise (AttributeError: no instrumentation_mode) before _knobs read it with getattr, 3.4's
    run reads like 3.5's but launch_check's stand-in driver cannot check it, and 3.2 has no
    triton.knobs at all (which broke ``import tritonnet``)."""
    from tritonnet.kernels import _launch

    monkeypatch.setattr(_launch.triton, "__version__", version)
    assert not _launch.tritons_run_matches()
    if _launch.knobs is not None:
        monkeypatch.setattr(_launch.triton, "__version__", "3.5.1")
        monkeypatch.setattr(_launch, "knobs", None)
        assert not _launch.tritons_run_matches()


def test_version_parse():
    from tritonnet.kernels import _launch

    assert _launch._version("3.5.1") == (3, 5)
    assert _launch._version("3.10.0+git1a2b3c") == (3, 10)
    assert _launch._version("3.6.0") > _launch._version("3.5.9") and _launch._version("3.10.0") > (3, 9)


def test_memo_is_off_under_the_interpreter():
    """The interpreter compiles nothing, so there is nothing to keep: launches take Triton's
    path and the memo holds no plan."""
    from tritonnet.kernels import _common, _launch
    from tritonnet.kernels import conv as kconv

    if not _common.INTERPRET:
        pytest.skip("the interpreter is off")
    launcher = kconv._split_k_epilogue_kernel
    assert isinstance(launcher, _launch.Launcher) and launcher._memo.fn is None
    assert launcher._memo.slot((1,), {}) is None


def test_launches_from_threads_under_the_interpreter():
    """Triton's interpreter keeps a launch's grid and language state in globals, so the Triton
    backend on CPU tensors, called from several threads at once (a threaded data pipeline or
    server), failed with InterpreterErrors ("x >= grid_dim[0]", "Did you forget to add
    @triton.jit ?") or wrong values. Under the interpreter, launches now take turns: four
    threads training their own small nets give what the same steps give one after another."""
    import threading

    import torch

    import tritonnet
    import tritonnet.functional as F
    import tritonnet.nn as tnn
    from tritonnet.kernels import _common

    if not _common.INTERPRET:
        pytest.skip("the interpreter is off")
    tritonnet.set_backend("triton")
    torch.manual_seed(0)
    nets = [
        torch.nn.Sequential(
            tnn.Conv2d(3, 4, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2, ceil_mode=True),
            tnn.ConvTranspose2d(4, 2, 2, stride=2), tnn.AdaptiveAvgPool2d(2), torch.nn.Flatten(),
            tnn.Linear(8, 3),
        )
        for _ in range(4)
    ]
    data = [(torch.randn(2, 3, 5 + i, 6), torch.randint(3, (2,))) for i in range(4)]

    def step(i):
        loss = F.cross_entropy(nets[i](data[i][0]), data[i][1])
        return [loss.detach(), *torch.autograd.grad(loss, list(nets[i].parameters()))]

    expected = [step(i) for i in range(4)]
    got, errors = [[] for _ in range(4)], []
    start = threading.Barrier(4)

    def run(i):
        try:
            start.wait()
            got[i] = [step(i) for _ in range(3)]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:2]
    for i in range(4):
        for results in got[i]:
            for a, b in zip(results, expected[i]):
                torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.gpu
def test_memoised_launches_compute_what_tritons_path_computes_gpu():
    """On a GPU: a small network's forward and backward (conv split-K and not, ReLU, max pool,
    dropout with a seed, adaptive pool, linear, cross-entropy), run once to compile and fill
    the memos, then again through the memo and again through Triton's own path
    (_launch.tritons_own_path): the two give bitwise equal losses and gradients,
    and the memo did serve the second run. Small (batch 1), so that bench/gpu_session.sh
    can afford it as its first check."""
    import torch

    import tritonnet
    import tritonnet.functional as F
    from tritonnet.kernels import conv as kconv
    from tritonnet.kernels._launch import tritons_own_path

    torch.manual_seed(0)
    cl = torch.channels_last
    x = torch.randn(1, 16, 15, 15, device="cuda", dtype=torch.bfloat16).to(memory_format=cl)
    w1 = torch.randn(64, 16, 3, 3, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w2 = torch.randn(64, 64, 3, 3, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    fc = torch.randn(10, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    target = torch.tensor([3], device="cuda")

    def step():
        torch.manual_seed(1)
        h = F.relu(F.conv2d(x, w1, padding=1))
        h = F.max_pool2d(h, 3, 2, 1)
        h = F.dropout(F.conv2d(h, w2, padding=1), 0.25)  # 8 x 8 pixels, K = 576: split-K
        h = F.adaptive_avg_pool2d(h, 1).flatten(1)
        loss = F.cross_entropy(F.linear(h, fc).float(), target)
        grads = torch.autograd.grad(loss, [w1, w2, fc])
        return [loss, *grads]

    with tritonnet.use_backend("triton"):
        step()
        memo = step()
        with tritons_own_path():
            triton_path = step()
    for a, b in zip(memo, triton_path):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(plan[2] for plan in kconv._split_k_epilogue_kernel._memo._plans.values() if plan)


def test_launches_run_on_the_device_of_their_tensors(monkeypatch):
    """Triton launches on the current CUDA device: a model on cuda:1 while cuda:0 is current
    had its kernels launched on cuda:0 (its context and stream) with cuda:1 pointers. Every
    launch now goes under torch.cuda.device(i) of its tensors' device when that is not the
    current one, as torch's ops guard it. Checked here with a tensor that reports a CUDA
    device and a stand-in for torch.cuda's device switch (no GPU needed)."""
    import contextlib

    import torch

    from tritonnet.kernels import _launch

    class OnCuda1(torch.Tensor):
        is_cuda = True

        def get_device(self):
            return 1

    current = [0]

    @contextlib.contextmanager
    def switch(index):
        saved, current[0] = current[0], index
        try:
            yield
        finally:
            current[0] = saved

    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    monkeypatch.setattr(torch.cuda, "device", switch)
    x = torch.Tensor._make_subclass(OnCuda1, torch.zeros(2))
    seen = []

    class Kernel:  # stands in for a jitted kernel: records the device current at launch
        def __getitem__(self, grid):
            return lambda *args, **kwargs: seen.append((grid, current[0]))

    launch = _launch.Launcher(Kernel())
    launch[(4,)](x, 7, BLOCK=16)
    launch[(4,)](3, y=x)  # the tensor as a keyword argument
    launch[(2,)](torch.zeros(2), 7)  # a CPU tensor: no switch
    assert seen == [((4,), 1), ((4,), 1), ((2,), 0)] and current[0] == 0
    current[0] = 1  # already current: no switch needed
    assert _launch.device_guard((x,), {}) is None
    assert _launch.device_guard((5, None), {"n": 3}) is None


@pytest.mark.gpu
def test_ops_on_a_second_gpu():
    """A training step of conv, pool, linear and cross-entropy with every tensor on the last
    GPU while the first is current: the same results as on the current device."""
    import torch

    import tritonnet
    import tritonnet.functional as F

    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    tritonnet.set_backend("triton")
    torch.manual_seed(0)
    x, w = torch.randn(4, 8, 12, 12), torch.randn(16, 8, 3, 3)
    fc, t = torch.randn(10, 16), torch.randint(0, 10, (4,))

    def step(dev):
        xs, ws, fcs = (a.to(dev).requires_grad_() for a in (x, w, fc))
        h = F.adaptive_avg_pool2d(F.max_pool2d(F.relu(F.conv2d(xs, ws, padding=1)), 2), 1).flatten(1)
        loss = F.cross_entropy(F.linear(h, fcs), t.to(dev))
        loss.backward()
        return [a.detach().cpu() for a in (loss, xs.grad, ws.grad, fcs.grad)]

    last = torch.device("cuda", torch.cuda.device_count() - 1)
    with torch.cuda.device(0):
        here, there = step(torch.device("cuda", 0)), step(last)
        torch.cuda.synchronize(last)
    for a, b in zip(here, there):
        torch.testing.assert_close(a, b)
