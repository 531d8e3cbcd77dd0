"""Tests for vqlib.bottlenecks.

The maths is checked against independent computations written here: brute-force float64 python
loops over rows and codewords, closed forms, finite differences of those brute-force functions and
Monte Carlo estimates with a tolerance taken from their standard error. The library's own output is
never the reference.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vqlib
from vqlib.bottlenecks import (
    BOTTLENECKS,
    VAE,
    CodebookUsage,
    EMVectorQuantizer,
    InformationDropout,
    SoftVectorQuantizer,
    VectorQuantizer,
    make_bottleneck,
    posterior_mean,
    squared_distances,
)

# ---------------------------------------------------------------------------------------------
# independent references (float64, python loops)
# ---------------------------------------------------------------------------------------------


def _f64(x) -> np.ndarray:
    return (x.detach().cpu().double().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float64))


def _logsumexp(values) -> float:
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def _brute_sq_dist(z_row, mu) -> float:
    """||z - mu||^2 by a Python loop over coordinates."""
    return sum((float(a) - float(b)) ** 2 for a, b in zip(z_row, mu))


def brute_posterior(z, codebook, sigma):
    """Eq. 4-7 by hand: Gaussian densities N(z; mu_k, sigma_k^2 I) (eq. 5, with (2 pi)^(-d/2) sigma_k^(-d)),
    uniform prior 1/K, Bayes' rule in log space with a hand-written log-sum-exp.

    z (b, d), codebook (K, d), sigma a scalar, (K,) or (b, K) -> (z_hat (b, d), responsibilities (b, K)).
    """
    z, codebook = _f64(z), _f64(codebook)
    b, d = z.shape
    K = codebook.shape[0]
    sigma = np.broadcast_to(_f64(sigma), (b, K))
    z_hat, resp = np.zeros((b, d)), np.zeros((b, K))
    for i in range(b):
        log_joint = []
        for k in range(K):
            s = float(sigma[i, k])
            dist = _brute_sq_dist(z[i], codebook[k])
            log_density = -0.5 * dist / s**2 - d * math.log(s) - 0.5 * d * math.log(2 * math.pi)
            log_joint.append(math.log(1.0 / K) + log_density)
        log_evidence = _logsumexp(log_joint)
        for k in range(K):
            resp[i, k] = math.exp(log_joint[k] - log_evidence)
            z_hat[i] += resp[i, k] * codebook[k]
    return z_hat, resp


def brute_published(z, codebook, log_sigma):
    """The authors' notebook formula written out: smooth = 1/exp(log_sigma)^2,
    w_k = exp(-0.5 smooth_k dist_k) / sqrt(smooth_k), normalised over k."""
    z, codebook = _f64(z), _f64(codebook)
    b, d = z.shape
    K = codebook.shape[0]
    log_sigma = np.broadcast_to(_f64(log_sigma), (b, K))
    z_hat, resp = np.zeros((b, d)), np.zeros((b, K))
    for i in range(b):
        w = []
        for k in range(K):
            smooth = 1.0 / math.exp(float(log_sigma[i, k])) ** 2
            dist = _brute_sq_dist(z[i], codebook[k])
            w.append(math.exp(-0.5 * smooth * dist) / math.sqrt(smooth))
        for k in range(K):
            resp[i, k] = w[k] / sum(w)
            z_hat[i] += resp[i, k] * codebook[k]
    return z_hat, resp


def brute_nearest(z, codebook):
    """Eq. 1 by hand: index and squared distance of the nearest codeword for every row."""
    z, codebook = _f64(z), _f64(codebook)
    indices, dists = [], []
    for row in z:
        best_k, best = None, math.inf
        for k, mu in enumerate(codebook):
            dist = sum((float(a) - float(c)) ** 2 for a, c in zip(row, mu))
            if dist < best:
                best_k, best = k, dist
        indices.append(best_k)
        dists.append(best)
    return np.array(indices), np.array(dists)


def finite_difference(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar function f at x (float64)."""
    x = x.astype(np.float64).copy()
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + h
        up = f(x)
        x[idx] = old - h
        down = f(x)
        x[idx] = old
        grad[idx] = (up - down) / (2 * h)
    return grad


def entropy_by_hand(indices, K) -> float:
    counts = [0] * K
    for i in indices:
        counts[int(i)] += 1
    n = sum(counts)
    return -sum(c / n * math.log(c / n) for c in counts if c)


def soft_vq(seed=0, **kwargs) -> SoftVectorQuantizer:
    torch.manual_seed(seed)
    kwargs = {"num_codes": 6, "code_dim": 3, "noise_std": 0.0, "sigma_source": "codeword", **kwargs}
    return SoftVectorQuantizer(**kwargs)


def set_params(module, **values):
    with torch.no_grad():
        for name, value in values.items():
            getattr(module, name).copy_(torch.as_tensor(value, dtype=torch.float32))


# ---------------------------------------------------------------------------------------------
# 0. squared distances (value and gradients)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset, spread", [(0.0, 1.0), (1e3, 1e-3), (1e2, 10.0)])
def test_squared_distances_match_brute_force(offset, spread):
    """Codes near the origin, codes 1e3 from it and 1e-3 apart (where |z|^2 - 2 z.mu + |mu|^2
    cancels catastrophically in float32), and a wide spread: relative error at float32 level."""
    gen = torch.Generator().manual_seed(11)
    z = torch.randn(7, 5, generator=gen) * spread + offset
    codebook = torch.randn(9, 5, generator=gen) * spread + offset
    got = squared_distances(z, codebook)
    assert got.dtype == torch.float32 and got.shape == (7, 9)
    expected = np.array([[_brute_sq_dist(row, mu) for mu in _f64(codebook)] for row in _f64(z)])
    np.testing.assert_allclose(_f64(got), expected, rtol=1e-6, atol=0)
    assert (squared_distances(z, z) >= 0).all()  # rounding never makes a distance negative


def test_squared_distances_gradients_match_finite_differences():
    gen = torch.Generator().manual_seed(12)
    z, codebook = torch.randn(4, 3, generator=gen, dtype=torch.float64), torch.randn(5, 3, generator=gen, dtype=torch.float64)
    weights = torch.randn(4, 5, generator=gen, dtype=torch.float64)  # a generic upstream gradient
    z_, codebook_ = z.clone().requires_grad_(), codebook.clone().requires_grad_()
    (squared_distances(z_, codebook_) * weights).sum().backward()

    def loss(zv, cv):
        return sum(float(weights[i, k]) * _brute_sq_dist(zv[i], cv[k]) for i in range(4) for k in range(5))

    np.testing.assert_allclose(_f64(z_.grad), finite_difference(lambda v: loss(v, _f64(codebook)), _f64(z)), rtol=1e-6)
    np.testing.assert_allclose(_f64(codebook_.grad), finite_difference(lambda v: loss(_f64(z), v), _f64(codebook)),
                               rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# 1-2. posterior_mean (eq. 4-7)
# ---------------------------------------------------------------------------------------------


def _sigma(kind: str, b: int, K: int, gen: torch.Generator, low=0.4, high=2.0):
    if kind == "scalar":
        return 0.7
    shape = (K,) if kind == "per_codeword" else (b, K)
    return low + (high - low) * torch.rand(shape, generator=gen)


@pytest.mark.parametrize("sigma_kind", ["scalar", "per_codeword", "per_input"])
@pytest.mark.parametrize("d", [1, 5])
def test_posterior_mean_matches_brute_force(sigma_kind, d):
    gen = torch.Generator().manual_seed(d)
    b, K = 12, 7
    z, codebook = torch.randn(b, d, generator=gen), torch.randn(K, d, generator=gen)
    sigma = _sigma(sigma_kind, b, K, gen)
    z_hat, resp = posterior_mean(z, codebook, sigma)
    expected_z_hat, expected_resp = brute_posterior(z, codebook, sigma)
    assert z_hat.shape == (b, d) and resp.shape == (b, K)
    np.testing.assert_allclose(_f64(resp), expected_resp, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_f64(z_hat), expected_z_hat, rtol=1e-4, atol=1e-5)
    # the responsibilities are not trivially one-hot or uniform here: the test has teeth
    assert 0.05 < expected_resp.max(1).mean() < 0.95


@pytest.mark.parametrize("sigma_kind", ["scalar", "per_codeword", "per_input"])
@pytest.mark.parametrize("offset, sigma_scale", [(1e3, 1.0), (1e3, 1e-3), (0.0, 1e-3), (1e3, 1e3)])
def test_posterior_mean_extreme_inputs_stay_finite(sigma_kind, offset, sigma_scale):
    """Codes 1e3 away from z and/or tiny sigma: no NaN/inf, responsibilities sum to 1, and the
    result still matches the float64 brute force (which uses its own log-sum-exp)."""
    gen = torch.Generator().manual_seed(1)
    b, K, d = 10, 6, 4
    z = torch.randn(b, d, generator=gen)
    codebook = torch.randn(K, d, generator=gen) + offset
    sigma = _sigma(sigma_kind, b, K, gen) if sigma_kind != "scalar" else 1.0
    sigma = sigma * sigma_scale
    z_hat, resp = posterior_mean(z, codebook, sigma)
    assert torch.isfinite(z_hat).all() and torch.isfinite(resp).all()
    torch.testing.assert_close(resp.sum(-1), torch.ones(b), atol=1e-5, rtol=0)
    expected_z_hat, expected_resp = brute_posterior(z, codebook, sigma)
    scale = max(1.0, offset)
    np.testing.assert_allclose(_f64(z_hat), expected_z_hat, rtol=1e-5, atol=2e-4 * scale)
    np.testing.assert_allclose(_f64(resp), expected_resp, atol=1e-3)


def test_posterior_mean_rejects_non_positive_sigma():
    with pytest.raises(ValueError, match="sigma"):
        posterior_mean(torch.zeros(2, 3), torch.ones(4, 3), torch.tensor([1.0, 0.0, 1.0, 1.0]))


@pytest.mark.parametrize("sigma", [1e-3, 1e-4])
def test_posterior_mean_tends_to_hard_vq_as_sigma_vanishes(sigma):
    gen = torch.Generator().manual_seed(2)
    z, codebook = torch.randn(50, 3, generator=gen), torch.randn(9, 3, generator=gen)
    nearest, _ = brute_nearest(z, codebook)
    z_hat, resp = posterior_mean(z, codebook, sigma)
    np.testing.assert_allclose(_f64(z_hat), _f64(codebook)[nearest], atol=1e-5)
    np.testing.assert_array_equal(resp.argmax(-1).numpy(), nearest)


@pytest.mark.parametrize("sigma_kind", ["scalar", "per_codeword"])
def test_posterior_mean_tends_to_codebook_mean_as_sigma_grows(sigma_kind):
    gen = torch.Generator().manual_seed(3)
    z, codebook = torch.randn(20, 4, generator=gen), torch.randn(8, 4, generator=gen)
    sigma = 1e4 if sigma_kind == "scalar" else torch.full((8,), 1e4)
    z_hat, resp = posterior_mean(z, codebook, sigma)
    expected = np.tile(_f64(codebook).mean(0), (20, 1))
    np.testing.assert_allclose(_f64(z_hat), expected, atol=1e-5)
    np.testing.assert_allclose(_f64(resp), 1 / 8, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# 3. VectorQuantizer (eq. 1, eq. 27 terms)
# ---------------------------------------------------------------------------------------------


def _vq(seed=0, **kwargs):
    torch.manual_seed(seed)
    return VectorQuantizer(**{"num_codes": 10, "code_dim": 4, **kwargs})


def test_vq_picks_brute_force_nearest_codeword():
    vq = _vq()
    z_e = torch.randn(64, 4, generator=torch.Generator().manual_seed(4)) * 0.5
    z_q, aux = vq(z_e)
    nearest, _ = brute_nearest(z_e, vq.codebook)
    np.testing.assert_array_equal(aux["indices"].numpy(), nearest)
    np.testing.assert_allclose(_f64(z_q), _f64(vq.codebook)[nearest], atol=1e-6)
    assert len(set(nearest.tolist())) > 3  # several codewords are in play


def test_vq_gradient_passes_straight_through_to_z_e():
    vq = _vq()
    gen = torch.Generator().manual_seed(5)
    z_e = torch.randn(16, 4, generator=gen).requires_grad_()
    w = torch.randn(16, 4, generator=gen)
    z_q, _ = vq(z_e)
    (w * z_q).sum().backward()
    torch.testing.assert_close(z_e.grad, w, rtol=0, atol=0)
    assert vq.codebook.grad is None  # the decoder input carries no gradient to the codebook


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("beta", [0.25, 2.0])
def test_vq_latent_terms_and_their_gradients(reduction, beta):
    vq = _vq(beta=beta, reduction=reduction)
    gen = torch.Generator().manual_seed(6)
    b, d = 32, 4
    z_e = (torch.randn(b, d, generator=gen) * 0.5).requires_grad_()
    _, aux = vq(z_e)
    nearest, dists = brute_nearest(z_e, vq.codebook)
    norm = b if reduction == "sum" else b * d
    expected_term = dists.sum() / norm
    assert aux["codebook"].item() == pytest.approx(expected_term, rel=1e-5)
    assert aux["commitment"].item() == pytest.approx(expected_term, rel=1e-5)
    assert aux["loss"].item() == pytest.approx((1 + beta) * expected_term, rel=1e-5)

    aux["loss"].backward()
    z, codebook = _f64(z_e), _f64(vq.codebook)
    # codebook: only the codebook term ||sg(z_e) - z_q||^2 reaches it
    expected_codebook_grad = np.zeros_like(codebook)
    for i, k in enumerate(nearest):
        expected_codebook_grad[k] += 2 * (codebook[k] - z[i]) / norm
    np.testing.assert_allclose(_f64(vq.codebook.grad), expected_codebook_grad, atol=1e-6)
    # encoder: only the commitment term beta ||z_e - sg(z_q)||^2 reaches it
    expected_z_grad = beta * 2 * (z - codebook[nearest]) / norm
    np.testing.assert_allclose(_f64(z_e.grad), expected_z_grad, atol=1e-6)


def test_vq_commitment_term_sends_no_gradient_to_codebook():
    vq = _vq()
    z_e = torch.randn(8, 4, generator=torch.Generator().manual_seed(7)).requires_grad_()
    _, aux = vq(z_e)
    aux["commitment"].backward()
    assert vq.codebook.grad is None or torch.count_nonzero(vq.codebook.grad) == 0
    assert torch.count_nonzero(z_e.grad) > 0


# ---------------------------------------------------------------------------------------------
# 4. SoftVectorQuantizer module
# ---------------------------------------------------------------------------------------------


def test_soft_vq_codeword_sigma_equals_brute_force_posterior_mean():
    sq = soft_vq(noise_std=0.3, sigma_source="codeword").eval()
    gen = torch.Generator().manual_seed(8)
    set_params(sq, log_sigma=torch.linspace(-0.7, 0.6, 6))
    z_e = torch.randn(20, 3, generator=gen) * 0.6
    z_q, aux = sq(z_e)
    expected_z_hat, expected_resp = brute_posterior(z_e, sq.codebook, np.exp(_f64(sq.log_sigma)))
    np.testing.assert_allclose(_f64(z_q), expected_z_hat, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_f64(aux["responsibilities"]), expected_resp, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(aux["indices"].numpy(), expected_resp.argmax(1))
    assert aux["mean_sigma"].item() == pytest.approx(np.exp(_f64(sq.log_sigma)).mean(), rel=1e-5)
    # eq. 27 latent terms: both are mean_i ||z_e - z_hat||^2 in the forward pass
    term = ((_f64(z_e) - expected_z_hat) ** 2).sum(1).mean()
    assert aux["codebook"].item() == pytest.approx(term, rel=1e-4)
    assert aux["loss"].item() == pytest.approx((1 + float(sq.beta)) * term, rel=1e-4)
    assert sq.beta == 2.5  # the default: the published code's commitment weight (the paper gives none)


def test_soft_vq_encoder_sigma_reads_extra_as_log_sigma():
    sq = soft_vq(sigma_source="encoder").eval()
    assert sq.extra_dim == 6 and sq.log_sigma is None
    gen = torch.Generator().manual_seed(9)
    z_e = torch.randn(15, 3, generator=gen) * 0.6
    extra = torch.rand(15, 6, generator=gen) * 1.4 - 0.9  # log sigma in [-0.9, 0.5]
    z_q, _ = sq(z_e, extra)
    expected_z_hat, _ = brute_posterior(z_e, sq.codebook, np.exp(_f64(extra)))
    np.testing.assert_allclose(_f64(z_q), expected_z_hat, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="extra"):
        sq(z_e, None)


def test_soft_vq_straight_through_gradient_is_identity():
    sq = soft_vq(gradient="straight_through", noise_std=0.2)  # training mode, with noise
    gen = torch.Generator().manual_seed(10)
    z_e = torch.randn(12, 3, generator=gen).requires_grad_()
    w = torch.randn(12, 3, generator=gen)
    z_q, _ = sq(z_e)
    (w * z_q).sum().backward()
    torch.testing.assert_close(z_e.grad, w, rtol=0, atol=0)
    assert sq.codebook.grad is None and sq.log_sigma.grad is None


@pytest.mark.parametrize("sigma_source", ["codeword", "encoder"])
def test_soft_vq_soft_gradient_matches_finite_differences(sigma_source):
    """gradient="soft": d sum(w * z_hat) reaches z_e, the codebook and log sigma through eq. 6-7."""
    b, K, d = 3, 4, 2
    sq = soft_vq(num_codes=K, code_dim=d, gradient="soft", sigma_source=sigma_source).eval()
    gen = torch.Generator().manual_seed(11)
    set_params(sq, codebook=torch.randn(K, d, generator=gen) * 0.7)
    log_sigma = torch.rand(K if sigma_source == "codeword" else (b, K), generator=gen) - 0.5
    if sigma_source == "codeword":
        set_params(sq, log_sigma=log_sigma)
        log_sigma_leaf, extra = sq.log_sigma, None
    else:
        extra = log_sigma.clone().requires_grad_()
        log_sigma_leaf = extra
    z_e = (torch.randn(b, d, generator=gen) * 0.7).requires_grad_()
    w = torch.randn(b, d, generator=gen)
    z_q, _ = sq(z_e, extra)
    (w * z_q).sum().backward()

    z0, c0, ls0, w0 = _f64(z_e), _f64(sq.codebook), _f64(log_sigma_leaf), _f64(w)

    def objective(z, c, ls):
        return float((w0 * brute_posterior(z, c, np.exp(ls))[0]).sum())

    for got, expected in [
        (z_e.grad, finite_difference(lambda z: objective(z, c0, ls0), z0)),
        (sq.codebook.grad, finite_difference(lambda c: objective(z0, c, ls0), c0)),
        (log_sigma_leaf.grad, finite_difference(lambda ls: objective(z0, c0, ls), ls0)),
    ]:
        assert got is not None and np.abs(expected).max() > 1e-2
        np.testing.assert_allclose(_f64(got), expected, rtol=1e-3, atol=1e-4)


def test_soft_vq_codebook_term_gradient_matches_finite_differences():
    """eq. 27 with straight-through: ||sg(z_e') - z_hat||^2 trains the codebook and the sigmas,
    beta ||z_e' - sg(z_hat)||^2 trains only the encoder."""
    b, K, d = 4, 3, 2
    sq = soft_vq(num_codes=K, code_dim=d, beta=0.5).eval()
    gen = torch.Generator().manual_seed(12)
    set_params(sq, codebook=torch.randn(K, d, generator=gen) * 0.7, log_sigma=torch.rand(K, generator=gen) - 0.5)
    z_e = (torch.randn(b, d, generator=gen) * 0.7).requires_grad_()
    _, aux = sq(z_e)
    aux["codebook"].backward(retain_graph=True)
    z0, c0, ls0 = _f64(z_e), _f64(sq.codebook), _f64(sq.log_sigma)

    def codebook_term(c, ls):
        return float(((z0 - brute_posterior(z0, c, np.exp(ls))[0]) ** 2).sum(1).mean())

    np.testing.assert_allclose(_f64(sq.codebook.grad), finite_difference(lambda c: codebook_term(c, ls0), c0),
                               rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(_f64(sq.log_sigma.grad), finite_difference(lambda ls: codebook_term(c0, ls), ls0),
                               rtol=1e-3, atol=1e-5)

    sq.zero_grad()
    z_e.grad = None
    aux["commitment"].backward()
    z_hat = brute_posterior(z0, c0, np.exp(ls0))[0]
    np.testing.assert_allclose(_f64(z_e.grad), 2 * (z0 - z_hat) / b, rtol=1e-4, atol=1e-6)
    for p in (sq.codebook, sq.log_sigma):
        assert p.grad is None or torch.count_nonzero(p.grad) == 0


def _recover_noisy_code(responsibilities: torch.Tensor) -> np.ndarray:
    """With codewords mu_0 = 0, mu_j = e_j and sigma = 1, eq. 7 gives
    log p(mu_j | z') - log p(mu_0 | z') = -(|z' - e_j|^2 - |z'|^2) / 2 = z'_j - 1/2, so the
    (noisy) input of the estimator can be read back from the responsibilities."""
    log_r = np.log(_f64(responsibilities))
    return log_r[:, 1:] - log_r[:, :1] + 0.5


@pytest.mark.parametrize("noise_std", [0.3, 1.0])
def test_soft_vq_noise_only_in_training_with_requested_std(noise_std):
    d, b = 4, 20000
    sq = soft_vq(num_codes=d + 1, code_dim=d, noise_std=noise_std)
    set_params(sq, codebook=torch.cat([torch.zeros(1, d), torch.eye(d)]), log_sigma=torch.zeros(d + 1))
    z_e = torch.rand(b, d, generator=torch.Generator().manual_seed(13)) * 2 - 1

    sq.eval()
    _, aux = sq(z_e)
    np.testing.assert_allclose(_recover_noisy_code(aux["responsibilities"]), _f64(z_e), atol=1e-4)

    torch.manual_seed(14)
    sq.train()
    _, aux = sq(z_e)
    noise = _recover_noisy_code(aux["responsibilities"]) - _f64(z_e)
    n = noise.size
    assert abs(noise.mean()) < 5 * noise_std / math.sqrt(n)
    assert noise.std() == pytest.approx(noise_std, rel=0.03)


@pytest.mark.parametrize("d", [1, 3])
def test_soft_vq_published_formula(d):
    K, b = 5, 16
    sq = soft_vq(num_codes=K, code_dim=d, formula="published").eval()
    gen = torch.Generator().manual_seed(15 + d)
    set_params(sq, log_sigma=torch.linspace(-0.6, 0.6, K))
    z_e = torch.randn(b, d, generator=gen) * 0.6
    z_q, aux = sq(z_e)
    expected, expected_resp = brute_published(z_e, sq.codebook, _f64(sq.log_sigma))
    np.testing.assert_allclose(_f64(z_q), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_f64(aux["responsibilities"]), expected_resp, rtol=1e-4, atol=1e-6)
    # ... which is not the posterior of eq. 7 when the sigmas differ: its weights carry sigma_k^(+1)
    # where the Gaussian needs sigma_k^(-d)
    paper, _ = brute_posterior(z_e, sq.codebook, np.exp(_f64(sq.log_sigma)))
    assert np.abs(expected - paper).max() > 1e-2
    # with equal sigmas the normalisers cancel and both formulas agree
    set_params(sq, log_sigma=torch.full((K,), -0.3))
    z_q_equal, _ = sq(z_e)
    paper_equal, _ = brute_posterior(z_e, sq.codebook, math.exp(-0.3))
    np.testing.assert_allclose(_f64(z_q_equal), paper_equal, rtol=1e-4, atol=1e-5)


def test_soft_vq_published_formula_underflows_to_nan_as_documented():
    """Documented behaviour of the faithful reproduction: far-away codes give 0/0."""
    sq = soft_vq(formula="published").eval()
    z_q, _ = sq(torch.full((2, 3), 100.0))
    assert torch.isnan(z_q).all()
    z_q_paper, _ = soft_vq(formula="paper").eval()(torch.full((2, 3), 100.0))
    assert torch.isfinite(z_q_paper).all()


def test_soft_vq_gradients_match_finite_differences():
    """Autograd through eq. 4-7 and the eq. 27 codebook term, against finite differences in float64,
    wherever the gradient is a true derivative: the soft z_q = z_hat in z_e, the codebook and the
    sigmas, and the codebook term in the codebook and the sigmas (its z_e is under a stop-gradient)."""
    gen = torch.Generator().manual_seed(22)
    z_e = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    for sigma_source in ("encoder", "codeword"):
        sq = soft_vq(num_codes=4, code_dim=3, sigma_source=sigma_source, gradient="soft", noise_std=0.0).double().eval()
        codebook = sq.codebook.detach().clone().requires_grad_()
        log_sigma = (0.3 * torch.randn(5, 4, generator=gen, dtype=torch.float64) if sigma_source == "encoder"
                     else torch.linspace(-0.4, 0.3, 4, dtype=torch.float64)).requires_grad_()

        def output(z_e, codebook, log_sigma, term):
            z_q, aux = torch.func.functional_call(
                sq, {"codebook": codebook, **({} if sigma_source == "encoder" else {"log_sigma": log_sigma})},
                (z_e, log_sigma if sigma_source == "encoder" else None))
            return z_q if term is None else aux[term]

        assert torch.autograd.gradcheck(lambda *t: output(*t, None), (z_e, codebook, log_sigma))
        assert torch.autograd.gradcheck(lambda c, s: output(z_e.detach(), c, s, "codebook"), (codebook, log_sigma))


# ---------------------------------------------------------------------------------------------
# 5. VAE / beta-VAE
# ---------------------------------------------------------------------------------------------


def _vae_inputs(b=4, d=3, seed=16):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=gen), torch.randn(b, d, generator=gen) * 0.8


def test_vae_kl_matches_closed_form():
    mean, log_var = _vae_inputs()
    _, aux = VAE(code_dim=3)(mean, log_var)
    m, lv = _f64(mean), _f64(log_var)
    per_row = []
    for i in range(m.shape[0]):  # KL(N(m, s^2) || N(0, 1)) = log(1/s) + (s^2 + m^2)/2 - 1/2 per dimension
        per_row.append(sum(-0.5 * lv[i, j] + 0.5 * (math.exp(lv[i, j]) + m[i, j] ** 2) - 0.5 for j in range(m.shape[1])))
    assert aux["kl"].item() == pytest.approx(np.mean(per_row), rel=1e-5)
    assert aux["loss"].item() == pytest.approx(np.mean(per_row), rel=1e-5)  # beta = 1


def test_vae_kl_matches_monte_carlo():
    mean, log_var = _vae_inputs()
    _, aux = VAE(code_dim=3)(mean, log_var)
    m, s = _f64(mean), np.exp(0.5 * _f64(log_var))
    rng = np.random.default_rng(0)
    n = 200_000
    samples = []
    for i in range(m.shape[0]):
        z = m[i] + s[i] * rng.standard_normal((n, m.shape[1]))
        log_q = (-0.5 * ((z - m[i]) / s[i]) ** 2 - np.log(s[i]) - 0.5 * np.log(2 * np.pi)).sum(1)
        log_p = (-0.5 * z**2 - 0.5 * np.log(2 * np.pi)).sum(1)
        samples.append(log_q - log_p)
    batch_mean = np.mean(samples, axis=0)  # one MC sample of the batch-averaged KL per draw
    estimate, stderr = batch_mean.mean(), batch_mean.std() / math.sqrt(n)
    assert abs(aux["kl"].item() - estimate) < 5 * stderr + 1e-5
    assert stderr < 0.02  # the check is sharp


@pytest.mark.parametrize("beta", [0.0, 3.0])
def test_vae_beta_scales_the_loss(beta):
    mean, log_var = _vae_inputs()
    _, aux = VAE(code_dim=3, beta=beta)(mean, log_var)
    _, aux1 = VAE(code_dim=3, beta=1.0)(mean, log_var)
    assert aux["loss"].item() == pytest.approx(beta * aux1["kl"].item(), rel=1e-6, abs=1e-9)


def test_beta_vae_default_beta_is_20():
    mean, log_var = _vae_inputs()
    bottleneck = make_bottleneck("beta_vae", code_dim=3)
    assert bottleneck.beta == 20.0
    _, aux = bottleneck(mean, log_var)
    assert aux["loss"].item() == pytest.approx(20 * aux["kl"].item(), rel=1e-6)
    model = vqlib.Autoencoder.from_config(vqlib.RunConfig(bottleneck="beta_vae", code_dim=3), input_shape=(16,))
    assert model.bottleneck.beta == 20.0
    assert make_bottleneck("vae", code_dim=3).beta == 1.0


def test_vae_samples_in_training_and_returns_mean_in_eval():
    b, d = 40000, 3
    mean = torch.tensor([[0.5, -1.0, 2.0]]).expand(b, d)
    log_var = torch.tensor([[0.0, -2.0, 1.0]]).expand(b, d)
    vae = VAE(code_dim=d)
    torch.manual_seed(17)
    z, _ = vae.train()(mean, log_var)
    std = np.exp(0.5 * np.array([0.0, -2.0, 1.0]))
    np.testing.assert_array_less(np.abs(_f64(z).mean(0) - [0.5, -1.0, 2.0]), 5 * std / math.sqrt(b))
    np.testing.assert_allclose(_f64(z).std(0), std, rtol=0.03)
    z_eval, _ = vae.eval()(mean, log_var)
    torch.testing.assert_close(z_eval, mean, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# 6. information dropout
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_alpha", [0.7, 0.3])
def test_info_dropout_kl_matches_formula(max_alpha):
    gen = torch.Generator().manual_seed(18)
    z_e, logits = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen) * 3
    _, aux = InformationDropout(code_dim=4, beta=2.0, max_alpha=max_alpha)(z_e, logits)
    kl_rows = []
    for row in _f64(logits):
        alphas = [0.001 + max_alpha / (1 + math.exp(-x)) for x in row]
        kl_rows.append(sum(-math.log(a / (max_alpha + 0.001)) for a in alphas))
    assert aux["kl"].item() == pytest.approx(np.mean(kl_rows), rel=1e-5)
    assert aux["loss"].item() == pytest.approx(2.0 * np.mean(kl_rows), rel=1e-5)


def test_info_dropout_alpha_bounded_for_huge_logits():
    max_alpha = 0.7
    logits = torch.tensor([[-1e6, -50.0, 0.0, 50.0, 1e6]])
    alpha = vqlib.bottlenecks.information_dropout_alpha(logits, max_alpha)
    assert (alpha >= 0.001).all() and (alpha <= 0.001 + max_alpha + 1e-6).all()
    assert alpha[0, 0].item() == pytest.approx(0.001) and alpha[0, -1].item() == pytest.approx(0.701)
    _, aux = InformationDropout(code_dim=5, max_alpha=max_alpha)(torch.ones(1, 5), logits)
    expected_kl = 2 * -math.log(0.001 / 0.701) + -math.log((0.001 + 0.35) / 0.701)
    assert math.isfinite(aux["kl"].item()) and aux["kl"].item() == pytest.approx(expected_kl, rel=1e-4)


def test_info_dropout_noise_is_log_normal_with_std_alpha():
    b = 20000
    gen = torch.Generator().manual_seed(19)
    z_e = torch.rand(b, 4, generator=gen) * 2 + 0.5  # positive: relu(z_e) = z_e
    logits = torch.tensor([[-3.0, 0.0, 1.5, 40.0]]).expand(b, 4)
    alpha = 0.001 + 0.7 / (1 + np.exp(-np.array([-3.0, 0.0, 1.5, 40.0])))
    layer = InformationDropout(code_dim=4)
    torch.manual_seed(20)
    z_q, _ = layer.train()(z_e, logits)
    log_ratio = np.log(_f64(z_q) / _f64(z_e))
    np.testing.assert_allclose(log_ratio.std(0), alpha, rtol=0.03)
    np.testing.assert_array_less(np.abs(log_ratio.mean(0)), 5 * alpha / math.sqrt(b))
    # negative activations are cut by the ReLU, in training and in evaluation
    z_neg, _ = layer.train()(-z_e[:10], logits[:10])
    assert torch.count_nonzero(z_neg) == 0
    mixed = torch.randn(50, 4, generator=gen)
    z_eval, _ = layer.eval()(mixed, logits[:50])
    torch.testing.assert_close(z_eval, torch.clamp(mixed, min=0), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# 7. em_vq (eq. 28)
# ---------------------------------------------------------------------------------------------


def _em(seed=0, **kwargs):
    torch.manual_seed(seed)
    return EMVectorQuantizer(**{"num_codes": 5, "code_dim": 3, **kwargs})


def _softmax_neg_dist(z, codebook) -> np.ndarray:
    z, codebook = _f64(z), _f64(codebook)
    out = np.zeros((len(z), len(codebook)))
    for i, row in enumerate(z):
        logits = [-sum((a - c) ** 2 for a, c in zip(row, mu)) for mu in codebook]
        lse = _logsumexp(logits)
        out[i] = [math.exp(x - lse) for x in logits]
    return out


def test_em_vq_responsibilities_and_eval_output():
    em = _em().eval()
    z_e = torch.randn(30, 3, generator=torch.Generator().manual_seed(21)) * 0.5
    before = em.codebook.clone()
    z_q, aux = em(z_e)
    expected = _softmax_neg_dist(z_e, em.codebook)
    np.testing.assert_allclose(_f64(aux["responsibilities"]), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(aux["indices"].numpy(), expected.argmax(1))
    np.testing.assert_allclose(_f64(z_q), _f64(em.codebook)[expected.argmax(1)], atol=1e-6)
    torch.testing.assert_close(em.codebook, before, rtol=0, atol=0)  # no update in evaluation
    # commitment loss: beta * mean_i ||z_e - z_q||^2
    commitment = ((_f64(z_e) - _f64(em.codebook)[expected.argmax(1)]) ** 2).sum(1).mean()
    assert aux["loss"].item() == pytest.approx(0.25 * commitment, rel=1e-5)


def test_em_vq_training_step_moves_codebook_to_weighted_mean():
    """decay -> 0: the M-step sets mu_k = sum_i r_ik z_i / sum_i r_ik (Laplace smoothing aside)."""
    em = _em(decay=1e-9, em_update="expected").train()
    z_e = torch.randn(200, 3, generator=torch.Generator().manual_seed(22))
    resp = _softmax_neg_dist(z_e, em.codebook)  # E-step with the codebook before the update
    em(z_e)
    expected = (resp.T @ _f64(z_e)) / resp.sum(0)[:, None]
    np.testing.assert_allclose(_f64(em.codebook), expected, rtol=1e-4, atol=1e-5)


def test_em_vq_ema_update_with_decay():
    """decay = 0.9, initial state count = 1, sum = mu: one step gives
    mu_k = (0.9 mu_k + 0.1 sum_i r_ik z_i) / (0.9 + 0.1 sum_i r_ik)."""
    em = _em(decay=0.9, em_update="expected").train()
    z_e = torch.randn(100, 3, generator=torch.Generator().manual_seed(23))
    mu0 = _f64(em.codebook)
    resp = _softmax_neg_dist(z_e, mu0)
    em(z_e)
    expected = (0.9 * mu0 + 0.1 * resp.T @ _f64(z_e)) / (0.9 + 0.1 * resp.sum(0))[:, None]
    np.testing.assert_allclose(_f64(em.codebook), expected, rtol=1e-4, atol=1e-5)


def test_em_vq_codebook_is_a_buffer_and_gradient_is_straight_through():
    em = _em(num_samples=1).train()
    assert "codebook" in dict(em.named_buffers())
    assert not any(p is em.codebook for p in em.parameters()) and not em.codebook.requires_grad
    gen = torch.Generator().manual_seed(24)
    z_e = torch.randn(10, 3, generator=gen).requires_grad_()
    w = torch.randn(10, 3, generator=gen)
    codebook_before = _f64(em.codebook)
    z_q, _ = em(z_e)
    # one sample per input: every decoder input is one codeword of the pre-update codebook
    dist = ((_f64(z_q)[:, None, :] - codebook_before[None]) ** 2).sum(-1)
    assert (dist.min(1) < 1e-10).all()
    (w * z_q).sum().backward()
    torch.testing.assert_close(z_e.grad, w, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# 8. codebook statistics
# ---------------------------------------------------------------------------------------------


def test_codebook_usage_by_hand():
    usage = CodebookUsage(num_codes=4)
    usage.update(torch.tensor([0, 0, 1, 3]))
    h = -(0.5 * math.log(0.5) + 0.25 * math.log(0.25) + 0.25 * math.log(0.25))  # = 1.5 ln 2
    assert usage.perplexity == pytest.approx(math.exp(h), rel=1e-12)
    assert usage.perplexity == pytest.approx(2**1.5, rel=1e-12)
    assert usage.codes_used == 3


def test_codebook_usage_accumulates_over_batches():
    gen = torch.Generator().manual_seed(25)
    batches = [torch.randint(0, 7, (n,), generator=gen) for n in (5, 13, 1, 30)]
    usage = CodebookUsage(num_codes=10)
    for batch in batches:
        usage.update(batch)
    everything = torch.cat(batches)
    assert usage.perplexity == pytest.approx(math.exp(entropy_by_hand(everything, 10)), rel=1e-12)
    assert usage.codes_used == len(set(everything.tolist()))
    one_pass = CodebookUsage(num_codes=10)
    one_pass.update(everything)
    assert usage.perplexity == pytest.approx(one_pass.perplexity, rel=1e-12)


def test_vq_batch_perplexity():
    vq = _vq(num_codes=4, code_dim=4)
    set_params(vq, codebook=10 * torch.eye(4))
    z_e = 10 * torch.eye(4)[[0, 0, 1, 3]] + 0.1
    _, aux = vq(z_e)
    np.testing.assert_array_equal(aux["indices"].numpy(), [0, 0, 1, 3])
    assert aux["perplexity"].item() == pytest.approx(2**1.5, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# 9. every bottleneck trains end to end
# ---------------------------------------------------------------------------------------------

CONFIGS = [dict(bottleneck=name) for name in ("ae", "noisy_ae", "vae", "beta_vae", "info_dropout", "vq", "em_vq")] + [
    dict(bottleneck="soft_vq", sigma_source=s, gradient=g, formula=f)
    for s in ("codeword", "encoder") for g in ("straight_through", "soft") for f in ("paper", "published")
]


def _config_id(config):
    return "-".join(str(v) for v in config.values())


def _forward_backward(config: dict, device: str):
    torch.manual_seed(0)
    model = vqlib.Autoencoder.from_config(
        vqlib.RunConfig(code_dim=8, num_codes=16, **config), input_shape=(64,)).to(device).train()
    x = torch.rand(16, 64, generator=torch.Generator().manual_seed(1)).to(device)
    logits, z_e, aux = model(x)
    assert logits.shape == (16, 64) and z_e.shape == (16, 8)
    loss = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / 16 + aux["loss"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert params
    for name, p in params:
        assert p.grad is not None, f"{name} receives no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    # the encoder is trained in every model
    assert any(torch.count_nonzero(p.grad) > 0 for n, p in params if n.startswith("encoder"))


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_every_bottleneck_forward_backward_cpu(config):
    _forward_backward(config, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_every_bottleneck_forward_backward_gpu(config):
    _forward_backward(config, "cuda")


def test_configs_cover_every_bottleneck():
    assert {c["bottleneck"] for c in CONFIGS} == set(BOTTLENECKS)


# ---------------------------------------------------------------------------------------------
# 10. bad input gives a clear error
# ---------------------------------------------------------------------------------------------


def test_unknown_bottleneck_name():
    with pytest.raises(ValueError, match="'foo'") as info:
        make_bottleneck("foo", 8, 16)
    for name in BOTTLENECKS:
        assert repr(name) in str(info.value)


@pytest.mark.parametrize("name", ["vq", "soft_vq", "em_vq"])
def test_num_codes_must_be_positive(name):
    with pytest.raises(ValueError, match="num_codes=0"):
        make_bottleneck(name, 8, 0)


@pytest.mark.parametrize("name", list(BOTTLENECKS))
def test_z_e_width_must_be_code_dim(name):
    bottleneck = make_bottleneck(name, 8, 16)
    z_e = torch.zeros(4, 5)
    extra = torch.zeros(4, bottleneck.extra_dim) if bottleneck.extra_dim else None
    with pytest.raises(ValueError) as info:
        bottleneck(z_e, extra)
    message = str(info.value)
    assert "z_e" in message and "(4, 5)" in message and "code_dim=8" in message


def test_negative_noise_level():
    with pytest.raises(ValueError, match="noise_std=-1"):
        make_bottleneck("soft_vq", 8, 16, noise_std=-1)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(num_codes=0), "num_codes=0"),
    (dict(noise_std=-0.5), "noise_std=-0.5"),
    (dict(bottleneck="foo"), "bottleneck='foo'"),
])
def test_run_config_rejects_bad_values(kwargs, needle):
    with pytest.raises(ValueError, match=needle) as info:
        vqlib.RunConfig(**kwargs)
    if "bottleneck" in kwargs:
        assert "'soft_vq'" in str(info.value)
