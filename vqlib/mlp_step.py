"""One training step of the paper's MLP autoencoder with the encoder and decoder differentiated by hand.

The MLP's backward pass is three products per layer and a ReLU mask; autograd adds, per node,
bookkeeping, fresh ReLU outputs and separate loss nodes, which on a CPU cost about a quarter of a
step of this small network. :class:`MLPStep` runs the encoder and decoder without building a
graph (saving each layer's input, ReLU applied in place), computes the reconstruction gradient in
closed form, and leaves only the bottleneck (the paper's part, and the one that differs between
models) to autograd:

1. encoder by hand -> (z_e, extra), detached leaves that require grad;
2. ``z_q, aux = bottleneck(z_e, extra)`` with autograd;
3. decoder by hand from z_q; d(reconstruction)/d(logits) in closed form; decoder backward by hand
   -> d loss / d z_q and the decoder's weight and bias gradients;
4. autograd backward through the bottleneck from (d loss / d z_q, latent_weight) -> gradients of
   z_e, extra and the bottleneck's own parameters;
5. encoder backward by hand.

The products are the ones autograd computes (g^T @ input for a weight, g.sum(0) for a bias,
g @ W for an input, ``threshold_backward`` for a ReLU), so the gradients equal autograd's (tested
bit for bit against ``loss.backward()``). Models other than the paper's MLP (the CNN) train through autograd.
"""

from __future__ import annotations

import torch
from torch import nn

from .losses import reconstruction_loss_and_grad
from .networks import MLPDecoder, MLPEncoder


def linear_relu_stack(mlp: nn.Module) -> list[nn.Linear] | None:
    """The Linear layers of an MLPEncoder/MLPDecoder (Linear, then (ReLU, Linear) repeated), or None."""
    if not isinstance(mlp, (MLPEncoder, MLPDecoder)):
        return None
    body = [m for m in mlp if not isinstance(m, (nn.Flatten, nn.Unflatten))]
    linears, relus = body[0::2], body[1::2]
    if not all(type(m) is nn.Linear for m in linears) or not all(type(m) is nn.ReLU for m in relus) \
            or len(linears) != len(relus) + 1:
        return None
    return linears


def _forward(layers: list[nn.Linear], h: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Forward through Linear (ReLU Linear)*, returning the output and every layer's input."""
    inputs = []
    for i, layer in enumerate(layers):
        inputs.append(h)
        h = torch.addmm(layer.bias, h, layer.weight.t())  # what F.linear computes for a 2-d input
        if i < len(layers) - 1:
            h = h.relu_()
    return h, inputs


def _backward(layers: list[nn.Linear], inputs: list[torch.Tensor], grad: torch.Tensor, input_grad: bool):
    """Set each layer's weight and bias gradient from d loss / d output; return d loss / d input (or None)."""
    for i in range(len(layers) - 1, -1, -1):
        layer, h = layers[i], inputs[i]
        layer.weight.grad = grad.t() @ h
        layer.bias.grad = grad.sum(0)
        if i == 0 and not input_grad:
            return None
        grad = grad @ layer.weight
        if i > 0:  # h is the previous layer's ReLU output
            grad = torch.ops.aten.threshold_backward(grad, h, 0)
    return grad


class MLPStep:
    """Forward and backward of one batch for an :class:`~vqlib.model.Autoencoder` with the paper's MLP.

    ``step(x)`` leaves the gradient of ``reconstruction + latent_weight * aux["loss"]`` in ``.grad``
    of every parameter that has one, and returns (loss, reconstruction, aux), all detached.
    ``MLPStep.supports(model)`` says whether the model qualifies (MLP encoder and decoder with
    biases); others train through autograd.
    """

    def __init__(self, model, reconstruction: str, latent_weight: float, data_variance: float | None = None):
        if not self.supports(model):
            raise ValueError("MLPStep needs an Autoencoder with the MLP encoder and decoder (architecture='mlp')")
        self.model = model
        self.encoder = linear_relu_stack(model.encoder)
        self.decoder = linear_relu_stack(model.decoder)
        self.reconstruction = reconstruction
        self.latent_weight = latent_weight
        self.data_variance = data_variance

    @staticmethod
    def supports(model) -> bool:
        encoder, decoder = linear_relu_stack(model.encoder), linear_relu_stack(model.decoder)
        return (encoder is not None and decoder is not None
                and all(layer.bias is not None for layer in encoder + decoder))

    def step(self, x: torch.Tensor):
        bottleneck = self.model.bottleneck
        b = x.shape[0]
        target = x.reshape(b, -1)
        with torch.no_grad():
            h, encoder_inputs = _forward(self.encoder, target)
        z_e, extra = h.split([bottleneck.code_dim, bottleneck.extra_dim], dim=-1)
        z_e = z_e.detach().requires_grad_()
        extra = extra.detach().requires_grad_() if bottleneck.extra_dim else None
        z_q, aux = bottleneck(z_e, extra)
        with torch.no_grad():
            logits, decoder_inputs = _forward(self.decoder, z_q.detach())
            recon, grad_logits = reconstruction_loss_and_grad(logits, target, self.reconstruction,
                                                              self.data_variance)
            grad_z_q = _backward(self.decoder, decoder_inputs, grad_logits, input_grad=True)
        outputs, grads = [], []
        if z_q.requires_grad:
            outputs.append(z_q), grads.append(grad_z_q)
        latent = aux["loss"]
        if latent.requires_grad and self.latent_weight != 0:
            outputs.append(latent), grads.append(torch.full_like(latent, self.latent_weight))
        if outputs:
            torch.autograd.backward(outputs, grads)
        grad_h = z_e.grad if z_e.grad is not None else torch.zeros_like(z_e)
        if extra is not None:
            grad_h = torch.cat([grad_h, extra.grad if extra.grad is not None else torch.zeros_like(extra)], dim=-1)
        with torch.no_grad():
            _backward(self.encoder, encoder_inputs, grad_h, input_grad=False)
        latent = latent.detach()
        return recon + self.latent_weight * latent, recon, aux
