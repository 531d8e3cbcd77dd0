"""Does bf16 autocast change the results? Table 1's models on mnist5k, bf16 against fp32, seed by seed.

    python benchmarks/bf16_equivalence.py [--models ae,vq,soft_vq,em_vq] [--seeds 5] [--num-iterations 1000]

Trains every model with the same seeds twice, ``precision="fp32"`` and ``precision="bf16"``
(``vqlib.sweep``: the seeds of one model and precision train together as one stack), at page 05's
default budget (``notebooks/05_downstream_tasks.ipynb``: encoder 256-256, d = 64, K = 128, 1,000
steps of batch 32, k-means with 10 initialisations), and prints a markdown table: for each model
and measure (k-means ACC, NMI, the final reconstruction term) the mean over the seeds of the
seed-paired difference bf16 - fp32, with a 95 % paired t interval (scipy.stats.t, n - 1 degrees of
freedom), beside the spread of the fp32 runs across seeds (their standard deviation): a
difference is noise when its interval holds 0. Then the training seconds per run of each precision.
The run folders go to ``--runs-dir`` and are reused on a rerun.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy import stats

import vqlib

MEASURES = {"clustering_acc": "ACC", "nmi": "NMI", "reconstruction": "final reconstruction"}
# page 05's default parameter set (its parameters cell)
PAGE_05 = dict(dataset="mnist5k", mlp_hidden="256-256", code_dim=64, num_codes=128, num_iterations=1000, batch_size=32,
               n_init=10, classifier_iterations=500, device="cpu")


def paired_t(differences, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of the paired differences and its two-sided t interval (mean, low, high)."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    mean = float(d.mean())
    if len(d) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return mean, mean - half, mean + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ae,vq,soft_vq,em_vq", help="bottlenecks (default: ae,vq,soft_vq,em_vq)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per model and precision (default: 5)")
    parser.add_argument("--num-iterations", type=int, default=PAGE_05["num_iterations"],
                        help=f"Adam steps per run (default: page 05's {PAGE_05['num_iterations']})")
    parser.add_argument("--runs-dir", default="_build/bf16_equivalence", help="run folders (default: %(default)s)")
    args = parser.parse_args()
    models = args.models.split(",")
    base = vqlib.RunConfig(**{**PAGE_05, "num_iterations": args.num_iterations})
    grid = {"bottleneck": models, "seed": list(range(args.seeds)), "precision": ["fp32", "bf16"]}
    table = vqlib.sweep(grid, args.runs_dir, base=base, progress=False, max_runs=args.seeds)
    print(f"mnist5k, page 05's default budget ({base.mlp_hidden} encoder, d = {base.code_dim}, K = {base.num_codes}, "
          f"{base.num_iterations} steps of batch {base.batch_size}, n_init {base.n_init}), {args.seeds} seeds; "
          "bf16 - fp32, seed-paired, mean [95 % t interval]; fp32 sd: the spread of the fp32 runs over seeds\n")
    print("| model | measure | fp32 mean | bf16 - fp32 [95 % t interval] | fp32 sd | noise? |")
    print("|---|---|---|---|---|---|")
    times = {}
    for model in models:
        rows = table[table["bottleneck"] == model]
        arms = {p: rows[rows["precision"] == p].set_index("seed").sort_index() for p in ("fp32", "bf16")}
        times[model] = {p: arms[p]["train_wall_time_s"].mean() for p in arms}
        for column, label in MEASURES.items():
            a, b = (arms[p][column].astype(float) for p in ("fp32", "bf16"))
            mean, low, high = paired_t((b - a).to_numpy())
            noise = "yes" if low <= 0 <= high else "no"
            print(f"| {model} | {label} | {a.mean():.4f} | {mean:+.4f} [{low:+.4f}, {high:+.4f}] | {a.std():.4f} "
                  f"| {noise} |")
    print("\ntraining seconds per run (runs of a model and precision trained together):")
    for model, t in times.items():
        print(f"{model}: fp32 {t['fp32']:.1f} s, bf16 {t['bf16']:.1f} s (ratio {t['bf16'] / t['fp32']:.2f})")


if __name__ == "__main__":
    main()
