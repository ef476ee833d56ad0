"""Linear primitives in plain PyTorch: the readable spec of kernels/linear.py and the CPU
fallback. Same signatures, same dtype rules (compute in fp32 or better, one cast on output)."""

from __future__ import annotations

__all__ = ["linear_forward", "linear_input_grad", "linear_weight_grad"]


from ._common import acc_dtype, activation


def linear_forward(input, weight, bias, act):
    """input (M, K), weight (N, K) -> act(input @ weight^T + bias) (M, N)."""
    acc = acc_dtype(input.dtype)
    out = input.to(acc) @ weight.to(acc).t()
    if bias is not None:
        out = out + bias.to(acc)
    return activation(out, act).to(input.dtype)


def linear_input_grad(grad_output, weight):
    """grad_output (M, N), weight (N, K) -> grad_input (M, K)."""
    acc = acc_dtype(grad_output.dtype)
    return (grad_output.to(acc) @ weight.to(acc)).to(grad_output.dtype)


def linear_weight_grad(grad_output, input):
    """-> (grad_weight (N, K), grad_bias (N,))."""
    acc = acc_dtype(grad_output.dtype)
    g = grad_output.to(acc)
    grad_weight = (g.t() @ input.to(acc)).to(grad_output.dtype)
    grad_bias = g.sum(0).to(grad_output.dtype)
    return grad_weight, grad_bias
