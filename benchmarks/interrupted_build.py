"""What an interrupted book build costs the next one: kill a build part-way, build again, count what was redone.

    python benchmarks/interrupted_build.py [--kill-after 105] [--params smoke]

Starts ``python -m book.execute`` into a temporary build folder, SIGKILLs it (the executor and its
kernel, as a crash or an out-of-memory kill would) after ``--kill-after`` seconds, prints the status
each notebook was left in and the run folders that were finished or half-written, then builds again
into the same folder and prints how many runs the second build trained, their training time, whether
any resumed from a checkpoint, and whether every run finished before the kill was left as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def finished_runs(build: Path) -> dict:
    """run folder -> (train_wall_time_s, resumed_from) of every run with a metrics.json."""
    rows = {}
    for path in (build / "runs").glob("*/metrics.json"):
        metrics = json.loads(path.read_text())
        rows[path.parent.name] = (metrics.get("train_wall_time_s"), metrics.get("resumed_from"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill-after", type=float, default=105.0, help="seconds before the kill (default: 105)")
    parser.add_argument("--params", default="smoke", help="parameter set (default: smoke)")
    args = parser.parse_args()
    build = Path(tempfile.mkdtemp(prefix="interrupted-build-"))
    command = [sys.executable, "-m", "book.execute", "--params", args.params, "--out", str(build)]
    first = subprocess.Popen(command, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    time.sleep(args.kill_after)
    os.killpg(first.pid, signal.SIGKILL)
    print(f"first build, killed after {args.kill_after:g} s:\n{first.stdout.read()}")
    left = {}  # what papermill recorded in each executed copy before the kill
    for path in sorted((build / "src" / "notebooks").glob("*.ipynb")):
        record = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
        left[path.stem] = ("failed" if record.get("exception") else "interrupted"
                           if record.get("end_time") is None else "ok")
    print("notebooks after the kill:", left)
    before = finished_runs(build)
    partial = [p.parent.name for p in (build / "runs").glob("*/checkpoint.pt") if p.parent.name not in before]
    print(f"finished runs: {len(before)}; runs with a checkpoint but no metrics: {len(partial)}")
    started = time.perf_counter()
    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    print(f"second build ({time.perf_counter() - started:.0f} s):\n{second.stdout}")
    after = finished_runs(build)
    redone = {name: v for name, v in after.items() if before.get(name) != v}
    print(f"runs trained by the second build: {len(redone)} of {len(after)}, "
          f"{sum(v[0] or 0 for v in redone.values()):.1f} s of training; resumed from a checkpoint: "
          f"{sum(1 for v in redone.values() if v[1])}")
    print("every run finished before the kill was reused unchanged:", all(after.get(k) == v for k, v in before.items()))


if __name__ == "__main__":
    main()
