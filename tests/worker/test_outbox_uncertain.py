"""A record whose write may have been made although the ledger reported a
failure (its reply was lost): the send may be delivered, whatever the
ledger, so its message goes out, the error says so, and an idempotency key
stays spent.

The ledger is the in-process one, made to lose the reply of the record it
has just written, as a ledger that died or went silent after the write
does; the broker is Celery's in-memory transport. The Redis ledger's own
cases (a silent server) are in test_outbox_unrecorded.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest
from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.errors import BackendError, OutboxUnavailableError
from flask_notifications.ledger.memory import MemoryLedger


class LosesTheRecordsReply(MemoryLedger):
    """Writes each send's record, then fails as if its reply was lost."""

    def outbox_add(self, entries: Mapping[str, str], due_ms: int, *, remove: str | None = None) -> None:
        super().outbox_add(entries, due_ms, remove=remove)
        if remove is None and any(entry_id.startswith("d:") for entry_id in entries):
            raise BackendError("the reply to the record was lost")


@pytest.fixture
def ext() -> Iterator[Notifications]:
    app = Flask("uncertain")
    app.config.update(
        CELERY_BROKER_URL="memory://",
        NOTIFICATIONS_BACKEND="memory",
        NOTIFICATIONS_LEDGER=LosesTheRecordsReply(),
    )
    ext = Notifications(app)
    ext.create_hub("Uncertain").register_consumer(celery_task_name="tests.uncertain", pass_event=True)(
        lambda event: None
    )
    yield ext
    ext.get_ledger(app).close()


def event(title: str) -> Event:
    return Event(None, "uncertain", title, "body")


def test_a_send_whose_record_may_exist_goes_out_and_says_it_may_be_delivered(ext: Notifications) -> None:
    app = ext.runtime().app
    with app.app_context(), pytest.raises(OutboxUnavailableError, match="may deliver twice") as failed:
        ext.send(event("one"))
    assert failed.value.may_be_delivered is True
    ledger = ext.get_ledger(app)
    # The record is there: the sweeper would deliver it had the broker lost
    # the message, and its dispatch's claim makes the two one delivery.
    assert ledger.outbox_size() == 1
    with app.app_context(), pytest.raises(OutboxUnavailableError) as many:
        ext.send_many([event("a"), event("b")])
    assert many.value.may_be_delivered is True
    assert ledger.outbox_size() == 3


def test_a_keyed_send_that_may_be_delivered_keeps_its_key_spent(ext: Notifications) -> None:
    app = ext.runtime().app
    with app.app_context(), pytest.raises(OutboxUnavailableError) as failed:
        ext.send(event("keyed"), idempotency_key="order-7")
    assert failed.value.may_be_delivered is True
    # The caller retries with the key, as keys are for: the event may have
    # gone out, so the retry is a duplicate and sends nothing.
    with app.app_context():
        retried = ext.send(event("keyed"), idempotency_key="order-7")
    assert retried.duplicate is True
    assert retried.task_id is None
