"""Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d: torch.nn's classes (constructor, init,
padding_mode, state_dict keys, repr) with forward through tritonnet.functional."""

from __future__ import annotations

import torch
import torch.nn.functional as _torch_F

from .. import functional as F

__all__ = ["Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d"]


class Conv2d(torch.nn.Conv2d):
    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            # reflect / replicate / circular: pad explicitly, then a convolution without padding
            # (what torch.nn.Conv2d does; the pad itself is torch's)
            input = _torch_F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(input, weight, bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class Conv1d(torch.nn.Conv1d):
    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            input = _torch_F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv1d(input, weight, bias, self.stride, 0, self.dilation, self.groups)
        return F.conv1d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def _zeros_only(module):
    """torch's check in the transposed convolutions' forward (their constructors refuse other
    modes; an attribute set afterwards meets this)."""
    if module.padding_mode != "zeros":
        raise ValueError(f"Only `zeros` padding mode is supported for {type(module).__name__} "
                         f"(got padding_mode={module.padding_mode!r})")


class ConvTranspose2d(torch.nn.ConvTranspose2d):
    def forward(self, input, output_size=None):
        _zeros_only(self)
        num_spatial = 2
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, num_spatial, self.dilation
        )
        return F.conv_transpose2d(
            input, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups,
            self.dilation,
        )


class ConvTranspose1d(torch.nn.ConvTranspose1d):
    def forward(self, input, output_size=None):
        _zeros_only(self)
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, 1, self.dilation
        )
        return F.conv_transpose1d(
            input, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups,
            self.dilation,
        )
