"""Static checks of a built site for tests/test_book.py: nothing loads from outside localhost,
MathJax is served from the site itself, and the Colab buttons open the notebooks in the repository.

The build itself fails on a script or stylesheet from outside the site (book/_ext/offline_site.py
warns, and the build runs with -W); these look at everything else a page could fetch, and the
browser test checks the same at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlparse

import yaml

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
#: <link rel=...> values that make the browser fetch the href.
FETCHING_RELS = {"stylesheet", "preload", "prefetch", "preconnect", "dns-prefetch", "icon",
                 "shortcut", "apple-touch-icon", "modulepreload", "manifest", "prerender"}
MATHJAX_FILE = "_static/mathjax/tex-chtml.js"
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])([^'")\s]+)""")


def is_external(url: str) -> bool:
    """True if fetching ``url`` from a page served on localhost would leave the machine."""
    url = url.strip()
    if url.startswith("//"):
        url = "https:" + url
    parsed = urlparse(url)
    if parsed.scheme in ("", "data", "blob", "about", "javascript", "mailto"):
        return False
    if parsed.scheme in ("http", "https", "ws", "wss", "ftp"):
        return (parsed.hostname or "") not in LOCAL_HOSTS
    return True  # any other scheme is suspicious


@dataclass
class Page:
    path: Path
    resources: list = field(default_factory=list)  # (tag, url) the browser fetches on load
    links: list = field(default_factory=list)  # <a href>
    inline_scripts: list = field(default_factory=list)
    math_elements: int = 0
    styles: list = field(default_factory=list)  # inline CSS (style attributes and <style> bodies)


class _Parser(HTMLParser):
    def __init__(self, page: Page):
        super().__init__(convert_charrefs=True)
        self.page = page
        self._in = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        res = self.page.resources
        if tag == "script":
            if a.get("src"):
                res.append(("script", a["src"]))
            else:
                self._in = "script"
                self.page.inline_scripts.append("")
        elif tag == "link" and a.get("href"):
            rels = set(a.get("rel", "").lower().split())
            if rels & FETCHING_RELS:
                res.append((f"link rel={a.get('rel')}", a["href"]))
        elif tag in ("img", "iframe", "embed", "source", "video", "audio", "track", "input") and a.get("src"):
            res.append((tag, a["src"]))
        elif tag == "object" and a.get("data"):
            res.append((tag, a["data"]))
        elif tag == "style":
            self._in = "style"
            self.page.styles.append("")
        if tag in ("img", "source") and a.get("srcset"):
            for part in a["srcset"].split(","):
                if part.strip():
                    res.append((f"{tag} srcset", part.strip().split()[0]))
        if tag == "video" and a.get("poster"):
            res.append(("video poster", a["poster"]))
        if a.get("style"):
            self.page.styles.append(a["style"])
        if tag == "a" and a.get("href"):
            self.page.links.append(a["href"])
        if "math" in a.get("class", "").split():
            self.page.math_elements += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._in = None

    def handle_data(self, data):
        if self._in == "script":
            self.page.inline_scripts[-1] += data
        elif self._in == "style":
            self.page.styles[-1] += data


def parse_page(path: Path) -> Page:
    page = Page(Path(path))
    _Parser(page).feed(Path(path).read_text(encoding="utf-8", errors="replace"))
    return page


def html_pages(site: Path) -> list[Path]:
    """Every HTML page of the site (not the copies of sources or static assets)."""
    site = Path(site)
    return sorted(p for p in site.rglob("*.html")
                  if not any(part in ("_static", "_sources", "_images") for part in p.relative_to(site).parts))


def external_resources(site: Path) -> list[str]:
    """Every URL outside localhost that a page or a stylesheet of the site would fetch."""
    site = Path(site)
    found = []
    for path in html_pages(site):
        page = parse_page(path)
        rel = path.relative_to(site).as_posix()
        for tag, url in page.resources:
            if is_external(url):
                found.append(f"{rel}: <{tag}> {url}")
        for css in page.styles:
            for url in CSS_URL.findall(css):
                if is_external(url):
                    found.append(f"{rel}: inline style url {url}")
        for script in page.inline_scripts:
            # e.g. a loader that injects a CDN script; data URLs in JSON blobs are fine
            for url in re.findall(r"""['"]((?:https?:)?//[^'"\s]+\.(?:js|css|woff2?|ttf|otf))['"]""", script):
                if is_external(url):
                    found.append(f"{rel}: inline script loads {url}")
    for css in site.rglob("*.css"):
        text = css.read_text(encoding="utf-8", errors="replace")
        for url in CSS_URL.findall(text):
            if is_external(url):
                found.append(f"{css.relative_to(site).as_posix()}: css url {url}")
    return found


def mathjax_problems(site: Path) -> list[str]:
    """Pages with equations must load MathJax 3 from the site's _static and configure it for myst."""
    site = Path(site)
    problems = []
    if not (site / MATHJAX_FILE).is_file():
        problems.append(f"{MATHJAX_FILE} is missing from the site")
    for path in html_pages(site):
        page = parse_page(path)
        if not page.math_elements:
            continue
        rel = path.relative_to(site).as_posix()
        srcs = [url for tag, url in page.resources if tag == "script" and "mathjax" in url.lower()]
        if not srcs:
            problems.append(f"{rel}: {page.math_elements} equation(s) but no MathJax script")
            continue
        for src in srcs:
            target = urlparse(urljoin(rel, src)).path.lstrip("/")
            if is_external(src) or not (site / target).is_file():
                problems.append(f"{rel}: MathJax from {src}, not the site's {MATHJAX_FILE}")
        config = " ".join(s for s in page.inline_scripts if "MathJax" in s)
        if not re.search(r"processHtmlClass[\"']?\s*:\s*[\"'][^\"']*\bmath\b", config):
            problems.append(f"{rel}: no MathJax 3 config that processes myst's .math elements")
    return problems


def colab_url(config_file: Path, source_path: str) -> str:
    """The Colab link the book's config gives to the page whose source is ``source_path``."""
    config = yaml.safe_load(Path(config_file).read_text())
    repo = config["repository"]
    org_repo = urlparse(repo["url"]).path.strip("/")
    prefix = (repo.get("path_to_book") or "").strip("/")
    path = f"{prefix}/{source_path}" if prefix else source_path
    base = config["launch_buttons"]["colab_url"].rstrip("/")
    return f"{base}/github/{org_repo}/blob/{repo.get('branch', 'main')}/{path}"


def colab_links(page_path: Path) -> list[str]:
    return [u for u in parse_page(page_path).links if u.startswith("https://colab.research.google.com/")]


def colab_problems(site: Path, config_file: Path, notebooks: list[str]) -> list[str]:
    problems = []
    for name in notebooks:
        page = Path(site) / "notebooks" / f"{name}.html"
        if not page.is_file():
            problems.append(f"notebooks/{name}.html is missing")
            continue
        want = colab_url(config_file, f"notebooks/{name}.ipynb")
        links = colab_links(page)
        # the theme's launch button, and any "open in Colab" link the notebook has itself
        if not links or any(link != want for link in links):
            problems.append(f"notebooks/{name}.html: Colab link(s) {links}, expected {want}")
    return problems
