"""``run-tests.sh --help`` prints its usage and exits 0 without running
anything (issue 23)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.helpers import ROOT


@pytest.mark.subprocess
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_usage_and_runs_nothing(flag: str, tmp_path: object) -> None:
    # Without a virtualenv or services: --help must not need them.
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/bin:/bin"
    done = subprocess.run(
        ["bash", str(ROOT / "run-tests.sh"), flag], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "./run-tests.sh --fast" in done.stdout
    assert "--help" in done.stdout
    assert "==>" not in done.stderr  # no step of the toolchain ran
