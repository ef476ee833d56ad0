"""Unfold and Fold: torch.nn's classes (constructor, attributes, repr) with forward through
tritonnet.functional."""

from __future__ import annotations

import torch

from .. import functional as F

__all__ = ["Unfold", "Fold"]


class Unfold(torch.nn.Unfold):
    def forward(self, input):
        return F.unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)


class Fold(torch.nn.Fold):
    def forward(self, input):
        return F.fold(input, self.output_size, self.kernel_size, self.dilation, self.padding, self.stride)
