"""When do the investigation's (page 10's) arms stop moving on ACC and NMI? Trains them with scores over training.

    python benchmarks/metric_convergence.py [--steps 8000] [--seeds 5] [--mlp-hidden 256-256] [--runs-dir DIR]

Trains every arm of notebooks/10_soft_vq_investigation.ipynb's one-at-a-time design around the authors'
published configuration (``RunConfig.published_code``), with its controls, ``--seeds`` seeds per arm, seed i
cross-fitted on fold i of mnist5k (trained on the other four folds and scored on fold i), and scores each
run at the log-spaced steps 250, 500, 1000, ... up to ``--steps`` while it trains (``eval_steps="log"``).
Prints, per arm, ACC and NMI over the steps (mean and range over seeds) and the verdict of
:func:`vqlib.convergence.convergence`, and writes the table to ``--out`` (CSV). The run folders are
named without their budget and resumable: rerun the same command to continue after an interruption, or
with a larger ``--steps`` to train every run on from where it stopped (its earlier scores are kept).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

import vqlib
from vqlib import factors
from vqlib.convergence import convergence
from vqlib.runs import run_many, run_name
from vqlib.sweep import group_configs

LEVELS = {"recipe": ["published", "paper"], "formula": ["published", "paper"], "sigma_source": ["encoder", "shared"],
          "noise": ["none", "fixed"], "num_codes": [128]}


def arms_of(levels: dict) -> list[dict]:
    soft = factors.design(levels)
    controls = []
    for arm in soft:
        for control in (factors.control_of(arm, "ae"), factors.control_of(arm, "vq")):
            if control not in controls:
                controls.append(control)
    return soft + controls


def folder(config) -> str:
    """The run's folder name without its number of steps, so that a longer budget trains the same run on."""
    return run_name(config).replace(f"-it{config.num_iterations}-", "-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--mlp-hidden", default="256-256")
    parser.add_argument("--n-init", type=int, default=20)
    parser.add_argument("--runs-dir", default="_build/metric_convergence")
    parser.add_argument("--out", default="_build/metric_convergence.csv")
    args = parser.parse_args()
    data = vqlib.load_dataset("mnist5k")
    base = vqlib.RunConfig(dataset="mnist5k", mlp_hidden=args.mlp_hidden, num_iterations=args.steps, eval_steps="log",
                           n_init=args.n_init, checkpoint_every=1000, log_every=250)
    arms = arms_of(LEVELS)
    centre = arms[0]
    configs, labels = [], []
    for arm in arms:
        for seed in range(args.seeds):
            configs.append(factors.arm_config(arm, base).replace(seed=seed, fold=seed % vqlib.datasets.NUM_FOLDS))
            labels.append(factors.label(arm, centre))
    started = time.perf_counter()
    batches = group_configs(configs)
    for i, batch in enumerate(batches):
        print(f"batch {i + 1} of {len(batches)}: {len(batch)} x {batch[0].bottleneck}", flush=True)
        run_many(batch, [Path(args.runs_dir) / folder(c) for c in batch], dataset=data, progress=True)
    print(f"{len(configs)} runs trained or reused in {time.perf_counter() - started:.0f} s")
    frames = []
    for label, config in zip(labels, configs):
        table = vqlib.Run(Path(args.runs_dir) / folder(config)).evaluations
        frames.append(table.assign(arm=label, seed=config.seed))
    scores = pd.concat(frames, ignore_index=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    scores.to_csv(args.out, index=False)
    for metric in ("clustering_acc", "nmi"):
        wide = scores.groupby(["arm", "step"], sort=False)[metric].agg(["mean", "min", "max"])
        cells = wide.apply(lambda r: f"{r['mean']:.3f} [{r['min']:.3f}, {r['max']:.3f}]", axis=1).unstack("step")
        print(f"\n{metric}: mean [min, max] over {args.seeds} seeds, by step\n")
        print(cells.to_markdown())
    verdicts = convergence(scores, "arm", ("clustering_acc", "nmi"), labels={"clustering_acc": "ACC", "nmi": "NMI"})
    print("\n" + verdicts[["verdict", "clustering_acc_per_doubling", "nmi_per_doubling"]].round(4).to_markdown())


if __name__ == "__main__":
    main()
