"""The documentation covers what the code has."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest

from flask_notifications import __all__ as public_names
from flask_notifications.config import DEFAULTS

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_config_key_is_documented_with_its_default() -> None:
    text = (DOCS / "config.rst").read_text()
    for key in DEFAULTS:
        entry = re.search(rf"^``{key}``\n((?:    .*\n|\n)+)", text, re.MULTILINE)
        assert entry is not None, f"{key} is not documented in docs/config.rst"
        assert "Default:" in entry.group(1), f"docs/config.rst does not give the default of {key}"


@pytest.mark.parametrize(
    "page",
    [
        "installation",
        "usage",
        "architecture",
        "config",
        "consumers",
        "inbox",
        "client",
        "api",
        "signals",
        "cli",
        "deployment",
        "security",
        "performance",
        "reliability",
        "migrating",
        "changes",
        "contributing",
        "license",
    ],
)
def test_every_section_is_in_the_toctree(page: str) -> None:
    assert (DOCS / f"{page}.rst").exists()
    assert f"\n   {page}\n" in (DOCS / "index.rst").read_text()


def test_every_public_name_is_in_the_api_reference() -> None:
    api = (DOCS / "api.rst").read_text()
    modules = set(re.findall(r"automodule:: (flask_notifications[\w.]*)", api))
    documented = " ".join(re.findall(r":members: (.*)", api))
    for name in public_names:
        obj = getattr(__import__("flask_notifications"), name)
        module = getattr(obj, "__module__", None) if not name.startswith("current_") else "flask_notifications.state"
        if isinstance(obj, types.ModuleType):  # documented on a page of its own
            assert f"automodule:: {obj.__name__}" in "".join(page.read_text() for page in DOCS.glob("*.rst")), name
            continue
        assert module in modules, f"{name}'s module {module} has no automodule in docs/api.rst"
        restricted = re.search(rf"automodule:: {re.escape(module)}\n   :members: (.*)", api)
        assert restricted is None or name in documented or name == "current_notifications", name
    assert "py:data:: flask_notifications.state.current_notifications" in api


def test_the_docs_extra_installs_what_every_api_page_imports() -> None:
    """``pip install '.[docs]'`` builds every page: the extras whose modules
    the API reference documents are in the ``docs`` extra (without SQLAlchemy
    the inbox pages built empty, with autodoc warnings)."""
    import tomllib

    extras = tomllib.loads((DOCS.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    docs = " ".join(extras["docs"])
    included = set(re.findall(r"Flask-Notifications\[([\w,]+)\]", docs)[0].split(",")) if "[" in docs else set()
    needed = {"mail", "metrics", "inbox", "webpush", "apprise"}
    assert needed <= included, f"the docs extra lacks {sorted(needed - included)}"


def test_no_install_hint_names_a_package_index_that_does_not_have_it() -> None:
    """Flask-Notifications is installed from a clone (``pip install '.[inbox]'``):
    ``pip install 'Flask-Notifications[inbox]'`` fails with "No matching
    distribution" (issue 23), in the docs and in the errors' hints alike."""
    root = DOCS.parent
    places = [*DOCS.glob("*.rst"), root / "README.rst", *root.joinpath("examples").rglob("*.rst")]
    places += list(root.joinpath("flask_notifications").rglob("*.py"))
    found = [str(path) for path in places if re.search(r"install\W+.?Flask-Notifications\[", path.read_text())]
    assert found == []
