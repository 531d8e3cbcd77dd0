"""VQ-VAE trained by soft expectation maximisation (Roy et al. 2018; vib-on-vq-vae.txt eq. 28)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..validation import check_choice, check_non_negative, check_positive_int
from .base import Bottleneck, squared_distances, uniform_unit_scaling_
from .vq import REDUCTIONS, batch_perplexity, latent_terms


EM_UPDATES = ("sampled", "expected")  # M-step statistics: Roy et al.'s sampled counts / the exact responsibilities


class EMVectorQuantizer(Bottleneck):
    """``em_vq``: soft-EM codebook learning (Roy et al. 2018, arXiv 1805.11063).

    E-step: responsibilities p(k | z_e) = softmax_k(-||mu^(k) - z_e||^2 / tau) (eq. 28, tau = 1; the
    temperature ``tau`` is the book's extension, for a rate-distortion curve). During training
    ``num_samples`` (m) codes are drawn from them (Gumbel-max: argmax_k log p(k | z_e) + g_k with
    standard Gumbel noise g, one draw per sample) and the decoder input is z_e + sg(mean of the m drawn
    codewords - z_e); in evaluation the most probable codeword is used.
    M-step: the codebook is not learned by gradients but by exponential moving averages (decay
    ``decay``) of per-code counts and sums, with Laplace-smoothed counts. ``em_update="sampled"``
    (Roy et al. and tensor2tensor's ``discretization.py``, the default) feeds the *sampled* one-hot
    codes, averaged over the m samples, into the averages; ``"expected"`` feeds the exact
    responsibilities (their expectation: less noise, the same fixed point).
    Loss = beta * commitment term ||z_e - sg(z_q)||^2.
    """

    def __init__(self, num_codes: int, code_dim: int, beta: float = 0.25, num_samples: int = 10,
                 decay: float = 0.999, reduction: str = "sum", em_update: str = "sampled", temperature: float = 1.0):
        super().__init__(code_dim)
        self.num_codes = check_positive_int("num_codes", num_codes, minimum=2)  # K
        self.register_scalar("beta", check_non_negative("beta", beta))  # commitment weight
        self.num_samples = check_positive_int("num_samples", num_samples)  # m, samples per input
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1:
            raise ValueError(f"decay={decay!r} is not allowed: decay must be a number in (0, 1)")
        self.register_scalar("decay", decay)  # of the moving averages (Roy et al.: 0.999)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"temperature={temperature!r} is not allowed: temperature must be a number > 0")
        self.register_scalar("temperature", temperature)  # tau in softmax(-d^2 / tau)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.em_update = check_choice("em_update", em_update, EM_UPDATES)
        codebook = uniform_unit_scaling_(torch.empty(num_codes, code_dim))
        self.register_buffer("codebook", codebook)  # (K, d)
        self.register_buffer("ema_count", torch.ones(num_codes))  # (K,)
        self.register_buffer("ema_sum", codebook.clone())  # (K, d)

    def sample_noise(self, batch_size, generator=None, device=None):
        u = torch.rand(batch_size, self.num_samples, self.num_codes, generator=generator, device=device)
        return -torch.log(-torch.log(u))  # standard Gumbel noise (b, m, K)

    def forward(self, z_e: torch.Tensor, extra: torch.Tensor | None = None, noise: torch.Tensor | None = None):
        """z_e (b, d), noise (b, m, K) Gumbel -> z_q (b, d), aux {"loss", "commitment", "indices", "perplexity",
        "responsibilities"}."""
        self.check_input(z_e, extra)
        z = z_e.detach()
        distances = squared_distances(z, self.codebook)  # (b, K)
        log_responsibilities = torch.log_softmax(-distances / self.temperature, dim=-1)  # (b, K), eq. 28
        responsibilities = log_responsibilities.exp()
        gumbel = self.training_noise(z_e, noise)
        if gumbel is not None:
            samples = (log_responsibilities.unsqueeze(-2) + gumbel).argmax(-1)  # (b, m) draws from p(k | z_e)
            frequencies = F.one_hot(samples, self.num_codes).to(z.dtype).mean(-2)  # (b, K)
            z_q = frequencies @ self.codebook  # (b, d), the mean of the drawn codewords
            self._m_step(z, frequencies if self.em_update == "sampled" else responsibilities)
        else:
            z_q = F.embedding(responsibilities.argmax(-1), self.codebook)
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
    def _m_step(self, z: torch.Tensor, weights: torch.Tensor) -> None:
        """Moving averages of the counts sum_i w_ik and sums sum_i w_ik z_i; mu_k = sum_k / smoothed count_k."""
        self.ema_count.mul_(self.decay).add_((1 - self.decay) * weights.sum(0))
        self.ema_sum.mul_(self.decay).add_((1 - self.decay) * (weights.t() @ z))
        n = self.ema_count.sum()
        count = (self.ema_count + 1e-5) / (n + self.num_codes * 1e-5) * n  # Laplace smoothing
        self.codebook.copy_(self.ema_sum / count.unsqueeze(-1))
