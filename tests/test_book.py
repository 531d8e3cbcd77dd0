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
from book import checks

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
]
SMOKE_BUDGET_S = 300
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


# ---------------------------------------------------------------------------------------------
# Execution: status.json and the executed notebooks (the nbval-equivalent validation)


@pytest.fixture(scope="session")
def status(book_build) -> dict:
    return book.read_status(book_build)


@pytest.mark.book
def test_every_notebook_ran_ok_with_the_smoke_set(status):
    records = status["notebooks"]
    problems = []
    for name in NOTEBOOKS:
        rec = records.get(name)
        if rec is None:
            problems.append(f"{name}: not in status.json")
            continue
        if rec.get("status") != "ok":
            problems.append(f"{name}: {rec.get('status')} {rec.get('error') or ''}".rstrip())
        if rec.get("param_set") != "smoke":
            problems.append(f"{name}: executed with parameter set {rec.get('param_set')!r}, not 'smoke'")
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
    for key in ("results_dir", "runs_dir", "param_set"):
        assert key in injected[0].source, f"{name}: {key} was not injected"
    assert nb.metadata.get("papermill", {}).get("parameters", {}).get("param_set") == "smoke"


@pytest.mark.book
def test_smoke_run_fits_its_budget(status):
    durations = {n: float(r.get("duration_s") or 0) for n, r in status["notebooks"].items() if n in NOTEBOOKS}
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
    for label in ("Python", "PyTorch", "device", "git commit"):
        assert label in text, f"status page has no {label}"


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


@pytest.mark.book
def test_site_in_a_browser_offline(book_build, site, tmp_path):
    """Every page in Chromium: equations typeset by the local MathJax, images load, no request
    leaves localhost, no console or page error; screenshot of the downstream-tasks page."""
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
            viewport={"width": 1280, "height": 900},
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
                seen[rel] = {"math": math["math"], "images": images["count"], "mathjax": math.get("version")}
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
                problems += [f"{rel}: {p}" for p in here]
                page.close()
        finally:
            context.close()

    assert not problems, f"{len(problems)} problem(s) in the browser:\n" + "\n".join(problems)
    assert seen["intro.html"]["math"] > 0 and seen["intro.html"]["mathjax"], seen["intro.html"]
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000, f"no screenshot at {screenshot}"
    (book_build / "screenshots" / "pages.json").write_text(json.dumps(seen, indent=2))
