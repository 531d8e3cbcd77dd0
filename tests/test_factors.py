"""The investigation's parts: the factors of the soft VQ-VAE's open choices, the noisy autoencoder
control, standardised k-means, diagnostics over training and the convergence measure."""

import math

import numpy as np
import pytest
import torch

import vqlib
from vqlib import RunConfig
from vqlib.bottlenecks import make_bottleneck
from vqlib.diagnostics import diagnostics_over_training, loss_still_falling, model_diagnostics
from vqlib.evaluation import kmeans_scores
from vqlib.factors import FACTORS, arm_config, control_of, design, label
from vqlib.runs import run_name
from vqlib.training import train_many

CENTRE = {"model": "soft_vq", "recipe": "published", "formula": "paper", "sigma_source": "encoder", "noise": "fixed",
          "num_codes": 16}


def test_the_published_arm_is_the_published_code():
    arm = {**CENTRE, "formula": "published", "noise": "none", "num_codes": 128}
    assert arm_config(arm).canonical() == RunConfig.published_code().canonical()


def test_recipes_noises_and_controls_set_what_they_say():
    paper = arm_config({**CENTRE, "recipe": "paper", "noise": "proportional"}, noise_std=0.3)
    assert (paper.reconstruction, paper.batch_size, paper.reduction, paper.latent_weight) == ("bernoulli", 32, "sum", 1.0)
    assert (paper.noise_std, paper.noise_scale, paper.num_codes) == (0.3, "proportional", 16)
    noisy = arm_config(control_of(CENTRE, "ae"), noise_std=0.3)
    assert (noisy.bottleneck, noisy.noise_std, noisy.noise_scale, noisy.batch_size) == ("noisy_ae", 0.3, "fixed", 64)
    plain = arm_config(control_of({**CENTRE, "noise": "none"}, "ae"))
    assert plain.bottleneck == "ae"
    vq = arm_config(control_of(CENTRE, "vq"))
    assert (vq.bottleneck, vq.num_codes, vq.reconstruction) == ("vq", 16, "nmse")
    assert control_of(CENTRE, "vq") == {"model": "vq", "recipe": "published", "num_codes": 16}
    assert label(control_of(CENTRE, "ae")) == "noisy_ae · recipe=published · noise=fixed"
    assert label({**CENTRE, "formula": "published"}, centre=CENTRE) == "soft_vq · formula=published"


def test_a_factor_value_that_does_not_exist_names_the_factor_and_the_allowed_values():
    with pytest.raises(ValueError, match=r"noise='loud' is not allowed: choose one of 'none', 'fixed', 'proportional'"):
        arm_config({**CENTRE, "noise": "loud"})
    with pytest.raises(ValueError, match=r"factor 'colour' does not exist: the factors are 'recipe'"):
        design({**{f: [CENTRE[f]] for f in FACTORS}, "colour": ["red"]})
    with pytest.raises(ValueError, match="num_codes=1 is not allowed"):
        design({**{f: [CENTRE[f]] for f in FACTORS}, "num_codes": [1]})
    with pytest.raises(ValueError, match="ae does not read formula"):
        arm_config({"model": "ae", "formula": "paper"})
    with pytest.raises(ValueError, match="levels lacks sigma_source"):
        design({f: [CENTRE[f]] for f in FACTORS if f != "sigma_source"})


def test_designs_count_their_arms():
    levels = {"recipe": ["published", "paper"], "formula": ["paper", "published"],
              "sigma_source": ["encoder", "codeword", "shared"], "noise": ["fixed", "none", "proportional"],
              "num_codes": [16, 64]}
    one = design(levels)
    assert len(one) == 1 + 1 + 1 + 2 + 2 + 1 and one[0] == {"model": "soft_vq", **{f: v[0] for f, v in levels.items()}}
    assert all(sum(arm[f] != one[0][f] for f in FACTORS) == 1 for arm in one[1:])  # one factor changed at a time
    full = design(levels, "factorial")
    assert len(full) == 2 * 2 * 3 * 3 * 2 == len({tuple(a.values()) for a in full})
    assert len({run_name(arm_config(a)) for a in full}) == len(full)  # every arm trains its own model


def test_the_noisy_autoencoder_adds_the_soft_vq_vaes_noise_in_training_only():
    gen = torch.Generator().manual_seed(0)
    z, eps = 3 * torch.randn(500, 4, generator=gen), torch.randn(500, 4, generator=gen)
    fixed = make_bottleneck("noisy_ae", code_dim=4, noise_std=0.2).train()
    assert torch.allclose(fixed(z, None, eps)[0], z + 0.2 * eps)
    proportional = make_bottleneck("noisy_ae", code_dim=4, noise_std=0.2, noise_scale="proportional").train()
    spread = float(np.std(z.numpy(), axis=0, ddof=1).mean())  # numpy's std of each dimension, averaged
    assert torch.allclose(proportional(z, None, eps)[0], z + 0.2 * spread * eps, atol=1e-5)
    assert torch.equal(fixed.eval()(z)[0], z) and float(fixed(z)[1]["loss"]) == 0.0
    # the plain autoencoder's run name does not depend on noise settings it does not read
    assert run_name(RunConfig(bottleneck="ae", noise_std=0.5)) == run_name(RunConfig(bottleneck="ae"))
    assert run_name(RunConfig(bottleneck="noisy_ae", noise_std=0.5)) != run_name(RunConfig(bottleneck="noisy_ae"))


def test_standardised_kmeans_finds_clusters_that_a_wide_noise_dimension_hides():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    z = np.stack([labels * 10.0 + rng.normal(0, 1, 400), rng.normal(0, 100, 400)], axis=1)
    raw = kmeans_scores(z, labels, n_clusters=2, n_init=5)
    scaled = kmeans_scores(z, labels, n_clusters=2, n_init=5, standardize=True)
    assert scaled["clustering_acc"] == 1.0 and raw["clustering_acc"] < 0.8
    by_hand = (z - z.mean(0)) / z.std(0)
    assert kmeans_scores(by_hand, labels, n_clusters=2, n_init=5) == scaled


def test_loss_still_falling_on_a_known_curve():
    history = [{"step": s, "loss": 1 + math.exp(-s / 100)} for s in range(100, 1001, 100)]
    result = loss_still_falling(history, fraction=0.2)  # from step 800 to 1000
    assert result["drop"] == pytest.approx(math.exp(-8) - math.exp(-10))
    assert result["relative"] == pytest.approx((math.exp(-8) - math.exp(-10)) / (math.exp(-1) - math.exp(-10)))
    assert math.isnan(loss_still_falling(history[:1])["drop"])
    with pytest.raises(ValueError, match="fraction=1"):
        loss_still_falling(history, fraction=1)


def test_diagnostics_over_training_resume_exactly_and_start_from_the_initial_weights():
    data = vqlib.load_dataset("digits")
    configs = [RunConfig(dataset="digits", bottleneck="soft_vq", mlp_hidden="32", code_dim=8, num_codes=8, seed=s,
                         num_iterations=1, log_every=10) for s in (0, 1)]
    rows = diagnostics_over_training(configs, [20, 0, 10, 10], data)
    assert [(r["run"], r["step"]) for r in rows] == [(0, 0), (1, 0), (0, 10), (1, 10), (0, 20), (1, 20)]
    straight = train_many([c.replace(num_iterations=20) for c in configs], None, dataset=data, progress=False)
    for run, result in enumerate(straight):
        assert rows[4 + run] == {"run": run, "step": 20, **model_diagnostics(result.model, data)}
    # step 0 is the model training starts from: one step with a vanishing learning rate leaves it there
    frozen = train_many([c.replace(lr=1e-12) for c in configs], None, dataset=data, progress=False)
    for run, result in enumerate(frozen):
        expected = model_diagnostics(result.model, data)
        assert rows[run] == pytest.approx({"run": run, "step": 0, **expected}, rel=1e-6)
    assert rows[0]["share_nearest"] != rows[4]["share_nearest"] or rows[0]["z_norm"] != rows[4]["z_norm"]
    with pytest.raises(ValueError, match="steps"):
        diagnostics_over_training(configs, [], data)


def test_effects_recover_a_known_additive_effect_in_both_designs():
    import pandas as pd
    from vqlib.factors import effects

    levels = {"recipe": ["published", "paper"], "formula": ["paper", "published"], "sigma_source": ["encoder", "shared"],
              "noise": ["fixed", "none", "proportional"], "num_codes": [16]}
    centre = design(levels)[0]
    for kind in ("one_at_a_time", "factorial"):
        rows = []
        for arm in design(levels, kind):
            for seed in range(5):  # a seed effect shared by every arm, and the recipe adds exactly 0.1
                rows.append({**arm, "seed": seed, "acc": 0.5 + 0.03 * seed + 0.1 * (arm["recipe"] == "paper")
                             - 0.02 * (arm["noise"] == "none")})
        found = {(r["factor"], r["level"]): r for r in effects(pd.DataFrame(rows), "acc", centre)}
        assert set(found) == {("recipe", "paper"), ("formula", "published"), ("sigma_source", "shared"),
                              ("noise", "none"), ("noise", "proportional")}
        assert found["recipe", "paper"]["difference"] == pytest.approx(0.1) and found["recipe", "paper"]["shown"]
        assert found["noise", "none"]["difference"] == pytest.approx(-0.02) and found["noise", "none"]["shown"]
        assert found["formula", "published"]["difference"] == pytest.approx(0.0)
        assert not found["formula", "published"]["shown"] and found["recipe", "paper"]["pairs"] == 5
        expected_pairs = 1 if kind == "one_at_a_time" else 2 * 2 * 3  # arms matched on the other factors
        assert found["recipe", "paper"]["arm_pairs"] == expected_pairs
