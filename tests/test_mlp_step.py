"""MLPStep: the hand-differentiated MLP gives autograd's loss and gradients, for every bottleneck."""

from __future__ import annotations

import pytest
import torch

from vqlib import RunConfig
from vqlib.bottlenecks import BOTTLENECKS
from vqlib.mlp_step import MLPStep
from vqlib.model import Autoencoder
from vqlib.training import reconstruction_loss


def _model(bottleneck, **kwargs):
    config = RunConfig(bottleneck=bottleneck, code_dim=6, num_codes=5, mlp_hidden="9-7-11", **kwargs)
    torch.manual_seed(0)
    return Autoencoder.from_config(config, (3, 4)), config  # 2-d inputs: flattened by the encoder


def _batch():
    return torch.rand(7, 3, 4, generator=torch.Generator().manual_seed(1))  # 7: 1/b is not exact in binary


def _autograd_grads(model, config, x, data_variance):
    torch.manual_seed(5)  # the same noise draws as the hand-written step below
    logits, _, aux = model(x)
    recon = reconstruction_loss(logits, x, config.reconstruction, data_variance)
    loss = recon + config.latent_weight * aux["loss"]
    model.zero_grad(set_to_none=True)
    loss.backward()
    return loss.detach(), recon.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("bottleneck", sorted(BOTTLENECKS))
@pytest.mark.parametrize("reconstruction, latent_weight", [("bernoulli", 1.0), ("nmse", 3.0)])
def test_mlp_step_gives_autograds_loss_and_gradients_bit_for_bit(bottleneck, reconstruction, latent_weight):
    model, config = _model(bottleneck, reconstruction=reconstruction, latent_weight=latent_weight)
    model.train()
    x = _batch()
    variance = float(x.var()) if reconstruction == "nmse" else None
    state = {k: v.clone() for k, v in model.state_dict().items()}  # em_vq moves its codebook in forward
    loss, recon, expected = _autograd_grads(model, config, x, variance)
    model.load_state_dict(state)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    got_loss, got_recon, _ = MLPStep(model, reconstruction, latent_weight, variance).step(x)
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    assert any(name.startswith("encoder.") for name in got) and any(name.startswith("decoder.") for name in got)
    for name in expected:  # the same products in the same order: not merely close, equal
        assert torch.equal(got[name], expected[name]), name
        assert expected[name].abs().sum() > 0 or bottleneck == "em_vq", name  # gradients with something in them
    assert torch.equal(got_loss, loss) and torch.equal(got_recon, recon)


def test_mlp_step_supports_only_the_mlp():
    mlp, _ = _model("ae")
    assert MLPStep.supports(mlp)
    cnn = Autoencoder.from_config(RunConfig(bottleneck="ae", code_dim=4), (3, 32, 32))
    assert not MLPStep.supports(cnn)
    with pytest.raises(ValueError, match="MLP"):
        MLPStep(cnn, "bernoulli", 1.0)
