"""Sweeps: a grid of runs (models x seeds x settings), trained many at once.

    grid = {"bottleneck": ["ae", "soft_vq"], "seed": [0, 1, 2, 3, 4], "num_iterations": 2000}
    summary = vqlib.sweep(grid, "runs")                       # in this process
    summary = vqlib.sweep(grid, "runs", client=Client())      # on a dask.distributed cluster

A grid maps :class:`~vqlib.RunConfig` fields to a value or a list of values and stands for every
combination, as scikit-learn's ``ParameterGrid`` (which expands it); a list of such dicts is the
union of their grids (e.g. one dict per model, each with its own K or beta). ``base`` sets the
fields the grid does not name. The configs are grouped into batches that can share one stack
(:func:`group_configs`), each batch is trained and evaluated by :func:`vqlib.runs.run_many` into
``runs_dir/<run_name>``, and the result is one summary table, a row per run.

Runs are reused: a run folder holding a finished run of the same config is not trained again, and
an interrupted one resumes from its checkpoint. On a dask cluster each batch is one task; a worker
killed mid-run makes the scheduler run its task again elsewhere, and that task resumes from the run
folders' checkpoints (the folders must be on a file system every worker sees), so nothing computed
is lost.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from .config import RunConfig
from .evaluation import METRICS
from .runs import run_many, run_name
from .training import batch_key
from .utils import atomic_write_bytes

#: columns of the summary table besides the config fields that vary across the sweep
SUMMARY_COLUMNS = ("run", "bottleneck", "seed", *METRICS, "reconstruction", "diverged_at", "iterations",
                   "train_wall_time_s", "runs_trained_together")


def expand_grid(grid, base: RunConfig | None = None) -> list[RunConfig]:
    """Every combination of ``grid`` (a dict, or a list of dicts) as RunConfigs, in order, duplicates removed.

    An unknown key is a ValueError naming it and the allowed keys; a bad value is RunConfig's own error.
    """
    from sklearn.model_selection import ParameterGrid

    base = base or RunConfig()
    known = {f.name for f in fields(RunConfig)}
    grids = [grid] if isinstance(grid, dict) else list(grid)
    if not grids or not all(isinstance(g, dict) for g in grids):
        raise ValueError(f"grid={grid!r} is not allowed: give a dict of RunConfig fields (or a list of such dicts)")
    for g in grids:
        unknown = sorted(set(g) - known)
        if unknown:
            raise ValueError(f"grid key {unknown[0]!r} is not a RunConfig field: allowed keys are "
                             f"{', '.join(sorted(known))}")
    lists = [{k: (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in g.items()} for g in grids]
    configs, seen = [], set()
    for values in ParameterGrid(lists):
        config = base.replace(**values)
        key = tuple(sorted(config.canonical().to_dict().items()))  # the same model once
        if key not in seen:
            seen.add(key)
            configs.append(config)
    return configs


def group_configs(configs, max_runs: int | None = 32) -> list[list[RunConfig]]:
    """Split configs into batches that can be trained as one stack (same :func:`vqlib.training.batch_key`),
    at most ``max_runs`` runs each (None: no limit), keeping the order of first appearance."""
    groups: dict = {}
    for config in configs:
        groups.setdefault(batch_key(config), []).append(config)
    batches = []
    for group in groups.values():
        size = max_runs or len(group)
        batches += [group[i:i + size] for i in range(0, len(group), size)]
    return batches


def run_batch(configs, runs_dir, progress: bool = False, dataset=None) -> list[dict]:
    """Train and evaluate one batch into ``runs_dir/<run_name>`` (the task a dask worker runs)."""
    configs = [RunConfig.from_dict(c) if isinstance(c, dict) else c for c in configs]
    return run_many(configs, [Path(runs_dir) / run_name(c) for c in configs], dataset=dataset, progress=progress)


def sweep(grid, runs_dir="runs", base: RunConfig | None = None, client=None, max_runs: int | None = 32,
          dataset=None, progress: bool = True, summary_path=None):
    """Train and evaluate every run of ``grid``; returns the summary table (a pandas DataFrame).

    ``client``: a ``dask.distributed.Client`` to run the batches on (None: in this process, one
    batch after another). ``summary_path``: also write the table there as CSV (atomically).
    """
    configs = expand_grid(grid, base)
    batches = group_configs(configs, max_runs)
    runs_dir = Path(runs_dir)
    ordered = [c for batch in batches for c in batch]  # the order of the results
    if client is None:
        results = []
        for i, batch in enumerate(batches):
            if progress and len(batches) > 1:
                print(f"batch {i + 1} of {len(batches)}: {len(batch)} x {batch[0].bottleneck}", flush=True)
            results += run_batch(batch, runs_dir, progress=progress, dataset=dataset)
    else:
        futures = [client.submit(run_batch, [c.to_dict() for c in batch], str(runs_dir), pure=False,
                                 key=f"vqlib-batch-{i}-{run_name(batch[0])}") for i, batch in enumerate(batches)]
        results = [metrics for batch in client.gather(futures) for metrics in batch]
    table = summary_table(ordered, results)
    if summary_path is not None:
        atomic_write_bytes(summary_path, table.to_csv(index=False).encode())
    return table


def summary_table(configs, results):
    """One row per run: the config fields that vary across ``configs``, the metrics and the run folder."""
    import pandas as pd

    varying = [f.name for f in fields(RunConfig) if len({repr(getattr(c, f.name)) for c in configs}) > 1]
    rows = []
    for config, metrics in zip(configs, results):
        row = {"run": run_name(config), "bottleneck": config.bottleneck, "seed": config.seed}
        row.update({k: getattr(config, k) for k in varying if k not in row})
        row.update({k: metrics.get(k) for k in SUMMARY_COLUMNS if k not in row})
        rows.append(row)
    return pd.DataFrame(rows)
