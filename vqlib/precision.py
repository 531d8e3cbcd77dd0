"""Training precision: exact float32, or bfloat16 autocast where the processor multiplies in bf16 natively.

``RunConfig.precision`` is one of :data:`PRECISIONS`:

- ``"fp32"`` (the default): every op in float32, as before this option existed (and the soft
  VQ-VAE's squared distances in float64, :func:`vqlib.bottlenecks.base.squared_distances`).
- ``"bf16"``: the training step's encoder and decoder run under ``torch.autocast(dtype=torch.bfloat16)``,
  so their matrix multiplies (``addmm``, convolutions) read bf16 operands and accumulate in float32,
  forward and backward. Everything else stays as in fp32, because that is where bf16's 8-bit
  mantissa would change the result rather than the speed: the master weights and Adam's moments
  (float32 parameters, the optimiser never sees bf16), the bottleneck (its input is cast back to
  float32 and autocast is off inside it: distances, responsibilities, posterior mean, KL and
  commitment terms, EM's moving averages), the reconstruction loss (the decoder's logits are cast
  to float32 before the cross-entropy and its sum over pixels) and the reduction of the losses.
  Evaluation (encoding the latents the downstream metrics read) always runs in float32.
- ``"auto"``: ``"bf16"`` where the device runs bf16 matrix multiplies natively, else ``"fp32"``.

Native means: on CUDA ``torch.cuda.is_bf16_supported(including_emulation=False)`` (Ampere and
newer); on a CPU, a bf16 dot-product instruction reported by ``torch.cpu.get_capabilities()``
(x86: ``avx512_bf16`` or ``amx_bf16``; ARM: ``bf16``) with oneDNN available. Elsewhere (older CPUs and
GPUs, where bf16 is emulated and slower than float32, and MPS, not measured) ``"bf16"`` is an error.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "auto")
#: CPU capabilities (``torch.cpu.get_capabilities()``) that multiply bf16 natively
_BF16_CPU_CAPABILITIES = ("avx512_bf16", "amx_bf16", "bf16")


def bf16_native(device) -> bool:
    """Whether ``device`` (a torch.device or its name) multiplies bf16 matrices natively."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # a torch without the argument
            return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        capabilities = getattr(torch.cpu, "get_capabilities", None)  # public since torch 2.10 or so
        if capabilities is None or not torch.backends.mkldnn.is_available():
            return False
        found = capabilities()
        return any(bool(found.get(name, False)) for name in _BF16_CPU_CAPABILITIES)
    return False


def resolve_precision(precision: str, device, strict: bool = True) -> str:
    """``"fp32"`` or ``"bf16"``: what ``precision`` means on ``device``.

    ``strict``: ``"bf16"`` where the device has no native bf16 is a ValueError (else it is returned as asked)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not allowed: choose one of {', '.join(map(repr, PRECISIONS))}")
    device = torch.device(device)
    if precision == "auto":
        return "bf16" if bf16_native(device) else "fp32"
    if precision == "bf16" and strict and not bf16_native(device):
        raise ValueError(f"precision='bf16' is not allowed on {device}: this device has no native bf16 matrix "
                         "multiply (it would be emulated, slower than fp32); use precision='auto' or 'fp32'")
    return precision


def autocast(precision: str, device):
    """The context the training step's encoder and decoder run in: bf16 autocast, or nothing for fp32.

    ``precision`` is a resolved one (``"fp32"`` or ``"bf16"``, :func:`resolve_precision`).
    """
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def full_precision(x: torch.Tensor):
    """Autocast switched off for what follows, when it is on for ``x``'s device (else nothing).

    The autoencoder runs its bottleneck in this context: distances and responsibilities are never bf16.
    """
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()
