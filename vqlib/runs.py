"""A run folder: train, evaluate and save everything a result needs to be checked.

``out_dir/`` holds ``config.json``, ``checkpoint.pt``, ``history.json``, ``metrics.json`` and
``latents.npz`` (``z_test``, ``y_test``, ``z_train``, ``y_train``). Every file is written
atomically; a run folder with a finished ``metrics.json`` for the same config is reused.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from .config import RunConfig
from .evaluation import METRICS, evaluate_model
from .training import RESUMABLE_CHANGES, TrainingDiverged, first_divergence, load_checkpoint, train
from .utils import atomic_savez, atomic_write_json, provenance, resolve_device


def run_name(config: RunConfig) -> str:
    """A run folder name: dataset-bottleneck-d-K-iterations-seed plus a short hash of every other
    setting that changes training, so a folder is only ever reused for the same model."""
    from .bottlenecks import QUANTIZERS

    fixed = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES}
    digest = hashlib.sha1(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:8]
    k = f"K{config.num_codes}" if config.bottleneck in QUANTIZERS else "K0"
    return (f"{config.dataset}-{config.bottleneck}-d{config.code_dim}-{k}-it{config.num_iterations}"
            f"-seed{config.seed}-{digest}")


def run_experiment(config: RunConfig, out_dir, dataset=None, progress: bool = True, reuse: bool = True) -> dict:
    """Train (or resume) and evaluate one model; returns the metrics dict written to metrics.json.

    A run whose loss becomes non-finite is not evaluated: its metrics.json records
    ``diverged_at`` (the step training stopped at, else None) and None for every downstream metric.
    """
    out_dir = Path(out_dir)
    metrics_path = out_dir / "metrics.json"
    if reuse and metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        if metrics.get("config") == config.to_dict():
            return metrics
    atomic_write_json(out_dir / "config.json", config.to_dict())
    try:
        result = train(config, out_dir, dataset=dataset, progress=progress)
    except TrainingDiverged as error:
        metrics = {**{m: None for m in METRICS}, "diverged_at": error.step,
                   "diverged": str(error), "dataset": config.dataset, "bottleneck": config.bottleneck,
                   "seed": config.seed, "iterations": error.step, "config": config.to_dict(),
                   **provenance(resolve_device(config.device))}
        atomic_write_json(metrics_path, metrics)
        return metrics
    return _evaluate_and_save(result.model, config, result.dataset, out_dir, result.device, result.wall_time,
                              train_steps_timed=config.num_iterations - result.resumed_from)


def evaluate_run(out_dir, n_init: int | None = None, device: str = "cpu", dataset=None) -> dict:
    """Re-evaluate a run folder from its checkpoint (optionally with another ``n_init``)."""
    from .datasets import load_dataset

    device = resolve_device(device)
    model, config, checkpoint = load_checkpoint(out_dir, device)
    divergence = first_divergence(checkpoint["history"])
    if divergence is not None:
        raise ValueError(f"{out_dir} holds a run whose training loss became non-finite by step "
                         f"{divergence[1]['step']}: there is nothing to evaluate")
    if n_init is not None:
        config = config.replace(n_init=n_init)
    dataset = dataset or load_dataset(config.dataset, config.data_dir)
    return _evaluate_and_save(model, config, dataset, Path(out_dir), device, wall_time=None,
                              train_steps_timed=None, step=checkpoint["step"])


def _evaluate_and_save(model, config, dataset, out_dir, device, wall_time, train_steps_timed, step=None) -> dict:
    start = time.perf_counter()
    metrics, latents = evaluate_model(model, dataset, n_init=config.n_init,
                                      classifier_iterations=config.classifier_iterations, seed=config.seed)
    atomic_savez(out_dir / "latents.npz", **{k: np.asarray(v) for k, v in latents.items()})
    metrics.update({
        "dataset": config.dataset, "bottleneck": config.bottleneck, "seed": config.seed,
        "iterations": step if step is not None else config.num_iterations,
        "train_wall_time_s": wall_time, "train_steps_timed": train_steps_timed,
        "eval_wall_time_s": time.perf_counter() - start, "diverged_at": None, "config": config.to_dict(),
        **provenance(device),
    })
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics
