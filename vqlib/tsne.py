"""t-SNE maps of latent codes (the paper's Fig. 4) and two scores of how well a map keeps neighbours.

A thin wrapper around openTSNE (Poličar et al.; FFT-accelerated t-SNE), with checked inputs and
no log output, so a notebook can write::

    from vqlib import tsne
    y = tsne.embed(z_test, seed=0)                          # (n, 2)
    tsne.trustworthiness(x_test, z_test, n_neighbors=10)    # are z's neighbours neighbours in x?
    tsne.knn_label_agreement(y, labels, n_neighbors=10)     # do 2-D neighbours share the class?

``trustworthiness`` is scikit-learn's (Venna & Kaski 2001): 1 when every point's ``n_neighbors``
nearest neighbours in the representation are also among its nearest neighbours in the reference
space, lower when the representation brings in points that were far away. ``knn_label_agreement``
is the mean fraction of each point's ``n_neighbors`` nearest neighbours (itself excluded) that carry
its label: how cleanly the classes separate locally.
"""

from __future__ import annotations

import logging

import numpy as np

from .validation import check_positive_int

__all__ = ["embed", "knn_label_agreement", "trustworthiness"]


def _matrix(name: str, z, min_rows: int = 2) -> np.ndarray:
    z = np.asarray(z.detach().cpu().numpy() if hasattr(z, "detach") else z, dtype=np.float64)
    if z.ndim != 2 or len(z) < min_rows or z.shape[1] < 1:
        raise ValueError(f"{name} has shape {z.shape}: expected (n, d) with n >= {min_rows} rows")
    if not np.isfinite(z).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return z


def embed(z, seed: int = 0, perplexity: float = 30.0, n_jobs: int = 1, **tsne_kwargs) -> np.ndarray:
    """Project ``z`` (n, d) to two dimensions with openTSNE; returns a float64 array (n, 2).

    ``seed`` fixes openTSNE's random state (PCA initialisation, neighbour search); ``perplexity``
    is the effective number of neighbours (openTSNE's default 30; lowered to (n - 1) / 3 when n is
    too small for it, instead of openTSNE's warning); ``n_jobs`` threads for the neighbour search
    and gradients. Further keyword arguments go to ``openTSNE.TSNE`` (e.g. ``n_iter``).
    """
    from openTSNE import TSNE

    z = _matrix("z", z, min_rows=4)
    seed = check_positive_int("seed", seed, 0)
    n_jobs = check_positive_int("n_jobs", n_jobs)
    if isinstance(perplexity, bool) or not isinstance(perplexity, (int, float)) or not perplexity > 0:
        raise ValueError(f"perplexity={perplexity!r} is not allowed: perplexity must be a number > 0")
    perplexity = min(float(perplexity), (len(z) - 1) / 3)
    logger = logging.getLogger("openTSNE")
    level = logger.level
    logger.setLevel(logging.ERROR)  # openTSNE reports through logging; keep notebook outputs clean
    try:
        tsne = TSNE(n_components=2, perplexity=perplexity, random_state=seed, n_jobs=n_jobs, verbose=False,
                    **tsne_kwargs)
        return np.asarray(tsne.fit(z), dtype=np.float64)
    finally:
        logger.setLevel(level)


def trustworthiness(reference, representation, n_neighbors: int = 10) -> float:
    """scikit-learn's trustworthiness of ``representation`` (n, d') against ``reference`` (n, D), in [0, 1]."""
    from sklearn.manifold import trustworthiness as sk_trustworthiness

    reference = _matrix("reference", reference)
    representation = _matrix("representation", representation)
    if len(reference) != len(representation):
        raise ValueError(f"reference has {len(reference)} rows but representation has {len(representation)}")
    n_neighbors = check_positive_int("n_neighbors", n_neighbors)
    if n_neighbors >= len(reference) / 2:
        raise ValueError(f"n_neighbors={n_neighbors} is not allowed: it must be < n / 2 = {len(reference) / 2}")
    return float(sk_trustworthiness(reference, representation, n_neighbors=n_neighbors))


def knn_label_agreement(points, labels, n_neighbors: int = 10) -> float:
    """Mean over points of the fraction of their ``n_neighbors`` nearest neighbours (Euclidean, the point
    itself excluded) that have the same label; 1 means every neighbourhood is pure."""
    from sklearn.neighbors import NearestNeighbors

    points = _matrix("points", points)
    labels = np.asarray(labels)
    if labels.shape != (len(points),):
        raise ValueError(f"labels has shape {labels.shape}: expected ({len(points)},)")
    n_neighbors = check_positive_int("n_neighbors", n_neighbors)
    if n_neighbors >= len(points):
        raise ValueError(f"n_neighbors={n_neighbors} is not allowed: it must be < n = {len(points)}")
    _, neighbours = NearestNeighbors(n_neighbors=n_neighbors).fit(points).kneighbors()  # no X: self excluded
    return float((labels[neighbours] == labels[:, None]).mean())
