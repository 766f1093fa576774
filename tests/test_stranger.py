"""What a newcomer following the documentation ran into, as failing tests.

Each test reproduces a library or packaging problem found by following the
README, docs/installation.rst and the other guides as printed; it is marked
``xfail(strict=True)`` until the problem is fixed, so the fix must remove the
marker.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: What ``python -m build`` needs from a clone.
SOURCES = ("pyproject.toml", "setup.py", "README.rst", "LICENSE", "flask_notifications")


@pytest.mark.server  # fetches the build backend from the package index
@pytest.mark.xfail(
    strict=True,
    reason=(
        "pyproject.toml gives project.license as a TOML table and a License classifier; the setuptools that "
        "`python -m build` installs warns that both are deprecated and that such builds stop being supported "
        "after 2027-02-18"
    ),
)
def test_the_documented_build_gives_no_setuptools_deprecation_warning(tmp_path: Path) -> None:
    """docs/installation.rst: ``python -m build`` in a clone. The build
    backend it fetches must not warn that this project's metadata will stop
    building."""
    src = tmp_path / "clone"
    src.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, src / name)
    done = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    warnings = [line.strip() for line in output.splitlines() if "deprecated" in line.lower()]
    assert warnings == [], warnings
