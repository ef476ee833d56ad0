"""Linear layers as a tiled GEMM: forward with a fused bias + activation epilogue, and the
two gradients as GEMMs of the same kernel with other strides.

GEMM view: C (M, N) = act(A (M, K) @ B (K, N) + bias (N)), fp32 accumulation.
  forward       A = input (M=batch, K=in),  B = weight^T (K=in, N=out)
  input grad    A = grad  (M=batch, K=out), B = weight   (K=out, N=in)
  weight grad   A = grad^T (M=out, K=batch), B = input   (K=batch, N=in); bias grad = the row
                sums of A, computed by the programs of the first column block while they
                stream A anyway (no atomics, no extra pass, deterministic).
One program computes one (BLOCK_M, BLOCK_N) tile of C; the grid is cdiv(M, BLOCK_M) *
cdiv(N, BLOCK_N), ordered in groups of GROUP_M row blocks so neighbouring programs share
tiles of B in L2.
"""

from __future__ import annotations

__all__ = ["linear_forward", "linear_input_grad", "linear_weight_grad"]

import torch
import triton
import triton.language as tl

from ._common import (
    INTERPRET,
    apply_activation,
    autotune,
    cdiv,
    dot_precision,
    fp64_to_reference,
    gemm_configs,
    grouped_tile,
    prune_tiles,
    tf32_enabled,
    upcast_dot,
)

# ---------------------------------------------------------------------------------------------
# autotune configs (built on first launch: nothing here touches a device at import)


def _configs():
    if INTERPRET:
        # One config: the interpreter does not time anything, and 32 keeps tests' masks busy.
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4})]
    return gemm_configs(
        [
            (128, 256, 64, 3, 8),
            (256, 128, 64, 3, 8),
            (128, 128, 64, 4, 4),
            (128, 128, 32, 4, 4),
            (128, 64, 32, 4, 4),
            (64, 128, 32, 4, 4),
            (64, 64, 64, 4, 4),
            (64, 32, 32, 5, 2),
            (32, 64, 32, 5, 2),
            (16, 64, 64, 4, 2),  # small batch (M) layers
            (16, 128, 64, 4, 4),
            (16, 32, 64, 4, 2),  # tiny layers (a classifier head of 10 classes)
        ],
        GROUP_M=8,
    )


# ---------------------------------------------------------------------------------------------
# kernel


@triton.jit
def _matmul_kernel(
    # pointers
    a_ptr, b_ptr, c_ptr, bias_ptr, rowsum_ptr,
    # sizes
    M, N, K,
    # strides
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    # epilogue and options
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, ROWSUM_A: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    # tile sizes
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """C = act(A @ B + bias); optionally rowsum[m] = sum_k A[m, k] (the bias gradient)."""
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)

    # int64 offsets: a tensor may exceed 2**31 elements
    rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    rk = tl.arange(0, BLOCK_K).to(tl.int64)
    mask_m = rm < M
    mask_n = rn < N
    a_ptrs = a_ptr + rm[:, None] * stride_am + rk[None, :] * stride_ak
    b_ptrs = b_ptr + rk[:, None] * stride_bk + rn[None, :] * stride_bn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)  # accumulate in fp32
    if ROWSUM_A:
        rowsum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        mask_k = rk < K - k0
        a = tl.load(a_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if ROWSUM_A:
            if pid_n == 0:
                rowsum += tl.sum(a.to(tl.float32), axis=1)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    if HAS_BIAS:
        bias = tl.load(bias_ptr + rn, mask=mask_n, other=0.0).to(tl.float32)
        acc += bias[None, :]
    acc = apply_activation(acc, ACTIVATION)
    c_ptrs = c_ptr + rm[:, None] * stride_cm + rn[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])
    if ROWSUM_A:
        if pid_n == 0:
            tl.store(rowsum_ptr + rm, rowsum.to(rowsum_ptr.dtype.element_ty), mask=mask_m)


_tuned = None


def _kernel():
    global _tuned
    if _tuned is None:
        _tuned = autotune(
            _matmul_kernel, configs=_configs(),
            key=["M", "N", "K", "HAS_BIAS", "ACTIVATION", "ROWSUM_A", "INPUT_PRECISION"],
            prune_configs_by={"early_config_prune": prune_tiles(lambda a: a["M"], lambda a: a["N"])},
        )
    return _tuned


# ---------------------------------------------------------------------------------------------
# launchers


def matmul(a, b, bias=None, activation="none", rowsum=None, out=None):
    """out (M, N) = act(a (M, K) @ b (K, N) + bias); rowsum (M,) = a.sum(1) if given.
    Any strides; out gets a's dtype."""
    M, K = a.shape
    N = b.shape[1]
    if out is None:
        out = torch.empty((M, N), device=a.device, dtype=a.dtype)
    if M == 0 or N == 0:
        if rowsum is not None:  # no columns, but a's rows still have sums (a bias's gradient)
            torch.sum(a, 1, out=rowsum)
        return out
    if K == 0:  # an empty reduction: act(bias) or act(0)
        out.copy_(bias.expand(M, N) if bias is not None else torch.zeros((), dtype=a.dtype))
        if rowsum is not None:
            rowsum.zero_()
        return _host_activation(out, activation)
    precision = dot_precision(a.dtype, tf32_enabled("matmul"))
    if bias is not None:
        bias = bias.contiguous()  # the epilogue indexes it by column (a slice b[::2] has stride 2)

    def grid(meta):
        return (cdiv(M, meta["BLOCK_M"]) * cdiv(N, meta["BLOCK_N"]),)

    _kernel()[grid](
        a, b, out, bias if bias is not None else a, rowsum if rowsum is not None else out,
        M, N, K,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), out.stride(0), out.stride(1),
        HAS_BIAS=bias is not None, ACTIVATION=activation, ROWSUM_A=rowsum is not None,
        INPUT_PRECISION=precision, UPCAST=upcast_dot(a.dtype),
    )
    return out


def _host_activation(x, activation):
    fn = {"none": None, "relu": torch.relu_, "sigmoid": torch.sigmoid_, "tanh": torch.tanh_}
    return fn[activation](x) if fn[activation] else x


@fp64_to_reference
def linear_forward(input, weight, bias, activation):
    """input (M, K), weight (N, K), bias (N,) or None -> act(input @ weight^T + bias) (M, N)."""
    return matmul(input, weight.t(), bias=bias, activation=activation)


@fp64_to_reference
def linear_input_grad(grad_output, weight, column_major=False):
    """grad_output (M, N), weight (N, K) -> grad_input (M, K) = grad_output @ weight;
    column-major as the transposed product weight^T @ grad_output^T (coalesced stores)."""
    if column_major:
        return matmul(weight.t(), grad_output.t()).t()
    return matmul(grad_output, weight)


@fp64_to_reference
def linear_weight_grad(grad_output, input, column_major=False):
    """grad_output (M, N), input (M, K) -> (grad_weight (N, K) = grad_output^T @ input,
    grad_bias (N,) = grad_output summed over M), both in one launch. A column-major
    grad_weight is stored through transposed strides, which keeps the bias sum fused."""
    N, K = grad_output.shape[1], input.shape[1]
    grad_bias = torch.empty(N, device=grad_output.device, dtype=grad_output.dtype)
    out = None
    if column_major:
        out = torch.empty((K, N), device=grad_output.device, dtype=grad_output.dtype).t()
    grad_weight = matmul(grad_output.t(), input, rowsum=grad_bias, out=out)
    return grad_weight, grad_bias
