"""A multilayer perceptron over flattened images, built from tritonnet.nn layers."""

from __future__ import annotations

import torch

from .. import nn

__all__ = ["MLP"]


class MLP(torch.nn.Sequential):
    """Linear -> ReLU -> Dropout for each hidden width, then a Linear to the class logits.

    Any input of shape (N, *) is flattened to (N, in_features). A ``torch.nn.Sequential`` of
    the same layers has the same state_dict keys (``0.weight``, ``0.bias``, ``3.weight``, ...),
    so weights move between the two."""

    def __init__(
        self,
        in_features: int = 64,
        hidden: tuple[int, ...] = (128, 64),
        num_classes: int = 10,
        dropout: float = 0.1,
    ):
        layers: list[torch.nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return super().forward(input.flatten(1))  # (N, *) -> (N, in_features)
