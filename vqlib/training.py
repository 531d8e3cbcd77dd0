"""Training as the paper sets it up: Adam, loss eq. 27, in-memory batches sampled on the device.

One path for every model: autograd through the model's own ``forward`` and the public
``torch.optim.Adam`` (fused where the device has the kernel). ``train(config)`` trains one run;
``train_many(configs)`` trains several runs of one architecture at once, and ``train`` is
``train_many`` with one config.

Many runs at once
-----------------
The runs of a batch share the architecture, the dataset, the batch size and the learning rate, and
may differ in their seed and in the scalar hyper-parameters of :data:`PER_RUN_FIELDS` (``beta``,
``noise_std``, ``latent_weight``, EM's ``decay`` and ``temperature``, ``free_bits``, ``num_iterations``, evaluation
settings). Their parameters are
stacked with a leading run dimension (``torch.func.stack_module_state``) and one step runs the
model's ordinary one-run ``forward`` under ``torch.func.vmap`` over ``functional_call``: every
``nn.Linear`` then becomes one batched matrix multiply over the R runs. One Adam optimiser steps
the stacked parameters with the gradient of the *sum* of the per-run losses, so each run's slice
gets exactly its own gradient and, Adam being element-wise, exactly its own update.

Why vmap rather than layers holding (R, in, out) weights and calling ``baddbmm``: both end in the
same batched multiplies, but vmap keeps a single model implementation, the one a reader checks
against the paper; a stacked-weight twin of every layer and bottleneck would be a second copy of
the maths to keep in step (``benchmarks/train_step.py`` measures what the batching buys).

Each run keeps its own random streams: its initial weights come from ``set_seed(seed)`` before its
model is built, and its batch indices and bottleneck noise from its own ``torch.Generator`` seeded
with ``seed`` (``randomness="error"`` makes vmap refuse any other draw). So a run's result does not
depend on which runs share its batch (tested: two configs trained together and each alone). A run
whose loss becomes non-finite is recorded as diverged at the next logged interval and leaves the
stack; so does a run that reaches its ``num_iterations``; the others go on.

Precision
---------
``RunConfig.precision="bf16"`` (or ``"auto"`` where the device has native bf16) runs each step's
encoder and decoder under ``torch.autocast(dtype=torch.bfloat16)``, inside the vmapped one-run
function; the bottleneck, the losses, the float32 master weights and Adam stay as in fp32
(:mod:`vqlib.precision` says which op runs in which precision and why). The checkpoint records the
precision a run trained in, and a run does not resume in another one.

The host synchronises only every ``log_every`` steps. Each run keeps its own run folder:
``checkpoint.pt`` (model, optimiser state in the one-run layout, config, step, generator state,
loss history; written atomically) and ``history.json``; an interrupted batch resumes from them and
ends with exactly the result of an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.func import functional_call, stack_module_state, vmap
from tqdm import tqdm  # plain bars: notebook widgets would pull require.js from a CDN into the book

from .bottlenecks import code_counts, perplexity_from_counts
from .config import RunConfig
from .datasets import Dataset, load_dataset
from .losses import reconstruction_loss
from .model import Autoencoder
from .precision import autocast, resolve_precision
from .run_folder import (EVALUATION_COLUMNS, EVALUATIONS, HISTORY_COLUMNS, RunFolderError, lock_all, prepare,
                         read_checkpoint, read_config, read_json)
from .utils import atomic_torch_save, atomic_write_json, resolve_device, set_seed

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 2  # 2: one generator per run, the bottleneck's noise drawn from it (train_many)
# config fields that may differ when resuming (they do not change what has been computed so far)
RESUMABLE_CHANGES = {"num_iterations", "device", "log_every", "checkpoint_every", "n_init", "classifier_iterations",
                     "cluster_split", "data_dir", "eval_steps"}
# config fields in which the runs of one batch may differ (everything else must be equal)
PER_RUN_FIELDS = ("seed", "beta", "noise_std", "latent_weight", "decay", "temperature", "free_bits", "num_iterations",
                  "n_init", "classifier_iterations", "cluster_split", "fold", "eval_steps")


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
    wall_time: float = 0.0  # this run's share of the seconds spent training in this call
    resumed_from: int = 0  # step the run resumed from (0: fresh)
    diverged: TrainingDiverged | None = None  # set when the loss became non-finite (train_many only)
    runs_together: int = 1  # how many runs were trained in one stack with this one (at the start)
    evaluations: list = field(default_factory=list)  # one dict per step of eval_steps, keys EVALUATION_COLUMNS
    precision: str = "fp32"  # what the training step ran in: "fp32" or "bf16" (RunConfig.precision resolved)


def batch_key(config: RunConfig) -> tuple:
    """What runs trained in one stack must share: every config field but :data:`PER_RUN_FIELDS`."""
    return tuple(sorted((k, v) for k, v in config.canonical().to_dict().items() if k not in PER_RUN_FIELDS))


def train(config: RunConfig, out_dir=None, dataset: Dataset | None = None, progress: bool = True,
          callback=None) -> TrainResult:
    """Train one model; with ``out_dir``, checkpoint there and resume from an existing checkpoint.

    ``callback(step)``, if given, runs after every logged interval (for notebooks); an exception it
    raises (or Ctrl-C) stops the run after a checkpoint has been written. A non-finite loss raises
    :class:`TrainingDiverged` after the checkpoint and history have been written.
    """
    result = train_many([config], [out_dir], dataset=dataset, progress=progress, callback=callback)[0]
    if result.diverged is not None:
        raise result.diverged
    return result


def train_many(configs, out_dirs=None, dataset: Dataset | None = None, progress: bool = True,
               callback=None, init_states=None, frozen=()) -> list[TrainResult]:
    """Train several runs of one architecture as one stacked model (see the module docstring).

    ``configs`` must agree on everything but :data:`PER_RUN_FIELDS` (a ValueError names the first
    field that differs; :func:`vqlib.sweep.group_configs` sorts a grid into such batches).
    ``out_dirs``: one run folder (or None) per config. Returns one :class:`TrainResult` per config,
    in order; a run that diverged has ``diverged`` set and its model as it was at that point.

    ``init_states``: one dict (or None) per config of tensors named as in the model's ``state_dict``
    (e.g. only the ``encoder.*`` entries of another model): they replace those entries of the run's
    seeded initialisation before step 0 (a warm start). ``frozen``: prefixes of parameter names
    (e.g. ``("encoder",)``) whose parameters keep their initial values: they get no gradient, so Adam
    never moves them. A run folder is named by its config alone, which holds neither, so such runs
    take no ``out_dirs``.
    """
    configs = list(configs)
    if not configs:
        raise ValueError("configs is empty: give at least one RunConfig")
    out_dirs = list(out_dirs) if out_dirs is not None else [None] * len(configs)
    if len(out_dirs) != len(configs):
        raise ValueError(f"out_dirs has {len(out_dirs)} entries for {len(configs)} configs: give one per config")
    init_states = list(init_states) if init_states is not None else [None] * len(configs)
    if len(init_states) != len(configs):
        raise ValueError(f"init_states has {len(init_states)} entries for {len(configs)} configs: give one per config")
    frozen = (frozen,) if isinstance(frozen, str) else tuple(frozen)
    if any(d is not None and (s is not None or frozen) for s, d in zip(init_states, out_dirs)):
        raise ValueError("a run with init_states or frozen parameters cannot have a run folder: its config does not "
                         "say how it started or what it trained, so the folder could later be taken for an ordinary "
                         "run; give out_dirs=None")
    _check_batchable(configs)
    device = resolve_device(configs[0].device)
    for out_dir in out_dirs:
        if out_dir is not None:
            prepare(out_dir)  # refuses a folder of another format, or one that is not a run folder
    with lock_all(out_dirs):  # one writer per run folder
        return _train_runs(configs, out_dirs, dataset, device, progress, callback, init_states, frozen)


def _train_runs(configs, out_dirs, dataset, device, progress, callback, init_states, frozen) -> list[TrainResult]:
    dataset = (dataset or load_dataset(configs[0].dataset, configs[0].data_dir)).to(device)  # replaces config.dataset
    runs = [_Run.start(config, out_dir, dataset, device, init)
            for config, out_dir, init in zip(configs, out_dirs, init_states)]
    names = [name for name, _ in runs[0].model().named_parameters()]
    unmatched = [prefix for prefix in frozen if not any(name.startswith(prefix) for name in names)]
    if unmatched:
        raise ValueError(f"frozen={frozen!r}: no parameter name starts with {unmatched[0]!r} (the model's: "
                         f"{', '.join(names[:6])}, ...)")
    for run in runs:
        run.frozen = frozen
    pending = [run for run in runs if run.diverged is None and run.step < run.config.num_iterations]
    for step in sorted({run.step for run in pending}):  # runs resumed at different steps train apart
        _train_stack([run for run in pending if run.step == step], dataset, device, progress, callback)
    return [TrainResult(run.model(), run.config, dataset, device, run.history, run.wall_time, run.resumed_from,
                        run.diverged, run.runs_together, run.evaluations, run.precision) for run in runs]


def _check_batchable(configs) -> None:
    first = configs[0].canonical().to_dict()
    for config in configs[1:]:
        values = config.canonical().to_dict()
        differ = [k for k in first if k not in PER_RUN_FIELDS and values[k] != first[k]]
        if differ:
            k = differ[0]
            raise ValueError(f"configs differ in {k} ({first[k]!r} vs {values[k]!r}): runs trained together may "
                             f"differ only in {', '.join(PER_RUN_FIELDS)}; group them with vqlib.sweep.group_configs")


class _Run:
    """One run of a batch: its config, folder, generator, state outside the stack, and history."""

    def __init__(self, config: RunConfig, out_dir, device: torch.device, input_shape):
        self.config, self.device, self.input_shape = config, device, tuple(input_shape)
        self.precision = resolve_precision(config.precision, device)  # "fp32" or "bf16"; bf16 not native: an error
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(config.seed)
        self.step, self.history, self.optimizer_state = 0, [], None
        self.resumed_from, self.diverged, self.wall_time = 0, None, 0.0
        self.runs_together = 1
        self.frozen = ()  # prefixes of the parameter names that keep their initial values
        self.evaluations = []  # rows of EVALUATION_COLUMNS, one per evaluated step
        self.evaluate_at = set(config.evaluation_steps)  # the steps of eval_steps still to be scored
        self.loaded_from = None  # the checkpoint its state was read from, if any

    @classmethod
    def start(cls, config: RunConfig, out_dir, dataset: Dataset, device: torch.device,
              init_state: dict | None = None) -> "_Run":
        run = cls(config, out_dir, device, dataset.input_shape)
        if run.out_dir is not None and (run.out_dir / EVALUATIONS).exists():  # points already scored are kept
            run.evaluations = read_json(run.out_dir / EVALUATIONS)
            run.evaluate_at -= {row["step"] for row in run.evaluations}
        path = run.checkpoint_path
        if path is None or not path.exists():
            set_seed(config.seed)  # the initial weights come from the run's own seed
            run.model_state = Autoencoder.from_config(config, dataset.input_shape).to(device).state_dict()
            if init_state is not None:  # a warm start: these entries replace the seeded ones
                run.model_state = _warm_start(run.model_state, init_state, device)
        else:
            checkpoint = read_checkpoint(path, device)
            _check_resumable(checkpoint, config, path, run.precision)
            run.model_state, run.optimizer_state = checkpoint["model"], checkpoint["optimizer"]
            run.loaded_from = path
            try:
                run.generator.set_state(checkpoint["rng"]["generator"].cpu())  # a CPU byte tensor on every device
            except RuntimeError as error:
                raise RunFolderError(f"{path} holds a random generator state that torch refuses "
                                     f"({str(error).splitlines()[0]}): delete it to train the run again from the "
                                     "start, or train into a new --out folder") from None
            run.step, run.history = checkpoint["step"], checkpoint["history"]
            run.resumed_from = run.step
            divergence = first_divergence(run.history)
            if divergence is not None:  # this run already diverged: say so again, do not go on
                first, row = divergence
                run.diverged = _diverged(config, row["loss"], first, row["step"], run.out_dir)
        return run

    def record_evaluation(self, row: dict) -> None:
        self.evaluate_at.discard(row["step"])
        self.evaluations = sorted([*self.evaluations, row], key=lambda r: r["step"])
        if self.out_dir is not None:
            atomic_write_json(self.out_dir / EVALUATIONS, self.evaluations)

    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / CHECKPOINT if self.out_dir is not None else None

    def model(self) -> Autoencoder:
        return _rebuild(self.config, self.input_shape, self.model_state, self.device, self.loaded_from)

    def save(self) -> None:
        if self.checkpoint_path is None:
            return
        atomic_torch_save(self.checkpoint_path, {
            "format": CHECKPOINT_FORMAT, "model": self.model_state, "optimizer": self.optimizer_state,
            "config": self.config.to_dict(), "precision": self.precision, "input_shape": self.input_shape, "step": self.step,
            "rng": {"generator": self.generator.get_state()}, "history": self.history,
        })
        atomic_write_json(self.out_dir / "history.json", self.history)


def _warm_start(state: dict, init_state: dict, device: torch.device) -> dict:
    """``state`` with the entries of ``init_state`` put in (same names and shapes), as fresh tensors on ``device``."""
    unknown = sorted(set(init_state) - set(state))
    if unknown:
        raise ValueError(f"init_states names {unknown[:3]}, which the model does not have (its entries: "
                         f"{', '.join(list(state)[:6])}, ...)")
    for name, value in init_state.items():
        if tuple(value.shape) != tuple(state[name].shape):
            raise ValueError(f"init_states[{name!r}] has shape {tuple(value.shape)}, the model's "
                             f"{tuple(state[name].shape)}")
    return {**state, **{name: value.detach().to(device, state[name].dtype).clone() for name, value in init_state.items()}}


class _Stack:
    """The stacked parameters, buffers and Adam state of the runs being trained together."""

    def __init__(self, runs: list, device: torch.device):
        self.runs = runs
        models = [run.model() for run in runs]
        for model in models:
            model.train()
            for name, p in model.named_parameters():  # a frozen parameter is stacked without requires_grad
                p.requires_grad_(not name.startswith(runs[0].frozen) if runs[0].frozen else True)
        self.state_keys = list(models[0].state_dict().keys())
        self.params, self.buffers = stack_module_state(models)  # name -> (R, ...)
        self.base = copy.deepcopy(models[0]).to("meta")  # the one-run module that functional_call fills in
        self.base.train()
        self.optimizer = make_optimizer(list(self.params.values()), runs[0].config.lr, device)
        if runs[0].optimizer_state is not None:
            self.optimizer.load_state_dict(_stack_optimizer_states([run.optimizer_state for run in runs]))
        self.latent_weight = torch.tensor([run.config.latent_weight for run in runs], device=device)
        # reconstruction="nmse" divides by the variance of each run's own training pixels (_training_data)
        self.data_variance = (torch.stack([run.data_variance for run in runs])
                              if runs[0].config.reconstruction == "nmse" else None)
        self.device, self.precision = device, runs[0].precision

    def export(self) -> None:
        """Write each run's slice of the stack back into the run (model and optimiser state)."""
        named = {**self.params, **self.buffers}
        names = list(self.params)
        state = self.optimizer.state_dict()
        for r, run in enumerate(self.runs):
            run.model_state = {k: named[k][r].detach().clone() for k in self.state_keys}
            run.optimizer_state = {
                "state": {i: {k: (v[r].clone() if k != "step" else v.clone()) for k, v in s.items()}
                          for i, s in state["state"].items()},
                "param_groups": [{**g, "params": list(range(len(names)))} for g in state["param_groups"]],
            }

    def loss_fn(self, x, noise, latent_weight, recon_kind, data_variance):
        """Per-run losses over the stack: (loss, reconstruction, latent, indices or None), each with a run dim.

        ``data_variance``: None, or each run's training-pixel variance (R,) for ``reconstruction="nmse"``."""

        def one_run(params, buffers, x, noise, latent_weight, data_variance):
            with autocast(self.precision, self.device):  # bf16: encoder and decoder only (vqlib.precision)
                logits, _, aux = functional_call(self.base, (params, buffers), (x,), {"noise": noise})
            recon = reconstruction_loss(logits.to(x.dtype), x, recon_kind, data_variance)  # in x's dtype
            return recon + latent_weight * aux["loss"], recon, aux["loss"], aux.get("indices")

        if len(self.runs) == 1:  # one run: the same function without vmap's overhead
            first = lambda tree: None if tree is None else ({k: v.squeeze(0) for k, v in tree.items()}  # noqa: E731
                                                           if isinstance(tree, dict) else tree.squeeze(0))
            out = one_run(first(self.params), first(self.buffers), x.squeeze(0), first(noise), latent_weight.squeeze(0),
                          first(data_variance))
            return tuple(None if t is None else t.unsqueeze(0) for t in out)
        in_dims = (0, 0, 0, None if noise is None else 0, 0, None if data_variance is None else 0)
        out_dims = (0, 0, 0, 0 if self.base.bottleneck.num_codes else None)  # indices: quantizers only
        return vmap(one_run, in_dims=in_dims, out_dims=out_dims, randomness="error")(
            self.params, self.buffers, x, noise, latent_weight, data_variance)

    @torch.no_grad()
    def encode(self, runs: list, x: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
        """z_e of the stack's runs ``runs`` (indices) on their inputs x (len(runs), n, ...) -> (len(runs), n, d),
        all runs in one vmapped pass of the encoder (in chunks of ``chunk`` inputs)."""
        rows = torch.tensor(runs, device=x.device)
        params = {k[len("encoder."):]: v[rows] for k, v in self.params.items() if k.startswith("encoder.")}
        buffers = {k[len("encoder."):]: v[rows] for k, v in self.buffers.items() if k.startswith("encoder.")}
        code_dim = self.base.bottleneck.code_dim
        one_run = lambda p, b, x: functional_call(self.base.encoder, (p, b), (x,))[..., :code_dim]  # noqa: E731
        self.base.eval()
        try:
            return torch.cat([vmap(one_run)(params, buffers, x[:, i:i + chunk]) for i in range(0, x.shape[1], chunk)],
                             dim=1)
        finally:
            self.base.train()


def make_optimizer(params, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam over ``params``, with the fused kernel where the device has one (else the foreach one)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # fused kernels missing for this device
        return torch.optim.Adam(params, lr=lr, foreach=device.type != "mps")


def _stack_optimizer_states(states: list) -> dict:
    """One Adam state dict over stacked parameters from the one-run state dicts of the runs."""
    stacked = {}
    for i, first in states[0]["state"].items():
        stacked[i] = {k: (torch.stack([s["state"][i][k] for s in states]) if k != "step" else v.clone())
                      for k, v in first.items()}
    return {"state": stacked, "param_groups": copy.deepcopy(states[0]["param_groups"])}


def _train_stack(runs: list, dataset: Dataset, device: torch.device, progress: bool, callback) -> None:
    """Train ``runs`` (all at the same step) in one stack until each has finished or diverged."""
    config = runs[0].config
    b = config.batch_size
    pool = _training_data(runs, dataset)  # the examples; each run's training rows, held-out digits, data variance
    stack = _Stack(runs, device)
    for run in runs:
        run.runs_together = len(runs)
    bottleneck = stack.base.bottleneck
    num_codes = bottleneck.num_codes
    step = runs[0].step
    end = max(run.config.num_iterations for run in runs)
    sums = torch.zeros(len(runs), 3, device=device)  # running loss, reconstruction, latent per run
    counts = torch.zeros(len(runs), num_codes or 1, dtype=torch.long, device=device)  # code usage per run
    interval_start = [step] * len(runs)
    bar = tqdm(total=end, initial=step, disable=not progress, unit="step", mininterval=1.0, dynamic_ncols=True,
               desc=config.bottleneck if len(runs) == 1 else f"{config.bottleneck} x{len(runs)}")
    consistent = True  # False while a step is half done: a checkpoint then would not resume exactly
    started = time.perf_counter()
    try:
        while stack.runs:
            consistent = False
            idx, noise = [], []
            for run in stack.runs:  # each run's own stream: batch indices, then the bottleneck's noise
                n = len(pool) if run.train_rows is None else len(run.train_rows)
                draw = torch.randint(n, (b,), device=device, generator=run.generator)
                idx.append(draw if run.train_rows is None else run.train_rows[draw])
                noise.append(bottleneck.sample_noise(b, run.generator, device))
            x = pool[torch.stack(idx)]  # (R, b, *input_shape)
            noise = torch.stack(noise) if noise[0] is not None else None
            loss, recon, latent, indices = stack.loss_fn(x, noise, stack.latent_weight, config.reconstruction,
                                                         stack.data_variance)
            stack.optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()  # each run's slice gets the gradient of its own loss
            stack.optimizer.step()
            step += 1
            consistent = True
            sums += torch.stack([loss.detach(), recon.detach(), latent.detach()], dim=-1)
            if num_codes:
                counts += code_counts(indices, num_codes)
            scoring = [r for r, run in enumerate(stack.runs) if step in run.evaluate_at]
            if scoring:
                _evaluate_stack(stack, scoring, step)
            # each run logs on its own schedule, so its history does not depend on the other runs
            logging = [r for r, run in enumerate(stack.runs)
                       if step % config.log_every == 0 or step == run.config.num_iterations]
            if logging:
                lengths = torch.tensor([step - interval_start[r] for r in logging], device=device).unsqueeze(-1)
                rows = _history_rows(step, sums[logging] / lengths, counts[logging] if num_codes else None)
                sums[logging], counts[logging] = 0, 0
                done = []
                for r, row in zip(logging, rows):
                    run = stack.runs[r]
                    run.history.append(row)
                    first, interval_start[r] = interval_start[r], step
                    if not math.isfinite(row["loss"]):
                        run.diverged = _diverged(run.config, row["loss"], first, step, run.out_dir)
                    if run.diverged is not None or step >= run.config.num_iterations:
                        done.append(r)
                bar.update(step - bar.n)
                bar.set_postfix(loss=f"{sum(r['loss'] for r in rows) / len(rows):.4g}", refresh=False)
                if done:  # finished or diverged runs leave the stack, the others go on
                    elapsed = time.perf_counter() - started
                    for run in stack.runs:
                        run.wall_time += elapsed / len(stack.runs)
                    started = time.perf_counter()
                    _save_stack(stack, step, [stack.runs[r] for r in done])
                    keep = [r for r in range(len(stack.runs)) if r not in done]
                    stack = _Stack([stack.runs[r] for r in keep], device) if keep else _EmptyStack()
                    sums, counts = sums[keep], counts[keep]
                    interval_start = [interval_start[r] for r in keep]
                if callback is not None:
                    callback(step)
            if stack.runs and step % config.checkpoint_every == 0:
                _save_stack(stack, step)
    except BaseException:
        if consistent and stack.runs:
            _save_stack(stack, step)  # keep what was computed; a rerun resumes from here
        raise
    finally:
        bar.close()


class _EmptyStack:
    runs: list = []


def _training_data(runs: list, dataset: Dataset) -> torch.Tensor:
    """The examples the runs draw their batches from; each run gets its ``train_rows`` into them (None: all
    of them), its ``heldout`` digits (x, y) that ``eval_steps`` scores, and, for ``reconstruction="nmse"``,
    the ``data_variance`` of its own training pixels (else None).

    Without cross-fitting that is the dataset's training split and its test split; when a run of the
    stack has a ``fold``, the examples are the pooled train and test digits (:meth:`Dataset.fold`) and
    every run draws from its own rows, so runs on different folds still train in one stack."""
    if {run.config.fold for run in runs} == {None}:
        pool, labels = dataset.x_train, None
    else:
        pool, labels = torch.cat([dataset.x_train, dataset.x_test]), torch.cat([dataset.y_train, dataset.y_test])
    for run in runs:
        if labels is None:
            run.train_rows, run.heldout = None, (dataset.x_test, dataset.y_test)
        elif run.config.fold is None:
            run.train_rows, run.heldout = torch.arange(len(dataset.x_train), device=pool.device), \
                (dataset.x_test, dataset.y_test)
        else:
            run.train_rows, test_rows = dataset.fold_rows(run.config.fold)
            run.heldout = (pool[test_rows], labels[test_rows])
        run.data_variance = ((pool if run.train_rows is None else pool[run.train_rows]).var()
                             if run.config.reconstruction == "nmse" else None)
    return pool


def _evaluate_stack(stack: _Stack, scoring: list, step: int) -> None:
    """Score the runs ``scoring`` (indices into the stack) at ``step``: ACC and NMI of k-means on their
    held-out digits, all runs encoded in one pass and scored in parallel (one process per run)."""
    from .evaluation import evaluate_latents_many

    runs = [stack.runs[r] for r in scoring]
    sizes = {len(run.heldout[0]) for run in runs}
    if len(sizes) == 1:  # the usual case: one vmapped pass over every run's held-out digits
        z = stack.encode(scoring, torch.stack([run.heldout[0] for run in runs])).float().cpu().numpy()
    else:
        z = [stack.encode([r], run.heldout[0].unsqueeze(0))[0].float().cpu().numpy() for r, run in zip(scoring, runs)]
    jobs = [dict(z_train=None, y_train=None, z_test=z[i], y_test=run.heldout[1].cpu().numpy(), n_init=run.config.n_init,
                 seed=run.config.seed, probe=False) for i, run in enumerate(runs)]
    for run, score in zip(runs, evaluate_latents_many(jobs)):
        run.record_evaluation({"step": step, **{k: score[k] for k in EVALUATION_COLUMNS if k != "step"}})


def _save_stack(stack: _Stack, step: int, runs=None) -> None:
    """Export the stack's state into its runs at ``step`` and write the checkpoints of ``runs`` (default: all)."""
    stack.export()
    for run in stack.runs:
        run.step = step
    for run in runs if runs is not None else stack.runs:
        run.save()


def _check_resumable(checkpoint: dict, config: RunConfig, path: Path, precision: str) -> None:
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} was written by another version of vqlib (checkpoint format "
                         f"{checkpoint.get('format', 1)}, this version reads {CHECKPOINT_FORMAT}): "
                         "train into a new --out folder")
    saved_precision = checkpoint.get("precision", "fp32")  # a checkpoint from before precision existed: fp32
    if saved_precision != precision:
        raise ValueError(f"{path} was trained in {saved_precision}, this run would go on in {precision} "
                         f"(precision={config.precision!r} on {config.device}); use a new --out folder or "
                         f"precision={saved_precision!r} to resume")
    saved, current = read_config(checkpoint["config"], path).canonical().to_dict(), config.canonical().to_dict()
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k])
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ValueError(f"{path} was written by a run with another config ({diffs}); "
                         "use a new --out folder or the same settings to resume")


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


def _history_rows(step: int, means: torch.Tensor, counts: torch.Tensor | None) -> list[dict]:
    """One history row per run from the interval means (R, 3) and code counts (R, K): one host sync."""
    values = means.tolist()
    perplexity = perplexity_from_counts(counts).tolist() if counts is not None else None
    used = (counts > 0).sum(-1).tolist() if counts is not None else None
    rows = []
    for r, (loss, recon, latent) in enumerate(values):
        rows.append({"step": step, "loss": loss, "reconstruction": recon, "latent": latent,
                     "perplexity": perplexity[r] if counts is not None else None,
                     "codes_used": int(used[r]) if counts is not None else None})
    return rows


def load_checkpoint(run_dir, device="cpu"):
    """Rebuild (model, config, checkpoint) from a run folder's checkpoint."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: train first with `python -m vqlib train --out {run_dir}`")
    checkpoint = read_checkpoint(path, device)
    config = read_config(checkpoint["config"], path)
    return _rebuild(config, checkpoint["input_shape"], checkpoint["model"], device, path), config, checkpoint


def _rebuild(config: RunConfig, input_shape, state: dict, device, path) -> Autoencoder:
    """The model of ``config`` with the weights ``state``, in evaluation mode; weights that do not fit the model
    (names or shapes: a checkpoint that is not this config's) are a RunFolderError naming ``path``."""
    try:
        model = Autoencoder.from_config(config, input_shape).to(device)
        model.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError) as error:
        if path is None:
            raise
        reason = " ".join(str(error).split())
        reason = reason if len(reason) <= 160 else reason[:160] + "..."
        raise RunFolderError(f"{path} holds a model that does not fit its config ({reason}): delete it to "
                             "train the run again from the start, or train into a new --out folder") from None
    return model.eval()
