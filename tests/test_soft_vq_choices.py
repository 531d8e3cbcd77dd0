"""The soft VQ-VAE's open choices as parameters: one shared sigma, noise proportional to the spread
of z_e, and clustering on every digit."""

import math

import numpy as np
import pytest
import torch

from vqlib import RunConfig
from vqlib.bottlenecks import SoftVectorQuantizer
from vqlib.evaluation import clustering_accuracy, evaluate_latents


def test_a_shared_sigma_is_one_parameter_and_its_posterior_is_a_softmax_of_distances():
    sq = SoftVectorQuantizer(num_codes=5, code_dim=3, sigma_source="shared", noise_std=0.0).double().eval()
    assert sq.log_sigma.shape == (1,) and sq.extra_dim == 0
    with torch.no_grad():
        sq.log_sigma.fill_(math.log(0.7))
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, aux = sq(z)
    for i in range(4):  # the sigma^(-d) normalisers cancel: p_k proportional to exp(-||z - mu_k||^2 / (2 sigma^2))
        w = [math.exp(-sum((a - b) ** 2 for a, b in zip(z[i].tolist(), mu)) / (2 * 0.49))
             for mu in sq.codebook.tolist()]
        assert aux["responsibilities"][i].tolist() == pytest.approx([v / sum(w) for v in w], rel=1e-9)


def test_proportional_noise_follows_the_spread_of_the_codes():
    sq = SoftVectorQuantizer(num_codes=4, code_dim=6, noise_std=0.2, sigma_source="shared", noise_scale="proportional",
                             gradient="soft").train()
    gen = torch.Generator().manual_seed(1)
    for scale in (0.5, 8.0):
        z = scale * torch.randn(4000, 6, generator=gen)
        eps = torch.randn(4000, 6, generator=gen)
        with torch.no_grad():
            sq.codebook.copy_(z[:4])
        spread = float(z.std(0).mean())
        assert spread == pytest.approx(scale, rel=0.05)
        _, aux = sq(z, None, eps)
        # the same as a fixed noise of std noise_std * spread(z_e)
        expected = SoftVectorQuantizer(num_codes=4, code_dim=6, noise_std=0.2 * spread, sigma_source="shared",
                                       gradient="soft").train()
        expected.load_state_dict(sq.state_dict())
        _, ref = expected(z, None, eps)
        torch.testing.assert_close(aux["responsibilities"], ref["responsibilities"])


def test_clustering_all_digits_scores_train_and_test_together():
    rng = np.random.default_rng(0)
    centres = 20 * np.eye(10)  # ten well separated classes, as k-means' ten clusters expect
    y_train, y_test = rng.integers(0, 10, 300), rng.integers(0, 10, 30)
    z_train, z_test = centres[y_train] + rng.normal(size=(300, 10)), centres[y_test] + rng.normal(size=(30, 10))
    both = evaluate_latents(z_train, y_train, z_test, y_test, n_init=3, classifier_iterations=50, cluster_split="all")
    test = evaluate_latents(z_train, y_train, z_test, y_test, n_init=3, classifier_iterations=50)
    assert both["clustering_acc"] > 0.9 and test["clustering_acc"] > 0.8
    assert both["classification_acc"] == test["classification_acc"]  # the classifier is unchanged
    with pytest.raises(ValueError, match="cluster_split='train' is not allowed"):
        evaluate_latents(z_train, y_train, z_test, y_test, cluster_split="train")
    with pytest.raises(ValueError, match="cluster_split='train' is not allowed"):
        RunConfig(cluster_split="train")
    assert clustering_accuracy(y_test, y_test) == 1.0
