"""What tests share: waits on conditions, private servers (Redis, gunicorn,
worker processes), clients of the SSE endpoint, and the configuration of a
test app. The fixtures that start these live in tests/conftest.py."""

from __future__ import annotations

from tests.helpers.config import AMQP_URL, POSTGRES_URL, REDIS_URL, WorkerFactory, make_config
from tests.helpers.delivery import deliver_twice, running_worker, send_until_dead_letter
from tests.helpers.processes import EXAMPLES, ROOT, BeatProcess, WorkerProcess, report
from tests.helpers.redis_servers import (
    LocalCluster,
    RedisServer,
    SentinelGroup,
    delete_keys,
    redis_cli_binary,
    redis_server_binary,
)
from tests.helpers.waiting import free_port, missing, probe, wait_for, wait_until_waiting

__all__ = [
    "AMQP_URL",
    "EXAMPLES",
    "POSTGRES_URL",
    "REDIS_URL",
    "ROOT",
    "BeatProcess",
    "LocalCluster",
    "RedisServer",
    "SentinelGroup",
    "WorkerFactory",
    "WorkerProcess",
    "deliver_twice",
    "delete_keys",
    "free_port",
    "make_config",
    "missing",
    "probe",
    "redis_cli_binary",
    "redis_server_binary",
    "report",
    "running_worker",
    "send_until_dead_letter",
    "wait_for",
    "wait_until_waiting",
]
