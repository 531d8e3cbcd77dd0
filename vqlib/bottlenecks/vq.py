"""The hard VQ-VAE bottleneck (van den Oord et al. 2017; soft-vq-vae.txt eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..validation import check_choice, check_non_negative, check_positive_int
from .base import Bottleneck, code_counts, perplexity_from_counts, squared_distances, uniform_unit_scaling_

REDUCTIONS = ("sum", "mean")


def latent_terms(z_e: torch.Tensor, z_q: torch.Tensor, reduction: str):
    """Codebook term ||sg(z_e) - z_q||^2 and commitment term ||z_e - sg(z_q)||^2 (eq. 27).

    ``reduction="sum"`` sums over the code dimension and averages over the batch (the squared norm
    of eq. 27, on the same per-sample scale as a summed reconstruction log-likelihood);
    ``"mean"`` averages over all elements (``tf.reduce_mean``, as in the published code).
    """
    codebook = (z_e.detach() - z_q).pow(2)
    commitment = (z_e - z_q.detach()).pow(2)
    if reduction == "sum":
        return codebook.sum(-1).mean(), commitment.sum(-1).mean()
    return codebook.mean(), commitment.mean()


def batch_perplexity(indices: torch.Tensor, num_codes: int) -> torch.Tensor:
    return perplexity_from_counts(code_counts(indices, num_codes)).float()


class VectorQuantizer(Bottleneck):
    """``vq``: nearest-neighbour quantizer z_q = mu^(c), c = argmin_k ||z_e - mu^(k)||_2 (eq. 1).

    The decoder input is z_e + sg(z_q - z_e) (straight-through gradient to the encoder).
    Loss = codebook term + beta * commitment term. The codebook (K, d) is initialised by
    uniform unit scaling, as in the paper's training setup.
    """

    def __init__(self, num_codes: int, code_dim: int, beta: float = 0.25, reduction: str = "sum"):
        super().__init__(code_dim)
        self.num_codes = check_positive_int("num_codes", num_codes)  # K
        self.register_scalar("beta", check_non_negative("beta", beta))  # commitment weight (eq. 27)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.codebook = nn.Parameter(uniform_unit_scaling_(torch.empty(num_codes, code_dim)))  # (K, d)

    def forward(self, z_e: torch.Tensor, extra: torch.Tensor | None = None, noise: torch.Tensor | None = None):
        """z_e (b, d) -> z_q (b, d), aux {"loss", "codebook", "commitment", "indices", "perplexity"}."""
        self.check_input(z_e, extra)
        indices = squared_distances(z_e.detach(), self.codebook.detach()).argmin(-1)  # (b,)
        z_q = F.embedding(indices, self.codebook)  # (b, d), the nearest codewords
        codebook_term, commitment_term = latent_terms(z_e, z_q, self.reduction)
        return z_e + (z_q - z_e).detach(), {
            "loss": codebook_term + self.beta * commitment_term,
            "codebook": codebook_term,
            "commitment": commitment_term,
            "indices": indices,
            "perplexity": batch_perplexity(indices, self.num_codes),
        }
