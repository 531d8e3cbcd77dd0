"""What every bottleneck shares: the call shape, input checks and codebook statistics.

Every bottleneck is called the same way::

    z_q, aux = bottleneck(z_e, extra)

``z_e`` (b, d) is the encoder output of width ``code_dim``; ``extra`` is the output of a second
encoder head of width ``bottleneck.extra_dim`` (log-variances for the VAE, alpha logits for
information dropout, per-input log sigmas for the soft VQ-VAE) or ``None`` when
``extra_dim == 0``. ``aux`` is a dict holding the weighted ``"loss"`` (a scalar tensor, already
including the bottleneck's own weights such as beta) and its named terms; quantizers also return
``"indices"`` (b,) of the nearest (or most probable) codeword and the batch ``"perplexity"``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..validation import check_positive_int

# helpers


def uniform_unit_scaling_(tensor: torch.Tensor) -> torch.Tensor:
    """TensorFlow's ``uniform_unit_scaling`` initializer for a (K, d) codebook.

    TF stores the VQ-VAE codebook as (d, K), so its fan-in is d: U(-sqrt(3/d), sqrt(3/d)).
    """
    bound = math.sqrt(3.0 / tensor.shape[-1])
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


def squared_distances(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """||z_i - mu_k||^2 for every row of z (b, d) and codeword (K, d) -> (b, K), differentiable in both.

    The value is |z|^2 - 2 z.mu + |mu|^2 evaluated in float64 and rounded once: in float32 that
    form cancels catastrophically when codes lie far from the origin and the posterior is sharp
    (tiny sigma), while in float64 its error, about 1e-16 (|z|^2 + |mu|^2), stays below float32's
    resolution of the distance itself. It needs no (b, K, d) array of differences. Autograd
    differentiates it like any other op (in float64, then rounded once to z's dtype).
    """
    if z.device.type == "mps":  # no float64 on MPS: the differences, exact in float32
        return (z.unsqueeze(-2) - codebook).pow(2).sum(-1)
    z64, codebook64 = z.double(), codebook.double()
    distances = (z64 * z64).sum(-1, keepdim=True) - 2 * z64 @ codebook64.transpose(-1, -2) + (codebook64 * codebook64).sum(-1)
    return distances.clamp_min(0).to(z.dtype)  # (b, K)


def code_counts(indices: torch.Tensor, num_codes: int) -> torch.Tensor:
    """How often each of the ``num_codes`` codewords occurs in ``indices`` (b,) -> (K,) int64.

    A sum of one-hot rows rather than ``bincount``, so that it also runs under ``torch.func.vmap``
    (many runs trained at once, see :mod:`vqlib.training`).
    """
    return torch.nn.functional.one_hot(indices, num_codes).sum(-2)


def perplexity_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the code-usage distribution given by ``counts`` (..., K) -> (...)."""
    counts = counts.to(torch.float32 if counts.device.type == "mps" else torch.float64)  # MPS has no float64
    p = counts / counts.sum(-1, keepdim=True).clamp_min(1)
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
    return torch.exp(entropy)


class CodebookUsage:
    """Counts how often each codeword is chosen over a whole pass (not one batch).

    >>> usage = CodebookUsage(num_codes=4)
    >>> usage.update(torch.tensor([0, 0, 1, 3]))
    >>> usage.codes_used
    3
    """

    def __init__(self, num_codes: int):
        self.counts = torch.zeros(check_positive_int("num_codes", num_codes), dtype=torch.long)

    def update(self, indices: torch.Tensor) -> None:
        self.counts += code_counts(indices.reshape(-1).cpu(), len(self.counts))

    @property
    def perplexity(self) -> float:
        return float(perplexity_from_counts(self.counts))

    @property
    def codes_used(self) -> int:
        return int((self.counts > 0).sum())


class Bottleneck(nn.Module):
    """Base class: stores ``code_dim``, checks inputs, declares the width of the extra head.

    Randomness: a bottleneck that is random in training (the VAE's reparameterisation, information
    dropout's noise, the soft VQ-VAE's noisy code, EM's sampled codes) draws everything one forward
    pass needs in :meth:`sample_noise`, and ``forward(z_e, extra, noise)`` uses the ``noise`` it is
    given, or draws it from torch's global generator when none is given. The training loop gives it,
    drawn from each run's own generator, so that a run's result does not depend on which other runs
    are trained beside it (:func:`vqlib.training.train_many`).

    Scalar hyper-parameters that runs trained together may differ in (``beta``, ``noise_std``) are
    registered as buffers (:meth:`register_scalar`), so a stack of runs carries one value per run.
    """

    extra_dim: int = 0  # width of the second encoder head this bottleneck reads (0: none)
    num_codes: int | None = None  # quantizers only

    def __init__(self, code_dim: int):
        super().__init__()
        self.code_dim = check_positive_int("code_dim", code_dim)

    def register_scalar(self, name: str, value: float) -> None:
        """A scalar hyper-parameter as a non-persistent buffer (not in checkpoints: the config holds it)."""
        self.register_buffer(name, torch.tensor(float(value)), persistent=False)

    def sample_noise(self, batch_size: int, generator: torch.Generator | None = None,
                     device=None) -> torch.Tensor | None:
        """The random numbers of one training forward pass over ``batch_size`` inputs (None: none needed)."""
        return None

    def training_noise(self, z_e: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor | None:
        """``noise`` in training (drawn from the global generator when None); None in evaluation."""
        if not self.training:
            return None
        return noise if noise is not None else self.sample_noise(z_e.shape[0], device=z_e.device)

    def check_input(self, z_e: torch.Tensor, extra: torch.Tensor | None) -> None:
        if z_e.dim() != 2 or z_e.shape[-1] != self.code_dim:
            raise ValueError(
                f"z_e has shape {tuple(z_e.shape)}: {type(self).__name__} expects (batch, code_dim) "
                f"with code_dim={self.code_dim}"
            )
        if self.extra_dim and (extra is None or extra.shape != (z_e.shape[0], self.extra_dim)):
            got = None if extra is None else tuple(extra.shape)
            raise ValueError(
                f"extra has shape {got}: {type(self).__name__} expects (batch, {self.extra_dim}) "
                "from the encoder's second head"
            )

    def zero_loss(self, z_e: torch.Tensor) -> torch.Tensor:
        return z_e.new_zeros(())


def standard_normal(batch_size: int, code_dim: int, generator, device) -> torch.Tensor:
    """eps ~ N(0, I) of shape (batch_size, code_dim), from ``generator`` (the global one when None)."""
    return torch.randn(batch_size, code_dim, generator=generator, device=device)


# the latent noise's std: noise_std / noise_std times the spread of z_e (its std over the batch, averaged over d)
NOISE_SCALES = ("fixed", "proportional")


def noisy_code(z_e: torch.Tensor, eps: torch.Tensor | None, noise_std, noise_scale: str) -> torch.Tensor:
    """z_e' = z_e + s eps, the soft VQ-VAE's "Noisy Latent Codes": s = noise_std (``"fixed"``) or
    noise_std times the spread of z_e (``"proportional"``, detached), so the noise keeps its size
    relative to codes that grow in training. ``eps`` None (evaluation): z_e unchanged."""
    if eps is None:
        return z_e
    if noise_scale == "proportional":
        eps = eps * z_e.detach().std(0).mean()
    return z_e + noise_std * eps
