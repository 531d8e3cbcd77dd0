"""VQ-VAE trained by soft expectation maximisation (Roy et al. 2018; vib-on-vq-vae.txt eq. 28)."""

from __future__ import annotations

import torch

from .base import Bottleneck, check_choice, check_non_negative, check_positive_int, squared_distances, uniform_unit_scaling_
from .vq import REDUCTIONS, batch_perplexity, latent_terms


class EMVectorQuantizer(Bottleneck):
    """``em_vq``: soft-EM codebook learning.

    E-step: responsibilities p(k | z_e) = softmax_k(-||mu^(k) - z_e||^2) (eq. 28). During training
    ``num_samples`` codes are drawn from them and the decoder input is z_e + sg(mean of the drawn
    codewords - z_e); in evaluation the most probable codeword is used.
    M-step: the codebook is not learned by gradients but by exponential moving averages of the
    responsibility-weighted counts and sums (decay ``decay``, Laplace-smoothed counts).
    Loss = beta * commitment term ||z_e - sg(z_q)||^2.
    """

    def __init__(self, num_codes: int, code_dim: int, beta: float = 0.25, num_samples: int = 10,
                 decay: float = 0.99, reduction: str = "sum"):
        super().__init__(code_dim)
        self.num_codes = check_positive_int("num_codes", num_codes)  # K
        self.beta = check_non_negative("beta", beta)  # commitment weight
        self.num_samples = check_positive_int("num_samples", num_samples)  # Monte Carlo samples per input
        if not 0 <= decay < 1:
            raise ValueError(f"decay={decay!r} is not allowed: decay must be in [0, 1)")
        self.decay = float(decay)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        codebook = uniform_unit_scaling_(torch.empty(num_codes, code_dim))
        self.register_buffer("codebook", codebook)  # (K, d)
        self.register_buffer("ema_count", torch.ones(num_codes))  # (K,)
        self.register_buffer("ema_sum", codebook.clone())  # (K, d)

    def forward(self, z_e: torch.Tensor, extra: torch.Tensor | None = None):
        """z_e (b, d) -> z_q (b, d), aux {"loss", "commitment", "indices", "perplexity", "responsibilities"}."""
        self.check_input(z_e, extra)
        z = z_e.detach()
        responsibilities = torch.softmax(-squared_distances(z, self.codebook), dim=-1)  # (b, K), eq. 28
        if self.training:
            samples = torch.multinomial(responsibilities, self.num_samples, replacement=True)  # (b, m)
            z_q = self.codebook[samples].mean(1)  # (b, d)
            self._m_step(z, responsibilities)
        else:
            z_q = self.codebook[responsibilities.argmax(-1)]
        _, commitment_term = latent_terms(z_e, z_q, self.reduction)
        indices = responsibilities.argmax(-1)
        return z_e + (z_q - z_e).detach(), {
            "loss": self.beta * commitment_term,
            "commitment": commitment_term,
            "indices": indices,
            "perplexity": batch_perplexity(indices, self.num_codes),
            "responsibilities": responsibilities,
        }

    @torch.no_grad()
    def _m_step(self, z: torch.Tensor, responsibilities: torch.Tensor) -> None:
        self.ema_count.mul_(self.decay).add_(responsibilities.sum(0), alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(responsibilities.t() @ z, alpha=1 - self.decay)
        n = self.ema_count.sum()
        count = (self.ema_count + 1e-5) / (n + self.num_codes * 1e-5) * n  # Laplace smoothing
        self.codebook.copy_(self.ema_sum / count.unsqueeze(-1))
