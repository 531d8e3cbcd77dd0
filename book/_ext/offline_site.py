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


def _external(url: str) -> bool:
    parsed = urlparse(url)
    return url.startswith("//") or parsed.scheme in ("http", "https") and parsed.hostname not in LOCAL_HOSTS


def strip_external_assets(app, pagename, templatename, context, doctree):
    for key in ("script_files", "css_files"):
        kept = []
        for asset in context.get(key, []):
            url = str(getattr(asset, "filename", asset) or "").strip()
            body = (getattr(asset, "attributes", None) or {}).get("body") or ""
            if "sphinx-thebe" in url or "THEBE_JS_URL" in body:  # thebe is not offered: no launcher
                continue
            if _external(url):
                logger.warning(f"[offline_site] {pagename}: dropped {url}, which would load from outside the site",
                               location=pagename)
                continue
            kept.append(asset)
        if key in context:
            context[key] = kept


def setup(app):
    # late, after myst-nb and the theme have added their per-page assets
    app.connect("html-page-context", strip_external_assets, priority=999)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
