"""The soft VQ-VAE bottleneck (Wu & Flierl, AAAI 2020): noisy codes and a Bayesian estimator."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..validation import check_choice, check_non_negative, check_positive_int
from .base import NOISE_SCALES, Bottleneck, noisy_code, squared_distances, standard_normal, uniform_unit_scaling_
from .vq import REDUCTIONS, batch_perplexity, latent_terms

# one learned sigma per codeword / a per-input encoder head of width K / one learned sigma for all codewords
SIGMA_SOURCES = ("codeword", "encoder", "shared")
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


class SoftVectorQuantizer(Bottleneck):
    """``soft_vq``: the paper's model.

    1. Noisy code z_e' = z_e + eps, eps ~ N(0, noise_std^2 I), during training only (Section "Noisy
       Latent Codes"; the published code adds no noise: noise_std = 0). The paper does not say how the
       noise relates to the scale of z_e, which grows in training: ``noise_scale="proportional"``
       multiplies the std by the spread of z_e (its std over the batch, averaged over d, detached).
    2. Mixture p(z_e') = sum_k 1/K N(z_e'; mu^(k), sigma_k^2 I) (eq. 4-5); sigma_k comes from a
       per-input encoder head of width K read from ``extra`` as log sigma (``sigma_source="encoder"``: the
       paper's "another layer with size K", and the published code's way), is one learned
       parameter per codeword (``sigma_source="codeword"``), or one learned sigma shared by every codeword
       (``sigma_source="shared"``: the sigma^(-d) normalisers then cancel in eq. 7), starting at ``init_sigma``.
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
                 sigma_source: str = "encoder", gradient: str = "straight_through", formula: str = "paper",
                 reduction: str = "sum", init_sigma: float = 1.0, noise_scale: str = "fixed"):
        super().__init__(code_dim)
        self.num_codes = check_positive_int("num_codes", num_codes)  # K
        # commitment weight (eq. 27); the paper gives no value, the published code uses 2.5
        self.register_scalar("beta", check_non_negative("beta", beta))
        if not check_non_negative("init_sigma", init_sigma) > 0:
            raise ValueError(f"init_sigma={init_sigma!r} is not allowed: init_sigma must be > 0")
        self.register_scalar("noise_std", check_non_negative("noise_std", noise_std))  # std of the white noise on z_e
        self.sigma_source = check_choice("sigma_source", sigma_source, SIGMA_SOURCES)
        self.gradient = check_choice("gradient", gradient, GRADIENTS)
        self.formula = check_choice("formula", formula, FORMULAS)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.extra_dim = num_codes if sigma_source == "encoder" else 0
        self.codebook = nn.Parameter(uniform_unit_scaling_(torch.empty(num_codes, code_dim)))  # (K, d)
        # sigma = "codeword": learned log sigma_k, starting at init_sigma (K,)
        # sigma = "codeword": learned log sigma_k (K,); "shared": one learned log sigma (1,); both start at init_sigma
        sizes = {"codeword": num_codes, "shared": 1}
        self.log_sigma = (nn.Parameter(torch.full((sizes[sigma_source],), math.log(init_sigma))) if sigma_source in sizes else None)
        self.noise_scale = check_choice("noise_scale", noise_scale, NOISE_SCALES)

    def sample_noise(self, batch_size, generator=None, device=None):
        return standard_normal(batch_size, self.code_dim, generator, device)  # eps (b, d), scaled by noise_std

    def forward(self, z_e: torch.Tensor, extra: torch.Tensor | None = None, noise: torch.Tensor | None = None):
        """z_e (b, d), extra (b, K) log sigma or None, noise (b, d) eps -> z_q (b, d), aux.

        aux: "loss", "codebook", "commitment", "indices" (most probable codeword), "perplexity",
        "responsibilities" (b, K), "mean_sigma" (sigma_k averaged over codewords and inputs, detached).
        """
        self.check_input(z_e, extra)
        noisy = noisy_code(z_e, self.training_noise(z_e, noise), self.noise_std, self.noise_scale)  # z_e' (b, d)
        log_sigma = extra if self.sigma_source == "encoder" else self.log_sigma  # (b, K), (K,) or (1,)
        if self.formula == "paper":
            responsibilities = log_responsibilities(noisy, self.codebook, log_sigma).exp()  # (b, K), eq. 5 and 7
        else:
            responsibilities = published_responsibilities(noisy, self.codebook, log_sigma)
        z_hat = responsibilities @ self.codebook  # (b, d), eq. 6
        codebook_term, commitment_term = latent_terms(noisy, z_hat, self.reduction)  # eq. 27
        z_q = noisy + (z_hat - noisy).detach() if self.gradient == "straight_through" else z_hat
        indices = responsibilities.detach().argmax(-1)
        return z_q, {
            "loss": codebook_term + self.beta * commitment_term,
            "codebook": codebook_term,
            "commitment": commitment_term,
            "indices": indices,
            "perplexity": batch_perplexity(indices, self.num_codes),
            "responsibilities": responsibilities,
            "mean_sigma": torch.exp(log_sigma.detach()).mean(),
        }
