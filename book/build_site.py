"""Render the executed notebooks of a build into a static site with jupyter-book 1.

    python -m book.build_site --build BUILD

Writes the status page BUILD/src/status.md from BUILD/src/status.json, runs
``jupyter-book build BUILD/src --config _config.yml --toc _toc.yml --builder html -n -W --keep-going``
(jupyter-book never executes anything: the pages are papermill's executed copies), moves the site
to BUILD/html, checks it (no resource outside localhost, MathJax served locally, Colab links) and
prints where it is and how to serve it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from book import (
    CONFIG_FILE,
    NOTEBOOK_PREFIX,
    SITE_DIRNAME,
    SRC_DIRNAME,
    STATUS_JSON,
    STATUS_PAGE,
    TOC_FILE,
    display_path,
    toc_entries,
    toc_notebooks,
)
from book import checks
from book.execute import copy_static_pages

JB_WORKDIR = "jupyter-book"  # BUILD/jupyter-book/_build/{html,.doctrees}: jupyter-book's output
_MD_SPECIAL = set("\\`*_{}[]<>()#+-.!|$~&:")


def md_escape(text) -> str:
    """Text as literal markdown (no emphasis, math, links or table cells)."""
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in str(text)).replace("\n", " ")


def _duration(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def status_markdown(status: dict, notebooks: list[str], src_root: Path) -> str:
    """The status page: every notebook with its parameter set, duration and result, and the environment."""
    records = status.get("notebooks", {})
    lines = [
        "# Build status",
        "",
        "How every page of this build was executed (with papermill, by `python -m book.execute`).",
        "Each page shows the parameters it ran with in its `injected-parameters` cell.",
        "",
        "| notebook | parameter set | started (UTC) | duration | result |",
        "| --- | --- | --- | ---: | --- |",
    ]
    total = 0.0
    for name in notebooks:
        rec = records.get(name)
        exists = (src_root / NOTEBOOK_PREFIX / f"{name}.ipynb").is_file()
        page = f"{{doc}}`{name} <{NOTEBOOK_PREFIX}{name}>`" if exists else f"`{name}`"
        if rec is None:
            lines.append(f"| {page} | – | – | – | not run |")
            continue
        total += float(rec.get("duration_s") or 0)
        result = {"ok": "ok", "failed": "**FAILED**", "running": "**interrupted**",
                  "pending": "not run"}.get(rec.get("status"), md_escape(rec.get("status")))
        if rec.get("error"):
            result += ": " + md_escape(rec["error"])
        start = md_escape((rec.get("start") or "–").replace("+00:00", "").replace("T", " "))
        lines.append(f"| {page} | `{rec.get('param_set', '?')}` | {start} | "
                     f"{_duration(rec.get('duration_s'))} | {result} |")
    lines += ["", f"Total execution time: {_duration(total)}.", ""]

    env = status.get("environment", {})
    lines += ["## Environment", "", "Where the notebooks were executed.", "",
              "| what | value |", "| --- | --- |"]
    labels = [("python", "Python"), ("torch", "PyTorch"), ("cuda", "CUDA (torch build)"),
              ("device", "device"), ("platform", "platform"), ("papermill", "papermill"),
              ("jupyter_book", "jupyter-book"), ("git_commit", "git commit")]
    env = {**env, "jupyter_book": _jupyter_book_version()}
    for key, label in labels:
        if env.get(key) is not None:
            lines.append(f"| {label} | `{env[key]}` |")
    kernel_env = status.get("kernel_env", {})
    if kernel_env:
        lines.append("| kernel environment | " + ", ".join(f"`{k}={v}`" for k, v in kernel_env.items()) + " |")
    lines.append(f"| executed | {md_escape(status.get('updated', '–'))} |")
    lines.append(f"| site built | {md_escape(dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds'))} |")

    lines += ["", "## Parameters", ""]
    for name in notebooks:
        rec = records.get(name)
        if not rec:
            continue
        lines.append(f"**{name}** (`{rec.get('param_set')}`): "
                     + ", ".join(f"`{k} = {v!r}`" for k, v in rec.get("parameters", {}).items()))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _jupyter_book_version() -> str:
    try:
        from importlib.metadata import version

        return version("jupyter-book")
    except Exception:  # noqa: BLE001
        return "unknown"


def _jupyter_book_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter-book")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "jupyter_book.cli.main"]


def _run_filtered(cmd: list[str], cwd: Path) -> int:
    """Run jupyter-book, passing its output through except its closing "your book is in
    jupyter-book/_build/html" box: the site is moved to BUILD/html, and we say so ourselves."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", bufsize=1)
    held, skipping = [], False  # lines of a "=====" box, held until we know whose box it is
    for line in proc.stdout:
        if skipping:
            skipping = "=====" not in line
            continue
        if "The HTML pages are in" in line:
            continue
        if "Finished generating HTML for book" in line:
            held, skipping = [], True
            continue
        if held or "=====" in line:
            held.append(line)
            if len(held) <= 3:
                continue
        sys.stdout.write("".join(held) if held else line)
        sys.stdout.flush()
        held = []
    sys.stdout.write("".join(held))
    return proc.wait()


def build(args) -> int:
    build_dir = Path(args.build).resolve()
    src_root = build_dir / SRC_DIRNAME
    config, toc = Path(args.config).resolve(), Path(args.toc).resolve()
    status_file = src_root / STATUS_JSON
    if not status_file.is_file():
        print(f"error: {display_path(status_file)} does not exist: execute the notebooks first "
              f"(python -m book.execute --params ... --out {display_path(build_dir)})", file=sys.stderr)
        return 2
    status = json.loads(status_file.read_text())
    notebooks = toc_notebooks(toc)

    copy_static_pages(src_root)  # pick up edits to book/intro.md without re-executing
    (src_root / STATUS_PAGE).write_text(status_markdown(status, notebooks, src_root))

    missing = [d for d in toc_entries(toc)
               if not any((src_root / f"{d}{ext}").is_file() for ext in (".md", ".ipynb"))]
    if missing:
        print(f"error: the toc names pages that {display_path(src_root)} does not have: {', '.join(missing)}\n"
              f"(execute them: python -m book.execute --params ... --out {display_path(build_dir)})",
              file=sys.stderr)
        return 2

    workdir = build_dir / JB_WORKDIR
    cmd = _jupyter_book_cmd() + [
        "build", str(src_root), "--config", str(config), "--toc", str(toc),
        "--path-output", str(workdir), "--builder", "html", "--all", "-n", "-W", "--keep-going",
    ]
    if args.quiet:
        cmd.append("-q")
    print("$ " + " ".join(cmd[:1] + [display_path(c) if c.startswith("/") else c for c in cmd[1:]]), flush=True)
    t0 = time.perf_counter()
    rc = _run_filtered(cmd, cwd=build_dir)
    elapsed = time.perf_counter() - t0
    jb_html = workdir / "_build" / "html"
    if rc != 0 or not jb_html.is_dir():
        print(f"error: jupyter-book build failed (exit {rc}) after {elapsed:.0f} s; the warnings above say why",
              file=sys.stderr)
        return rc or 1

    site = build_dir / SITE_DIRNAME
    if site.exists():
        shutil.rmtree(site)
    shutil.move(str(jb_html), str(site))

    problems = (
        [f"external resource: {p}" for p in checks.external_resources(site)]
        + [f"MathJax: {p}" for p in checks.mathjax_problems(site)]
        + [f"Colab: {p}" for p in checks.colab_problems(site, config, notebooks)]
    )
    if problems:
        print("error: the site does not pass its checks:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1

    failed = [n for n, r in status.get("notebooks", {}).items() if r.get("status") != "ok"]
    rel = display_path(site)
    print(f"\nSite built in {elapsed:.0f} s: {rel}/index.html"
          + (f"  (notebooks not ok: {', '.join(failed)}; see {rel}/status.html)" if failed else ""))
    print(f"Serve it with:  python -m http.server -d {rel} 8000   then open http://localhost:8000/")
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m book.build_site", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", required=True, help="build folder written by book.execute, e.g. _build/smoke")
    p.add_argument("--config", default=str(CONFIG_FILE), help="jupyter-book config (default: _config.yml)")
    p.add_argument("--toc", default=str(TOC_FILE), help="table of contents (default: _toc.yml)")
    p.add_argument("-q", "--quiet", action="store_true", help="only jupyter-book's warnings")
    return p.parse_args(argv)


def main(argv=None) -> int:
    return build(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
