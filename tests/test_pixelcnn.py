"""The PixelCNN decoder: causal by gradients, a normalised distribution by brute force, sampling by frequency."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from vqlib import RunConfig
from vqlib.model import Autoencoder
from vqlib.pixelcnn import PixelCNNDecoder, raster_mask


def _decoder(layers, side=4, code_dim=3, seed=0):
    torch.manual_seed(seed)
    decoder = PixelCNNDecoder(code_dim, (side * side,), layers, channels=6, hidden=(8,)).double()
    for p in decoder.parameters():  # larger weights than Glorot's, so every dependence is visible
        torch.nn.init.normal_(p, std=0.5)
    with torch.no_grad():
        for conv in decoder.masked:
            conv.bias.add_(5.0)  # ReLUs active everywhere: no dependence hidden by a dead unit
    return decoder


@pytest.mark.parametrize("layers", [1, 2, 5])
def test_output_pixel_depends_only_on_earlier_inputs(layers):
    """d logit_i / d x_j is 0 for every j >= i and not 0 for its left (or upper) neighbour (by autograd)."""
    side = 5
    decoder = _decoder(layers, side)
    z = torch.randn(1, 3, dtype=torch.double)
    x = torch.rand(1, side * side, dtype=torch.double, requires_grad=True)
    logits = decoder(z, x)[0]
    for i in range(side * side):
        (grad,) = torch.autograd.grad(logits[i], x, retain_graph=True)
        grad = grad[0]
        assert torch.all(grad[i:] == 0), f"logit {i} depends on inputs {torch.nonzero(grad[i:]).flatten() + i}"
        neighbour = i - 1 if i % side else i - side  # the pixel to its left, or above it in the first column
        if i > 0:
            assert grad[neighbour] != 0, f"logit {i} ignores its neighbour {neighbour}"


def test_receptive_field_grows_with_layers():
    """After L layers, pixel i sees the pixels up to L rows above it, and none further."""
    side = 7
    for layers in (1, 2, 3):
        decoder = _decoder(layers, side)
        x = torch.rand(1, side * side, dtype=torch.double, requires_grad=True)
        i = (side - 1) * side + side // 2  # last row, middle column
        (grad,) = torch.autograd.grad(decoder(torch.zeros(1, 3, dtype=torch.double), x)[0, i], x)
        rows = sorted({j // side for j in torch.nonzero(grad[0]).flatten().tolist()})
        assert rows[0] == side - 1 - layers


def test_no_layers_means_pixels_depend_on_z_only():
    decoder = _decoder(0)
    z = torch.randn(2, 3, dtype=torch.double)
    a, b = torch.rand(2, 16, dtype=torch.double), torch.rand(2, 16, dtype=torch.double)
    assert torch.equal(decoder(z, a), decoder(z, b))


def _log_likelihood(decoder, z, x):
    logits = decoder(z, x)
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


@pytest.mark.parametrize("layers", [0, 1, 3])
def test_likelihood_sums_to_one_over_every_binary_image(layers):
    """sum over all 2^9 binary 3x3 images of p(x | z) is 1: a normalised distribution, for any z."""
    decoder = _decoder(layers, side=3)
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=9)), dtype=torch.double)  # (512, 9)
    for z in torch.randn(3, 1, 3, dtype=torch.double):
        total = torch.logsumexp(_log_likelihood(decoder, z.expand(len(images), 3), images), 0).exp()
        assert total.item() == pytest.approx(1.0, abs=1e-10)


def test_likelihood_is_the_chain_rule_pixel_by_pixel():
    """One pass equals sum_i log p(x_i | x_<i) computed with every pixel >= i replaced by noise."""
    decoder = _decoder(2, side=4)
    z = torch.randn(2, 3, dtype=torch.double)
    x = (torch.rand(2, 16) < 0.5).double()
    total = torch.zeros(2, dtype=torch.double)
    for i in range(16):
        prefix = x.clone()
        prefix[:, i:] = torch.rand(2, 16 - i, dtype=torch.double)
        logit = decoder(z, prefix)[:, i]
        total += -F.binary_cross_entropy_with_logits(logit, x[:, i], reduction="none")
    assert torch.allclose(_log_likelihood(decoder, z, x), total, atol=1e-12)


def test_samples_follow_the_likelihood():
    """Frequencies of 4,000 sampled 2x2 images match p(x | z) within 5 standard errors."""
    decoder = _decoder(2, side=2).float()
    z = torch.randn(1, 3)
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))
    p = _log_likelihood(decoder, z.expand(16, 3), images).exp()
    n = 4000
    draws = decoder.sample(z.expand(n, 3), torch.Generator().manual_seed(0))
    codes = (draws * torch.tensor([8.0, 4.0, 2.0, 1.0])).sum(-1).long()
    freq = torch.bincount(codes, minlength=16).float() / n
    se = (p * (1 - p) / n).sqrt()
    assert torch.all((freq - p).abs() <= 5 * se + 1e-3), (freq, p)


@pytest.mark.parametrize("layers", [0, 1, 2, 5])
def test_sampling_on_a_window_of_rows_draws_what_full_passes_draw(layers):
    """sample() runs the convolutions on rows r - L .. r only: the same images, from the same random numbers,
    as a full forward pass for every pixel (the definition)."""
    side = 6
    decoder = _decoder(layers, side)
    z = torch.randn(5, 3, dtype=torch.double)
    generator = torch.Generator().manual_seed(1)
    x = torch.zeros(5, side * side, dtype=torch.double)
    for i in range(side * side):
        p = torch.sigmoid(decoder(z, x)[:, i])
        x[:, i] = (torch.rand(p.shape, generator=generator, dtype=p.dtype) < p).to(p.dtype)
    draws = decoder.sample(z, torch.Generator().manual_seed(1))
    if layers:
        assert torch.equal(draws, x)
    else:  # no autoregression: one pass, then every pixel's draw at once (the same distribution, other numbers)
        assert draws.shape == x.shape and set(draws.unique().tolist()) <= {0.0, 1.0}


def test_masks():
    assert raster_mask(3, "A").tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert raster_mask(3, "B").tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="mask_type='C'"):
        raster_mask(3, "C")


def test_bad_input_names_the_parameter():
    with pytest.raises(ValueError, match="pixelcnn_layers=-1"):
        RunConfig(decoder="pixelcnn", pixelcnn_layers=-1)
    with pytest.raises(ValueError, match="pixelcnn_channels=0"):
        RunConfig(decoder="pixelcnn", pixelcnn_channels=0)
    with pytest.raises(ValueError, match="free_bits=-0.5"):
        RunConfig(free_bits=-0.5)
    with pytest.raises(ValueError, match=r"input_shape=\(3, 32, 32\).*decoder='pixelcnn'"):
        Autoencoder.from_config(RunConfig(bottleneck="vae", decoder="pixelcnn"), (3, 32, 32))
    with pytest.raises(ValueError, match=r"input_shape=\(50,\)"):
        Autoencoder.from_config(RunConfig(bottleneck="vae", decoder="pixelcnn"), (50,))
    with pytest.raises(ValueError, match="decoder='transformer'"):
        RunConfig(decoder="transformer")


def test_autoencoder_decodes_with_the_image_and_samples():
    config = RunConfig(bottleneck="vq", decoder="pixelcnn", pixelcnn_layers=2, pixelcnn_channels=4, mlp_hidden="8",
                       code_dim=2, num_codes=4)
    model = Autoencoder.from_config(config, (16,))
    x = (torch.rand(3, 16) < 0.5).float()
    with torch.no_grad():
        logits, z_e, aux = model(x)
    assert logits.shape == (3, 16) and math.isfinite(aux["loss"].item())
    with pytest.raises(ValueError, match="autoregressive"):
        model.decode(z_e)
    sample = model.sample(z_e)
    assert sample.shape == (3, 16) and set(sample.unique().tolist()) <= {0.0, 1.0}


def test_pixelcnn_fields_do_not_change_a_feedforward_run():
    a = RunConfig(bottleneck="vae", pixelcnn_layers=8).canonical()
    assert a == RunConfig(bottleneck="vae").canonical()
    assert RunConfig(bottleneck="vae", decoder="pixelcnn", pixelcnn_layers=8).canonical() != \
        RunConfig(bottleneck="vae", decoder="pixelcnn").canonical()
    assert RunConfig(bottleneck="vq", free_bits=1.0).canonical() == RunConfig(bottleneck="vq").canonical()


def test_run_names_say_the_decoder_and_differ_with_every_setting_that_trains_another_model():
    from vqlib.runs import run_name

    plain = RunConfig(bottleneck="vae")
    assert run_name(plain) == run_name(plain.replace(pixelcnn_layers=7))  # unread by a feed-forward decoder
    deep = plain.replace(decoder="pixelcnn", pixelcnn_layers=8)
    assert "-vae-pixelcnn8-" in run_name(deep)
    names = {run_name(c) for c in (plain, deep, deep.replace(pixelcnn_channels=8), deep.replace(free_bits=0.5),
                                   plain.replace(free_bits=0.5), plain.replace(lr=1e-3))}
    assert len(names) == 6
