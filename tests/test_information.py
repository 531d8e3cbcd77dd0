"""Information measures against hand computations, and EM's sampling and parameters."""

import math

import numpy as np
import pytest
import torch

from vqlib import RunConfig
from vqlib.bottlenecks import EMVectorQuantizer
from vqlib.information import (code_distribution, conditional_entropy, entropy, hard_and_soft,
                               hard_responsibilities, information_terms, measure, mutual_information, vib_loss)
from vqlib.model import Autoencoder


def test_a_two_input_example_by_hand():
    rows = np.array([[1.0, 0.0], [0.5, 0.5]])
    h_z = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    h_z_given_i = 0.5 * math.log(2)
    terms = information_terms(rows)
    assert terms["H(Z)"] == pytest.approx(h_z) and terms["H(Z|I)"] == pytest.approx(h_z_given_i)
    assert terms["I(I;Z)"] == pytest.approx(h_z - h_z_given_i)
    assert terms["KL(p(Z|I)||r)"] == pytest.approx(math.log(2) - h_z_given_i)
    assert terms["KL(p(Z)||r)"] == pytest.approx(math.log(2) - h_z)
    assert terms["perplexity"] == pytest.approx(math.exp(h_z)) and terms["dead_codes"] == 1
    np.testing.assert_allclose(code_distribution(rows), [0.75, 0.25])


def test_mutual_information_is_the_mean_kl_to_the_marginal():
    rng = np.random.default_rng(0)
    rows = rng.dirichlet(np.full(6, 0.4), size=50)
    marginal = rows.mean(0)
    by_definition = np.mean([sum(p * math.log(p / q) for p, q in zip(row, marginal) if p > 0) for row in rows])
    assert mutual_information(rows) == pytest.approx(by_definition, rel=1e-12)
    assert 0 <= conditional_entropy(rows) <= math.log(6)


def test_a_deterministic_encoder_has_no_conditional_entropy_and_pays_log_k_to_a_uniform_prior():
    indices = np.array([0, 0, 3, 2, 2, 2])
    rows = hard_responsibilities(indices, 5)
    assert conditional_entropy(rows) == 0.0
    assert mutual_information(rows) == pytest.approx(float(entropy(np.bincount(indices, minlength=5) / 6)))
    # eq. 25: the cross entropy of p(z|i) with r(z) = 1/K, computed term by term, is log K for every input
    cross = [-sum(p * math.log(1 / 5) for p in row) for row in rows]
    assert cross == pytest.approx([math.log(5)] * 6)
    assert information_terms(rows)["dead_codes"] == 2


def test_the_vdib_rate_with_a_uniform_prior_is_log_k_for_any_soft_encoder_too():
    """Eq. 25 holds by construction for every normalised p(z|i), hard or soft: page 08 no longer lists it as a
    finding, and this test keeps it (term by term, against information_terms' log_K and its VIB rate)."""
    rows = np.random.default_rng(0).dirichlet(np.full(7, 0.3), size=50)
    cross = [-sum(p * math.log(1 / 7) for p in row) for row in rows]
    assert cross == pytest.approx([math.log(7)] * 50)
    terms = information_terms(rows)
    assert terms["log_K"] == pytest.approx(math.log(7))
    h = -np.mean([sum(p * math.log(p) for p in row if p > 0) for row in rows])
    assert terms["KL(p(Z|I)||r)"] == pytest.approx(math.log(7) - h)


@pytest.mark.parametrize("rows, match", [
    (np.array([[0.5, 0.6]]), "every row must be a probability distribution"),
    (np.array([[1.0], [1.0]]), "K >= 2"),
    (np.array([[np.nan, 1.0]]), "every row must be a probability distribution"),
])
def test_bad_responsibilities_are_errors(rows, match):
    with pytest.raises(ValueError, match=match):
        information_terms(rows)


def test_em_samples_follow_the_responsibilities_at_any_temperature():
    """Gumbel-max draws, averaged over many passes, give the mean codeword sum_k p(k|z) mu_k (Monte Carlo),
    with p(k|z) = softmax(-||z - mu_k||^2 / tau) computed by brute force."""
    torch.manual_seed(0)
    em = EMVectorQuantizer(num_codes=4, code_dim=2, num_samples=50, decay=1 - 1e-12, temperature=0.3).train()
    z = torch.tensor([[0.2, -0.1]])
    codebook = em.codebook.clone().double()
    d2 = ((z.double() - codebook) ** 2).sum(-1)
    p = torch.softmax(-d2 / 0.3, -1)
    generator = torch.Generator().manual_seed(1)
    mean = torch.stack([em(z, None, em.sample_noise(1, generator))[0] for _ in range(400)]).mean(0)
    spread = (((codebook - p @ codebook) ** 2).sum(-1) @ p).sqrt() / math.sqrt(400 * 50)
    assert (mean.double() - p @ codebook).norm() < 4 * spread
    _, aux = em.eval()(z)
    torch.testing.assert_close(aux["responsibilities"].double(), p.unsqueeze(0), rtol=1e-5, atol=1e-6)


def test_the_sampled_m_step_uses_the_sampled_codes():
    torch.manual_seed(0)
    em = EMVectorQuantizer(num_codes=3, code_dim=2, num_samples=4, decay=0.5).train()
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(2))
    noise = em.sample_noise(5, torch.Generator().manual_seed(3))
    mu0, count0, sum0 = em.codebook.clone(), em.ema_count.clone(), em.ema_sum.clone()
    d2 = ((z[:, None] - mu0[None]) ** 2).sum(-1)
    samples = (torch.log_softmax(-d2, -1)[:, None, :] + noise).argmax(-1)  # (5, 4)
    freq = torch.stack([torch.bincount(s, minlength=3) for s in samples]).float() / 4  # (5, 3)
    em(z, None, noise)
    count = 0.5 * count0 + 0.5 * freq.sum(0)
    total = 0.5 * sum0 + 0.5 * freq.t() @ z
    n = count.sum()
    torch.testing.assert_close(em.codebook, total / ((count + 1e-5) / (n + 3e-5) * n).unsqueeze(-1))


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_codes=1), "num_codes=1 is not allowed: num_codes must be an integer >= 2"),
    (dict(num_samples=0), "num_samples=0 is not allowed"),
    (dict(temperature=0.0), "temperature=0.0 is not allowed: temperature must be a number > 0"),
    (dict(decay=1.0), r"decay=1.0 is not allowed: decay must be a number in \(0, 1\)"),
    (dict(decay=0), r"decay=0 is not allowed"),
    (dict(em_update="mean"), "em_update='mean' is not allowed"),
])
def test_bad_em_parameters_are_errors_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EMVectorQuantizer(**{"num_codes": 4, "code_dim": 2, **kwargs})


def test_bad_em_config_values_are_errors_naming_them():
    with pytest.raises(ValueError, match="num_codes=1 is not allowed for em_vq"):
        RunConfig(bottleneck="em_vq", num_codes=1)
    with pytest.raises(ValueError, match="temperature=-1 is not allowed"):
        RunConfig(temperature=-1)
    with pytest.raises(ValueError, match="decay=1.5 is not allowed"):
        RunConfig(decay=1.5)


def test_paired_difference_interval_covers_a_known_shift_and_excludes_zero_only_when_it_should():
    from vqlib.evaluation import paired_difference

    rng = np.random.default_rng(0)
    base = rng.normal(size=8)
    clear = paired_difference(base + 1.0 + 0.01 * rng.normal(size=8), base)
    assert clear["shown"] and 0.95 < clear["low"] < clear["difference"] < clear["high"] < 1.05 and clear["pairs"] == 8
    # coverage: over simulated experiments with a true shift of 0.3, the 95 % interval holds it most of the time
    covered = [(lambda r: r["low"] < 0.3 < r["high"])(paired_difference(base + 0.3 + rng.normal(size=8), base,
                                                                        n_resamples=1000, seed=i)) for i in range(200)]
    assert 0.85 <= np.mean(covered) <= 0.99
    same = paired_difference(base, base + np.array([0.1, -0.1] * 4))
    assert not same["shown"]
    assert paired_difference([1.0, np.nan], [0.0, 0.0])["pairs"] == 1


def _direct(rows):
    """H(Z), H(Z|I), I(I;Z), perplexity and codes holding >= 1 input's mass, written out with numpy."""
    marginal = rows.mean(0)
    h_z = -np.sum(marginal[marginal > 0] * np.log(marginal[marginal > 0]))
    logs = np.log(np.where(rows > 0, rows, 1.0))
    h_z_given_i = -np.mean(np.sum(rows * logs, 1))
    return {"H(Z)": h_z, "H(Z|I)": h_z_given_i, "I(I;Z)": h_z - h_z_given_i, "perplexity": np.exp(h_z),
            "codes_used": int(np.sum(marginal * len(rows) >= 1 - 1e-9))}


def test_hard_and_soft_side_by_side_match_a_direct_computation():
    rows = np.array([[0.6, 0.3, 0.1, 0.0], [0.5, 0.4, 0.1, 0.0], [0.1, 0.2, 0.7, 0.0], [0.2, 0.7, 0.05, 0.05]])
    hard = np.eye(4)[[0, 0, 2, 1]]  # the argmax of each row
    result = hard_and_soft(rows)
    for kind, p in (("soft", rows), ("hard", hard)):
        for key, value in _direct(p).items():
            assert result[f"{key}_{kind}"] == pytest.approx(value, rel=1e-12, abs=1e-12), (key, kind)
    # the two readings differ for soft rows: hard usage has no conditional entropy and a lower perplexity here
    assert result["H(Z|I)_hard"] == 0 and result["H(Z|I)_soft"] > 0.5
    assert result["perplexity_soft"] > result["perplexity_hard"]
    # by hand: the columns hold 1.4, 1.6, 0.95 and 0.05 inputs of mass; the argmax uses codes 0, 1 and 2
    assert result["codes_used_hard"] == 3 and result["codes_used_soft"] == 2


def _quantizer(name, seed=0, **kwargs):
    torch.manual_seed(seed)
    config = RunConfig(bottleneck=name, mlp_hidden="16", code_dim=2, num_codes=4, **kwargs)
    return Autoencoder.from_config(config, (16,)).eval()


def _binary_images(n=30, seed=0):
    return (torch.rand(n, 16, generator=torch.Generator().manual_seed(seed)) < 0.4).float()


def _brute_force_rows(model, x, temperature=None):
    """p(k | i) codeword by codeword: one-hot at the nearest (vq) or softmax(-d^2 / tau) (em_vq)."""
    with torch.no_grad():
        z = model.encode(x).double()
        codebook = model.bottleneck.codebook.double()
    d2 = np.array([[float(((z[i] - codebook[k]) ** 2).sum()) for k in range(len(codebook))] for i in range(len(z))])
    if temperature is None:
        return np.eye(len(codebook))[d2.argmin(1)]
    weights = np.exp(-(d2 - d2.min(1, keepdims=True)) / temperature)
    return weights / weights.sum(1, keepdims=True)


def test_measure_reads_vq_and_em_both_ways_with_the_same_estimator():
    x = _binary_images(60)
    data = type("Data", (), {"x_test": x})()
    vq = measure(_quantizer("vq"), data)
    for key in ("H(Z)", "H(Z|I)", "I(I;Z)", "perplexity", "codes_used"):
        assert vq[f"{key}_hard"] == pytest.approx(vq[f"{key}_soft"], abs=1e-12)  # one-hot rows: one reading
    assert vq["perplexity"] == pytest.approx(vq["perplexity_hard"])  # the existing key is unchanged
    model = _quantizer("em_vq", temperature=0.5)
    em = measure(model, data)
    rows = _brute_force_rows(model, x, temperature=0.5)
    for kind, p in (("soft", rows), ("hard", np.eye(4)[rows.argmax(1)])):
        for key, value in _direct(p).items():
            assert em[f"{key}_{kind}"] == pytest.approx(value, rel=1e-5, abs=1e-6), (key, kind)
    assert em["perplexity"] == pytest.approx(em["perplexity_soft"])  # the existing key: EM's soft reading
    assert em["perplexity_soft"] != pytest.approx(em["perplexity_hard"], rel=1e-3)


def _bernoulli_nll(model, x, codeword):
    with torch.no_grad():
        p = torch.sigmoid(model.decode(codeword[None].float()))[0].double()
    x = x.double()
    return float(-(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum())


@pytest.mark.parametrize("name, temperature", [("vq", None), ("em_vq", 0.5), ("em_vq", 5.0)])
def test_vib_loss_matches_eq_18_computed_by_brute_force(name, temperature):
    """(1/N) sum_i sum_k p(k|i) [-log q(x_i | mu_k)] + beta (log K - H(Z|I)), every term in a loop."""
    model = _quantizer(name, **({"temperature": temperature} if temperature else {}))
    x, beta = _binary_images(10), 0.7
    rows = _brute_force_rows(model, x, temperature)
    codebook = model.bottleneck.codebook.detach()
    distortion = np.mean([sum(rows[i, k] * _bernoulli_nll(model, x[i], codebook[k]) for k in range(4))
                          for i in range(len(x))])
    h = -np.mean([sum(p * math.log(p) for p in row if p > 0) for row in rows])
    result = vib_loss(model, x, beta=beta, batch_size=4)
    assert result["distortion"] == pytest.approx(distortion, rel=1e-5)
    assert result["rate"] == pytest.approx(math.log(4) - h, abs=1e-6)
    assert result["L_VIB"] == pytest.approx(distortion + beta * (math.log(4) - h), rel=1e-5)
    if name == "vq":
        assert result["rate"] == pytest.approx(math.log(4))  # H(Z|I) = 0: the full log K
    else:
        assert result["rate"] < math.log(4) - 0.05  # soft rows pay less


def test_vib_loss_refuses_models_whose_decoder_gets_no_codeword():
    x = _binary_images(4)
    with pytest.raises(ValueError, match="does not receive a codeword"):
        vib_loss(_quantizer("soft_vq"), x)
    with pytest.raises(ValueError, match="no codebook"):
        vib_loss(_quantizer("vae"), x)
    with pytest.raises(ValueError, match="beta=-1 is not allowed"):
        vib_loss(_quantizer("vq"), x, beta=-1)
