"""The paper's encoders and decoders ("Training Setup", soft-vq-vae-alt-extraction.txt).

MLP for MNIST: encoder D-500-500-2000-d, decoder d-2000-500-500-D, ReLU, Glorot uniform weights.
CNN for 32x32x3 images: 4 convolutions, stride 2, 3x3, 64-128-256-512 channels, and a symmetric
decoder of transposed convolutions. Decoders return logits; ``torch.sigmoid`` gives pixels in [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .validation import check_positive_int

MLP_HIDDEN = (500, 500, 2000)
CNN_CHANNELS = (64, 128, 256, 512)


class Dense(nn.Module):
    """A fully connected layer y = x @ W + b with W stored as (in_features, out_features).

    That is the layout of a Keras ``Dense`` kernel, as in the authors' TensorFlow code; ``nn.Linear``
    stores (out, in). The layout matters when many runs are trained at once
    (:func:`vqlib.training.train_many`): under ``torch.func.vmap`` the multiply becomes a batched
    x @ W over contiguous operands and the weight gradient x^T g arrives in W's own layout, where the
    (out, in) layout costs a transposed copy of every weight gradient: 1.3x the time per run-step
    of the paper's MLP at R = 8 on this project's 2-core CPU (``benchmarks/train_step.py``).
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(in_features, out_features))  # (in, out)
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x, self.weight)  # (b, in) @ (in, out) + (out,)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def glorot_uniform_(module: nn.Module) -> nn.Module:
    """Glorot (Xavier) uniform weights and zero biases for every dense and convolution layer."""
    for m in module.modules():
        if isinstance(m, (Dense, nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return module


def mlp(sizes) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Dense(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Sequential):
    """x (b, *input_shape) -> (b, out_features) through D-500-500-2000-out_features (x flattened to D)."""

    def __init__(self, input_dim: int, out_features: int, hidden=MLP_HIDDEN):
        super().__init__(nn.Flatten(), *mlp((input_dim, *hidden, out_features)))
        glorot_uniform_(self)


class MLPDecoder(nn.Sequential):
    """z (b, d) -> logits (b, *output_shape) through d-2000-500-500-D."""

    def __init__(self, code_dim: int, output_shape, hidden=MLP_HIDDEN):
        output_shape = (output_shape,) if isinstance(output_shape, int) else tuple(output_shape)
        super().__init__(*mlp((code_dim, *reversed(hidden), math.prod(output_shape))), nn.Unflatten(1, output_shape))
        glorot_uniform_(self)


class CNNEncoder(nn.Module):
    """x (b, 3, 32, 32) -> (b, out_features): four 3x3 stride-2 convolutions, then a linear head."""

    def __init__(self, out_features: int, in_channels: int = 3, image_size: int = 32, channels=CNN_CHANNELS):
        super().__init__()
        layers, c = [], in_channels
        for c_out in channels:
            layers += [nn.Conv2d(c, c_out, 3, stride=2, padding=1), nn.ReLU()]
            c = c_out
        self.features = nn.Sequential(*layers, nn.Flatten())
        side = image_size // 2 ** len(channels)
        self.head = Dense(c * side * side, out_features)
        glorot_uniform_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (b, 512 * 2 * 2) -> (b, out_features)


class CNNDecoder(nn.Module):
    """z (b, d) -> logits (b, 3, 32, 32): a linear layer, then four 3x3 stride-2 transposed convolutions."""

    def __init__(self, code_dim: int, out_channels: int = 3, image_size: int = 32, channels=CNN_CHANNELS):
        super().__init__()
        self.side = image_size // 2 ** len(channels)
        self.channels = channels[-1]
        self.head = nn.Sequential(Dense(code_dim, channels[-1] * self.side ** 2), nn.ReLU())
        layers = []
        outs = (*reversed(channels[:-1]), out_channels)
        for i, (c_in, c_out) in enumerate(zip(reversed(channels), outs)):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1))
            if i < len(channels) - 1:
                layers.append(nn.ReLU())
        self.deconv = nn.Sequential(*layers)
        glorot_uniform_(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.head(z).view(-1, self.channels, self.side, self.side)  # (b, 512, 2, 2)
        return self.deconv(h)  # (b, 3, 32, 32)


def make_networks(architecture: str, input_shape, code_dim: int, extra_dim: int, hidden=None, decoder="feedforward",
                  pixelcnn_layers: int = 4, pixelcnn_channels: int = 32):
    """Encoder with out_features = code_dim + extra_dim, and its decoder, for ``architecture`` "mlp" or "cnn".

    ``hidden``: the MLP encoder's hidden widths (default the paper's 500-500-2000; the decoder mirrors them).
    ``decoder="pixelcnn"``: the MLP encoder with an autoregressive decoder (:mod:`vqlib.pixelcnn`) whose
    conditioning network mirrors the encoder.
    """
    hidden = tuple(hidden or MLP_HIDDEN)
    check_positive_int("code_dim", code_dim)
    if decoder == "pixelcnn":
        from .pixelcnn import PixelCNNDecoder  # it refuses images that are not single-channel and square

        return (MLPEncoder(math.prod(input_shape), code_dim + extra_dim, hidden),
                PixelCNNDecoder(code_dim, input_shape, pixelcnn_layers, pixelcnn_channels, tuple(reversed(hidden))))
    if decoder != "feedforward":
        raise ValueError(f"decoder={decoder!r} is not allowed: choose 'feedforward' or 'pixelcnn'")
    if architecture == "mlp":
        input_dim = math.prod(input_shape)
        return MLPEncoder(input_dim, code_dim + extra_dim, hidden), MLPDecoder(code_dim, tuple(input_shape), hidden)
    if architecture == "cnn":
        if len(input_shape) != 3 or input_shape[1] != input_shape[2] or input_shape[1] % 16:
            raise ValueError(f"input_shape={tuple(input_shape)} is not allowed for architecture='cnn': "
                             "it needs (channels, size, size) images with size a multiple of 16")
        c, s, _ = input_shape
        return (CNNEncoder(code_dim + extra_dim, in_channels=c, image_size=s),
                CNNDecoder(code_dim, out_channels=c, image_size=s))
    raise ValueError(f"architecture={architecture!r} is not allowed: choose 'mlp' or 'cnn'")
