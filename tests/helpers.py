"""Shared test helpers: the device kernels run on, dtype tolerances, relative-error checks."""

from __future__ import annotations

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
# Triton kernels run on CUDA when there is a GPU, else on CPU tensors through the interpreter.
KERNEL_DEVICE = "cuda" if HAS_CUDA else "cpu"
FULL = os.environ.get("TRITONNET_FULL", "0") == "1" or HAS_CUDA

# dtype, relative-error tolerance for kernel-vs-reference comparisons (||a-b|| / ||b||):
DTYPES = [
    pytest.param(torch.float32, 1e-5, id="fp32"),
    # half precision: same fp32 accumulation, but rounding of the stored result (and of the
    # inputs to the second GEMM of a chain) gives ~1 ulp differences
    pytest.param(torch.float16, 2e-3, id="fp16"),
    pytest.param(torch.bfloat16, 1.6e-2, id="bf16"),
]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.isfinite(a).all() == torch.isfinite(b).all()
    denom = b.norm().item()
    return (a - b).norm().item() / (denom if denom > 0 else 1.0)


def assert_close_rel(a, b, tol, what=""):
    err = rel_err(a, b)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:.3g}"


def tf32_off():
    """fp32 comparisons on a GPU are made at full fp32 precision on both sides."""
    if HAS_CUDA:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
