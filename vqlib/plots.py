"""Plots the book's pages share: loss curves, image grids, codebook usage, mean +- std comparisons.

Every function draws with matplotlib and returns the ``Figure`` (the notebook calls ``plt.show()``);
pass ``ax``/``axes`` to draw into an existing figure instead. Inputs are plain data, so the functions
work for any bottleneck and dataset::

    plots.loss_curves(result.history)                         # history.json rows or a DataFrame
    plots.reconstruction_grid(x, torch.sigmoid(logits))       # (n, 784), (n, 64) or (n, 3, 32, 32)
    plots.codebook_usage(result.history, num_codes=128)       # perplexity and codes used per log interval
    plots.mean_std(vqlib.summarize(rows, by=("setting",)), "setting", ["clustering_acc", "nmi"])
    plots.seed_dots(runs, "L", ["rate", "swap_gap"], by="free_bits")  # every seed a dot, the mean a line
    plots.scores_over_training(evaluations, "arm")            # ACC and NMI against the step, log axis
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["as_images", "codebook_usage", "has_codebook_usage", "image_grid", "loss_curves", "mean_std",
           "reconstruction_grid", "scores_over_training", "seed_dots"]

LOSS_LABELS = {"loss": "total loss", "reconstruction": "reconstruction", "latent": "latent (bottleneck) loss"}


def _frame(history):
    import pandas as pd

    frame = history if isinstance(history, pd.DataFrame) else pd.DataFrame(list(history))
    if frame.empty or "step" not in frame.columns:
        raise ValueError("history must be a non-empty list of dicts (or a DataFrame) with a 'step' column, "
                         "as in TrainResult.history or a run folder's history.json")
    return frame


def _new_axes(n: int, width: float = 4.0, height: float = 3.2):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def _plain_log_axis(ax, span: float) -> None:
    """Log-scaled y axis labelled with plain numbers (minor ticks too when the data span under a decade)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain if span < 10 else NullFormatter())


def loss_curves(history, columns=("loss", "reconstruction", "latent"), axes=None, label=None, logy=False):
    """One panel per loss column against the training step (one point per log interval: the mean over it).

    ``history``: rows with ``step`` and the columns (TrainResult.history, history.json or a DataFrame).
    Call again with the same ``axes`` and another ``label`` to overlay runs. ``logy``: logarithmic
    vertical axes (for columns whose values are all positive), labelled with plain numbers.
    """
    frame = _frame(history)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"columns={list(columns)!r} is not allowed: history has no {missing}")
    if axes is None:
        fig, axes = _new_axes(len(columns))
    else:
        axes = list(np.ravel(axes))
        if len(axes) != len(columns):
            raise ValueError(f"axes has {len(axes)} panels for {len(columns)} columns")
        fig = axes[0].figure
    for ax, column in zip(axes, columns):
        ax.plot(frame["step"], frame[column], marker=".", label=label)
        ax.set_title(LOSS_LABELS.get(column, column))
        ax.set_xlabel("training step")
        if logy and (frame[column] > 0).all():
            _plain_log_axis(ax, frame[column].max() / frame[column].min())
        ax.grid(alpha=0.3)
        if label is not None:
            ax.legend()
    fig.tight_layout()
    return fig


def has_codebook_usage(history) -> bool:
    """True when the history holds codebook statistics (quantizers: vq, soft_vq, em_vq)."""
    frame = _frame(history)
    return "perplexity" in frame.columns and frame["perplexity"].notna().any()


def codebook_usage(history, num_codes: int | None = None, axes=None, label=None):
    """Perplexity exp(H) of the code-usage distribution and the number of codes used, per log interval.

    Both are counted over the whole interval (all batches between two log steps), so they reach
    ``num_codes`` only when every codeword is chosen; a dashed line marks ``num_codes`` (K).
    Raises ValueError for a history without codebook statistics (non-quantizing bottlenecks).
    """
    frame = _frame(history)
    if not has_codebook_usage(frame):
        raise ValueError("this history has no codebook statistics: only quantizers (vq, soft_vq, em_vq) have them")
    if axes is None:
        fig, axes = _new_axes(2)
    else:
        axes = list(np.ravel(axes))
        if len(axes) != 2:
            raise ValueError(f"axes has {len(axes)} panels; codebook_usage draws 2")
        fig = axes[0].figure
    for ax, column, title in zip(axes, ("perplexity", "codes_used"), ("perplexity of code usage", "codes used")):
        line, = ax.plot(frame["step"], frame[column], marker=".", label=label)
        # the axis starts at 0 and keeps autoscaling, so later overlays still fit
        ax.update_datalim([(float(frame["step"].iloc[0]), 0.0)])
        line.sticky_edges.y.append(0.0)
        if num_codes is not None:
            ax.axhline(num_codes, color="grey", linestyle="--", linewidth=1)
            ax.update_datalim([(float(frame["step"].iloc[0]), float(num_codes))])
            ax.annotate(f"K = {num_codes}", (0.02, 0.95), xycoords="axes fraction", va="top", color="grey")
        ax.autoscale_view()
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        if label is not None:
            ax.legend()
    fig.tight_layout()
    return fig


def as_images(x, image_shape=None) -> np.ndarray:
    """Turn a batch into images for ``imshow``: (n, H, W) grey or (n, H, W, 3) colour, values as given.

    Flat rows of a square length are reshaped (784 -> 28x28 MNIST, 64 -> 8x8 digits); (n, C, H, W)
    tensors are moved to channels-last (C = 1 is dropped). ``image_shape`` overrides the guess for
    flat rows, e.g. ``(28, 28)``. Accepts numpy arrays and torch tensors (on any device).
    """
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if image_shape is not None:
        return x.reshape((len(x), *image_shape))
    if x.ndim == 2:
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1]:
            raise ValueError(f"cannot guess an image shape for rows of length {x.shape[1]}: pass image_shape")
        return x.reshape(len(x), side, side)
    if x.ndim == 3:
        return x
    if x.ndim == 4 and x.shape[1] in (1, 3):
        x = np.transpose(x, (0, 2, 3, 1))
        return x[..., 0] if x.shape[-1] == 1 else x
    raise ValueError(f"cannot show a batch of shape {x.shape} as images")


def image_grid(rows, row_labels=None, image_shape=None, cell: float = 1.1):
    """A grid with one row per batch in ``rows`` (each (n, ...), same n), values clipped to [0, 1]."""
    batches = [np.clip(as_images(r, image_shape), 0.0, 1.0) for r in rows]
    n = len(batches[0])
    if n == 0 or any(len(b) != n for b in batches):
        raise ValueError("every row of the grid must hold the same, non-zero number of images")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(batches), n, figsize=(cell * n, cell * len(batches) + 0.3), squeeze=False)
    for r, batch in enumerate(batches):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(batch[c], cmap="gray" if batch[c].ndim == 2 else None, vmin=0.0, vmax=1.0,
                      interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig


def reconstruction_grid(originals, reconstructions, n: int = 10, image_shape=None):
    """First ``n`` originals (top row) above their reconstructions (bottom row).

    ``reconstructions`` are pixel values in [0, 1]: apply ``torch.sigmoid`` to the decoder's logits first.
    """
    if len(originals) != len(reconstructions):
        raise ValueError(f"{len(originals)} originals but {len(reconstructions)} reconstructions")
    n = min(n, len(originals))
    return image_grid([originals[:n], reconstructions[:n]], ["original", "reconstruction"], image_shape)


def mean_std(summary, x: str, metrics, labels=None, axes=None, reference=None):
    """One panel per metric: mean with +- one standard deviation error bars, one point per row.

    ``summary``: a DataFrame with columns ``x``, ``<metric>_mean`` and ``<metric>_std`` (what
    :func:`vqlib.summarize` returns; a missing or NaN std, e.g. from a single seed, draws no bar).
    ``reference``: optional row label whose mean is drawn as a dotted horizontal line in every panel.
    """
    metrics = list(metrics)
    missing = [f"{m}_mean" for m in metrics if f"{m}_mean" not in summary.columns]
    if x not in summary.columns or missing:
        raise ValueError(f"summary needs the columns {x!r} and {missing or 'the <metric>_mean columns'}")
    if axes is None:
        fig, axes = _new_axes(len(metrics), width=max(3.5, 0.55 * len(summary) + 1.5), height=3.6)
    else:
        axes = list(np.ravel(axes))
        fig = axes[0].figure
    positions = np.arange(len(summary))
    names = [str(v) for v in summary[x]]
    for ax, metric in zip(axes, metrics):
        means = summary[f"{metric}_mean"].to_numpy(dtype=float)
        stds = summary[f"{metric}_std"].to_numpy(dtype=float) if f"{metric}_std" in summary else np.zeros_like(means)
        ax.errorbar(positions, means, yerr=np.nan_to_num(stds), fmt="o", capsize=4)
        if reference is not None and reference in names:
            ax.axhline(means[names.index(reference)], color="grey", linestyle=":", linewidth=1)
        ax.set_xticks(positions, names, rotation=45, ha="right")
        ax.set_title((labels or {}).get(metric, metric))
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def seed_dots(frame, x: str, measures, by: str | None = None, order=None, titles=None, logx: bool = False, axes=None):
    """One panel per measure: a dot per row of ``frame`` (one run, one seed) at its ``x``, and the mean of each ``x``.

    A numeric ``x`` puts the dots at its values (``logx``: on a log axis) and joins the means by a line; any other
    ``x`` is a category, in ``order`` (default: first appearance), its mean a short horizontal bar. ``by``: one
    colour per group (in order of appearance), the groups dodged sideways so that they do not hide each other.
    ``titles``: panel titles by measure (default: the measure's name).
    """
    import pandas as pd
    from matplotlib.ticker import NullLocator

    frame, measures = frame.reset_index(drop=True), list(measures)
    missing = [c for c in [x, *measures, *([by] if by else [])] if c not in frame.columns]
    if missing:
        raise ValueError(f"frame has no column(s) {missing}")
    if axes is None:
        fig, axes = _new_axes(len(measures), width=3.8, height=3.3)
    else:
        axes = list(np.ravel(axes))
        fig = axes[0].figure
    numeric = pd.api.types.is_numeric_dtype(frame[x])
    levels = sorted(frame[x].unique()) if numeric else list(order if order is not None else dict.fromkeys(frame[x]))
    place = (lambda v: float(v)) if numeric else levels.index
    scale = (lambda v: np.log10(v)) if logx else (lambda v: v)
    spots = np.array([scale(place(v)) for v in levels], dtype=float)
    step = np.diff(spots).min() if len(spots) > 1 else 1.0
    groups = list(dict.fromkeys(frame[by])) if by else [None]
    for ax, measure in zip(axes, measures):
        for i, group in enumerate(groups):
            part = frame if by is None else frame[frame[by] == group]
            shift = (i - (len(groups) - 1) / 2) * 0.2 * step
            at = [scale(place(v)) + shift for v in part[x]]
            label = None if by is None else f"{by} {group:g}" if isinstance(group, (int, float, np.number)) else str(group)
            (dots,) = ax.plot([10 ** a for a in at] if logx else at, part[measure], "o", alpha=0.6, label=label)
            means = part.groupby(x)[measure].mean().reindex([v for v in levels if v in set(part[x])])
            where = [scale(place(v)) + shift for v in means.index]
            ax.plot([10 ** a for a in where] if logx else where, means.to_numpy(), "-" if numeric else "_",
                    ms=18, mew=2, color=dots.get_color(), alpha=0.5 if numeric else 0.9)
        if logx:
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())  # only the levels are labelled
        ax.set_xticks([10 ** s for s in spots] if logx else spots, [str(v) for v in levels])
        ax.set_xlabel(x)
        ax.set_title((titles or {}).get(measure, measure), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        if by:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def scores_over_training(frame, by: str, metrics=("clustering_acc", "nmi"), order=None, labels=None, dashed=(),
                         axes=None):
    """Each setting's metrics against the training step on a log axis: the mean over its seeds as a line,
    their range as a band (``frame``: one row per run and evaluated step, e.g. the concatenated
    :attr:`vqlib.Run.evaluations`, with the column ``by``). ``dashed``: settings drawn dashed (the controls).

    On a log axis of steps a metric that gains a constant amount per doubling is a straight rising line,
    which is what :func:`vqlib.convergence.convergence` calls "still moving"."""
    from .evaluation import METRIC_LABELS

    if axes is None:
        fig, axes = _new_axes(len(metrics), width=5.2, height=3.7)
    fig = axes[0].figure
    order = list(order) if order is not None else list(dict.fromkeys(frame[by]))
    for ax, metric in zip(axes, metrics):
        for setting in order:
            spread = frame[frame[by] == setting].groupby("step")[metric].agg(["mean", "min", "max"])
            if spread.empty:
                continue
            line, = ax.plot(spread.index, spread["mean"], marker="o", ms=3, label=setting,
                            ls="--" if setting in dashed else "-")
            ax.fill_between(spread.index, spread["min"], spread["max"], color=line.get_color(), alpha=0.12)
        ax.set_xscale("log", base=2)
        steps = sorted(frame["step"].unique())
        ax.set_xticks(steps, [f"{int(s):,}" for s in steps], fontsize=7)  # the evaluated steps, in plain numbers
        ax.minorticks_off()
        ax.set_xlabel("training step (log scale)")
        ax.set_ylabel((labels or METRIC_LABELS).get(metric, metric) + " (held-out digits)")
    axes[-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    return fig
