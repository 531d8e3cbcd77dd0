"""Tests for vqlib.synthetic: shapes, value range, determinism and the documented ground truth."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from vqlib.datasets import Dataset
from vqlib.synthetic import (SyntheticDataset, bump_images, code_segments, moving_bump, similarity_scores,
                             within_cluster_ss, wound_code)


def test_shapes_dtypes_and_range():
    data = moving_bump(n_train=300, n_test=100, input_dim=24, num_clusters=4, seed=1)
    assert isinstance(data, Dataset) and isinstance(data, SyntheticDataset)
    assert data.x_train.shape == (300, 24) and data.x_test.shape == (100, 24)
    assert data.y_train.shape == (300,) and data.t_test.shape == (100,)
    assert data.input_shape == (24,)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.t_train.dtype == torch.float32
    for x in (data.x_train, data.x_test):
        assert x.min().item() >= 0.0 and x.max().item() <= 1.0
    for t in (data.t_train, data.t_test):
        assert t.min().item() >= 0.0 and t.max().item() <= 1.0
    assert set(data.y_train.tolist()) == {0, 1, 2, 3}
    assert data.centres == pytest.approx((0.125, 0.375, 0.625, 0.875))


def test_pixel_noise_stays_in_unit_interval():
    data = moving_bump(n_train=200, n_test=50, pixel_noise=0.3, seed=2)
    assert data.x_train.min().item() == 0.0 and data.x_train.max().item() == 1.0  # clipped at both ends


def test_deterministic_given_seed():
    a, b = moving_bump(n_train=100, n_test=40, seed=5), moving_bump(n_train=100, n_test=40, seed=5)
    for name in ("x_train", "y_train", "x_test", "y_test", "t_train", "t_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    c = moving_bump(n_train=100, n_test=40, seed=6)
    assert not torch.equal(a.x_train, c.x_train)


def test_inputs_are_the_documented_bumps():
    data = moving_bump(n_train=50, n_test=10, input_dim=16, bump_width=0.1, seed=3)
    grid = np.arange(16) / 15
    t = data.t_train.numpy().astype(np.float64)
    expected = np.exp(-((grid[None] - t[:, None]) ** 2) / (2 * 0.1**2))
    np.testing.assert_allclose(data.x_train.numpy(), expected, atol=1e-6)
    # the brightest pixel sits where the bump is
    np.testing.assert_array_equal(data.x_train.argmax(1).numpy(), np.abs(grid[None] - t[:, None]).argmin(1))
    np.testing.assert_allclose(bump_images([0.5], 3, 0.1), [[np.exp(-12.5), 1.0, np.exp(-12.5)]])


def test_labels_are_the_nearest_cluster_centre():
    data = moving_bump(n_train=2000, n_test=10, num_clusters=5, cluster_std=0.02, seed=4)
    centres = np.array(data.centres)
    nearest = np.abs(data.t_train.numpy()[:, None] - centres[None]).argmin(1)
    assert (nearest == data.y_train.numpy()).mean() > 0.999  # std 0.02 vs half-spacing 0.1: 5 sigma
    per_class_mean = np.array([data.t_train.numpy()[data.y_train.numpy() == c].mean() for c in range(5)])
    np.testing.assert_allclose(per_class_mean, centres, atol=0.005)


def test_input_distance_grows_with_position_distance():
    """Away from the borders, ||x(t) - x(t')|| is a monotone function of |t - t'|: the similarity structure
    the notebooks measure against."""
    t = np.linspace(0.3, 0.7, 40)
    x = bump_images(t, input_dim=64, bump_width=0.05)
    i, j = np.triu_indices(len(t), 1)
    dx = np.linalg.norm(x[i] - x[j], axis=1)
    assert spearmanr(np.abs(t[i] - t[j]), dx).statistic > 0.999


def test_to_keeps_ground_truth():
    data = moving_bump(n_train=20, n_test=10, seed=0)
    moved = data.to("cpu")
    assert isinstance(moved, SyntheticDataset) and moved is not data
    assert torch.equal(moved.t_test, data.t_test) and moved.centres == data.centres


@pytest.mark.parametrize("kwargs, name", [
    (dict(num_clusters=11), "num_clusters"), (dict(num_clusters=0), "num_clusters"), (dict(n_train=0), "n_train"),
    (dict(input_dim=1), "input_dim"), (dict(bump_width=0.0), "bump_width"), (dict(pixel_noise=-1.0), "pixel_noise"),
    (dict(cluster_std=-0.1), "cluster_std"), (dict(seed=-1), "seed"),
])
def test_bad_arguments_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        moving_bump(**kwargs)


def test_similarity_scores_identity_and_scrambled():
    data = moving_bump(n_train=10, n_test=200, seed=0)
    x, t = data.x_test.numpy(), data.t_test.numpy()
    perfect = similarity_scores(x, x, truth=t, num_clusters=4)
    assert perfect["trustworthiness"] == pytest.approx(1.0)
    assert perfect["spearman_input"] == pytest.approx(1.0)
    assert perfect["partition_ratio"] == pytest.approx(1.0, abs=1e-9)
    on_truth = similarity_scores(x, t[:, None], truth=t, num_clusters=4)
    assert on_truth["spearman_truth"] == pytest.approx(1.0)
    assert on_truth["trustworthiness"] > 0.99
    # a representation that ignores the inputs: low scores, loose clusters
    noise = np.random.default_rng(0).standard_normal((len(x), 2))
    scrambled = similarity_scores(x, noise, truth=t, num_clusters=4, labels=np.arange(len(x)) % 4)
    assert scrambled["trustworthiness"] < 0.7
    assert abs(scrambled["spearman_input"]) < 0.1 and abs(scrambled["spearman_truth"]) < 0.1
    assert scrambled["partition_ratio"] > 2 and scrambled["code_partition_ratio"] > 2
    assert scrambled["code_segments"] > 100  # labels cycling 0..3 over unsorted rows interleave along t
    intervals = similarity_scores(x, x, truth=t, labels=np.digitize(t, [0.25, 0.5, 0.75]))
    assert intervals["code_segments"] == 4


def test_code_segments():
    assert code_segments([0.3, 0.1, 0.2, 0.9], [1, 0, 0, 1]) == 2
    assert code_segments([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1]) == 4
    assert code_segments([], []) == 0


def test_similarity_scores_subsample_and_checks():
    x = np.random.default_rng(1).random((300, 5))
    a = similarity_scores(x, x[:, :2], max_points=100, seed=3)
    b = similarity_scores(x, x[:, :2], max_points=100, seed=3)
    assert a == b and set(a) == {"trustworthiness", "spearman_input", "partition_ratio", "partition_ari",
                                 "partition_nmi"}
    assert set(similarity_scores(x, x[:, :2], max_points=100, rank_correlations=False)) == set(a) - {"spearman_input"}
    with pytest.raises(ValueError, match="same number of rows"):
        similarity_scores(x, x[:10])
    with pytest.raises(ValueError, match="labels"):
        similarity_scores(x, x, labels=np.zeros(5))
    assert within_cluster_ss([[0.0], [2.0], [5.0]], [0, 0, 1]) == pytest.approx(2.0)


def _pair_count_ari(a, b) -> float:
    """Adjusted Rand index from a loop over every pair of rows (Hubert & Arabie's formula on pair counts)."""
    both = same_a = same_b = pairs = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            pairs += 1
            same_a += a[i] == a[j]
            same_b += b[i] == b[j]
            both += a[i] == a[j] and b[i] == b[j]
    expected = same_a * same_b / pairs
    return (both - expected) / ((same_a + same_b) / 2 - expected)


def test_partition_agreement_against_pair_counts_and_a_closed_case():
    """Four tight blobs in x; z keeps four tight blobs, but each holds half of two neighbouring x blobs. k-means
    finds the blobs in both spaces, so the two partitions are known: ARI by counting pairs, NMI in closed form
    (H(x) = H(z) = log 4, I = log 2: NMI = 1/2)."""
    rng = np.random.default_rng(0)
    blob = np.repeat(np.arange(4), 20)  # 80 rows, 20 per x blob
    half = np.tile(np.repeat([0, 1], 10), 4)  # first or second half of each blob
    z_blob = (blob + half) % 4  # z blob j: half of x blob j, half of x blob j - 1
    x = 10.0 * np.eye(4)[blob] + 0.01 * rng.standard_normal((80, 4))
    z = 10.0 * np.stack([np.cos(z_blob * np.pi / 2), np.sin(z_blob * np.pi / 2)], 1) + 0.01 * rng.standard_normal((80, 2))
    scores = similarity_scores(x, z, num_clusters=4, labels=(z_blob + 2) % 4, max_points=80)
    expected = _pair_count_ari(blob, z_blob)
    assert expected == pytest.approx((8 * 45 - 760**2 / 3160) / (760 - 760**2 / 3160))  # n_ij = 10 in 8 cells
    assert scores["partition_ari"] == pytest.approx(expected)
    assert scores["code_partition_ari"] == pytest.approx(expected)  # the same partition under other ids
    assert scores["partition_nmi"] == pytest.approx(0.5) and scores["code_partition_nmi"] == pytest.approx(0.5)
    same = similarity_scores(x, x[:, ::-1] * 3.0, num_clusters=4, labels=blob, max_points=80)
    assert same["partition_ari"] == pytest.approx(1.0) and same["partition_nmi"] == pytest.approx(1.0)
    assert same["code_partition_ari"] == pytest.approx(1.0)


def test_wound_code_is_injective_winds_and_scrambles_neighbourhoods():
    t = np.linspace(0.0, 1.0, 401)
    code = wound_code(t, turns=4, inner_radius=0.8, code_dim=3)
    assert code.shape == (401, 3) and np.all(code[:, 2] == 0)
    radius, angle = np.linalg.norm(code[:, :2], axis=1), np.arctan2(code[:, 1], code[:, 0])
    np.testing.assert_allclose(radius, 0.8 + 0.2 * t)
    # positions a quarter apart: the same angle, on neighbouring turns 0.2 / 4 apart
    np.testing.assert_allclose(code[100:, :2] / radius[100:, None], code[:-100, :2] / radius[:-100, None], atol=1e-12)
    np.testing.assert_allclose(radius[100:] - radius[:-100], 0.05)
    np.testing.assert_allclose(np.cos(angle), np.cos(2 * np.pi * 4 * t), atol=1e-12)
    distances = np.linalg.norm(code[:, None] - code[None], axis=-1) + np.eye(len(t))
    assert distances.min() > 0  # injective
    data = moving_bump(n_train=10, n_test=400, seed=0)
    x, positions = data.x_test.numpy(), data.t_test.numpy()
    wound = similarity_scores(x, wound_code(positions), num_clusters=6, rank_correlations=False)
    straight = similarity_scores(x, positions[:, None], num_clusters=6, rank_correlations=False)
    assert straight["trustworthiness"] > 0.99 and wound["trustworthiness"] < 0.9
    assert straight["partition_ari"] > 0.9 and wound["partition_ari"] < 0.5
    for kwargs, name in [(dict(turns=0), "turns"), (dict(inner_radius=0), "inner_radius"), (dict(code_dim=1), "code_dim")]:
        with pytest.raises(ValueError, match=name):
            wound_code(t, **kwargs)
