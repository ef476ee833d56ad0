"""Datasets for the training job, as in-memory tensors.

``digits`` is scikit-learn's bundled copy of the UCI handwritten digits: 1797 greyscale 8x8
images of the digits 0-9, 16 grey levels, shipped with scikit-learn (no download). Images keep
their (N, 1, 8, 8) shape so convolutional models can use them; the MLP flattens its input.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

__all__ = ["DATASETS", "Split", "load_dataset", "load_digits_split", "make_loader"]


class Split(NamedTuple):
    """A train/test split: images (N, C, H, W) float32 in [0, 1], labels (N,) int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one image."""
        return tuple(self.x_train.shape[1:])

    def to(self, device) -> Split:
        return self._replace(**{k: getattr(self, k).to(device) for k in self._fields[:4]})


def load_digits_split(seed: int = 0, test_fraction: float = 0.2) -> Split:
    """scikit-learn's digits, scaled to [0, 1] (grey levels 0..16 divided by 16), split into
    train and test sets stratified by class; the same ``seed`` gives the same split."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    # imported here: scikit-learn is only needed when the data is loaded
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # on the CPU whatever torch.set_default_device says (Split.to moves it)
    x = torch.tensor(digits.images, dtype=torch.float32, device="cpu").div_(16.0).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.tensor(digits.target, dtype=torch.int64, device="cpu")
    idx_train, idx_test = train_test_split(
        torch.arange(len(y), device="cpu").numpy(), test_size=test_fraction, random_state=seed, stratify=y
    )
    idx_train, idx_test = torch.from_numpy(idx_train), torch.from_numpy(idx_test)
    return Split(x[idx_train], y[idx_train], x[idx_test], y[idx_test], num_classes=10)


# name -> loader; a new dataset is one more entry
DATASETS = {"digits": load_digits_split}


def load_dataset(name: str, seed: int = 0) -> Split:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](seed=seed)


def make_loader(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """Batches of (x, y) from in-memory tensors (on any device).

    Whole batches are taken with one index operation (a BatchSampler as the loader's sampler,
    automatic batching off) rather than sample by sample and collated; ``generator`` drives the
    shuffle, so its state fixes the order."""
    dataset = TensorDataset(x, y)
    order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    sampler = BatchSampler(order, batch_size=batch_size, drop_last=False)
    return DataLoader(dataset, sampler=sampler, batch_size=None)
