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
