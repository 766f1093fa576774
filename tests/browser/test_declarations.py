"""notifications.d.ts declares what notifications.js exports: TypeScript
(npm, tests/browser/tooling) checks a page that uses the client against it,
and every name the module exports is declared."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import missing

HERE = Path(__file__).resolve().parent
TSC = HERE / "tooling" / "node_modules" / ".bin" / "tsc"
STATIC = HERE.parent.parent / "flask_notifications" / "streaming" / "static"


@pytest.mark.subprocess
def test_a_typescript_page_type_checks_against_the_declarations(tmp_path: Path) -> None:
    if not TSC.exists():
        missing("TypeScript is not installed: run 'npm ci' in tests/browser/tooling")
    (tmp_path / "notifications.d.ts").write_text((STATIC / "notifications.d.ts").read_text())
    (tmp_path / "page.ts").write_text((HERE / "uses_the_client.ts").read_text())
    done = subprocess.run(
        [str(TSC), "--noEmit", "--strict", "--target", "es2022", "--module", "es2022", "--moduleResolution", "bundler"]
        + ["--lib", "es2022,dom", "page.ts"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_export_is_declared() -> None:
    code = (STATIC / "notifications.js").read_text()
    declarations = (STATIC / "notifications.d.ts").read_text()
    exported = set(re.findall(r"^export (?:async )?function (\w+)", code, re.MULTILINE))
    declared = set(re.findall(r"^export function (\w+)", declarations, re.MULTILINE))
    assert exported == declared == {"connect", "compareIds", "parseEventId", "formatEventId"}
