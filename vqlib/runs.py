"""A run folder: train, evaluate and save everything a result needs to be checked.

``out_dir/`` holds ``config.json``, ``checkpoint.pt``, ``history.json``, ``metrics.json`` and
``latents.npz`` (``z_test``, ``y_test``, ``z_train``, ``y_train``). Every file is written
atomically; a run folder with a finished ``metrics.json`` for the same config is reused.
``run_many`` trains several runs at once (:func:`vqlib.training.train_many`) and scores them on all
cores (:func:`vqlib.evaluation.evaluate_latents_many`); ``run_experiment`` is one run of it.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from .config import RunConfig
from .evaluation import METRICS, encode_dataset, evaluate_latents_many
from .run_folder import check_format, lock, lock_all, prepare, read_json
from .training import RESUMABLE_CHANGES, first_divergence, load_checkpoint, train_many
from .utils import atomic_savez, atomic_write_json, provenance, resolve_device


def run_name(config: RunConfig) -> str:
    """A run folder name: dataset-bottleneck-d-K-iterations-seed (and the PixelCNN's L) plus a short
    hash of every other setting that changes training, so a folder is only ever reused for the same
    model. The hash covers the settings that differ from their defaults, so a field added to
    ``RunConfig`` later leaves existing names alone; fields the bottleneck does not read
    (``RunConfig.canonical``) do not change the name. A run trained in bf16 says so (``-bf16``
    before the hash); ``precision="auto"`` is named by what it picks on this machine."""
    from .bottlenecks import QUANTIZERS

    defaults = RunConfig().to_dict()
    fixed = {k: v for k, v in config.canonical().to_dict().items()
             if k not in RESUMABLE_CHANGES and v != defaults[k]}
    digest = hashlib.sha1(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:8]
    k = f"K{config.num_codes}" if config.bottleneck in QUANTIZERS else "K0"
    decoder = f"-pixelcnn{config.pixelcnn_layers}" if config.decoder == "pixelcnn" else ""
    precision = "" if fixed.get("precision", "fp32") == "fp32" else f"-{fixed['precision']}"
    return (f"{config.dataset}-{config.bottleneck}{decoder}-d{config.code_dim}-{k}-it{config.num_iterations}"
            f"-seed{config.seed}{precision}-{digest}")


def run_experiment(config: RunConfig, out_dir, dataset=None, progress: bool = True, reuse: bool = True) -> dict:
    """Train (or resume) and evaluate one model; returns the metrics dict written to metrics.json.

    A run whose loss becomes non-finite is not evaluated: its metrics.json records
    ``diverged_at`` (the step training stopped at, else None) and None for every downstream metric.
    """
    return run_many([config], [out_dir], dataset=dataset, progress=progress, reuse=reuse)[0]


def finished_metrics(config: RunConfig, out_dir) -> dict | None:
    """The metrics of a finished run of ``config`` in ``out_dir``, or None."""
    path = Path(out_dir) / "metrics.json"
    if path.exists():
        check_format(out_dir)
        metrics = read_json(path)
        if (isinstance(metrics, dict) and _same_model(metrics.get("config"), config)
                and metrics.get("precision", "fp32") == config.canonical().precision):  # what it ran in
            return metrics
    return None


def _same_model(saved, config: RunConfig) -> bool:
    """Whether a saved config dict is ``config`` up to fields its bottleneck does not read."""
    try:
        return RunConfig.from_dict(saved).canonical() == config.canonical()
    except (TypeError, ValueError):
        return False


def run_many(configs, out_dirs, dataset=None, progress: bool = True, reuse: bool = True,
             n_jobs: int | None = None) -> list[dict]:
    """Train the runs that are not finished yet as one stack, then evaluate them all in parallel.

    ``configs`` must be batchable (:func:`vqlib.training.train_many`); ``n_jobs`` is the number of
    processes scoring the runs (None: every core). Returns one metrics dict per config, in order.
    """
    configs, out_dirs = list(configs), [Path(d) for d in out_dirs]
    for out_dir in out_dirs:
        prepare(out_dir)  # refuses a folder of another format, or one that is not a run folder
    with lock_all(out_dirs):  # one writer per run folder
        return _run_many(configs, out_dirs, dataset, progress, reuse, n_jobs)


def _run_many(configs, out_dirs, dataset, progress, reuse, n_jobs) -> list[dict]:
    results = [finished_metrics(c, d) if reuse else None for c, d in zip(configs, out_dirs)]
    todo = [i for i, r in enumerate(results) if r is None]
    if not todo:
        return results
    for i in todo:
        atomic_write_json(out_dirs[i] / "config.json", configs[i].to_dict())
    trained = train_many([configs[i] for i in todo], [out_dirs[i] for i in todo], dataset=dataset, progress=progress)
    dataset = trained[0].dataset
    device = trained[0].device
    scored, jobs = [], []
    for i, result in zip(todo, trained):
        config = configs[i]
        if result.diverged is not None:
            results[i] = {**{m: None for m in METRICS}, "diverged_at": result.diverged.step,
                          "diverged": str(result.diverged), "dataset": config.dataset,
                          "bottleneck": config.bottleneck, "seed": config.seed, "iterations": result.diverged.step,
                          "config": config.to_dict(), **provenance(device, result.precision)}
            atomic_write_json(out_dirs[i] / "metrics.json", results[i])
            continue
        latents, codebook = _encode_and_save(result.model, scored_on(config, dataset), out_dirs[i])
        scored.append((i, result, codebook))
        jobs.append(_scoring_job(latents, config))
    start = time.perf_counter()
    scores = evaluate_latents_many(jobs, n_jobs=n_jobs)
    eval_time = (time.perf_counter() - start) / max(len(jobs), 1)
    for (i, result, codebook), score in zip(scored, scores):
        final = {"reconstruction": result.history[-1]["reconstruction"], "resumed_from": result.resumed_from}
        results[i] = _save_metrics(out_dirs[i], configs[i], {**score, **codebook, **final}, device,
                                   iterations=configs[i].num_iterations, wall_time=result.wall_time,
                                   train_steps_timed=configs[i].num_iterations - result.resumed_from,
                                   eval_time=eval_time, runs_together=result.runs_together,
                                   precision=result.precision)
    return results


def scored_on(config: RunConfig, dataset):
    """The train/test split a run of ``config`` trains and is scored on: the dataset's own, or its
    cross-fitting fold (``config.fold``, :meth:`vqlib.datasets.Dataset.fold`)."""
    return dataset if config.fold is None else dataset.fold(config.fold)


def _encode_and_save(model, dataset, out_dir: Path) -> tuple[dict, dict]:
    """Encode both splits, write ``latents.npz`` and return (latents, codebook statistics)."""
    latents, codebook = encode_dataset(model, dataset)
    atomic_savez(out_dir / "latents.npz", **{k: np.asarray(v) for k, v in latents.items()})
    return latents, codebook


def _scoring_job(latents: dict, config: RunConfig) -> dict:
    return dict(z_train=latents["z_train"], y_train=latents["y_train"], z_test=latents["z_test"],
                y_test=latents["y_test"], n_init=config.n_init, classifier_iterations=config.classifier_iterations,
                seed=config.seed, cluster_split=config.cluster_split)


def evaluate_run(out_dir, n_init: int | None = None, device: str = "cpu", dataset=None) -> dict:
    """Re-evaluate a run folder from its checkpoint (optionally with another ``n_init``)."""
    device = resolve_device(device)
    if not Path(out_dir).is_dir():
        raise FileNotFoundError(f"{out_dir} does not exist: train first with `python -m vqlib train --out {out_dir}`")
    check_format(out_dir)
    with lock(out_dir):
        return _evaluate_run(out_dir, n_init, device, dataset)


def _evaluate_run(out_dir, n_init, device, dataset) -> dict:
    from .datasets import load_dataset

    model, config, checkpoint = load_checkpoint(out_dir, device)
    divergence = first_divergence(checkpoint["history"])
    if divergence is not None:
        raise ValueError(f"{out_dir} holds a run whose training loss became non-finite by step "
                         f"{divergence[1]['step']}: there is nothing to evaluate")
    if n_init is not None:
        config = config.replace(n_init=n_init)
    dataset = dataset or load_dataset(config.dataset, config.data_dir)
    start = time.perf_counter()
    latents, codebook = _encode_and_save(model, scored_on(config, dataset), Path(out_dir))
    score = evaluate_latents_many([_scoring_job(latents, config)], n_jobs=1)[0]
    return _save_metrics(Path(out_dir), config, {**score, **codebook}, device, iterations=checkpoint["step"],
                         wall_time=None, train_steps_timed=None, eval_time=time.perf_counter() - start,
                         precision=checkpoint.get("precision", "fp32"))


def _save_metrics(out_dir: Path, config: RunConfig, metrics: dict, device, iterations: int, wall_time,
                  train_steps_timed, eval_time: float, runs_together: int | None = None,
                  precision: str = "fp32") -> dict:
    metrics = {**metrics,
               "dataset": config.dataset, "bottleneck": config.bottleneck, "seed": config.seed,
               "iterations": iterations, "train_wall_time_s": wall_time, "train_steps_timed": train_steps_timed,
               "runs_trained_together": runs_together, "eval_wall_time_s": eval_time, "diverged_at": None,
               "config": config.to_dict(), **provenance(device, precision)}
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics
