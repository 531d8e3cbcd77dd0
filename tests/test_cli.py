"""The command line: help, errors (one line, exit status 2, no traceback), train and evaluate."""

import json
import subprocess
import sys
from dataclasses import fields

import pytest

from vqlib.cli import build_parser, main
from vqlib.config import RunConfig


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vqlib", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_train_help_documents_every_option_with_its_default():
    subparsers = build_parser()._subparsers._group_actions[0].choices
    help_text = subparsers["train"].format_help()
    for f in fields(RunConfig):
        flag = f"--{f.name.replace('_', '-')}"
        assert flag in help_text, flag
    for action in subparsers["train"]._actions:
        if action.option_strings and action.dest != "help":
            assert "(default:" in action.help, action.dest
    helps = {a.dest: a.help for a in subparsers["train"]._actions}
    assert helps["lr"].endswith("(default: 0.0003)") and helps["bottleneck"].endswith("(default: soft_vq)")


@pytest.mark.parametrize("args, expected", [
    (["train", "--out", "x", "--bottleneck", "foo"], "--bottleneck: invalid choice: 'foo'"),
    (["train", "--out", "x", "--dataset", "imagenet"], "--dataset: invalid choice: 'imagenet'"),
    (["train", "--out", "x", "--num-codes", "0"], "num_codes=0 is not allowed: num_codes must be an integer >= 1"),
    (["train", "--out", "x", "--noise-std", "-1"], "noise_std=-1.0 is not allowed"),
    (["train", "--out", "x", "--num-iterations", "ten"], "--num-iterations: invalid int value: 'ten'"),
    (["train", "--out", "x", "--lr", "2"], "lr=2.0 is not allowed"),
    (["train", "--bottleneck", "vq"], "the following arguments are required: --out"),
    (["evaluate", "/nonexistent/run"], "/nonexistent/run does not exist: train first"),
    (["fly"], "invalid choice: 'fly'"),
])
def test_bad_arguments_give_one_line_and_status_2(capsys, args, expected):
    with pytest.raises(SystemExit) as exit_info:
        status = main(args)
        raise SystemExit(status)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_dataset_offline_is_one_line(tmp_path):
    result = run_cli("train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r"),
                     "--num-iterations", "1")
    assert result.returncode == 2, result.stderr
    assert "mnist" in result.stderr and "mnist5k" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_train_then_evaluate(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--dataset", "digits", "--bottleneck", "vq", "--mlp-hidden", "64-64-128",
                     "--code-dim", "8", "--num-codes", "16", "--num-iterations", "40", "--n-init", "2",
                     "--no-progress", "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["bottleneck"] == "vq" and 0 <= summary["clustering_acc"] <= 1
    config = json.loads((out / "config.json").read_text())
    assert config["num_codes"] == 16 and config["mlp_hidden"] == "64-64-128"
    result = run_cli("evaluate", str(out), "--n-init", "3")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["n_init"] == 3 and metrics["iterations"] == 40


def test_published_code_flag_sets_the_published_settings_and_keeps_explicit_options(tmp_path):
    out = tmp_path / "run"
    status = main(["train", "--published-code", "--batch-size", "16", "--dataset", "digits", "--mlp-hidden", "32-32",
                   "--code-dim", "4", "--num-codes", "8", "--num-iterations", "5", "--n-init", "1", "--no-progress",
                   "--out", str(out)])
    assert status == 0
    config = json.loads((out / "config.json").read_text())
    assert config["formula"] == "published" and config["sigma_source"] == "encoder" and config["latent_weight"] == 3.0
    assert config["batch_size"] == 16  # explicit beats the preset


def test_a_diverging_run_prints_one_line_and_exits_with_status_1(tmp_path, capsys, monkeypatch):
    import dataclasses

    import torch

    import vqlib.training

    digits = vqlib.load_dataset("digits")
    nan_digits = dataclasses.replace(digits, x_train=torch.full_like(digits.x_train, float("nan")))
    monkeypatch.setattr(vqlib.training, "load_dataset", lambda *args, **kwargs: nan_digits)
    status = main(["train", "--dataset", "digits", "--bottleneck", "ae", "--mlp-hidden", "32-32", "--num-iterations",
                   "20", "--log-every", "10", "--no-progress", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and "training stopped at step 10" in err
    assert (tmp_path / "run" / "history.json").exists()
    status = main(["evaluate", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "non-finite by step 10" in err


class _WritesAFile:
    """Unpickling this object calls ``open(path, "w")``, which creates the file: code that a pickle runs."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_run_folder_that_would_run_code_or_holds_other_entries_is_one_line_and_status_2(tmp_path):
    import shutil

    import torch

    trained = tmp_path / "trained"
    assert main(["train", "--dataset", "digits", "--bottleneck", "vq", "--mlp-hidden", "32-32", "--code-dim", "4",
                 "--num-codes", "8", "--num-iterations", "10", "--n-init", "1", "--classifier-iterations", "20",
                 "--no-progress", "--out", str(trained)]) == 0
    checkpoint = torch.load(trained / "checkpoint.pt", weights_only=True)
    target = tmp_path / "written-by-the-checkpoint"
    cases = {"code": ({"history": [*checkpoint["history"], _WritesAFile(target)]}, "holds objects vqlib does not load"),
             "model": ({"model": {name: value.tolist() for name, value in checkpoint["model"].items()}},
                       "does not hold what vqlib writes (checkpoint['model']")}
    for name, (entries, expected) in cases.items():
        run_dir = tmp_path / name
        shutil.copytree(trained, run_dir)
        torch.save({**checkpoint, **entries}, run_dir / "checkpoint.pt")
        result = run_cli("evaluate", str(run_dir))
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"{run_dir / 'checkpoint.pt'} " in result.stderr and expected in result.stderr, result.stderr
    assert not target.exists()
