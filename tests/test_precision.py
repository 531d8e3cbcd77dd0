"""Training precision (RunConfig.precision, vqlib.precision): bf16 autocast for the encoder and decoder only."""

import json

import numpy as np
import pytest
import torch

import vqlib
import vqlib.cli
from vqlib import RunConfig, load_dataset
from vqlib.bottlenecks.soft_vq import posterior_mean
from vqlib.model import Autoencoder
from vqlib.precision import autocast, bf16_native, resolve_precision
from vqlib.runs import run_experiment, run_name
from vqlib.training import load_checkpoint, train_many

from test_bottlenecks import _sigma, brute_posterior

SMALL = dict(dataset="digits", mlp_hidden="128-128-256", code_dim=16, num_codes=32, batch_size=64, log_every=50,
             n_init=2, classifier_iterations=50, device="cpu")
needs_bf16 = pytest.mark.skipif(not bf16_native("cpu"), reason="this CPU has no native bf16 (avx512_bf16, amx, arm bf16)")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def no_native_bf16(monkeypatch):
    """A CPU that reports no bf16 instructions, through the public API vqlib reads."""
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"architecture": "x86_64", "avx2": True})


def test_other_precisions_are_refused_with_the_field_and_its_choices(capsys):
    with pytest.raises(ValueError, match=r"precision='fp16' is not allowed: choose one of 'fp32', 'bf16', 'auto'"):
        RunConfig(precision="fp16")
    with pytest.raises(SystemExit) as exit_info:
        vqlib.cli.main(["train", "--out", "x", "--precision", "fp16"])
    assert exit_info.value.code == 2 and "--precision: invalid choice: 'fp16'" in capsys.readouterr().err


def test_bf16_where_it_is_not_native_is_an_error_and_auto_picks_fp32(no_native_bf16, digits):
    assert not bf16_native("cpu") and not bf16_native("mps")
    with pytest.raises(ValueError, match="precision='bf16' is not allowed on cpu: this device has no native bf16"):
        train_many([RunConfig(precision="bf16", num_iterations=2, **SMALL)], dataset=digits, progress=False)
    with pytest.raises(ValueError, match="no native bf16"):
        resolve_precision("bf16", "mps")
    auto = RunConfig(precision="auto", num_iterations=2, **SMALL)
    assert auto.canonical().precision == "fp32" and run_name(auto) == run_name(auto.replace(precision="fp32"))
    result = train_many([auto], dataset=digits, progress=False)[0]
    assert result.precision == "fp32"


def test_fp32_is_the_default_and_leaves_run_names_as_they_were():
    config = RunConfig()
    assert config.precision == "fp32" and config.canonical().precision == "fp32"
    assert run_name(config) == run_name(config.replace(precision="fp32"))
    assert "bf16" not in run_name(config)


@needs_bf16
def test_bf16_runs_the_encoder_and_decoder_in_bf16_and_the_bottleneck_in_fp32():
    torch.manual_seed(0)
    model = Autoencoder.from_config(RunConfig(bottleneck="soft_vq", **SMALL), (64,)).train()
    seen = {}
    model.bottleneck.register_forward_pre_hook(lambda m, args: seen.update(z_e=args[0].dtype, extra=args[1].dtype))
    with autocast("bf16", "cpu"):
        logits, z_e, aux = model(torch.rand(8, 64))
    assert logits.dtype == torch.bfloat16  # the decoder multiplied in bf16
    assert seen == {"z_e": torch.float32, "extra": torch.float32} and z_e.dtype == torch.float32
    assert aux["loss"].dtype == aux["responsibilities"].dtype == torch.float32
    (logits.float().sum() + aux["loss"]).backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32


@needs_bf16
@pytest.mark.parametrize("bottleneck", ["ae", "soft_vq", "em_vq"])
def test_a_bf16_run_follows_the_fp32_loss_curve(digits, bottleneck):
    """300 steps of two seeds trained together: every logged loss (mean over 50 steps) of the bf16 run within 2 %
    of the fp32 run's (measured: at most 0.9 % for ae, 0.2 % for soft_vq and em_vq), though not equal to it."""
    config = RunConfig(bottleneck=bottleneck, num_iterations=300, **SMALL)
    configs = [config, config.replace(seed=1)]
    fp32 = train_many(configs, dataset=digits, progress=False)
    bf16 = train_many([c.replace(precision="bf16") for c in configs], dataset=digits, progress=False)
    for a, b in zip(fp32, bf16):
        assert (a.precision, b.precision) == ("fp32", "bf16")
        loss_a, loss_b = np.array([r["loss"] for r in a.history]), np.array([r["loss"] for r in b.history])
        assert len(loss_a) == 6 and np.isfinite(loss_b).all()
        np.testing.assert_allclose(loss_b, loss_a, rtol=2e-2)
        assert not np.array_equal(loss_a, loss_b)  # bf16 did change the arithmetic
        assert loss_b[-1] < 0.8 * loss_b[0]  # and it trains


@needs_bf16
@pytest.mark.parametrize("sigma_kind", ["scalar", "per_codeword", "per_input"])
@pytest.mark.parametrize("offset, sigma_scale", [(1e3, 1.0), (1e3, 1e-3), (0.0, 1e-3), (1e3, 1e3)])
def test_the_estimator_stays_finite_in_bf16_for_far_codes_and_tiny_sigmas(sigma_kind, offset, sigma_scale):
    """test_bottlenecks' float64 reference cases, with z coming out of a bf16 encoder: called under bf16
    autocast the estimator stays finite (z_hat in bf16: bf16's relative resolution, 2^-8); inside the
    model, where the bottleneck runs with autocast off, it matches the float64 reference as in fp32."""
    gen = torch.Generator().manual_seed(1)
    b, K, d = 10, 6, 4
    z = torch.randn(b, d, generator=gen).bfloat16().float()  # what a bf16 encoder can produce
    codebook = torch.randn(K, d, generator=gen) + offset
    sigma = (_sigma(sigma_kind, b, K, gen) if sigma_kind != "scalar" else 1.0) * sigma_scale
    expected_z_hat, expected_resp = brute_posterior(z, codebook, sigma)
    scale = max(1.0, offset)
    with autocast("bf16", "cpu"):
        z_hat, resp = posterior_mean(z, codebook, sigma)
    assert torch.isfinite(z_hat).all() and torch.isfinite(resp).all()
    torch.testing.assert_close(resp.sum(-1), torch.ones(b), atol=1e-5, rtol=0)
    np.testing.assert_allclose(resp.double().numpy(), expected_resp, atol=1e-3)
    np.testing.assert_allclose(z_hat.double().numpy(), expected_z_hat, rtol=2 ** -7, atol=2e-4 * scale)
    with autocast("bf16", "cpu"), vqlib.precision.full_precision(z):  # as Autoencoder.forward runs the bottleneck
        z_hat, resp = posterior_mean(z, codebook, sigma)
    assert z_hat.dtype == torch.float32
    np.testing.assert_allclose(z_hat.double().numpy(), expected_z_hat, rtol=1e-5, atol=2e-4 * scale)


@needs_bf16
def test_the_precision_is_recorded_and_a_run_does_not_resume_in_another(digits, tmp_path):
    config = RunConfig(bottleneck="soft_vq", num_iterations=20, **{**SMALL, "log_every": 10})
    bf16 = config.replace(precision="bf16")
    assert "-seed0-bf16-" in run_name(bf16) and run_name(bf16) != run_name(config)
    assert run_name(config.replace(precision="auto")) == run_name(bf16)  # auto is named by what it picks here
    metrics = run_experiment(bf16, tmp_path / "run", dataset=digits, progress=False)
    assert metrics["precision"] == "bf16" and metrics["config"]["precision"] == "bf16"
    assert load_checkpoint(tmp_path / "run")[2]["precision"] == "bf16"
    assert run_experiment(config.replace(precision="auto"), tmp_path / "run", dataset=digits,
                          progress=False) == metrics  # the same model: reused
    with pytest.raises(ValueError, match="was trained in bf16, this run would go on in fp32"):
        run_experiment(config.replace(num_iterations=30), tmp_path / "run", dataset=digits, progress=False)


def test_a_page_says_which_precision_its_runs_trained_in(tmp_path, capsys, no_native_bf16):
    """A page with a ``precision`` parameter: start prints it and finish records it, as resolved on the device."""
    from vqlib import notebook

    page = {"results_dir": str(tmp_path), "device": "cpu", "seed": 0, "precision": "auto"}
    session = notebook.start(page)
    assert "training precision: fp32" in capsys.readouterr().out  # auto on a CPU without bf16
    shown = notebook.finish(session)
    assert shown.loc["training precision", "value"] == "fp32"
    assert json.loads((tmp_path / "provenance.json").read_text())["precision"] == "fp32"
    with pytest.raises(ValueError, match="precision='bf16' is not allowed on cpu"):
        notebook.start({**page, "precision": "bf16"})  # before any work
    with pytest.raises(ValueError, match="precision"):
        notebook.start({**page, "precision": "fp16"})


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and bf16_native("cuda")), reason="needs a CUDA GPU with bf16")
def test_a_bf16_run_follows_the_fp32_loss_curve_on_cuda(digits):
    config = RunConfig(bottleneck="soft_vq", num_iterations=300, **{**SMALL, "device": "cuda"})
    configs = [config, config.replace(seed=1)]
    fp32 = train_many(configs, dataset=digits, progress=False)
    bf16 = train_many([c.replace(precision="auto") for c in configs], dataset=digits, progress=False)
    for a, b in zip(fp32, bf16):
        assert b.precision == "bf16" and b.device.type == "cuda"
        np.testing.assert_allclose([r["loss"] for r in b.history], [r["loss"] for r in a.history], rtol=2e-2)
