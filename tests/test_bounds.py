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
