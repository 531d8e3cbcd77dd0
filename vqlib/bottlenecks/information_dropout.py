"""Information dropout (Achille & Soatto, IEEE TPAMI 2018)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..validation import check_non_negative
from .base import Bottleneck, standard_normal


def information_dropout_alpha(alpha_logits: torch.Tensor, max_alpha: float) -> torch.Tensor:
    """alpha(x) = 0.001 + max_alpha * sigmoid(logits): the noise scale, kept in (0.001, 0.001 + max_alpha)."""
    return 0.001 + max_alpha * torch.sigmoid(alpha_logits)


def information_dropout_kl(alpha: torch.Tensor, max_alpha: float) -> torch.Tensor:
    """KL term per row for ReLU activations and the log-uniform prior: sum_j -log(alpha_j / (max_alpha + 0.001)).

    Achille & Soatto (Prop. 5) give KL = -log alpha + const for this prior; the constant is chosen,
    as in their code, so that the term is zero at the largest allowed noise and positive below it.
    """
    return -(torch.log(alpha) - math.log(max_alpha + 0.001)).sum(-1)  # (b,)


class InformationDropout(Bottleneck):
    """``info_dropout``: z_q = relu(z_e) * exp(alpha(x) * eps), eps ~ N(0, 1) (log-normal noise).

    ``extra`` (b, d) holds the alpha logits from a second encoder head. alpha is clamped as in the
    original paper, alpha = 0.001 + max_alpha * sigmoid(.), not the unclamped variant of the
    authors' published notebook. Evaluation applies no noise. Loss = beta * KL averaged over the batch.
    """

    def __init__(self, code_dim: int, beta: float = 1.0, max_alpha: float = 0.7):
        super().__init__(code_dim)
        self.extra_dim = code_dim
        self.register_scalar("beta", check_non_negative("beta", beta))  # KL weight
        self.max_alpha = check_non_negative("max_alpha", max_alpha)  # Achille & Soatto use 0.7

    def sample_noise(self, batch_size, generator=None, device=None):
        return standard_normal(batch_size, self.code_dim, generator, device)  # eps (b, d)

    def forward(self, z_e: torch.Tensor, extra: torch.Tensor | None = None, noise: torch.Tensor | None = None):
        """z_e (b, d), extra (b, d) alpha logits, noise (b, d) eps -> z_q (b, d), aux {"loss", "kl", "alpha"}."""
        self.check_input(z_e, extra)
        alpha = information_dropout_alpha(extra, self.max_alpha)
        activation = F.relu(z_e)
        eps = self.training_noise(z_e, noise)
        z_q = activation * torch.exp(alpha * eps) if eps is not None else activation
        kl = information_dropout_kl(alpha, self.max_alpha).mean()
        return z_q, {"loss": self.beta * kl, "kl": kl, "alpha": alpha.detach().mean()}
