"""The Celery app of an application: the warning about accepted content
names pickle only when pickle is accepted (issue 23, finding 21)."""

from __future__ import annotations

import logging

import pytest
from celery import Celery

from flask_notifications.worker.celery_app import warn_unsafe_serializers

LOGGER = "flask_notifications.worker.celery_app"


@pytest.mark.parametrize(
    ("accepted", "warned", "says_pickle"),
    [
        (["json"], False, False),
        (["application/json"], False, False),
        (["json", "yaml"], True, False),
        (["json", "pickle"], True, True),
        (["json", "application/x-python-serialize", "pickle"], True, True),
    ],
)
def test_the_warning_says_what_is_accepted(
    caplog: pytest.LogCaptureFixture, accepted: list[str], warned: bool, says_pickle: bool
) -> None:
    celery = Celery(set_as_current=False)
    celery.conf.accept_content = accepted
    caplog.set_level(logging.WARNING, logger=LOGGER)
    warn_unsafe_serializers(celery)
    messages = [record.getMessage() for record in caplog.records if record.name == LOGGER]
    assert bool(messages) is warned
    assert any("pickle" in message for message in messages) is says_pickle
