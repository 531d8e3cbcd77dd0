"""The text helpers of vqlib.notebook that pages use for their computed conclusions."""

import numpy as np

from vqlib import notebook
from vqlib.evaluation import paired_difference


def test_interval_shows_the_difference_and_its_bounds_with_signs():
    text = notebook.interval({"difference": 0.123, "low": -0.031, "high": 0.2, "shown": False, "pairs": 5})
    assert text == "+0.12 [-0.03, +0.20]"
    assert notebook.interval({"difference": -1.5, "low": -2.0, "high": -1.0}, digits=1) == "-1.5 [-2.0, -1.0]"


def test_interval_of_a_real_paired_difference_and_of_a_single_pair():
    base = np.arange(6, dtype=float)
    result = paired_difference(base + 1.0, base)  # every pair differs by exactly 1
    assert notebook.interval(result) == "+1.00 [+1.00, +1.00]"
    single = paired_difference([2.0], [1.0])  # one pair: no bootstrap interval
    assert notebook.interval(single) == "+1.00 (no interval: 1 pair(s))"


def test_claim_list_says_holds_does_not_hold_or_not_tested_one_bullet_each():
    text = notebook.claim_list([("A claim", np.bool_(True), "value 1."), ("Another", False, "value 2."),
                                ("A third", None, ""), ("A fourth", "shown at 2 of 5 K", "value 4.")])
    assert text.splitlines() == ["- **A claim**: holds; value 1.", "- **Another**: does not hold; value 2.",
                                 "- **A third**: not tested here.", "- **A fourth**: shown at 2 of 5 K; value 4."]


def test_page_02_ranges_have_rules_and_the_old_noise_name_has_none():
    values = notebook.check_parameters({"noise_std_min": 0.03, "noise_std_max": 3.0, "sigma_k_min": 0.1,
                                        "sigma_k_max": 0.5, "sigma_min": 0.01, "sigma_max": 20.0})
    assert values["noise_std_max"] == 3.0
    try:
        notebook.check_parameters({"noise_min": 0.03})
    except ValueError as error:
        assert "noise_min=0.03 has no rule" in str(error)
    else:
        raise AssertionError("noise_min should have no rule")


def test_seed_paired_matches_the_seeds_of_the_two_arms_and_says_when_one_arm_repeats_a_seed():
    import pandas as pd
    import pytest

    frame = pd.DataFrame({"model": ["a"] * 4 + ["b"] * 3, "seed": [0, 1, 2, 3, 2, 1, 0],
                          "x": [1.0, 2.0, 3.0, 99.0, 1.0, 1.0, 1.0], "y": [0.0] * 7})
    table = notebook.seed_paired(frame, "model", "a", "b", ["x", "y"])
    assert list(table["measure"]) == ["x", "y"]
    x = table.set_index("measure").loc["x"]
    assert x["pairs"] == 3 and x["difference"] == 1.0  # seed 3 has no partner in b: left out
    assert not table.set_index("measure").loc["y", "shown"]
    with pytest.raises(ValueError, match="same seed"):
        notebook.seed_paired(pd.concat([frame, frame]), "model", "a", "b", ["x"])
