"""The paper's published downstream-task numbers (Wu & Flierl, AAAI 2020, Tables 1 and 2) as data.

The values are copied exactly from ``../shared/papers/README.md`` (beside the repository) (which quotes the paper) and
``tests/test_paper_tables.py`` checks them against that text. They are *reference* numbers for the
book's tables, always shown in a column labelled "paper", never mixed with measured results.

Each entry names its model by the vqlib bottleneck name (``"raw"`` for the raw-data row) and carries
the hyperparameters the paper used for it (d, K, beta), so a notebook can build the matching
``RunConfig`` and put the paper's value next to its own::

    from vqlib import paper_tables
    paper_tables.results("mnist")             # rows of Table 1, metric values as fractions
    paper_tables.hyperparameters("svhn")      # {"vq": {"code_dim": 256, "num_codes": 512, ...}, ...}
    paper_tables.reference_dataset("mnist5k") # "mnist": the paper's dataset a run is compared with

Units: the paper prints accuracies in percent and NMI as a fraction; ``PaperResult`` keeps the
printed values (``printed``), and :func:`results` converts accuracies to fractions, the unit of
:func:`vqlib.evaluate_model`. Table 2 reports no NMI (``None``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .evaluation import DOWNSTREAM_METRICS

__all__ = ["METRICS", "PAPER_DATASETS", "PaperResult", "TABLE1", "TABLE2", "hyperparameters", "reference_dataset",
           "results"]

#: Metric names as vqlib uses them (keys of evaluate_model's metrics): the downstream tasks.
METRICS = DOWNSTREAM_METRICS
#: Metrics the paper prints in percent (NMI is printed as a fraction).
PERCENT_METRICS = ("clustering_acc", "classification_acc")
PAPER_DATASETS = ("mnist", "svhn", "cifar10")
#: The paper's dataset each vqlib dataset is compared with (the embedded subsets stand in for MNIST).
_REFERENCE = {"mnist": "mnist", "mnist5k": "mnist", "digits": "mnist", "svhn": "svhn", "cifar10": "cifar10"}


@dataclass(frozen=True)
class PaperResult:
    """One model's row of Table 1 or 2 for one dataset, exactly as printed in the paper."""

    table: int  # 1 or 2
    dataset: str  # "mnist", "svhn" or "cifar10"
    bottleneck: str  # vqlib bottleneck name, or "raw" for the raw-data row
    label: str  # the paper's row label
    code_dim: int | None  # d (None for raw data)
    num_codes: int | None = None  # K for vq / soft_vq
    beta: float | None = None  # KL weight of the beta-VAE
    printed: dict = field(default_factory=dict)  # metric -> value as printed (percent for accuracies)

    def value(self, metric: str) -> float | None:
        """The metric in vqlib's units (accuracies as fractions), or None if the paper reports none."""
        v = self.printed.get(metric)
        if v is None:
            return None
        return v / 100.0 if metric in PERCENT_METRICS else v


def _t1(bottleneck, label, acc, nmi, cls, code_dim=64, **hp):
    return PaperResult(1, "mnist", bottleneck, label, code_dim, printed={
        "clustering_acc": acc, "nmi": nmi, "classification_acc": cls}, **hp)


def _t2(dataset, bottleneck, label, acc, cls, **hp):
    return PaperResult(2, dataset, bottleneck, label, 256, printed={
        "clustering_acc": acc, "nmi": None, "classification_acc": cls}, **hp)


#: Table 1: MNIST, MLP, d = 64 (k-means accuracy %, NMI, linear classifier %).
TABLE1 = (
    _t1("raw", "Raw Data", 55.17, 0.5008, 92.44, code_dim=None),
    _t1("ae", "Baseline Autoencoder", 52.61, 0.5301, 91.91),
    _t1("vae", "VAE", 56.44, 0.5600, 89.10),
    _t1("beta_vae", "beta-VAE (beta = 20)", 73.81, 0.5760, 91.10, beta=20.0),
    _t1("info_dropout", "Information dropout", 58.52, 0.4979, 91.11),
    _t1("vq", "VQ-VAE (K = 128)", 51.48, 0.3541, 81.62, num_codes=128),
    _t1("soft_vq", "Soft VQ-VAE (K = 128)", 77.64, 0.7188, 93.54, num_codes=128),
)

#: Table 2: SVHN and CIFAR-10, CNN, d = 256 (k-means accuracy %, linear classifier %; no NMI).
TABLE2 = tuple(
    _t2(dataset, bottleneck, label, *values, **hp)
    for bottleneck, label, hp, svhn, cifar in (
        ("ae", "Baseline Autoencoder", {}, (11.96, 25.95), (21.73, 40.92)),
        ("vae", "VAE", {}, (13.58, 26.42), (24.12, 38.83)),
        ("beta_vae", "beta-VAE (beta = 100)", {"beta": 100.0}, (14.54, 49.62), (22.80, 36.91)),
        ("info_dropout", "Information dropout", {}, (12.75, 24.46), (21.96, 39.89)),
        ("vq", "VQ-VAE (K = 512)", {"num_codes": 512}, (12.96, 31.57), (20.30, 33.51)),
        ("soft_vq", "Soft VQ-VAE (K = 32)", {"num_codes": 32}, (17.68, 50.48), (23.83, 44.54)),
    )
    for dataset, values in (("svhn", svhn), ("cifar10", cifar))
)


def reference_dataset(dataset: str) -> str:
    """The paper's dataset that results on ``dataset`` are compared with (mnist5k and digits -> mnist)."""
    if dataset not in _REFERENCE:
        raise ValueError(f"dataset={dataset!r} is not allowed: choose one of {', '.join(map(repr, _REFERENCE))}")
    return _REFERENCE[dataset]


def _rows(dataset: str) -> list[PaperResult]:
    paper = reference_dataset(dataset)
    return [r for r in TABLE1 + TABLE2 if r.dataset == paper]


def results(dataset: str) -> list[dict]:
    """The paper's rows for ``dataset`` (or the paper dataset it stands in for): one dict per model with
    ``bottleneck``, ``label``, ``table``, ``paper_dataset``, ``code_dim``, ``num_codes``, ``beta`` and the
    metrics in vqlib's units (accuracies as fractions; ``None`` where the paper reports nothing)."""
    return [{"bottleneck": r.bottleneck, "label": r.label, "table": r.table, "paper_dataset": r.dataset,
             "code_dim": r.code_dim, "num_codes": r.num_codes, "beta": r.beta,
             **{m: r.value(m) for m in METRICS}} for r in _rows(dataset)]


def hyperparameters(dataset: str) -> dict:
    """bottleneck -> {"code_dim", "num_codes", "beta"}: the paper's settings for the models of the table
    that ``dataset`` is compared with (raw data excluded; None where a setting does not apply)."""
    return {r.bottleneck: {"code_dim": r.code_dim, "num_codes": r.num_codes, "beta": r.beta}
            for r in _rows(dataset) if r.bottleneck != "raw"}
