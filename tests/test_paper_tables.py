"""vqlib.paper_tables holds exactly the numbers of the paper's Tables 1-2 as quoted in the papers README.

The README (``../shared/papers/README.md`` beside the repository, or ``$VQLIB_PAPERS_DIR/README.md``) is parsed here,
independently of the module: Table 1 from its markdown table, Table 2 from its prose line. The
hyperparameters in the row labels (beta = 20, K = 128, ...) are checked against the module too.
Where the README is not available (a user's clone), the text tests skip and say why; under CI=true
they fail instead, so CI cannot pass without checking the numbers.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from vqlib import BOTTLENECKS, paper_tables

REPO_ROOT = Path(__file__).resolve().parents[1]
README = Path(os.environ.get("VQLIB_PAPERS_DIR", REPO_ROOT.parent / "shared" / "papers")) / "README.md"

# README row label (without its hyperparameter) -> vqlib bottleneck name
LABELS = {"raw data": "raw", "autoencoder": "ae", "ae": "ae", "vae": "vae", "beta-vae": "beta_vae",
          "information dropout": "info_dropout", "vq-vae": "vq", "soft vq-vae": "soft_vq"}
NUMBER = r"(\d+(?:\.\d+)?)"


def _readme() -> str:
    if not README.is_file():
        message = f"the papers README is not at {README} (set VQLIB_PAPERS_DIR to its folder)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return README.read_text()


def _split_label(label: str):
    """'beta-VAE (beta = 20)' -> ('beta_vae', {'beta': 20.0}); 'VQ-VAE (K = 512)' -> ('vq', {'num_codes': 512})."""
    label = label.replace("*", "").strip()
    hp = {}
    match = re.fullmatch(r"(.+?)\s*\((beta|K)\s*=\s*(\d+)\)", label)
    if match:
        label = match.group(1)
        hp = {"beta": float(match.group(3))} if match.group(2) == "beta" else {"num_codes": int(match.group(3))}
    return LABELS[label.strip().lower()], hp


def parse_table1(text: str) -> dict:
    """bottleneck -> (hyperparameters, {metric: printed value}) from the README's Table 1."""
    section = text.split("## Headline numbers (Table 1", 1)[1].split("Table 2", 1)[0]
    assert "d = 64" in section.splitlines()[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip().replace("*", "") for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(NUMBER, cells[1]):
            bottleneck, hp = _split_label(cells[0])
            rows[bottleneck] = (hp, dict(zip(paper_tables.METRICS, map(float, cells[1:]))))
    return rows


def parse_table2(text: str) -> dict:
    """(dataset, bottleneck) -> (hyperparameters, {metric: printed value}) from the README's Table 2 line."""
    paragraph = text.split("Table 2 (", 1)[1].split("\n\n", 1)[0]
    assert paragraph.startswith("d = 256, CNN)")
    header = "SVHN clustering / classification, CIFAR-10 clustering / classification:"
    assert header in paragraph
    body = " ".join(paragraph.split(header, 1)[1].split())
    rows = {}
    for entry in body.rstrip(".").split(";"):
        match = re.fullmatch(rf"\s*(.+?)\s+{NUMBER} / {NUMBER}, {NUMBER} / {NUMBER}\s*", entry)
        assert match, f"cannot parse {entry!r}"
        bottleneck, hp = _split_label(match.group(1))
        values = list(map(float, match.group(2, 3, 4, 5)))
        rows["svhn", bottleneck] = (hp, {"clustering_acc": values[0], "nmi": None, "classification_acc": values[1]})
        rows["cifar10", bottleneck] = (hp, {"clustering_acc": values[2], "nmi": None,
                                            "classification_acc": values[3]})
    return rows


def _expected_hp(result) -> dict:
    return {k: v for k, v in (("beta", result.beta), ("num_codes", result.num_codes)) if v is not None}


def test_table1_matches_readme():
    parsed = parse_table1(_readme())
    assert set(parsed) == {r.bottleneck for r in paper_tables.TABLE1}
    for result in paper_tables.TABLE1:
        hp, printed = parsed[result.bottleneck]
        assert result.printed == printed, result.bottleneck
        assert _expected_hp(result) == hp, result.bottleneck
        assert result.code_dim == (None if result.bottleneck == "raw" else 64)


def test_table2_matches_readme():
    parsed = parse_table2(_readme())
    assert set(parsed) == {(r.dataset, r.bottleneck) for r in paper_tables.TABLE2}
    for result in paper_tables.TABLE2:
        hp, printed = parsed[result.dataset, result.bottleneck]
        assert result.printed == printed, (result.dataset, result.bottleneck)
        assert _expected_hp(result) == hp, (result.dataset, result.bottleneck)
        assert result.code_dim == 256


def test_names_are_vqlib_bottlenecks():
    for result in paper_tables.TABLE1 + paper_tables.TABLE2:
        assert result.bottleneck == "raw" or result.bottleneck in BOTTLENECKS


def test_results_convert_percent_to_fractions():
    rows = {r["bottleneck"]: r for r in paper_tables.results("mnist5k")}
    assert rows["soft_vq"]["clustering_acc"] == pytest.approx(0.7764)
    assert rows["soft_vq"]["nmi"] == pytest.approx(0.7188)  # printed as a fraction already
    assert rows["raw"]["classification_acc"] == pytest.approx(0.9244)
    assert rows["soft_vq"]["paper_dataset"] == "mnist" and rows["soft_vq"]["table"] == 1
    svhn = {r["bottleneck"]: r for r in paper_tables.results("svhn")}
    assert "raw" not in svhn and svhn["vq"]["nmi"] is None
    assert svhn["soft_vq"]["classification_acc"] == pytest.approx(0.5048)


def test_hyperparameters_per_dataset():
    assert paper_tables.hyperparameters("mnist")["beta_vae"] == {"code_dim": 64, "num_codes": None, "beta": 20.0}
    assert paper_tables.hyperparameters("mnist")["soft_vq"]["num_codes"] == 128
    cifar = paper_tables.hyperparameters("cifar10")
    assert cifar["beta_vae"]["beta"] == 100.0
    assert cifar["vq"]["num_codes"] == 512 and cifar["soft_vq"]["num_codes"] == 32
    assert {v["code_dim"] for v in cifar.values()} == {256}
    assert "raw" not in cifar


def test_reference_dataset():
    assert paper_tables.reference_dataset("mnist5k") == "mnist"
    assert paper_tables.reference_dataset("digits") == "mnist"
    assert paper_tables.reference_dataset("cifar10") == "cifar10"
    with pytest.raises(ValueError, match="dataset='imagenet' is not allowed"):
        paper_tables.reference_dataset("imagenet")
