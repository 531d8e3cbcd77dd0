"""The built book: every notebook executed with the smoke parameters, the site rendered, and the
site working in a real browser without the network.

These tests read a build made by ``make book PARAMS=smoke`` and are given its folder with
``--book-build=_build/smoke`` (``make test`` does both). Without it they are skipped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest

import book
import site_checks as checks

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = [
    "01_similarity_preservation",
    "02_bayesian_estimator",
    "03_theorem1_proof",
    "04_training",
    "05_downstream_tasks",
    "06_tsne",
    "08_information_bottleneck",
    "09_posterior_collapse",
    "07_reproducibility",
    "10_soft_vq_investigation",
]
SMOKE_BUDGET_S = 420  # ten notebooks, every code path on tiny data: about 40 s each
SCREENSHOT_PAGE = "05_downstream_tasks"
SCREENSHOT_FILE = "screenshots/downstream_tasks.png"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def test_toc_lists_the_notebooks_in_order():
    """The toc (which book.execute follows) names exactly the book's notebooks, in order."""
    assert book.toc_notebooks() == NOTEBOOKS
    entries = book.toc_entries()
    assert entries[0] == "intro" and entries[-1] == "status", entries


def test_an_unknown_override_stops_the_run_before_anything_runs(tmp_path, monkeypatch, capsys):
    from book import execute

    (tmp_path / "params").mkdir()
    nb = nbformat.read(REPO_ROOT / "notebooks" / "02_bayesian_estimator.ipynb", as_version=4)
    nbformat.write(nb, tmp_path / "02_bayesian_estimator.ipynb")
    (tmp_path / "params" / "02_bayesian_estimator.yml").write_text("smoke:\n  no_such_parameter: 1\n")
    monkeypatch.setattr(execute, "NOTEBOOKS_DIR", tmp_path)
    out = tmp_path / "build"
    assert execute.main(["--params", "smoke", "--out", str(out), "--only", "02_bayesian_estimator"]) == 2
    assert "overrides 'no_such_parameter' in 'smoke'" in capsys.readouterr().err
    assert not out.exists(), "something ran"


def test_a_failing_notebook_is_recorded_and_the_rest_still_run(tmp_path, monkeypatch):
    """papermill's own record of each run, the injected-parameters cell folded, exit status 1."""
    from book import execute

    for name, code in (("fails", "raise ValueError('on purpose')"), ("runs", "print(param_set)")):
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                               "display_name": "Python 3"}})
        params = nbformat.v4.new_code_cell("param_set = 'default'\nresults_dir = 'r'\nruns_dir = 'r'")
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell(code)]
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    monkeypatch.setattr(execute, "NOTEBOOKS_DIR", tmp_path)
    monkeypatch.setattr(execute, "toc_notebooks", lambda: ["fails", "runs"])
    for key in execute.KERNEL_ENV:  # main() sets them in os.environ; undone after the test
        monkeypatch.delenv(key, raising=False)
    out = tmp_path / "build"
    assert execute.main(["--params", "smoke", "--out", str(out)]) == 1
    records = {name: nbformat.read(out / "src" / "notebooks" / f"{name}.ipynb", as_version=4)
               for name in ("fails", "runs")}
    assert records["fails"].metadata.papermill["exception"] is True
    assert records["runs"].metadata.papermill["exception"] is None
    assert records["runs"].metadata.papermill["parameters"]["param_set"] == "smoke"
    for nb in records.values():
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and "hide-input" in injected[0].metadata["tags"]


def test_status_page_from_papermill_metadata(tmp_path):
    """ok, failed (with its error), interrupted and not run, read from the executed notebooks."""
    from book.build_site import status_markdown

    (tmp_path / "notebooks").mkdir()
    params = {"param_set": "smoke", "results_dir": "nowhere", "runs_dir": "nowhere"}

    def executed(name, exception, end_time, outputs=()):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell("1/0", outputs=list(outputs))]
        nb.metadata["papermill"] = {"parameters": params, "start_time": "2026-01-01T10:00:00.1",
                                    "end_time": end_time, "duration": 2.5 if end_time else None,
                                    "exception": exception, "version": "2.7.0"}
        nbformat.write(nb, tmp_path / "notebooks" / f"{name}.ipynb")
    executed("a", None, "2026-01-01T10:00:02")
    executed("b", True, "2026-01-01T10:00:02",
             [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])])
    executed("c", None, None)
    text = status_markdown(["a", "b", "c", "d"], tmp_path)
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert rows["| {doc}`a <notebooks/a>`"].endswith("| 2.5 s | ok |")
    assert "| 2026-01-01 10:00:00 |" in rows["| {doc}`a <notebooks/a>`"]
    assert "**FAILED**: ZeroDivisionError\\: division by zero" in rows["| {doc}`b <notebooks/b>`"]
    assert rows["| {doc}`c <notebooks/c>`"].endswith("| **interrupted** |")
    assert rows["| `d`"].endswith("| not run |")
    assert "| papermill | `2.7.0` |" in text


def test_offline_site_drops_assets_from_outside_the_site():
    from book._ext.offline_site import strip_external_assets

    context = {"script_files": ["_static/a.js", "https://cdn.example/x.js", "//cdn.example/y.js",
                                "_static/sphinx-thebe.js", "http://localhost/z.js"],
               "css_files": ["_static/a.css", "https://cdn.example/y.css"]}
    strip_external_assets(None, "page", None, context, None)
    assert context == {"script_files": ["_static/a.js", "http://localhost/z.js"], "css_files": ["_static/a.css"]}


# ---------------------------------------------------------------------------------------------
# Execution: papermill's record in the executed notebooks (the nbval-equivalent validation)


@pytest.fixture(scope="session")
def papermill_records(book_build) -> dict:
    """metadata.papermill of every executed notebook of the build (missing ones left out)."""
    paths = {name: book_build / "src" / "notebooks" / f"{name}.ipynb" for name in NOTEBOOKS}
    return {name: nbformat.read(path, as_version=4).metadata.get("papermill", {})
            for name, path in paths.items() if path.is_file()}


@pytest.mark.book
def test_every_notebook_ran_ok_with_the_smoke_set(papermill_records):
    problems = []
    for name in NOTEBOOKS:
        rec = papermill_records.get(name)
        if rec is None:
            problems.append(f"{name}: not executed")
            continue
        if rec.get("exception") or rec.get("end_time") is None:
            problems.append(f"{name}: failed or interrupted (exception {rec.get('exception')}, "
                            f"end_time {rec.get('end_time')})")
        params = rec.get("parameters", {})
        if params.get("param_set") != "smoke" or "results_dir" not in params or "runs_dir" not in params:
            problems.append(f"{name}: injected parameters incomplete: {params}")
    assert not problems, "\n".join(problems)


@pytest.mark.book
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_executed_notebook_is_complete(book_build, name):
    """Every code cell ran (has an execution count), none raised, and the parameters were injected."""
    path = book_build / "src" / "notebooks" / f"{name}.ipynb"
    assert path.is_file(), f"{path} was not written"
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name} has no code cells"
    not_run = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.get("execution_count") is None]
    assert not not_run, f"{name}: code cells {not_run} were not executed"
    errors = [f"cell {i}: {o.get('ename')}: {o.get('evalue')}"
              for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{name} has error outputs:\n" + "\n".join(errors)
    injected = [c for c in code if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1, f"{name}: expected one injected-parameters cell, found {len(injected)}"
    assert "hide-input" in injected[0].metadata["tags"], f"{name}: the injected-parameters cell is not folded"
    for key in ("results_dir", "runs_dir", "param_set"):
        assert key in injected[0].source, f"{name}: {key} was not injected"
    assert nb.metadata.get("papermill", {}).get("parameters", {}).get("param_set") == "smoke"


@pytest.mark.book
def test_smoke_run_fits_its_budget(papermill_records):
    durations = {n: float(r.get("duration") or 0) for n, r in papermill_records.items()}
    total = sum(durations.values())
    detail = ", ".join(f"{n} {d:.0f} s" for n, d in sorted(durations.items(), key=lambda kv: -kv[1]))
    assert total < SMOKE_BUDGET_S, f"smoke run took {total:.0f} s in total (budget {SMOKE_BUDGET_S} s): {detail}"


# ---------------------------------------------------------------------------------------------
# The site


@pytest.fixture(scope="session")
def site(book_build) -> Path:
    site = book_build / book.SITE_DIRNAME
    assert site.is_dir(), f"{site} does not exist: the site was not built (python -m book.build_site)"
    return site


def _site_pages() -> list[str]:
    return ["index.html", "intro.html", "status.html"] + [f"notebooks/{n}.html" for n in NOTEBOOKS]


@pytest.mark.book
def test_site_has_every_page(site):
    missing = [p for p in _site_pages() if not (site / p).is_file()]
    assert not missing, f"pages missing from {site}: {missing}"


@pytest.mark.book
def test_status_page_lists_every_notebook(site):
    text = (site / "status.html").read_text()
    for name in NOTEBOOKS:
        assert name in text, f"status page does not mention {name}"
    assert "smoke" in text
    for label in ("Python", "PyTorch", "device", "git commit", "papermill"):
        assert label in text, f"status page has no {label}"
    assert "FAILED" not in text and "interrupted" not in text and "not run" not in text


@pytest.mark.book
def test_site_loads_nothing_from_outside(site):
    assert checks.external_resources(site) == []


@pytest.mark.book
def test_mathjax_is_served_by_the_site(site):
    assert (site / checks.MATHJAX_FILE).is_file()
    assert checks.mathjax_problems(site) == []
    intro = checks.parse_page(site / "intro.html")
    assert intro.math_elements > 0, "the intro has no equation for MathJax to render"


@pytest.mark.book
def test_colab_buttons_open_the_repository_notebooks(site):
    assert checks.colab_problems(site, book.CONFIG_FILE, NOTEBOOKS) == []
    for name in NOTEBOOKS:
        url = checks.colab_links(site / "notebooks" / f"{name}.html")[0]
        assert url.endswith(f"/blob/main/notebooks/{name}.ipynb"), url
        assert (REPO_ROOT / "notebooks" / f"{name}.ipynb").is_file(), \
            f"the Colab button of {name} opens notebooks/{name}.ipynb, which is not in the repository"


# ---------------------------------------------------------------------------------------------
# A real browser, offline


def _require_browser():
    problem = None
    if not Path(CHROMIUM).exists():
        problem = f"{CHROMIUM} not found: install Debian's chromium (make browser; never `playwright install`)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError as exc:
            problem = f"playwright is not importable: {exc}"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"{problem} (CI is set: the browser test must run)")
        pytest.skip(problem)


@contextlib.contextmanager
def _serve(directory: Path):
    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


_MATH_CHECK = r"""
async () => {
  const out = {math: document.querySelectorAll('.math').length, loaded: false};
  const leftover = /\\\(|\\\[|\$\$|\$[^$\n]*\\[A-Za-z]+[^$\n]*\$/;
  if (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise) {
    await window.MathJax.startup.promise;
    out.loaded = true;
    out.version = window.MathJax.version;
  }
  out.scripts = [...document.querySelectorAll('script[src]')].map(s => s.src).filter(s => /mathjax/i.test(s));
  out.unrendered = [...document.querySelectorAll('.math')]
      .filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.trim().slice(0, 80));
  out.mjxErrors = [...document.querySelectorAll('mjx-merror')]
      .map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 80));
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode(n) {
    return n.parentElement && n.parentElement.closest('pre, code, script, style, textarea, mjx-container')
        ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT; }});
  out.rawTex = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (leftover.test(n.textContent)) out.rawTex.push(n.textContent.trim().slice(0, 80));
  }
  return out;
}
"""

_IMAGE_CHECK = r"""
async () => {
  const imgs = [...document.images];
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener('load', r); i.addEventListener('error', r); setTimeout(r, 15000); })));
  return {count: imgs.length,
          broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.currentSrc || i.src)};
}
"""

# Every `pre` and `table` (folded cells opened) either fits, or scrolls in an overflow-x auto/scroll
# container; one whose content is cut off by an overflow-hidden box, or runs past the window, is clipped.
_CLIP_CHECK = r"""
() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const scrolls = e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX);
  const clips = e => ['hidden', 'clip'].includes(getComputedStyle(e).overflowX);
  const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
      + [...e.classList].slice(0, 3).map(c => '.' + c).join('');
  const where = e => { const parts = []; for (let n = e; n && n !== document.body && parts.length < 4;
      n = n.parentElement) parts.unshift(name(n)); return parts.join(' > '); };
  const clipped = [];
  let checked = 0;
  for (const el of document.querySelectorAll('pre, table')) {
    if (!el.getClientRects().length) continue;  // not displayed
    checked += 1;
    const text = (el.textContent || '').trim().split('\n')[0].slice(0, 60);
    if (el.scrollWidth > el.clientWidth + 1) {  // wider content: it must scroll, not be cut off
      if (scrolls(el)) continue;
      if (clips(el)) {
        clipped.push(`${where(el)}: content ${el.scrollWidth}px wide in ${el.clientWidth}px (${text})`);
        continue;
      }
    }  // the element, or its content spilling out of it, must fit the nearest box that clips or scrolls
    const right = el.getBoundingClientRect().left + Math.max(el.scrollWidth, el.getBoundingClientRect().width);
    let ok = false;
    for (let p = el.parentElement; p && p !== document.documentElement; p = p.parentElement) {
      if (scrolls(p)) { ok = true; break; }
      if (clips(p)) {
        const edge = p.getBoundingClientRect().right;
        if (right > edge + 1)
          clipped.push(`${where(el)}: ${Math.round(right - edge)}px cut off by ${name(p)} (${text})`);
        ok = true; break;
      }
    }
    const past = right - document.documentElement.clientWidth;
    if (!ok && past > 1) clipped.push(`${where(el)}: runs ${Math.round(past)}px past the window (${text})`);
  }
  return {checked, clipped};
}
"""


@pytest.mark.book
def test_site_in_a_browser_offline(book_build, site, tmp_path):
    """Every page in Chromium: equations typeset by the local MathJax, images load, no request
    leaves localhost, no console or page error, no code line or table clipped in a 1300-pixel
    window; screenshot of the downstream-tasks page."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    pages = [p.relative_to(site).as_posix() for p in checks.html_pages(site)]
    for expected in _site_pages():
        assert expected in pages, f"{expected} missing from the site"
    screenshot = book_build / SCREENSHOT_FILE
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.unlink(missing_ok=True)

    problems: list[str] = []
    blocked: list[str] = []
    seen: dict[str, dict] = {}

    def route(r):
        url = r.request.url
        parsed = urlparse(url)
        if parsed.scheme in ("data", "blob") or (parsed.hostname or "") in LOCAL_HOSTS:
            r.continue_()
        else:
            blocked.append(url)
            r.abort()

    with _serve(site) as base, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS,  # a fresh profile: user_data_dir above
            viewport={"width": 1300, "height": 900},
        )
        try:
            context.set_default_timeout(60_000)
            context.route("**/*", route)
            for rel in pages:
                page = context.new_page()
                here: list[str] = []
                page.on("console", lambda m, here=here: here.append(f"console {m.type}: {m.text}")
                        if m.type == "error" else None)
                page.on("pageerror", lambda e, here=here: here.append(f"page error: {e}"))
                page.on("response", lambda r, here=here: here.append(f"HTTP {r.status}: {r.url}")
                        if r.status >= 400 else None)
                page.on("requestfailed", lambda q, here=here: here.append(
                    f"request failed: {q.url} ({q.failure})")
                        if (urlparse(q.url).hostname or "") in LOCAL_HOSTS else None)
                n_blocked = len(blocked)
                page.goto(f"{base}/{rel}", wait_until="load")
                if rel == "index.html":  # jupyter-book's redirect to the root page
                    page.wait_for_url(f"{base}/intro.html")
                    page.wait_for_load_state("load")
                math = page.evaluate(_MATH_CHECK)
                images = page.evaluate(_IMAGE_CHECK)
                page.wait_for_load_state("networkidle")
                if rel == f"notebooks/{SCREENSHOT_PAGE}.html":
                    page.screenshot(path=str(screenshot), full_page=True)
                clip = page.evaluate(_CLIP_CHECK)  # after the screenshot: it opens the folded cells
                seen[rel] = {"math": math["math"], "images": images["count"], "mathjax": math.get("version"),
                             "pre_and_tables": clip["checked"]}
                for url in blocked[n_blocked:]:
                    here.append(f"request outside localhost blocked: {url}")
                if math["math"] and not math["loaded"]:
                    here.append(f"{math['math']} equation(s) but MathJax did not load")
                for src in math["scripts"]:
                    if (urlparse(src).hostname or "") not in LOCAL_HOSTS:
                        here.append(f"MathJax loaded from {src}, not localhost")
                here += [f"equation not rendered by MathJax: {t!r}" for t in math["unrendered"]]
                here += [f"MathJax error: {t!r}" for t in math["mjxErrors"]]
                here += [f"TeX left in the text: {t!r}" for t in math["rawTex"]]
                here += [f"image did not load: {src}" for src in images["broken"]]
                here += [f"clipped: {c}" for c in clip["clipped"]]
                problems += [f"{rel}: {p}" for p in here]
                page.close()
        finally:
            context.close()

    assert not problems, f"{len(problems)} problem(s) in the browser:\n" + "\n".join(problems)
    assert seen["intro.html"]["math"] > 0 and seen["intro.html"]["mathjax"], seen["intro.html"]
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000, f"no screenshot at {screenshot}"
    (book_build / "screenshots" / "pages.json").write_text(json.dumps(seen, indent=2))
