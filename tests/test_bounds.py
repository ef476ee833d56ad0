"""The interpreter's bounds check (tests/helpers.py bounds_checked, on for every CPU test by
tests/conftest.py) catches a stray access and lets masked-off lanes be."""

import pytest
import torch
import triton
import triton.language as tl

from tests.helpers import HAS_CUDA

pytestmark = pytest.mark.skipif(HAS_CUDA, reason="checks the interpreter")


@triton.jit
def _shift_kernel(x_ptr, n, SHIFT: tl.constexpr, MASKED: tl.constexpr, BLOCK: tl.constexpr):
    """x[i] = x[i + SHIFT] in place: one tensor, so no other argument's storage can lie next
    to x and make a stray address look valid."""
    i = tl.arange(0, BLOCK)
    if MASKED:
        ok = (i + SHIFT >= 0) & (i + SHIFT < n)
        v = tl.load(x_ptr + i + SHIFT, mask=ok, other=0.0)
    else:
        v = tl.load(x_ptr + i + SHIFT)
    tl.store(x_ptr + i, v, mask=i < n)


def _run(shift, masked, n=8):
    x = torch.arange(n, dtype=torch.float32)
    _shift_kernel[(1,)](x, n, SHIFT=shift, MASKED=masked, BLOCK=8)
    return x


def test_masked_edge_passes():
    assert _run(2, True).tolist() == [2, 3, 4, 5, 6, 7, 0, 0]


@pytest.mark.parametrize("shift", [1, -1], ids=["past-the-end", "before-the-start"])
def test_stray_load_is_caught(shift):
    with pytest.raises(Exception, match=r"_shift_kernel: load of 1 element\(s\) outside every argument"):
        _run(shift, False)


def test_stray_store_is_caught():
    @triton.jit
    def over(y_ptr, BLOCK: tl.constexpr):
        tl.store(y_ptr + tl.arange(0, BLOCK), 1.0)

    with pytest.raises(Exception, match=r"over: store of 4 element\(s\) outside"):
        over[(1,)](torch.empty(4), BLOCK=8)


# The race check (tests/helpers.py races_checked, on with the bounds check): programs of one
# launch must not touch bytes another one writes.


@triton.jit
def _blocks_kernel(x_ptr, y_ptr, n, STEP: tl.constexpr, READ_SHIFT: tl.constexpr,
                   BLOCK: tl.constexpr):
    """y[b] = x[b + READ_SHIFT] + 1 for each program's block b = [p * STEP, p * STEP + BLOCK):
    a STEP under BLOCK overlaps the neighbours' blocks; with x = y, a READ_SHIFT reads into a
    neighbour's block."""
    i = tl.program_id(0) * STEP + tl.arange(0, BLOCK)
    r = i + READ_SHIFT
    v = tl.load(x_ptr + r, mask=(r >= 0) & (r < n), other=0.0)
    tl.store(y_ptr + i, v + 1.0, mask=i < n)


def _blocks(step, read_shift, in_place):
    y = torch.zeros(16)
    _blocks_kernel[(triton.cdiv(16, step),)](y if in_place else torch.zeros(16), y, 16, STEP=step,
                                            READ_SHIFT=read_shift, BLOCK=4)
    return y


def test_programs_on_their_own_blocks_pass():
    assert _blocks(4, 0, True).tolist() == [1.0] * 16  # in place, each its own block
    assert _blocks(4, 1, False).tolist() == [1.0] * 16  # reads of the neighbours' in another tensor


@pytest.mark.parametrize("step, read_shift, in_place, what", [
    (3, 0, False, r"\(1, 0, 0\) writes address 0x[0-9a-f]+, which program \(0, 0, 0\) .* wrote"),
    (4, 1, True, r"\(1, 0, 0\) writes address 0x[0-9a-f]+, which program \(0, 0, 0\) .* read"),
    (4, -1, True, r"\(1, 0, 0\) reads address 0x[0-9a-f]+, which program \(0, 0, 0\) .* wrote"),
], ids=["write-over-a-neighbour", "write-what-a-neighbour-read", "read-what-a-neighbour-wrote"])
def test_programs_sharing_bytes_are_caught(step, read_shift, in_place, what):
    # program 1 writes y[3:7] over program 0's y[0:4]; writes y[4:8] where program 0 read
    # y[1:5]; reads y[3:7] after program 0 wrote y[0:4]
    with pytest.raises(Exception, match="_blocks_kernel: program " + what):
        _blocks(step, read_shift, in_place)


# The hint check (tests/helpers.py hints_checked, on with the bounds check): what a kernel
# tells the compiler of its values must hold.


@triton.jit
def _hinted_kernel(x_ptr, y_ptr, START, STEP: tl.constexpr, MULTIPLE: tl.constexpr,
                   CONTIGUOUS: tl.constexpr, BLOCK: tl.constexpr):
    """y = x[START + i * STEP] with the offsets hinted multiple_of(MULTIPLE) (and
    max_contiguous(BLOCK) when CONTIGUOUS)."""
    i = tl.arange(0, BLOCK)
    off = tl.multiple_of(START + i * STEP, MULTIPLE)
    if CONTIGUOUS:
        off = tl.max_contiguous(off, BLOCK)
    tl.store(y_ptr + i, tl.load(x_ptr + off))


def _hinted(start, step, multiple, contiguous):
    x, y = torch.arange(32.0), torch.empty(4)
    _hinted_kernel[(1,)](x, y, start, STEP=step, MULTIPLE=multiple, CONTIGUOUS=contiguous, BLOCK=4)
    return y.tolist()


def test_true_hints_pass():
    assert _hinted(8, 1, 8, True) == [8, 9, 10, 11]  # a run from a multiple of 8
    assert _hinted(8, 1, 8, False) == [8, 9, 10, 11]  # the same, its run inferred
    assert _hinted(4, 4, 4, False) == [4, 8, 12, 16]  # every value a multiple


@pytest.mark.parametrize("start, step, multiple, contiguous, what", [
    (4, 1, 8, True, r"multiple_of\(8\) along dimension 0 of a \[4\] value has 4 first in a group of 4"),
    (4, 4, 8, False, r"multiple_of\(8\) along dimension 0 of a \[4\] value has 4 first in a group of 1"),
    (8, 2, 2, True, r"max_contiguous\(4\) along dimension 0 of a \[4\] value does not hold"),
], ids=["run-misaligned", "values-not-multiples", "not-a-run"])
def test_wrong_hints_are_caught(start, step, multiple, contiguous, what):
    with pytest.raises(Exception, match="_hinted_kernel: tl." + what):
        _hinted(start, step, multiple, contiguous)


@triton.jit
def _one_program_kernel(y_ptr, z_ptr, MODE: tl.constexpr, BLOCK: tl.constexpr):
    """One program: MODE 0 stores y twice, 1 stores y and loads it back, 2 stores y[i // 2]
    from every lane i, 3 loads y and stores it back in place (the one allowed)."""
    i = tl.arange(0, BLOCK)
    if MODE == 0:
        tl.store(y_ptr + i, 1.0)
        tl.store(y_ptr + i, 2.0)
    elif MODE == 1:
        tl.store(y_ptr + i, 1.0)
        tl.store(z_ptr + i, tl.load(y_ptr + i))
    elif MODE == 2:
        tl.store(y_ptr + i // 2, i.to(tl.float32))
    else:
        tl.store(y_ptr + i, tl.load(y_ptr + i) + 1.0)


@pytest.mark.parametrize("mode, what", [
    (0, r"writes address 0x[0-9a-f]+, which the same program of the same launch wrote"),
    (1, r"reads address 0x[0-9a-f]+, which the same program of the same launch wrote"),
    (2, r"writes address 0x[0-9a-f]+ from two lanes of one store"),
], ids=["stored-twice", "stored-then-loaded", "two-lanes-one-address"])
def test_one_program_touching_its_own_writes_is_caught(mode, what):
    # one program's threads are not ordered through global memory, and which thread holds
    # which lane is the compiler's choice
    with pytest.raises(Exception, match=r"_one_program_kernel: program \(0, 0, 0\) " + what):
        _one_program_kernel[(1,)](torch.zeros(4), torch.zeros(4), MODE=mode, BLOCK=4)


def test_in_place_update_passes():
    y = torch.zeros(4)
    _one_program_kernel[(1,)](y, y, MODE=3, BLOCK=4)
    assert y.tolist() == [1.0] * 4


def test_grid_past_cudas_caps_is_caught():
    # 65536 programs along the second axis: the interpreter would run them, CUDA refuses
    with pytest.raises(Exception, match=r"_blocks_kernel: grid \(1, 65536, 1\) passes CUDA's caps"):
        _blocks_kernel[(1, 65536)](torch.zeros(4), torch.zeros(4), 4, STEP=4, READ_SHIFT=0, BLOCK=4)


# Launch grids on shapes that would pass CUDA's caps: too many programs to interpret, so the
# launches are recorded, not run (their results are not looked at).

LONG = 2**20 + 2**19 + 3  # samples: more than 65535 column blocks of 8 or 16


def _grids(monkeypatch, fn):
    import inspect

    from triton.runtime import interpreter as ti

    seen = []

    def record(self, *args, **kwargs):
        names = inspect.getfullargspec(self.fn)
        kwargs = {k: v for k, v in kwargs.items() if k in names.args or k in names.kwonlyargs}
        grid = self.grid(inspect.getcallargs(self.fn, *args, **kwargs)) if callable(self.grid) else self.grid
        seen.append((self.fn.__name__, tuple(grid) + (1,) * (3 - len(grid))))

    monkeypatch.setattr(ti.GridExecutor, "__call__", record)
    import tritonnet

    with tritonnet.use_backend("triton"):
        fn()
    return seen


@pytest.mark.parametrize("name, fn", [
    ("max_pool1d", lambda F, x: F.max_pool1d(x, 2)),
    ("avg_pool1d", lambda F, x: F.avg_pool1d(x, 3, 2, 1)),
    ("max_pool2d NCHW s2", lambda F, x: F.max_pool2d(x.unsqueeze(2).expand(-1, -1, 2, -1), 2)),
    ("interpolate x2", lambda F, x: F.interpolate(x, scale_factor=2)),
    ("interpolate", lambda F, x: F.interpolate(x, size=LONG + 5)),
    ("depthwise conv1d", lambda F, x: F.conv1d(x, torch.ones(1, 1, 3, requires_grad=True), padding=1)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_long_rows_fit_cudas_grid(name, fn, monkeypatch):
    """Before 2026-12-08 the pools, upsampling and the depthwise stencils launched a row's
    column blocks along the grid's second axis: a max_pool1d over 2**20 samples asked CUDA for
    more than 65535 programs there."""
    import tritonnet.functional as F

    x = torch.zeros(1, 1, LONG, requires_grad=True)
    grids = _grids(monkeypatch, lambda: fn(F, x).sum().backward())
    assert len(grids) >= 2, grids  # forward and backward launched (recorded)
    for kernel, (gx, gy, gz) in grids:
        assert gx < 2**31 and gy <= 65535 and gz <= 65535, (name, kernel, (gx, gy, gz))
    assert max(gx for _, (gx, _, _) in grids) > 65535, grids  # the shape did need them


def test_depthwise_weight_grad_fits_cudas_grid_past_65535_channels(monkeypatch):
    """NCHW's depthwise weight gradient runs a program a channel; those were the third axis."""
    import tritonnet.functional as F

    C = 65536 + 8
    x = torch.zeros(1, C, 2, 2, requires_grad=True)
    w = torch.zeros(C, 1, 3, 3, requires_grad=True)
    grids = _grids(monkeypatch, lambda: F.conv2d(x, w, padding=1, groups=C).sum().backward())
    assert any(k == "_dw_bwd_weight_kernel" for k, _ in grids), grids
    for kernel, (gx, gy, gz) in grids:
        assert gx < 2**31 and gy <= 65535 and gz <= 65535, (kernel, (gx, gy, gz))


def test_grouped_gemm_past_65535_groups_refused():
    """The convolution GEMMs keep the group on a grid axis of its own (README, Known
    limitations): past CUDA's cap, a RuntimeError with the values, not a launch error."""
    import tritonnet
    import tritonnet.functional as F

    C = 65536 + 8
    x, w = torch.zeros(1, C, 1, 1), torch.zeros(2 * C, 1, 1, 1)  # 2 filters a channel: a GEMM
    with tritonnet.use_backend("triton"), pytest.raises(RuntimeError, match=r"conv2d: groups = 65544, but "
                                                        "tritonnet's kernel launches this on a grid axis"):
        F.conv2d(x, w, groups=C)
