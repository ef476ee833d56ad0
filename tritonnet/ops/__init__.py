"""Autograd for every op, written once in terms of backend primitives.

Each primitive is a ``tritonnet::name`` operator (``torch.library`` define + impl, see
:mod:`tritonnet.ops._primitive`) whose body asks :func:`tritonnet.backend.backend_for` which
implementation runs, so ``torch.compile`` and CUDA graphs see one opaque op, and both backends
share the same backward formulas. The backward of each op is registered with
``register_autograd`` on its forward op: an ``autograd.Function`` around the operator, taken
only when an input needs a gradient.
"""
