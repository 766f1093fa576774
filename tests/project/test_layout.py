"""The package's layout holds: no import cycle, each module importable on its
own in a fresh interpreter, and no library module past the size at which it
usually holds two concerns."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "flask_notifications"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "versions" in path.parts:  # Alembic revisions are loaded by Alembic
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _top_level_imports(name: str, path: Path) -> set[str]:
    """The package modules ``name`` imports when it is imported: the imports at
    module level, outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If):
                if "TYPE_CHECKING" in ast.unparse(node.test):
                    visit(node.orelse)
                    continue
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    origin = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                for alias in node.names:
                    candidate = f"{origin}.{alias.name}"
                    found.add(candidate if candidate in MODULES else origin)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)

    visit(tree.body)
    graph = {module for module in found if module in MODULES and module != name}
    # Importing a submodule imports its packages first.
    for module in list(graph):
        parts = module.split(".")
        graph.update(".".join(parts[:i]) for i in range(2, len(parts)) if ".".join(parts[:i]) != name)
    return graph


def test_no_import_cycle() -> None:
    graph = {name: _top_level_imports(name, path) for name, path in MODULES.items()}
    # A package's own __init__ importing its submodules is no cycle: the
    # submodule's import of the package finds it partly initialised, by design.
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                walk(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert cycles == [], "\n".join(" -> ".join(cycle) for cycle in cycles)


#: Run in a subprocess: warm the third-party libraries once, then fork one
#: child per module, which imports that module before anything else of the
#: package, as a fresh interpreter would, at a fraction of the cost.
_FORK_EACH = """
import importlib, os, sys
for dep in sys.argv[2:]:
    try:
        importlib.import_module(dep)
    except ImportError:
        pass
assert not any(name.startswith("flask_notifications") for name in sys.modules)
failed = 0
for name in sys.argv[1].split(","):
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            sys.stderr.write(f"{name}: {exc!r}\\n")
            os._exit(1)
        os._exit(0)
    failed += os.waitpid(pid, 0)[1] != 0
sys.exit(1 if failed else 0)
"""
_DEPENDENCIES = [
    "flask",
    "werkzeug",
    "blinker",
    "celery",
    "kombu",
    "flask_celeryext",
    "redis",
    "sqlalchemy",
    "itsdangerous",
    "click",
    "gevent",
    "prometheus_client",
    "flask_mail",
    "amqp",
]


@pytest.mark.subprocess
def test_each_module_imports_first_in_a_fresh_interpreter() -> None:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", _FORK_EACH, ",".join(MODULES), *_DEPENDENCIES],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_library_module_holds_two_concerns(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= LIMIT.get(name, 550), f"{name} has {lines} lines"


#: Modules still over the limit, each with its reason; the number is a ceiling.
LIMIT: dict[str, int] = {
    # Over the limit, to split next: the outage and loss announcements leave fanout.py.
    "flask_notifications.streaming.fanout": 610,
}
