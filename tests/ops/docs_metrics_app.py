""":mod:`tests.apps.sse_app` with its metrics endpoint mounted as
docs/operations.rst shows, the snippet read from the docs verbatim: its
imports run at the top of this module, as they sit at the top of an
application's module, so before ``init_app``; its other lines run on the
application that ``create_app`` made. ``celery`` is the Celery app of one such
application, for ``celery -A tests.ops.docs_metrics_app:celery worker``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from flask import Flask

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.rst"


def wsgi_snippet() -> str:
    """The code block of docs/operations.rst after "mount it as a WSGI application:"."""
    after = OPERATIONS.read_text().split("mount it as a WSGI application:", 1)[1]
    block = after.split(".. code-block:: python", 1)[1].splitlines()[1:]
    lines: list[str] = []
    for line in block:
        if line.strip() and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines)).strip() + "\n"


SNIPPET = wsgi_snippet()
IMPORTS = "\n".join(line for line in SNIPPET.splitlines() if line.startswith(("from ", "import ")))
BODY = "\n".join(line for line in SNIPPET.splitlines() if line.strip() and not line.startswith(("from ", "import ")))

exec(IMPORTS)  # noqa: S102 - the docs' own lines, at the top of the module as in an application

from tests.apps.sse_app import create_app as _create_app  # noqa: E402 - after the docs' imports, on purpose


def create_app() -> Flask:
    app = _create_app()
    exec(BODY, globals(), {"app": app})  # noqa: S102 - the docs' own lines
    return app


def __getattr__(name: str) -> Any:
    if name == "celery":
        app = create_app()
        return app.extensions["notifications"].get_celery(app)
    raise AttributeError(name)
