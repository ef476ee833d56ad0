"""Argument checks and autocast handling shared by the functional ops."""

from __future__ import annotations

import contextlib
import functools
import operator
import warnings

import torch
from torch.overrides import handle_torch_function, has_torch_function

FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def overridable(fn):
    """The ``__torch_function__`` protocol for a public function, as torch.nn.functional's
    functions have it: a call with a tensor subclass that overrides ``__torch_function__``
    among its arguments (an fx ``Proxy`` while ``torch.fx.symbolic_trace`` traces, a logging
    or masked tensor), or under a ``TorchFunctionMode``, goes to that override with this
    function as the API called, once, instead of the override seeing the torch ops inside."""

    @functools.wraps(fn)
    def public(*args, **kwargs):
        if has_torch_function(args) or (kwargs and has_torch_function(tuple(kwargs.values()))):
            # every argument is a candidate (a Proxy is no Tensor); torch keeps those whose
            # type has a __torch_function__ of its own
            return handle_torch_function(public, (*args, *kwargs.values()), *args, **kwargs)
        return fn(*args, **kwargs)

    return public


def warn(message: str, stacklevel: int) -> None:
    """``warnings.warn(message, stacklevel=stacklevel)`` as called from the caller's frame,
    with ``stacklevel`` counted as in torch's functions, which have no ``overridable`` wrapper
    frame; except while torch.compile traces: dynamo cannot trace ``warnings.warn`` (a C
    builtin), so a warning there broke the graph and failed ``fullgraph=True``, where torch's
    own functions (in-graph calls to dynamo) compile. Compiled code does without the warning."""
    if not torch.compiler.is_compiling():
        warnings.warn(message, stacklevel=stacklevel + 2)


def index(v):
    """``operator.index(v)``, but a symbolic int (a size under torch.compile or torch.export)
    stays symbolic: its ``__index__`` would specialize the size to the example's value."""
    return v if isinstance(v, torch.SymInt) else operator.index(v)


def typename(v) -> str:
    """The type name torch's argument parser prints ("numpy.bool", "Tensor", "float")."""
    t = type(v)
    return "Tensor" if isinstance(v, torch.Tensor) else (
        f"{t.__module__}.{t.__name__}" if t.__module__ == "numpy" else t.__name__)


def has_slot(v, name) -> bool:
    """``hasattr(type(v), name)``: the type slot (``__index__``, ``__float__``) torch's argument
    parser checks. A numpy scalar is asked through itself, which gives the same answer and
    which torch.compile can trace (its ``hasattr`` of a numpy type is unsupported and failed
    ``fullgraph=True`` where torch's own functions compile)."""
    return hasattr(v, name) if type(v).__module__ == "numpy" else hasattr(type(v), name)


def _scalar_index(v):
    """``v`` as an int through its ``__index__`` (symbolic sizes stay symbolic), or None for
    a Python bool, a value without ``__index__`` (a float) or one whose ``__index__`` refuses
    (numpy's bool, a float tensor)."""
    if isinstance(v, bool) or not has_slot(v, "__index__"):
        return None
    try:
        return index(v)
    except TypeError:
        return None


def wrong_type(op: str, name: str, position: int | None, want: str, v) -> TypeError:
    """torch's argument parser's TypeError for a scalar argument of another type."""
    where = f" (position {position})" if position is not None else ""
    return TypeError(f"{op}(): argument '{name}'{where} must be {want}, not {typename(v)} (got {v!r})")


def is_number(v) -> bool:
    """A Python number (a bool too), a symbolic one, or a numpy scalar with ``__float__``:
    what torch's argument parser takes for a float without looking further."""
    return isinstance(v, (int, float, torch.SymInt, torch.SymFloat)) or (
        type(v).__module__ == "numpy" and has_slot(v, "__float__"))


def int_arg(op: str, name: str, v, position: int | None = None, symint: bool = False):
    """A scalar int argument as torch's argument parser takes it: an int, a numpy int, or a
    0-d integer tensor (any one-element integer tensor for an argument torch's schema types
    as a SymInt: ``symint``), never a bool of any kind (symbolic sizes stay symbolic);
    otherwise torch's TypeError naming the argument and the type."""
    out = None
    if not isinstance(v, torch.Tensor) or (
        (v.numel() == 1 if symint else v.dim() == 0)
        and not (v.is_floating_point() or v.is_complex() or v.dtype == torch.bool)
    ):
        out = _scalar_index(v)
    if out is None:
        raise wrong_type(op, name, position, "int", v)
    return out


def int_elements(op: str, name: str, items, value=None) -> tuple:
    """The elements of a sequence argument as ints, as torch's argument parser takes them:
    ints, numpy ints, 0-d integer tensors (symbolic sizes stay symbolic). The parser checks
    the first element's type only and converts the rest, so a bool is torch's TypeError
    first and passes as 0 or 1 after (torch takes ``(2, True)``, refuses ``(True, 2)``); a
    float anywhere is its TypeError (int() would truncate it). The message shows ``value``
    (the argument as given; ``items`` by default)."""
    out = []
    for i, v in enumerate(items):
        n = int(v) if i and isinstance(v, bool) else _scalar_index(v)
        if n is None:
            raise TypeError(
                f"{op}(): argument '{name}' must be tuple of ints, but found element of type "
                f"{typename(v)} at pos {i} (got {items if value is None else value!r})"
            )
        out.append(n)
    return tuple(out)


def not_ints(op: str, name: str, value) -> str:
    return f"{op}(): argument '{name}' must be tuple of ints, not {typename(value)} (got {value!r})"


def int_list(op: str, name: str, value) -> tuple:
    """An int-or-tuple-of-ints argument as torch's argument parser takes it: a sequence's
    elements by :func:`int_elements`, a bare value as a 1-tuple; a bare bool or float is
    torch's TypeError (True would pass as 1, and int() would truncate 1.5 to 1)."""
    if isinstance(value, (list, tuple, torch.Size)):
        return int_elements(op, name, value)
    out = _scalar_index(value)
    if out is None:
        raise TypeError(not_ints(op, name, value))
    return (out,)


def float_arg(op: str, name: str, v, position: int | None = None):
    """A float argument as torch's argument parser takes it: a Python or numpy number (a bool
    too), a symbolic one, or a 0-d tensor that does not require grad; otherwise torch's
    TypeError naming the argument (a Fraction, a one-element 1-d tensor). Returns ``v``."""
    ok = v.dim() == 0 and not v.requires_grad if isinstance(v, torch.Tensor) else is_number(v)
    if not ok:
        raise wrong_type(op, name, position, "float", v)
    return v


def bool_arg(op: str, name: str, v, position: int | None = None):
    """A bool argument as torch's argument parser takes it: a Python bool (or a symbolic
    one), nothing else; an int, None, numpy's bool or a tensor is torch's TypeError naming
    the argument (1 and None would otherwise pass by their truth)."""
    if isinstance(v, (bool, torch.SymBool)):
        return v
    raise wrong_type(op, name, position, "bool", v)


def check_tensors(op: str, optional: tuple[str, ...] = (), **args) -> None:
    """torch's TypeError for an argument that must be a Tensor (those named in ``optional``
    may be None), raised before anything reads the argument; a NotImplementedError (the
    dispatcher's type for a layout an op has no kernel for) naming the argument and its layout
    for a sparse or nested tensor, which the ops do not take (a nested tensor's ragged size
    failed inside the size arithmetic with an AttributeError)."""
    for name, v in args.items():
        if not isinstance(v, torch.Tensor):
            if v is None and name in optional:
                continue
            raise TypeError(f"{op}(): argument '{name}' must be Tensor, not {type(v).__name__}")
        if v.layout is not torch.strided or v.is_nested:
            kind = "a nested tensor" if v.is_nested else f"a tensor of layout {v.layout}"
            raise NotImplementedError(
                f"{op}(): argument '{name}' must be a dense (strided) tensor, got {kind}"
            )


COMPLEX = (torch.complex32, torch.complex64, torch.complex128)


def check_float(name: str, t: torch.Tensor, not_implemented: tuple = ()) -> None:
    """A floating-point ``t``, else a RuntimeError naming the dtype; a NotImplementedError
    for the dtypes in ``not_implemented``, those for which torch's own op raises that."""
    if t.dtype not in FLOATS:
        raise (NotImplementedError if t.dtype in not_implemented else RuntimeError)(
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
