"""Has a reported number stopped moving? Convergence judged on the metric itself, over its seeds.

A falling-then-flat loss says nothing about whether the clustering accuracy has stopped moving: a
run is scored while it trains (``RunConfig.eval_steps``, log-spaced: 250, 500, 1000, ...), and a
setting counts as **converged at step T** when, for every metric reported, the mean over its seeds
changed over the last doubling of training (T/2 -> T) by less than ``max(tolerance, standard error of
that change over the seeds)``. On a log axis of steps, a metric that keeps gaining a constant amount
per doubling (the usual shape of a slow tail) is then "still moving: +x per doubling", however flat
its curve looks on a linear axis.

    table = convergence(evaluations, by="arm", metrics=("clustering_acc", "nmi"))
    table.loc["centre", "verdict"]     # 'converged at 2000' or 'still moving: NMI +0.021 per doubling'
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["TOLERANCE", "convergence", "doubling_changes"]

#: the smallest change per doubling of the steps that counts as moving (ACC and NMI are in [0, 1])
TOLERANCE = 0.01


def doubling_changes(frame, metric: str, step: str = "step", seed: str = "seed"):
    """For one setting's runs (rows: seed, step, metric), the change of ``metric`` per doubling of the steps
    between each evaluated step T and the latest evaluated step <= T/2 (the previous doubling).

    Returns a list of ``(T, mean change per doubling, standard error of it over the seeds, seeds)``, in
    order of T; the change is divided by log2(T / T') when the earlier step T' is not exactly T/2.
    Only steps that every seed reached count.
    """
    wide = frame.pivot_table(index=step, columns=seed, values=metric, aggfunc="mean").dropna(axis=0, how="any")
    steps = [int(s) for s in wide.index]
    out = []
    for t in steps:
        earlier = [s for s in steps if s <= t / 2]
        if not earlier:
            continue
        t0 = earlier[-1]
        per_doubling = (wide.loc[t] - wide.loc[t0]).to_numpy(np.float64) / math.log2(t / t0)
        n = len(per_doubling)
        se = float(np.std(per_doubling, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        out.append((t, float(np.mean(per_doubling)), se, n))
    return out


def convergence(frame, by, metrics, step: str = "step", seed: str = "seed", tolerance: float = TOLERANCE,
                labels: dict | None = None):
    """Per setting (``by``), whether every metric of ``metrics`` has stopped moving, as a DataFrame.

    ``frame``: one row per run and evaluated step (columns ``by``, ``seed``, ``step`` and the metrics),
    e.g. the concatenated :attr:`vqlib.Run.evaluations` of a sweep. A metric is *moving* at T when the
    seed-mean of its change per doubling (T/2 -> T) is at least ``max(tolerance, its standard error)``
    in size; a setting is *converged at T* when no metric moves at T nor at any later evaluated step.

    Columns: ``steps`` (the last step), ``converged`` (at the last step), ``converged_at`` (the first T
    from which it stays converged, else None), ``<metric>_per_doubling`` and ``<metric>_se`` over the last
    doubling, and ``verdict``, the words a page prints ("converged at T" or "still moving: ...").
    ``labels`` names the metrics in the verdict (default: their column names).
    """
    import pandas as pd

    if isinstance(metrics, str):
        metrics = (metrics,)
    missing = [c for c in (*([by] if isinstance(by, str) else by), step, seed, *metrics) if c not in frame.columns]
    if missing:
        raise ValueError(f"frame has no column {missing[0]!r}: give one row per run and step with the columns "
                         f"{by!r}, {seed!r}, {step!r} and the metrics {list(metrics)}")
    tolerance = float(tolerance)
    labels = labels or {}
    rows = []
    for key, group in frame.groupby(by, sort=False):
        changes = {m: doubling_changes(group, m, step, seed) for m in metrics}
        row = {"setting": key, "steps": int(group[step].max())}
        if not all(changes.values()):  # fewer than two doublings of steps evaluated
            rows.append({**row, "converged": False, "converged_at": None,
                         **{f"{m}_per_doubling": math.nan for m in metrics}, **{f"{m}_se": math.nan for m in metrics},
                         "verdict": "not enough evaluated steps to tell (evaluate at T/2 and T)"})
            continue
        steps = [t for t, *_ in changes[metrics[0]]]
        moving_at = {t: [m for m in metrics for (s, change, se, _) in changes[m]
                         if s == t and abs(change) >= max(tolerance, se if math.isfinite(se) else 0.0)]
                     for t in steps}
        converged_at = next((t for t in steps if not any(moving_at[s] for s in steps if s >= t)), None)
        last = {m: changes[m][-1] for m in metrics}
        for m in metrics:
            row[f"{m}_per_doubling"], row[f"{m}_se"] = last[m][1], last[m][2]
        row["converged"] = not moving_at[steps[-1]]
        row["converged_at"] = converged_at
        if converged_at is not None:
            row["verdict"] = f"converged at {converged_at}"
        else:  # then the last doubling moved
            words = ", ".join(f"{labels.get(m, m)} {last[m][1]:+.3f}" for m in moving_at[steps[-1]])
            row["verdict"] = f"still moving: {words} per doubling"
        rows.append(row)
    return pd.DataFrame(rows).set_index("setting")
