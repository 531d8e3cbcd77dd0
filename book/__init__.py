"""The book's machinery: ``python -m book.execute`` runs the notebooks with papermill, then
``python -m book.build_site`` renders them with jupyter-book. A build folder BUILD (``_build/smoke``)::

    BUILD/src/                  the book's source as jupyter-book sees it
        intro.md, _static/      copied from book/ (_static: the CSS jupyter-book adds to every page)
        notebooks/<name>.ipynb  the papermill-executed notebooks; their ``metadata.papermill``
                                (parameters, start, duration, exception) is the build's record
        status.md               the status page, written from that metadata by build_site
    BUILD/results/<name>/       each notebook's result files (its ``results_dir``, with provenance.json)
    BUILD/runs/                 the run cache the notebooks share (their ``runs_dir``)
    BUILD/html/                 the rendered site (``python -m http.server -d BUILD/html``)
    BUILD/jupyter-book/, BUILD/jupyter_execute/   jupyter-book's work folders (doctrees, output files)
"""

from __future__ import annotations

from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
BOOK_DIR = Path(__file__).resolve().parent
CONFIG_FILE = REPO_ROOT / "_config.yml"
TOC_FILE = REPO_ROOT / "_toc.yml"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
SITE_DIRNAME = "html"  # BUILD/html: the rendered site


def toc_entries(toc_path: Path = TOC_FILE) -> list[str]:
    """Every document the toc names (root first), in order, as paths without suffix."""
    toc = yaml.safe_load(Path(toc_path).read_text())
    docs = [toc["root"]] + [chapter["file"] for part in toc["parts"] for chapter in part["chapters"]]
    return [d.removesuffix(".md").removesuffix(".ipynb") for d in docs]


def toc_notebooks(toc_path: Path = TOC_FILE) -> list[str]:
    """The notebooks of the book (their stems), in the toc's order."""
    return [d.removeprefix("notebooks/") for d in toc_entries(toc_path) if d.startswith("notebooks/")]


def relative(path) -> str:
    """``path`` relative to the repository root when it lies inside it, else absolute."""
    path = Path(path).resolve()
    return path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else path.as_posix()
