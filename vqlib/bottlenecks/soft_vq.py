"""The soft VQ-VAE bottleneck (Wu & Flierl, AAAI 2020): noisy codes and a Bayesian estimator."""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import (Bottleneck, _squared_distances_backward, _squared_distances_value, check_choice,
                   check_non_negative, check_positive_int, squared_distances, uniform_unit_scaling_)
from .vq import REDUCTIONS, batch_perplexity, latent_terms

SIGMA_SOURCES = ("codeword", "encoder")  # one learned sigma per codeword / a per-input encoder head of width K
GRADIENTS = ("straight_through", "soft")  # decoder-input gradient: copied to z_e (under eq. 27) / through eq. 6-7
FORMULAS = ("paper", "published")  # eq. 5-7 in log space / the authors' notebook formula


def log_responsibilities(z: torch.Tensor, codebook: torch.Tensor, log_sigma) -> torch.Tensor:
    """log p(mu^(k) | z) for the mixture of eq. 4-5 with the uniform prior p(mu^(k)) = 1/K (eq. 7).

    log p(z | mu^(k)) = -||z - mu^(k)||^2 / (2 sigma_k^2) - d log sigma_k + const: the sigma_k^(-d)
    normaliser of an isotropic Gaussian in d dimensions is kept, and the result is normalised with
    log-sum-exp, so it stays finite for codes far away and for tiny sigmas.

    z (b, d), codebook (K, d), log_sigma a float, (K,) or (b, K) -> (b, K).
    """
    d = z.shape[-1]
    log_sigma = torch.as_tensor(log_sigma, dtype=z.dtype, device=z.device)
    log_joint = -0.5 * squared_distances(z, codebook) * torch.exp(-2 * log_sigma) - d * log_sigma  # (b, K)
    return torch.log_softmax(log_joint, dim=-1)


def posterior_mean(z: torch.Tensor, codebook: torch.Tensor, sigma):
    """The Bayesian estimator of eq. 6-7: z_hat = sum_k mu^(k) p(mu^(k) | z).

    z (b, d) noisy codes, codebook (K, d), sigma a positive float, (K,) or (b, K)
    -> (z_hat (b, d), responsibilities (b, K)).
    """
    sigma = torch.as_tensor(sigma, dtype=z.dtype, device=z.device)
    if (sigma <= 0).any():
        raise ValueError("sigma must be > 0 for every codeword")
    responsibilities = log_responsibilities(z, codebook, torch.log(sigma)).exp()  # (b, K)
    return responsibilities @ codebook, responsibilities


def published_responsibilities(z: torch.Tensor, codebook: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """The authors' notebook formula, reproduced as written (no log-sum-exp, no sigma^(-d)).

    Dividing by sqrt(smooth) multiplies by sigma_k, so the weights carry sigma_k^(+1) where a
    d-dimensional isotropic Gaussian needs sigma_k^(-d): they differ from eq. 7 whenever the sigmas
    differ, for any d.

    smooth = 1 / exp(log_sigma)^2; w_k = exp(-0.5 * smooth_k * dist_k) / sqrt(smooth_k); w / sum(w).
    Far-away codes underflow to 0/0 = NaN, exactly as in the original.
    """
    smooth = 1.0 / torch.exp(log_sigma) ** 2
    weights = torch.exp(-0.5 * smooth * squared_distances(z, codebook)) / torch.sqrt(smooth)  # (b, K)
    return weights / weights.sum(-1, keepdim=True)


class _SoftVQEstimator(torch.autograd.Function):
    """Eq. 4-7 and the two latent terms of eq. 27 in one autograd node, differentiated by hand.

    Forward, as :class:`SoftVectorQuantizer` computes them with autograd (formula "paper"):
    L = -||x - mu_k||^2 / (2 sigma_k^2) - d log sigma_k, R = softmax_k(L), z_hat = R mu,
    term = ||x - z_hat||^2 (summed over d and averaged over the batch, or averaged over all),
    z_q = x + (z_hat - x) (straight-through) or z_hat (soft).
    Outputs (z_q, codebook_term, commitment_term, R); the codebook term reaches z_hat only, the
    commitment term x only (the stop-gradients of eq. 27). Backward, with e = x - z_hat, s = log sigma,
    w = exp(-2 s), c = 2 / (number of averaged elements):
      dz_hat = [dz_q if soft] - c dcodebook e;  dx = [dz_q if straight-through] + c dcommitment e
      dR = dz_hat mu^T;  dmu = R^T dz_hat;  dL = R (dR - sum_k R dR)            (softmax)
      dD = -w dL / 2;  ds = dL (D w - d);  dx += 2 (x sum_k dD - dD mu);  dmu += 2 (mu sum_i dD - dD^T x)
    A dozen small kernels replace about sixty autograd ops and nodes; tested against autograd and
    against finite differences.
    """

    @staticmethod
    def forward(ctx, x, codebook, log_sigma, mean_reduction: bool, straight_through: bool):
        d = x.shape[-1]
        distances = _squared_distances_value(x, codebook)  # (b, K)
        w = torch.exp(-2 * log_sigma)
        responsibilities = torch.log_softmax(-0.5 * distances * w - d * log_sigma, dim=-1).exp()  # (b, K), eq. 7
        z_hat = responsibilities @ codebook  # (b, d), eq. 6
        error = x - z_hat
        squared = error * error
        term = squared.mean() if mean_reduction else squared.sum(-1).mean()
        z_q = x - error if straight_through else z_hat  # x + (z_hat - x), as the autograd path computes it
        ctx.save_for_backward(x, codebook, log_sigma, distances, w, responsibilities, error)
        ctx.mean_reduction, ctx.straight_through = mean_reduction, straight_through
        ctx.mark_non_differentiable(responsibilities)
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None: its path is skipped
        return z_q, term, term.clone(), responsibilities

    @staticmethod
    def backward(ctx, grad_z_q, grad_codebook_term, grad_commitment_term, _):
        x, codebook, log_sigma, distances, w, responsibilities, error = ctx.saved_tensors
        b, d = x.shape
        c = 2.0 / (b * d if ctx.mean_reduction else b)
        grad_x = grad_z_q.clone() if ctx.straight_through and grad_z_q is not None else torch.zeros_like(x)
        if grad_commitment_term is not None:
            grad_x.add_(error * (c * grad_commitment_term))
        grad_z_hat = None if ctx.straight_through or grad_z_q is None else grad_z_q.clone()
        if grad_codebook_term is not None:
            step = error * (c * grad_codebook_term)
            grad_z_hat = -step if grad_z_hat is None else grad_z_hat.sub_(step)
        if grad_z_hat is None:  # nothing reached z_hat: no gradient for the codebook or the sigmas, as with autograd
            return grad_x, None, None, None, None
        grad_r = grad_z_hat @ codebook.t()  # (b, K)
        grad_mu = responsibilities.t() @ grad_z_hat  # (K, d)
        grad_l = responsibilities * (grad_r - (responsibilities * grad_r).sum(-1, keepdim=True))
        grad_dist = grad_l * w * -0.5
        grad_log_sigma = grad_l * (distances * w - d)
        grad_log_sigma = grad_log_sigma.sum_to_size(log_sigma.shape)
        grad_x_dist, grad_mu_dist = _squared_distances_backward(grad_dist, x, codebook)
        grad_x.add_(grad_x_dist)
        grad_mu.add_(grad_mu_dist)
        return grad_x, grad_mu, grad_log_sigma, None, None


class SoftVectorQuantizer(Bottleneck):
    """``soft_vq``: the paper's model.

    1. Noisy code z_e' = z_e + eps, eps ~ N(0, noise_std^2 I), during training only (Section "Noisy
       Latent Codes"; the published code adds no noise: noise_std = 0).
    2. Mixture p(z_e') = sum_k 1/K N(z_e'; mu^(k), sigma_k^2 I) (eq. 4-5); sigma_k comes from a
       per-input encoder head of width K read from ``extra`` as log sigma (``sigma="encoder"``: the
       paper's "another layer with size K", and the published code's way), or is one learned
       parameter per codeword (``sigma="codeword"``, starting at ``init_sigma``).
    3. Decoder input: the posterior mean z_hat = sum_k mu^(k) p(mu^(k) | z_e') (eq. 6-7). With
       ``gradient="straight_through"`` the decoder sees z_e' + sg(z_hat - z_e') (as described under
       eq. 27); with ``"soft"`` it sees z_hat and gradients flow through the soft assignment.
    Loss (eq. 27, latent part): ||sg(z_e') - z_hat||^2 + beta ||z_e' - sg(z_hat)||^2. Read literally,
    as in the published code: z_hat depends on z_e' through the responsibilities, so unlike the hard
    VQ-VAE the codebook term also reaches the encoder (and trains the sigmas).

    ``formula="published"`` swaps eq. 5-7 for the authors' notebook formula
    (:func:`published_responsibilities`) so the book can compare the two.
    """

    def __init__(self, num_codes: int, code_dim: int, beta: float = 2.5, noise_std: float = 0.1,
                 sigma: str = "encoder", gradient: str = "straight_through", formula: str = "paper",
                 reduction: str = "sum", init_sigma: float = 1.0):
        super().__init__(code_dim)
        self.num_codes = check_positive_int("num_codes", num_codes)  # K
        # commitment weight (eq. 27); the paper gives no value, the published code uses 2.5
        self.beta = check_non_negative("beta", beta)
        if not check_non_negative("init_sigma", init_sigma) > 0:
            raise ValueError(f"init_sigma={init_sigma!r} is not allowed: init_sigma must be > 0")
        self.noise_std = check_non_negative("noise_std", noise_std)  # std of the white noise on z_e
        self.sigma_source = check_choice("sigma", sigma, SIGMA_SOURCES)
        self.gradient = check_choice("gradient", gradient, GRADIENTS)
        self.formula = check_choice("formula", formula, FORMULAS)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.extra_dim = num_codes if sigma == "encoder" else 0
        self.fused = True  # formula "paper" through _SoftVQEstimator; False: the same maths op by op with autograd
        self.codebook = nn.Parameter(uniform_unit_scaling_(torch.empty(num_codes, code_dim)))  # (K, d)
        # sigma = "codeword": learned log sigma_k, starting at init_sigma (K,)
        self.log_sigma = nn.Parameter(torch.full((num_codes,), math.log(init_sigma))) if sigma == "codeword" else None

    def forward(self, z_e: torch.Tensor, extra: torch.Tensor | None = None):
        """z_e (b, d), extra (b, K) log sigma or None -> z_q (b, d), aux.

        aux: "loss", "codebook", "commitment", "indices" (most probable codeword), "perplexity",
        "responsibilities" (b, K), "sigma" (mean sigma, detached).
        """
        self.check_input(z_e, extra)
        noisy = z_e + self.noise_std * torch.randn_like(z_e) if self.training and self.noise_std > 0 else z_e
        log_sigma = extra if self.sigma_source == "encoder" else self.log_sigma  # (b, K) or (K,)
        if self.formula == "paper" and self.fused:
            z_q, codebook_term, commitment_term, responsibilities = _SoftVQEstimator.apply(
                noisy, self.codebook, log_sigma, self.reduction == "mean", self.gradient == "straight_through")
        else:
            if self.formula == "paper":
                responsibilities = log_responsibilities(noisy, self.codebook, log_sigma).exp()  # (b, K)
            else:
                responsibilities = published_responsibilities(noisy, self.codebook, log_sigma)
            z_hat = responsibilities @ self.codebook  # (b, d)
            codebook_term, commitment_term = latent_terms(noisy, z_hat, self.reduction)
            z_q = noisy + (z_hat - noisy).detach() if self.gradient == "straight_through" else z_hat
        indices = responsibilities.detach().argmax(-1)
        return z_q, {
            "loss": codebook_term + self.beta * commitment_term,
            "codebook": codebook_term,
            "commitment": commitment_term,
            "indices": indices,
            "perplexity": batch_perplexity(indices, self.num_codes),
            "responsibilities": responsibilities,
            "sigma": torch.exp(log_sigma.detach()).mean(),
        }
