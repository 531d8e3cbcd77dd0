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
* opening a run folder runs no code, and every file is checked: checkpoints are loaded with
  ``torch.load(..., weights_only=True)`` (tensors and plain values only; a checkpoint that holds
  anything else is refused, unloaded) and ``latents.npz`` without pickles, and every file is then
  checked against its schema (:data:`SCHEMAS`: the keys and the types of every entry); a mismatch
  is the one-line error naming the file and its first wrong entry;
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
import re
import socket
import zipfile
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

from .evaluation import METRICS

FORMAT_VERSION = 2
MARKER = "run.json"
LOCK = ".lock"
EVALUATIONS = "evaluations.json"  # a run's scores over training (RunConfig.eval_steps), one row per step
FILES = ("config.json", "checkpoint.pt", "history.json", "metrics.json", "latents.npz", EVALUATIONS)


class RunFolderError(RuntimeError):
    """A run folder or one of its files cannot be used; the message names the file and what to do."""

    def _render_traceback_(self):  # IPython and Jupyter show the message alone, not a traceback
        return [f"{type(self).__name__}: {self}"]


# Schemas: what each file of a run folder holds, as data; :func:`first_mismatch` checks a value against one.
class Kind(NamedTuple):
    """A leaf of a schema: ``test(value)`` says whether a value is one; ``words`` says what it is."""
    words: str
    test: Callable[[Any], bool]


class Either(NamedTuple):
    options: tuple


class ListOf(NamedTuple):  # a list (a tuple too, when ``tuples``) whose every item is ``item``
    item: Any
    tuples: bool = False


class DictOf(NamedTuple):  # a dict of any keys that are ``key`` to values that are ``value``
    key: Kind
    value: Any


class Record(NamedTuple):  # a dict with the keys of ``required``, any of ``optional``, others only when ``extra``
    required: dict
    optional: dict = {}
    extra: bool = False


class Array(NamedTuple):  # a NumPy array of ``ndim`` dimensions whose dtype kind is one of ``kinds``
    kinds: str
    ndim: int
    words: str


def _plain(*types):
    return lambda v: isinstance(v, types) and not isinstance(v, bool)


NONE = Kind("None", lambda v: v is None)
FLAG = Kind("a bool", lambda v: isinstance(v, bool))
INTEGER = Kind("an int", _plain(int))
NUMBER = Kind("a number", _plain(int, float))  # NaN and infinity included: a diverged run's losses
TEXT = Kind("a string", _plain(str))
TENSOR = Kind("a tensor", lambda v: isinstance(v, torch.Tensor))
BYTE_TENSOR = Kind("a 1-d uint8 tensor", lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.uint8
                   and v.dim() == 1)
SCALAR = Either((TEXT, NUMBER, FLAG, NONE))


def maybe(schema) -> Either:
    return Either((schema, NONE))


CONFIG = DictOf(TEXT, SCALAR)  # the field names and values are RunConfig's to check (RunConfig.from_dict)
#: one row per log interval, in ``history.json`` and in the checkpoint's ``history`` (NaN or infinite losses:
#: a diverged run's)
HISTORY_ROW = Record({"step": INTEGER, "loss": NUMBER, "reconstruction": NUMBER, "latent": NUMBER,
                      "perplexity": maybe(NUMBER), "codes_used": maybe(INTEGER)})
HISTORY_COLUMNS = tuple(HISTORY_ROW.required)
#: ``metrics.json`` (:mod:`vqlib.runs`): a finished run's scores, or a diverged run's None scores, with their
#: provenance; a diverged run has no timings, and keys that later versions add are kept (plain JSON values)
METRICS_JSON = Record(
    {**{m: maybe(NUMBER) for m in METRICS}, "dataset": TEXT, "bottleneck": TEXT, "seed": INTEGER,
     "iterations": INTEGER, "diverged_at": maybe(INTEGER), "config": CONFIG},
    optional={"diverged": TEXT, "evaluation_warnings": ListOf(TEXT), "reconstruction": NUMBER,
              "resumed_from": INTEGER, "train_wall_time_s": maybe(NUMBER), "train_steps_timed": maybe(INTEGER),
              "runs_trained_together": maybe(INTEGER), "eval_wall_time_s": NUMBER, "git_commit": maybe(TEXT),
              "versions": DictOf(TEXT, maybe(TEXT)), "platform": TEXT, "cpu_count": maybe(INTEGER),
              "torch_threads": INTEGER, "omp_wait_policy": TEXT, "device": TEXT, "device_name": TEXT,
              "precision": TEXT},
    extra=True)
#: one row of ``evaluations.json`` per evaluated step: k-means on the run's held-out digits (RunConfig.eval_steps)
EVALUATION_ROW = Record({"step": INTEGER, "clustering_acc": NUMBER, "nmi": NUMBER})
EVALUATION_COLUMNS = tuple(EVALUATION_ROW.required)
#: every file of a run folder, by name: what it holds (``checkpoint.pt``: what ``torch.load`` returns)
SCHEMAS = {
    MARKER: Record({"format_version": INTEGER, "vqlib_version": TEXT}),
    "config.json": CONFIG,
    "history.json": ListOf(HISTORY_ROW),
    "metrics.json": METRICS_JSON,
    EVALUATIONS: ListOf(EVALUATION_ROW),
    "checkpoint.pt": Record({
        "format": INTEGER, "model": DictOf(TEXT, TENSOR), "config": CONFIG,
        "optimizer": Record({"state": DictOf(INTEGER, DictOf(TEXT, TENSOR)),
                             "param_groups": ListOf(DictOf(TEXT, Either((SCALAR, ListOf(NUMBER, tuples=True)))))}),
        "input_shape": ListOf(INTEGER, tuples=True), "step": INTEGER, "rng": Record({"generator": BYTE_TENSOR}),
        "history": ListOf(HISTORY_ROW),
    }, optional={"precision": TEXT}),  # what the run trained in, "fp32" or "bf16" (absent before precision existed)
    "latents.npz": Record({"z_test": Array("f", 2, "a 2-d float array"), "y_test": Array("iu", 1, "a 1-d int array"),
                           "z_train": Array("f", 2, "a 2-d float array"),
                           "y_train": Array("iu", 1, "a 1-d int array")}),
}


def _words(schema) -> str:
    if isinstance(schema, (Kind, Array)):
        return schema.words
    if isinstance(schema, Either):
        return " or ".join(_words(option) for option in schema.options)
    if isinstance(schema, ListOf):
        return "a list"
    if isinstance(schema, DictOf):
        return f"a dict of {_words(schema.key)} to {_words(schema.value)}"
    return "a dict of " + ", ".join(schema.required)


def first_mismatch(value, schema, where: str) -> str | None:
    """The first entry of ``value`` that does not fit ``schema``, in words (``"history[3] is an int, not a dict
    of step, loss, ..."``), or None when it all fits; ``where`` names ``value`` itself."""
    def wrong():
        name = type(value).__name__
        shown = f" ({value!r:.40})" if isinstance(value, (str, int, float)) else ""
        what = "None" if value is None else f"{'an' if name[0] in 'aeiou' else 'a'} {name}{shown}"
        return f"{where} is {what}, not {_words(schema)}"

    if isinstance(schema, Kind):
        return None if schema.test(value) else wrong()
    if isinstance(schema, Array):
        fits = isinstance(value, np.ndarray) and value.dtype.kind in schema.kinds and value.ndim == schema.ndim
        return None if fits else wrong()
    if isinstance(schema, Either):
        fits = any(first_mismatch(value, option, where) is None for option in schema.options)
        return None if fits else wrong()
    if isinstance(schema, ListOf):
        if not (isinstance(value, list) or (schema.tuples and isinstance(value, tuple))):
            return wrong()
        items = enumerate(value)
        return next(filter(None, (first_mismatch(v, schema.item, f"{where}[{i}]") for i, v in items)), None)
    if not isinstance(value, dict):
        return wrong()
    if isinstance(schema, DictOf):
        for key, item in value.items():
            problem = first_mismatch(key, schema.key, f"a key of {where}") or \
                first_mismatch(item, schema.value, f"{where}[{key!r}]")
            if problem:
                return problem
        return None
    missing = [key for key in schema.required if key not in value]
    if missing:
        return f"{where} lacks {missing[0]!r}"
    known = {**schema.required, **schema.optional}
    for key, item in value.items():
        if key in known:
            problem = first_mismatch(item, known[key], f"{where}[{key!r}]")
            if problem:
                return problem
        elif not schema.extra:
            return f"{where} has {key!r}, which vqlib does not write"
    return None


def check_schema(path, value, name: str | None = None):
    """``value``, read from the run-folder file ``path``, if it fits the schema of that file (:data:`SCHEMAS`,
    by ``name``, default the file's name); else the one-line RunFolderError naming the file and its first
    wrong entry."""
    path = Path(path)
    name = name or path.name
    problem = first_mismatch(value, SCHEMAS[name], name.split(".")[0])
    if problem:
        raise RunFolderError(f"{path} does not hold what vqlib writes ({problem}): {_hint(path)}")
    return value


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
    marker = _read_json_unchecked(path)
    if isinstance(marker, dict) and marker.get("format_version") != FORMAT_VERSION:
        raise RunFolderError(f"{path} says format {marker.get('format_version')!r}, and this version of vqlib reads "
                             f"format {FORMAT_VERSION}: use the vqlib version that wrote it, or train into a new --out "
                             "folder")
    check_schema(path, marker)


def _hint(path: Path) -> str:
    return {
        "checkpoint.pt": "delete it to train the run again from the start, or train into a new --out folder",
        "metrics.json": f"run `python -m vqlib evaluate {path.parent}` to write it again from the checkpoint",
        "latents.npz": f"run `python -m vqlib evaluate {path.parent}` to write it again from the checkpoint",
        "history.json": "it is rewritten from the checkpoint at the next save; delete the run folder to start over",
        "config.json": "the checkpoint holds the config too; delete the run folder to start over",
    }.get(path.name, "delete the run folder to start over")


def read_json(path):
    """``json.loads`` of a run-folder file, checked against its schema (:data:`SCHEMAS`); a damaged file, or
    one that does not hold what vqlib writes there, is a RunFolderError naming it."""
    path = Path(path)
    value = _read_json_unchecked(path)
    return check_schema(path, value) if path.name in SCHEMAS else value


def _read_json_unchecked(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunFolderError(f"{path} is damaged (not valid JSON: {error}): {_hint(path)}") from None


def read_checkpoint(path, device="cpu") -> dict:
    """``torch.load`` of a checkpoint as weights only (tensors and plain values: unpickling it runs no code),
    checked against its schema; a truncated or corrupt one, one that holds other objects, or one whose entries
    are not what vqlib writes, is a RunFolderError naming it."""
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            AttributeError, ImportError, IndexError, KeyError, TypeError) as error:
        refused = _refused_object(error)
        if refused:
            raise RunFolderError(f"{path} holds objects vqlib does not load ({refused}): vqlib's checkpoints hold "
                                 "only tensors and plain values, and loading anything else could run code; it was "
                                 f"not loaded: {_hint(path)}") from None
        reason = _unpickler_reason(error) or (str(error).splitlines()[0] if str(error) else type(error).__name__)
        raise RunFolderError(f"{path} is damaged (torch cannot read it: {reason}): {_hint(path)}") from None
    needed = {"format", "model", "optimizer", "config", "input_shape", "step", "rng", "history"}
    if not isinstance(checkpoint, dict) or not needed <= set(checkpoint):
        raise RunFolderError(f"{path} is not a vqlib checkpoint of format {FORMAT_VERSION} (its keys are "
                             f"{sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__}): "
                             f"{_hint(path)}")
    return check_schema(path, checkpoint, "checkpoint.pt")


def _unpickler_reason(error) -> str | None:
    """What torch's weights-only unpickler refused (``Unsupported global: GLOBAL io.open was not an allowed
    global ...``), from its long message, or None for another error."""
    if not isinstance(error, pickle.UnpicklingError) or "Weights only load failed" not in str(error):
        return None
    found = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
    return found.group(1).strip() if found else None


def _refused_object(error) -> str | None:
    """The object a weights-only load refused (``io.open``), or None when the file is just not a pickle
    (``Unsupported operand``: bytes that are no opcode, i.e. a damaged file)."""
    reason = _unpickler_reason(error)
    if reason is None or reason.startswith("Unsupported operand"):
        return None
    found = re.search(r"GLOBAL (\S+) was not an allowed global", reason)
    return found.group(1) if found else reason.split(". ")[0]


def read_config(values: dict, path):
    """The RunConfig of a config dict read from ``path`` (``config.json``, or a checkpoint's ``config``); one
    that RunConfig refuses (an unknown field, a value it does not allow) is a RunFolderError naming the file."""
    from .config import RunConfig

    path = Path(path)
    try:
        return RunConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise RunFolderError(f"{path} is not a valid config ({str(error).splitlines()[0]}): {_hint(path)}") from None


def read_latents(path) -> dict:
    """The arrays of ``latents.npz``; a damaged file is a RunFolderError naming it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            latents = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise RunFolderError(f"{path} is damaged (numpy cannot read it: {error}): {_hint(path)}") from None
    missing = {"z_test", "y_test", "z_train", "y_train"} - set(latents)
    if missing:
        raise RunFolderError(f"{path} lacks {sorted(missing)}: {_hint(path)}")
    return check_schema(path, latents, "latents.npz")


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
        return read_config(read_json(self.path / "config.json"), self.path / "config.json")

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
