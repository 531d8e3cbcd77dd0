"""The autoencoder: encoder -> bottleneck -> decoder, identical for every model of a table."""

from __future__ import annotations

import torch
from torch import nn

from .bottlenecks import Bottleneck, make_bottleneck
from .networks import make_networks
from .pixelcnn import PixelCNNDecoder


class Autoencoder(nn.Module):
    """x -> encoder -> (z_e, extra) -> bottleneck -> z_q -> decoder -> logits of x_hat.

    The encoder's last layer has code_dim + bottleneck.extra_dim units, split into z_e and the
    extra head (log-variances, alpha logits or log sigmas): the paper's "two separate encoder
    output layers". Only the bottleneck differs between the compared models.

    With ``decoder="pixelcnn"`` the decoder is autoregressive (:class:`vqlib.pixelcnn.PixelCNNDecoder`):
    it reads x itself, each logit from the pixels before it, so ``forward`` passes it x too.
    """

    def __init__(self, bottleneck: Bottleneck, architecture: str, input_shape, hidden=None, decoder="feedforward",
                 pixelcnn_layers: int = 4, pixelcnn_channels: int = 32):
        super().__init__()
        self.bottleneck = bottleneck
        self.architecture = architecture
        self.input_shape = tuple(input_shape)
        self.encoder, self.decoder = make_networks(architecture, self.input_shape, bottleneck.code_dim,
                                                   bottleneck.extra_dim, hidden, decoder, pixelcnn_layers,
                                                   pixelcnn_channels)

    @classmethod
    def from_config(cls, config, input_shape) -> "Autoencoder":
        architecture = config.architecture
        if architecture == "auto":
            architecture = "cnn" if len(input_shape) == 3 else "mlp"
        bottleneck = make_bottleneck(
            config.bottleneck, code_dim=config.code_dim, num_codes=config.num_codes, beta=config.beta,
            noise_std=config.noise_std, sigma_source=config.sigma_source, gradient=config.gradient, formula=config.formula,
            reduction=config.reduction, em_update=config.em_update, num_samples=config.num_samples,
            decay=config.decay, temperature=config.temperature, noise_scale=config.noise_scale,
            free_bits=config.free_bits)
        return cls(bottleneck, architecture, input_shape, hidden=config.hidden, decoder=config.decoder,
                   pixelcnn_layers=config.pixelcnn_layers, pixelcnn_channels=config.pixelcnn_channels)

    @property
    def autoregressive(self) -> bool:
        return isinstance(self.decoder, PixelCNNDecoder)

    def decode(self, z_q: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of p(x | z_q) (b, *input_shape); an autoregressive decoder also needs x itself."""
        if self.autoregressive:
            if x is None:
                raise ValueError("decoder='pixelcnn' is autoregressive: decode(z_q, x) needs the images x whose "
                                 "pixels it predicts one by one (or use sample(z_q) to draw images)")
            return self.decoder(z_q, x)
        return self.decoder(z_q)

    @torch.no_grad()
    def sample(self, z_q: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Binary images x ~ p(x | z_q), one per row of z_q: pixel by pixel for an autoregressive decoder."""
        if self.autoregressive:
            return self.decoder.sample(z_q, generator)
        p = torch.sigmoid(self.decoder(z_q))
        return (torch.rand(p.shape, generator=generator, device=p.device) < p).to(p.dtype)

    def encode_heads(self, x: torch.Tensor):
        h = self.encoder(x)  # (b, d + extra_dim)
        z_e, extra = h.split([self.bottleneck.code_dim, self.bottleneck.extra_dim], dim=-1)
        return z_e, (extra if self.bottleneck.extra_dim else None)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x -> z_e (b, d), the representation the downstream tasks use (before any noise or quantisation)."""
        return self.encode_heads(x)[0]

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        """x (b, *input_shape) -> (x_logits (b, *input_shape), z_e (b, d), aux of the bottleneck).

        ``noise``: the bottleneck's random numbers for this pass (see ``Bottleneck.sample_noise``);
        None draws them from torch's global generator in training.
        """
        z_e, extra = self.encode_heads(x)
        z_q, aux = self.bottleneck(z_e, extra, noise)
        return self.decode(z_q, x), z_e, aux
