"""Shared test helpers: the device kernels run on, dtype tolerances, relative-error checks."""

from __future__ import annotations

import contextlib
import os
import re

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
# (major, minor) of the installed torch: the "like torch" tests compare with it, and a few of
# its behaviours changed between the versions the README names (README, "Versions")
TORCH_VERSION = tuple(int(p) for p in re.findall(r"\d+", torch.__version__)[:2])
# Triton kernels run on CUDA when there is a GPU, else on CPU tensors through the interpreter.
KERNEL_DEVICE = "cuda" if HAS_CUDA else "cpu"
FULL = os.environ.get("TRITONNET_FULL", "0") == "1" or HAS_CUDA

# dtype, relative-error tolerance for kernel-vs-reference comparisons (||a-b|| / ||b||):
DTYPES = [
    pytest.param(torch.float32, 1e-5, id="fp32"),
    # half precision: same fp32 accumulation, but rounding of the stored result (and of the
    # inputs to the second GEMM of a chain) gives ~1 ulp differences
    pytest.param(torch.float16, 2e-3, id="fp16"),
    pytest.param(torch.bfloat16, 1.6e-2, id="bf16"),
]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.isfinite(a).all() == torch.isfinite(b).all()
    denom = b.norm().item()
    return (a - b).norm().item() / (denom if denom > 0 else 1.0)


def assert_close_rel(a, b, tol, what=""):
    err = rel_err(a, b)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:.3g}"


def assert_like_torch(cases, ours, device, tol=1e-4):
    """Each case (fn, *tensors): fn(ours, *leaves) against fn(torch.nn.functional, *leaves),
    the values and the gradient of every tensor, on fresh leaves moved to ``device``; the
    result's and the gradients' strides too (over the dims of size > 1, where a stride means
    something)."""
    import torch.nn.functional as TF

    for i, (fn, *args) in enumerate(cases):
        args = [a.to(device) for a in args]
        mine = [a.detach().requires_grad_() for a in args]
        theirs = [a.detach().requires_grad_() for a in args]
        y, ty = fn(ours, *mine), fn(TF, *theirs)
        torch.testing.assert_close(y, ty, atol=tol, rtol=tol, msg=f"case {i}")
        assert strides(y) == strides(ty), f"case {i}: result strides {y.stride()} vs {ty.stride()}"
        g = torch.randn_like(ty)
        for a, b in zip(torch.autograd.grad(y, mine, g), torch.autograd.grad(ty, theirs, g)):
            torch.testing.assert_close(a, b, atol=tol, rtol=tol, msg=f"case {i}: a gradient")
            assert strides(a) == strides(b), f"case {i}: gradient strides {a.stride()} vs {b.stride()}"


def strides(t):
    """The strides of ``t``'s dims of size > 1 (the only ones that say anything of layout;
    none of an empty tensor's do)."""
    return [st for n, st in zip(t.shape, t.stride()) if n > 1] if t.numel() else []


def tf32_off():
    """fp32 comparisons on a GPU are made at full fp32 precision on both sides."""
    if HAS_CUDA:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


class OutOfBounds(AssertionError):
    """A Triton kernel touched memory outside every tensor it was launched with."""


def _storage_spans(args):
    spans = []
    for a in args:
        if isinstance(a, torch.Tensor) and a.device.type == "cpu":
            s = a.untyped_storage()
            spans.append((s.data_ptr(), s.nbytes()))
    return spans


@contextlib.contextmanager
def _patched(obj, **attrs):
    """``obj``'s attributes replaced by ``attrs`` within; yields the originals, restored after."""
    saved = {k: getattr(obj, k) for k in attrs}
    for k, v in attrs.items():
        setattr(obj, k, v)
    try:
        yield saved
    finally:
        for k, v in saved.items():
            setattr(obj, k, v)


@contextlib.contextmanager
def _launches(state=lambda args: None):
    """Yields the interpreted launches running now, innermost last: (kernel name,
    ``state(arguments)``) each."""
    from triton.runtime import interpreter as ti

    stack = []
    call = ti.GridExecutor.__call__

    def traced_call(self, *args, **kwargs):
        stack.append((getattr(self.fn, "__name__", "?"), state(list(args) + list(kwargs.values()))))
        try:
            return call(self, *args, **kwargs)
        finally:
            stack.pop()

    with _patched(ti.GridExecutor, __call__=traced_call):
        yield stack


def _addresses(ptrs, mask):
    """(the addresses of an interpreted access's unmasked lanes, flat; its element's bytes)."""
    import numpy as np

    addr = np.asarray(ptrs.data, dtype=np.uint64)
    if mask is not None:
        addr = addr[np.broadcast_to(np.asarray(mask.data, dtype=bool), addr.shape)]
    return addr.ravel(), ptrs.get_element_ty().primitive_bitwidth // 8


@contextlib.contextmanager
def bounds_checked():
    """Within (interpreter only): every load and store a Triton kernel issues, masked-off lanes
    excepted, must lie wholly inside the storage of one of the tensors its launch was given,
    and its grid within CUDA's caps; else OutOfBounds names the kernel, the access and the
    first stray address (or the grid). Results alone cannot show a stray read whose value is
    never stored (a clamped or masked tile edge), and on a GPU such a read can fault or read
    another allocation's bytes."""
    import numpy as np
    from triton.runtime import interpreter as ti

    B = ti.InterpreterBuilder

    def check(ptrs, mask, what):
        if not launches:
            return
        name, spans = launches[-1]
        addr, size = _addresses(ptrs, mask)
        ok = np.zeros(addr.shape, dtype=bool)
        for lo, n in spans:
            ok |= (addr >= lo) & (addr + size <= lo + n)
        if not ok.all():
            bad = addr[~ok]
            raise OutOfBounds(
                f"{name}: {what} of {bad.size} element(s) outside every argument tensor, first at "
                f"{int(bad[0]):#x}; arguments span "
                + ", ".join(f"[{lo:#x}, {lo + n:#x})" for lo, n in spans)
            )

    def load(self, ptr, *a):
        check(ptr, None, "load")
        return saved["create_load"](self, ptr, *a)

    def store(self, ptr, val, *a):
        check(ptr, None, "store")
        return saved["create_store"](self, ptr, val, *a)

    def masked_load(self, ptrs, mask, *a):
        check(ptrs, mask, "load")
        return saved["create_masked_load"](self, ptrs, mask, *a)

    def masked_store(self, ptrs, value, mask, *a):
        check(ptrs, mask, "store")
        return saved["create_masked_store"](self, ptrs, value, mask, *a)

    def set_grid_dim(self, nx, ny, nz):
        # CUDA's caps: 2**31 - 1 programs along the grid's first axis, 65535 along the others
        if nx >= 2**31 or ny > 65535 or nz > 65535:
            raise OutOfBounds(f"{launches[-1][0] if launches else '?'}: grid ({nx}, {ny}, {nz}) "
                              "passes CUDA's caps of (2**31 - 1, 65535, 65535) programs")
        return saved["set_grid_dim"](self, nx, ny, nz)

    with _launches(_storage_spans) as launches, _patched(
        B, create_load=load, create_store=store, create_masked_load=masked_load,
        create_masked_store=masked_store, set_grid_dim=set_grid_dim,
    ) as saved:
        yield


class Race(AssertionError):
    """Two programs of one Triton launch touched the same bytes, at least one of them writing."""


_PAGE_BITS = 12  # the race check keeps its state per 4 KiB page of the addresses touched


@contextlib.contextmanager
def races_checked():
    """Within (interpreter only): a launch writes each byte at most once, and a byte it writes
    is read, if at all, only by the program that writes it and only before that write
    (masked-off lanes excepted); else Race names the kernel, the programs and the address.

    The interpreter runs a launch's programs one after another, and a program's lanes in
    lockstep, so a kernel that breaks this passes there and on a GPU gives wrong or
    nondeterministic results: programs run at once and in any order (a lost update, a stale
    read), and the threads of one program are not ordered through global memory without a
    barrier (which lane of a store a later load meets on the same thread depends on the
    layouts the compiler picks). The pool gradients' scatters and the split reductions rest on
    ownership rules that keep to this; it checks them on every test's shapes."""
    import numpy as np
    from triton.runtime import interpreter as ti

    class Pages:
        """Per byte touched in one launch: the program that wrote it (-1: none) and the one
        that read it (-1: none, -2: more than one), pages allocated as they are touched."""

        def __init__(self):
            self.slot = {}
            self.writer = np.empty((0, 1 << _PAGE_BITS), np.int32)
            self.reader = np.empty((0, 1 << _PAGE_BITS), np.int32)

        def index(self, addr):
            pages, inverse = np.unique(addr >> np.uint64(_PAGE_BITS), return_inverse=True)
            new = [int(p) for p in pages if int(p) not in self.slot]
            if new:
                n = len(self.slot)
                grow = max(len(new), n)  # doubling: amortised copies
                if n + len(new) > self.writer.shape[0]:
                    fill = np.full((grow, 1 << _PAGE_BITS), -1, np.int32)
                    self.writer = np.concatenate([self.writer, fill])
                    self.reader = np.concatenate([self.reader, fill])
                for i, p in enumerate(new):
                    self.slot[p] = n + i
            slots = np.array([self.slot[int(p)] for p in pages], dtype=np.intp)
            return slots[inverse.ravel()], (addr & np.uint64((1 << _PAGE_BITS) - 1)).astype(np.intp)

    def grid_idx(builder, pid):
        _, gy, gz = builder.grid_dim
        return (pid // (gy * gz), pid // gz % gy, pid % gz)

    def track(builder, ptrs, mask, write):
        if not launches:
            return
        name, pages = launches[-1]
        addr, size = _addresses(ptrs, mask)
        if addr.size == 0:
            return
        addr = (addr.reshape(-1, 1) + np.arange(size, dtype=np.uint64)).ravel()
        x, y, z = builder.grid_idx
        _, gy, gz = builder.grid_dim
        pid = (x * gy + y) * gz + z
        slot, off = pages.index(addr)
        w = pages.writer[slot, off]
        if write:
            # any earlier write of these bytes, by this program or another; then any read
            # by another program
            clash, other, what = w != -1, w, "wrote"
            if not clash.any():
                r = pages.reader[slot, off]
                clash, other, what = (r != -1) & (r != pid), r, "read"
            if not clash.any() and np.unique(addr).size != addr.size:
                first = np.unique(addr, return_counts=True)
                raise Race(f"{name}: program {builder.grid_idx} writes address "
                           f"{int(first[0][first[1] > 1][0]):#x} from two lanes of one store")
        else:
            clash, other, what = w != -1, w, "wrote"
        if clash.any():
            i = int(np.argmax(clash))
            by = ("more than one other program" if other[i] == -2
                  else "the same program" if other[i] == pid
                  else f"program {grid_idx(builder, int(other[i]))}")
            raise Race(
                f"{name}: program {builder.grid_idx} {'writes' if write else 'reads'} address "
                f"{int(addr[i]):#x}, which {by} of the same launch {what}: on a GPU the "
                "programs run at once, in no fixed order, and one program's threads are not "
                "ordered through global memory"
            )
        if write:
            pages.writer[slot, off] = pid
        else:
            r = pages.reader[slot, off]
            pages.reader[slot, off] = np.where((r == -1) | (r == pid), pid, -2)

    def masked_load(self, ptrs, mask, *a):
        track(self, ptrs, mask, False)
        return saved["create_masked_load"](self, ptrs, mask, *a)

    def masked_store(self, ptrs, value, mask, *a):
        track(self, ptrs, mask, True)
        return saved["create_masked_store"](self, ptrs, value, mask, *a)

    with _launches(lambda args: Pages()) as launches, _patched(
        ti.InterpreterBuilder, create_masked_load=masked_load, create_masked_store=masked_store,
    ) as saved:
        yield


class WrongHint(AssertionError):
    """A kernel told Triton's compiler something of its values (tl.multiple_of,
    tl.max_contiguous, tl.max_constancy) that the values do not bear out."""


@contextlib.contextmanager
def hints_checked():
    """Within (interpreter only): the values a kernel hints with tl.multiple_of,
    tl.max_contiguous or tl.max_constancy must bear the hints out, in every lane (masked-off
    ones too: the compiler's vectors span them); else WrongHint names the kernel, the hint and
    the first value against it. The interpreter records hints and ignores them; the compiler
    believes them, and a wrong one vectorises a load or store over lanes that are not
    neighbours or not aligned: wrong values, or a misaligned-address fault, on a GPU only.

    The hints read as Triton's axis analysis reads them, along each dimension d:
      max_contiguous(c)  each aligned group of c lanes holds consecutive values (v, v+1, ...)
      max_constancy(c)   each aligned group of c lanes holds one value
      multiple_of(m)     the first value of each contiguous group is a multiple of m; the
                         groups are max_contiguous's where that is hinted too, else the
                         longest aligned runs the values hold (so the check is at most as
                         strict as the compiler's reading, never stricter)."""
    import numpy as np
    from triton.runtime import interpreter as ti

    keys = {"tt.divisibility": "multiple_of", "tt.contiguity": "max_contiguous",
            "tt.constancy": "max_constancy"}

    def steps(v, d, group, step):
        """Whether each aligned group of ``group`` lanes along d advances by ``step``."""
        n = v.shape[d]
        inside = np.nonzero((np.arange(n - 1) + 1) % group != 0)[0]
        return bool((np.take(np.diff(v, axis=d), inside, axis=d) == step).all())

    def runs(v, d):
        """The longest power-of-two aligned groups along d whose values run consecutively."""
        g = 1
        while 2 * g <= v.shape[d] and steps(v, d, 2 * g, 1):
            g *= 2
        return g

    def check(handle):
        v = np.asarray(handle.data)
        v = v.astype(np.uint64 if v.dtype == np.uint64 else np.int64).reshape(v.shape or (1,))
        hints = {k: handle.attr[k] for k in keys if k in handle.attr}

        def along(k, d):
            vals = hints[k]
            return int(vals[d] if len(vals) == v.ndim else vals[0])

        for d in range(v.ndim):
            what = None
            for k, step in (("tt.contiguity", 1), ("tt.constancy", 0)):
                if k in hints and not steps(v, d, min(along(k, d), v.shape[d]), step):
                    what = f"{keys[k]}({along(k, d)})", "does not hold"
            if "tt.divisibility" in hints and what is None:
                m = along("tt.divisibility", d)
                group = (min(along("tt.contiguity", d), v.shape[d]) if "tt.contiguity" in hints
                         else runs(v, d))
                firsts = np.take(v, np.arange(0, v.shape[d], group), axis=d)
                bad = firsts % m != 0
                if bad.any():
                    what = f"multiple_of({m})", f"has {int(firsts[bad][0])} first in a group of {group}"
            if what is not None:
                name = launches[-1][0] if launches else "?"
                raise WrongHint(f"{name}: tl.{what[0]} along dimension {d} of a {list(v.shape)} "
                                f"value {what[1]}: values {v.ravel()[:16].tolist()}...")

    def set_attr(self, key, value):
        saved["set_attr"](self, key, value)
        if key in keys:
            check(self)

    with _launches() as launches, _patched(ti.TensorHandle, set_attr=set_attr) as saved:
        yield


def opcheck(op, args) -> None:
    """torch.library.opcheck of a primitive (tritonnet.ops.*, checked through its operator) or
    an OpOverload: schema, fake (meta) shapes and strides against the real op, the autograd
    registration (a fallthrough: autograd is the Function around the operator, see
    tritonnet/ops/_primitive.py), and AOT dispatch (what torch.compile relies on)."""
    from tritonnet.ops._primitive import Primitive

    torch.library.opcheck(op.op if isinstance(op, Primitive) else op, args)


@contextlib.contextmanager
def fake_layouts_checked():
    """Within: every tritonnet operator call (forward and gradient primitives, whatever calls
    them) is run again on fake tensors through its fake kernel, and the fake result must have
    the real one's shape, dtype and strides (the significant ones, as torch's own cross-check
    compares them). torch.compile plans downstream code with the fake's strides, so a fake
    that says contiguous where the real op returns channels_last fails a compiled model
    (inductor asserts) or mis-indexes it."""
    from torch._prims_common import check_significant_strides
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves, tree_map

    class Check(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if func.namespace != "tritonnet" or func._schema.is_mutable:
                return out
            with FakeTensorMode() as mode:
                fake = lambda t: mode.from_tensor(t) if isinstance(t, torch.Tensor) else t  # noqa: E731
                fake_out = func(*tree_map(fake, args), **tree_map(fake, kwargs))
            for i, (r, f) in enumerate(zip(tree_leaves(out), tree_leaves(fake_out))):
                if isinstance(r, torch.Tensor):
                    same = r.shape == f.shape and r.dtype == f.dtype
                    assert same and check_significant_strides(r, f, only_cuda=False)[0], (
                        f"{func} output {i}: real {tuple(r.shape)} {r.dtype} strides {r.stride()}, "
                        f"fake {tuple(f.shape)} {f.dtype} strides {f.stride()}")
            return out

    with Check():
        yield


def first_output(out):
    """An op's result, or its first where it returns several (values, indices)."""
    return out[0] if isinstance(out, tuple) else out


def _randn_like(t, gen):
    return torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device)


def second_order(fn, args, kw, seed):
    """Double backward of fn(*args, **kw) (its first output): the gradients (create_graph=True)
    summed against random weights, then differentiated with respect to every floating input
    and to the incoming gradient."""
    gen = torch.Generator().manual_seed(seed)
    args = [a.detach().requires_grad_() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
    out = first_output(fn(*args, **kw))
    g = _randn_like(out, gen).requires_grad_()
    xs = [a for a in args if torch.is_tensor(a) and a.requires_grad]
    grads = torch.autograd.grad(out, xs, g, create_graph=True)
    s = sum((d * _randn_like(d, gen)).sum() for d in grads)
    return torch.autograd.grad(s, [*xs, g], allow_unused=True)


def tangent(fn, args, kw, seed):
    """Forward mode: fn's (first) output and its tangent, for random tangents of every
    floating input."""
    fwad = torch.autograd.forward_ad
    gen = torch.Generator().manual_seed(seed)
    with fwad.dual_level():
        args = [fwad.make_dual(a.detach(), _randn_like(a, gen))
                if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
        primal, t = fwad.unpack_dual(first_output(fn(*args, **kw)))
        return primal.clone(), None if t is None else t.clone()


def assert_derivatives_close(ours, theirs, msg):
    """second_order's or tangent's results alike (NaN included); None (no path: a zero
    derivative) on either side is zeros."""
    for a, b in zip(ours, theirs, strict=True):
        if a is None and b is None:
            continue
        a = torch.zeros_like(b) if a is None else a
        b = torch.zeros_like(a) if b is None else b
        torch.testing.assert_close(a, b, equal_nan=True, rtol=1e-5, atol=1e-5, msg=msg)


def bench_recorder(copy_gbs=1000.0):
    """A benchmark Recorder whose timer runs each timed function once and reports 10 us
    (quantiles 9, 10, 12 us), with a copy ceiling: a benchmark module's logic on the CPU."""
    from tritonnet.bench import harness

    def timer(fn, grad_to_none=None):
        fn()
        return (0.01, 0.009, 0.012)

    rec = harness.Recorder({"device": "fake", "versions": "v", "timestamp": "t"}, timer, log=lambda *a: None)
    rec.ceilings["copy"] = copy_gbs
    return rec


@contextlib.contextmanager
def dispatched_ops():
    """Within: the ops dispatched (torch's and tritonnet's), appended in order, by name
    (``aten.sum.dim_IntList``), to the list this yields: what a call costs beyond its kernels
    (on a GPU, each aten op that computes is a launch)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Record():
        yield seen


class StopGradient(torch.autograd.Function):
    """Identity forward; hands back no gradient (None): the ops before it get an undefined
    gradient, as after a torch op whose derivative is undefined."""

    @staticmethod
    def forward(ctx, t):
        return t.clone()

    @staticmethod
    def backward(ctx, grad):
        return None


def older_torch_differs(op: str, kw: dict, theirs: str, ours: str, message: str = "") -> bool:
    """Whether torch raising ``theirs`` where ours raises ``ours`` (exception type names) is
    one of the installed torch's own behaviours that later torches changed, and which ours
    follow (README, "Versions"):
    - before 2.13, a string ``dim`` of softmax / log_softmax (and their modules) is read as a
      dimension name: RuntimeError ("Name 'x' not found", "Invalid name"); 2.13 and later
      raise the TypeError ours raise;
    - 2.11 and 2.12 check avg_pool's negative kernel size before the input's rank:
      RuntimeError "integer out of range" (``message``, torch's), where 2.10 and 2.13 raise
      the IndexError of a wrong rank, as ours.
    Anything else, a difference of ours, still fails the test."""
    if op.lower().replace("_", "") in ("softmax", "logsoftmax") and isinstance(kw.get("dim"), str):
        return TORCH_VERSION < (2, 13) and (theirs, ours) == ("RuntimeError", "TypeError")
    if op.startswith("avg_pool"):
        return ((2, 11) <= TORCH_VERSION < (2, 13) and (theirs, ours) == ("RuntimeError", "IndexError")
                and message == "integer out of range")
    return False
