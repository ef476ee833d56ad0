"""Example models built from tritonnet.nn, by name: ``build_model("mlp", hidden=(256,))``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .mlp import MLP

__all__ = ["MLP", "MODELS", "build_model"]

# name -> constructor; a new model is one more entry
MODELS: dict[str, Callable[..., torch.nn.Module]] = {
    "mlp": MLP,
}


def build_model(name: str, **kw) -> torch.nn.Module:
    """The model registered as ``name``, built with the constructor arguments ``kw``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kw)
