"""Tests for vqlib.tsne: the openTSNE wrapper and the two neighbourhood scores."""

import numpy as np
import pytest

from vqlib import tsne


def _blobs(n_per=40, d=10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(3, d))
    z = np.concatenate([c + rng.normal(size=(n_per, d)) for c in centres])
    return z, np.repeat(np.arange(3), n_per)


def test_embed_shape_determinism_and_clusters():
    z, y = _blobs()
    a = tsne.embed(z, seed=1, perplexity=10, n_jobs=1)
    b = tsne.embed(z, seed=1, perplexity=10, n_jobs=1)
    assert a.shape == (len(z), 2) and a.dtype == np.float64 and np.isfinite(a).all()
    np.testing.assert_allclose(a, b)
    assert tsne.knn_label_agreement(a, y, n_neighbors=5) > 0.95  # well separated blobs stay separated


def test_embed_lowers_a_too_large_perplexity_silently(caplog):
    z, _ = _blobs(n_per=4)  # 12 points: perplexity 30 is impossible
    with caplog.at_level("WARNING"):
        y = tsne.embed(z, perplexity=30)
    assert y.shape == (12, 2)
    assert not [r for r in caplog.records if r.name.startswith("openTSNE")]


def test_embed_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    z, _ = _blobs(n_per=10)
    assert tsne.embed(torch.tensor(z, dtype=torch.float32), perplexity=5).shape == (30, 2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(z=np.zeros((10,))), "expected \\(n, d\\)"),
    (dict(z=np.full((10, 2), np.nan)), "NaN"),
    (dict(z=np.zeros((10, 2)), perplexity=0), "perplexity=0"),
    (dict(z=np.zeros((10, 2)), n_jobs=0), "n_jobs=0"),
    (dict(z=np.zeros((10, 2)), seed=-1), "seed=-1"),
])
def test_embed_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tsne.embed(**kwargs)


def test_trustworthiness_perfect_for_a_scaled_copy_and_lower_for_noise():
    z, _ = _blobs()
    assert tsne.trustworthiness(z, 3.0 * z, n_neighbors=5) == pytest.approx(1.0)
    noise = np.random.default_rng(0).normal(size=(len(z), 2))
    assert tsne.trustworthiness(z, noise, n_neighbors=5) < 0.8
    with pytest.raises(ValueError, match="rows"):
        tsne.trustworthiness(z, z[:-1])
    with pytest.raises(ValueError, match="n_neighbors=60"):
        tsne.trustworthiness(z, z, n_neighbors=60)


def test_knn_label_agreement_counts_same_label_neighbours_without_the_point_itself():
    points = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
    labels = np.array([0, 0, 1, 1, 1, 1])
    # neighbours (k=1): 0->1 (same), 1->0 (same; tie with 2 broken by index), 2->1 (diff), 3->4, 4->3, 5->4 (same)
    assert tsne.knn_label_agreement(points, labels, n_neighbors=1) == pytest.approx(5 / 6)
    assert tsne.knn_label_agreement(points, np.zeros(6), n_neighbors=5) == 1.0
    with pytest.raises(ValueError, match="labels has shape"):
        tsne.knn_label_agreement(points, labels[:3])
    with pytest.raises(ValueError, match="n_neighbors=6"):
        tsne.knn_label_agreement(points, labels, n_neighbors=6)
