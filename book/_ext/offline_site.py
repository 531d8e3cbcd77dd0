"""Sphinx extension: a site that makes no request outside its own server.

jupyter-book always loads sphinx-thebe, which writes the unpkg.com URL of thebe into every page
(fetched only when a reader launches thebe, which this book does not offer), and myst-nb or the
theme may add CDN scripts (require.js for ipywidgets, analytics). This drops every script or
stylesheet whose URL leaves the site, and thebe's loader, from every page. MathJax comes from
sphinx-mathjax-offline (``_static/mathjax``). Anything dropped other than thebe's loader is also
reported as a warning (so a ``-W`` build fails): a feature that needs a CDN needs a decision.
"""

from __future__ import annotations

from urllib.parse import urlparse

from sphinx.util import logging

logger = logging.getLogger(__name__)
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def _external(url) -> bool:
    url = str(url or "").strip()
    if url.startswith("//"):
        return True
    parsed = urlparse(url)
    return parsed.scheme in ("http", "https") and (parsed.hostname or "") not in LOCAL_HOSTS


def _keep_script(js) -> bool:
    filename = str(getattr(js, "filename", js) or "")
    attributes = getattr(js, "attributes", {}) or {}
    body = attributes.get("body", "") or ""
    if "sphinx-thebe" in filename or "THEBE_JS_URL" in body:  # thebe is not offered: no launcher
        return False
    return not _external(filename)


def strip_external_assets(app, pagename, templatename, context, doctree):
    dropped = []
    if "script_files" in context:
        kept = [js for js in context["script_files"] if _keep_script(js)]
        dropped += [str(getattr(js, "filename", js)) for js in context["script_files"]
                    if js not in kept and _external(getattr(js, "filename", js))]
        context["script_files"] = kept
    if "css_files" in context:
        kept = [css for css in context["css_files"] if not _external(getattr(css, "filename", css))]
        dropped += [str(getattr(css, "filename", css)) for css in context["css_files"] if css not in kept]
        context["css_files"] = kept
    for url in dropped:
        logger.warning(f"[offline_site] {pagename}: dropped {url}, which would load from outside the site",
                       location=pagename)


def setup(app):
    # late, after myst-nb and the theme have added their per-page assets
    app.connect("html-page-context", strip_external_assets, priority=999)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
