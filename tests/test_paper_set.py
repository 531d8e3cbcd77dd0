"""The ``paper`` parameter sets, end to end on tiny data: every notebook that has one runs with
papermill, with its paper overrides and only its iteration (and seed) counts lowered, on a
folder of tiny MNIST IDX files that ``vqlib.load_dataset`` finds through ``VQLIB_DATA_DIR``.

The paper sets are meant for a GPU and full MNIST, so nothing else runs them: a parameter
combination that crashes, a plot that breaks at other sizes or a t-SNE perplexity too large for
few points would otherwise only show on the user's GPU after the download. The network sizes,
K values, datasets and every other paper setting stay as they are, so the paper's own code
paths run. Marked ``paper_set``: ``make test`` runs it; ``pytest -m "not paper_set"`` leaves it out.
"""

from __future__ import annotations

import shutil
import struct
import time

import numpy as np
import pytest
import yaml

papermill = pytest.importorskip("papermill")

from book import NOTEBOOKS_DIR, REPO_ROOT, toc_notebooks  # noqa: E402
from book.execute import KERNEL, KERNEL_ARGS, KERNEL_ENV, plan  # noqa: E402
from vqlib.datasets import DATA_DIR_VARIABLE  # noqa: E402

pytestmark = pytest.mark.paper_set

PARAMS_DIR = NOTEBOOKS_DIR / "params"
NOTEBOOKS = [n for n in toc_notebooks()
             if (yaml.safe_load((PARAMS_DIR / f"{n}.yml").read_text()) or {}).get("paper")]

# Tiny MNIST: every class in both splits, enough test points for the classifiers' splits.
N_TRAIN, N_TEST = 200, 100

#: What is lowered on top of each paper set, and only that: iteration counts (with their logging
#: intervals), and seeds where the paper's networks times its seeds are too slow even at 3 steps.
#: One seed takes the paper set's own code paths (its sizes, K values and data); the branches for
#: several seeds (spreads, paired intervals) run in the smoke and default sets. A parameter the
#: paper set does not set itself is lowered only where it is the slow part, and says why.
FAST = {
    # synthetic data, not MNIST: its tiny size is set here (the pairwise scores over 2000 test points
    # are the slow part); max_points stays at the paper's 2000, more than the 100 test points
    "01_similarity_preservation": {"num_iterations": 3, "decoder_iterations": 3, "num_seeds": 1, "n_train": 200,
                                   "n_test": 100},
    # 02 and 03 train nothing, but their paper sample counts are not quick on a CPU, so they are
    # lowered; dimensions, K, noise levels, grids and bins stay. 02: the Monte Carlo draws of parts
    # (b) and (c) (the paper's 50000 at 20 noise levels in d = 64 with K = 128).
    "02_bayesian_estimator": {"mc_samples": 2000},
    # 03: 3 instances, because the free-covariance BFGS fits of step (iii), one per instance up to 5,
    # in the paper's d = 16 (152 unknowns, numerical gradients) are its slow part (~20 s for 3 here);
    # 20000 of the paper's 1e6 Monte Carlo samples of step (iv)
    "03_theorem1_proof": {"num_instances": 3, "mc_samples": 20000},
    "04_training": {"num_iterations": 3, "log_every": 1},
    "05_downstream_tasks": {"num_iterations": 3, "num_seeds": 1},
    "06_tsne": {"num_iterations": 3},
    "07_reproducibility": {"num_iterations": 3, "log_every": 1, "num_seeds": 1},
    "08_information_bottleneck": {"num_iterations": 3, "num_seeds": 1},
    # one seed: still 19 runs with the paper's PixelCNN decoder (5 L x 2 free-bits arms, 3 quantizers
    # x 3 L); two of the seven linear-VAE KL weights (not a paper setting); one sample per image
    # (not a paper setting either: drawing a 28x28 image takes 784 passes of the decoder)
    "09_posterior_collapse": {"num_iterations": 3, "num_seeds": 1, "betas": "0.05,0.4", "samples_per_image": 1},
    # one seed of each of the full factorial's 44 arms (36 soft VQ-VAEs and their controls)
    "10_soft_vq_investigation": {"num_iterations": 3, "num_seeds": 1, "log_every": 1},
}


def _write_idx(path, array: np.ndarray) -> None:
    """Big-endian IDX file of uint8 (type code 0x08), the format torchvision's MNIST reads."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*")) if folder.is_dir() else []


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """A data folder holding MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte of tiny size."""
    data_dir = tmp_path_factory.mktemp("data")
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in [("train", N_TRAIN), ("t10k", N_TEST)]:
        labels = rng.permutation(np.arange(n) % 10)
        # A bright square whose place depends on the class over dim noise: separable, pixels 0..255.
        images = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(labels):
            row, col = divmod(int(label), 5)
            images[i, 4 + 10 * row: 12 + 10 * row, 2 + 5 * col: 6 + 5 * col] = 255
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return data_dir


def test_every_notebook_with_a_paper_set_is_lowered():
    assert set(NOTEBOOKS) == set(FAST), "say here what makes each paper set fast"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_paper_set_runs_on_tiny_data(name, tiny_mnist, tmp_path, monkeypatch):
    jobs, problems = plan([name], "paper", tmp_path / "build")
    assert not problems, problems
    src = NOTEBOOKS_DIR / f"{name}.ipynb"
    declared = papermill.inspect_notebook(str(src))
    assert set(FAST[name]) <= set(declared), f"{name} has no parameter {set(FAST[name]) - set(declared)}"
    parameters = {**jobs[name], **FAST[name]}
    for key, value in KERNEL_ENV.items():  # the kernel inherits the environment, as in book.execute
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(DATA_DIR_VARIABLE, str(tiny_mnist))
    (tmp_path / "build" / "results" / name).mkdir(parents=True)
    before = _files(REPO_ROOT / "data")
    t0 = time.perf_counter()
    try:  # a failing cell raises PapermillExecutionError, whose message is the cell's traceback
        papermill.execute_notebook(
            str(src), str(tmp_path / f"{name}.ipynb"), parameters=parameters, kernel_name=KERNEL,
            cwd=str(NOTEBOOKS_DIR.parent), progress_bar=False, extra_arguments=KERNEL_ARGS,
        )
    finally:  # the paper's networks make big checkpoints (09: ~180 MB a run); keep the executed notebook only
        shutil.rmtree(tmp_path / "build" / "runs", ignore_errors=True)
    print(f"{name}: {time.perf_counter() - t0:.1f} s")
    assert _files(REPO_ROOT / "data") == before, "the kernel downloaded into data/ instead of reading VQLIB_DATA_DIR"
