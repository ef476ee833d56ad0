"""Helpers shared by the kernel files: interpreter detection, dot precision, activations.

Device code only, plus the small host-side decisions every launcher makes the same way.
"""

from __future__ import annotations

import functools
import inspect

import torch
import triton
import triton.language as tl

from ._launch import INTERPRET, Launcher  # noqa: F401 - INTERPRET is this module's too

# torch dtype -> the constexpr name our kernels use for their output
TORCH_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def fp64_to_reference(launcher):
    """Decorator over a launcher whose first argument sets the dtype: a float64 call runs the
    reference primitive of the same name instead. On the GEMMs (conv, linear) and on the
    kernels that accumulate in fp32 whatever the input (softmax, the losses), which would
    otherwise give float64 callers fp32 precision.

    Triton's fp64 ``tl.dot`` needs an fp64 accumulator and ``out_dtype`` (the kernels keep
    fp32): Triton 3.6 and 3.9's interpreters return garbage for fp64 operands with an fp32
    accumulator, and sm_90 would hold twice the bytes per tile that the configs are sized for.
    float64 is a checking dtype (gradcheck), not a speed one, so it runs torch's own ops, on
    the GPU too: cuBLAS fp64 through the reference's einsum."""
    signature = inspect.signature(launcher)

    @functools.wraps(launcher)
    def launch(*args, **kwargs):
        if args[0].dtype != torch.float64:
            return launcher(*args, **kwargs)
        from .. import reference

        bound = signature.bind(*args, **kwargs)  # the reference's keyword names may differ
        bound.apply_defaults()
        return getattr(reference, launcher.__name__)(*bound.args)

    return launch


def tf32_enabled(op: str) -> bool:
    """Whether torch's own fp32 ``op`` ("conv": cuDNN convolutions, "matmul": cuBLAS GEMMs)
    may use TF32: torch's fp32_precision setting for ("cuda", op), else ("cuda", "all"), else
    ("generic", "all"), resolved as ATen's Context::float32Precision resolves it. The legacy
    flags (``torch.backends.cudnn.allow_tf32``, ``torch.backends.cuda.matmul.allow_tf32``,
    ``torch.set_float32_matmul_precision``) write these settings too, but reading a legacy
    flag raises once the new API has set something it cannot express (``cudnn.conv`` and
    ``cudnn.rnn`` apart, ``cuda.matmul.fp32_precision = "tf32"`` alone), so it is not read."""
    get = getattr(torch._C, "_get_fp32_precision_getter", None)
    if get is None:  # a torch before the fp32_precision API
        return torch.backends.cudnn.allow_tf32 if op == "conv" else torch.backends.cuda.matmul.allow_tf32
    precision = get("cuda", op)
    if precision == "none":
        precision = get("cuda", "all")
    if precision == "none":
        precision = get("generic", "all")
    return precision == "tf32"


def dot_precision(dtype: torch.dtype, allow_tf32: bool) -> str:
    """`input_precision` for tl.dot: TF32 for fp32 exactly when PyTorch's own flag allows it
    (the same policy on both sides of every comparison); fp16/bf16 ignore it."""
    return "tf32" if (dtype == torch.float32 and allow_tf32) else "ieee"


def upcast_dot(dtype: torch.dtype) -> bool:
    """Whether tl.dot operands are converted to fp32 first. Triton 3.9's interpreter returns
    garbage for a bf16 x bf16 dot (numpy has no bf16); a bf16 product is exact in fp32, so the
    upcast computes the same numbers. On a GPU the operands stay bf16 for the tensor cores."""
    return INTERPRET and dtype == torch.bfloat16


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for the host's grids and plans. Not triton.cdiv: in Triton 3.6 and 3.9 that
    is a constexpr function, whose host calls go through argument unwrapping (~1.5 us each)."""
    return -(-a // b)


GRID_AXIS_MAX = 65535  # CUDA's cap on the programs along a launch grid's second or third axis


def check_grid_axes(op: str, *axes: tuple[str, int]) -> None:
    """Refuse, with the values, a launch whose second or third grid axis would pass CUDA's cap
    (a launch error there, without them); ``axes``: (what sets an axis, its size) each."""
    for what, n in axes:
        if n > GRID_AXIS_MAX:
            raise RuntimeError(
                f"{op}: {what} = {n}, but tritonnet's kernel launches this "
                f"on a grid axis that CUDA caps at {GRID_AXIS_MAX} programs (README, Known limitations)"
            )


def next_power_of_2(n: int) -> int:
    """The smallest power of 2 >= n, 0 for n <= 0: triton.next_power_of_2's values without its
    constexpr-function call (see cdiv)."""
    return 1 << (n - 1).bit_length() if n > 0 else 0


def is_dense(x: torch.Tensor) -> bool:
    """Non-overlapping and dense in one of the two layouts we treat as flat memory."""
    return x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))


def flat_view(x: torch.Tensor) -> torch.Tensor:
    """x itself when its memory is dense (elementwise kernels then walk raw memory order and
    the output keeps x's layout, as torch's elementwise ops do), else a dense copy laid out as
    ``empty_like`` lays it out: the layout torch's elementwise ops give such an input (a
    transposed x stays transposed, a slice of a channels_last x is channels_last), which the
    ops' fake kernels (empty_like) also say."""
    return x if is_dense(x) else torch.empty_like(x).copy_(x)


def in_layout_of(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` (of ``ref``'s shape) laid out as the dense ``ref``: itself when its strides already
    match, else a copy, so that an elementwise kernel walks both in one memory order."""
    return t if t.stride() == ref.stride() else torch.empty_like(ref, dtype=t.dtype).copy_(t)


# SMs to plan split work for (conv's split-K, the global pools' split planes), when set
# (bench/compile_check.py sets its target's); None asks the device
NUM_SMS = None


def num_sms(device) -> int:
    """Streaming multiprocessors of ``device``; 4 off a GPU (the interpreter), so that the
    tests' small shapes still take the split paths."""
    if NUM_SMS is not None:
        return NUM_SMS
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def index64(*tensors: torch.Tensor) -> bool:
    """Whether an offset into any of the tensors can reach 2**31 (strides included): only then
    do kernels compute offsets in int64 (their INDEX64 switch). int32 address arithmetic
    takes half the instructions, which matters where a loop is issue-bound."""
    for t in tensors:
        if t.numel() >= 2**31:
            return True
        if is_dense(t):  # the common case: the span is the element count
            continue
        span = 1 + sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride()) if n > 0)
        if span >= 2**31:
            return True
    return False


def autotune_cache() -> dict:
    """Keyword arguments for triton.autotune that keep tuning results on disk between runs
    (Triton's own cache directory), where this Triton version supports it."""
    if "cache_results" in inspect.signature(triton.autotune).parameters:
        return {"cache_results": True}
    return {}


class Tuned(Launcher):
    """A ``triton.autotune``d kernel, launched ``tuned[grid](*args, **kwargs)`` like one, whose
    launches skip the autotuner once it has chosen a config for their key.

    Why: Triton's ``Autotuner.run`` (3.6 and 3.9) rebuilds a dict of every argument through a
    list-membership filter on each launch: ~27 us of host time for conv's ~45 arguments on
    this project's CPU, as much as the rest of the launch (bench/NOTES.md, "Triton's launch
    path"). Here a launch looks its key up in a memo and calls the kernel's ``run`` with the
    chosen config, as ``Autotuner.run`` itself does.

    The chosen configs are keyed as the autotuner's own cache is (the key arguments' values,
    then every tensor argument's dtype) and taken only from that cache, after a launch through
    the autotuner: a launch that did not tune (compile_check's compile-only runs) leaves
    nothing to reuse, and a Triton whose key looks different only loses the shortcut. Configs
    with a pre_hook always go through the autotuner.

    As a :class:`_launch.Launcher`, a launch that used a chosen config also keeps its compiled
    kernel by exact call, and the next identical call launches it without ``JITFunction.run``.
    """

    def __init__(self, tuner):
        super().__init__(tuner.fn)  # the memo of compiled kernels, by exact call
        self.tuner = tuner
        pos = {name: i for i, name in enumerate(tuner.arg_names)}
        self._key = [(pos[k], k) for k in tuner.keys]
        self._names = frozenset(tuner.arg_names)
        self._configs = {}

    def _key_of(self, args, kwargs):
        """Autotuner.run's key for this launch: the key arguments' values, then str(dtype) of
        each argument that has one, positional (in order) then keyword."""
        n = len(args)
        key = [args[i] if i < n else kwargs[name] for i, name in self._key if i < n or name in kwargs]
        key += [str(a.dtype) for a in args if hasattr(a, "dtype")]
        key += [str(v.dtype) for k, v in kwargs.items() if k in self._names and hasattr(v, "dtype")]
        return tuple(key)

    def _first(self, grid, args, kwargs):
        key = self._key_of(args, kwargs)
        config = self._configs.get(key)
        if config is not None:
            return self.tuner.fn.run(*args, grid=grid, warmup=False, **kwargs, **config), config
        tuner = self.tuner
        kernel = tuner[grid](*args, **kwargs)
        chosen = tuner.configs[0] if len(tuner.configs) == 1 else tuner.cache.get(key)
        if chosen is not None and chosen.pre_hook is None:
            self._configs[key] = config = chosen.all_kwargs()
        return kernel, config


def autotune(fn, **kwargs) -> Tuned:
    """``triton.autotune(**kwargs)(fn)`` with tuning results kept on disk (autotune_cache), its
    launches through a :class:`Tuned` memo."""
    return Tuned(triton.autotune(**kwargs, **autotune_cache())(fn))


def gemm_configs(tiles, **extra):
    """triton.Configs from (BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps) rows; ``extra``
    constexprs (GROUP_M) are added to every config."""
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, **extra}, num_stages=st, num_warps=w)
        for bm, bn, bk, st, w in tiles
    ]


# Shared memory one program may use. None: ask Triton's driver for the tensor's GPU (what Triton
# itself checks at launch); a number overrides it (bench/compile_check.py sets the target's).
SHARED_MEMORY_LIMIT = None


@functools.lru_cache(maxsize=16)
def _driver_shared_limit(index: int) -> int:
    from triton.runtime import driver

    return int(driver.active.utils.get_device_properties(index)["max_shared_mem"])


def shared_limit(device: torch.device):
    """Bytes of shared memory one program may use on ``device``; None on the CPU (the
    interpreter has no such limit)."""
    if SHARED_MEMORY_LIMIT is not None:
        return SHARED_MEMORY_LIMIT
    if device.type != "cuda":
        return None
    return _driver_shared_limit(device.index if device.index is not None else torch.cuda.current_device())


def pipeline_bytes(config, itemsize: int, stages=None) -> int:
    """Shared memory of a tl.dot K loop: num_stages (or ``stages``) buffers of an A (BLOCK_M x
    BLOCK_K) and a B (BLOCK_K x BLOCK_N) tile, plus ~1 KB of barriers. Within 1% of what
    Triton 3.6 and 3.9 allocate for sm_90 wgmma configs (bench/compile_check.py); an
    overestimate for mma.sync."""
    k = config.kwargs
    stages = config.num_stages if stages is None else stages
    return stages * (k["BLOCK_M"] + k["BLOCK_N"]) * k["BLOCK_K"] * itemsize + 1024


def fit_shared(configs, itemsize: int, limit):
    """Each config with its num_stages lowered (not below 2) until its pipeline fits in
    ``limit`` bytes; configs that never fit are dropped, duplicates merged. fp32 tiles take
    twice bf16's bytes: without this, 128x128x64 at 4 stages (257 KB) is compiled and then
    refused at launch on an H100 (227 KB), and the autotuner loses that tile altogether."""
    if limit is None:
        return list(configs)
    out, seen = [], set()
    for c in configs:
        stages = c.num_stages
        while stages > 2 and pipeline_bytes(c, itemsize, stages) > limit:
            stages -= 1
        key = (tuple(sorted(c.kwargs.items())), c.num_warps, stages)
        if pipeline_bytes(c, itemsize, stages) <= limit and key not in seen:
            seen.add(key)
            out.append(c if stages == c.num_stages else
                       triton.Config(dict(c.kwargs), num_warps=c.num_warps, num_stages=stages))
    return out


def prune_tiles(size_m, size_n):
    """An autotuner early_config_prune: drop tiles larger than the next power of two of the
    problem in M or N (a 128-row tile over a batch of 8 wastes 15/16 of its work, and each
    config costs a compile and a timing on first use) and 16-wide N tiles unless N fits one
    (kept for the few-channel sides: LeNet, the stem's 3 input channels), then fit the rest
    in the GPU's shared memory (fit_shared; the operands' element size is the first tensor
    argument's). size_m/size_n read the kernel's args."""

    def prune(configs, nargs, **kwargs):
        cap_m = max(16, next_power_of_2(int(size_m(nargs))))
        cap_n = max(16, next_power_of_2(int(size_n(nargs))))
        least_n = min(cap_n, 32)
        keep = [c for c in configs
                if c.kwargs["BLOCK_M"] <= cap_m and least_n <= c.kwargs["BLOCK_N"] <= cap_n]
        keep = keep or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]
        first = next((v for v in nargs.values() if torch.is_tensor(v)), None)
        if first is None:
            return keep
        return fit_shared(keep, first.element_size(), shared_limit(first.device)) or keep

    return prune


@triton.jit
def inside(i, n):
    """0 <= i < n for an index tensor i and a non-negative n, as one unsigned compare (a
    negative i wraps past any n): half the instructions of two signed ones, in the bounds
    checks of the conv and pool gathers."""
    if i.dtype == tl.int64:  # (tl.cast: n may be a constexpr, as a size of 1 compiles in)
        ok = i.to(tl.uint64, bitcast=True) < tl.cast(n, tl.uint64)
    else:
        ok = i.to(tl.uint32, bitcast=True) < tl.cast(n, tl.uint32)
    return ok


@triton.jit
def grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of program ``pid`` in grouped order: GROUP_M row blocks visit each column
    block in turn, so neighbouring programs share tiles in L2."""
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * grid_n
    first_m = (pid // width) * GROUP_M
    group_m = min(grid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % group_m
    pid_n = (pid % width) // group_m
    return pid_m, pid_n


@triton.jit
def log1p(r):
    """log(1 + r), r >= -1, to a few ulps also where r is small (Goldberg's: log(u) * r / (u - 1),
    u = 1 + r, whose rounding errors cancel; r itself where u rounds to 1)."""
    u = 1.0 + r
    d = u - 1.0
    q = r / tl.where(d == 0.0, 1.0, d)  # no 0/0 on the lanes where u rounds to 1
    return tl.where(d == 0.0, r, tl.where(u == float("inf"), u, tl.log(u) * q))


@triton.jit
def _tanh_series(x, z, FP64: tl.constexpr):
    """tanh(x) for small x, z = x^2: x * sum_k c_k z^k by Horner, c_k = 2^2n (2^2n - 1) B_2n
    / (2n)! (the x^1 ... x^23 coefficients in fp64, to x^11 in fp32)."""
    p = tl.zeros_like(z)
    if FP64:
        p = p * z - 3.927832388331683e-05
        p = p * z + 9.691537956929451e-05
        p = p * z - 0.00023912911424355248
        p = p * z + 0.000590027440945586
        p = p * z - 0.0014558343870513183
        p = p * z + 0.003592128036572481
    p = p * z - 0.008863235529902197
    p = p * z + 0.021869488536155203
    p = p * z - 0.05396825396825397
    p = p * z + 0.13333333333333333
    p = p * z - 0.3333333333333333
    p = p * z + 1.0
    return x * p


@triton.jit
def tanh(x):
    """tanh in x's precision (fp32 or fp64). (1 - e) / (1 + e) with e = exp(-2|x|) never
    overflows, but near 0 its 1 - e cancels (tanh(1e-9) came out 0, tanh(1e-6) 1% off in
    fp32): below |x| = 1/4 an odd Taylor polynomial takes over (6 terms in fp32, 12 in fp64:
    truncation under 1e-9 and 1e-16 of tanh)."""
    a = tl.abs(x)
    e = tl.exp(-2.0 * a)
    t = (1.0 - e) / (1.0 + e)
    t = tl.where(x >= 0, t, -t)
    return tl.where(a < 0.25, _tanh_series(x, x * x, x.dtype == tl.float64), t)


@triton.jit
def apply_activation(x, ACTIVATION: tl.constexpr):
    """x is fp32 (fp64 in the activation kernels' fp64 case). ACTIVATION is one of "none",
    "relu", "sigmoid", "tanh"."""
    if ACTIVATION == "relu":
        # NaN must propagate as in torch.relu: where(x > 0) would turn NaN into 0.
        x = tl.where(x < 0, 0.0, x)
    elif ACTIVATION == "sigmoid":
        x = tl.sigmoid(x)
    elif ACTIVATION == "tanh":
        x = tanh(x)
    return x
