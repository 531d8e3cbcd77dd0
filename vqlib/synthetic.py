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
    vqlib.train(RunConfig(code_dim=2), dataset=data)   # any consumer of a vqlib.Dataset works

Everything is a deterministic function of the arguments (``numpy.random.default_rng(seed)``).

``similarity_scores(x, z, truth)`` measures how well a representation ``z`` of the rows of ``x`` keeps
their similarity structure (trustworthiness, rank correlation of pairwise distances with the inputs and with
the ground truth, how compact clusters found in ``z`` are in input space, and how well they agree with the
clusters found in ``x``).

``wound_code(t, turns)`` is a code that keeps no similarity structure but loses no information: a spiral
that puts positions ``1 / turns`` apart (dissimilar inputs) on neighbouring turns, the arbitrary injective
encoder mapping of the paper's Fig. 1(a).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .validation import check_non_negative, check_number, check_positive_int
from .datasets import Dataset

__all__ = ["SyntheticDataset", "bump_images", "code_segments", "moving_bump", "similarity_scores",
           "within_cluster_ss", "wound_code"]

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
    """x_i(t) = exp(-(c_i - t)^2 / (2 w^2)) on the grid c_i = i / (input_dim - 1): t (n,) -> (n, input_dim) float64."""
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


def wound_code(t, turns: float = 4.0, inner_radius: float = 0.8, code_dim: int = 2) -> np.ndarray:
    """A spiral code of the positions t (n,) -> (n, code_dim) float64: injective, and not similarity-preserving.

    z(t) = r(t) (cos 2 pi turns t, sin 2 pi turns t, 0, ...), r(t) = inner_radius + (1 - inner_radius) t, so
    t in [0, 1] winds ``turns`` times around the origin while the radius grows from ``inner_radius`` to 1.
    Positions ``1 / turns`` apart sit on neighbouring turns, ``(1 - inner_radius) / turns`` apart, while
    nearby positions stay nearby along a turn: every position keeps its own code (a decoder can invert it),
    but codes close together can belong to very different inputs. Coordinates beyond the second are 0.
    """
    check_positive_int("code_dim", code_dim, minimum=2)
    check_number("turns", turns, strict=True)
    if isinstance(inner_radius, bool) or not isinstance(inner_radius, (int, float)) or not 0 < inner_radius <= 1:
        raise ValueError(f"inner_radius={inner_radius!r} is not allowed: inner_radius must be a number in (0, 1]")
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    angle, radius = 2 * np.pi * turns * t, inner_radius + (1 - inner_radius) * t
    code = np.zeros((len(t), code_dim))
    code[:, 0], code[:, 1] = radius * np.cos(angle), radius * np.sin(angle)
    return code


def within_cluster_ss(x, labels) -> float:
    """Sum over clusters of the squared Euclidean distances of the rows of ``x`` to their cluster mean."""
    x, labels = np.asarray(x, dtype=np.float64), np.asarray(labels)
    return float(sum(((x[labels == c] - x[labels == c].mean(0)) ** 2).sum() for c in np.unique(labels)))


def code_segments(truth, labels) -> int:
    """Number of maximal runs of equal ``labels`` when the rows are sorted by the one-dimensional ``truth``."""
    ordered = np.asarray(labels).reshape(-1)[np.argsort(np.asarray(truth).reshape(-1), kind="stable")]
    return int(1 + (ordered[1:] != ordered[:-1]).sum()) if len(ordered) else 0


def similarity_scores(x, z, truth=None, n_neighbors: int = 10, num_clusters: int = 4, labels=None,
                      max_points: int = 1000, seed: int = 0, rank_correlations: bool = True) -> dict:
    """How well the representation ``z`` (n, d) keeps the similarity structure of the inputs ``x`` (n, D).

    * ``trustworthiness``: :func:`sklearn.manifold.trustworthiness` with ``n_neighbors``; 1 when every point's
      nearest neighbours in ``z`` are also among its nearest neighbours in ``x``, lower when ``z`` puts
      dissimilar inputs next to each other.
    * ``spearman_input``: Spearman rank correlation between all pairwise Euclidean distances in ``x`` and in ``z``.
    * ``spearman_truth`` (if ``truth`` (n,) or (n, k) is given): the same against distances of the ground truth.
    * ``partition_ratio``: k-means with ``num_clusters`` clusters on ``z``; the inputs' within-cluster sum of
      squares under that partition divided by the one of k-means run on ``x`` itself. Near 1: the clusters of
      ``z`` are as compact in input space as the best ones found there directly; larger: they mix dissimilar inputs.
    * ``partition_ari``, ``partition_nmi``: agreement of the same two partitions (k-means on ``z``, k-means on
      ``x``): adjusted Rand index (1: the same partition, 0: no more pairs grouped alike than by chance) and
      normalised mutual information (arithmetic normalisation, 1: the same partition, 0: independent).
    * ``code_partition_ratio``, ``code_partition_ari``, ``code_partition_nmi`` (if ``labels``, e.g. a
      quantizer's code indices, are given): the same scores for that partition.
    * ``code_segments`` (if ``labels`` and a one-dimensional ``truth`` are given): the number of maximal runs of
      equal labels along the sorted ground truth; it equals the number of distinct labels when every label owns
      one interval of the truth, and grows when the labels interleave.

    Rows beyond ``max_points`` are left out (a fixed random subset drawn with ``seed``); k-means uses 5
    initialisations and ``seed``. ``rank_correlations=False`` leaves out the two Spearman scores (the slow part).
    """
    from scipy.spatial.distance import pdist
    from scipy.stats import spearmanr
    from sklearn.cluster import KMeans
    from sklearn.manifold import trustworthiness
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    z = np.asarray(z, dtype=np.float64).reshape(len(z), -1)
    n = len(x)
    truth = None if truth is None else np.asarray(truth, dtype=np.float64).reshape(n if len(truth) == n else -1, -1)
    labels = None if labels is None else np.asarray(labels).reshape(-1)
    for name, a in (("z", z), ("truth", truth), ("labels", labels)):
        if a is not None and len(a) != n:
            raise ValueError(f"x and {name} must have the same number of rows, got {n} and {len(a)}")
    check_positive_int("n_neighbors", n_neighbors)
    check_positive_int("num_clusters", num_clusters)
    check_positive_int("max_points", max_points, minimum=2 * n_neighbors + 2)
    keep = np.arange(n)
    if n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    x, z = x[keep], z[keep]
    scores = {"trustworthiness": float(trustworthiness(x, z, n_neighbors=n_neighbors))}
    if rank_correlations:
        scores["spearman_input"] = float(spearmanr(pdist(x), pdist(z)).statistic)
        if truth is not None:
            scores["spearman_truth"] = float(spearmanr(pdist(truth[keep]), pdist(z)).statistic)
    kmeans = lambda data: KMeans(num_clusters, n_init=5, random_state=seed).fit_predict(data)  # noqa: E731
    of_x = kmeans(x)
    reference = within_cluster_ss(x, of_x)
    for prefix, partition in [("partition", kmeans(z))] + ([("code_partition", labels[keep])] if labels is not None
                                                           else []):
        scores[f"{prefix}_ratio"] = within_cluster_ss(x, partition) / reference
        scores[f"{prefix}_ari"] = float(adjusted_rand_score(of_x, partition))
        scores[f"{prefix}_nmi"] = float(normalized_mutual_info_score(of_x, partition))
    if labels is not None and truth is not None and truth.shape[1] == 1:
        scores["code_segments"] = code_segments(truth[:, 0], labels)
    return scores
