"""What the inbox checks in a call's arguments, and the database errors it
turns into errors that say what to do."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from ..errors import InboxDataError, InboxUnavailableError, InvalidInboxRequestError

#: Most ids one call takes.
MAX_IDS = 1000
#: Largest page.
MAX_LIMIT = 100
#: Recipients per statement when counting or storing for many at once.
CHUNK = 500
_MAX_ID = 2**63 - 1


def parse_ids(ids: Iterable[int | str]) -> list[int]:
    if isinstance(ids, (str, bytes, int)) or not isinstance(ids, Iterable):
        raise InvalidInboxRequestError(f"Give the notification ids as a list, not {type(ids).__name__}.")
    found: set[int] = set()
    for value in ids:
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _MAX_ID:
            raise InvalidInboxRequestError(f"A notification id is a positive integer, not {shown(value)}.")
        found.add(value)
        if len(found) > MAX_IDS:
            raise InvalidInboxRequestError(f"Give at most {MAX_IDS} ids per call.")
    return sorted(found)


def shown(value: object) -> str:
    # The repr of a list nested a thousand deep (a JSON body can hold one)
    # overflows the stack; a container is named, not shown.
    if isinstance(value, (list, tuple, dict, set)):
        return f"a {type(value).__name__}"
    return f"{value!r:.40}"


def checked_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInboxRequestError(f"The limit is an integer from 1 to {MAX_LIMIT}, not {limit!r:.40}.")
    return limit


def chunks(items: list[str], size: int = CHUNK) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextmanager
def database_errors(table: str) -> Iterator[None]:
    """Turn a database that is down, an exhausted connection pool or a
    missing table into an :class:`InboxUnavailableError` that says what to
    do, and data the database refuses into an :class:`InboxDataError`."""
    try:
        yield
    except sa.exc.IntegrityError:
        raise
    except sa.exc.TimeoutError as exc:
        raise InboxUnavailableError(
            f"No inbox database connection came free in time ({exc}); the pool is exhausted "
            "(NOTIFICATIONS_INBOX_POOL_TIMEOUT)."
        ) from exc
    except sa.exc.DisconnectionError as exc:
        raise InboxUnavailableError(f"The inbox database connection was lost: {exc}") from exc
    except sa.exc.DataError as exc:
        raise InboxDataError(f"The inbox database refused the data: {str(exc.orig).strip()}") from exc
    except sa.exc.DBAPIError as exc:
        text = str(exc.orig)
        hint = ""
        if "no such table" in text or ("does not exist" in text and table in text):
            hint = f" Create the table {table!r} with 'flask notifications inbox init-db' or the shipped migration."
        raise InboxUnavailableError(f"The inbox database failed: {text.strip()}.{hint}") from exc
