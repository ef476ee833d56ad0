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


def _poison(t):
    """Fill a fresh tensor with what no kernel may read before writing it: NaN, True, or an
    integer far from any index or count. Not fakes (no data), nor tensors over 1 GiB: the
    offset tests' sparse buffers (tests/test_offsets.py), committed only where written."""
    from torch._subclasses.fake_tensor import is_fake

    if t.is_meta or is_fake(t) or t.numel() * t.element_size() > 2**30:
        return t
    with torch.no_grad():
        if t.is_floating_point() or t.is_complex():
            return t.fill_(float("nan"))
        if t.dtype == torch.bool:
            return t.fill_(True)
        return t.fill_({torch.uint8: 0xA5, torch.int8: -77}.get(t.dtype, -777))


def _poison_allocations(monkeypatch):
    """torch.empty, empty_like, empty_strided and Tensor.new_empty hand out poisoned tensors
    (_poison) until the test ends: an element a kernel forgets to write shows up."""
    real_empty, real_like, real_strided = torch.empty, torch.empty_like, torch.empty_strided
    real_new = torch.Tensor.new_empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: _poison(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: _poison(real_like(*a, **k)))
    monkeypatch.setattr(torch, "empty_strided", lambda *a, **k: _poison(real_strided(*a, **k)))
    monkeypatch.setattr(torch.Tensor, "new_empty", lambda self, *a, **k: _poison(real_new(self, *a, **k)))


@pytest.fixture
def poisoned_empty(monkeypatch):
    """Poisoned allocations (_poison_allocations) on a GPU too, for the tests that ask; without
    CUDA every test has them already (_poisoned_allocations)."""
    if HAS_CUDA:
        _poison_allocations(monkeypatch)


@pytest.fixture(autouse=True)
def _poisoned_allocations(monkeypatch):
    """Without CUDA, every torch.empty, empty_like, empty_strided and new_empty of a test (its
    own and the library's) comes poisoned: a large CPU allocation is fresh zeroed pages, where
    a GPU's caching allocator hands back old data, so an output element a kernel leaves
    unwritten (where 0 was right), or a buffer it reads before writing, could pass here and
    fail there."""
    if not HAS_CUDA:
        _poison_allocations(monkeypatch)
