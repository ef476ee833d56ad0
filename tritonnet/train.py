"""The training job behind ``tritonnet train``: a model from tritonnet.models on a dataset from
tritonnet.data, with per-epoch metrics (``metrics.csv``) and an atomic checkpoint
(``checkpoint.pt``) that ``--resume`` continues from exactly: the model, the optimizer, the
epoch count and the random-number state (shuffle order, dropout) are all restored.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import torch

import tritonnet
from tritonnet import nn
from tritonnet.backend import backend_for, use_backend
from tritonnet.data import load_dataset, make_loader
from tritonnet.models import build_model

__all__ = [
    "evaluate",
    "load_checkpoint",
    "out_dir",
    "resolve_device",
    "save_checkpoint",
    "train",
    "validate",
]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
METRIC_COLUMNS = ["epoch", "train_loss", "test_loss", "test_acc", "time_s"]
EVAL_BATCH = 1024


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when a GPU is visible, else the CPU; ``cuda`` without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device must be one of auto, cpu, cuda; got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "--device cuda: no CUDA device is available to PyTorch "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); use --device cpu"
        )
    return torch.device(name)


def out_dir(args) -> Path:
    """--out, or runs/<model>-<dataset> when it is not given."""
    return Path(args.out if args.out is not None else f"runs/{args.model}-{args.dataset}")


def validate(args) -> torch.device:
    """Check the job's settings before any work; returns the device. Raises ValueError (bad
    numbers), RuntimeError (a device or backend that cannot run here) or FileNotFoundError
    (--resume without a checkpoint), messages naming the flag."""
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if value is not None and (not isinstance(value, int) or value < 1):  # None: not given
            raise ValueError(f"{flag} must be a positive integer, got {value!r}")
    lr = args.lr
    if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"--lr must be a positive finite number, got {lr!r}")
    if args.optimizer not in ("sgd", "adam"):
        raise ValueError(f"--optimizer must be sgd or adam, got {args.optimizer!r}")
    device = resolve_device(args.device)
    if args.resume and not (out_dir(args) / CHECKPOINT).is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {out_dir(args) / CHECKPOINT}")
    # the backend's own check: e.g. 'triton' on CPU tensors without TRITON_INTERPRET=1
    with use_backend(args.backend):
        backend_for(torch.empty(0, device=device))
    return device


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """torch.save ``state`` to ``path`` atomically: written to a temporary file in the same
    directory, flushed to disk, then renamed over ``path``. A crash at any point leaves either
    the previous checkpoint or the new one, never a torn file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # make the rename itself durable (POSIX: fsync the directory entry)
    if hasattr(os, "O_DIRECTORY"):
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class CheckpointError(ValueError):
    """A --resume checkpoint that cannot serve: unreadable, not written by :func:`train`, or
    from a run with another model, dataset or optimizer. ``tritonnet train`` reports it as a
    usage error; the file is left as it is."""


# what train() writes into a checkpoint, all of which a resumed run reads
CHECKPOINT_KEYS = ("args", "epoch", "metrics", "model", "optimizer", "rng")


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint written by :func:`train`, loaded onto the CPU with ``weights_only=True``
    (tensors and plain Python values only; nothing is executed). CheckpointError when the
    file cannot be read as one (torn, foreign, or not a torch file at all)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load's errors vary with how the file is broken
        # the first sentence: torch's messages go on with advice that does not fit here
        first = str(e).strip().split("\n")[0].split(". ")[0].rstrip(".")
        raise CheckpointError(
            f"--resume: {path} cannot be read as a checkpoint ({type(e).__name__}: {first})"
        ) from e
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(
            f"--resume: {path} is not a tritonnet train checkpoint: it lacks "
            + ", ".join(repr(k) for k in missing)
        )
    return ckpt


@torch.no_grad()
def evaluate(model, loader, criterion) -> tuple[float, float]:
    """Mean loss and accuracy (a fraction) of ``model`` over ``loader``, in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device="cpu")
    correct = total = 0
    for x, y in loader:
        logits = model(x)
        loss_sum += criterion(logits, y).double().cpu() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        total += len(y)
    model.train(was_training)
    return loss_sum.item() / total, correct / total


def _optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.Adam(params, lr=lr)


def _model_for(name: str, data) -> torch.nn.Module:
    kw = {"num_classes": data.num_classes}
    if name == "mlp":  # takes flat vectors; convolutional models will take (C, H, W) images
        kw["in_features"] = math.prod(data.image_shape)
    return build_model(name, **kw)


def _rng_state(shuffle: torch.Generator, device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, shuffle: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    shuffle.set_state(state["shuffle"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _train_epoch(model, loader, criterion, optimizer, desc: str) -> tuple[float, float]:
    """One pass over ``loader``; returns the mean training loss per sample and the images per
    second."""
    from tqdm import tqdm

    model.train()
    loss_sum, seen = 0.0, 0
    start = time.perf_counter()
    # the bar only on a terminal (disable=None): in a log, its redraws would bury the epoch lines
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, dynamic_ncols=True, disable=None)
    for x, y in bar:
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        loss_value = loss.item()
        loss_sum += loss_value * len(y)
        seen += len(y)
        rate = seen / max(time.perf_counter() - start, 1e-9)
        bar.set_postfix_str(f"loss {loss_value:.4f}, {rate:,.0f} img/s", refresh=False)
    bar.close()
    return loss_sum / seen, seen / max(time.perf_counter() - start, 1e-9)


# --lr and --batch-size when not given: these, or with --resume the checkpoint's
DEFAULTS = {"lr": 0.05, "batch_size": 32}


def _settled(args, saved: dict | None = None) -> tuple[argparse.Namespace, set[str]]:
    """A copy of ``args`` with --lr and --batch-size filled in where not given (None): from
    ``saved``, the resumed checkpoint's args (a resumed run keeps its learning rate and batch
    size unless told otherwise), else DEFAULTS; and the names of those that were given."""
    args = argparse.Namespace(**vars(args))
    given = {k for k in DEFAULTS if getattr(args, k, None) is not None}
    for key, default in DEFAULTS.items():
        if key not in given:
            setattr(args, key, (saved or {}).get(key, default))
    return args, given


def train(args) -> dict:
    """Run the job described by ``args`` (the namespace ``tritonnet train`` parses); returns
    the last epoch's metrics (``epoch``, ``train_loss``, ``test_loss``, ``test_acc``,
    ``time_s``) plus ``wall_s`` and ``out``."""
    import pandas as pd
    from tqdm import tqdm

    wall_start = time.perf_counter()
    device = validate(args)
    out = out_dir(args)
    ckpt_path = out / CHECKPOINT
    ckpt = load_checkpoint(ckpt_path) if args.resume else None  # validate saw it there
    args, given = _settled(args, ckpt["args"] if ckpt is not None else None)
    tritonnet.set_backend(args.backend)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.seed)
    shuffle = torch.Generator().manual_seed(args.seed)
    # the split is fixed (seed 0) whatever --seed is, so test accuracies stay comparable
    data = load_dataset(args.dataset).to(device)
    model = _model_for(args.model, data).to(device)
    optimizer = _optimizer(args.optimizer, model.parameters(), args.lr)
    criterion = nn.CrossEntropyLoss()
    train_loader = make_loader(data.x_train, data.y_train, args.batch_size, True, shuffle)
    test_loader = make_loader(data.x_test, data.y_test, EVAL_BATCH)
    # checkpointed as a plain dict of plain values, so weights_only=True can load it
    run_args = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool))}
    run_args["out"] = str(out)

    start_epoch, metrics = 0, []
    if ckpt is not None:
        for key in ("model", "dataset", "optimizer"):
            saved = ckpt["args"].get(key)
            if saved != getattr(args, key):
                raise CheckpointError(
                    f"--resume: {ckpt_path} was trained with --{key} {saved}, not {getattr(args, key)}"
                )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])  # its learning rate included
        if "lr" in given and ckpt["args"].get("lr") != args.lr:
            for group in optimizer.param_groups:  # a new --lr replaces the checkpoint's
                group["lr"] = args.lr
            tqdm.write(f"--lr {args.lr} replaces the checkpoint's {ckpt['args'].get('lr')}")
        _set_rng_state(ckpt["rng"], shuffle, device)
        start_epoch, metrics = ckpt["epoch"], ckpt["metrics"]
        tqdm.write(f"resumed from {ckpt_path} after epoch {start_epoch}")
        if start_epoch >= args.epochs:
            tqdm.write(f"nothing to do: {start_epoch} of --epochs {args.epochs} already done")

    tqdm.write(
        f"training {args.model} on {args.dataset} ({len(data.y_train)} train / "
        f"{len(data.y_test)} test images), {args.optimizer} lr {args.lr}, batch "
        f"{args.batch_size}, device {device}, backend {tritonnet.get_backend()}"
    )
    for epoch in range(start_epoch + 1, args.epochs + 1):
        epoch_start = time.perf_counter()
        desc = f"epoch {epoch}/{args.epochs}"
        train_loss, rate = _train_epoch(model, train_loader, criterion, optimizer, desc)
        test_loss, test_acc = evaluate(model, test_loader, criterion)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "time_s": time.perf_counter() - epoch_start,
        }
        metrics.append(row)
        tqdm.write(
            f"{desc}  train_loss {train_loss:.4f}  test_loss {test_loss:.4f}  "
            f"test_acc {test_acc:.2%}  ({row['time_s']:.2f} s, {rate:,.0f} img/s)"
        )
        save_checkpoint(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
                "args": run_args,
                "metrics": metrics,
                "rng": _rng_state(shuffle, device),
            },
            ckpt_path,
        )
        # the whole history each time, so the CSV always matches the checkpoint
        pd.DataFrame(metrics, columns=METRIC_COLUMNS).to_csv(out / METRICS, index=False)

    wall = time.perf_counter() - wall_start
    last = metrics[-1]  # --epochs >= 1, and a resumed checkpoint holds its epochs' rows
    tqdm.write(
        f"done: test accuracy {last['test_acc']:.2%} after {last['epoch']} "
        f"epoch{'s' if last['epoch'] != 1 else ''}, "
        f"wall time {wall:.1f} s; checkpoint and metrics in {out}"
    )
    return {**last, "wall_s": wall, "out": str(out)}
