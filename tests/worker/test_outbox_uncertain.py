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

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import sqlalchemy as sa
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


class Interrupted(BaseException):
    """What a ``gevent.Timeout`` or a killed greenlet raises in a send."""


class InterruptedWhileRecording(MemoryLedger):
    """Writes each send's record, and interrupts the send that waits for
    its reply, after the send handed its message to the broker."""

    def outbox_add_begin(self, entries: Mapping[str, str], due_ms: int) -> Callable[[], None]:
        self.outbox_add(entries, due_ms)

        def wait() -> None:
            raise Interrupted()

        return wait


def make_ext(**config: object) -> Notifications:
    app = Flask("uncertain")
    app.config.update(CELERY_BROKER_URL="memory://", NOTIFICATIONS_BACKEND="memory", **config)
    ext = Notifications(app)
    ext.create_hub("Uncertain").register_consumer(celery_task_name="tests.uncertain", pass_event=True)(
        lambda event: None
    )
    return ext


@pytest.fixture
def ext() -> Iterator[Notifications]:
    ext = make_ext(NOTIFICATIONS_LEDGER=LosesTheRecordsReply())
    yield ext
    ext.get_ledger(ext.runtime().app).close()


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


def test_a_keyed_send_interrupted_after_its_message_went_out_keeps_its_key_spent() -> None:
    ext = make_ext(NOTIFICATIONS_LEDGER=InterruptedWhileRecording())
    app = ext.runtime().app
    with app.app_context(), pytest.raises(Interrupted):
        ext.send(event("keyed"), idempotency_key="order-9")
    with app.app_context():
        retried = ext.send(event("keyed"), idempotency_key="order-9")
    assert retried.duplicate is True


def test_an_autocommit_engine_still_writes_the_record_in_a_transaction(tmp_path: Path) -> None:
    # An app's own engine may be set to autocommit. The ledger's writes
    # stay transactions: a record whose INSERT failed (here its reply is
    # lost after SQLite ran it) is rolled back, so "nothing was recorded"
    # (may_be_delivered False) is true, and the sweeper finds nothing.
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.sqlite3'}", isolation_level="AUTOCOMMIT")
    losing = {"on": False}

    @sa.event.listens_for(engine, "after_cursor_execute")
    def reply_lost(conn: object, cursor: object, statement: str, *args: object) -> None:
        if losing["on"] and statement.lstrip().upper().startswith("INSERT") and "outbox" in statement:
            losing["on"] = False
            raise sa.exc.OperationalError(statement, None, Exception("the reply was lost"))

    ext = make_ext(NOTIFICATIONS_LEDGER="sql", NOTIFICATIONS_LEDGER_URL=engine)
    app = ext.runtime().app
    ledger = ext.get_ledger(app)
    try:
        with app.app_context():
            ext.send(event("before"))
        assert ledger.outbox_size() == 1
        losing["on"] = True
        with app.app_context(), pytest.raises(OutboxUnavailableError) as failed:
            ext.send(event("lost"))
        assert not losing["on"], "the INSERT was not made"
        assert failed.value.may_be_delivered is False
        assert ledger.outbox_size() == 1
    finally:
        ledger.close()
        engine.dispose()
