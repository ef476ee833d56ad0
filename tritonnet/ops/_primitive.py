"""How an op becomes a ``tritonnet::name`` operator: ``define`` + ``impl`` for the dispatcher,
and its autograd as a ``torch.autograd.Function`` outside the operator.

Why not ``torch.library.custom_op`` with ``register_autograd``: its eager calls cost tens of
microseconds of Python each (pytorch/pytorch#139500, #176592). Measured on this project's 2-core
CPU machine, torch 2.13, an op of conv2d's signature with an empty body (bench/NOTES.md,
"The op layer's host cost"):

    custom_op                       ~25 us     custom_op, an input needing grad   ~62 us
    define + impl (this module)      ~7 us     autograd.Function around it        ~16 us

At batch 1 the kernels of a ResNet are shorter than that, and LeNet's training step is made of
such calls, so the op layer's own cost is what the user waits for.

What the dispatcher still sees is the same: one opaque operator per primitive, with a fake
(meta) implementation, so ``torch.compile`` (which traces the Function), FakeTensor, meta
tensors and CUDA graph capture work as before. The Function is the classic ``forward(ctx, ...)``
kind: the ``setup_context`` kind binds every call's arguments through ``inspect.signature``
(~20 us here).

torch.func's transforms (grad, vmap, jacrev, ...) accept only the ``setup_context`` kind, so
while one is active a call goes through a second Function of that kind with the same formulas
(and ``generate_vmap_rule``). Under vmap an operator runs through its batching rule
(:meth:`Primitive.register_vmap`; most fold the vmap dimension into the batch, one launch for
all samples: :func:`rows_rule`, :func:`elementwise_rule`), or without one through torch's
fallback, once per sample.

Gradient primitives (conv2d_input_grad, activation_backward, ...) have autograd formulas of
their own, made of primitives and torch ops, so double backward (``create_graph=True``,
gradient penalties, ``jacrev(jacrev(f))``) works to any order.

Forward-mode AD (``torch.autograd.forward_ad``, ``torch.func.jvp``): each forward primitive's
formula (:meth:`Primitive.register_jvp`) is written with forward primitives and torch ops, so
a tangent is itself differentiable. An input with a tangent sends a call through a third
Function, which saves what the formula reads; nothing is saved for it otherwise. Gradient
primitives have jvps too, so forward over reverse (``torch.func.hessian``) works.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import inspect
import sys
import warnings

import torch
from torch import Tensor
from torch.autograd import forward_ad as _forward_ad

from ..reference._common import functorch_active

_LIB = torch.library.Library("tritonnet", "FRAGMENT")


def _needs_grad(args) -> bool:
    if not torch.is_grad_enabled():
        return False
    for a in args:
        if isinstance(a, Tensor) and a.requires_grad:
            return True
    return False


def _has_tangent(args) -> bool:
    """Whether forward-mode AD is on (a dual level is open: ``forward_ad.dual_level()``) and an
    input carries a tangent. One module attribute read when it is off."""
    if getattr(_forward_ad, "_current_level", 0) < 0:
        return False
    return any(isinstance(a, Tensor) and _forward_ad.unpack_dual(a).tangent is not None for a in args)


def _no_forward_ad(qualname: str) -> NotImplementedError:
    """A primitive without a jvp formula (none of the library's, since every one registers
    one) refuses a tangent: run anyway, the Triton kernels would drop it (a zero derivative,
    silently) while the reference's torch ops carried it."""
    return NotImplementedError(
        f"Trying to use forward AD with {qualname}, which does not support it: it has no jvp "
        "formula (Primitive.register_jvp)"
    )


class _Sizes(tuple):
    """A list argument (sizes, strides, scales) as torch.func's transforms should see it: one
    leaf. torch's generated vmap rule counts a list's elements as inputs where its jvp wrapper
    counts the list as one, and fails (torch.func.hessian through a conv did); an unregistered
    tuple subclass is a single pytree leaf, and the dispatcher takes it as the list."""

    __slots__ = ()


def _as_leaves(args):
    return tuple(_Sizes(a) if type(a) is list else a for a in args)


def _jvp_transform_active() -> bool:
    """Whether a torch.func.jvp (jacfwd, hessian) level is on the stack. Only then does a
    Function save for its jvp: saved-for-forward tensors also confuse the backward of torch's
    generated vmap rule (jacrev of jacrev failed on them)."""
    from torch._C._functorch import TransformType
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    return any(i.key() == TransformType.Jvp for i in retrieve_all_functorch_interpreters())


def _save_for_jvp(ctx, args, out) -> None:
    """What a jvp formula reads: the call's tensors (ctx.save_for_forward, as torch.func
    requires) and where they go among the other arguments."""
    outs = out if isinstance(out, tuple) else (out,)
    tensors = [a for a in args if isinstance(a, Tensor)]
    ctx.save_for_forward(*tensors, *outs)
    is_tensor = [isinstance(a, Tensor) for a in args]
    ctx.jvp_layout = (is_tensor, [None if t else a for a, t in zip(args, is_tensor)], isinstance(out, tuple))


def _saved_for_jvp(ctx):
    is_tensor, others, is_tuple = ctx.jvp_layout
    saved = iter(ctx.saved_tensors)
    args = [next(saved) if t else o for t, o in zip(is_tensor, others)]
    outs = tuple(saved)
    return args, outs if is_tuple else outs[0]


# FlopCounterMode (torch.utils.flop_counter) counts the flops of the operators that have a
# formula in its registry, a copy of which each FlopCounterMode takes when it is made. Importing
# that module imports Triton (its registry also takes Triton kernels), which ``import
# tritonnet`` must not do, so the formulas given to Primitive.register_flops go in when it is
# imported: at once if it already is, else right after its import (_AfterFlopCounterImport).
_flop_formulas: dict = {}
_FLOP_COUNTER = "torch.utils.flop_counter"


def _register_flops() -> None:
    """Into flop_counter's registry; a torch whose flop_counter reads otherwise gets a warning,
    not an error in the import of a module tritonnet does not own."""
    counter = sys.modules[_FLOP_COUNTER]
    try:
        for packet, formula in _flop_formulas.items():
            if packet not in counter.flop_registry:
                counter.register_flop_formula(packet)(formula)
    except Exception as e:  # noqa: BLE001 - any failure here is reported, not raised
        warnings.warn(f"tritonnet: FlopCounterMode will not count tritonnet's operators ({e!r})",
                      stacklevel=2)


class _AfterFlopCounterImport(importlib.abc.MetaPathFinder):
    """An import hook: finds torch.utils.flop_counter through the other finders and, once the
    module has run and before its importer gets it, registers the formulas and leaves
    sys.meta_path (a find_spec without an import leaves it in place)."""

    _finding = False

    def find_spec(self, fullname, path, target=None):
        if fullname != _FLOP_COUNTER or self._finding:
            return None
        self._finding = True
        try:
            spec = importlib.util.find_spec(fullname)  # the other finders' spec
        finally:
            self._finding = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            _register_flops()

        spec.loader.exec_module = exec_module
        return spec


def _without_autograd(fn):
    """fn run with grad mode off. The operator has no autograd kernel, so without this a
    direct call of ``torch.ops.tritonnet.name`` on inputs that need gradients would hand back
    the reference backend's own aten graph (and nothing from the Triton backend). The
    autograd.Function already runs it with grad mode off: one check, no context."""

    @functools.wraps(fn)
    def impl(*args):
        if torch.is_grad_enabled():
            with torch.no_grad():
                return fn(*args)
        return fn(*args)

    return impl


def front(x: Tensor, bdim, batch_size: int) -> Tensor:
    """``x`` with its vmap dimension first; an unbatched ``x`` expanded to the batch."""
    return x.expand(batch_size, *x.shape) if bdim is None else x.movedim(bdim, 0)


def _batched(in_dim) -> bool:
    """Whether vmap batches an argument (the in_dims of a list argument is a list of Nones)."""
    if isinstance(in_dim, (list, tuple)):
        return any(d is not None for d in in_dim)
    return in_dim is not None


def rows_rule(prim: Primitive, rows=(0,), sizes=()):
    """The batching rule of a primitive that works on the rows (dim 0, N) of the tensors at
    positions ``rows`` independently: the vmap dim B folds into N, one call for all samples,
    and each result (N first too) is put back as (B, N, ...). The size lists at positions
    ``sizes`` (a gradient's input_size, N first) grow to B*N with them. A batched tensor
    elsewhere (a per-sample weight) runs sample by sample."""

    def rule(info, in_dims, *args):
        B = info.batch_size
        if any(_batched(d) for i, d in enumerate(in_dims) if i not in rows):
            return prim.per_sample(info, in_dims, *args)
        args = list(args)
        for i in rows:
            x = front(args[i], in_dims[i], B)
            n, args[i] = x.shape[1], x.flatten(0, 1)
        for i in sizes:
            args[i] = [B * args[i][0], *args[i][1:]]
        out = prim.op(*args)
        if isinstance(out, tuple):
            return tuple(t.unflatten(0, (B, n)) for t in out), (0,) * len(out)
        return out.unflatten(0, (B, n)), 0

    return rule


def linear_jvp(prim: Primitive):
    """The jvp of a primitive linear in its first argument (pools by averaging, resampling,
    unfold/fold, dropout with its seed): the primitive itself applied to the tangent."""

    def jvp(args, output, tangents):
        return None if tangents[0] is None else prim(tangents[0], *args[1:])

    return jvp


def bilinear_tangent(op, a, b, t_a, t_b):
    """op(t_a, b) + op(a, t_b), the tangent of op(a, b) for an op linear in each operand (a
    convolution, a GEMM, their gradients); a term without a tangent is left out, and a tuple
    result adds output by output. None when neither operand has a tangent."""
    parts = ([op(t_a, b)] if t_a is not None else []) + ([op(a, t_b)] if t_b is not None else [])
    if not parts:
        return None
    if isinstance(parts[0], tuple):
        return tuple(sum(outs) for outs in zip(*parts))
    return sum(parts)


def weight_grad_tangent(op, op_no_db, grad_output, input, t_g, t_x, db):
    """The tangent of a weight-gradient primitive's (dw, db) = op(grad_output, input): dw is
    bilinear in (grad_output, input), but db, the sum of grad_output, is linear in
    grad_output alone, so an input tangent moves dw only. ``op_no_db`` computes dw without
    the sum; ``db`` is the primal db (its tangent is zeros when grad_output has none)."""
    if t_g is None and t_x is None:
        return None, None
    dw = t_db = None
    if t_g is not None:
        dw, t_db = op(t_g, input)
    if t_x is not None:
        dw_x = op_no_db(grad_output, t_x)
        dw = dw_x if dw is None else dw + dw_x
    return dw, torch.zeros_like(db) if t_db is None else t_db


def elementwise_rule(prim: Primitive, tensors=(0,)):
    """The batching rule of an elementwise primitive: the tensors at positions ``tensors``
    (None allowed) go in whole, the vmap dim first, and so does the result."""

    def rule(info, in_dims, *args):
        args = [front(a, d, info.batch_size) if i in tensors and a is not None else a
                for i, (a, d) in enumerate(zip(args, in_dims))]
        return prim.op(*args), 0

    return rule


def _function(name: str, methods: dict, module: str) -> type:
    """A torch.autograd.Function subclass named ``name`` with the given static methods."""
    return type(name, (torch.autograd.Function,), {**methods, "__module__": module, "__qualname__": name})


class Primitive:
    """``tritonnet::<fn.__name__>``, callable like ``fn``; the dispatcher runs ``fn`` on CPU and
    CUDA tensors, and the function given to :meth:`register_fake` on fake and meta ones.

    Every argument given positionally is the fast call; keywords and defaults are bound as
    for ``fn``. Until :meth:`register_autograd`, an input that needs a gradient is an error
    (as it is for a custom op without autograd), not a silently detached output.
    """

    def __init__(self, fn):
        name = fn.__name__
        _LIB.define(name + torch.library.infer_schema(fn, mutates_args=()))
        impl = _without_autograd(fn)
        _LIB.impl(name, impl, "CPU")
        _LIB.impl(name, impl, "CUDA")
        # not differentiable at the dispatcher: autograd is the Function below, outside it.
        # A fallthrough says so (no "autograd kernel not registered" wrapper on the outputs)
        _LIB.impl(name, torch.library.fallthrough_kernel, "Autograd")
        self.op = getattr(torch.ops.tritonnet, name).default
        self.qualname = f"tritonnet::{name}"
        functools.update_wrapper(self, fn)
        self._signature = inspect.signature(fn)
        self._nargs = len(self._signature.parameters)
        self._call = self._no_autograd
        self._jvp = None

    def __call__(self, *args, **kwargs):
        if kwargs or len(args) != self._nargs:
            # keywords, defaults, or a wrong count (TypeError): bind like a Python call, so
            # that the operator and setup_context see every input in order
            bound = self._signature.bind(*args, **kwargs)
            bound.apply_defaults()
            args = bound.args
        return self._call(*args)

    def __repr__(self):
        return f"<tritonnet primitive {self.qualname}>"

    def _no_autograd(self, *args):
        """The call until :meth:`register_autograd`: an input that needs a gradient or carries
        a tangent is refused (a detached result would be a silent zero derivative)."""
        if _needs_grad(args) or (not functorch_active() and _has_tangent(args)):
            raise RuntimeError(f"{self.qualname} has no autograd formula, so it cannot be differentiated")
        return self.op(*args)

    def register_vmap(self, rule):
        """``rule(info, in_dims, *args) -> (outputs, out_dims)``: torch.vmap's batching rule
        (``torch.library.register_vmap``). Without one, vmap runs the operator once per sample
        through torch's fallback, which warns of the performance drop."""
        register = getattr(torch.library, "register_vmap", None)  # torch >= 2.4
        if register is not None:
            register(self.qualname, rule, lib=_LIB)
        return rule

    def per_sample(self, info, in_dims, *args):
        """The operator once per sample, the results stacked on dim 0: what a batching rule
        does for the cases it cannot fold into one call."""

        def sample(b):  # in_dims of a list argument is a list (of Nones)
            return (a.select(d, b) if isinstance(a, Tensor) and d is not None else a
                    for a, d in zip(args, in_dims))

        outs = [self.op(*sample(b)) for b in range(info.batch_size)]
        if isinstance(outs[0], tuple):
            return tuple(torch.stack(o) for o in zip(*outs)), (0,) * len(outs[0])
        return torch.stack(outs), 0

    def register_fake(self, fake):
        torch.library.register_fake(self.qualname, fake, lib=_LIB)
        return fake

    def register_flops(self, formula):
        """``formula(*args, out_shape)``: the operator's flop count for FlopCounterMode, each
        tensor argument given as its shape and the output's shape (or the outputs' shapes) as
        ``out_shape``, as torch.utils.flop_counter.register_flop_formula takes it."""
        _flop_formulas[self.op.overloadpacket] = formula
        if _FLOP_COUNTER in sys.modules:
            _register_flops()
        elif not any(isinstance(f, _AfterFlopCounterImport) for f in sys.meta_path):
            sys.meta_path.insert(0, _AfterFlopCounterImport())
        return formula

    def register_autograd(self, backward, *, setup_context):
        """``setup_context(ctx, inputs, output)`` and ``backward(ctx, *grads)`` as for
        ``custom_op``; the forward is the operator itself, run with grad mode off. Forward-mode
        AD takes the formula given to :meth:`register_jvp`."""
        op = self.op
        prim = self

        def forward(ctx, *args):
            out = op(*args)
            setup_context(ctx, args, out)
            return out

        def forward_for_jvp(ctx, *args):  # the inputs arrive without their tangents
            out = forward(ctx, *args)
            _save_for_jvp(ctx, args, out)
            return out

        def func_setup(ctx, inputs, output):
            setup_context(ctx, inputs, output)
            if prim._jvp is not None and _jvp_transform_active():
                _save_for_jvp(ctx, inputs, output)

        def jvp(ctx, *tangents):
            if prim._jvp is None:
                raise _no_forward_ad(prim.qualname)
            args, out = _saved_for_jvp(ctx)
            return prim._jvp(args, out, tangents)

        fn = _function(self.__name__, {
            "forward": staticmethod(forward),
            "backward": staticmethod(backward),
        }, self.__module__)
        # with a tangent on an input (a forward_ad dual tensor): the same Function, saving what
        # the jvp formula reads (nothing is kept for it otherwise)
        fn_jvp = _function(self.__name__, {
            "forward": staticmethod(forward_for_jvp),
            "backward": staticmethod(backward),
            "jvp": staticmethod(jvp),
        }, self.__module__)
        # torch.func's transforms (grad, vmap, jacrev, ...) accept only the setup_context kind
        # of Function; under vmap the operator runs through its batching rule (register_vmap)
        func_fn = _function(self.__name__, {
            "forward": staticmethod(lambda *args: op(*args)),
            "setup_context": staticmethod(func_setup),
            "backward": staticmethod(backward),
            "jvp": staticmethod(jvp),
            "generate_vmap_rule": True,
        }, self.__module__)

        def call(*args):
            if functorch_active():
                return func_fn.apply(*_as_leaves(args))
            if _has_tangent(args):
                if prim._jvp is None:
                    raise _no_forward_ad(prim.qualname)
                return fn_jvp.apply(*args)
            if _needs_grad(args):
                return fn.apply(*args)
            return op(*args)

        self.function = fn
        self._call = call
        self._autograd = (setup_context, backward)

    def register_jvp(self, jvp):
        """``jvp(args, output, tangents) -> the output's tangent``: forward-mode AD
        (``torch.autograd.forward_ad``, ``torch.func.jvp``/``jacfwd``). ``args`` are the call's
        arguments, ``output`` its result, ``tangents`` one per argument (None for a
        non-tensor or an input without a tangent); a tuple result takes a tuple of tangents
        (None for an integer output). After :meth:`register_autograd`."""
        self._jvp = jvp
        return jvp

    def inplace_variant(self, inplace_op):
        """``inplace_op(input, *args)`` -- a mutating operator that computes this primitive into
        its input -- made differentiable with this primitive's own autograd, as torch's in-place
        ops are: a Function that runs it, marks the input dirty (autograd bumps its version and
        rebases a view on its base) and sets up the backward with the input as the output. No
        temporary and no copy back. A leaf that requires grad, or a view of one, is refused
        before anything is written; under torch.compile the out-of-place primitive and a copy
        back are traced instead (the compiler functionalises them)."""
        setup_context, backward = self._autograd
        out_of_place = self

        def forward(ctx, input, *args):
            inplace_op(input, *args)
            ctx.mark_dirty(input)
            setup_context(ctx, (input, *args), input)  # the output is the input, now overwritten
            return input

        name = "_" + self.__name__.title().replace("_", "") + "Inplace"  # _ActivationInplace
        fn = _function(name, {
            "forward": staticmethod(forward),
            "backward": staticmethod(backward),
        }, self.__module__)

        qualname = self.qualname

        def call(input, *args):
            if (not torch.compiler.is_compiling() and input.is_inference()
                    and not torch.is_inference_mode_enabled()):
                # torch's refusal, before anything is written (the kernels write directly);
                # dynamo cannot trace is_inference(), and compiled code functionalises anyway
                raise RuntimeError(
                    "Inplace update to inference tensor outside InferenceMode is not allowed. You "
                    "can make a clone to get a normal tensor before doing inplace update."
                )
            if functorch_active():  # torch.func: functionalised as torch.compile's trace is
                return input.copy_(out_of_place(input, *args))
            if _has_tangent((input, *args)):
                # forward-mode AD: out of place (its jvp), and copy_ carries the tangent back
                if out_of_place._jvp is None:
                    raise _no_forward_ad(qualname)
                if torch.is_grad_enabled() and input.requires_grad:
                    _check_inplace_allowed(input)
                return input.copy_(out_of_place(input, *args))
            if torch.is_grad_enabled() and input.requires_grad:
                _check_inplace_allowed(input)
                if torch.compiler.is_compiling():
                    return input.copy_(out_of_place(input, *args))
                return fn.apply(input, *args)
            inplace_op(input, *args)
            return input

        return call


def primitive(fn) -> Primitive:
    """Decorator: ``@primitive`` over a fully annotated function makes it ``tritonnet::name``.

    Out-of-place operators only. The two in-place ones (``activation_``, ``dropout_``) stay
    ``torch.library.custom_op``: it registers the version-counter bump that autograd's checks
    of saved tensors need. Their autograd is their out-of-place twin's, through
    :meth:`Primitive.inplace_variant`.
    """
    return Primitive(fn)


def _check_inplace_allowed(input) -> None:
    """Refuse, before anything is written, an in-place op on a leaf that requires grad or a
    view of one, with torch's messages. (Autograd's own check for an autograd.Function comes
    after its forward has already written.)"""
    if input.is_leaf:
        raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
    if input._base is not None and input._base.is_leaf and input._base.requires_grad:
        raise RuntimeError(
            "a view of a leaf Variable that requires grad is being used in an in-place operation."
        )
