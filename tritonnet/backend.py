"""Backend choice: which implementation of the primitives runs for a given tensor.

A backend is a module exposing the same primitive names (``linear_forward``,
``linear_input_grad``, ...): ``tritonnet.kernels`` (Triton) and ``tritonnet.reference``
(plain PyTorch). The autograd code in ``tritonnet.ops`` never names a backend; it asks
:func:`backend_for` with the tensor at hand.

Nothing here queries a device or imports Triton at ``import tritonnet`` time.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

import torch

BACKENDS = ("auto", "triton", "reference")

_backend: str | None = None  # None: read TRITONNET_BACKEND on first use


def _check(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


def set_backend(name: str) -> None:
    """Choose the backend: ``"auto"`` (Triton for CUDA tensors, reference for CPU tensors),
    ``"triton"`` (always Triton; CPU tensors need ``TRITON_INTERPRET=1``) or ``"reference"``."""
    global _backend
    _backend = _check(name)


def get_backend() -> str:
    """The backend in force: set_backend's, else env ``TRITONNET_BACKEND``, else ``"auto"``."""
    if _backend is not None:
        return _backend
    return _check(os.environ.get("TRITONNET_BACKEND", "auto") or "auto")


class use_backend:
    """Context manager that switches the backend for a block and restores it afterwards."""

    def __init__(self, name: str):
        self.name = _check(name)

    def __enter__(self):
        global _backend
        self._saved = _backend
        _backend = self.name
        return self

    def __exit__(self, *exc):
        global _backend
        _backend = self._saved
        return False


_triton_found = False


def triton_available() -> bool:
    """Whether the triton package can be imported (a found package is remembered: this is
    asked on every op call, and the search costs microseconds)."""
    global _triton_found
    if not _triton_found:
        _triton_found = importlib.util.find_spec("triton") is not None
    return _triton_found


def interpreter_enabled() -> bool:
    """Triton's interpreter runs kernels on CPU tensors when TRITON_INTERPRET=1 is set
    before the kernels are first imported."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _kernels() -> ModuleType:
    if not triton_available():
        raise RuntimeError(
            "tritonnet backend 'triton' needs the triton package, which is not installed; "
            "use set_backend('reference') or install triton"
        )
    return sys.modules.get("tritonnet.kernels") or importlib.import_module("tritonnet.kernels")


def _reference() -> ModuleType:
    return sys.modules.get("tritonnet.reference") or importlib.import_module("tritonnet.reference")


def backend_for(tensor: torch.Tensor) -> ModuleType:
    """The primitives module that runs for ``tensor`` under the backend in force."""
    name = get_backend()
    if name == "reference":
        return _reference()
    if name == "auto":
        if tensor.is_cuda and triton_available():
            return _kernels()
        return _reference()
    # name == "triton"
    if tensor.is_cuda:
        return _kernels()
    if tensor.device.type == "cpu" and interpreter_enabled():
        return _kernels()
    raise RuntimeError(
        f"tritonnet backend 'triton' got a tensor on {tensor.device}: Triton kernels run on CUDA "
        "tensors, or on CPU tensors only through Triton's interpreter (set TRITON_INTERPRET=1 "
        "before importing tritonnet). Use set_backend('auto') to fall back to the reference."
    )
