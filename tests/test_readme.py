"""Every Python block of the README runs as written (in a temporary folder); the SLURM example,
which needs dask-jobqueue and a SLURM cluster, and the TLS one, which needs a scheduler and
certificates, are only compiled."""

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    code = BLOCKS[index]
    compiled = compile(code, f"README.md python block {index + 1}", "exec")
    if "dask_jobqueue" in code or "tls://" in code:
        return  # needs a SLURM cluster, or a TLS scheduler and its certificates: compiled above, not run
    if "LocalCluster" in code:
        pytest.importorskip("distributed")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    exec(compiled, {"__name__": f"readme_block_{index}"})
    assert os.listdir(tmp_path) or "runs" not in code
