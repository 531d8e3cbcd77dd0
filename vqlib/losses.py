"""The reconstruction term of eq. 27, -log p(x | z_q), and its gradient with respect to the logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor, kind: str, data_variance: float | None = None):
    """-log p(x | z_q) per example, averaged over the batch.

    ``bernoulli``: binary cross-entropy summed over pixels (the paper's -log p(x | z_hat) for x in [0, 1]);
    ``nmse``: mean squared error of sigmoid(logits) divided by the data variance (published code).
    """
    if kind == "bernoulli":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
    return _nmse(torch.sigmoid(logits), x, data_variance)


def _nmse(pixels: torch.Tensor, x: torch.Tensor, data_variance: float) -> torch.Tensor:
    return F.mse_loss(pixels, x) / data_variance


def reconstruction_loss_and_grad(logits: torch.Tensor, x: torch.Tensor, kind: str, data_variance: float | None = None):
    """:func:`reconstruction_loss` and its gradient wrt ``logits``, computed as autograd computes it (bit for bit)."""
    ones = torch.ones((), dtype=logits.dtype, device=logits.device)
    if kind == "bernoulli":
        # gradient (sigmoid(l) - x) / b: autograd's formula for binary_cross_entropy_with_logits
        return reconstruction_loss(logits, x, kind), (torch.sigmoid(logits) - x) * (ones / x.shape[0])
    pixels = torch.sigmoid(logits)
    grad_pixels = torch.ops.aten.mse_loss_backward(ones / data_variance, pixels, x, 1)  # 1: reduction "mean"
    return _nmse(pixels, x, data_variance), torch.ops.aten.sigmoid_backward(grad_pixels, pixels)
