"""Training as the paper sets it up: Adam, loss eq. 27, in-memory batches sampled on the device.

The paper's MLP is small, so per-step overhead is what costs time. The loop keeps the whole
dataset on the training device and draws batches there (no DataLoader, no host-device copy),
keeps running sums on the device and synchronises with the host only every ``log_every`` steps,
differentiates the paper's MLP by hand (:class:`vqlib.mlp_step.MLPStep`) and calls the fused Adam
kernel directly (:class:`vqlib.optim.AdamStep`); both are bit for bit what autograd and
``optimizer.step()`` give. A loss that becomes NaN or infinite stops the run (:class:`TrainingDiverged`).

Checkpoints (``checkpoint.pt``) hold the model, the optimiser, the config, the step, the random
states and the loss history, and are written atomically; ``train(config, out_dir)`` on a folder
with a checkpoint resumes from it and ends with exactly the model an uninterrupted run gives.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm  # plain bars: notebook widgets would pull require.js from a CDN into the book

from .config import RunConfig
from .datasets import Dataset, load_dataset
from .model import Autoencoder
from .bottlenecks.base import check_choice
from .losses import reconstruction_loss
from .mlp_step import MLPStep
from .optim import AdamStep, make_optimizer
from .utils import atomic_torch_save, atomic_write_json, resolve_device, set_seed

CHECKPOINT = "checkpoint.pt"
BACKWARDS = ("auto", "autograd")
HISTORY_COLUMNS = ("step", "loss", "reconstruction", "latent", "perplexity", "codes_used")
# config fields that may differ when resuming (they do not change what has been computed so far)
RESUMABLE_CHANGES = {"num_iterations", "device", "log_every", "checkpoint_every", "n_init", "classifier_iterations",
                     "data_dir"}


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite; ``step`` is the end of the interval where it did.

    ``train`` checks the loss at every logged interval (no extra host sync), writes the checkpoint
    and ``history.json`` up to that step when it has a run folder, and raises this.
    """

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


@dataclass
class TrainResult:
    model: Autoencoder
    config: RunConfig
    dataset: Dataset
    device: torch.device
    history: list = field(default_factory=list)  # one dict per log interval, keys HISTORY_COLUMNS
    wall_time: float = 0.0  # seconds spent training in this call
    resumed_from: int = 0  # step the run resumed from (0: fresh)


def _rng_state(generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "batches": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(generator: torch.Generator, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["batches"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_resumable(saved: dict, config: RunConfig, path: Path) -> None:
    current = config.to_dict()
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k])
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ValueError(f"{path} was written by a run with another config ({diffs}); "
                         "use a new --out folder or the same settings to resume")


def train(config: RunConfig, out_dir=None, dataset: Dataset | None = None, progress: bool = True,
          callback=None, backward: str = "auto") -> TrainResult:
    """Train one model; with ``out_dir``, checkpoint there and resume from an existing checkpoint.

    ``callback(step, model)``, if given, runs after every logged interval (for notebooks); an
    exception it raises (or Ctrl-C) stops the run after a checkpoint has been written.
    ``backward="auto"`` differentiates the paper's MLP by hand (:class:`vqlib.mlp_step.MLPStep`,
    the same gradients bit for bit, faster) and anything else with autograd; ``"autograd"``
    uses autograd for every model.
    """
    check_choice("backward", backward, BACKWARDS)
    device = resolve_device(config.device)
    set_seed(config.seed)
    dataset = (dataset or load_dataset(config.dataset, config.data_dir)).to(device)  # a given dataset replaces config.dataset
    model = Autoencoder.from_config(config, dataset.input_shape).to(device)
    optimizer = make_optimizer(model, config.lr, device)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    data_variance = float(dataset.x_train.var()) if config.reconstruction == "nmse" else None

    step, history = 0, []
    checkpoint_path = Path(out_dir) / CHECKPOINT if out_dir is not None else None
    if checkpoint_path is not None and checkpoint_path.exists():
        checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=False)
        _check_resumable(checkpoint["config"], config, checkpoint_path)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        _set_rng_state(generator, checkpoint["rng"])
        step, history = checkpoint["step"], checkpoint["history"]
        divergence = first_divergence(history)
        if divergence is not None:  # this run already diverged: say so again, do not go on
            first, row = divergence
            raise _diverged(config, row["loss"], first, row["step"], out_dir)
    resumed_from = step
    adam = AdamStep(optimizer)  # after loading: it keeps the state tensors it finds
    mlp_step = (MLPStep(model, config.reconstruction, config.latent_weight, data_variance)
                if backward == "auto" and MLPStep.supports(model) else None)

    def save_checkpoint():
        if checkpoint_path is None:
            return
        atomic_torch_save(checkpoint_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "config": config.to_dict(),
            "input_shape": dataset.input_shape, "step": step, "rng": _rng_state(generator), "history": history,
        })
        atomic_write_json(Path(out_dir) / "history.json", history)

    num_codes = model.bottleneck.num_codes
    x_train, n = dataset.x_train, len(dataset.x_train)
    sums = torch.zeros(3, device=device)  # running loss, reconstruction, latent over the interval
    counts = torch.zeros(num_codes or 1, dtype=torch.long, device=device)  # code usage over the interval
    interval_start = step
    model.train()
    start = time.perf_counter()
    bar = tqdm(total=config.num_iterations, initial=step, disable=not progress, desc=f"{config.bottleneck}",
               unit="step", mininterval=1.0, dynamic_ncols=True)
    consistent = True  # False while a step is half done: a checkpoint then would not resume exactly
    try:
        while step < config.num_iterations:
            consistent = False
            idx = torch.randint(n, (config.batch_size,), device=device, generator=generator)
            x = x_train[idx]
            adam.zero_grad()
            if mlp_step is not None:
                loss, recon, aux = mlp_step.step(x)
            else:
                logits, _, aux = model(x)
                recon = reconstruction_loss(logits, x, config.reconstruction, data_variance)
                loss = recon + config.latent_weight * aux["loss"]
                loss.backward()
            adam.step()
            step += 1
            consistent = True
            sums += torch.stack([loss.detach(), recon.detach(), aux["loss"].detach()])
            if num_codes:
                counts += torch.bincount(aux["indices"], minlength=num_codes)
            if step % config.log_every == 0 or step == config.num_iterations:
                history.append(_history_row(step, sums / (step - interval_start), counts if num_codes else None))
                sums.zero_(), counts.zero_()
                bar.update(step - bar.n)
                bar.set_postfix(loss=f"{history[-1]['loss']:.4g}", refresh=False)
                if not math.isfinite(history[-1]["loss"]):
                    raise _diverged(config, history[-1]["loss"], interval_start, step, out_dir)
                interval_start = step
                if callback is not None:
                    callback(step, model)
            if step % config.checkpoint_every == 0:
                save_checkpoint()
    except BaseException:
        if consistent:
            save_checkpoint()  # keep what was computed; a rerun resumes from here
        raise
    finally:
        bar.close()
    save_checkpoint()
    model.eval()
    return TrainResult(model, config, dataset, device, history, time.perf_counter() - start, resumed_from)


def first_divergence(history: list) -> tuple[int, dict] | None:
    """(step before its interval, row) of the first logged interval with a non-finite loss, or None."""
    for previous, row in zip([{"step": 0}] + history, history):
        if not math.isfinite(row["loss"]):
            return previous["step"], row
    return None


def _diverged(config: RunConfig, loss: float, first: int, step: int, out_dir) -> TrainingDiverged:
    where = f"; {out_dir} keeps the checkpoint and history.json up to here" if out_dir is not None else ""
    hint = (" (the published formula underflows to 0/0 for codes far from every codeword: "
            "formula='paper' computes eq. 7 in log space)" if config.formula == "published" else "")
    return TrainingDiverged(f"the training loss became {loss} between steps {first + 1} and {step}: "
                            f"training stopped at step {step}{where}{hint}", step)


def _history_row(step: int, means: torch.Tensor, counts: torch.Tensor | None) -> dict:
    from .bottlenecks import perplexity_from_counts

    loss, recon, latent = means.tolist()
    row = {"step": step, "loss": loss, "reconstruction": recon, "latent": latent, "perplexity": None,
           "codes_used": None}
    if counts is not None:
        row["perplexity"] = float(perplexity_from_counts(counts))
        row["codes_used"] = int((counts > 0).sum())
    return row


def load_checkpoint(run_dir, device="cpu"):
    """Rebuild (model, config) from a run folder's checkpoint."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: train first with `python -m vqlib train --out {run_dir}`")
    checkpoint = torch.load(path, map_location=device, weights_only=False)
    config = RunConfig.from_dict(checkpoint["config"])
    model = Autoencoder.from_config(config, checkpoint["input_shape"]).to(device)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return model, config, checkpoint
