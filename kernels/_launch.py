"""Launching a compiled Triton kernel again without Triton's per-call Python.

``JITFunction.run`` (Triton 3.6 and 3.9) binds every argument through a generated function,
specialises each one in C (type, alignment, divisibility), hashes the result into a cache key
and looks the compiled kernel up, on every launch: ~30 us of host time for conv's ~45
arguments on this project's 2-core CPU (bench/NOTES.md, "Triton's launch path, memoised").
At batch 1 and 32 that is as long as the kernel.

Here the first launch of each exact call goes through ``JITFunction.run``; the compiled kernel
it returns is kept under a key that fixes everything Triton specialises on:
- the current device and each argument's type;
- the value of every non-tensor argument (ints, floats, bools, strings, None, Triton dtypes),
  finer than Triton, which keeps only an int's size class and divisibility; an int marked
  ``do_not_specialize`` (a random seed) is keyed by its size class alone;
- each tensor's dtype and whether its address is 16-byte aligned;
- the keyword names, the config, and the compile knobs (debug, instrumentation).

A later call with the same key launches that kernel through the same launcher call
``JITFunction.run`` ends with
(``CompiledKernel.run``, the current stream, launch metadata and hooks read per call), with
the arguments laid out as its binder lays them out (signature order, defaults filled in).

Not kept, so always Triton's own path: the interpreter, a kernel with pre-run hooks, a
``JITFunction.run`` replaced by a harness (compile_check's compile-only runs), a kernel
still compiling (async compile), arguments of any other type, a Triton whose
``JITFunction.run`` does not end with the launcher call repeated here (checked in its source
at import), and TRITONNET_FAST_LAUNCH=0.
Triton's check that the globals a kernel read have not changed runs at the first launch
only: our kernels read module constants that never change.

``tests/test_launch.py`` holds this to ``JITFunction.run``: for calls that differ in every
way that specialises a kernel, both paths must pick the same compiled kernel and hand the
launcher the same arguments (sm_90 through compile_check's stand-in driver; no GPU needed).
"""

from __future__ import annotations

import contextlib
import inspect
import operator
import os
import re
import threading

import torch
import triton
import triton.language as tl
from triton.compiler.compiler import CompiledKernel
from triton.runtime import driver
from triton.runtime.jit import JITFunction

try:  # triton.knobs: 3.4 has it, 3.2 has not (and no memo there)
    from triton import knobs
except ImportError:
    knobs = None

# The launcher call JITFunction.run ends with, which Launch.__call__ repeats (Triton 3.5 to
# 3.9). A Triton whose run reads otherwise keeps its own path.
_RUN_CALL = ("kernel.run(grid_0, grid_1, grid_2, stream, kernel.function, kernel.packed_metadata, "
             "launch_metadata, knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook, "
             "*bound_args.values())")


def _version(text: str) -> tuple[int, ...]:
    """(major, minor) of a version string: "3.5.1" and "3.6.0+git1a2b" alike."""
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2])


def memo_checked_triton() -> bool:
    """Whether the installed Triton is one this module is checked against (3.5 to 3.9:
    tests/launch_check.py; 3.4's run reads the same, but that check's stand-in driver does
    not run there, and 3.2 has no knobs)."""
    return knobs is not None and _version(triton.__version__) >= (3, 5)


def tritons_run_matches() -> bool:
    """Whether the installed Triton is a checked one (:func:`memo_checked_triton`) whose
    JITFunction.run binds its arguments and ends with the launcher call this module repeats
    (read from its source, whitespace aside)."""
    if not memo_checked_triton():
        return False
    try:
        source = inspect.getsource(JITFunction.run)
    except (OSError, TypeError):
        return False
    flat = " ".join(source.split())
    return _RUN_CALL in flat and "binder(*args, **kwargs)" in flat


ENABLED = os.environ.get("TRITONNET_FAST_LAUNCH", "1") not in ("", "0") and tritons_run_matches()

# the run this module stands in for; a different one (a harness's) turns the shortcut off
_JIT_RUN = JITFunction.run

# argument types whose value is the key (tensors are keyed by dtype and alignment); a Triton
# dtype is a constexpr some kernels take (dropout's accumulator)
_PLAIN = frozenset({int, float, bool, str, type(None), type(tl.float32)})

# Triton picks the interpreter when a kernel is decorated, so this is read once, at import
# (kernels._common re-exports it).
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

# The interpreter keeps a launch's grid and language state in globals: launches from two
# threads at once break each other (InterpreterError "x >= grid_dim[0]"). There, launches
# take turns; compiled launches need no lock.
_INTERPRETER_LOCK = threading.RLock() if INTERPRET else None

# kernels kept per (device, argument types, keyword names, knobs): a bound on memory when
# a caller's ints never repeat
LIMIT = 4096


def _int_class(v: int) -> str:
    """What Triton keeps of an int it does not specialise on (``do_not_specialize``): the
    type it passes it as."""
    return "i32" if -2**31 <= v < 2**31 else ("i64" if -2**63 <= v < 2**63 else "u64")


def _knobs():
    """The knobs JITFunction.run folds into a kernel's options or key (3.6 adds the
    instrumentation mode, 3.9 fpsan and the stages hook; getattr keeps the earlier ones)."""
    rt, comp = knobs.runtime, knobs.compilation
    return (rt.debug, getattr(comp, "instrumentation_mode", None),
            getattr(comp, "fpsan_homomorphic_casts", None), getattr(rt, "add_stages_inspection_hook", None))


@contextlib.contextmanager
def tritons_own_path():
    """Within: every launch goes through ``JITFunction.run``, as without this module (what
    the memo is measured and tested against). It replaces ``run`` by a pass-through, which
    turns the memo off as any harness's replacement does; kept kernels stay for after."""
    saved = JITFunction.run
    JITFunction.run = lambda self, *args, **kwargs: saved(self, *args, **kwargs)
    try:
        yield
    finally:
        JITFunction.run = saved


class Launch:
    """One compiled kernel, launched with a call's arguments in its signature's order."""

    __slots__ = ("kernel", "pick", "fixed", "names")

    def __init__(self, kernel, fn, n_args: int, kw_names: tuple, fixed: dict):
        params = inspect.signature(fn.fn).parameters
        self.names = tuple(fn.arg_names)
        # every parameter's source in (*args, *kwargs.values(), *self.fixed)
        fixed_values, order = [], []
        for i, name in enumerate(self.names):
            if i < n_args:
                order.append(i)
            elif name in kw_names:
                order.append(n_args + kw_names.index(name))
            else:
                value = fixed[name] if name in fixed else params[name].default
                if value is inspect.Parameter.empty:
                    raise TypeError(f"{fn.__name__}: no value for parameter {name!r}")
                order.append(n_args + len(kw_names) + len(fixed_values))
                fixed_values.append(value)
        self.fixed = tuple(fixed_values)
        self.pick = operator.itemgetter(*order) if len(order) > 1 else (lambda t: (t[order[0]],))
        self.kernel = kernel

    def __call__(self, grid, args, kwargs, device):
        values = self.pick((*args, *kwargs.values(), *self.fixed))
        if callable(grid):
            grid = grid(dict(zip(self.names, values)))
        n = len(grid)
        kernel = self.kernel
        stream = driver.active.get_current_stream(device)
        kernel.run(grid[0], grid[1] if n > 1 else 1, grid[2] if n > 2 else 1, stream,
                   kernel.function, kernel.packed_metadata, kernel.launch_metadata(grid, stream, *values),
                   knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook, *values)
        return kernel


class Memo:
    """Compiled kernels of one JITFunction by exact call (see the module's docstring)."""

    def __init__(self, fn):
        self.fn = fn if ENABLED and isinstance(fn, JITFunction) else None
        self._plans = {}

    def slot(self, args, kwargs):
        """(entries, key, device) for this call, or None where the shortcut does not apply."""
        fn = self.fn
        if fn is None or JITFunction.run is not _JIT_RUN or fn.pre_run_hooks:
            return None
        values = (*args, *kwargs.values())
        device = driver.active.get_current_device()
        head = (device, len(args), tuple(kwargs), tuple(map(type, values)), _knobs())
        plan = self._plans.get(head)
        if plan is None:
            plan = self._plans[head] = self._plan(head[1], head[2], head[3])
        if plan is False:
            return None
        tensors, loose, entries = plan
        if tensors or loose:
            values = list(values)
            for i in tensors:
                t = values[i]
                values[i] = (t.dtype, t.data_ptr() % 16 == 0)
            for i in loose:
                values[i] = _int_class(values[i])
            values = tuple(values)
        return entries, values, device

    def _plan(self, n_args, kw_names, types):
        """(positions of tensors, positions of ints Triton does not specialise on, entries),
        or False when an argument's type is not one this keys."""
        if not all(t in _PLAIN or issubclass(t, torch.Tensor) for t in types):
            return False
        names = (*self.fn.arg_names[:n_args], *kw_names)
        loose = {p.name for p in self.fn.params if p.do_not_specialize}
        return ([i for i, t in enumerate(types) if t not in _PLAIN],
                [i for i, t in enumerate(types) if t is int and names[i] in loose], {})

    def launch(self, slot, grid, args, kwargs):
        """The kept kernel launched for this call; None when there is none yet."""
        entries, key, device = slot
        hit = entries.get(key)
        return None if hit is None else hit(grid, args, kwargs, device)

    def keep(self, slot, kernel, args, kwargs, fixed):
        """Keep ``kernel``, which Triton's own path has just launched for this call with the
        constexprs ``fixed`` (an autotuner's config) on top of the call's arguments."""
        if not isinstance(kernel, CompiledKernel) or JITFunction.run is not _JIT_RUN:
            return
        entries, key, _ = slot
        if len(entries) >= LIMIT:
            entries.clear()
        entries[key] = Launch(kernel, self.fn, len(args), tuple(kwargs), fixed)


def device_guard(args, kwargs):
    """``torch.cuda.device(i)`` when the call's tensors are on CUDA device i and another
    device is current, else None. Triton launches on the current device (its context, its
    stream), so a model on cuda:1 with cuda:0 current would get kernels on the wrong GPU;
    torch's own ops guard the device the same way. The first tensor argument decides: the
    functional ops check that all of an op's tensors share a device. (~0.4 us a launch on
    this project's CPU for a CPU tensor first: is_cuda, not the slower .device.)"""
    for values in (args, kwargs.values()):
        for a in values:
            if isinstance(a, torch.Tensor):
                if a.is_cuda and a.get_device() != torch.cuda.current_device():
                    return torch.cuda.device(a.get_device())
                return None
    return None


class Launcher:
    """A ``triton.jit`` kernel launched ``kernel[grid](*args, **kwargs)`` as before, through
    a :class:`Memo` of its compiled kernels."""

    def __init__(self, fn):
        self.fn = fn
        self._memo = Memo(fn)

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self._launch(grid, args, kwargs)

    def _launch(self, grid, args, kwargs):
        if _INTERPRETER_LOCK is not None:
            with _INTERPRETER_LOCK:
                return self._launch_on_device(grid, args, kwargs)
        return self._launch_on_device(grid, args, kwargs)

    def _launch_on_device(self, grid, args, kwargs):
        guard = device_guard(args, kwargs)
        if guard is None:
            return self._launch_here(grid, args, kwargs)
        with guard:
            return self._launch_here(grid, args, kwargs)

    def _launch_here(self, grid, args, kwargs):
        slot = self._memo.slot(args, kwargs)
        if slot is not None:
            kernel = self._memo.launch(slot, grid, args, kwargs)
            if kernel is not None:
                return kernel
        kernel, fixed = self._first(grid, args, kwargs)
        if slot is not None and fixed is not None:
            self._memo.keep(slot, kernel, args, kwargs, fixed)
        return kernel

    def _first(self, grid, args, kwargs):
        """Triton's own launch of a call the memo does not hold: (the kernel, the constexprs
        and options the launch added to the call's arguments, or None if it must not be kept)."""
        return self.fn[grid](*args, **kwargs), {}


def launcher(fn) -> Launcher:
    """Decorator over ``@triton.jit``: the kernel's launches go through a :class:`Memo`."""
    return Launcher(fn)
