"""The ``tritonnet`` command: ``train``, ``bench`` and ``info``.

Heavy imports (pandas, tqdm, scikit-learn, Triton, the benchmark suite) happen inside the
subcommand that needs them, so ``tritonnet --help`` and argument errors come back fast.
"""

from __future__ import annotations

import argparse
import sys

from tritonnet.backend import BACKENDS
from tritonnet.data import DATASETS
from tritonnet.models import MODELS
from tritonnet.train import DEFAULTS

__all__ = ["build_parser", "info", "main"]


def build_parser() -> argparse.ArgumentParser:
    return _build_parsers()[0]


def _build_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and its subcommands' parsers, by name."""
    parser = argparse.ArgumentParser(
        prog="tritonnet",
        description="CNN layers as Triton kernels: train example models, benchmark the "
        "kernels against PyTorch, show the set-up.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a model on a dataset",
        description="Train a model from tritonnet.models on a dataset; writes metrics.csv "
        "and checkpoint.pt to --out after every epoch.",
    )
    p.add_argument("--model", choices=sorted(MODELS), default="mlp", help="default: %(default)s")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="digits", help="default: %(default)s")
    p.add_argument(
        "--epochs", type=int, default=20, help="total epochs, resumed ones included; default: %(default)s"
    )
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"default: {DEFAULTS['batch_size']}, or with --resume the checkpoint's")
    p.add_argument("--lr", type=float, default=None,
                   help=f"learning rate; default: {DEFAULTS['lr']}, or with --resume the checkpoint's")
    p.add_argument(
        "--optimizer",
        choices=["sgd", "adam"],
        default="sgd",
        help="sgd has momentum 0.9; default: %(default)s",
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto (the default): cuda when available, else cpu",
    )
    p.add_argument(
        "--backend",
        choices=list(BACKENDS),
        default="auto",
        help="auto (the default): Triton kernels on CUDA tensors, the PyTorch reference on "
        "CPU ones; triton on CPU needs TRITON_INTERPRET=1",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds initialisation, shuffling and dropout (the test split is fixed); default: %(default)s",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="output directory; default: runs/<model>-<dataset>",
    )
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt up to --epochs")

    # the benchmark suite defines its own flags; it is imported only when `bench` runs
    b = sub.add_parser(
        "bench",
        help="benchmark the kernels against PyTorch (tritonnet bench --help for its flags)",
        add_help=False,
    )
    i = sub.add_parser("info", help="show versions, device, backend and Triton set-up")
    return parser, {"train": p, "bench": b, "info": i}


def info() -> None:
    """Print the versions and the set-up tritonnet sees; queries the device, imports Triton."""
    import importlib
    import platform

    import torch

    import tritonnet
    from tritonnet.backend import get_backend, interpreter_enabled

    try:
        triton = importlib.import_module("triton")
        triton_line, importable = triton.__version__, "yes"
    except Exception as e:  # not installed, or broken: say which
        triton_line, importable = "not available", f"no ({type(e).__name__}: {e})"
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)})"
    else:
        device = "cpu"
    try:
        backend = get_backend()
    except ValueError as e:  # a bad TRITONNET_BACKEND
        backend = f"invalid ({e})"
    rows = [
        ("tritonnet", tritonnet.__version__),
        ("torch", f"{torch.__version__} (CUDA {torch.version.cuda})"),
        ("triton", triton_line),
        ("python", platform.python_version()),
        ("device", device),
        ("backend", backend),
        ("TRITON_INTERPRET", "on" if interpreter_enabled() else "off"),
        ("triton importable", importable),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def _bench(argv: list[str]) -> None:
    try:
        from tritonnet.bench import suite
    except ImportError as e:
        raise SystemExit(f"tritonnet bench: the benchmark suite is not available ({e})") from e
    parser = argparse.ArgumentParser(prog="tritonnet bench", description="Benchmark suite.")
    suite.add_arguments(parser)
    suite.run(parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    parser, commands = _build_parsers()
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        _bench(rest)
        return 0
    if rest:
        commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "info":
        info()
        return 0

    from tritonnet.train import CheckpointError, train, validate

    try:
        validate(args)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        commands["train"].error(str(e))
    try:
        train(args)
    except CheckpointError as e:  # found once train() reads the --resume checkpoint
        commands["train"].error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
