"""Activation modules with torch.nn's names, signatures and repr."""

from __future__ import annotations

import torch

from .. import functional as F

__all__ = ["ReLU", "Sigmoid", "Tanh"]


class ReLU(torch.nn.ReLU):
    def forward(self, input):
        return F.relu(input, inplace=self.inplace)


class Sigmoid(torch.nn.Sigmoid):
    def forward(self, input):
        return F.sigmoid(input)


class Tanh(torch.nn.Tanh):
    def forward(self, input):
        return F.tanh(input)
