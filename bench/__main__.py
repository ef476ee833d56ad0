"""``python -m tritonnet.bench [--quick] [--ops linear] [--dtypes bf16 ...] [--out DIR]``."""

import argparse
import sys

from . import suite


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tritonnet.bench",
        description="tritonnet's kernels against PyTorch (cuBLAS/cuDNN, torch.compile) on the "
        "CUDA device: one long-format results.csv, env.json, plots and a short table.",
    )
    suite.add_arguments(parser)
    return suite.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
