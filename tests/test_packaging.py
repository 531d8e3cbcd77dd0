"""The pins of pyproject.toml and environment.yml agree, the version is single-sourced, and the
command line starts."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import vqlib

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]


def _normalise(name: str) -> str:
    """PEP 503 project-name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(requirements) -> dict:
    pins = {}
    for requirement in requirements:
        match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;,]+)\s*", requirement)
        assert match, f"{requirement!r} is not an exact 'name==version' pin"
        name = _normalise(match.group(1))
        assert name not in pins, f"{name} is pinned twice"
        pins[name] = match.group(2)
    return pins


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_normalise():
    assert _normalise("Jupyter_Book") == _normalise("jupyter.book") == _normalise("jupyter--book") == "jupyter-book"


def test_pyproject_and_environment_pins_agree(pyproject):
    project = pyproject["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1
    from_pyproject, from_environment = _pins(requirements), _pins(pip_sections[0])
    assert "torch" in from_pyproject
    assert from_pyproject == from_environment


def test_environment_python_satisfies_requires_python(pyproject):
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert len(python) == 1
    minimum = re.fullmatch(r">=\s*(\d+)\.(\d+)", pyproject["project"]["requires-python"])
    pinned = re.fullmatch(r"python\s*=+\s*(\d+)\.(\d+)", python[0])
    assert minimum and pinned
    assert tuple(map(int, pinned.groups())) >= tuple(map(int, minimum.groups()))


def test_version_matches_pyproject(pyproject):
    assert vqlib.__version__ == pyproject["project"]["version"]


def test_command_line_help():
    result = subprocess.run([sys.executable, "-m", "vqlib", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "evaluate" in result.stdout
