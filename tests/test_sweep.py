"""Sweeps: grid expansion, batching, reuse, the command line, and a dask worker killed mid-run."""

import json
import os
import signal
import threading
import time

import pytest
import torch

import vqlib
from vqlib import RunConfig
from vqlib.cli import main
from vqlib.runs import run_name
from vqlib.sweep import expand_grid, group_configs, sweep

TINY = dict(dataset="digits", mlp_hidden="64-64-128", code_dim=8, num_codes=16, batch_size=32, log_every=20,
            n_init=3, classifier_iterations=100, device="cpu")


def test_expand_grid_takes_every_combination_and_the_union_of_a_list():
    base = RunConfig(**TINY)
    configs = expand_grid({"bottleneck": ["ae", "vq", "soft_vq"], "seed": [0, 1], "num_iterations": 30}, base)
    assert len(configs) == 6 and {c.num_iterations for c in configs} == {30}
    assert {(c.bottleneck, c.seed) for c in configs} == {(b, s) for b in ("ae", "vq", "soft_vq") for s in (0, 1)}
    union = expand_grid([{"bottleneck": "vq", "num_codes": [8, 16]}, {"bottleneck": "beta_vae", "beta": 20.0},
                         {"bottleneck": "vq", "num_codes": 16}], base)  # the last one repeats: kept once
    assert [(c.bottleneck, c.num_codes, c.beta) for c in union] == [("vq", 8, None), ("vq", 16, None),
                                                                    ("beta_vae", 16, 20.0)]


def test_bad_grids_are_errors_that_name_the_key_or_value():
    with pytest.raises(ValueError, match="grid key 'seeds' is not a RunConfig field"):
        expand_grid({"bottleneck": "ae", "seeds": [0, 1]})
    with pytest.raises(ValueError, match="bottleneck='vqvae' is not allowed"):
        expand_grid({"bottleneck": ["ae", "vqvae"]})
    with pytest.raises(ValueError, match="grid=.* is not allowed"):
        expand_grid("ae")


def test_configs_that_cannot_share_a_stack_are_grouped_apart():
    configs = expand_grid({"bottleneck": ["ae", "vq"], "code_dim": [8, 4], "seed": [0, 1, 2], "beta": [0.25, 1.0]},
                          RunConfig(**TINY))
    batches = group_configs(configs, max_runs=4)
    assert sum(len(b) for b in batches) == len(configs) == 18  # 12 vq runs, 6 ae (which does not read beta)
    for batch in batches:
        assert len({(c.bottleneck, c.code_dim) for c in batch}) == 1 and len(batch) <= 4
    assert len(group_configs(configs, max_runs=None)) == 4  # seeds and beta share a stack


def test_sweep_trains_each_run_once_and_reuses_finished_ones(tmp_path):
    grid = {"bottleneck": ["ae", "soft_vq"], "seed": [0, 1], "num_iterations": 40}
    table = sweep(grid, tmp_path, base=RunConfig(**TINY), progress=False, summary_path=tmp_path / "summary.csv")
    assert len(table) == 4 and table["runs_trained_together"].tolist() == [2, 2, 2, 2]
    assert table["clustering_acc"].notna().all() and table["diverged_at"].isna().all()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(table["run"])
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/checkpoint.pt")}
    again = sweep(grid, tmp_path, base=RunConfig(**TINY), progress=False)
    assert again["nmi"].tolist() == table["nmi"].tolist()
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/checkpoint.pt")} == stamps  # nothing retrained


def test_cli_sweep_writes_the_summary_and_names_a_bad_key(tmp_path, capsys):
    grid = {**TINY, "bottleneck": "ae", "seed": [0, 1], "num_iterations": 20}
    assert main(["sweep", "--grid", json.dumps(grid), "--out", str(tmp_path), "--no-progress"]) == 0
    assert (tmp_path / "summary.csv").read_text().count("\n") == 3  # header and two runs
    grid_file = tmp_path / "grid.json"
    grid_file.write_text(json.dumps({"bottleneck": "ae", "K": 4}))
    assert main(["sweep", "--grid", str(grid_file), "--out", str(tmp_path)]) == 2
    assert "grid key 'K' is not a RunConfig field" in capsys.readouterr().err


def test_a_worker_killed_mid_run_is_rerun_and_resumes_from_its_checkpoint(tmp_path):
    distributed = pytest.importorskip("distributed")
    config = RunConfig(**{**TINY, "checkpoint_every": 100, "log_every": 50}, bottleneck="vae", num_iterations=1500)
    grid = {"seed": [0, 1]}
    checkpoints = [tmp_path / run_name(config.replace(seed=s)) / "checkpoint.pt" for s in (0, 1)]
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                                  processes=True) as cluster, distributed.Client(cluster) as client:
        outcome = {}
        thread = threading.Thread(target=lambda: outcome.update(table=sweep(grid, tmp_path, base=config,
                                                                            client=client, progress=False)))
        thread.start()
        deadline = time.monotonic() + 120
        while not all(p.exists() for p in checkpoints):
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        killed_at = torch.load(checkpoints[0], weights_only=True)["step"]
        assert killed_at < config.num_iterations
        (pid,) = client.run(os.getpid).values()
        os.kill(pid, signal.SIGKILL)
        thread.join(timeout=300)
        assert not thread.is_alive()
    table = outcome["table"]
    assert table["diverged_at"].isna().all() and table["clustering_acc"].notna().all()
    for checkpoint in checkpoints:
        metrics = json.loads((checkpoint.parent / "metrics.json").read_text())
        assert metrics["resumed_from"] >= killed_at > 0  # the rerun started from the saved checkpoint
        history = json.loads((checkpoint.parent / "history.json").read_text())
        assert [row["step"] for row in history] == list(range(50, 1501, 50))  # every interval, once
    # the resumed runs end where an uninterrupted run ends (one thread, as on the worker)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = vqlib.train(config, dataset=vqlib.load_dataset("digits"), progress=False)
    finally:
        torch.set_num_threads(threads)
    history = json.loads((checkpoints[0].parent / "history.json").read_text())
    assert [r["loss"] for r in history] == pytest.approx([r["loss"] for r in reference.history], rel=1e-5)


def test_fields_a_bottleneck_does_not_read_do_not_change_its_run(tmp_path):
    base = RunConfig(**{**TINY, "num_iterations": 20})
    ae = base.replace(bottleneck="ae", num_codes=16)
    same_ae = base.replace(bottleneck="ae", num_codes=64, temperature=3.0, sigma_source="codeword", beta=5.0)
    assert run_name(ae) == run_name(same_ae) and ae.canonical() == same_ae.canonical()
    assert run_name(base.replace(bottleneck="vq", num_codes=16)) != run_name(base.replace(bottleneck="vq", num_codes=64))
    assert run_name(base.replace(bottleneck="vq", temperature=3.0)) == run_name(base.replace(bottleneck="vq"))
    assert len(expand_grid({"bottleneck": ["ae", "vq"], "num_codes": [16, 64]}, base)) == 3  # one ae, two vq
    first = vqlib.run_experiment(ae, tmp_path / "ae", progress=False)
    stamp = (tmp_path / "ae" / "checkpoint.pt").stat().st_mtime_ns
    assert vqlib.run_experiment(same_ae, tmp_path / "ae", progress=False)["nmi"] == first["nmi"]  # reused
    assert (tmp_path / "ae" / "checkpoint.pt").stat().st_mtime_ns == stamp
