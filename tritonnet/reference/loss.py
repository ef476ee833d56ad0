"""Loss primitives in plain PyTorch (twins of kernels/cross_entropy.py and kernels/loss.py,
same signatures): the readable spec of the fused cross-entropy, nll_loss and mse_loss kernels.

Shapes: logits (N, C, R); index targets (N, R) (int64 or uint8), probability targets
(N, C, R); class weights (C,). Row results are fp32 (fp64 for fp64 input, so gradcheck runs
in float64)."""

from __future__ import annotations

__all__ = [
    "cross_entropy_forward",
    "cross_entropy_backward",
    "cross_entropy_target_grad",
    "nll_loss_forward",
    "nll_loss_backward",
    "mse_loss_forward",
    "mse_loss_backward",
]

import torch

from ._common import acc_dtype, max_log_sum


def _row_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _class_weight(weight, acc, C, device):
    """(1, C, 1) weights, ones without."""
    if weight is None:
        return torch.ones((1, C, 1), dtype=acc, device=device)
    return weight.to(acc).view(1, C, 1)


def _weighted_nlogp_sum(wq, x, m, log_s, b):
    """sum_c wq_c (lse - x_c) as sum_c wq_c (m - x_c) + b log s, b = sum_c wq_c (b = 0 gives
    0 even for an empty row's log s = -inf, as torch's empty sum). The terms at the max are 0
    even for an infinite wq_c (not inf * 0 = NaN): its share comes from b log s, +-inf as
    torch's wq_c log_softmax(x)_c."""
    m = m.unsqueeze(1)
    return torch.where(x == m, 0.0, wq * (m - x)).sum(1) + torch.where(b == 0, 0.0, b * log_s)


def _index_target(target, ignore_index):
    """(valid rows, target with ignored rows set to class 0 so gathers stay in bounds)."""
    valid = target != ignore_index
    return valid, target.long().masked_fill(~valid, 0)


def _target_dist(input, target, weight, ignore_index, eps, acc):
    """w_c q_c as (N, C, R) in acc: the weighted target distribution of every row."""
    N, C, R = input.shape
    w = _class_weight(weight, acc, C, input.device)
    if target.is_floating_point():
        q = target.to(acc)
        if eps > 0:
            q = q * (1 - eps) + eps / C
        return w * q
    valid, t = _index_target(target, ignore_index)
    q = torch.zeros((N, C, R), dtype=acc, device=input.device)
    q.scatter_(1, t.unsqueeze(1), 1 - eps)
    q = q + eps / C if eps > 0 else q
    return w * q * valid.unsqueeze(1)


def cross_entropy_forward(input, target, weight, ignore_index, label_smoothing):
    """-> (loss, lse, S), each (N, R): loss = sum_c w_c q_c (lse - x_c), S = sum_c w_c q_c."""
    N, C, R = input.shape
    acc = acc_dtype(input.dtype)
    x = input.to(acc)
    m, log_s = max_log_sum(x)
    lse = m + log_s
    eps = label_smoothing
    if target.is_floating_point():
        wq = _target_dist(input, target, weight, ignore_index, eps, acc)
        wsum = wq.sum(1)
        loss = _weighted_nlogp_sum(wq, x, m, log_s, wsum)
    else:
        # the one-hot part is a gather of the target logit (no 0 * inf from other classes)
        valid, t = _index_target(target, ignore_index)
        w = _class_weight(weight, acc, C, input.device).view(C)
        w_t = w[t]
        x_t = x.gather(1, t.unsqueeze(1)).squeeze(1) if C else torch.zeros_like(lse)
        loss = (1 - eps) * w_t * ((m - x_t) + log_s)  # a confident row's loss is ~log_s
        wsum = (1 - eps) * w_t
        if eps > 0:
            b = (eps / C) * w.sum()
            loss = loss + _weighted_nlogp_sum((eps / C) * w.view(1, C, 1), x, m, log_s, b)
            wsum = wsum + b
        zero = torch.zeros((), dtype=acc, device=loss.device)
        loss = torch.where(valid, loss, zero)
        wsum = torch.where(valid, wsum, zero)
    rd = _row_dtype(input.dtype)
    return loss.to(rd).contiguous(), lse.to(rd).contiguous(), wsum.to(rd).contiguous()


def cross_entropy_backward(grad, input, target, weight, lse, wsum, ignore_index, label_smoothing):
    """dx = g * (softmax(x) * S - w q), g zeroed on ignored rows. e = exp(x - lse) is the
    softmax but for a factor common to the row (lse's rounding, the ulp of the max), which
    p = e / s, s = sum e, divides out; at an index target, S p_t - w_t q_t = (S - w_t q_t) -
    S (1 - p_t) with 1 - p_t = (sum of the other classes' e) / s, so a confident row's p_t - 1
    keeps its digits. (The Triton kernel does the same; a row longer than its block is read
    twice, once for the sum.)"""
    acc = acc_dtype(input.dtype)
    g = grad.to(acc)
    S = wsum.to(acc).unsqueeze(1)
    e = (input.to(acc) - lse.to(acc).unsqueeze(1)).exp()
    wq = _target_dist(input, target, weight, ignore_index, label_smoothing, acc)
    if target.is_floating_point():
        d = e * (S / e.sum(1, keepdim=True)) - wq
    else:
        g = g.masked_fill(target == ignore_index, 0.0)
        valid, t = _index_target(target, ignore_index)
        at_t = torch.zeros(e.shape, dtype=torch.bool, device=e.device)
        at_t.scatter_(1, t.unsqueeze(1), valid.unsqueeze(1))
        rest = torch.where(at_t, 0.0, e).sum(1, keepdim=True)
        e_t = torch.where(at_t, e, 0.0).sum(1, keepdim=True)
        r = 1 / (e_t + rest)
        d = torch.where(at_t, (S - wq) - S * rest * r, e * (S * r) - wq)
    dx = g.unsqueeze(1) * d
    return dx.to(input.dtype).contiguous()  # contiguous whatever the logits' layout, as torch's


def cross_entropy_target_grad(grad, input, weight, lse, label_smoothing):
    """d loss / d p = -(1 - eps) * w * (x - lse) * g, (N, C, R) fp32 (fp64 for fp64)."""
    acc = acc_dtype(input.dtype)
    w = _class_weight(weight, acc, input.shape[1], input.device)
    logp = input.to(acc) - lse.to(acc).unsqueeze(1)
    dt = -(1 - label_smoothing) * w * logp * grad.to(acc).unsqueeze(1)
    return dt.to(_row_dtype(input.dtype))


def nll_loss_forward(input, target, weight, ignore_index):
    """-> (N, R): -w_t * input[n, t, r], 0 where t == ignore_index."""
    acc = acc_dtype(input.dtype)
    valid, t = _index_target(target, ignore_index)
    C = input.shape[1]
    if C == 0:  # every row is ignored (the functional layer checked the targets)
        return torch.zeros(target.shape, dtype=_row_dtype(input.dtype), device=input.device)
    x_t = input.to(acc).gather(1, t.unsqueeze(1)).squeeze(1)
    w_t = _class_weight(weight, acc, C, input.device).view(C)[t]
    loss = torch.where(valid, -w_t * x_t, x_t.new_zeros(()))
    return loss.to(_row_dtype(input.dtype))


def nll_loss_backward(grad, target, weight, ignore_index, num_classes, dtype):
    """-> (N, C, R) of ``dtype``: -w_t * g at the target class, 0 elsewhere and on ignored rows."""
    acc = acc_dtype(dtype)
    N, R = target.shape
    valid, t = _index_target(target, ignore_index)
    out = torch.zeros((N, num_classes, R), dtype=acc, device=target.device)
    if num_classes:
        w_t = _class_weight(weight, acc, num_classes, target.device).view(num_classes)[t]
        v = torch.where(valid, -w_t * grad.to(acc), out.new_zeros(()))
        out.scatter_(1, t.unsqueeze(1), v.unsqueeze(1))
    return out.to(dtype)


def mse_loss_forward(input, target, weight, reduce):
    """w (x - t)^2: summed to a 0-d fp32 tensor (fp64 for fp64) if ``reduce``, else
    elementwise in input's dtype."""
    acc = acc_dtype(input.dtype)
    e = (input.to(acc) - target.to(acc)).square()
    if weight is not None:
        e = e * weight.to(acc)
    if reduce:
        return e.sum().to(_row_dtype(input.dtype))
    return _like(e, input)


def mse_loss_backward(grad, input, target, weight, reduce):
    """dx = 2 w (x - t) g, in input's dtype and shape."""
    acc = acc_dtype(input.dtype)
    dx = (input.to(acc) - target.to(acc)) * (2 * grad.to(acc))  # 2 (x - t) could overflow first
    if weight is not None:
        dx = dx * weight.to(acc)
    return dx.to(input.dtype).contiguous()  # torch's is contiguous whatever input's layout


def _like(r, input):
    """``r`` in input's dtype, laid out as ``empty_like(input)`` (what the kernels and the fake
    kernels give; torch's own arithmetic may order an ambiguous input's dims otherwise)."""
    out = torch.empty_like(input)
    return r.to(input.dtype) if r.stride() == out.stride() else out.copy_(r)
