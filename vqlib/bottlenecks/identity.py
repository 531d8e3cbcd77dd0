"""The plain autoencoder's bottleneck: the identity."""

from __future__ import annotations

import torch

from .base import Bottleneck


class Identity(Bottleneck):
    """``ae``: z_q = z_e with a zero loss, so the training loop never branches on the model kind."""

    def forward(self, z_e: torch.Tensor, extra: torch.Tensor | None = None, noise: torch.Tensor | None = None):
        """z_e (b, d) -> z_q (b, d) = z_e, aux {"loss": 0}."""
        self.check_input(z_e, extra)
        return z_e, {"loss": self.zero_loss(z_e)}
