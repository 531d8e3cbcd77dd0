"""The autoencoder: encoder -> bottleneck -> decoder, identical for every model of a table."""

from __future__ import annotations

import torch
from torch import nn

from .bottlenecks import Bottleneck, make_bottleneck
from .networks import CNNEncoder, MLPEncoder, make_networks
from .pixelcnn import PixelCNNDecoder
from .precision import full_precision
from .validation import check_number


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

        Under bf16 autocast (``RunConfig.precision``, :mod:`vqlib.precision`) the encoder and decoder
        multiply in bf16, while the bottleneck gets z_e and its extra head back in the parameters'
        dtype and runs with autocast off; the logits come out in bf16.
        """
        z_e, extra = self.encode_heads(x)
        with full_precision(z_e):
            dtype = self.bottleneck_dtype
            z_e = z_e.to(dtype)  # (b, d); a no-op without autocast
            extra = extra.to(dtype) if extra is not None else None
            z_q, aux = self.bottleneck(z_e, extra, noise)
        return self.decode(z_q, x), z_e, aux

    @property
    def bottleneck_dtype(self) -> torch.dtype:
        """The dtype the bottleneck computes in: that of the encoder's parameters (float32 unless made otherwise)."""
        return next(self.encoder.parameters()).dtype


@torch.no_grad()
def fit_encoder_output(model: Autoencoder, x: torch.Tensor, code, ridge: float = 1e-6) -> float:
    """Set the encoder's output layer so that z_e is close to ``code`` on ``x``; return the fit's RMS error.

    x (n, *input_shape), code (n, d). The hidden layers keep their weights; the z_e columns of the output
    layer become the ridge regression of ``code`` on the last hidden features h (n, m):
    W = (H^T H / n + ridge I)^+ H^T (code - mean code) / n, with H the centred features and ^+ the
    pseudo-inverse; bias = mean code - (mean h) W.
    The columns of an extra head (log-variances, sigmas, ...) are left as they were. A way to start training
    from a chosen code, e.g. :func:`vqlib.synthetic.wound_code`.
    """
    encoder = model.encoder
    if isinstance(encoder, MLPEncoder):
        features, head = nn.Sequential(*list(encoder)[:-1]), encoder[-1]
    elif isinstance(encoder, CNNEncoder):
        features, head = encoder.features, encoder.head
    else:
        raise TypeError(f"fit_encoder_output needs an MLP or CNN encoder, not {type(encoder).__name__}")
    check_number("ridge", ridge)
    d = model.bottleneck.code_dim
    device = head.weight.device
    code = torch.as_tensor(code, dtype=torch.float64, device=device).reshape(len(x), -1)
    if code.shape[1] != d:
        raise ValueError(f"code has {code.shape[1]} columns, the model's code_dim is {d}")
    h = features(x.to(device)).double()  # (n, m)
    h_mean, code_mean = h.mean(0), code.mean(0)
    centred = h - h_mean
    gram = centred.T @ centred / len(h) + ridge * torch.eye(h.shape[1], dtype=h.dtype, device=device)
    # the pseudo-inverse: with ridge = 0 and dead or repeated features the Gram matrix is singular
    weight = torch.linalg.pinv(gram, hermitian=True) @ (centred.T @ (code - code_mean) / len(h))  # (m, d)
    head.weight[:, :d] = weight.to(head.weight.dtype)  # Dense stores (in, out)
    head.bias[:d] = (code_mean - h_mean @ weight).to(head.bias.dtype)
    return float((model.encode(x.to(device)).double() - code).pow(2).sum(-1).mean().sqrt())
