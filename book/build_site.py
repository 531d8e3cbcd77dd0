"""Render the executed notebooks of a build into a static site with jupyter-book 1.

    python -m book.build_site --build BUILD

Writes the status page BUILD/src/status.md from the ``metadata.papermill`` that papermill wrote
into every executed notebook (and the ``provenance.json`` the notebooks saved), then builds
BUILD/src into BUILD/html with jupyter-book's sphinx build, as ``jupyter-book build --builder html
-n -W --keep-going`` does (jupyter-book never executes anything: the pages are papermill's
executed copies). The ``offline_site`` extension (book/_ext) fails the build on any asset from
outside the site.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from importlib.metadata import version
from pathlib import Path

import nbformat

from book import BOOK_DIR, CONFIG_FILE, REPO_ROOT, SITE_DIRNAME, TOC_FILE, relative, toc_notebooks

_MD_SPECIAL = set("\\`*_{}[]<>()#+-.!|$~&:")


def md_escape(text) -> str:
    """Text as literal markdown (no emphasis, math, links or table cells)."""
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in str(text)).replace("\n", " ")


def notebook_status(path: Path) -> dict:
    """What papermill recorded about one executed notebook, with the first error it shows."""
    if not path.is_file():
        return {"result": "not run"}
    nb = nbformat.read(path, as_version=4)
    pm = nb.metadata.get("papermill", {})
    errors = [f"{o.ename}: {o.evalue}" for c in nb.cells if c.cell_type == "code"
              for o in c.get("outputs", []) if o.output_type == "error"]
    result = ("**FAILED**: " + md_escape(errors[0] if errors else "see the page") if pm.get("exception")
              else "**interrupted**" if pm.get("end_time") is None else "ok")
    return {**pm, "result": result}


def status_markdown(notebooks: list[str], src_root: Path) -> str:
    """The status page: every notebook with its parameter set, start, duration and result, then
    the environment the notebooks recorded (vqlib.utils.provenance) and every parameter."""
    records = {name: notebook_status(src_root / "notebooks" / f"{name}.ipynb") for name in notebooks}
    lines = ["# Build status", "",
             "How every page of this build was executed (with papermill, by `python -m book.execute`).",
             "Each page shows the parameters it ran with in its folded `injected-parameters` cell.", "",
             "| notebook | parameter set | started (UTC) | duration | result |", "| --- | --- | --- | ---: | --- |"]
    for name, rec in records.items():
        page = f"{{doc}}`{name} <notebooks/{name}>`" if "parameters" in rec else f"`{name}`"
        start = (rec.get("start_time") or "–")[:19].replace("T", " ")
        duration = f"{rec['duration']:.1f} s" if rec.get("duration") is not None else "–"
        param_set = rec.get("parameters", {}).get("param_set", "–")
        lines.append(f"| {page} | `{param_set}` | {start} | {duration} | {rec['result']} |")
    total = sum(rec.get("duration") or 0 for rec in records.values())
    lines += ["", f"Total execution time: {total:.0f} s.", ""]

    saved = [REPO_ROOT / r["parameters"]["results_dir"] / "provenance.json" for r in records.values()
             if "parameters" in r]
    provenance = next((json.loads(p.read_text()) for p in saved if p.is_file()), {})  # vqlib.utils.provenance
    versions = provenance.get("versions", {})
    rows = [("Python", versions.get("python")), ("PyTorch", versions.get("torch")),
            ("device", provenance.get("device_name", provenance.get("device"))),
            ("torch threads", provenance.get("torch_threads")), ("OMP_WAIT_POLICY", provenance.get("omp_wait_policy")),
            ("platform", provenance.get("platform")), ("git commit", provenance.get("git_commit")),
            ("papermill", next((r["version"] for r in records.values() if "version" in r), None)),
            ("jupyter-book", version("jupyter-book"))]
    lines += ["## Environment", "", "Where the notebooks were executed (from their `provenance.json`).", "",
              "| what | value |", "| --- | --- |"] + [f"| {k} | `{v}` |" for k, v in rows if v is not None]
    lines += ["", "## Parameters", ""]
    for name, rec in records.items():
        if "parameters" in rec:
            lines += [f"**{name}**: " + ", ".join(f"`{k} = {v!r}`" for k, v in rec["parameters"].items()), ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m book.build_site", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", required=True, help="build folder written by book.execute, e.g. _build/smoke")
    args = p.parse_args(argv)
    build_dir = Path(args.build).resolve()
    src_root, site = build_dir / "src", build_dir / SITE_DIRNAME
    if not (src_root / "notebooks").is_dir():
        p.error(f"{relative(src_root)}/notebooks does not exist: run python -m book.execute --out {args.build}")
    shutil.copy2(BOOK_DIR / "intro.md", src_root / "intro.md")  # edits to these need no re-execution
    shutil.copytree(BOOK_DIR / "_static", src_root / "_static", dirs_exist_ok=True)  # jupyter-book adds its CSS
    (src_root / "status.md").write_text(status_markdown(toc_notebooks(), src_root))

    from jupyter_book.sphinx import build_sphinx  # what `jupyter-book build` runs, writing where we say

    if site.exists():
        shutil.rmtree(site)
    t0 = time.perf_counter()
    rc = build_sphinx(src_root, site, path_config=str(CONFIG_FILE), noconfig=True, builder="html",
                      confoverrides={"external_toc_path": TOC_FILE.as_posix(), "nitpicky": True,
                                     "latex_individualpages": False},
                      doctreedir=build_dir / "jupyter-book" / ".doctrees", freshenv=True,
                      warningiserror=True, keep_going=True)
    elapsed = time.perf_counter() - t0
    if rc != 0:
        print(f"error: jupyter-book build failed ({rc!r}) after {elapsed:.0f} s; the warnings above say why",
              file=sys.stderr)
        return 1
    print(f"\nSite built in {elapsed:.0f} s: {relative(site)}/index.html  (execution: {relative(site)}/status.html)")
    print(f"Serve it with:  python -m http.server -d {relative(site)} 8000   then open http://localhost:8000/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
