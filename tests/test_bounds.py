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
