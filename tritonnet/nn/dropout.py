"""Dropout modules with torch.nn's names, signatures, repr and (empty) state_dict."""

from __future__ import annotations

import torch

from .. import functional as F

__all__ = ["Dropout", "Dropout2d"]


class Dropout(torch.nn.Dropout):
    def forward(self, input):
        return F.dropout(input, self.p, self.training, self.inplace)


class Dropout2d(torch.nn.Dropout2d):
    def forward(self, input):
        return F.dropout2d(input, self.p, self.training, self.inplace)
