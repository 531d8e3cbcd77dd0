"""The notebooks as committed: a papermill parameters cell that papermill can read, no outputs,
no model code, and parameter sets that only name parameters the notebook has."""

import re
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

from vqlib.notebook import PARAM_SETS

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_the_book_has_its_ten_notebooks():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07", "08", "09", "10"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_is_plain_and_readable_by_papermill(path):
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    assigned = re.findall(r"^(\w+)\s*=", cells[0].source, re.M)
    seen = papermill.inspect_notebook(str(path))
    assert set(assigned) == set(seen), f"papermill cannot parse {set(assigned) - set(seen)}"
    assert {"param_set", "results_dir", "runs_dir"} <= set(seen)
    for name, info in seen.items():
        assert info["inferred_type_name"] in ("str", "int", "float", "bool", "None"), (name, info)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs_and_without_model_code(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    source = "\n".join(c.source for c in code)
    assert "import vqlib" in source or "from vqlib" in source
    assert not re.search(r"class \w+\((nn\.Module|torch\.nn\.Module)\)", source), "model code belongs in vqlib"
    assert "google.colab" in source, "a Colab-guarded install cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameter_sets_name_only_existing_parameters(path):
    sets = path.parent / "params" / f"{path.stem}.yml"
    assert sets.exists(), f"{sets} holds the smoke and paper parameter sets"
    overrides = yaml.safe_load(sets.read_text()) or {}
    assert set(overrides) <= set(PARAM_SETS) - {"default"} and "smoke" in overrides
    names = set(papermill.inspect_notebook(str(path)))
    for name, values in overrides.items():
        assert set(values or {}) <= names, f"{name}: unknown {set(values) - names}"
