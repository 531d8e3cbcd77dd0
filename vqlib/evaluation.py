"""The paper's evaluation protocol ("Representation Learning Tasks").

Encode the test set to z_e (before any noise or quantisation); k-means with 10 clusters and
``n_init`` initialisations (the paper: 100), accuracy by the optimal one-to-one matching of
clusters to labels (Hungarian algorithm, scipy's ``linear_sum_assignment``) and NMI; a
single-layer softmax classifier trained on the training latents and tested on the test latents.
The "raw data" row applies the same tests to the pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import normalized_mutual_info_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .bottlenecks import CodebookUsage
from .utils import available_cpus

#: The downstream tasks of the paper's Tables 1-2, as metrics.json, the sweeps and the pages name them.
DOWNSTREAM_METRICS = ("clustering_acc", "nmi", "classification_acc")
#: Every metric of a run's evaluation (the downstream tasks, then the codebook's usage on the test set).
METRICS = (*DOWNSTREAM_METRICS, "perplexity", "codes_used")
#: How the pages label each metric in tables and plots: the one place the words are chosen.
METRIC_LABELS = {"clustering_acc": "clustering ACC", "nmi": "NMI", "classification_acc": "linear classifier",
                 "perplexity": "perplexity (test)", "codes_used": "codes used (test)"}


def clustering_accuracy(labels, clusters) -> float:
    """Accuracy of ``clusters`` under the best one-to-one map of clusters to labels (Hungarian matching)."""
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    if labels.shape != clusters.shape:
        raise ValueError(f"labels and clusters differ in shape: {labels.shape} vs {clusters.shape}")
    label_ids, y = np.unique(labels, return_inverse=True)
    cluster_ids, c = np.unique(clusters, return_inverse=True)
    contingency = np.zeros((len(cluster_ids), len(label_ids)), dtype=np.int64)
    np.add.at(contingency, (c, y), 1)
    rows, cols = linear_sum_assignment(contingency, maximize=True)
    return float(contingency[rows, cols].sum() / len(labels))


def kmeans_scores(z, labels, n_clusters: int = 10, n_init: int = 10, seed: int = 0, standardize: bool = False) -> dict:
    """k-means on z (best of ``n_init`` initialisations): clustering accuracy and NMI.

    ``standardize``: cluster each dimension scaled to mean 0 and variance 1 (k-means' Euclidean
    distance otherwise weighs dimensions by their spread, which a regulariser can change alone).
    """
    z = np.asarray(z, np.float64)
    if standardize:
        z = StandardScaler().fit_transform(z)
    clusters = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit_predict(z)
    return {"clustering_acc": clustering_accuracy(labels, clusters),
            "nmi": float(normalized_mutual_info_score(labels, clusters))}  # 2 I / (H(y) + H(y_hat))


def classification_accuracy(z_train, y_train, z_test, y_test, max_iter: int = 500, seed: int = 0) -> float:
    """Test accuracy of a single-layer softmax classifier (multinomial logistic regression on
    standardised features) trained on the training latents."""
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    classifier.fit(np.asarray(z_train, np.float64), np.asarray(y_train))
    return float(classifier.score(np.asarray(z_test, np.float64), np.asarray(y_test)))


@torch.no_grad()
def encode(model, x: torch.Tensor, batch_size: int = 1000):
    """z_e for every row of x, and the codebook usage over the whole pass (None for non-quantizers)."""
    model.eval()
    device = next(model.parameters()).device
    usage = CodebookUsage(model.bottleneck.num_codes) if model.bottleneck.num_codes else None
    chunks = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device)
        z_e, extra = model.encode_heads(xb)
        if usage is not None:
            usage.update(model.bottleneck(z_e, extra)[1]["indices"])
        chunks.append(z_e.float().cpu())
    return torch.cat(chunks).numpy(), usage


def evaluate_latents(z_train, y_train, z_test, y_test, n_init: int = 10, classifier_iterations: int = 500,
                     seed: int = 0, cluster_split: str = "test", probe: bool = True) -> dict:
    """Clustering accuracy and NMI, and classification accuracy (train -> test; ``probe=False``: not computed,
    and the training latents may be None).

    ``cluster_split="test"`` clusters the test latents (the paper); ``"all"`` clusters train and
    test together: k-means fits no labels, so every example may be scored, as the clustering
    literature does, and more points make the accuracy less noisy.
    """
    if cluster_split == "all":
        metrics = kmeans_scores(np.concatenate([z_train, z_test]), np.concatenate([y_train, y_test]), n_init=n_init,
                                seed=seed)
    elif cluster_split == "test":
        metrics = kmeans_scores(z_test, y_test, n_init=n_init, seed=seed)
    else:
        raise ValueError(f"cluster_split={cluster_split!r} is not allowed: choose 'test' or 'all'")
    if probe:
        metrics["classification_acc"] = classification_accuracy(z_train, y_train, z_test, y_test,
                                                                 classifier_iterations, seed)
    return metrics


def encode_dataset(model, dataset) -> tuple[dict, dict]:
    """Encode a dataset's two splits -> (latents, codebook statistics of the test split).

    latents: dict of numpy arrays ``z_test``, ``y_test``, ``z_train``, ``y_train``.
    """
    z_train, _ = encode(model, dataset.x_train)
    z_test, usage = encode(model, dataset.x_test)
    latents = {"z_test": z_test, "y_test": dataset.y_test.cpu().numpy(),
               "z_train": z_train, "y_train": dataset.y_train.cpu().numpy()}
    return latents, {"perplexity": usage.perplexity if usage else None,
                     "codes_used": usage.codes_used if usage else None}


def evaluate_model(model, dataset, n_init: int = 10, classifier_iterations: int = 500, seed: int = 0):
    """The paper's protocol on a trained model -> (metrics, latents) (see :func:`encode_dataset`)."""
    latents, codebook = encode_dataset(model, dataset)
    metrics = evaluate_latents(latents["z_train"], latents["y_train"], latents["z_test"], latents["y_test"],
                               n_init, classifier_iterations, seed)
    return {**metrics, **codebook}, latents


def evaluate_latents_many(jobs, n_jobs: int | None = None) -> list[dict]:
    """:func:`evaluate_latents` for many runs at once, one run per core.

    ``jobs``: dicts of :func:`evaluate_latents`'s keyword arguments. joblib runs them in worker
    processes (``n_jobs`` None: every core of this machine; 1: in this process, one after another),
    and threadpoolctl keeps the BLAS and OpenMP pools of each worker at one thread, so that R runs
    on R cores do not fight over them (scikit-learn's advice for nested parallelism). Each result
    also holds ``evaluation_warnings``, the warnings its scoring raised (recorded, not printed).
    """
    from joblib import Parallel, delayed

    jobs = list(jobs)
    n_jobs = min(len(jobs), n_jobs or available_cpus())
    if n_jobs <= 1:
        return [_evaluate_recording_warnings(job) for job in jobs]
    return Parallel(n_jobs=n_jobs)(delayed(_evaluate_one_thread)(job) for job in jobs)


def _evaluate_one_thread(job: dict) -> dict:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _evaluate_recording_warnings(job)


def _evaluate_recording_warnings(job: dict) -> dict:
    """:func:`evaluate_latents`, with the warnings it raised (e.g. a classifier that did not converge)
    kept in the result as ``evaluation_warnings`` instead of printed by a worker process."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = evaluate_latents(**job)
    messages = sorted({str(w.message).splitlines()[0] for w in caught})
    return {**metrics, "evaluation_warnings": messages}


def evaluate_raw(dataset, n_init: int = 10, classifier_iterations: int = 500, seed: int = 0) -> dict:
    """The "raw data" row: the same tests on the flattened pixels."""
    flat = lambda t: t.reshape(len(t), -1).cpu().numpy()  # noqa: E731
    metrics = evaluate_latents(flat(dataset.x_train), dataset.y_train.cpu().numpy(), flat(dataset.x_test),
                               dataset.y_test.cpu().numpy(), n_init, classifier_iterations, seed)
    return {**metrics, "perplexity": None, "codes_used": None}


#: Coverage of the two intervals of :func:`paired_difference` at 95 % nominal, measured by
#: ``tests/test_evaluation_over_training.py::test_coverage_of_the_paired_intervals`` (4,000 simulated experiments of
#: n normal paired differences): the t interval holds the true mean difference in 95 % of them at n = 3, 5 and 10
#: (it is exact for normal differences); the percentile bootstrap in about 74 % at n = 3, 85 % at n = 5 and
#: 91 % at n = 10: it is too narrow with few pairs, so it is not what the pages decide by.
INTERVAL_METHODS = ("t", "bootstrap")


def paired_difference(a, b, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0,
                      method: str = "t") -> dict:
    """Mean of a - b over paired runs (same seed, and fold, in both arms) with a confidence interval.

    ``method="t"`` (default): the t interval of the paired differences, mean +- t_{n-1} sd / sqrt(n)
    (``scipy.stats.t``), which covers the true mean difference at its nominal level for normal differences
    however few the pairs; ``"bootstrap"``: scipy's seed-paired percentile bootstrap, which with 5 pairs
    covers about 85 % at a nominal 95 % (measured, see :data:`INTERVAL_METHODS`). The returned dict has
    ``difference``, ``low``, ``high`` (the chosen interval), ``shown`` (the interval excludes 0),
    ``pairs``, ``sd`` (of the differences) and ``method``. Pairs with a missing value (a diverged run) are
    left out.
    """
    from scipy import stats

    if method not in INTERVAL_METHODS:
        raise ValueError(f"method={method!r} is not allowed: choose one of {', '.join(map(repr, INTERVAL_METHODS))}")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be paired 1-d arrays of the same length, got shapes {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = a - b
    if len(d) < 2:
        return {"difference": float(np.mean(d)) if len(d) else float("nan"), "low": float("nan"),
                "high": float("nan"), "shown": False, "pairs": int(len(d)), "sd": float("nan"), "method": method}
    mean, sd = float(np.mean(d)), float(np.std(d, ddof=1))
    if method == "t":
        half = float(stats.t.ppf(0.5 + confidence / 2, df=len(d) - 1)) * sd / np.sqrt(len(d))
        low, high = mean - half, mean + half
    else:
        result = stats.bootstrap((d,), np.mean, vectorized=True, confidence_level=confidence, n_resamples=n_resamples,
                                 method="percentile", random_state=np.random.default_rng(seed))
        low, high = (float(v) for v in result.confidence_interval)
    return {"difference": mean, "low": float(low), "high": float(high), "shown": bool(low > 0 or high < 0),
            "pairs": int(len(d)), "sd": sd, "method": method}


def summarize(rows, by=("dataset", "bottleneck"), metrics=METRICS):
    """Mean and standard deviation over seeds: a pandas DataFrame with columns ``<metric>_mean``,
    ``<metric>_std`` and ``runs``, one row per group."""
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    by = [c for c in by if c in frame.columns]
    present = [m for m in metrics if m in frame.columns]
    grouped = frame.groupby(by, sort=False)[present].agg(["mean", "std"])
    grouped.columns = [f"{m}_{stat}" for m, stat in grouped.columns]
    grouped["runs"] = frame.groupby(by, sort=False).size()
    return grouped.reset_index()
