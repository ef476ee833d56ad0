"""Softmax modules with torch.nn's names, constructor signatures and repr."""

from __future__ import annotations

import torch

from .. import functional as F

__all__ = ["Softmax", "LogSoftmax"]


class Softmax(torch.nn.Softmax):
    def forward(self, input):
        return F.softmax(input, self.dim, _stacklevel=5)


class LogSoftmax(torch.nn.LogSoftmax):
    def forward(self, input):
        return F.log_softmax(input, self.dim, _stacklevel=5)
