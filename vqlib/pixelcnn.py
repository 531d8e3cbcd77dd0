"""An autoregressive decoder: a small PixelCNN conditioned on the code z (vlae-summary.txt).

    p(x | z) = prod_i p(x_i | x_<i, z),   p(x_i | x_<i, z) = Bernoulli(sigmoid(logit_i(x_<i, z)))

with the pixels i in raster order (row by row, left to right). The decoder has two parts:

* a conditioning network, the paper's MLP decoder z -> d-2000-500-500-(C H W), whose output is
  ``channels`` feature maps of the image's size: everything the decoder knows about z;
* L masked 3x3 convolutions over the image x (van den Oord et al. 2016): the first with mask "A",
  which hides the centre pixel and every later one, the others with mask "B", which shows the centre
  (a feature at i already depends on x_<i only). Each layer adds a 1x1 projection of the
  conditioning maps before its ReLU; from the second layer on, each adds its output to its input
  (a residual connection, which lets the 8-layer stack train in a few thousand steps), and a 1x1
  convolution of the last layer's features gives the logits.

L sets how much of the image the decoder can read: after L layers the logit of pixel i sees the
pixels up to L rows above and L columns to either side of i that come before it. L = 0 is no
autoregression at all: logit_i is a 1x1 convolution of the conditioning maps, a function of z
alone, and p(x | z) factorises over pixels as for the feed-forward decoders. With L > 0 the decoder
can model local structure (stroke texture, thickness) without the code, which is what lets a VAE
leave its code unused (posterior collapse) or, with a small window, push only global structure
into it (Chen et al.'s lossy code).

Images are single-channel and square; the decoder takes and returns them flat, (b, H * W), like
every other MNIST model of the library.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .validation import check_positive_int
from .networks import glorot_uniform_, mlp

KERNEL_SIZE = 3
MASK_TYPES = ("A", "B")


def raster_mask(kernel_size: int, mask_type: str) -> torch.Tensor:
    """(k, k) 0/1 mask of a causal convolution: 1 above the centre row and left of the centre in its
    row; the centre itself is 1 for mask "B" and 0 for mask "A"."""
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type={mask_type!r} is not allowed: choose 'A' or 'B'")
    mask = torch.zeros(kernel_size, kernel_size)
    centre = kernel_size // 2
    mask[:centre] = 1
    mask[centre, :centre + (mask_type == "B")] = 1
    return mask


class MaskedConv2d(nn.Conv2d):
    """A 'same'-padded convolution whose kernel is multiplied by :func:`raster_mask` in every pass."""

    def __init__(self, in_channels: int, out_channels: int, mask_type: str, kernel_size: int = KERNEL_SIZE):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.mask_type = mask_type
        self.register_buffer("mask", raster_mask(kernel_size, mask_type), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mask={self.mask_type}"


def image_side(input_shape) -> int:
    """The side H = W of the single-channel square images of ``input_shape`` (flat (H*W,) or (1, H, W))."""
    shape = tuple(input_shape)
    flat = math.prod(shape)
    side = math.isqrt(flat)
    if side * side != flat or (len(shape) == 3 and shape[0] != 1) or len(shape) not in (1, 3):
        raise ValueError(f"input_shape={shape} is not allowed for decoder='pixelcnn': it needs single-channel "
                         "square images, flat (H*W,) or (1, H, W), e.g. the binary MNIST datasets")
    return side


class PixelCNNDecoder(nn.Module):
    """(z (b, d), x (b, H*W)) -> logits (b, H*W) of p(x_i | x_<i, z); see the module docstring.

    ``layers``: L >= 0 masked convolutions; ``channels``: width of every layer and of the
    conditioning maps; ``hidden``: the conditioning MLP's hidden widths, from z outwards.
    """

    def __init__(self, code_dim: int, input_shape, layers: int, channels: int = 32, hidden=(2000, 500, 500)):
        super().__init__()
        layers = check_positive_int("pixelcnn_layers", layers, minimum=0)
        self.channels = check_positive_int("pixelcnn_channels", channels)
        self.side = image_side(input_shape)
        self.layers = layers
        self.condition = mlp((code_dim, *hidden, channels * self.side ** 2))
        self.masked = nn.ModuleList(MaskedConv2d(1 if i == 0 else channels, channels, "A" if i == 0 else "B")
                                    for i in range(layers))
        self.projections = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(layers))
        self.output = nn.Conv2d(channels, 1, 1)
        glorot_uniform_(self)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.condition_maps(z), x)

    def condition_maps(self, z: torch.Tensor) -> torch.Tensor:
        """z (b, d) -> (b, C, H, W): z's say at every pixel (the conditioning MLP, the costly part)."""
        return self.condition(z).view(-1, self.channels, self.side, self.side)

    def logits(self, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Conditioning maps c (b, C, H, W) and images x (b, H*W) -> logits (b, H*W)."""
        s = self.side
        return self._logit_maps(c, x.reshape(-1, 1, s, s)).reshape(-1, s * s)  # (b, H*W)

    def _logit_maps(self, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """c (b, C, h, W) and x (b, 1, h, W) -> logits (b, 1, h, W), for any number h of rows."""
        h = x if self.layers else c
        for i, (masked, projection) in enumerate(zip(self.masked, self.projections)):
            update = torch.relu(masked(h) + projection(c))  # the first layer (mask A) never sees x_i itself
            h = update if i == 0 else h + update  # residual from the second layer on: deep stacks train
        return self.output(h)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Binary images x ~ p(x | z), one per row of z (b, d) -> (b, H*W), pixel by pixel in raster order.

        The conditioning maps are computed once. After L layers the logit of a pixel in row r reads
        rows r - L .. r only, so each pass runs the convolutions on those L + 1 rows; L = 0 (no
        autoregression) needs one pass for every pixel.
        """
        s, L = self.side, self.layers
        c = self.condition_maps(z)  # (b, C, H, W)
        if not L:
            p = torch.sigmoid(self.logits(c, torch.zeros(z.shape[0], s * s, device=z.device, dtype=z.dtype)))
            return (torch.rand(p.shape, generator=generator, device=z.device, dtype=z.dtype) < p).to(z.dtype)
        x = torch.zeros(z.shape[0], 1, s, s, device=z.device, dtype=z.dtype)
        for row in range(s):
            top = max(0, row - L)
            for col in range(s):
                p = torch.sigmoid(self._logit_maps(c[:, :, top:row + 1], x[:, :, top:row + 1])[:, 0, -1, col])  # (b,)
                x[:, 0, row, col] = (torch.rand(p.shape, generator=generator, device=z.device, dtype=z.dtype)
                                     < p).to(z.dtype)
        return x.reshape(-1, s * s)
