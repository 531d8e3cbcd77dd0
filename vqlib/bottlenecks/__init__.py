"""Bottlenecks: one class each, all called as ``z_q, aux = bottleneck(z_e, extra)``."""

from __future__ import annotations

import inspect

from .base import (Bottleneck, CodebookUsage, code_counts, perplexity_from_counts, squared_distances,
                   uniform_unit_scaling_)
from .em_vq import EM_UPDATES, EMVectorQuantizer
from .gaussian import VAE, gaussian_kl, gaussian_kl_per_dim
from .identity import Identity, NoisyIdentity
from .information_dropout import InformationDropout, information_dropout_alpha, information_dropout_kl
from .soft_vq import SoftVectorQuantizer, log_responsibilities, posterior_mean, published_responsibilities
from .vq import VectorQuantizer

# name -> (class, default keyword arguments)
BOTTLENECKS = {
    "ae": (Identity, {}),
    "noisy_ae": (NoisyIdentity, {}),  # a control: the autoencoder with the soft VQ-VAE's latent noise
    "vae": (VAE, {"beta": 1.0}),
    "beta_vae": (VAE, {"beta": 20.0}),  # Table 1 (MNIST); Table 2 uses beta = 100
    "info_dropout": (InformationDropout, {}),
    "vq": (VectorQuantizer, {}),
    "soft_vq": (SoftVectorQuantizer, {}),
    "em_vq": (EMVectorQuantizer, {}),
}
QUANTIZERS = ("vq", "soft_vq", "em_vq")


def make_bottleneck(name: str, code_dim: int, num_codes: int | None = None, **kwargs) -> Bottleneck:
    """Build a bottleneck by name. Keyword arguments the chosen class does not take are ignored,
    so one config can describe every model of a table."""
    if name not in BOTTLENECKS:
        raise ValueError(f"bottleneck={name!r} is not allowed: choose one of {', '.join(map(repr, BOTTLENECKS))}")
    cls, defaults = BOTTLENECKS[name]
    params = inspect.signature(cls.__init__).parameters
    kwargs = {**defaults, **{k: v for k, v in kwargs.items() if k in params and v is not None}}
    if "num_codes" in params:
        kwargs["num_codes"] = num_codes
    return cls(code_dim=code_dim, **kwargs)


__all__ = [
    "BOTTLENECKS", "EM_UPDATES", "QUANTIZERS", "Bottleneck", "CodebookUsage", "code_counts", "EMVectorQuantizer", "Identity",
    "InformationDropout", "NoisyIdentity", "SoftVectorQuantizer", "VAE", "VectorQuantizer", "gaussian_kl", "gaussian_kl_per_dim",
    "information_dropout_alpha", "information_dropout_kl", "log_responsibilities", "make_bottleneck",
    "perplexity_from_counts", "posterior_mean", "published_responsibilities", "squared_distances",
    "uniform_unit_scaling_",
]
