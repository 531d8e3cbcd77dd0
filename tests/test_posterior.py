"""Posterior-collapse measures against closed forms, brute force and constructed extremes."""

import math

import numpy as np
import pytest
import torch

from vqlib import RunConfig
from vqlib.bottlenecks import VAE
from vqlib.model import Autoencoder
from vqlib.posterior import (ACTIVE_UNIT_THRESHOLD, active_units, collapse_measures, decoder_variance,
                             gaussian_information, importance_sampled_nll, linear_vae_active_units,
                             linear_vae_posterior_mean_variance, negative_elbo, rate, swap_test)


def test_gaussian_information_matches_the_closed_form():
    """x ~ N(0, 1), q(z | x) = N(x, s^2) per dimension: I(x; z) = d/2 log(1 + 1/s^2)."""
    g = torch.Generator().manual_seed(0)
    n, d, s = 3000, 2, 0.5
    mean = torch.randn(n, d, generator=g)
    log_var = torch.full((n, d), math.log(s * s))
    estimate = gaussian_information(mean, log_var, num_samples=2, generator=g)
    assert estimate == pytest.approx(d / 2 * math.log(1 + 1 / s ** 2), abs=0.05)


def test_gaussian_information_is_zero_for_a_collapsed_posterior():
    g = torch.Generator().manual_seed(1)
    n, d = 500, 3
    estimate = gaussian_information(torch.zeros(n, d), torch.zeros(n, d), generator=g)
    assert abs(estimate) < 1e-9


def test_active_units_counts_variances_above_the_threshold():
    g = torch.Generator().manual_seed(0)
    stds = torch.tensor([1.0, 0.3, 0.05, 0.0])  # variances 1, 0.09, 0.0025, 0
    codes = torch.randn(20000, 4, generator=g) * stds
    count, variances = active_units(codes)
    assert count == 2
    assert np.allclose(variances.numpy(), (stds ** 2).numpy(), rtol=0.05, atol=1e-4)


def _model(bottleneck, decoder="feedforward", seed=0, **kwargs):
    torch.manual_seed(seed)
    config = RunConfig(bottleneck=bottleneck, decoder=decoder, mlp_hidden="16", code_dim=3, num_codes=8,
                       pixelcnn_layers=1, pixelcnn_channels=4, **kwargs)
    return Autoencoder.from_config(config, (16,)).eval()


def _images(n=64, seed=0):
    return (torch.rand(n, 16, generator=torch.Generator().manual_seed(seed)) < 0.4).float()


@pytest.mark.parametrize("decoder", ["feedforward", "pixelcnn"])
def test_swap_test_is_zero_when_the_decoder_ignores_z_and_brute_force_otherwise(decoder):
    model, x = _model("vae", decoder), _images()
    result = swap_test(model, x, torch.Generator().manual_seed(0), sample=False)
    # brute force: the same pairing, each image decoded alone
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = model.encode(x)
        nll = lambda xi, zi: float(torch.nn.functional.binary_cross_entropy_with_logits(  # noqa: E731
            model.decode(zi[None], xi[None]), xi[None], reduction="sum"))
        partner = {int(order[i]): int(order[(i + 1) % len(x)]) for i in range(len(x))}
        own = np.mean([nll(x[i], z[i]) for i in range(len(x))])
        swapped = np.mean([nll(x[i], z[partner[i]]) for i in range(len(x))])
    assert all(partner[i] != i for i in partner)
    assert result["own"] == pytest.approx(own, rel=1e-5) and result["swapped"] == pytest.approx(swapped, rel=1e-5)
    assert result["gap"] != 0
    # a decoder whose conditioning ignores z: the gap is exactly 0
    first = model.decoder.condition[0] if decoder == "pixelcnn" else model.decoder[0]
    with torch.no_grad():
        first.weight.zero_()
    for sample in (False, True):
        assert swap_test(model, x, torch.Generator().manual_seed(0), sample=sample)["gap"] == pytest.approx(0.0, abs=1e-9)


def test_swap_test_with_posterior_draws_measures_the_elbo_distortion():
    """With sample=True, 'own' is E_q[-log p(x|z)]: averaged over many seeds it matches -ELBO - KL."""
    model, x = _model("vae"), _images(16)
    owns = [swap_test(model, x, torch.Generator().manual_seed(s))["own"] for s in range(200)]
    with torch.no_grad():
        mean, log_var = model.encode_heads(x)
        kl = float((0.5 * (mean ** 2 + log_var.exp() - 1 - log_var).sum(-1)).mean())
    distortion = float(negative_elbo(model, x, torch.Generator().manual_seed(7), num_samples=400).mean()) - kl
    assert np.mean(owns) == pytest.approx(distortion, rel=0.01)


def test_negative_elbo_of_a_quantizer_is_reconstruction_plus_log_k():
    model, x = _model("vq"), _images()
    with torch.no_grad():
        z_q = model.bottleneck(*model.encode_heads(x))[0]
        nll = torch.nn.functional.binary_cross_entropy_with_logits(model.decode(z_q, x), x, reduction="none").sum(-1)
    assert torch.allclose(negative_elbo(model, x), nll + math.log(8), atol=1e-5)
    assert torch.allclose(rate(model, x), torch.full((len(x),), math.log(8)))


def test_negative_elbo_of_a_vae_by_monte_carlo():
    """Many samples: E_q[-log p(x|z)] + KL, against a direct loop over posterior draws."""
    model, x = _model("vae"), _images(8)
    g = torch.Generator().manual_seed(0)
    fast = negative_elbo(model, x, g, num_samples=400)
    with torch.no_grad():
        mean, log_var = model.encode_heads(x)
        kl = 0.5 * (mean ** 2 + log_var.exp() - 1 - log_var).sum(-1)
        eps = torch.randn(400, *mean.shape, generator=torch.Generator().manual_seed(1))
        z = mean + (0.5 * log_var).exp() * eps  # (S, b, d)
        logits = torch.stack([model.decode(zs, x) for zs in z])
        nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
        slow = nll.sum(-1).mean(0) + kl
    assert torch.allclose(fast, slow, rtol=0.02)


def test_rate_and_elbo_refuse_a_model_without_a_prior():
    model, x = _model("ae"), _images()
    with pytest.raises(ValueError, match="no prior"):
        rate(model, x)
    with pytest.raises(ValueError, match="no prior"):
        negative_elbo(model, x)


def test_collapse_measures_of_a_vae():
    model, x = _model("vae", "pixelcnn"), _images(100)
    result = collapse_measures(model, x)
    assert set(result) >= {"rate", "active_units", "mutual_information", "swap_gap", "negative_elbo"}
    assert 0 <= result["mutual_information"] <= math.log(100) + 1e-6
    assert result["negative_elbo"] > result["nll_own_code"] - 1.0  # -ELBO includes the rate


def test_free_bits_floor_the_kl_of_each_dimension():
    """Loss = beta * sum_j max(lambda, batch-mean KL_j); no gradient reaches a dimension under the floor."""
    vae = VAE(code_dim=3, beta=2.0, free_bits=0.5)
    mean = torch.tensor([[0.0, 2.0, 0.1], [0.0, 2.0, -0.1]], requires_grad=True)
    log_var = torch.zeros(2, 3, requires_grad=True)
    vae.eval()
    _, aux = vae(mean, log_var)
    kl_j = 0.5 * (mean.detach() ** 2).mean(0)  # (0, 2, 0.005): the closed form with var = 1
    assert aux["kl"].item() == pytest.approx(float(kl_j.sum()))
    assert aux["loss"].item() == pytest.approx(2.0 * float(torch.clamp(kl_j, min=0.5).sum()))
    aux["loss"].backward()
    assert torch.all(mean.grad[:, [0, 2]] == 0) and torch.all(mean.grad[:, 1] != 0)


def test_linear_vae_prediction_matches_probabilistic_pca_by_gradient_ascent():
    """Maximise the pPCA likelihood of data with known covariance at fixed noise s^2: the columns
    that survive are those with eigenvalue > s^2, as linear_vae_active_units predicts."""
    torch.manual_seed(0)
    eigenvalues = torch.tensor([4.0, 2.0, 0.8, 0.3, 0.1], dtype=torch.double)
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.double))
    cov = q @ torch.diag(eigenvalues) @ q.T
    s2 = 0.5
    w = (0.1 * torch.randn(5, 5, dtype=torch.double)).requires_grad_()
    opt = torch.optim.Adam([w], lr=0.02)
    for _ in range(3000):
        c = w @ w.T + s2 * torch.eye(5, dtype=torch.double)
        loss = torch.logdet(c) + torch.trace(torch.linalg.solve(c, cov))  # -2/N log-likelihood + const
        opt.zero_grad()
        loss.backward()
        opt.step()
    column_norms = torch.linalg.svdvals(w.detach()) ** 2  # = eigenvalues - s^2 where positive
    fitted = int((column_norms > 1e-2).sum())
    assert fitted == linear_vae_active_units(eigenvalues.numpy(), s2) == 3
    assert torch.allclose(column_norms[:3], eigenvalues[:3] - s2, atol=1e-2)


def test_decoder_variance_from_the_nmse_loss():
    """beta * KL + ||x - x_hat||^2 / (D v) is (up to 1/beta) the Gaussian -ELBO with s^2 = beta D v / 2."""
    beta, d, v = 0.2, 196, 0.1
    s2 = decoder_variance(beta, v, d)
    err = torch.randn(d).pow(2).sum()
    assert float(err / (d * v)) / beta == pytest.approx(float(err / (2 * s2)))
    with pytest.raises(ValueError, match="beta=0"):
        decoder_variance(0, v, d)
    with pytest.raises(ValueError, match="decoder_variance=-1"):
        linear_vae_active_units([1.0], -1)


@pytest.fixture
def one_thread():
    """Small optimisation loops run far faster on one thread than on contended cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_linear_vae_active_units_match_a_trained_linear_vae_on_both_sides_of_the_threshold(one_thread):
    """Data with a known covariance (eigenvalues around the cut s^2 / 0.99): a linear VAE (encoder
    m = V x + c with a learned diagonal variance, decoder W z + b with noise s^2) trained by L-BFGS on its
    exact ELBO. The variances of its posterior means over the data, measured, give the active count."""
    s2 = 1.0
    eigenvalues = torch.tensor([3.0, 1.03, 1.015, 1.005, 0.995, 0.5], dtype=torch.double)
    # cut s^2 / 0.99 = 1.0101: 1.015 and 1.03 above it; 1.005 alive (> s^2) but below it; 0.995 collapsed
    n, dim = 2000, len(eigenvalues)
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(n, dim, generator=g, dtype=torch.double)
    raw = raw - raw.mean(0)
    white = raw @ torch.linalg.inv(torch.linalg.cholesky(raw.T @ raw / n)).T  # sample covariance exactly I
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.double))
    x = white @ (rotation * eigenvalues.sqrt()).T + 0.3  # sample covariance exactly U diag(eigenvalues) U^T
    v, w = [(0.1 * torch.randn(dim, dim, generator=g, dtype=torch.double)).requires_grad_() for _ in range(2)]
    c, log_var, b = [torch.zeros(dim, dtype=torch.double, requires_grad=True) for _ in range(3)]

    def negative_elbo_of_the_linear_vae():
        m = x @ v.T + c
        # E_q ||x - W z - b||^2 = ||x - W m - b||^2 + sum_j ||w_j||^2 var_j, in closed form
        distortion = ((x - m @ w.T - b).pow(2).sum(-1) + (w.pow(2) * log_var.exp()).sum()) / (2 * s2)
        return (distortion + 0.5 * (m.pow(2) + log_var.exp() - 1 - log_var).sum(-1)).mean()

    opt = torch.optim.LBFGS([v, c, log_var, w, b], max_iter=1500, tolerance_grad=1e-12, tolerance_change=1e-15,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = negative_elbo_of_the_linear_vae()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        codes = x @ v.T + c  # the posterior means, one row per data point
    count, variances = active_units(codes)
    measured = np.sort(variances.numpy())[::-1] * (n - 1) / n  # active_units divides by n - 1, the data has n
    predicted = np.sort(linear_vae_posterior_mean_variance(eigenvalues.numpy(), s2))[::-1]
    np.testing.assert_allclose(measured, predicted, atol=1e-4)  # 1 - s^2 / lambda_j, or 0
    assert count == linear_vae_active_units(eigenvalues.numpy(), s2) == 3
    assert linear_vae_active_units(eigenvalues.numpy(), s2, threshold=0) == 4  # the collapse cut lambda_j > s^2
    assert int((measured > 1e-6).sum()) == 4  # 1.005 is alive, only not counted by the 0.01 threshold


def test_linear_vae_threshold_is_s2_over_one_minus_the_threshold():
    s2 = 0.5
    cut = s2 / (1 - ACTIVE_UNIT_THRESHOLD)
    assert linear_vae_active_units([cut * 1.001, cut * 0.999, s2 * 1.001, s2 * 0.5], s2) == 1
    assert linear_vae_active_units([cut * 1.001, cut * 0.999, s2 * 1.001, s2 * 0.5], s2, threshold=0) == 3


def _tiny_vae(seed=0, pixels=8):
    """A VAE with a 1-d latent whose decoder depends strongly on z, so -ELBO and -log p(x) differ."""
    torch.manual_seed(seed)
    model = Autoencoder.from_config(RunConfig(bottleneck="vae", mlp_hidden="16", code_dim=1), (pixels,)).eval()
    with torch.no_grad():
        model.decoder[0].weight.mul_(6.0)
    return model


def _log_likelihood_by_quadrature(model, x):
    """(-log p(x), -ELBO) per image, integrating over the 1-d latent on a fine grid."""
    grid = torch.linspace(-10, 10, 40001, dtype=torch.double)
    step = float(grid[1] - grid[0])
    with torch.no_grad():
        logits = model.decode(grid[:, None].float()).double()  # (G, D)
        x = x.double()
        log_px_z = x @ torch.nn.functional.logsigmoid(logits).T + (1 - x) @ torch.nn.functional.logsigmoid(-logits).T
        log_prior = -0.5 * grid ** 2 - 0.5 * math.log(2 * math.pi)
        nll = -(torch.logsumexp(log_px_z + log_prior, 1) + math.log(step))
        mean, log_var = (t.double() for t in model.encode_heads(x.float()))
        q = torch.exp(-0.5 * (grid - mean) ** 2 / log_var.exp() - 0.5 * log_var - 0.5 * math.log(2 * math.pi)) * step
        kl = 0.5 * (mean ** 2 + log_var.exp() - 1 - log_var).sum(-1)
        return nll, -(q * log_px_z).sum(1) + kl


def test_importance_sampled_nll_converges_to_the_exact_likelihood_of_a_tiny_model(one_thread):
    """-ELBO = E NLL_1 >= E NLL_10 >= E NLL_100 >= E NLL_1000 >= -log p(x), exact values by quadrature."""
    model = _tiny_vae()
    x = (torch.rand(12, 8, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    exact, bound = _log_likelihood_by_quadrature(model, x)
    assert float((bound - exact).mean()) > 1.0  # a loose ELBO: there is something to tighten
    g = torch.Generator().manual_seed(1)
    bias, stderr, spread = {}, {}, {}
    for k, repeats in ((1, 400), (10, 100), (100, 40), (1000, 8)):
        est = importance_sampled_nll(model, x.repeat(repeats, 1), num_samples=k, generator=g).double()
        errors = est.view(repeats, len(x)) - exact  # (repeats, images)
        bias[k], stderr[k] = float(errors.mean()), float(errors.mean(1).std() / math.sqrt(repeats))
        spread[k] = float(errors.abs().mean())  # the typical error of one estimate
    assert bias[1] == pytest.approx(float((bound - exact).mean()), abs=4 * stderr[1])  # k = 1: the -ELBO
    assert bias[1] - bias[10] > 3 * stderr[1] and bias[10] - bias[100] > 3 * stderr[10]  # tighter with k
    assert bias[1000] < bias[100] + 3 * stderr[100] and -4 * stderr[1000] < bias[1000] < 0.02  # above -log p(x)
    assert spread[1] > spread[10] > spread[100] > spread[1000]
    sharp = importance_sampled_nll(model, x, num_samples=3000, generator=g)
    assert torch.allclose(sharp.double(), exact, atol=0.1)


def test_importance_sampled_nll_refuses_a_discrete_code_and_a_bad_k():
    x = _images(8)
    with pytest.raises(ValueError, match="discrete code"):
        importance_sampled_nll(_model("vq"), x)
    with pytest.raises(ValueError, match="num_samples=0 is not allowed"):
        importance_sampled_nll(_model("vae"), x, num_samples=0)


def test_gaussian_information_saturates_at_log_n_and_collapse_measures_say_so():
    """Posteriors that tell N images apart: the estimate is log N, however much further apart they are."""
    n = 50
    for spread in (10.0, 1000.0):
        mean = spread * torch.arange(n, dtype=torch.double)[:, None]
        log_var = torch.full((n, 1), math.log(0.01))
        estimate = gaussian_information(mean, log_var, generator=torch.Generator().manual_seed(0))
        assert estimate == pytest.approx(math.log(n), abs=1e-9)
    result = collapse_measures(_model("vae"), _images(40))
    assert result["mutual_information_ceiling"] == pytest.approx(math.log(40))
    assert result["mutual_information"] <= result["mutual_information_ceiling"] + 1e-9


def test_code_content_tells_a_code_of_the_class_from_a_code_of_the_detail():
    """Images = class template + within-class detail (a few random directions): a code holding the class one-hot
    reads the class and none of the detail; a code holding the detail coefficients reads the detail (R^2 near 1)
    and, the detail being independent of the class, the class only at chance."""
    from vqlib.posterior import code_content

    rng = np.random.default_rng(0)
    n, pixels, classes, k = 2000, 40, 5, 3
    templates, directions = rng.normal(size=(classes, pixels)), rng.normal(size=(k, pixels))
    y = rng.integers(classes, size=n)
    coefficients = rng.normal(size=(n, k))
    x = templates[y] + coefficients @ directions
    split = n // 2
    for z, class_ok, detail_ok in ((np.eye(classes)[y], lambda a: a == 1.0, lambda r: abs(r) < 0.02),
                                   (coefficients, lambda a: a < 1 / classes + 0.06, lambda r: r > 0.99)):
        content = code_content(z[:split], y[:split], x[:split], z[split:], y[split:], x[split:])
        assert class_ok(content["class_accuracy"]), content
        assert detail_ok(content["detail_r2"]), content
