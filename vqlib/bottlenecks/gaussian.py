"""Variational autoencoder bottlenecks (Kingma & Welling 2014; Higgins et al. 2017)."""

from __future__ import annotations

import torch

from ..validation import check_non_negative
from .base import Bottleneck, standard_normal


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL( N(mean, diag(exp(log_var))) || N(0, I) ) per row: 0.5 * sum(mean^2 + var - 1 - log_var)."""
    return gaussian_kl_per_dim(mean, log_var).sum(-1)  # (b,)


def gaussian_kl_per_dim(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """The KL of :func:`gaussian_kl` for each latent dimension (b, d): 0.5 * (mean^2 + var - 1 - log_var)."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var)


class VAE(Bottleneck):
    """``vae`` / ``beta_vae``: reparameterised Gaussian posterior with a KL term to N(0, I).

    z_e is the posterior mean, ``extra`` (b, d) its log-variance (a second encoder head, as in the
    paper's "two separate encoder output layers"). Training samples z_q = z_e + exp(log_var / 2) * eps;
    evaluation returns the mean. Loss = beta * KL, averaged over the batch (beta = 1: the VAE ELBO;
    the paper's beta-VAE uses beta = 20 on MNIST, Table 1, and 100 on SVHN/CIFAR-10, Table 2).

    ``free_bits`` lambda (Kingma et al. 2016, "free bits"): the loss takes each latent dimension's
    batch-mean KL as at least lambda nats, sum_j max(lambda, E_batch KL_j), so dimensions below the
    floor get no gradient pushing them further towards the prior. ``aux["kl"]`` is always the true KL.
    """

    def __init__(self, code_dim: int, beta: float = 1.0, free_bits: float = 0.0):
        super().__init__(code_dim)
        self.extra_dim = code_dim
        self.register_scalar("beta", check_non_negative("beta", beta))  # KL weight (beta-VAE)
        self.register_scalar("free_bits", check_non_negative("free_bits", free_bits))  # lambda, nats per dimension

    def sample_noise(self, batch_size, generator=None, device=None):
        return standard_normal(batch_size, self.code_dim, generator, device)  # eps (b, d)

    def forward(self, z_e: torch.Tensor, extra: torch.Tensor | None = None, noise: torch.Tensor | None = None):
        """z_e (b, d) mean, extra (b, d) log-variance, noise (b, d) eps -> z_q (b, d), aux {"loss", "kl"}."""
        self.check_input(z_e, extra)
        log_var = extra
        eps = self.training_noise(z_e, noise)
        z_q = z_e + torch.exp(0.5 * log_var) * eps if eps is not None else z_e
        kl_per_dim = gaussian_kl_per_dim(z_e, log_var).mean(0)  # (d,) batch means
        kl_floored = torch.maximum(kl_per_dim, self.free_bits).sum()  # = the KL when free_bits = 0
        return z_q, {"loss": self.beta * kl_floored, "kl": kl_per_dim.sum()}
