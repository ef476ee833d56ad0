"""Pooling and upsampling modules: torch.nn's classes with forward replaced (constructor,
attributes and extra_repr are torch's own)."""

from __future__ import annotations

import torch

from .. import functional as F

__all__ = [
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveMaxPool2d",
    "AdaptiveAvgPool2d",
    "MaxPool1d",
    "AvgPool1d",
    "AdaptiveMaxPool1d",
    "AdaptiveAvgPool1d",
    "Upsample",
    "UpsamplingNearest2d",
]


class MaxPool2d(torch.nn.MaxPool2d):
    def forward(self, input):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool2d(torch.nn.AvgPool2d):
    def forward(self, input):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)


class AdaptiveMaxPool2d(torch.nn.AdaptiveMaxPool2d):
    def forward(self, input):
        return F.adaptive_max_pool2d(input, self.output_size, self.return_indices)


class AdaptiveAvgPool2d(torch.nn.AdaptiveAvgPool2d):
    def forward(self, input):
        return F.adaptive_avg_pool2d(input, self.output_size)


class MaxPool1d(torch.nn.MaxPool1d):
    def forward(self, input):
        return F.max_pool1d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool1d(torch.nn.AvgPool1d):
    def forward(self, input):
        return F.avg_pool1d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)


class AdaptiveMaxPool1d(torch.nn.AdaptiveMaxPool1d):
    def forward(self, input):
        return F.adaptive_max_pool1d(input, self.output_size, self.return_indices)


class AdaptiveAvgPool1d(torch.nn.AdaptiveAvgPool1d):
    def forward(self, input):
        return F.adaptive_avg_pool1d(input, self.output_size)


class Upsample(torch.nn.Upsample):
    def forward(self, input):
        return F.interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners,
                             recompute_scale_factor=self.recompute_scale_factor)


class UpsamplingNearest2d(torch.nn.UpsamplingNearest2d):
    def forward(self, input):
        return F.interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners,
                             recompute_scale_factor=self.recompute_scale_factor)
