from __future__ import annotations

import torch


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Compute in fp32 like the kernels (fp64 stays fp64, so gradcheck runs in float64)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def activation(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "none":
        return x
    if name == "relu":
        return torch.relu(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    raise ValueError(f"unknown activation {name!r}")


def conv_memory_format(*tensors) -> torch.memory_format:
    """The memory format of a convolution's result, PyTorch's rule: channels_last when any of
    the 4-D operands is channels_last (and not also contiguous), else contiguous. One rule for
    conv2d, its two gradients and conv_transpose2d, in both backends (kernels/conv.py imports
    it) and in the ops' fake kernels (what torch.compile plans with)."""
    for t in tensors:
        if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
            return torch.channels_last
    return torch.contiguous_format
