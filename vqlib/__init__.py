"""vqlib: the soft VQ-VAE of Wu & Flierl (AAAI 2020) and the bottlenecks it is compared with.

    z_q, aux = bottleneck(z_e, extra)      # every bottleneck, see vqlib.bottlenecks
    model = Autoencoder.from_config(RunConfig(bottleneck="soft_vq"), input_shape=(784,))
    metrics = run_experiment(RunConfig(dataset="mnist5k"), "runs/example")
    table = sweep({"bottleneck": ["ae", "soft_vq"], "seed": [0, 1, 2]}, "runs")   # many runs at once
"""

import os as _os
import sys as _sys

# Threads: torch uses one OpenMP thread per core. On this project's 2-core machines, with another
# process keeping one core busy, spinning OpenMP threads made a batched training step 3x slower
# (26 -> 83 ms per run-step), sleeping ones ("PASSIVE") 1.7x (28 -> 47 ms), with about the same
# speed as spinning on an idle machine (`python benchmarks/threads.py`). OpenMP reads the policy
# once, when torch is loaded, so this applies when vqlib is imported first (the CLI, the book's
# kernels); an explicit OMP_WAIT_POLICY is kept. Every result's provenance records the policy.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .bottlenecks import (BOTTLENECKS, QUANTIZERS, CodebookUsage, EMVectorQuantizer, Identity, InformationDropout,
                          SoftVectorQuantizer, VAE, VectorQuantizer, make_bottleneck, posterior_mean)
from .config import DATASETS, RunConfig
from .datasets import Dataset, DatasetUnavailableError, load_dataset
from .evaluation import (clustering_accuracy, evaluate_latents, evaluate_model, evaluate_raw, kmeans_scores,
                         summarize)
from .model import Autoencoder
from .run_folder import Run, RunFolderError
from .runs import evaluate_run, run_experiment, run_many
from .sweep import expand_grid, group_configs, sweep
from .training import TrainResult, load_checkpoint, train, train_many
from .utils import provenance, resolve_device, set_seed

__version__ = "0.1.0"

__all__ = [
    "BOTTLENECKS", "DATASETS", "QUANTIZERS", "Autoencoder", "CodebookUsage", "Dataset", "DatasetUnavailableError",
    "EMVectorQuantizer", "Identity", "InformationDropout", "RunConfig", "SoftVectorQuantizer", "TrainResult", "VAE",
    "VectorQuantizer", "clustering_accuracy", "evaluate_latents", "evaluate_model", "evaluate_raw", "evaluate_run",
    "kmeans_scores", "load_checkpoint", "load_dataset", "make_bottleneck", "posterior_mean", "provenance",
    "resolve_device", "Run", "RunFolderError", "run_experiment", "run_many", "set_seed", "summarize", "sweep", "expand_grid", "group_configs",
    "train", "train_many",
]
