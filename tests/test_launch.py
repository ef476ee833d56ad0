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
    forward's two launches (split-K and its epilogue) match. Compiled for sm_90 through
    compile_check's stand-in driver, in a process without the interpreter (tests/launch_check.py)."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRITONNET_FAST_LAUNCH")}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    r = subprocess.run([sys.executable, "-m", "tests.launch_check"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.strip().endswith("ok 20 checks"), r.stdout[-2000:]


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
