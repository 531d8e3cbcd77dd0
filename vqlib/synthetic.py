"""Synthetic datasets with a known ground truth, for experiments that must know what a good encoder finds.

``moving_bump`` makes one-dimensional "images" of ``input_dim`` pixels, each showing one Gaussian bump
at a position ``t`` in [0, 1]::

    x_i(t) = exp(-(c_i - t)^2 / (2 w^2)),   c_i = i / (input_dim - 1),  i = 0 .. input_dim - 1

so every example lies on a known one-dimensional curve ``t -> x(t)`` in ``[0, 1]^input_dim`` and
``t`` is its ground-truth latent coordinate. Neighbouring positions give overlapping bumps (similar
inputs); positions further apart than a few widths ``w`` give nearly orthogonal inputs. The positions
are drawn around ``num_clusters`` equally spaced centres ``(j + 0.5) / num_clusters`` (a Gaussian of std
``cluster_std`` around a uniformly chosen centre, clipped to [0, 1]); the label of an example is the
index ``j`` of its centre, numbered from left to right. Optional pixel noise is added and the result
clipped to [0, 1].

    data = moving_bump(n_train=2000, n_test=1000, seed=0)
    data.x_train.shape, data.t_train.shape   # (2000, 32), (2000,)
    vqlib.train(RunConfig(reconstruction="nmse"), dataset=data)   # any vqlib.Dataset consumer works

Everything is a deterministic function of the arguments (``numpy.random.default_rng(seed)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .bottlenecks.base import check_non_negative, check_positive_int
from .datasets import Dataset

__all__ = ["SyntheticDataset", "bump_images", "moving_bump"]

MAX_CLUSTERS = 10  # labels must fit Dataset.num_classes (the ten classes 0..9)


@dataclass
class SyntheticDataset(Dataset):
    """A :class:`vqlib.datasets.Dataset` that also carries the ground-truth latent coordinate of every example.

    ``t_train`` / ``t_test``: float32 tensors (n,) with the position in [0, 1] that generated each row;
    ``y_train`` / ``y_test``: the cluster index (0 = leftmost centre). ``Dataset.to`` keeps these fields.
    """

    t_train: torch.Tensor = None
    t_test: torch.Tensor = None
    centres: tuple = ()  # the cluster centres, left to right
    bump_width: float = 0.0  # w

    def to(self, device) -> "SyntheticDataset":
        moved = super().to(device)
        moved.t_train, moved.t_test = self.t_train.to(device), self.t_test.to(device)
        return moved


def bump_images(t, input_dim: int = 32, bump_width: float = 0.06) -> np.ndarray:
    """x_i(t) = exp(-(c_i - t)^2 / (2 w^2)) on the pixel grid c_i = i / (input_dim - 1): (n,) -> (n, input_dim) float64."""
    check_positive_int("input_dim", input_dim, minimum=2)
    if check_non_negative("bump_width", bump_width) == 0:
        raise ValueError(f"bump_width={bump_width!r} is not allowed: bump_width must be > 0")
    grid = np.linspace(0.0, 1.0, input_dim)
    t = np.asarray(t, dtype=np.float64).reshape(-1, 1)
    return np.exp(-((grid - t) ** 2) / (2.0 * bump_width**2))


def moving_bump(n_train: int = 2000, n_test: int = 1000, input_dim: int = 32, num_clusters: int = 6,
                cluster_std: float = 0.04, bump_width: float = 0.06, pixel_noise: float = 0.0,
                seed: int = 0) -> SyntheticDataset:
    """Bump images around ``num_clusters`` (1..10) positions; see the module docstring.

    n_train, n_test: examples per split (drawn independently from the same distribution);
    input_dim: pixels per image; cluster_std: std of the positions around their centre;
    bump_width: w; pixel_noise: std of Gaussian noise added to every pixel before clipping to [0, 1].
    Returns float32 inputs in [0, 1], int64 labels, float32 positions.
    """
    check_positive_int("n_train", n_train)
    check_positive_int("n_test", n_test)
    check_positive_int("num_clusters", num_clusters)
    if num_clusters > MAX_CLUSTERS:
        raise ValueError(f"num_clusters={num_clusters!r} is not allowed: num_clusters must be <= {MAX_CLUSTERS}")
    check_non_negative("cluster_std", cluster_std)
    check_non_negative("pixel_noise", pixel_noise)
    check_non_negative("seed", seed)
    rng = np.random.default_rng(int(seed))
    centres = (np.arange(num_clusters) + 0.5) / num_clusters

    def split(n):
        labels = rng.integers(0, num_clusters, n)
        t = np.clip(centres[labels] + cluster_std * rng.standard_normal(n), 0.0, 1.0)
        x = bump_images(t, input_dim, bump_width)
        if pixel_noise > 0:
            x = np.clip(x + pixel_noise * rng.standard_normal(x.shape), 0.0, 1.0)
        return (torch.tensor(x, dtype=torch.float32), torch.tensor(labels, dtype=torch.int64),
                torch.tensor(t, dtype=torch.float32))

    x_train, y_train, t_train = split(n_train)
    x_test, y_test, t_test = split(n_test)
    return SyntheticDataset(f"moving_bump{input_dim}", x_train, y_train, x_test, y_test, t_train=t_train,
                            t_test=t_test, centres=tuple(float(c) for c in centres), bump_width=float(bump_width))
