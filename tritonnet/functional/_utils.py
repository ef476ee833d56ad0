"""Argument checks and autocast handling shared by the functional ops."""

from __future__ import annotations

import contextlib
import operator
import warnings

import torch

FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def warn(message: str, stacklevel: int) -> None:
    """``warnings.warn(message, stacklevel=stacklevel)`` as called from the caller's frame,
    except while torch.compile traces: dynamo cannot trace ``warnings.warn`` (a C builtin), so
    a warning there broke the graph and failed ``fullgraph=True``, where torch's own functions
    (in-graph calls to dynamo) compile. Compiled code does without the warning."""
    if not torch.compiler.is_compiling():
        warnings.warn(message, stacklevel=stacklevel + 1)


def index(v):
    """``operator.index(v)``, but a symbolic int (a size under torch.compile or torch.export)
    stays symbolic: its ``__index__`` would specialize the size to the example's value."""
    return v if isinstance(v, torch.SymInt) else operator.index(v)


def int_elements(op: str, name: str, items, bools: bool = True) -> tuple:
    """The elements of a sequence argument as ints, as torch's argument parser takes them
    (ints, numpy ints, 0-d integer tensors; symbolic sizes stay symbolic; bools unless
    ``bools`` is False): torch's TypeError naming the argument and the first element of
    another type (a float would otherwise be truncated)."""
    for i, v in enumerate(items):
        if (isinstance(v, bool) and not bools) or not hasattr(type(v), "__index__"):
            raise TypeError(
                f"{op}(): argument '{name}' must be tuple of ints, but found element of type "
                f"{type(v).__name__} at pos {i}"
            )
    return tuple(index(v) for v in items)


def check_tensors(op: str, optional: tuple[str, ...] = (), **args) -> None:
    """torch's TypeError for an argument that must be a Tensor (those named in ``optional``
    may be None), raised before anything reads the argument."""
    for name, v in args.items():
        if not isinstance(v, torch.Tensor) and not (v is None and name in optional):
            raise TypeError(f"{op}(): argument '{name}' must be Tensor, not {type(v).__name__}")


def check_float(name: str, t: torch.Tensor) -> None:
    if t.dtype not in FLOATS:
        raise RuntimeError(
            f"{name}: expected a floating-point tensor (float32, float16, bfloat16 or float64), "
            f"got {t.dtype}"
        )


def check_same(op: str, **tensors: torch.Tensor | None) -> None:
    """Same device and dtype for every given tensor, with PyTorch's exception type (RuntimeError)."""
    named = [(k, v) for k, v in tensors.items() if v is not None]
    k0, t0 = named[0]
    for k, t in named[1:]:
        if t.device != t0.device:
            raise RuntimeError(
                f"{op}: expected all tensors to be on the same device, but {k0} is on {t0.device} "
                f"and {k} is on {t.device}"
            )
        if t.dtype != t0.dtype:
            raise RuntimeError(
                f"{op}: expected {k0} and {k} to have the same dtype, but got {k0}: {t0.dtype} "
                f"and {k}: {t.dtype}"
            )


def autocast_dtype(t: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast would cast a lower-precision op (linear, conv) to, or None."""
    dev = t.device.type
    if dev in ("cuda", "cpu") and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return None


def autocast_fp32(t: torch.Tensor) -> bool:
    """Whether autocast is on for ``t``'s device (ops on its fp32 list then run in fp32)."""
    dev = t.device.type
    return dev in ("cuda", "cpu") and torch.is_autocast_enabled(dev)


def autocast_off(t: torch.Tensor):
    """Run a primitive with autocast off once its inputs have been cast, so the reference
    backend's own torch ops do not cast a second time."""
    dev = t.device.type
    if dev in ("cuda", "cpu") and torch.is_autocast_enabled(dev):
        return torch.autocast(dev, enabled=False)
    return contextlib.nullcontext()


def cast(t: torch.Tensor | None, dtype: torch.dtype | None) -> torch.Tensor | None:
    """Autocast's cast: floating tensors other than float64 go to ``dtype`` (as torch's)."""
    if t is None or dtype is None or not t.is_floating_point() or t.dtype in (dtype, torch.float64):
        return t
    return t.to(dtype)
