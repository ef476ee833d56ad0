"""Run a GPU-marked test on a machine without CUDA: "cuda" means the CPU (see conftest.py,
TRITONNET_GPU_TESTS_ON_CPU). Tensors a test creates or moves to "cuda" stay on the CPU, where
the kernels run through Triton's interpreter; torch.cuda.synchronize is a no-op.

What it cannot stand in for, and the tests that need it fail or are too slow here: CUDA graphs,
CUDA autocast, device properties, more than a few GB of memory, and any comparison with torch's
own CUDA results. It rehearses the tests' Python (names, calls, shapes), not the GPU.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import torch
from torch.overrides import TorchFunctionMode


def _is_cuda(d) -> bool:
    if isinstance(d, torch.device):
        return d.type == "cuda"
    if isinstance(d, str):
        return d.split(":")[0] == "cuda"
    return False


class _CudaOnCpu(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:
            return args[0]
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        if func is torch.Tensor.to:
            args = tuple("cpu" if _is_cuda(a) else a for a in args)
        return func(*args, **kwargs)


@contextlib.contextmanager
def cuda_on_cpu(reference_kernels: bool = False):
    """``reference_kernels``: ops that ask the backend for Triton get the reference primitives
    instead (TRITONNET_GPU_TESTS_ON_CPU=reference), so a ResNet-sized test runs at torch's CPU
    speed rather than for hours interpreted. That rehearses the test's own logic on its real
    shapes (calls, shapes, the fp64 comparison and its tolerance against an fp32-accumulated
    result), not our kernels; a test that calls ``tritonnet.kernels`` directly is still
    interpreted."""
    from tritonnet import backend

    with contextlib.ExitStack() as stack:
        stack.enter_context(_CudaOnCpu())
        stack.enter_context(mock.patch.object(torch.cuda, "synchronize", lambda *a, **k: None))
        if reference_kernels:
            stack.enter_context(mock.patch.object(backend, "_kernels", backend._reference))
        yield
