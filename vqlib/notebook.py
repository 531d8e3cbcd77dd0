"""What every notebook of the book does around its own content: check parameters, record provenance.

    session = notebook.start(parameters, results_dir)   # after the papermill parameters cell
    ...
    notebook.save_table(frame, session, "downstream")   # results are data: CSV + JSON next to the page
    notebook.finish(session)                            # shows parameters, commit, versions, device, wall time
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .bottlenecks.base import check_choice, check_non_negative, check_positive_int
from .utils import atomic_write_bytes, atomic_write_json, provenance, resolve_device, set_seed

PARAM_SETS = ("default", "smoke", "paper")

__all__ = ["PARAM_SETS", "Session", "check_choice", "check_non_negative", "check_positive_int", "check_fraction",
           "finish", "number_list", "save_json", "save_table", "start"]


def check_fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{name}={value!r} is not allowed: {name} must be a number in (0, 1]")
    return float(value)


def number_list(name: str, text, kind=int, minimum=0, strict: bool = False) -> list:
    """Comma-separated numbers of a papermill parameter ("0,2,4,8") as a list of ``kind``, each >= ``minimum``
    (> ``minimum`` with ``strict``); else a ValueError naming the parameter, its value and what is allowed."""
    try:
        values = [kind(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any((v <= minimum) if strict else (v < minimum) for v in values):
        raise ValueError(f"{name}={text!r} is not allowed: give comma-separated {kind.__name__} values "
                         f"{'>' if strict else '>='} {minimum}")
    return values


@dataclass
class Session:
    parameters: dict
    results_dir: Path
    device: object
    started: float = field(default_factory=time.perf_counter)


def start(parameters: dict, results_dir="results", seed: int | None = None, device: str = "auto") -> Session:
    """Check the common parameters, create ``results_dir``, seed everything and print the device."""
    if "param_set" in parameters:
        check_choice("param_set", parameters["param_set"], PARAM_SETS)
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    if seed is not None:
        set_seed(check_positive_int("seed", seed, minimum=0))
    session = Session(dict(parameters), results_dir, resolve_device(device))
    print(f"device: {session.device}; results: {results_dir}")
    return session


def save_json(obj, session: Session, name: str) -> Path:
    path = session.results_dir / f"{name}.json"
    atomic_write_json(path, obj)
    return path


def save_table(frame, session: Session, name: str) -> Path:
    """Write a pandas DataFrame as CSV (and JSON records) into the results folder."""
    path = session.results_dir / f"{name}.csv"
    atomic_write_bytes(path, frame.to_csv(index=False).encode())
    atomic_write_json(session.results_dir / f"{name}.json", json.loads(frame.to_json(orient="records")))
    return path


def finish(session: Session, **extra):
    """Save ``provenance.json`` and show what produced this page: parameters, commit, versions, device, time."""
    import pandas as pd

    record = {"parameters": session.parameters, "wall_time_s": round(time.perf_counter() - session.started, 1),
              **provenance(session.device), **extra}
    atomic_write_json(session.results_dir / "provenance.json", record)
    rows = [("parameter: " + k, v) for k, v in session.parameters.items()]
    rows += [("git commit", record["git_commit"]), ("device", record.get("device_name", record["device"])),
             ("wall time (s)", record["wall_time_s"]), ("platform", record["platform"])]
    rows += [(f"version: {k}", v) for k, v in record["versions"].items()]
    return pd.DataFrame(rows, columns=["what produced this page", "value"]).set_index("what produced this page")
