"""Does a model use its code? The measures of posterior collapse, in nats (vlae-summary.txt).

A VAE maximises the ELBO, -log p(x) <= -ELBO = E_q(z|x)[-log p(x | z)] + KL(q(z | x) || p(z)).
When the decoder can model x well on its own (an autoregressive decoder with a wide window), the
KL term is a cost with nothing to buy and the optimum sets q(z | x) = p(z): the code carries no
information, "posterior collapse" (Chen et al.'s bits-back argument). These functions measure it:

* :func:`rate` per image: the KL for the Gaussian bottlenecks; log K for a quantizer, whose code is
  one of K codewords under a uniform prior (its rate is fixed by construction and can never fall to 0);
* :func:`active_units`: latent dimensions whose posterior mean varies over the data,
  Var_x(E_q[z_j | x]) > 0.01 (Burda et al. 2016; He et al., arXiv 1901.05534);
* :func:`gaussian_information`: I_q(x; z) under the aggregate posterior q(z) = mean_n q(z | x_n);
* :func:`swap_test`: how much -log p(x | z) worsens when x's own code is replaced by another image's
  (0: the decoder ignores z);
* :func:`negative_elbo` per image, and :func:`importance_sampled_nll`, the tighter importance-sampled
  estimate of -log p(x) with k posterior draws (Burda et al. 2016): -ELBO >= E NLL_k >= -log p(x);
* :func:`linear_vae_active_units`: for a linear Gaussian VAE (probabilistic PCA) at decoder noise
  variance s^2, unit j's posterior mean has variance 1 - s^2 / lambda_j over the data (0 where the
  eigenvalue lambda_j <= s^2; Tipping & Bishop 1999; Lucas et al. 2019), so the units that pass
  :func:`active_units`' threshold t are those with lambda_j > s^2 / (1 - t); :func:`decoder_variance`
  reads s^2 off vqlib's own loss scaling.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .bottlenecks import QUANTIZERS, VAE, gaussian_kl

ACTIVE_UNIT_THRESHOLD = 0.01  # He et al.: Var_x(E[z_j | x]) above this counts unit j as active


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _batches(x: torch.Tensor, batch_size: int):
    for start in range(0, len(x), batch_size):
        yield slice(start, start + batch_size)


def negative_log_likelihood(model, x: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """-log p(x | z_q) per image (b,) in nats, the Bernoulli likelihood of binary pixels x."""
    logits = model.decode(z_q, x)
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)


@torch.no_grad()
def encode_posterior(model, x: torch.Tensor, batch_size: int = 500):
    """(code (N, d), log_var (N, d) or None): the posterior mean and log-variance of a Gaussian
    bottleneck, or the deterministic code z_q that a model in evaluation mode passes its decoder."""
    model.eval()
    device = _device(model)
    codes, log_vars = [], []
    for s in _batches(x, batch_size):
        z_e, extra = model.encode_heads(x[s].to(device))
        if isinstance(model.bottleneck, VAE):
            codes.append(z_e)
            log_vars.append(extra)
        else:
            codes.append(model.bottleneck(z_e, extra)[0])
    return torch.cat(codes), (torch.cat(log_vars) if log_vars else None)


def _prior(model, what: str) -> str:
    """"gaussian" (vae, beta_vae: N(0, I)) or "uniform" (a quantizer: 1/K); a ValueError for a model
    without a prior over its code, saying that ``what`` needs one."""
    b = model.bottleneck
    if isinstance(b, VAE):
        return "gaussian"
    if b.num_codes:
        return "uniform"
    raise ValueError(f"{type(b).__name__} has no prior over its code: {what} is defined for vae, beta_vae and the "
                     f"quantizers {', '.join(QUANTIZERS)}")


def _rate(model, codes: torch.Tensor, log_var: torch.Tensor | None) -> torch.Tensor:
    """:func:`rate` from the output of :func:`encode_posterior` (no second pass through the encoder)."""
    if _prior(model, "the rate") == "uniform":
        return torch.full((len(codes),), math.log(model.bottleneck.num_codes))
    return gaussian_kl(codes, log_var).cpu()


@torch.no_grad()
def rate(model, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Nats per image (N,) that the code costs under the model's prior: KL(q(z | x) || N(0, I)) for
    ``vae``/``beta_vae``, log K for a quantizer (uniform prior over K codewords).

    For a quantizer the value is set, not measured: the KL of a one-hot q(z | x) from the uniform prior
    is log K for every x and every trained model. It is an upper bound on what the index carries,
    I(X; Z) = H(Z) <= log K (see :func:`vqlib.information.measure` for H(Z) from the code usage).
    For ``soft_vq`` it is not even that: its decoder receives the continuous posterior mean z_hat
    (eq. 6), not an index, and a continuous deterministic code is bounded only by the data's own
    entropy (log N on N images), not by log K; log K is the cost of the index it never sends.
    """
    return _rate(model, *encode_posterior(model, x, batch_size))


def active_units(codes: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD):
    """(number of active units, Var_x of each unit's posterior mean (d,)) from codes (N, d)."""
    variances = codes.double().var(0, unbiased=True).cpu()
    return int((variances > threshold).sum()), variances


@torch.no_grad()
def gaussian_information(mean: torch.Tensor, log_var: torch.Tensor, num_samples: int = 1,
                         generator: torch.Generator | None = None, chunk: int = 256) -> float:
    """I_q(x; z) = E_n E_{z ~ q(z|x_n)} [log q(z | x_n) - log q(z)], q(z) = (1/N) sum_m q(z | x_m), in nats.

    Monte Carlo over ``num_samples`` z per image; q(z) is the mixture over the N given images, so the
    estimate is at most log N (He et al.'s estimator): each term is log q(z_n | x_n) minus the log of
    a mean that holds q(z_n | x_n) / N. A code that tells the N images apart reads log N whatever it
    carries beyond that, so an estimate near ``math.log(len(mean))`` is saturated, not measured
    (:func:`collapse_measures` reports the ceiling beside it).
    """
    mean, log_var = mean.double().cpu(), log_var.double().cpu()
    n, d = mean.shape
    std = (0.5 * log_var).exp()
    inv_var = (-log_var).exp()
    const = -0.5 * d * math.log(2 * math.pi) - 0.5 * log_var.sum(-1)  # (N,) log-normaliser of each q(. | x_m)
    total = 0.0
    for _ in range(num_samples):
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        z = mean + std * eps  # (N, d), one draw from each image's posterior
        own = const - 0.5 * eps.pow(2).sum(-1)  # log q(z_n | x_n)
        for s in _batches(z, chunk):
            diff = z[s, None, :] - mean[None]  # (c, N, d)
            log_q = const[None] - 0.5 * (diff.pow(2) * inv_var[None]).sum(-1)  # log q(z_n | x_m)
            aggregate = torch.logsumexp(log_q, dim=1) - math.log(n)
            total += float((own[s] - aggregate).sum())
    return total / (n * num_samples)


@torch.no_grad()
def swap_test(model, x: torch.Tensor, generator: torch.Generator | None = None, batch_size: int = 500,
              sample: bool = True) -> dict:
    """Mean -log p(x | z) with each image's own code and with another image's code (nats per image).

    The code of image x is z ~ q(z | x), one draw (Gaussian bottlenecks; ``sample=False``: the posterior
    mean), or z_q in evaluation mode (the other bottlenecks). Images are paired by a random permutation
    without fixed points (a shuffle, then each to the next). ``gap`` = swapped - own: 0 when the
    decoder ignores z, large when x is written in its code. With ``sample``, ``own`` is the distortion
    term of the ELBO, E_q[-log p(x | z)], for one draw.
    """
    device = _device(model)
    codes, log_var = encode_posterior(model, x, batch_size)
    order = torch.randperm(len(x), generator=generator)
    if sample and log_var is not None:
        eps = torch.randn(codes.shape, generator=generator, dtype=codes.dtype).to(codes.device)
        codes = codes + (0.5 * log_var).exp() * eps
    partner = torch.empty_like(order)
    partner[order] = order.roll(-1)  # image order[i] takes the code of order[i + 1]
    own = swapped = 0.0
    for s in _batches(x, batch_size):
        xb = x[s].to(device)
        own += float(negative_log_likelihood(model, xb, codes[s]).sum())
        swapped += float(negative_log_likelihood(model, xb, codes[partner[s].to(codes.device)]).sum())
    own, swapped = own / len(x), swapped / len(x)
    return {"own": own, "swapped": swapped, "gap": swapped - own}


@torch.no_grad()
def negative_elbo(model, x: torch.Tensor, generator: torch.Generator | None = None, num_samples: int = 1,
                  batch_size: int = 500) -> torch.Tensor:
    """-ELBO per image (N,) in nats: E_q[-log p(x | z)] (``num_samples`` draws) + :func:`rate`.

    For a quantizer the code is deterministic and the rate is log K (see :func:`rate`: for ``soft_vq``
    this is not a bound on -log p(x) of the decoder's continuous input).
    """
    device = _device(model)
    prior = _prior(model, "-ELBO")
    model.eval()
    out = []
    for s in _batches(x, batch_size):
        xb = x[s].to(device)
        z_e, extra = model.encode_heads(xb)
        if prior == "gaussian":
            nll = 0.0
            for _ in range(num_samples):
                eps = torch.randn(z_e.shape, generator=generator, device="cpu").to(device)
                nll = nll + negative_log_likelihood(model, xb, z_e + (0.5 * extra).exp() * eps)
            out.append((nll / num_samples + gaussian_kl(z_e, extra)).cpu())
        else:  # a quantizer: a deterministic code under the uniform prior
            z_q = model.bottleneck(z_e, extra)[0]
            out.append((negative_log_likelihood(model, xb, z_q) + math.log(model.bottleneck.num_codes)).cpu())
    return torch.cat(out)


def collapse_measures(model, x: torch.Tensor, seed: int = 0, num_samples: int = 1) -> dict:
    """Every measure of this module for one trained model on images ``x``: a dict of floats (nats)."""
    generator = torch.Generator().manual_seed(seed)
    codes, log_var = encode_posterior(model, x)
    units, _ = active_units(codes)
    swap = swap_test(model, x, generator)
    nelbo = negative_elbo(model, x, generator, num_samples)
    rates = _rate(model, codes, log_var)
    result = {"rate": float(rates.mean()), "active_units": units, "nll_own_code": swap["own"],
              "nll_swapped_code": swap["swapped"], "swap_gap": swap["gap"], "negative_elbo": float(nelbo.mean())}
    result["mutual_information"] = (gaussian_information(codes, log_var, num_samples, generator)
                                    if log_var is not None else float("nan"))
    result["mutual_information_ceiling"] = math.log(len(x))  # the estimator's log N: it cannot read more
    return result


@torch.no_grad()
def importance_sampled_nll(model, x: torch.Tensor, num_samples: int = 100, generator: torch.Generator | None = None,
                           batch_size: int = 500) -> torch.Tensor:
    """-log p(x) per image (N,) in nats, importance-sampled with the encoder's q(z | x) as proposal:

        log p(x) ~ logsumexp_i [log p(x | z_i) + log p(z_i) - log q(z_i | x)] - log k,  z_i ~ q(z | x),

    with k = ``num_samples`` (Burda et al. 2016). Its expectation falls with k from -ELBO (k = 1) towards
    -log p(x) (k -> infinity): -ELBO = E NLL_1 >= E NLL_k >= E NLL_{k+1} >= -log p(x) (one estimate can
    fall below -log p(x); its mean cannot). For ``vae`` / ``beta_vae``
    (a Gaussian q and the prior N(0, I)); a quantizer's code has no density to sample.
    """
    if _prior(model, "the importance-sampled NLL") != "gaussian":
        raise ValueError(f"{type(model.bottleneck).__name__} has a discrete code: the importance-sampled NLL is "
                         "defined for vae and beta_vae")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r} is not allowed: it must be an integer >= 1")
    device = _device(model)
    means, log_vars = encode_posterior(model, x, batch_size)
    prior = torch.distributions.Normal(0.0, 1.0)
    out = []
    for s in _batches(x, batch_size):
        xb = x[s].to(device)
        q = torch.distributions.Normal(means[s], (0.5 * log_vars[s]).exp())
        log_weights = []
        for _ in range(num_samples):
            eps = torch.randn(q.loc.shape, generator=generator, device="cpu").to(device)
            z = q.loc + q.scale * eps
            log_weights.append(-negative_log_likelihood(model, xb, z) + prior.log_prob(z).sum(-1)
                               - q.log_prob(z).sum(-1))
        log_px = torch.logsumexp(torch.stack(log_weights), dim=0) - math.log(num_samples)
        out.append(-log_px.cpu())
    return torch.cat(out)


def linear_vae_posterior_mean_variance(eigenvalues, decoder_variance: float) -> np.ndarray:
    """Var_x(E[z_j | x]) of each unit of the optimal linear Gaussian VAE: max(0, 1 - s^2 / lambda_j).

    For x = W z + b + noise, z ~ N(0, I), noise ~ N(0, s^2 I) (probabilistic PCA), the maximum-likelihood
    W has columns u_j sqrt(lambda_j - s^2) where lambda_j > s^2 and zero columns otherwise (Tipping &
    Bishop 1999); a linear VAE's optimum matches it, its diagonal posterior picking these axes (Lucas
    et al., "Don't blame the ELBO", 2019). The posterior mean is E[z | x] = (W^T W + s^2 I)^(-1) W^T (x - b),
    so E[z_j | x] = sqrt(lambda_j - s^2) / lambda_j * u_j^T (x - b), whose variance over the data is
    (lambda_j - s^2) / lambda_j^2 * lambda_j = 1 - s^2 / lambda_j. A zero column is a collapsed unit: 0.
    """
    if not (isinstance(decoder_variance, (int, float)) and decoder_variance > 0):
        raise ValueError(f"decoder_variance={decoder_variance!r} is not allowed: it must be a number > 0")
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(eigenvalues > decoder_variance, 1 - decoder_variance / eigenvalues, 0.0)


def linear_vae_active_units(eigenvalues, decoder_variance: float, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Units of the optimal linear Gaussian VAE that :func:`active_units` counts as active.

    Unit j's posterior mean has variance 1 - s^2 / lambda_j (:func:`linear_vae_posterior_mean_variance`),
    so it passes the threshold t exactly when lambda_j > s^2 / (1 - t): with He et al.'s t = 0.01, a unit
    whose eigenvalue lies in (s^2, s^2 / 0.99] is alive (a non-zero column of W) but not counted.
    ``threshold=0`` gives the collapse cut itself, lambda_j > s^2.
    """
    return int((linear_vae_posterior_mean_variance(eigenvalues, decoder_variance) > threshold).sum())


def decoder_variance(beta: float, data_variance: float, input_dim: int) -> float:
    """The Gaussian decoder variance s^2 that vqlib's ``nmse`` loss with KL weight ``beta`` amounts to.

    vqlib minimises ||x - x_hat||^2 / (D v) + beta KL (``reconstruction="nmse"``: the mean over D
    pixels of the squared error, divided by the data variance v). Divided by beta, this is the
    negative ELBO of a Gaussian decoder, ||x - x_hat||^2 / (2 s^2) + KL + const, with s^2 = beta D v / 2.
    """
    if not (isinstance(beta, (int, float)) and beta > 0):
        raise ValueError(f"beta={beta!r} is not allowed: the decoder variance needs a KL weight > 0")
    return beta * input_dim * data_variance / 2


def code_content(z_train, y_train, x_train, z_test, y_test, x_test, ridge: float = 1.0, seed: int = 0) -> dict:
    """What a code keeps, read out linearly: the digit's class (global) and its detail within the class (local).

    VLAE (Chen et al. 2017) predicts that a decoder which models local structure itself leaves the code a
    *lossy* one: it keeps what the decoder's window cannot see (the digit's identity, its global shape) and
    drops the local detail. Two linear probes fitted on the training codes and scored on the test codes:

    * ``class_accuracy``: a softmax classifier's accuracy on the digit label
      (:func:`vqlib.evaluation.classification_accuracy`);
    * ``detail_r2``: how much of each image's deviation from its class's mean image (x - mean_{y}) a ridge
      regression on z explains on the test images (R^2, pixels weighted by their variance; 0: none, 1: all).

    ``z_*`` (N, d) codes (e.g. the posterior means of :func:`encode_posterior`), ``y_*`` labels, ``x_*`` images.
    """
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    from .evaluation import classification_accuracy

    as_array = lambda a: np.asarray(a.detach().cpu() if hasattr(a, "detach") else a, dtype=np.float64)  # noqa: E731
    z_train, z_test = as_array(z_train), as_array(z_test)
    x_train, x_test = as_array(x_train).reshape(len(z_train), -1), as_array(x_test).reshape(len(z_test), -1)
    y_train, y_test = np.asarray(y_train).astype(int), np.asarray(y_test).astype(int)
    means = {c: x_train[y_train == c].mean(0) for c in np.unique(y_train)}
    fallback = x_train.mean(0)  # a class absent from the training images
    residual = lambda x, y: x - np.stack([means.get(c, fallback) for c in y])  # noqa: E731
    detail = Ridge(alpha=ridge).fit(z_train, residual(x_train, y_train))
    return {"class_accuracy": classification_accuracy(z_train, y_train, z_test, y_test, seed=seed),
            "detail_r2": float(r2_score(residual(x_test, y_test), detail.predict(z_test),
                                        multioutput="variance_weighted"))}
