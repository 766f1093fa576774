"""docs/operations.rst and the Grafana dashboard name only exported metrics
(tests/test_metrics.py shows that every name of ``EXPORTED_NAMES`` is served)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from flask_notifications.ops.metrics import EXPORTED_NAMES

DOCS = Path(__file__).resolve().parents[2] / "docs"
NAME = re.compile(r"\bnotifications_[a-z_]+")
SUFFIXES = ("_bucket", "_count", "_sum")


def exported(name: str) -> bool:
    return name in EXPORTED_NAMES or any(
        name.endswith(suffix) and name.removesuffix(suffix) in EXPORTED_NAMES for suffix in SUFFIXES
    )


def test_every_metric_of_the_dashboard_is_exported() -> None:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    queried = {
        name for panel in dashboard["panels"] for target in panel["targets"] for name in NAME.findall(target["expr"])
    }
    assert queried and {name for name in queried if not exported(name)} == set()
    # It shows every metric there is.
    assert {name.removesuffix("_bucket") for name in queried} >= set(EXPORTED_NAMES)


def test_every_metric_named_in_the_operations_guide_is_exported() -> None:
    text = (DOCS / "operations.rst").read_text()
    named = set(NAME.findall(text)) - {"notifications_metrics"}
    assert named and {name for name in named if not exported(name)} == set()
    assert named >= set(EXPORTED_NAMES)
