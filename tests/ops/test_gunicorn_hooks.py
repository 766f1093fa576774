"""The documented gunicorn.conf.py hooks patch nothing twice (issue 23):
importing them in gunicorn's master imports neither redis nor ssl, so the
gevent worker's monkey-patching on boot raises no MonkeyPatchWarning (which
warns of RecursionError)."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import make_config
from tests.helpers.web_servers import Gunicorn

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_hooks_imports_no_ssl() -> None:
    code = (
        "import sys\n"
        "from flask_notifications.ops.gunicorn import child_exit, post_worker_init\n"
        "print(sorted({'ssl', 'redis', 'celery'} & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("worker_class", ["gevent", "flask_notifications.gunicorn.GeventWorker"])
def test_gevent_worker_boots_without_monkey_patch_warning(
    redis_url: str, unique: str, tmp_path: Path, worker_class: str
) -> None:
    config = make_config(redis_url, unique, NOTIFICATIONS_HEALTH_BLUEPRINT=True)
    web = Gunicorn(config, tmp_path, workers=1, worker_class=worker_class)
    try:
        with urllib.request.urlopen(f"{web.base}/health/live", timeout=20) as response:
            assert response.status == 200
    finally:
        web.stop()
    log = web.log.read_text()
    assert "Booting worker" in log
    assert "MonkeyPatchWarning" not in log, log
