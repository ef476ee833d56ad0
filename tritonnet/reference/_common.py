from __future__ import annotations

import torch


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Compute in fp32 like the kernels (fp64 stays fp64, so gradcheck runs in float64)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def shifted_exp(x):
    """(m, e): m = max over dim 1 (0 for an all -inf row), e = exp(x - m)."""
    m = x.amax(1) if x.shape[1] else x.new_full(x.shape[:1] + x.shape[2:], float("-inf"))
    m = m.masked_fill(m == float("-inf"), 0.0)
    return m, (x - m.unsqueeze(1)).exp()


def max_log_sum(x):
    """(m, log s) over dim 1 (softmax's and cross-entropy's rows, the twin of kernels/softmax.py
    online_rest), s = sum exp(x - m), lse = m + log s; an all -inf row has m = 0 and
    log s = -inf. Kept apart: m + log s rounds log s to the ulp of m. log s is log1p of
    s - 1, summed without one occurrence of the max (e - 1 = 0 there; NaN for a +inf max, as
    torch's), so that a confident row's log s, near 0, keeps its digits."""
    m, e = shifted_exp(x)
    top = x == m.unsqueeze(1)  # none in an all -inf row (m = 0 there): s - 1 = -1, log s = -inf
    rest = torch.where(top, e - 1, e).sum(1) + (top.sum(1) - 1)
    return m, rest.log1p()


def activation(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "none":
        return x
    if name == "relu":
        return torch.relu(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    raise ValueError(f"unknown activation {name!r}")


def conv_positions(size, kernel, stride, padding, dilation) -> tuple[int, int]:
    """(OH, OW): the window positions of a convolution over an input of spatial ``size``."""
    return tuple((size[i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
                 for i in (0, 1))


def conv_memory_format(*tensors) -> torch.memory_format:
    """The memory format of a convolution's result, PyTorch's rule: channels_last when any of
    the operands' strides suggest channels_last (``Tensor.suggest_memory_format()``), else
    contiguous. One rule for conv2d, its two gradients and conv_transpose2d, in both backends
    (kernels/conv.py imports it) and in the ops' fake kernels (what torch.compile plans with)."""
    for t in tensors:
        if strides_like_channels_last(t):
            return torch.channels_last
    return torch.contiguous_format


def in_format(t: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """``t`` with the strides ``torch.empty(..., memory_format=fmt)`` gives, as torch's
    convolutions return and take their tensors: a view where ``t``'s memory is already in
    fmt's order, else a copy. ``t.contiguous(memory_format=fmt)`` returns ``t`` itself when
    size-1 dims (one channel; N = 1 with a 1-pixel row; a 1x1 output) make it contiguous in
    both formats, with strides that can suggest the other one (strides_like_channels_last),
    which the next layer's layout rule then follows. ``t`` is 4-D and not a vmap sample."""
    if not t.is_contiguous(memory_format=fmt):
        return t.contiguous(memory_format=fmt)
    N, C, H, W = t.shape
    if fmt == torch.channels_last:
        if t.stride() == (H * W * C, 1, W * C, C):
            return t
        return t.permute(0, 2, 3, 1).reshape(-1).view(N, H, W, C).permute(0, 3, 1, 2)
    if t.stride() == (C * H * W, H * W, W, 1):
        return t
    return t.reshape(-1).view(t.shape)


def functorch_active() -> bool:
    """Inside one of torch.func's transforms (never while torch.compile traces: dynamo cannot
    trace the query, and handles torch.func itself)."""
    return not torch.compiler.is_compiling() and torch._C._are_functorch_transforms_active()


def vmapped(t: torch.Tensor) -> bool:
    """Whether ``t`` is, or wraps, a torch.vmap BatchedTensor: one sample, whose memory format
    torch cannot report (its layout is the batched tensor's; such a sample counts as NCHW)."""
    if not functorch_active():
        return False
    while torch._C._functorch.is_functorch_wrapped_tensor(t):
        if torch._C._functorch.is_batchedtensor(t):
            return True
        t = torch._C._functorch.get_unwrapped(t)
    return False


def strides_like_channels_last(t: torch.Tensor) -> bool:
    """Whether ``t.suggest_memory_format()`` is channels_last: c10's
    is_channels_last_strides_2d_s4, which torch's convolutions consult. Strides must not
    decrease in the order C, W, H, N, with its tie-breaks for size-1 dimensions (an N111 or
    N1H1 tensor stays contiguous). Unlike ``is_contiguous(memory_format=channels_last)`` it
    also holds for a slice of a channels_last tensor."""
    if t.dim() != 4 or vmapped(t):
        return False
    try:
        nchw, cl = t.is_contiguous(), t.is_contiguous(memory_format=torch.channels_last)
    except RuntimeError:
        # a legacy vmap BatchedTensor (gradcheck's batched gradients, autograd.functional's
        # jacobian/hessian with vectorize=True), which cannot answer: a sample counts as NCHW
        return False
    if nchw != cl and 1 not in t.shape:
        # dense in exactly one layout and no size-1 dimension (whose stride is_contiguous
        # ignores but the walk does not): the common case, two cached flags
        return cl
    sizes, strides = t.shape, t.stride()
    if strides[1] == 0:
        return False
    least = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0 or strides[d] < least or (d == 0 and least == strides[1]):
            return False
        least = strides[d] * sizes[d] if sizes[d] > 1 else strides[d]
    return True
