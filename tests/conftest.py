"""Shared pytest configuration.

``--book-build=BUILD`` points the book tests (marked ``book``) at a build made by
``make book PARAMS=smoke``. Without the option, or without a build there, they are skipped and
say why. Write it with ``=`` when no test path is given: ``pytest --book-build _build/smoke``
makes pytest take ``_build/smoke`` for the test path (it reads the command line before this
file has registered the option), so tests/ is never collected and the option is "unrecognized".
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `import book` under a bare `pytest` too
    sys.path.insert(0, str(REPO_ROOT))

NO_OPTION = ("book test: needs a built book; pass --book-build=_build/smoke "
             "(make test builds it with `make book PARAMS=smoke` and passes it)")


def pytest_addoption(parser):
    parser.addoption(
        "--book-build", action="store", default=None, metavar="BUILD",
        help="a book build folder (e.g. _build/smoke, from `make book PARAMS=smoke`) for the tests marked book",
    )


def _book_build_problem(config) -> tuple[Path | None, str | None]:
    value = config.getoption("--book-build")
    if not value:
        return None, NO_OPTION
    path = Path(value)
    if not path.is_absolute():
        path = Path(config.invocation_params.dir) / path
    if not any((path / "src" / "notebooks").glob("*.ipynb")):
        return path, (f"book test: no book build at {value} (no executed notebook in {path / 'src' / 'notebooks'}); "
                      "run `make book PARAMS=smoke` first")
    return path, None


def pytest_collection_modifyitems(config, items):
    _, problem = _book_build_problem(config)
    if problem:
        skip = pytest.mark.skip(reason=problem)
        for item in items:
            if "book" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def book_build(request) -> Path:
    """The book build folder given with --book-build (skips the test when there is none)."""
    path, problem = _book_build_problem(request.config)
    if problem:
        pytest.skip(problem)
    return path
