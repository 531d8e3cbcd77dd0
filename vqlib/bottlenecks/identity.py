"""The plain autoencoder's bottleneck, the identity, and its noisy twin."""

from __future__ import annotations

import torch

from ..validation import check_choice, check_non_negative
from .base import NOISE_SCALES, Bottleneck, noisy_code, standard_normal


class Identity(Bottleneck):
    """``ae``: z_q = z_e with a zero loss, so the training loop never branches on the model kind."""

    def forward(self, z_e: torch.Tensor, extra: torch.Tensor | None = None, noise: torch.Tensor | None = None):
        """z_e (b, d) -> z_q (b, d) = z_e, aux {"loss": 0}."""
        self.check_input(z_e, extra)
        return z_e, {"loss": self.zero_loss(z_e)}


class NoisyIdentity(Bottleneck):
    """``noisy_ae``: an autoencoder whose decoder sees the soft VQ-VAE's noisy code z_e' = z_e + eps
    in training (the same ``noise_std`` and ``noise_scale``), and z_e in evaluation; no quantizer,
    zero loss. It is the control that tells the noise's effect from the Bayesian estimator's: a soft
    VQ-VAE that beats ``ae`` but not ``noisy_ae`` owes its gain to the noise."""

    def __init__(self, code_dim: int, noise_std: float = 0.1, noise_scale: str = "fixed"):
        super().__init__(code_dim)
        self.register_scalar("noise_std", check_non_negative("noise_std", noise_std))
        self.noise_scale = check_choice("noise_scale", noise_scale, NOISE_SCALES)

    def sample_noise(self, batch_size, generator=None, device=None):
        return standard_normal(batch_size, self.code_dim, generator, device)  # eps (b, d), scaled by noise_std

    def forward(self, z_e: torch.Tensor, extra: torch.Tensor | None = None, noise: torch.Tensor | None = None):
        """z_e (b, d), noise (b, d) eps -> z_q (b, d) = z_e' in training, z_e in evaluation; aux {"loss": 0}."""
        self.check_input(z_e, extra)
        return noisy_code(z_e, self.training_noise(z_e, noise), self.noise_std, self.noise_scale), \
            {"loss": self.zero_loss(z_e)}
