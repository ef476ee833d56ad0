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


def linear_input_grad(grad_output, weight, column_major=False):
    """grad_output (M, N), weight (N, K) -> grad_input (M, K), column-major if asked."""
    acc = acc_dtype(grad_output.dtype)
    g, w = grad_output.to(acc), weight.to(acc)
    out = (w.t() @ g.t()).t() if column_major else g @ w
    return out.to(grad_output.dtype)


def linear_weight_grad(grad_output, input, column_major=False):
    """-> (grad_weight (N, K), column-major if asked; grad_bias (N,))."""
    acc = acc_dtype(grad_output.dtype)
    g, x = grad_output.to(acc), input.to(acc)
    grad_weight = ((x.t() @ g).t() if column_major else g.t() @ x).to(grad_output.dtype)
    grad_bias = g.sum(0).to(grad_output.dtype)
    return grad_weight, grad_bias
