"""The Bregman-divergence facts behind Theorem 1 (notebook 03), each computed two independent ways.

The divergence comes from autograd of a log-partition function A; the KL from torch.distributions'
closed forms or a brute-force sum over counts; the expectations of eq. 20 from quadrature and Monte
Carlo; the posterior mean from vqlib. Nothing here copies the notebook's code.
"""

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, stats
from torch.distributions import MultivariateNormal, Poisson, kl_divergence

import vqlib

F64 = dict(dtype=torch.float64)


def bregman(log_partition, eta, eta_prime):
    """d_A(eta, eta') = A(eta) - A(eta') - grad A(eta')^T (eta - eta'), the gradient by autograd."""
    eta_prime = eta_prime.detach().requires_grad_(True)
    a_prime = log_partition(eta_prime)
    (grad,) = torch.autograd.grad(a_prime, eta_prime)
    return (log_partition(eta) - a_prime - grad @ (eta - eta_prime)).detach()


def eq23_as_printed(log_partition, eta, eta_prime):
    """-A(eta') + A(eta) - grad A(eta)^T (eta' - eta), eq. 23 as the paper prints it."""
    eta = eta.detach().requires_grad_(True)
    a = log_partition(eta)
    (grad,) = torch.autograd.grad(a, eta)
    return (a - log_partition(eta_prime) - grad @ (eta_prime - eta)).detach()


def poisson_log_partition(eta):
    return torch.exp(eta).sum()


def random_spd(gen, d):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, **F64))
    return (q * (0.3 + 2.7 * torch.rand(d, generator=gen, **F64))) @ q.T


def poisson_kl_by_sum(lam_p, lam):
    """KL(Poisson(lam_p) || Poisson(lam)) summed over counts."""
    n = np.arange(int(lam_p + 40 * np.sqrt(lam_p) + 60))
    log_p = stats.poisson.logpmf(n, lam_p)
    return float(np.sum(np.exp(log_p) * (log_p - stats.poisson.logpmf(n, lam))))


@pytest.mark.parametrize("seed", range(5))
def test_gaussian_kl_is_the_bregman_divergence_of_the_quadratic_log_partition(seed):
    gen = torch.Generator().manual_seed(seed)
    d = 3
    cov = random_spd(gen, d)
    mu, mu_prime = torch.randn(2, d, generator=gen, **F64) * 1.5
    eta, eta_prime = torch.linalg.solve(cov, mu), torch.linalg.solve(cov, mu_prime)
    log_partition = lambda e: 0.5 * e @ cov @ e  # noqa: E731
    kl = kl_divergence(MultivariateNormal(mu_prime, cov), MultivariateNormal(mu, cov))  # KL(p_eta' || p_eta)
    forward, backward = bregman(log_partition, eta, eta_prime), bregman(log_partition, eta_prime, eta)
    mahalanobis = 0.5 * (mu - mu_prime) @ torch.linalg.solve(cov, mu - mu_prime)
    assert torch.allclose(kl, forward, rtol=1e-10, atol=1e-12)
    assert torch.allclose(forward, backward, rtol=1e-10, atol=1e-12), "quadratic A: both orders agree"
    assert torch.allclose(forward, mahalanobis, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_poisson_kl_is_the_bregman_divergence_in_the_stated_order_only(seed):
    gen = torch.Generator().manual_seed(seed)
    eta = torch.randn(1, generator=gen, **F64)
    eta_prime = eta + torch.sign(torch.randn(1, generator=gen, **F64)) * (0.5 + torch.rand(1, generator=gen, **F64))
    kl_sum = poisson_kl_by_sum(float(torch.exp(eta_prime)), float(torch.exp(eta)))
    kl_torch = float(kl_divergence(Poisson(torch.exp(eta_prime)), Poisson(torch.exp(eta))))
    forward = float(bregman(poisson_log_partition, eta, eta_prime))  # d_A(eta, eta')
    backward = float(bregman(poisson_log_partition, eta_prime, eta))  # d_A(eta', eta)
    printed = float(eq23_as_printed(poisson_log_partition, eta, eta_prime))
    assert kl_sum == pytest.approx(kl_torch, rel=1e-9)
    assert kl_sum == pytest.approx(forward, rel=1e-9), "eq. 22: KL(p_eta' || p_eta) = d_A(eta, eta')"
    assert abs(forward - backward) > 1e-3 * forward, "a non-quadratic A: the order of the arguments matters"
    assert abs(kl_sum - printed) > 1e-3 * kl_sum, "eq. 23 as printed is not the KL"


@pytest.mark.parametrize("seed", range(3))
def test_eq23_as_printed_is_not_the_gaussian_kl(seed):
    gen = torch.Generator().manual_seed(seed)
    cov = random_spd(gen, 2)
    eta, eta_prime = torch.randn(2, 2, generator=gen, **F64)
    log_partition = lambda e: 0.5 * e @ cov @ e  # noqa: E731
    kl = bregman(log_partition, eta, eta_prime)
    printed = eq23_as_printed(log_partition, eta, eta_prime)
    assert abs(float(kl - printed)) > 1e-3 * float(kl)


def test_poisson_expected_bregman_is_minimised_by_the_mean_over_the_second_argument_only():
    rng = np.random.default_rng(0)
    etas, weights = rng.normal(0, 0.8, 6), rng.dirichlet(np.ones(6))
    div = lambda a, b: np.exp(a) - np.exp(b) - np.exp(b) * (a - b)  # noqa: E731  (A = exp, one dimension)
    second = optimize.minimize_scalar(lambda e: weights @ div(etas, e), bounds=(-5, 5), method="bounded",
                                      options=dict(xatol=1e-10)).x
    first = optimize.minimize_scalar(lambda e: weights @ div(e, etas), bounds=(-5, 5), method="bounded",
                                     options=dict(xatol=1e-10)).x
    assert second == pytest.approx(weights @ etas, abs=1e-6)
    assert first == pytest.approx(np.log(weights @ np.exp(etas)), abs=1e-6), "the mean in lambda = e^eta"
    assert abs(first - weights @ etas) > 1e-3


def _codebook_1d(seed, num_codes=6):
    rng = np.random.default_rng(seed)
    return np.sort(rng.uniform(-3, 3, num_codes)), rng


def _posterior_mean(z, codebook, sigma):
    z_hat, _ = vqlib.posterior_mean(torch.as_tensor(np.atleast_1d(z))[:, None], torch.as_tensor(codebook)[:, None],
                                    sigma)
    return z_hat[:, 0].numpy()


@pytest.mark.parametrize("seed", range(3))
def test_eq20_and_eq21_differ_for_a_fixed_q(seed):
    """With q = N(m, 1) fixed, eq. 20 averages KL(q || N(mu_k, 1)) over z_e' (a constant), eq. 21 weights it
    by the density at one z_e': different values and different minimisers."""
    codebook, rng = _codebook_1d(seed)
    sigma = 0.7
    z_obs = codebook[0] + sigma * rng.standard_normal()  # near one end: the weights are far from uniform
    kl = lambda m: 0.5 * (m - codebook) ** 2  # noqa: E731  KL(N(m, 1) || N(mu_k, 1)), all k
    draws = codebook[:, None] + sigma * rng.standard_normal((len(codebook), 2000))  # z_e' ~ p(z_e' | mu_k)
    eq20 = lambda m: np.mean([np.mean(np.full(draws.shape[1], kl(m)[k])) for k in range(len(codebook))])  # noqa: E731
    eq21 = lambda m: np.mean(stats.norm.pdf(z_obs, codebook, sigma) * kl(m))  # noqa: E731
    probe = rng.uniform(-3, 3)
    assert abs(eq20(probe) - eq21(probe)) > 1e-3 * eq20(probe)
    bounds = dict(bounds=(-4, 4), method="bounded", options=dict(xatol=1e-10))
    m20, m21 = optimize.minimize_scalar(eq20, **bounds).x, optimize.minimize_scalar(eq21, **bounds).x
    assert m20 == pytest.approx(codebook.mean(), abs=1e-6)
    assert m21 == pytest.approx(_posterior_mean(z_obs, codebook, sigma)[0], abs=1e-6)
    assert abs(m20 - m21) > 1e-2


@pytest.mark.parametrize("seed", range(2))
def test_eq20_is_the_integral_of_eq21_when_q_depends_on_the_observation(seed):
    """E_{k, z_e'} KL(N(f(z_e'), 1) || N(mu_k, 1)) by Monte Carlo = integral over z_e' of eq. 21 by
    quadrature; and the posterior mean gives the smallest integral."""
    codebook, rng = _codebook_1d(seed)
    sigma, n = 0.7, 200_000
    k = rng.integers(len(codebook), size=n)
    z = codebook[k] + sigma * rng.standard_normal(n)
    per_draw = 0.5 * (_posterior_mean(z, codebook, sigma) - codebook[k]) ** 2
    lo, hi = codebook.min() - 10 * sigma, codebook.max() + 10 * sigma

    def integral_of_eq21(f):
        integrand = lambda t: np.mean(stats.norm.pdf(t, codebook, sigma) * 0.5 * (f(t) - codebook) ** 2)  # noqa: E731
        return integrate.quad(integrand, lo, hi, points=codebook, limit=400, epsabs=1e-11)[0]

    posterior = integral_of_eq21(lambda t: _posterior_mean(t, codebook, sigma)[0])
    se = per_draw.std(ddof=1) / np.sqrt(n)
    assert abs(per_draw.mean() - posterior) < 5 * se
    for shift in (-0.2, 0.2):
        assert posterior < integral_of_eq21(lambda t: _posterior_mean(t, codebook, sigma)[0] + shift)
    assert posterior < integral_of_eq21(lambda t: _posterior_mean(t, codebook, 2 * sigma)[0])
