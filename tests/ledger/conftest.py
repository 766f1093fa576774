"""The ledgers the contract tests run against (one parametrised fixture),
and the PostgreSQL they need."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from flask_notifications.database import create_engine
from flask_notifications.ledger.base import Ledger
from flask_notifications.ledger.memory import MemoryLedger
from flask_notifications.ledger.redis import RedisLedger
from flask_notifications.ledger.sql import SqlLedger
from tests.helpers import missing

POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_engine() -> sa.Engine:
    """An engine on a PostgreSQL that answers, or a skip that says none does."""
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any failure to connect means: no server here
        engine.dispose()
        missing(f"no PostgreSQL answers at {POSTGRES_URL} ({exc}); set POSTGRES_URL")
    return engine


def drop_sql(ledger: SqlLedger) -> None:
    ledger.digest_items.drop(ledger.engine, checkfirst=True)
    ledger.timers.drop(ledger.engine, checkfirst=True)
    ledger.outbox.drop(ledger.engine, checkfirst=True)
    ledger.letters.drop(ledger.engine, checkfirst=True)
    ledger.claims.drop(ledger.engine, checkfirst=True)


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        "sql-sqlite",
        pytest.param("sql-postgresql", marks=pytest.mark.postgres),
    ]
)
def ledger(request: pytest.FixtureRequest, unique: str, tmp_path: Path) -> Iterator[Ledger]:
    found: Ledger
    if request.param == "memory":
        yield MemoryLedger()
        return
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_url")
        found = RedisLedger(url=redis_url, key_prefix=unique)
        yield found
        client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{unique}*"))
        if keys:
            client.delete(*keys)
        client.close()
        found.close()
        return
    if request.param == "sql-sqlite":
        sqlite = SqlLedger(create_engine(f"sqlite:///{tmp_path / 'ledger.sqlite3'}"), owns_engine=True)
        yield sqlite
        sqlite.close()
        return
    sql = SqlLedger(postgres_engine(), key_prefix=unique, owns_engine=True)
    yield sql
    drop_sql(sql)
    sql.close()
