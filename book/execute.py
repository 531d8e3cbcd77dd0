"""Execute the book's notebooks with papermill.

    python -m book.execute --params {default|smoke|paper} --out BUILD [--only 04_training ...]

Every notebook the toc lists under ``notebooks/`` runs, in the toc's order, in a ``python3``
kernel whose working directory is the repository root, into ``BUILD/src/notebooks/<name>.ipynb``.
Each gets ``results_dir = BUILD/results/<name>``, ``runs_dir = BUILD/runs`` and
``param_set = <set>`` injected, plus the set's overrides from ``notebooks/params/<name>.yml``.
An override for a parameter the notebook's ``parameters`` cell does not define stops everything
before anything runs. A failing notebook is recorded (by papermill, in the executed copy's
``metadata.papermill``) and the rest still run; the exit status is non-zero if any failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
import papermill
import yaml

from book import NOTEBOOKS_DIR, REPO_ROOT, relative, toc_notebooks

from vqlib.notebook import PARAM_SETS  # default: each notebook's own parameters cell; others: notebooks/params/
INJECTED = ("results_dir", "runs_dir", "param_set")  # set here; a parameter file may not set them
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
#: jupyter-book's tag that folds a cell's input: given to papermill's injected-parameters cell.
FOLD_TAG = "hide-input"


def plan(names: list[str], param_set: str, build: Path) -> tuple[dict[str, dict], list[str]]:
    """Every notebook's parameters, and every problem with them, before anything runs."""
    jobs, problems = {}, []
    for name in names:
        src, params_file = NOTEBOOKS_DIR / f"{name}.ipynb", NOTEBOOKS_DIR / "params" / f"{name}.yml"
        try:
            declared = papermill.inspect_notebook(str(src))
            sets = yaml.safe_load(params_file.read_text()) or {} if params_file.exists() else {}
            overrides = sets.get(param_set) or {} if param_set != "default" else {}
        except Exception as exc:  # noqa: BLE001 - a missing notebook, invalid JSON or YAML, ...
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        for key in overrides:
            if key in INJECTED:
                problems.append(f"{name}: {relative(params_file)} sets '{key}', which the executor sets itself")
            elif key not in declared:
                problems.append(f"{name}: {relative(params_file)} overrides '{key}' in '{param_set}', a "
                                f"parameter notebook {name} does not define (its parameters: {', '.join(declared)})")
        jobs[name] = {**overrides, "results_dir": relative(build / "results" / name),
                      "runs_dir": relative(build / "runs"), "param_set": param_set}
    return jobs, problems


def fold_injected_parameters(path: Path) -> None:
    """Tag papermill's injected-parameters cell so that jupyter-book folds it like the parameters cell."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and FOLD_TAG not in tags:
            tags.append(FOLD_TAG)
    nbformat.write(nb, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m book.execute", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", choices=PARAM_SETS, default="default",
                   help="parameter set: default (the notebooks' own), smoke (minutes), paper (GPU)")
    p.add_argument("--out", required=True, help="build folder, e.g. _build/smoke")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only these notebooks (stem, repeatable or comma-separated)")
    p.add_argument("--log-output", action="store_true", help="stream the notebooks' output")
    args = p.parse_args(argv)

    build = Path(args.out).resolve()
    out_dir = build / "src" / "notebooks"
    names = toc_notebooks()
    if args.only:
        wanted = [n.removesuffix(".ipynb") for item in args.only for n in item.split(",") if n]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            p.error(f"--only {', '.join(unknown)}: not a notebook of the book ({', '.join(names)})")
        names = [n for n in names if n in wanted]
    jobs, problems = plan(names, args.params, build)
    if problems:
        print(f"error: parameter set '{args.params}' cannot run:\n" + "\n".join(problems), file=sys.stderr)
        return 2

    out_dir.mkdir(parents=True, exist_ok=True)
    if not args.only:  # a full run starts clean: no executed copy left over from another run
        for old in out_dir.glob("*.ipynb"):
            old.unlink()
    (build / "runs").mkdir(parents=True, exist_ok=True)
    os.environ.update(KERNEL_ENV)  # the kernels inherit this process's environment
    print(f"Executing {len(jobs)} notebook(s) with parameter set '{args.params}' into {relative(out_dir)}")
    failed, t_all = [], time.perf_counter()
    for i, (name, parameters) in enumerate(jobs.items(), 1):
        out = out_dir / f"{name}.ipynb"
        (REPO_ROOT / parameters["results_dir"]).mkdir(parents=True, exist_ok=True)
        t0, result = time.perf_counter(), "ok"
        try:
            papermill.execute_notebook(
                str(NOTEBOOKS_DIR / f"{name}.ipynb"), str(out), parameters=parameters, kernel_name=KERNEL,
                cwd=str(REPO_ROOT), progress_bar=False, log_output=args.log_output, extra_arguments=KERNEL_ARGS)
        except Exception as exc:  # noqa: BLE001 - papermill recorded it; the other notebooks still run
            error = f"{getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', exc)}"
            result = "FAILED  " + " ".join(error.split())[:300]
            failed.append(name)
        if out.exists():
            fold_injected_parameters(out)
        print(f"[{i}/{len(jobs)}] {name:<28}  {time.perf_counter() - t0:8.1f} s  {result}", flush=True)

    total = time.perf_counter() - t_all
    if failed:
        print(f"{len(failed)} of {len(jobs)} notebook(s) failed in {total:.1f} s: {', '.join(failed)} "
              f"(see the executed copies in {relative(out_dir)})", file=sys.stderr)
        return 1
    print(f"All {len(jobs)} notebook(s) ran in {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
