"""nn.Linear over tritonnet.functional.linear: torch's constructor, init and state_dict keys."""

from __future__ import annotations

import torch

from .. import functional as F

__all__ = ["Linear"]


class Linear(torch.nn.Linear):
    def forward(self, input):
        return F.linear(input, self.weight, self.bias)
