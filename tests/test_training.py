"""Training, evaluation protocol, resume and determinism, on the embedded digits dataset."""

import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch

import vqlib
from vqlib import RunConfig, load_dataset, train
from vqlib.evaluation import clustering_accuracy, encode, kmeans_scores, summarize
from vqlib.runs import run_experiment, run_many
from vqlib.training import load_checkpoint, train_many

# A narrower MLP than the paper's keeps the suite fast; the loop and the bottlenecks are the same.
SMALL = dict(dataset="digits", mlp_hidden="128-128-256", code_dim=16, num_codes=32, batch_size=64, log_every=50,
             n_init=5, classifier_iterations=200)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# digits has 64 pixels, MNIST 784: beta = 20 on MNIST's summed log-likelihood is about beta = 1.6 here.
# The VQ-VAE runs at d = 8: at d = 16 its z_e on digits clusters no better than a random network's
# after a short run, in line with Table 1, where the VQ-VAE's z_e is below the raw pixels.
@pytest.mark.parametrize("bottleneck, extra", [
    ("ae", {}), ("vae", {}), ("beta_vae", {"beta": 1.5}), ("info_dropout", {}), ("vq", {"code_dim": 8}),
    ("soft_vq", {}), ("em_vq", {}),
])
def test_short_training_beats_untrained_network(digits, bottleneck, extra):
    config = RunConfig(bottleneck=bottleneck, num_iterations=1500, **{**SMALL, **extra})
    x = torch.cat([digits.x_train, digits.x_test])  # all 1,797 digits: a less noisy accuracy
    labels = torch.cat([digits.y_train, digits.y_test]).numpy()
    vqlib.set_seed(config.seed)
    untrained = vqlib.Autoencoder.from_config(config, digits.input_shape)
    before = kmeans_scores(encode(untrained, x)[0], labels, n_init=10)["clustering_acc"]
    result = train(config, dataset=digits, progress=False)
    after = kmeans_scores(encode(result.model, x)[0], labels, n_init=10)["clustering_acc"]
    assert after > before + 0.02, f"{bottleneck}: clustering accuracy {before:.3f} untrained -> {after:.3f} trained"
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_clustering_accuracy_matches_brute_force_over_permutations():
    rng = np.random.default_rng(0)
    for _ in range(20):
        k = int(rng.integers(2, 6))
        labels = rng.integers(0, k, size=40)
        clusters = np.where(rng.random(40) < 0.6, (labels + 1) % k, rng.integers(0, k, size=40))
        best = max(np.mean(np.array(perm)[clusters] == labels) for perm in itertools.permutations(range(k)))
        assert clustering_accuracy(labels, clusters) == pytest.approx(best)


def test_clustering_accuracy_with_arbitrary_ids_and_more_clusters_than_labels():
    labels = np.array([7, 7, 7, 3, 3, 3])
    clusters = np.array([0, 0, 5, 9, 9, 9])  # cluster 5 cannot be matched once 0 has taken label 7
    assert clustering_accuracy(labels, clusters) == pytest.approx(5 / 6)


def test_same_seed_gives_identical_metrics_on_cpu(digits, tmp_path):
    config = RunConfig(bottleneck="soft_vq", num_iterations=60, device="cpu", **SMALL)
    first = run_experiment(config, tmp_path / "a", dataset=digits, progress=False)
    second = run_experiment(config, tmp_path / "b", dataset=digits, progress=False)
    for key in ("clustering_acc", "nmi", "classification_acc", "perplexity", "codes_used"):
        assert first[key] == second[key], key
    a, b = np.load(tmp_path / "a" / "latents.npz"), np.load(tmp_path / "b" / "latents.npz")
    np.testing.assert_array_equal(a["z_test"], b["z_test"])


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_result(digits, tmp_path):
    config = RunConfig(bottleneck="soft_vq", num_iterations=120, checkpoint_every=40, device="cpu",
                       **{**SMALL, "log_every": 20})
    whole = run_experiment(config, tmp_path / "whole", dataset=digits, progress=False)

    def stop_at_100(step):
        if step == 100:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(config, tmp_path / "resumed", dataset=digits, progress=False, callback=stop_at_100)
    checkpoint = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 100  # the state at the interruption was kept
    resumed = run_experiment(config, tmp_path / "resumed", dataset=digits, progress=False)
    for key in ("clustering_acc", "nmi", "classification_acc", "perplexity", "codes_used"):
        assert resumed[key] == whole[key], key
    a, b = np.load(tmp_path / "whole" / "latents.npz"), np.load(tmp_path / "resumed" / "latents.npz")
    np.testing.assert_array_equal(a["z_train"], b["z_train"])
    history = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert [row["step"] for row in history] == list(range(20, 121, 20))


def test_resume_with_a_different_config_is_refused(digits, tmp_path):
    config = RunConfig(bottleneck="vq", num_iterations=20, **SMALL)
    train(config, tmp_path, dataset=digits, progress=False)
    with pytest.raises(ValueError, match="num_codes"):
        train(config.replace(num_codes=8), tmp_path, dataset=digits, progress=False)


def test_longer_run_continues_from_a_finished_checkpoint(digits, tmp_path):
    config = RunConfig(bottleneck="ae", num_iterations=40, **SMALL)
    train(config, tmp_path, dataset=digits, progress=False)
    result = train(config.replace(num_iterations=60), tmp_path, dataset=digits, progress=False)
    assert result.resumed_from == 40 and result.history[-1]["step"] == 60


def test_run_folder_contents(digits, tmp_path):
    config = RunConfig(bottleneck="vq", num_iterations=30, **SMALL)
    metrics = run_experiment(config, tmp_path, dataset=digits, progress=False)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "checkpoint.pt", "history.json", "metrics.json",
                                                     "latents.npz"}
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("clustering_acc", "nmi", "classification_acc", "perplexity", "codes_used", "dataset", "bottleneck",
                "seed", "iterations", "versions", "device", "train_wall_time_s"):
        assert key in saved, key
    assert saved["versions"]["torch"] and saved["iterations"] == 30 and saved["bottleneck"] == "vq"
    assert 1 <= saved["codes_used"] <= 32 and 1 <= saved["perplexity"] <= saved["codes_used"] + 1e-9
    latents = np.load(tmp_path / "latents.npz")
    assert latents["z_test"].shape == (360, 16) and latents["z_train"].shape == (1437, 16)
    np.testing.assert_array_equal(latents["y_test"], digits.y_test.numpy())
    assert metrics["clustering_acc"] == saved["clustering_acc"]
    # a finished run folder with the same config is reused, not retrained
    mtime = (tmp_path / "checkpoint.pt").stat().st_mtime_ns
    assert run_experiment(config, tmp_path, dataset=digits, progress=False)["nmi"] == saved["nmi"]
    assert (tmp_path / "checkpoint.pt").stat().st_mtime_ns == mtime


def test_evaluate_raw_and_summary(digits):
    raw = vqlib.evaluate_raw(digits, n_init=3, classifier_iterations=200)
    assert 0.5 < raw["clustering_acc"] <= 1 and 0.9 < raw["classification_acc"] <= 1
    rows = [{"dataset": "d", "bottleneck": "vq", "nmi": v} for v in (0.2, 0.4)]
    table = summarize(rows, metrics=("nmi",))
    assert table.loc[0, "nmi_mean"] == pytest.approx(0.3)
    assert table.loc[0, "nmi_std"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
    assert table.loc[0, "runs"] == 2


def test_published_code_config_trains(digits):
    config = RunConfig.published_code(**{**SMALL, "num_iterations": 30})
    assert (config.noise_std, config.sigma_source, config.formula, config.reconstruction) == (0.0, "encoder", "published",
                                                                                      "nmse")
    result = train(config, dataset=digits, progress=False)
    assert np.isfinite(result.history[-1]["loss"])


def test_device_auto_is_cpu_here_and_bad_device_is_named():
    if not torch.cuda.is_available():
        assert vqlib.resolve_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="device='cuda'"):
            vqlib.resolve_device("cuda")


def _nan_digits(digits):
    """digits whose pixels are all NaN: the loss is NaN from the first step, deterministically."""
    import dataclasses

    return dataclasses.replace(digits, x_train=torch.full_like(digits.x_train, float("nan")))


def test_training_stops_at_the_first_non_finite_loss_and_keeps_the_run(digits, tmp_path):
    from vqlib.training import TrainingDiverged

    config = RunConfig(bottleneck="ae", num_iterations=40, **{**SMALL, "log_every": 5})
    with pytest.raises(TrainingDiverged, match="between steps 1 and 5") as error:
        train(config, tmp_path, dataset=_nan_digits(digits), progress=False)
    assert error.value.step == 5
    history = json.loads((tmp_path / "history.json").read_text())
    assert [row["step"] for row in history] == [5] and np.isnan(history[0]["loss"])
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 5
    # a rerun on the folder says so again at once instead of training on from NaN weights
    with pytest.raises(TrainingDiverged, match="between steps 1 and 5"):
        train(config.replace(num_iterations=80), tmp_path, dataset=_nan_digits(digits), progress=False)


def test_a_diverged_run_is_recorded_without_downstream_metrics(digits, tmp_path):
    config = RunConfig(bottleneck="ae", num_iterations=40, **{**SMALL, "log_every": 10})
    metrics = run_experiment(config, tmp_path, dataset=_nan_digits(digits), progress=False)
    assert metrics["diverged_at"] == 10 and metrics["clustering_acc"] is None and metrics["nmi"] is None
    assert "training stopped at step 10" in metrics["diverged"]
    assert json.loads((tmp_path / "metrics.json").read_text())["diverged_at"] == 10
    assert not (tmp_path / "latents.npz").exists()
    finished = run_experiment(config, tmp_path / "fine", dataset=digits, progress=False)
    assert finished["diverged_at"] is None and finished["clustering_acc"] is not None


@pytest.fixture
def float64(digits):
    """digits in float64 and float64 models: runs trained together and alone then agree to ~1e-12
    (in float32, Adam turns last-bit differences of the batched multiplies into ~1e-3 in a few weights)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield dataclasses.replace(digits, x_train=digits.x_train.double(), x_test=digits.x_test.double())
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("bottleneck", ["soft_vq", "em_vq", "vae", "noisy_ae"])
def test_runs_trained_together_match_runs_trained_alone(float64, bottleneck, tmp_path):
    base = RunConfig(bottleneck=bottleneck, num_iterations=100, **{**SMALL, "log_every": 25})
    configs = [base, base.replace(seed=1, beta=0.5, noise_std=0.3, latent_weight=2.0, num_iterations=150)]
    together = run_many(configs, [tmp_path / "a", tmp_path / "b"], dataset=float64, progress=False)
    alone = [run_experiment(c, tmp_path / f"alone{i}", dataset=float64, progress=False) for i, c in enumerate(configs)]
    for i, (a, b) in enumerate(zip(together, alone)):
        assert a["runs_trained_together"] == 2 and b["runs_trained_together"] == 1
        for key in ("clustering_acc", "nmi", "classification_acc", "perplexity", "codes_used"):
            assert a[key] == b[key], (i, key)
        model_a = load_checkpoint(tmp_path / "ab"[i])[0].state_dict()
        model_b = load_checkpoint(tmp_path / f"alone{i}")[0].state_dict()
        for name in model_a:
            torch.testing.assert_close(model_a[name], model_b[name], rtol=1e-9, atol=1e-10, msg=name)
        history_a = json.loads((tmp_path / "ab"[i] / "history.json").read_text())
        history_b = json.loads((tmp_path / f"alone{i}" / "history.json").read_text())
        assert [r["step"] for r in history_a] == [r["step"] for r in history_b] == list(range(25, configs[i].num_iterations + 1, 25))
        assert [r["loss"] for r in history_a] == pytest.approx([r["loss"] for r in history_b], rel=1e-9)
    assert together[0]["clustering_acc"] != together[1]["clustering_acc"] or together[0]["nmi"] != together[1]["nmi"]


def test_a_diverging_run_stops_and_the_others_go_on(digits, tmp_path):
    config = RunConfig(bottleneck="vae", num_iterations=60, **{**SMALL, "log_every": 20})
    # a latent weight beyond float32's range makes this run's loss infinite from its first step
    configs = [config, config.replace(latent_weight=1e39), config.replace(seed=1)]
    results = train_many(configs, [tmp_path / str(i) for i in range(3)], dataset=digits, progress=False)
    assert results[1].diverged is not None and results[1].diverged.step == 20
    assert [r.diverged for r in (results[0], results[2])] == [None, None]
    assert [row["step"] for row in results[0].history] == [20, 40, 60]
    alone = train(configs[2], dataset=digits, progress=False)
    assert [r["loss"] for r in results[2].history] == pytest.approx([r["loss"] for r in alone.history], rel=1e-4)
    with pytest.raises(vqlib.training.TrainingDiverged, match=r"loss became (nan|inf) between steps 1 and 20"):  # a rerun says so again
        train(configs[1], tmp_path / "1", dataset=digits, progress=False)


def test_an_interrupted_batch_resumes_to_the_same_result(digits, tmp_path):
    config = RunConfig(bottleneck="soft_vq", num_iterations=120, checkpoint_every=40, device="cpu",
                       **{**SMALL, "log_every": 20})
    configs = [config, config.replace(seed=3, beta=1.0)]
    whole = train_many(configs, dataset=digits, progress=False)

    def stop_at_100(step):
        if step == 100:
            raise Interrupt

    dirs = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(Interrupt):
        train_many(configs, dirs, dataset=digits, progress=False, callback=stop_at_100)
    assert [torch.load(d / "checkpoint.pt", weights_only=True)["step"] for d in dirs] == [100, 100]
    resumed = train_many(configs, dirs, dataset=digits, progress=False)
    for a, b in zip(whole, resumed):
        assert b.resumed_from == 100 and a.history == b.history
        for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert torch.equal(x, y), name


def test_configs_that_cannot_share_a_stack_are_refused(digits):
    config = RunConfig(bottleneck="vq", num_iterations=10, **SMALL)
    with pytest.raises(ValueError, match=r"configs differ in code_dim \(16 vs 8\)"):
        train_many([config, config.replace(code_dim=8)], dataset=digits, progress=False)
    with pytest.raises(ValueError, match="configs is empty"):
        train_many([], dataset=digits)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("bottleneck", ["soft_vq", "em_vq", "vae", "noisy_ae"])
def test_runs_train_together_on_cuda(digits, bottleneck):
    config = RunConfig(bottleneck=bottleneck, num_iterations=60, device="cuda", **{**SMALL, "log_every": 20})
    together = train_many([config, config.replace(seed=1, beta=0.5)], dataset=digits, progress=False)
    alone = train(config, dataset=digits, progress=False)
    assert together[0].device.type == "cuda" and together[0].diverged is None
    assert [r["loss"] for r in together[0].history] == pytest.approx([r["loss"] for r in alone.history], rel=1e-3)


def test_fit_encoder_output_is_the_ridge_regression_and_keeps_the_extra_head(digits):
    from vqlib.model import fit_encoder_output

    vqlib.set_seed(0)
    model = vqlib.Autoencoder.from_config(RunConfig(bottleneck="soft_vq", **{**SMALL, "num_codes": 8}), digits.input_shape)
    head = model.encoder[-1]
    extra_before = head.weight[:, 16:].detach().clone()
    x = digits.x_train[:300]
    with torch.no_grad():
        features = torch.nn.Sequential(*list(model.encoder)[:-1])(x).double().numpy()  # (300, 256)
    rng = np.random.default_rng(0)
    code = features @ rng.standard_normal((256, 16)) + rng.standard_normal(16)  # a code the features express
    rms = fit_encoder_output(model, x, code, ridge=0.0)
    assert rms < 1e-6 * np.sqrt((code**2).sum(1).mean())
    assert torch.equal(head.weight[:, 16:], extra_before)  # the sigma head is left alone
    # with a ridge: numpy's least squares on the augmented system [H; sqrt(n ridge) I] w = [y; 0]
    target = rng.standard_normal((300, 16))
    fit_encoder_output(model, x, target, ridge=0.1)
    centred = features - features.mean(0)
    augmented = np.concatenate([centred, np.sqrt(300 * 0.1) * np.eye(256)])
    w = np.linalg.lstsq(augmented, np.concatenate([target - target.mean(0), np.zeros((256, 16))]), rcond=None)[0]
    np.testing.assert_allclose(head.weight[:, :16].detach().double().numpy(), w, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(head.bias[:16].detach().double().numpy(), target.mean(0) - features.mean(0) @ w,
                               rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="code_dim"):
        fit_encoder_output(model, x, code[:, :3])


def test_warm_start_and_frozen_parameters(digits):
    config = RunConfig(bottleneck="vq", num_iterations=40, **{**SMALL, "log_every": 20})
    vqlib.set_seed(0)
    own = vqlib.Autoencoder.from_config(config, digits.input_shape).state_dict()  # what seed 0 starts from anyway
    plain, same = (train_many([config], dataset=digits, progress=False, init_states=init)[0]
                   for init in (None, [own]))
    for name, value in plain.model.state_dict().items():
        assert torch.equal(value, same.model.state_dict()[name]), name
    # the encoder of another seed, frozen: it comes out exactly as it went in; the rest trains
    vqlib.set_seed(7)
    other = vqlib.Autoencoder.from_config(config, digits.input_shape).state_dict()
    encoder = {k: v for k, v in other.items() if k.startswith("encoder.")}
    configs = [config, config.replace(seed=1)]
    results = train_many(configs, dataset=digits, progress=False, init_states=[encoder, encoder], frozen="encoder")
    for result in results:
        state = result.model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in encoder.items())
        assert not torch.equal(state["decoder.0.weight"], other["decoder.0.weight"])
        assert not torch.equal(state["bottleneck.codebook"], own["bottleneck.codebook"])
    assert not torch.equal(results[0].model.state_dict()["decoder.0.weight"],
                           results[1].model.state_dict()["decoder.0.weight"])  # each run its own decoder
    with pytest.raises(ValueError, match="does not have"):
        train_many([config], dataset=digits, progress=False, init_states=[{"encoder.9.weight": torch.zeros(1)}])
    with pytest.raises(ValueError, match="shape"):
        train_many([config], dataset=digits, progress=False, init_states=[{"decoder.0.weight": torch.zeros(2, 2)}])
    with pytest.raises(ValueError, match="no parameter name starts with 'coder'"):
        train_many([config], dataset=digits, progress=False, frozen="coder")
    with pytest.raises(ValueError, match="run folder"):
        train_many([config], ["somewhere"], dataset=digits, progress=False, init_states=[encoder])
