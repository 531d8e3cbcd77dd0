"""Parameters checked once, by the library: every validator names the parameter, its value and what is
allowed; every parameter of every page has a rule; notebook.start finds a page's parameters by itself."""

import ast
import math
import re
import types
from pathlib import Path

import numpy as np
import papermill
import pytest
import yaml

from vqlib import notebook
from vqlib.notebook import RULES, check_parameters, page_parameters
from vqlib.validation import (check_choices, check_flag, check_number, check_positive_int, check_widths, integer,
                              number_list)

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))

# one bad value for each kind of rule: (name, value, what the message says is allowed)
BAD = [
    ("seed", -1, "integer >= 0"),
    ("num_seeds", 0, "integer >= 1"),
    ("num_seeds", 2.0, "integer >= 1"),
    ("num_seeds", True, "integer >= 1"),
    ("num_codes", 1, "integer >= 2"),
    ("lr", 0.0, "number > 0"),
    ("noise_std", -0.1, "number >= 0"),
    ("free_bits", math.nan, "number >= 0"),
    ("dataset", "imagenet", "'mnist5k'"),
    ("device", "tpu", "'cuda'"),
    ("param_set", "huge", "'smoke'"),
    ("include_raw", 1, "True or False"),
    ("models", "ae,ae", "distinct names"),
    ("models", "ae,vqvae", "'soft_vq'"),
    ("layers", "0,-2", "int values >= 0"),
    ("layers", "0,x", "int values >= 0"),
    ("betas", "0.1,0", "float values > 0"),
    ("num_codes_grid", "", "int values >= 2"),
    ("mlp_hidden", "500-0", "widths >= 1"),
    ("mlp_hidden", 500, "widths >= 1"),
    ("results_dir", "", "non-empty string"),
    ("beta", -2.0, "or -1"),
]


@pytest.mark.parametrize("name, value, allowed", BAD, ids=[f"{n}={v!r}" for n, v, _ in BAD])
def test_a_bad_value_is_named_with_what_is_allowed(name, value, allowed):
    with pytest.raises(ValueError) as error:
        check_parameters({name: value})
    message = str(error.value)
    assert message.startswith(f"{name}={value!r} is not allowed") and allowed in message, message


def test_every_bad_value_is_reported_at_once_and_min_comes_before_max():
    with pytest.raises(ValueError) as error:
        check_parameters({"seed": -1, "lr": 0, "sigma_min": 2.0, "sigma_max": 1.0, "num_seeds": 3})
    lines = str(error.value).splitlines()
    assert [line.split("=")[0] for line in lines] == ["seed", "lr", "sigma_min"], lines
    assert "smaller than sigma_max=1.0" in lines[2]


def test_a_parameter_without_a_rule_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"^new_knob=3 has no rule"):
        check_parameters({"new_knob": 3})
    assert check_parameters({"new_knob": 3}, rules={"new_knob": integer(maximum=5)}) == {"new_knob": 3}
    with pytest.raises(ValueError, match=r"num_codes=12 is not allowed: num_codes must be an integer in \[2, 10\]"):
        check_parameters({"num_codes": 12}, rules={"num_codes": integer(minimum=2, maximum=10)})


def test_list_and_flag_values_come_back_parsed():
    values = check_parameters({"layers": "0,2, 4,8", "betas": "0.1,0.2", "models": "ae, vq", "mlp_hidden": "32-64",
                               "include_raw": False, "beta": -1, "num_iterations": np.int64(5)})
    assert values == {"layers": [0, 2, 4, 8], "betas": [0.1, 0.2], "models": ["ae", "vq"], "mlp_hidden": (32, 64),
                      "include_raw": False, "beta": -1.0, "num_iterations": 5}
    assert type(values["num_iterations"]) is int


def test_the_validators_themselves():
    assert check_positive_int("k", np.int32(3)) == 3 and check_number("x", 0.5, strict=True) == 0.5
    assert number_list("t", "0.3,1,3", float, 0, strict=True) == [0.3, 1.0, 3.0]
    assert check_choices("m", "ae,vq", ("ae", "vq", "vae")) == ["ae", "vq"] and check_flag("f", True) is True
    assert check_widths("mlp_hidden", "500-500-2000") == (500, 500, 2000)
    with pytest.raises(ValueError, match=r"k=11 is not allowed: k must be an integer in \[1, 10\]"):
        check_positive_int("k", 11, maximum=10)


def test_start_picks_exactly_the_scalars_of_the_namespace(tmp_path):
    namespace = {"__name__": "__main__", "_": 3, "_i1": "import math", "In": ["", "x = 1"], "Out": {},
                 "math": math, "np": np, "Path": Path, "helper": lambda: None, "exit": types.SimpleNamespace(),
                 "ALLOWED": ("a", "b"),
                 "param_set": "smoke", "results_dir": str(tmp_path / "results"), "device": "cpu", "seed": 0,
                 "layers": "0,2", "include_raw": True, "beta": None}
    assert list(page_parameters(namespace)) == ["param_set", "results_dir", "device", "seed", "layers",
                                                "include_raw", "beta"]
    session = notebook.start({k: v for k, v in namespace.items() if k != "beta"})
    assert session.parameters["layers"] == "0,2" and session.values["layers"] == [0, 2]
    assert session.results_dir.is_dir() and session.device.type == "cpu"
    assert "parameter: layers" in notebook.finish(session).index


def page_rules(path: Path) -> set:
    """The names a page gives its own rule: notebook.start(globals(), rules={"name": ...})."""
    source = path.read_text()
    return {name for block in re.findall(r"notebook\.start\(globals\(\), rules=\{(.*?)\}\)", source)
            for name in re.findall(r'\\"(\w+)\\":', block)}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_parameter_of_every_page_has_a_rule_and_its_values_pass_it(path):
    parameters = papermill.inspect_notebook(str(path))
    own = page_rules(path)
    assert set(parameters) <= set(RULES) | own, f"no rule for {set(parameters) - set(RULES) - own}"
    assert own <= set(parameters), f"a page rule for a name that is no parameter: {own - set(parameters)}"
    defaults = {name: ast.literal_eval(info["default"]) for name, info in parameters.items()}
    sets = yaml.safe_load((path.parent / "params" / f"{path.stem}.yml").read_text())
    for values in [{}, *sets.values()]:
        given = {**defaults, **values}
        check_parameters({name: value for name, value in given.items() if name not in own})


def test_seed_summary_gives_mean_and_sample_std_per_group():
    import pandas as pd

    from vqlib.notebook import seed_summary

    frame = pd.DataFrame({"model": ["a", "a", "b"], "acc": [1.0, 2.0, 0.25]})
    table = seed_summary(frame, "model", ["acc"], digits=2)
    assert table.loc["a", "acc"] == "1.50 ± 0.71" and table.loc["b", "acc"] == "0.25"  # one run: the mean alone
    assert table["runs"].tolist() == [2, 1]
