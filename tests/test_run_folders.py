"""Run folders under faults: damaged files, foreign folders, two writers, a full disk (fault injection)."""

import errno
import json
import multiprocessing
import os
import shutil
import signal
import zipfile

import pytest
import torch

from vqlib import RunConfig
from vqlib.cli import main
from vqlib.run_folder import Run, RunFolderError, lock
from vqlib.runs import evaluate_run, run_experiment, run_name
from vqlib.training import load_checkpoint, train

TINY = dict(dataset="digits", mlp_hidden="32-32-64", code_dim=4, num_codes=8, batch_size=32, log_every=10,
            n_init=2, classifier_iterations=50, device="cpu", bottleneck="vq", num_iterations=20)
CONFIG = RunConfig(**TINY)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run folder, copied by each test that damages it."""
    path = tmp_path_factory.mktemp("finished") / "run"
    run_experiment(CONFIG, path, progress=False)
    return path


@pytest.fixture
def run_dir(finished, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(finished, path)
    return path


def _truncate(path, size):
    path.write_bytes(path.read_bytes()[:size])


def _one_line_error(capsys, argv, *expected):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err


def test_the_run_object_reads_a_finished_folder(run_dir):
    run = Run(run_dir)
    assert run.config == CONFIG and run.finished and not run.diverged
    assert [row["step"] for row in run.history] == [10, 20]
    assert run.metrics["clustering_acc"] is not None and set(run.latents) == {"z_test", "y_test", "z_train", "y_train"}
    assert run.model().bottleneck.num_codes == 8


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_checkpoint_is_named_by_the_library_and_the_cli(run_dir, capsys, damage):
    checkpoint = run_dir / "checkpoint.pt"
    if damage == "truncate":
        _truncate(checkpoint, 5000)
    else:
        checkpoint.write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(RunFolderError, match=r"checkpoint.pt is damaged \(torch cannot read it.*delete it to train"):
        evaluate_run(run_dir)
    with pytest.raises(RunFolderError, match="checkpoint.pt is damaged"):
        train(CONFIG.replace(num_iterations=30), run_dir, progress=False)
    _one_line_error(capsys, ["evaluate", str(run_dir)], "checkpoint.pt is damaged")
    _one_line_error(capsys, ["train", "--out", str(run_dir), *_cli_options(CONFIG.replace(num_iterations=30))],
                    "checkpoint.pt is damaged")


def _cli_options(config):
    return [item for k, v in config.to_dict().items() if v is not None for item in (f"--{k.replace('_', '-')}", str(v))]


@pytest.mark.parametrize("name, reader, hint", [
    ("metrics.json", lambda run: run.metrics, "python -m vqlib evaluate"),
    ("history.json", lambda run: run.history, "rewritten from the checkpoint"),
    ("config.json", lambda run: run.config, "the checkpoint holds the config too"),
])
def test_damaged_json_files_are_named_with_what_to_do(run_dir, name, reader, hint):
    _truncate(run_dir / name, 25)
    with pytest.raises(RunFolderError, match=rf"{name} is damaged \(not valid JSON.*{hint}"):
        reader(Run(run_dir))


def test_a_damaged_metrics_file_stops_reuse_with_its_name(run_dir):
    (run_dir / "metrics.json").write_text("{\"clustering")
    with pytest.raises(RunFolderError, match="metrics.json is damaged"):
        run_experiment(CONFIG, run_dir, progress=False)


def test_damaged_latents_are_named(run_dir):
    _truncate(run_dir / "latents.npz", 100)
    with pytest.raises(RunFolderError, match=r"latents.npz is damaged.*python -m vqlib evaluate"):
        Run(run_dir).latents
    evaluate_run(run_dir)  # the advice works: the checkpoint writes them again
    assert Run(run_dir).latents["z_test"].shape[1] == 4


def test_a_config_that_is_json_but_not_a_config_is_named(run_dir):
    (run_dir / "config.json").write_text(json.dumps({"bottleneck": "vq", "colour": "red"}))
    with pytest.raises(RunFolderError, match=r"config.json is not a valid config \(unknown config keys \['colour'\]"):
        Run(run_dir).config


def test_a_folder_of_another_format_version_says_so(run_dir, capsys):
    (run_dir / "run.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(RunFolderError, match="says format 1, and this version of vqlib reads format 2"):
        run_experiment(CONFIG, run_dir, progress=False)
    (run_dir / "run.json").unlink()  # a folder from before run.json existed
    with pytest.raises(RunFolderError, match="written by another version of vqlib"):
        train(CONFIG, run_dir, progress=False)
    _one_line_error(capsys, ["evaluate", str(run_dir)], "is not a vqlib run folder of format 2")


def test_a_folder_that_is_not_a_run_folder_is_never_written_into(tmp_path, capsys):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("text")
    before = sorted(p.name for p in precious.iterdir())
    with pytest.raises(RunFolderError, match="is not a vqlib run folder .*nothing was written there"):
        run_experiment(CONFIG, precious, progress=False)
    _one_line_error(capsys, ["train", "--out", str(precious), "--dataset", "digits"], "is not a vqlib run folder")
    assert sorted(p.name for p in precious.iterdir()) == before and (precious / "chapter1.tex").read_text() == "text"


def _hold_lock(path, ready, release):
    with lock(path):
        ready.set()
        release.wait(60)


def test_a_second_writer_is_refused_and_a_killed_writers_lock_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(run_dir, ready, release))
    holder.start()
    assert ready.wait(60)
    with pytest.raises(RunFolderError, match=rf"is being written by process {holder.pid} on .*two writers"):
        train(CONFIG, run_dir, progress=False)
    os.kill(holder.pid, signal.SIGKILL)  # killed while holding the lock: the OS releases it
    holder.join(30)
    result = train(CONFIG, run_dir, progress=False)
    assert result.history[-1]["step"] == 20


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    train(CONFIG, run_dir, progress=False)
    before = (run_dir / "checkpoint.pt").read_bytes()

    def no_space(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(OSError, match=r"could not write .*checkpoint.pt: No space left on device; the previous "
                                      r"checkpoint.pt, if there was one, is unchanged") as caught:
        train(CONFIG.replace(num_iterations=40), run_dir, progress=False)
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert (run_dir / "checkpoint.pt").read_bytes() == before
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]  # no half-written file left behind
    resumed = train(CONFIG.replace(num_iterations=40), run_dir, progress=False)  # and it resumes from it
    assert resumed.resumed_from == 20


def test_a_full_disk_while_writing_results_keeps_the_previous_metrics(run_dir, monkeypatch, capsys):
    before = (run_dir / "metrics.json").read_text()
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith("metrics.json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    _one_line_error(capsys, ["evaluate", str(run_dir), "--n-init", "3"], "could not write", "metrics.json",
                    "No space left on device")
    monkeypatch.undo()
    assert (run_dir / "metrics.json").read_text() == before
    assert json.loads(before)["config"]["n_init"] == 2
    assert Run(run_dir).metrics["nmi"] is not None  # the folder stays usable


class WritesAFile:
    """Unpickling this object calls ``open(path, "w")``, which creates the file: code that a pickle runs."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _rewrite_checkpoint(run_dir, **entries):
    path = run_dir / "checkpoint.pt"
    torch.save({**torch.load(path, weights_only=True), **entries}, path)


def plant_code(run_dir, target):
    """Put an object whose unpickling would write ``target`` into the checkpoint's history."""
    history = torch.load(run_dir / "checkpoint.pt", weights_only=True)["history"]
    _rewrite_checkpoint(run_dir, history=[*history, WritesAFile(target)])
    with zipfile.ZipFile(run_dir / "checkpoint.pt") as archive:  # the pickle does call open on loading
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"open" in pickled and str(target).encode() in pickled


def test_a_checkpoint_whose_unpickling_would_run_code_is_refused_unloaded(run_dir, tmp_path, capsys):
    target = tmp_path / "written-by-the-checkpoint"
    plant_code(run_dir, target)
    refused = r"checkpoint.pt holds objects vqlib does not load \(.*open\).*it was not loaded: delete it to train"
    with pytest.raises(RunFolderError, match=refused):
        evaluate_run(run_dir)
    with pytest.raises(RunFolderError, match=refused):
        Run(run_dir).model()
    with pytest.raises(RunFolderError, match=refused):
        train(CONFIG.replace(num_iterations=30), run_dir, progress=False)  # resuming reads it too
    _one_line_error(capsys, ["evaluate", str(run_dir)], "checkpoint.pt holds objects vqlib does not load")
    assert not target.exists()


def test_the_checkpoints_vqlib_writes_load_as_weights_only(run_dir):
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)  # no safe globals needed
    assert checkpoint["step"] == 20 and checkpoint["rng"]["generator"].dtype == torch.uint8
    resumed = train(CONFIG.replace(num_iterations=30), run_dir, progress=False)
    assert resumed.resumed_from == 20 and [row["step"] for row in resumed.history] == [10, 20, 30]


@pytest.mark.parametrize("entries, expected", [
    (lambda c: {"model": {**c["model"], next(iter(c["model"])): [0.0, 1.0]}},
     r"\(checkpoint\['model'\]\['[^']+'\] is a list, not a tensor\)"),
    (lambda c: {"model": [t for t in c["model"].values()]}, r"\(checkpoint\['model'\] is a list, not a dict of a string"),
    (lambda c: {"history": [*c["history"], 3]}, r"\(checkpoint\['history'\]\[2\] is an int \(3\), not a dict of step"),
    (lambda c: {"step": "20"}, r"\(checkpoint\['step'\] is a str \('20'\), not an int\)"),
    (lambda c: {"rng": {"generator": c["rng"]["generator"].float()}}, r"\(checkpoint\['rng'\]\['generator'\] is a Tensor"),
    (lambda c: {"optimizer": {"state": {}, "param_groups": None}}, r"\(checkpoint\['optimizer'\]\['param_groups'\] is None"),
])
def test_a_checkpoint_entry_that_is_not_what_vqlib_writes_is_named(run_dir, capsys, entries, expected):
    _rewrite_checkpoint(run_dir, **entries(torch.load(run_dir / "checkpoint.pt", weights_only=True)))
    expected = rf"checkpoint.pt does not hold what vqlib writes {expected}.*: delete it to train"
    with pytest.raises(RunFolderError, match=expected):
        load_checkpoint(run_dir)
    with pytest.raises(RunFolderError, match=expected):
        train(CONFIG.replace(num_iterations=30), run_dir, progress=False)
    _one_line_error(capsys, ["evaluate", str(run_dir)], "checkpoint.pt does not hold what vqlib writes")


def test_a_checkpoint_whose_model_does_not_fit_its_config_is_named(run_dir, capsys):
    _rewrite_checkpoint(run_dir, model={"encoder.weight": torch.zeros(2)})
    _one_line_error(capsys, ["evaluate", str(run_dir)], "checkpoint.pt holds a model that does not fit its config")
    with pytest.raises(RunFolderError, match="holds a model that does not fit its config"):
        train(CONFIG.replace(num_iterations=30), run_dir, progress=False)


def test_a_history_with_a_row_that_is_not_a_dict_is_named(run_dir):
    history = json.loads((run_dir / "history.json").read_text())
    (run_dir / "history.json").write_text(json.dumps([history[0], history[1], 3]))
    with pytest.raises(RunFolderError, match=r"history.json does not hold what vqlib writes \(history\[2\] is an int "
                                             r"\(3\), not a dict of step, loss, reconstruction, latent, perplexity, "
                                             r"codes_used\): it is rewritten from the checkpoint"):
        Run(run_dir).history
    (run_dir / "history.json").write_text(json.dumps([{**history[0], "loss": None}]))
    with pytest.raises(RunFolderError, match=r"\(history\[0\]\['loss'\] is None, not a number\)"):
        Run(run_dir).history
    (run_dir / "history.json").write_text(json.dumps([{**history[0], "loss": float("nan")}]))  # a diverged run's
    assert Run(run_dir).history[0]["loss"] != Run(run_dir).history[0]["loss"]


def test_a_metrics_file_with_a_string_where_a_number_belongs_is_named(tmp_path, finished, capsys):
    run_dir = tmp_path / run_name(CONFIG)  # a folder the sweep below reuses
    shutil.copytree(finished, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "nmi": "high"}))
    expected = (r"metrics.json does not hold what vqlib writes \(metrics\['nmi'\] is a str \('high'\), not a number "
                r"or None\): run `python -m vqlib evaluate")
    with pytest.raises(RunFolderError, match=expected):
        Run(run_dir).metrics
    with pytest.raises(RunFolderError, match=expected):
        run_experiment(CONFIG, run_dir, progress=False)  # reuse reads it
    _one_line_error(capsys, ["sweep", "--grid", json.dumps(TINY), "--out", str(tmp_path), "--no-progress"],
                    "metrics.json does not hold what vqlib writes")
    assert main(["evaluate", str(run_dir)]) == 0  # the advice works: evaluate writes it again
    assert isinstance(Run(run_dir).metrics["nmi"], float)


@pytest.mark.parametrize("name, values, expected", [
    ("run.json", {"format_version": 2, "vqlib_version": 3}, r"run\['vqlib_version'\] is an int \(3\), not a string"),
    ("config.json", ["vq"], r"config is a list, not a dict of a string to"),
    ("config.json", {"num_codes": [8]}, r"config\['num_codes'\] is a list, not a string or a number"),
])
def test_json_files_that_are_not_what_vqlib_writes_are_named(run_dir, capsys, name, values, expected):
    (run_dir / name).write_text(json.dumps(values))
    with pytest.raises(RunFolderError, match=rf"{name} does not hold what vqlib writes \({expected}"):
        Run(run_dir).config
    if name == "run.json":
        _one_line_error(capsys, ["evaluate", str(run_dir)], "run.json does not hold what vqlib writes")


def test_latents_that_are_not_what_vqlib_writes_are_named(run_dir):
    import numpy as np

    latents = Run(run_dir).latents
    np.savez(run_dir / "latents.npz", **{**latents, "y_test": latents["y_test"].astype(np.float32)})
    with pytest.raises(RunFolderError, match=r"latents.npz does not hold what vqlib writes \(latents\['y_test'\] is a "
                                             r"ndarray, not a 1-d int array\)"):
        Run(run_dir).latents
