"""The reconstruction term of eq. 27, -log p(x | z_q)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

RECONSTRUCTIONS = ("bernoulli", "nmse")


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor, kind: str, data_variance: float | None = None):
    """-log p(x | z_q) per example, averaged over the batch.

    ``bernoulli``: binary cross-entropy summed over pixels (the paper's -log p(x | z_hat) for x in [0, 1]);
    ``nmse``: mean squared error of sigmoid(logits) divided by the data variance (published code).
    """
    if kind == "bernoulli":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
    if kind == "nmse":
        return F.mse_loss(torch.sigmoid(logits), x) / data_variance
    raise ValueError(f"reconstruction={kind!r} is not allowed: choose one of {', '.join(map(repr, RECONSTRUCTIONS))}")
