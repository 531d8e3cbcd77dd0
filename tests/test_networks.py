"""Tests for vqlib.networks and the codebook initialisation: the paper's "Training Setup"
(MLP D-500-500-2000-d, CNN of four 3x3 stride-2 convolutions from 64 channels, Glorot uniform
weights, codebook by uniform unit scaling)."""

import math

import pytest
import torch
from torch import nn

import vqlib
from vqlib.bottlenecks import make_bottleneck
from vqlib.networks import CNNDecoder, CNNEncoder, Dense, MLPDecoder, MLPEncoder


def _model(bottleneck: str, input_shape, code_dim=16, num_codes=32, architecture="auto"):
    torch.manual_seed(0)
    config = vqlib.RunConfig(bottleneck=bottleneck, code_dim=code_dim, num_codes=num_codes, architecture=architecture)
    return vqlib.Autoencoder.from_config(config, input_shape=input_shape)


def _linear_layout(sequential):
    """[(in, out) of each Linear], [type name of every module in order, reshapes left out]."""
    modules = [m for m in sequential.children() if not isinstance(m, (nn.Flatten, nn.Unflatten))]
    return [(m.in_features, m.out_features) for m in modules if isinstance(m, Dense)], \
        [type(m).__name__ for m in modules]


@pytest.mark.parametrize("bottleneck, extra", [("ae", 0), ("vae", 16), ("info_dropout", 16), ("soft_vq", 32)])
def test_mlp_encoder_and_decoder_layout(bottleneck, extra):
    model = _model(bottleneck, (784,))
    assert model.bottleneck.extra_dim == extra
    sizes, kinds = _linear_layout(model.encoder)
    assert sizes == [(784, 500), (500, 500), (500, 2000), (2000, 16 + extra)]
    assert kinds == ["Dense", "ReLU", "Dense", "ReLU", "Dense", "ReLU", "Dense"]  # no activation after the last
    sizes, kinds = _linear_layout(model.decoder)
    assert sizes == [(16, 2000), (2000, 500), (500, 500), (500, 784)]
    assert kinds == ["Dense", "ReLU", "Dense", "ReLU", "Dense", "ReLU", "Dense"]
    x = torch.rand(5, 784)
    h = model.encoder(x)
    assert h.shape == (5, 16 + extra)
    assert (h < 0).any()  # linear last layer: no ReLU squashes the code
    logits, z_e, _ = model.eval()(x)
    assert logits.shape == (5, 784) and z_e.shape == (5, 16)


def test_soft_vq_encoder_sigma_head_has_width_num_codes():
    config = vqlib.RunConfig(bottleneck="soft_vq", sigma_source="encoder", code_dim=16, num_codes=32)
    model = vqlib.Autoencoder.from_config(config, input_shape=(784,))
    assert list(model.encoder.children())[-1].out_features == 16 + 32


def _conv_layers(module, kind):
    return [m for m in module.modules() if isinstance(m, kind)]


def test_cnn_encoder_and_decoder_layout():
    model = _model("vae", (3, 32, 32), code_dim=16)
    convs = _conv_layers(model.encoder, nn.Conv2d)
    assert len(convs) == 4
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 64), (64, 128), (128, 256), (256, 512)]
    assert all(c.kernel_size == (3, 3) and c.stride == (2, 2) for c in convs)
    deconvs = _conv_layers(model.decoder, nn.ConvTranspose2d)  # symmetric decoder
    assert len(deconvs) == 4
    assert [(c.in_channels, c.out_channels) for c in deconvs] == [(512, 256), (256, 128), (128, 64), (64, 3)]
    assert all(c.kernel_size == (3, 3) and c.stride == (2, 2) for c in deconvs)
    x = torch.rand(2, 3, 32, 32)
    assert model.encoder(x).shape == (2, 16 + 16)
    assert model.decoder(torch.randn(2, 16)).shape == (2, 3, 32, 32)
    logits, z_e, _ = model.eval()(x)
    assert logits.shape == (2, 3, 32, 32) and z_e.shape == (2, 16)


def _fans(m):
    if isinstance(m, Dense):
        return m.in_features, m.out_features
    k = m.kernel_size[0] * m.kernel_size[1]
    return m.in_channels * k, m.out_channels * k


@pytest.mark.parametrize("network", [
    lambda: MLPEncoder(784, 24), lambda: MLPDecoder(16, 784),
    lambda: CNNEncoder(24), lambda: CNNDecoder(16),
], ids=["mlp_encoder", "mlp_decoder", "cnn_encoder", "cnn_decoder"])
def test_weights_are_glorot_uniform_and_biases_zero(network):
    torch.manual_seed(1)
    layers = [m for m in network().modules() if isinstance(m, (Dense, nn.Conv2d, nn.ConvTranspose2d))]
    assert len(layers) >= 4
    for m in layers:
        fan_in, fan_out = _fans(m)
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = m.weight.detach().abs()
        assert w.max().item() <= bound * (1 + 1e-6), m
        assert w.max().item() > 0.98 * bound, m  # every layer has >= 1728 weights: the max is near the bound
        # uniform on [-bound, bound]: std bound / sqrt(3)
        assert m.weight.detach().std().item() == pytest.approx(bound / math.sqrt(3), rel=0.06), m
        assert torch.count_nonzero(m.bias) == 0, m


@pytest.mark.parametrize("name", ["vq", "soft_vq", "em_vq"])
@pytest.mark.parametrize("code_dim, num_codes", [(64, 128), (8, 512)])
def test_codebook_uniform_unit_scaling(name, code_dim, num_codes):
    torch.manual_seed(2)
    codebook = make_bottleneck(name, code_dim, num_codes).codebook.detach()
    assert codebook.shape == (num_codes, code_dim)
    bound = math.sqrt(3.0 / code_dim)
    assert codebook.abs().max().item() <= bound * (1 + 1e-6)
    assert codebook.abs().max().item() > 0.99 * bound
    assert codebook.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)  # = 1 / sqrt(d)
    assert abs(codebook.mean().item()) < 5 * bound / math.sqrt(3 * codebook.numel())


@pytest.mark.parametrize("input_shape, encoder_type", [((784,), MLPEncoder), ((64,), MLPEncoder),
                                                       ((3, 32, 32), CNNEncoder)])
def test_auto_architecture(input_shape, encoder_type):
    model = _model("ae", input_shape)
    assert type(model.encoder) is encoder_type
    assert any(isinstance(m, nn.Conv2d) for m in model.encoder.modules()) == (encoder_type is CNNEncoder)


def test_explicit_architecture_and_bad_cnn_shape():
    assert type(_model("ae", (784,), architecture="mlp").encoder) is MLPEncoder
    with pytest.raises(ValueError, match="input_shape"):
        _model("ae", (784,), architecture="cnn")


def test_mlp_architecture_on_image_input():
    model = _model("ae", (3, 32, 32), architecture="mlp")
    x = torch.rand(2, 3, 32, 32)
    logits, z_e, _ = model(x)
    assert logits.shape == x.shape and z_e.shape == (2, 16)
