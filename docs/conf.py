"""Sphinx configuration of the Flask-Notifications documentation."""

from __future__ import annotations

import importlib.metadata
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "Flask-Notifications"
author = "Flask-Notifications contributors"
copyright = "2015 CERN; 2026 Flask-Notifications contributors"
release = importlib.import_module("flask_notifications").__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]
exclude_patterns = ["_build"]
templates_path: list[str] = []
html_theme = "alabaster"
html_title = f"Flask-Notifications {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Intersphinx needs the network; the build must work offline, so links to
# other projects' docs are plain text.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

# Keep the build reproducible and warning-free: -W turns warnings into errors.
suppress_warnings: list[str] = []


def _skip_proxies(app: object, what: str, name: str, obj: object, skip: bool, options: object) -> bool | None:
    # current_notifications is a LocalProxy: reading it needs an app context,
    # so autodoc cannot introspect it. api.rst documents it by hand.
    from werkzeug.local import LocalProxy

    if isinstance(obj, LocalProxy):
        return True
    return None


def setup(app: object) -> None:
    app.connect("autodoc-skip-member", _skip_proxies)  # type: ignore[attr-defined]
