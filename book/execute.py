"""Execute the book's notebooks with papermill.

    python -m book.execute --params {default|smoke|paper} --out BUILD [--only 04_training ...]

Every notebook the toc lists under ``notebooks/`` runs, in the toc's order, in a ``python3``
kernel whose working directory is the repository root, into ``BUILD/src/notebooks/<name>.ipynb``.
Each gets ``results_dir = BUILD/results/<name>``, ``runs_dir = BUILD/runs`` and
``param_set = <set>`` injected, plus the set's overrides from ``notebooks/params/<name>.yml``.
An override for a parameter the notebook's ``parameters`` cell does not define stops everything
before anything runs. A failing notebook is recorded and the rest still run; the exit status is
non-zero if any failed. ``BUILD/src/status.json`` records every notebook's parameters, start,
duration and result, rewritten atomically after each notebook.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import papermill
import yaml
from papermill.exceptions import PapermillExecutionError

from book import (
    BOOK_DIR,
    INJECTED,
    NOTEBOOK_PREFIX,
    NOTEBOOKS_DIR,
    REPO_ROOT,
    REQUIRED,
    SRC_DIRNAME,
    STATIC_PAGES,
    STATUS_JSON,
    TOC_FILE,
    display_path,
    toc_notebooks,
    write_json_atomic,
)
from vqlib.notebook import PARAM_SETS  # default: the notebooks' own parameters cells; others: notebooks/params/

KERNEL = "python3"
#: Environment of the kernels: no display, and a fixed hash seed for reproducible set ordering.
#: OMP_WAIT_POLICY=PASSIVE: OpenMP threads sleep instead of spinning while they wait (see vqlib/__init__.py).
KERNEL_ENV = {"MPLBACKEND": "Agg", "PYTHONHASHSEED": "0", "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
#: Kernel options. With MPLBACKEND=Agg alone, ipykernel keeps Agg and ``plt.show()`` draws nothing
#: into the notebook: ``matplotlib=inline`` makes the kernel itself use the inline backend (Agg
#: rendering to PNG outputs), while processes the notebooks start still get Agg. The kernel's own
#: log is kept to critical messages: at ERROR level it warns of TCP without encryption and, when
#: papermill shuts down a kernel whose notebook succeeded, prints "KeyboardInterrupt caught in kernel".
KERNEL_ARGS = ["--IPKernelApp.matplotlib=inline", "--IPKernelApp.log_level=CRITICAL"]


class ConfigError(Exception):
    """A problem found before anything runs (bad parameter file, unknown parameter, ...)."""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def notebook_parameters(path: Path, kernel: str = KERNEL) -> dict:
    """The parameters cell of a notebook, as papermill's inspect_notebook sees it."""
    try:
        return papermill.inspect_notebook(str(path))
    except ValueError:
        # A notebook saved without kernelspec metadata: inspect it as the kernel we run it with.
        from papermill.inspection import _infer_parameters
        from papermill.iorw import load_notebook_node

        nb = load_notebook_node(str(path))
        return {p.name: p._asdict() for p in _infer_parameters(nb, name=kernel, language="python")}


def load_overrides(params_file: Path, param_set: str) -> dict:
    """The overrides of ``param_set`` in a notebook's parameter file ({} if none)."""
    if param_set == "default" or not params_file.exists():
        return {}
    data = yaml.safe_load(params_file.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{display_path(params_file)}: expected a mapping with keys smoke/paper")
    unknown = sorted(set(data) - (set(PARAM_SETS) - {"default"}))
    if unknown:
        raise ConfigError(
            f"{display_path(params_file)}: unknown parameter set(s) {', '.join(map(str, unknown))} "
            f"(allowed: {', '.join(s for s in PARAM_SETS if s != 'default')}; "
            "'default' is the notebook's own parameters cell)"
        )
    overrides = data.get(param_set) or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{display_path(params_file)}: '{param_set}' must map parameter names to values")
    return overrides


def plan(names: list[str], param_set: str, build: Path, notebooks_dir: Path, params_dir: Path) -> list[dict]:
    """Resolve and check every notebook's parameters before anything runs."""
    jobs, problems = [], []
    for name in names:
        src = notebooks_dir / f"{name}.ipynb"
        if not src.exists():
            problems.append(f"{name}: notebook {display_path(src)} does not exist")
            continue
        try:
            declared = notebook_parameters(src)
        except Exception as exc:  # noqa: BLE001 - e.g. a notebook that is not valid JSON
            problems.append(f"{name}: cannot read the parameters of {display_path(src)}: {last_line(exc)}")
            continue
        if not declared:
            problems.append(f"{name}: no cell tagged 'parameters' in {display_path(src)}")
            continue
        missing = [p for p in REQUIRED if p not in declared]
        if missing:
            problems.append(f"{name}: its parameters cell does not define {', '.join(missing)}")
        params_file = params_dir / f"{name}.yml"
        try:
            overrides = load_overrides(params_file, param_set)
        except (ConfigError, yaml.YAMLError) as exc:
            problems.append(f"{name}: {exc}")
            continue
        for key in overrides:
            if key in INJECTED:
                problems.append(
                    f"{name}: {display_path(params_file)} sets '{key}' in '{param_set}', "
                    "but the executor sets it itself"
                )
            elif key not in declared:
                problems.append(
                    f"{name}: {display_path(params_file)} overrides '{key}' in '{param_set}', "
                    f"a parameter notebook {name} does not define "
                    f"(its parameters: {', '.join(declared)})"
                )
        parameters = dict(overrides)
        parameters.update(
            results_dir=display_path(build / "results" / name),
            runs_dir=display_path(build / "runs"),
            param_set=param_set,
        )
        jobs.append({"name": name, "src": src, "params_file": params_file, "overrides": overrides,
                     "parameters": parameters})
    if problems:
        raise ConfigError("\n".join(problems))
    return jobs


def environment() -> dict:
    """Where the notebooks ran: versions, device and commit (torch asked in a child process)."""
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "papermill": papermill.__version__,
        "git_commit": _git_commit(),
    }
    probe = (
        "import json, torch\n"
        "dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'\n"
        "print(json.dumps({'torch': torch.__version__, 'device': dev,"
        " 'cuda': torch.version.cuda}))"
    )
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             timeout=120, cwd=REPO_ROOT, env={**os.environ, **KERNEL_ENV})
        env.update(json.loads(out.stdout.strip().splitlines()[-1]))
    except Exception as exc:  # noqa: BLE001 - the status page says so instead
        env.update(torch="unknown", device=f"unknown ({type(exc).__name__})")
    return env


def _git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=REPO_ROOT, check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=REPO_ROOT, timeout=30).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except Exception:  # noqa: BLE001 - not a git checkout
        return "unknown"


def last_line(exc: BaseException, limit: int = 300) -> str:
    """The traceback's last line, "ExceptionType: message", on one line."""
    if isinstance(exc, PapermillExecutionError):
        ename, evalue = exc.ename, exc.evalue
    else:
        ename, evalue = type(exc).__name__, str(exc)
    message = " / ".join(line.strip() for line in str(evalue).splitlines() if line.strip())
    text = f"{ename}: {message}" if message else str(ename)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def copy_static_pages(src_root: Path) -> None:
    for page in STATIC_PAGES:
        shutil.copy2(BOOK_DIR / page, src_root / page)


def run(args) -> int:
    build = Path(args.out).resolve()
    src_root = build / SRC_DIRNAME
    out_dir = src_root / NOTEBOOK_PREFIX.rstrip("/")
    status_path = src_root / STATUS_JSON

    names = toc_notebooks(args.toc)
    if args.only:
        wanted = [n.removesuffix(".ipynb") for item in args.only for n in item.split(",") if n]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            print(f"error: --only {', '.join(unknown)}: not a notebook of the book "
                  f"({', '.join(names)})", file=sys.stderr)
            return 2
        names = [n for n in names if n in wanted]

    try:
        jobs = plan(names, args.params, build, Path(args.notebooks_dir), Path(args.params_dir))
    except ConfigError as exc:
        print(f"error: parameter set '{args.params}' cannot run:\n{exc}", file=sys.stderr)
        return 2

    if args.check:
        for job in jobs:
            print(f"{job['name']}: ok, overrides {job['overrides'] or 'none'}")
        print(f"Parameter set '{args.params}' is valid for {len(jobs)} notebook(s); nothing was run.")
        return 0

    out_dir.mkdir(parents=True, exist_ok=True)
    if not args.only:  # a full run starts clean: no executed copy left over from another run
        for old in out_dir.glob("*.ipynb"):
            old.unlink()
    (build / "runs").mkdir(parents=True, exist_ok=True)
    copy_static_pages(src_root)

    status = {"notebooks": {}}
    if args.only and status_path.exists():  # a partial rerun updates the earlier record
        status = json.loads(status_path.read_text())
    status["updated"] = _now()
    status["environment"] = environment()
    status["kernel_env"] = dict(KERNEL_ENV)
    status["kernel_args"] = list(KERNEL_ARGS)
    records = status.setdefault("notebooks", {})
    for job in jobs:
        records[job["name"]] = {"param_set": args.params, "status": "pending",
                                "source": display_path(job["src"]),
                                "parameters": job["parameters"], "overrides": job["overrides"]}
    # Keep the toc's order even when a partial rerun updates an earlier record.
    order = toc_notebooks(args.toc)
    status["notebooks"] = dict(sorted(records.items(), key=lambda kv: order.index(kv[0])
                                      if kv[0] in order else len(order)))
    records = status["notebooks"]
    write_json_atomic(status_path, status)

    os.environ.update(KERNEL_ENV)  # the kernels inherit this process's environment
    env = status["environment"]
    print(f"Executing {len(jobs)} notebook(s) with parameter set '{args.params}' into "
          f"{display_path(out_dir)} (torch {env.get('torch')}, {env.get('device')})", flush=True)
    width = max(len(j["name"]) for j in jobs) if jobs else 0
    failed, t_all = [], time.perf_counter()
    for i, job in enumerate(jobs, 1):
        name, record = job["name"], records[job["name"]]
        (REPO_ROOT / job["parameters"]["results_dir"]).mkdir(parents=True, exist_ok=True)
        record.update(status="running", start=_now(), duration_s=None, error=None)
        write_json_atomic(status_path, status)
        if args.log_output:
            print(f"[{i}/{len(jobs)}] {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(job["src"]), str(out_dir / f"{name}.ipynb"),
                parameters=job["parameters"], kernel_name=KERNEL, cwd=str(REPO_ROOT),
                progress_bar=False, log_output=args.log_output,
                execution_timeout=args.cell_timeout, extra_arguments=KERNEL_ARGS,
            )
            record["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - recorded, and the other notebooks still run
            record.update(status="failed", error=last_line(exc))
            failed.append(name)
        except KeyboardInterrupt:
            record.update(status="failed", error="KeyboardInterrupt: interrupted",
                          duration_s=round(time.perf_counter() - t0, 2))
            write_json_atomic(status_path, status)
            raise
        record["duration_s"] = round(time.perf_counter() - t0, 2)
        write_json_atomic(status_path, status)
        result = "ok" if record["status"] == "ok" else f"FAILED  {record['error']}"
        print(f"[{i}/{len(jobs)}] {name:<{width}}  {record['duration_s']:8.1f} s  {result}", flush=True)

    total = time.perf_counter() - t_all
    if failed:
        print(f"{len(failed)} of {len(jobs)} notebook(s) failed in {total:.1f} s: {', '.join(failed)} "
              f"(see {display_path(status_path)} and the executed copies in {display_path(out_dir)})",
              file=sys.stderr)
        return 1
    print(f"All {len(jobs)} notebook(s) ran in {total:.1f} s; status in {display_path(status_path)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m book.execute", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", choices=PARAM_SETS, default="default",
                   help="parameter set: default (the notebooks' own), smoke (minutes), paper (GPU)")
    p.add_argument("--out", required=True, help="build folder, e.g. _build/smoke")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only these notebooks (stem, repeatable or comma-separated)")
    p.add_argument("--notebooks-dir", default=str(NOTEBOOKS_DIR),
                   help="where the source notebooks are (default: notebooks/)")
    p.add_argument("--params-dir", default=None,
                   help="where <name>.yml parameter files are (default: NOTEBOOKS_DIR/params)")
    p.add_argument("--toc", default=str(TOC_FILE),
                   help="table of contents naming the notebooks and their order (default: _toc.yml)")
    p.add_argument("--check", action="store_true",
                   help="only check the notebooks and their parameter files; run nothing")
    p.add_argument("--log-output", action="store_true", help="stream the notebooks' output")
    p.add_argument("--cell-timeout", type=int, default=None,
                   help="seconds a cell may run (default: no limit)")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    if args.params_dir is None:
        args.params_dir = str(Path(args.notebooks_dir) / "params")
    return args


def main(argv=None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
