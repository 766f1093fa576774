"""What is read when the metrics are scraped: the dead letters waiting in
each instrumented application's ledger, and its Celery queues' depths."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import NotificationsError
from . import instrumented

logger = logging.getLogger(__name__)


class ScrapeCollector(Collector):
    """The values read when the metrics are scraped: the dead letters
    waiting in each instrumented application's ledger, and the messages
    in its Celery queues where the broker tells it. A value that cannot be
    read (the ledger or broker is down) is left out of that scrape."""

    def describe(self) -> Iterable[Metric]:
        # Without describe(), registering the collector runs collect(), which
        # would reach every ledger and broker when the application starts.
        yield GaugeMetricFamily("notifications_dead_letters", "Dead letters waiting.")
        yield GaugeMetricFamily(
            "notifications_celery_queue_messages", "Messages waiting in a Celery queue.", labels=["queue"]
        )

    def collect(self) -> Iterable[Metric]:
        letters = GaugeMetricFamily("notifications_dead_letters", "Dead letters waiting.")
        queues = GaugeMetricFamily(
            "notifications_celery_queue_messages", "Messages waiting in a Celery queue.", labels=["queue"]
        )
        seen_ledgers: set[int] = set()
        seen_queues: set[str] = set()
        waiting: int | None = None
        for runtime in instrumented.runtimes():
            if id(runtime.ledger) not in seen_ledgers:
                seen_ledgers.add(id(runtime.ledger))
                try:
                    waiting = (waiting or 0) + runtime.ledger.dead_letter_count()
                except NotificationsError as exc:
                    logger.warning("Could not count the dead letters: %s", exc)
            for queue, count in _queue_depths(runtime.celery):
                if queue not in seen_queues:
                    seen_queues.add(queue)
                    queues.add_metric([queue], count)
        if waiting is not None:
            letters.add_metric([], waiting)
        yield letters
        yield queues


def _queue_depths(celery: Any) -> Iterator[tuple[str, int]]:
    if celery.conf.task_always_eager:
        return
    names = sorted(celery.amqp.queues.keys())
    try:
        with celery.connection_for_read(connect_timeout=2) as conn:
            for name in names:
                channel = conn.channel()
                try:
                    _, count, _ = channel.queue_declare(queue=name, passive=True)
                except Exception as exc:
                    # A queue the broker does not have: a Redis list is
                    # deleted when it empties, so it holds nothing.
                    if str(getattr(exc, "reply_code", "")) != "404":
                        raise
                    count = 0
                finally:
                    try:
                        channel.close()
                    except Exception:  # the broker closed it already
                        pass
                yield name, int(count)
    except Exception as exc:
        logger.warning("Could not read the depth of the Celery queues: %r", exc)
