"""Test set-up: without CUDA, Triton kernels run on CPU tensors through Triton's interpreter.

TRITON_INTERPRET must be set before the kernels are first imported (Triton decides at
decoration time), so it is set here, at collection, before any test imports tritonnet.kernels.
"""

import os

# torch.compile's on-disk caches key a compiled graph by the graph, not by our operators' fake
# kernels: after a fake kernel changes, a cached graph would still run with the old one's
# layouts (seen: a stale stride assert), so the tests compile afresh
os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "0")
os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "0")

import torch  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
# pytest-xdist runs one worker per core: one thread each, or the workers' thread pools fight
# over the cores (a small matmul was seen to take 800x longer on 2 busy cores)
torch.set_num_threads(1)

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _bounds_checked():
    """Under the interpreter every kernel access of every test is checked against the storage
    of the kernel's tensor arguments (tests/helpers.py bounds_checked), against the other
    accesses of its launch (races_checked), and every alignment and contiguity hint against
    the values hinted (hints_checked)."""
    if HAS_CUDA:
        yield
        return
    from tests.helpers import bounds_checked, hints_checked, races_checked

    with bounds_checked(), races_checked(), hints_checked():
        yield


@pytest.fixture(autouse=True)
def _seed_and_backend():
    """Fresh seed per test (deterministic, not zeros) and the default backend restored."""
    import tritonnet

    torch.manual_seed(0)
    saved = tritonnet.backend._backend
    yield
    tritonnet.backend._backend = saved


# TRITONNET_GPU_TESTS_ON_CPU=1: the GPU-marked tests run here instead of skipping, with every
# tensor they put on "cuda" kept on the CPU and their kernels interpreted (tests/gpu_on_cpu.py).
# A rehearsal for a GPU session, not a test of the GPU: it finds the tests' own mistakes
# (stale names, wrong calls) before device time is spent on them.
# With TRITONNET_GPU_TESTS_ON_CPU=reference, ops that would run our Triton kernels run the
# reference primitives instead: the large-shape tests then finish in minutes, rehearsing the
# tests' logic on their real shapes (not our kernels).
GPU_ON_CPU = not HAS_CUDA and os.environ.get("TRITONNET_GPU_TESTS_ON_CPU") in ("1", "reference")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA and not GPU_ON_CPU:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _gpu_on_cpu(request):
    if not (GPU_ON_CPU and "gpu" in request.keywords):
        yield
        return
    from tests.gpu_on_cpu import cuda_on_cpu

    with cuda_on_cpu(os.environ.get("TRITONNET_GPU_TESTS_ON_CPU") == "reference"):
        yield


@pytest.fixture
def poisoned_empty(monkeypatch):
    """torch.empty hands out NaN (floats) or -777 (integers): an element a kernel forgets to
    write shows up."""
    real = torch.empty

    def empty(*args, **kwargs):
        t = real(*args, **kwargs)
        return t.fill_(float("nan") if t.is_floating_point() else -777)

    monkeypatch.setattr(torch, "empty", empty)
