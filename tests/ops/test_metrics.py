"""The Prometheus metrics, scraped over HTTP from a real server while a real
Celery worker delivers, and parsed with prometheus_client's own parser.

The web server and the worker run in this process, so they share one
registry (tests/reliability/test_metrics_multiprocess.py covers several
processes). The metrics are process-wide, so unlabelled ones are compared
before and after, and labelled ones carry this test's own hub and consumer
names.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from flask_notifications import Event, Notifications
from flask_notifications.consumers.push_consumer import PushConsumer
from flask_notifications.errors import InvalidEventError
from flask_notifications.filters.with_event_type import WithEventType
from flask_notifications.ops.metrics import EXPORTED_NAMES, OTHER
from tests.helpers import WorkerFactory, free_port, wait_for
from tests.helpers.metrics import Samples, names, scrape, value
from tests.helpers.sse_client import SSEClient

pytestmark = [pytest.mark.redis]


@pytest.fixture
def app(app: Flask) -> Flask:
    app.config.update(
        NOTIFICATIONS_METRICS=True,
        NOTIFICATIONS_METRICS_MAX_HUBS=2,
        NOTIFICATIONS_SSE_BLUEPRINT=True,
        NOTIFICATIONS_SSE_PUBLIC=True,
        NOTIFICATIONS_MAX_RETRIES=1,
        NOTIFICATIONS_MAX_EVENT_SIZE=4096,
        # The development server notices a client left when it next writes.
        NOTIFICATIONS_SSE_HEARTBEAT=0.2,
    )
    return app


@pytest.fixture
def base(app: Flask, notifications: Notifications) -> Iterator[str]:
    """The app served over real HTTP (the threaded development server)."""
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    notifications.runtime(app).close_streams()
    server.shutdown()
    server.server_close()


def event(kind: str, seq: int) -> Event:
    return Event(None, kind, f"{kind} {seq}", "body")


def test_metrics_of_streams_sends_and_consumers(
    app: Flask,
    notifications: Notifications,
    base: str,
    celery_worker: WorkerFactory,
    unique: str,
) -> None:
    news = notifications.create_hub(f"news-{unique}").filter_by(WithEventType("news"))
    news.register_consumer(PushConsumer(None, news.hub_id, name=f"{unique}.push"))
    flaky = notifications.create_hub(f"flaky-{unique}").filter_by(WithEventType("flaky"))

    @flaky.register_consumer(celery_task_name=f"{unique}.flaky")
    def fail(event: Event) -> None:
        raise RuntimeError("always")

    # Past NOTIFICATIONS_METRICS_MAX_HUBS: counted under hub="other".
    third = notifications.create_hub(f"third-{unique}").filter_by(WithEventType("third"))
    seen_third: list[Event] = []
    third.register_consumer(seen_third.append, celery_task_name=f"{unique}.third")

    before = scrape(base + "/metrics")

    # A message waiting in the queue, before any worker runs.
    notifications.send(event("news", 0))
    waiting = scrape(base + "/metrics")
    assert value(waiting, "notifications_celery_queue_messages", queue=unique) == 1

    with SSEClient(f"{base}/notifications/{news.hub_id}/events") as stream:
        assert stream.status == 200
        wait_for(lambda: value(scrape(base + "/metrics"), "notifications_streams_open", hub=news.hub_id) == 1)
        # One at a time, so the redelivery below runs after the first run.
        with celery_worker(concurrency=1):
            for seq in range(1, 5):
                notifications.send(event("news", seq))
            notifications.send(event("flaky", 0))
            notifications.send(event("third", 0))
            received = stream.take(5)
            wait_for(lambda: notifications.dead_letters() and seen_third)
            # A redelivery of a task that already ran is skipped.
            redelivered = event("news", 99)
            push = notifications.celery.tasks[f"{unique}.push"]
            for _ in range(2):
                push.apply_async(args=(news.hub_id, redelivered.to_json()))
            wait_for(
                lambda: (
                    value(
                        scrape(base + "/metrics"),
                        "notifications_consumer_runs_total",
                        hub=news.hub_id,
                        consumer=f"{unique}.push",
                        outcome="duplicate",
                    )
                    == 1
                )
            )
        assert [json_type(e.data) for e in received] == ["news"] * 5
        with pytest.raises(InvalidEventError):
            notifications.send(Event(None, "news", "too big", "x" * 5000))
        assert _status(base + "/notifications/no-such-hub/events") == 404
        assert _status(base + f"/notifications/{news.hub_id}/events", {"Last-Event-ID": "garbage"}) == 400
        with SSEClient(f"{base}/notifications/{news.hub_id}/events", last_event_id="0-0") as replay:
            replay.take(6)
        after = scrape(base + "/metrics")

    # Every documented metric is served (labelled ones once they have a value).
    assert set(EXPORTED_NAMES) <= _families(after)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    push_runs = {"hub": news.hub_id, "consumer": f"{unique}.push"}
    assert grew("notifications_events_sent_total") == 7
    assert grew("notifications_hub_events_total", hub=news.hub_id) == 5
    assert grew("notifications_hub_events_total", hub=flaky.hub_id) == 1
    assert value(after, "notifications_hub_events_total", hub=third.hub_id) == 0
    assert grew("notifications_hub_events_total", hub=OTHER) >= 1
    assert grew("notifications_send_failures_total", error="InvalidEventError") == 1
    assert value(after, "notifications_consumer_runs_total", **push_runs, outcome="consumed") == 6
    assert value(after, "notifications_consumer_runs_total", **push_runs, outcome="duplicate") == 1
    flaky_runs = {"hub": flaky.hub_id, "consumer": f"{unique}.flaky"}
    assert value(after, "notifications_consumer_runs_total", **flaky_runs, outcome="retried") == 1
    assert value(after, "notifications_consumer_runs_total", **flaky_runs, outcome="dead-lettered") == 1
    assert value(after, "notifications_consumer_runs_total", hub=OTHER, consumer=OTHER, outcome="consumed") >= 1
    assert grew("notifications_dead_lettered_total") == 1
    assert value(after, "notifications_dead_letters") == 1
    assert value(after, "notifications_celery_queue_messages", queue=unique) == 0
    # Sent through send(): one latency each, the manual redeliveries carry none.
    assert value(after, "notifications_send_to_consumer_seconds_count", consumer=f"{unique}.push") == 5
    assert value(after, "notifications_send_to_consumer_seconds_count", consumer=f"{unique}.flaky") == 1
    assert grew("notifications_backend_publish_seconds_count") == 6
    assert grew("notifications_streams_opened_total") == 2
    assert grew("notifications_streams_refused_total", status="404") == 1
    assert grew("notifications_streams_refused_total", status="400") == 1
    assert grew("notifications_stream_events_total") >= 6
    assert grew("notifications_stream_deliveries_total") >= 6
    assert grew("notifications_stream_replayed_events_total") == 6
    # Label values: this test's hubs, and "other" past the bound.
    hubs = {dict(labels).get("hub") for name, labels in after if name == "notifications_hub_events_total"}
    assert third.hub_id not in hubs
    wait_for(lambda: value(scrape(base + "/metrics"), "notifications_streams_open", hub=news.hub_id) == 0)


def json_type(data: str) -> str:
    import json

    return str(json.loads(data)["event_type"])


def _families(samples: Samples) -> set[str]:
    found = names(samples)
    families = set(found)
    for name in found:
        for suffix in ("_bucket", "_count", "_sum", "_created"):
            if name.endswith(suffix):
                families.add(name.removesuffix(suffix))
    return families


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    with SSEClient(url, headers=headers) as client:
        return client.status


def test_the_send_time_header_outside_and_inside_a_task(app: Flask, notifications: Notifications) -> None:
    """Celery logs and swallows what a signal receiver raises: check the
    receivers' answers to a publish from outside any task (a shell, a web
    request) and of the dispatch task."""
    from celery.signals import before_task_publish

    from flask_notifications.ops.metrics import SENT_AT_HEADER
    from flask_notifications.worker.messages import DISPATCH_TASK

    for sender in ("some.task", DISPATCH_TASK):
        headers: dict[str, Any] = {}
        answers = before_task_publish.send(sender=sender, headers=headers, body=None)
        assert [answer for _, answer in answers if isinstance(answer, BaseException)] == []
        assert (SENT_AT_HEADER in headers) is (sender == DISPATCH_TASK)
