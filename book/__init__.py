"""The book's machinery: execute the notebooks with papermill, then render them with jupyter-book.

    python -m book.execute --params smoke --out _build/smoke     # run every notebook
    python -m book.build_site --build _build/smoke               # render _build/smoke/html

Layout of a build folder BUILD (e.g. ``_build/smoke``)::

    BUILD/src/                  the book's source as jupyter-book sees it
        intro.md                copied from book/intro.md
        notebooks/<name>.ipynb  the papermill-executed notebooks
        status.json             what ran, with which parameters, how long, and how it ended
        status.md               the status page, written from status.json by build_site
    BUILD/results/<name>/       each notebook's result files (its ``results_dir``)
    BUILD/runs/                 the run cache the notebooks share (their ``runs_dir``)
    BUILD/html/                 the rendered site (``python -m http.server -d BUILD/html``)
    BUILD/jupyter-book/         jupyter-book's own work folder (doctrees)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
BOOK_DIR = Path(__file__).resolve().parent

CONFIG_FILE = REPO_ROOT / "_config.yml"
TOC_FILE = REPO_ROOT / "_toc.yml"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"

#: Parameters the executor always injects itself; a parameter file may not set them.
INJECTED = ("results_dir", "runs_dir", "param_set")
#: Parameters every notebook's parameters cell must define.
REQUIRED = ("results_dir", "runs_dir")

#: Static pages under book/ copied into BUILD/src (the toc names them without the suffix).
STATIC_PAGES = ("intro.md",)

SRC_DIRNAME = "src"  # BUILD/src: what jupyter-book renders
SITE_DIRNAME = "html"  # BUILD/html: the rendered site
STATUS_JSON = "status.json"
STATUS_PAGE = "status.md"
NOTEBOOK_PREFIX = "notebooks/"


def toc_entries(toc_path: Path = TOC_FILE) -> list[str]:
    """Every document the toc names (root first), in order, as paths without suffix."""
    toc = yaml.safe_load(Path(toc_path).read_text())
    docs = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                docs.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)

    walk(toc)
    return [str(Path(d).with_suffix("")) if Path(d).suffix in (".md", ".ipynb") else d for d in docs]


def toc_notebooks(toc_path: Path = TOC_FILE) -> list[str]:
    """The notebooks of the book (their stems), in the toc's order."""
    return [d[len(NOTEBOOK_PREFIX):] for d in toc_entries(toc_path) if d.startswith(NOTEBOOK_PREFIX)]


def display_path(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it, else absolute."""
    path = Path(path).resolve()
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def read_status(build: Path) -> dict:
    return json.loads((Path(build) / SRC_DIRNAME / STATUS_JSON).read_text())


def write_json_atomic(path: Path, data) -> None:
    """Write JSON so that a reader (or a crash) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
