"""A run folder as an object, and every file of it read with a clear error when it is damaged.

    run = vqlib.Run("runs/mnist5k-soft_vq-...")
    run.config, run.history, run.metrics, run.latents, run.model(), run.diverged

Layout (``FORMAT_VERSION`` 2): ``run.json`` (the format version and the vqlib version that wrote the
folder), ``config.json``, ``checkpoint.pt``, ``history.json``, ``metrics.json``, ``latents.npz`` and, for a run with
``eval_steps``, ``evaluations.json`` (its scores over training).
Guarantees, each tested in ``tests/test_run_folders.py``:

* every file is written atomically (a temporary file, then a rename), so a crash, a kill or a full
  disk leaves the previous version intact, and the error says which file could not be written;
* a damaged file (truncated, corrupt, not what it should hold) raises :class:`RunFolderError`, one
  line naming the file, what is wrong and what to do; the CLI prints it and exits with status 2;
* a folder written by another format version, or a folder that is not a run folder at all, is
  refused, and a folder that is not a run folder is never written into;
* one writer at a time: training takes an exclusive lock (``fcntl.flock`` on ``.lock``); a second
  process gets a clear error naming the holder, and a lock left by a killed process is released by
  the operating system, so it never goes stale.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import socket
import zipfile
from pathlib import Path

import numpy as np
import torch

FORMAT_VERSION = 2
MARKER = "run.json"
LOCK = ".lock"
EVALUATIONS = "evaluations.json"  # a run's scores over training (RunConfig.eval_steps), one row per step
#: the scores of a run over training: k-means on its held-out digits (the final evaluation adds the probe)
EVALUATION_COLUMNS = ("step", "clustering_acc", "nmi")
FILES = ("config.json", "checkpoint.pt", "history.json", "metrics.json", "latents.npz", "evaluations.json")


class RunFolderError(RuntimeError):
    """A run folder or one of its files cannot be used; the message names the file and what to do."""

    def _render_traceback_(self):  # IPython and Jupyter show the message alone, not a traceback
        return [f"{type(self).__name__}: {self}"]


def prepare(out_dir) -> Path:
    """Make ``out_dir`` ready to be written as a run folder: create it (with ``run.json``), or check
    that an existing one is a run folder of this format. Anything else is a RunFolderError."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunFolderError(f"{out_dir} is a file, not a run folder: choose another --out")
    if (out_dir / MARKER).exists():
        check_format(out_dir)
        return out_dir
    if out_dir.exists() and any(p.name != LOCK for p in out_dir.iterdir()):
        if any((out_dir / name).exists() for name in FILES):
            raise RunFolderError(f"{out_dir} was written by another version of vqlib (it has no {MARKER}, this "
                                 f"version writes format {FORMAT_VERSION}): train into a new --out folder")
        raise RunFolderError(f"{out_dir} is not a vqlib run folder (it holds other files and no {MARKER}): "
                             "nothing was written there; choose a new --out folder")
    from . import __version__
    from .utils import atomic_write_json

    atomic_write_json(out_dir / MARKER, {"format_version": FORMAT_VERSION, "vqlib_version": __version__})
    return out_dir


def check_format(out_dir) -> None:
    """A RunFolderError unless ``out_dir/run.json`` says this format version."""
    path = Path(out_dir) / MARKER
    if not path.exists():
        raise RunFolderError(f"{out_dir} is not a vqlib run folder of format {FORMAT_VERSION} (no {MARKER}): "
                             "train into a new --out folder")
    marker = read_json(path)
    if not isinstance(marker, dict) or marker.get("format_version") != FORMAT_VERSION:
        version = marker.get("format_version") if isinstance(marker, dict) else None
        raise RunFolderError(f"{path} says format {version!r}, and this version of vqlib reads format "
                             f"{FORMAT_VERSION}: use the vqlib version that wrote it, or train into a new --out folder")


def _hint(path: Path) -> str:
    return {
        "checkpoint.pt": "delete it to train the run again from the start, or train into a new --out folder",
        "metrics.json": f"run `python -m vqlib evaluate {path.parent}` to write it again from the checkpoint",
        "latents.npz": f"run `python -m vqlib evaluate {path.parent}` to write it again from the checkpoint",
        "history.json": "it is rewritten from the checkpoint at the next save; delete the run folder to start over",
        "config.json": "the checkpoint holds the config too; delete the run folder to start over",
    }.get(path.name, "delete the run folder to start over")


def read_json(path):
    """``json.loads`` of a run-folder file; a damaged file is a RunFolderError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunFolderError(f"{path} is damaged (not valid JSON: {error}): {_hint(path)}") from None


def read_checkpoint(path, device="cpu") -> dict:
    """``torch.load`` of a checkpoint; a truncated or corrupt one is a RunFolderError naming it."""
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=False)
    except FileNotFoundError:
        raise
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            AttributeError, ImportError, IndexError, KeyError, TypeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RunFolderError(f"{path} is damaged (torch cannot read it: {reason}): {_hint(path)}") from None
    needed = {"format", "model", "optimizer", "config", "input_shape", "step", "rng", "history"}
    if not isinstance(checkpoint, dict) or not needed <= set(checkpoint):
        raise RunFolderError(f"{path} is not a vqlib checkpoint of format {FORMAT_VERSION} (its keys are "
                             f"{sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__}): "
                             f"{_hint(path)}")
    return checkpoint


def read_latents(path) -> dict:
    """The arrays of ``latents.npz``; a damaged file is a RunFolderError naming it."""
    path = Path(path)
    try:
        with np.load(path) as data:
            latents = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise RunFolderError(f"{path} is damaged (numpy cannot read it: {error}): {_hint(path)}") from None
    missing = {"z_test", "y_test", "z_train", "y_train"} - set(latents)
    if missing:
        raise RunFolderError(f"{path} lacks {sorted(missing)}: {_hint(path)}")
    return latents


_held: dict = {}  # lock path -> how many times this process holds it (the lock is re-entrant)


@contextlib.contextmanager
def lock(out_dir):
    """Hold the run folder's writer lock; a second writer gets a RunFolderError naming the holder.

    ``fcntl.flock`` locks are released by the operating system when their process ends, however it
    ends, so a killed writer never leaves a stale lock (on systems without fcntl, nothing is locked).
    Re-entrant within a process (``run_many`` holds it around ``train_many``, which takes it too).
    """
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    path = Path(out_dir) / LOCK
    key = str(path.resolve())
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunFolderError(f"{out_dir} is being written by {holder}: wait for it to finish, or stop it; "
                                 "two writers would mix their checkpoints") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
    finally:
        handle.close()  # releases the lock


class Run:
    """A run folder: its config, loss history, metrics, latents and trained model, read on demand."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise RunFolderError(f"{self.path} does not exist: train it first (python -m vqlib train --out {path})")
        check_format(self.path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self):
        from .config import RunConfig

        values = read_json(self.path / "config.json")
        try:
            return RunConfig.from_dict(values)
        except (TypeError, ValueError) as error:
            raise RunFolderError(f"{self.path / 'config.json'} is not a valid config ({error}): "
                                 f"{_hint(self.path / 'config.json')}") from None

    @property
    def history(self) -> list:
        return read_json(self.path / "history.json")

    @property
    def evaluations(self):
        """The run's scores over training (``RunConfig.eval_steps``) as a pandas DataFrame, one row per
        step (columns ``step``, ``clustering_acc``, ``nmi``); empty when it was scored only at the end."""
        import pandas as pd

        path = self.path / EVALUATIONS
        rows = read_json(path) if path.exists() else []
        return pd.DataFrame(rows, columns=list(EVALUATION_COLUMNS))

    @property
    def metrics(self) -> dict:
        return read_json(self.path / "metrics.json")

    @property
    def finished(self) -> bool:
        return (self.path / "metrics.json").exists()

    @property
    def diverged(self) -> bool:
        return self.metrics.get("diverged_at") is not None

    @property
    def latents(self) -> dict:
        return read_latents(self.path / "latents.npz")

    def model(self, device="cpu"):
        """The trained model, rebuilt from the checkpoint, in evaluation mode."""
        from .training import load_checkpoint

        return load_checkpoint(self.path, device)[0]


@contextlib.contextmanager
def lock_all(out_dirs):
    """:func:`lock` every folder of ``out_dirs`` (None entries skipped) for the duration of the block."""
    with contextlib.ExitStack() as stack:
        for out_dir in out_dirs:
            if out_dir is not None:
                stack.enter_context(lock(out_dir))
        yield
