"""Soft VQ-VAE diagnostics against a brute-force evaluation of eq. 7 in Python floats."""

import math

import pytest
import torch

from vqlib.bottlenecks import SoftVectorQuantizer, VectorQuantizer
from vqlib.diagnostics import soft_vq_diagnostics


def _brute(z, codebook, log_sigma):
    """Per input: (nearest codeword, most probable codeword under eq. 7, entropy of the posterior)."""
    d = len(z)
    dist = [sum((a - b) ** 2 for a, b in zip(z, mu)) for mu in codebook]
    logw = [-dk / (2 * math.exp(2 * s)) - d * s for dk, s in zip(dist, log_sigma)]
    top = max(logw)
    w = [math.exp(v - top) for v in logw]
    p = [v / sum(w) for v in w]
    return dist.index(min(dist)), logw.index(top), -sum(q * math.log(q) for q in p if q > 0)


@pytest.mark.parametrize("sigma_source", ["codeword", "encoder"])
def test_diagnostics_match_a_brute_force_posterior(sigma_source):
    gen = torch.Generator().manual_seed(0)
    n, k, d = 40, 6, 8
    bottleneck = SoftVectorQuantizer(num_codes=k, code_dim=d, sigma_source=sigma_source).double().eval()
    z = torch.randn(n, d, generator=gen, dtype=torch.float64)
    extra = 0.15 * torch.randn(n, k, generator=gen, dtype=torch.float64) if sigma_source == "encoder" else None
    if sigma_source == "codeword":
        with torch.no_grad():
            bottleneck.log_sigma.copy_(torch.linspace(-0.2, 0.2, k))
    log_sigma = extra if extra is not None else bottleneck.log_sigma.detach().expand(n, -1)
    brute = [_brute(z[i].tolist(), bottleneck.codebook.tolist(), log_sigma[i].tolist()) for i in range(n)]
    got = soft_vq_diagnostics(bottleneck, z, extra)
    assert got["share_nearest"] == pytest.approx(sum(a == b for a, b, _ in brute) / n)
    assert got["share_smallest_sigma"] == pytest.approx(
        sum(b == min(range(k), key=lambda j: log_sigma[i, j]) for i, (_, b, _) in enumerate(brute)) / n)
    assert got["responsibility_entropy"] == pytest.approx(sum(h for _, _, h in brute) / n, rel=1e-9)
    assert got["normaliser_spread"] == pytest.approx(float(d * (log_sigma.max(1).values - log_sigma.min(1).values).mean()))
    assert got["noise_norm"] == pytest.approx(0.1 * math.sqrt(d))
    assert 0 < got["share_nearest"] < 1  # the sigmas reorder some inputs' codewords, not all


def test_a_smaller_sigma_beats_a_nearer_codeword_by_the_normaliser():
    """z = 0, mu_1 at distance 1 with sigma 1, mu_2 at distance 1.2 with sigma 0.9, d = 8:
    log-weights -0.5 and -1.44 / 1.62 + 8 log(1/0.9) = -0.046, so the farther codeword wins."""
    bottleneck = SoftVectorQuantizer(num_codes=2, code_dim=8, sigma_source="codeword").double().eval()
    with torch.no_grad():
        bottleneck.codebook.zero_()
        bottleneck.codebook[0, 0], bottleneck.codebook[1, 0] = 1.0, -1.2
        bottleneck.log_sigma.copy_(torch.log(torch.tensor([1.0, 0.9], dtype=torch.float64)))
    got = soft_vq_diagnostics(bottleneck, torch.zeros(1, 8, dtype=torch.float64))
    assert got["share_nearest"] == 0.0 and got["share_smallest_sigma"] == 1.0
    p2 = 1 / (1 + math.exp(-0.5 - (-1.44 / 1.62 + 8 * math.log(1 / 0.9))))
    assert got["max_responsibility"] == pytest.approx(p2, rel=1e-9)


def test_diagnostics_refuse_other_bottlenecks():
    with pytest.raises(ValueError, match="these diagnostics are for soft_vq"):
        soft_vq_diagnostics(VectorQuantizer(num_codes=4, code_dim=2), torch.zeros(3, 2))
