"""The ``flask notifications inbox`` commands::

    flask --app yourapp notifications inbox init-db
    flask --app yourapp notifications inbox purge            # NOTIFICATIONS_INBOX_RETENTION
    flask --app yourapp notifications inbox purge --days 90
    flask --app yourapp notifications inbox migration     # for Flask-Migrate

It lives apart from the inbox package so that ``flask notifications`` works
without SQLAlchemy installed; the commands import the inbox when they run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

import click
from flask import current_app
from flask.cli import AppGroup

from ..database.migrations import add_migration_command
from ..errors import NotificationsError
from ..state import current_notifications

if TYPE_CHECKING:
    from . import Inbox

#: The group; ``flask notifications`` has it as ``inbox``.
inbox_cli = AppGroup("inbox", help="Set up and trim the notification inbox.")


@contextmanager
def _inbox() -> Iterator[Inbox]:
    """The current application's inbox, its connections closed afterwards;
    its errors end the command with their message."""
    try:
        ext = current_notifications.runtime().extension
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        inbox: Inbox = ext.inbox
    except ImportError as exc:
        raise click.ClickException(
            f"The inbox needs SQLAlchemy 2: pip install '.[inbox]' from a clone of Flask-Notifications ({exc})."
        ) from None
    try:
        yield inbox
    except NotificationsError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        inbox.close()


@inbox_cli.command("init-db")
def init_db_command() -> None:
    """Create the inbox table and its indexes, if they do not exist."""
    with _inbox() as inbox:
        table, url = inbox.table.name, inbox.engine.url.render_as_string()
        inbox.create_all()
    click.echo(f"The inbox table {table!r} is ready in {url}.")


@inbox_cli.command("purge")
@click.option(
    "--days",
    type=click.FloatRange(min=0),
    help="Delete notifications stored more than this many days ago (default: NOTIFICATIONS_INBOX_RETENTION).",
)
@click.option("--yes", is_flag=True, help="Do not ask before deleting every notification (--days 0).")
def purge_command(days: float | None, yes: bool) -> None:
    """Delete old notifications, read or not."""
    if days is None and current_app.config.get("NOTIFICATIONS_INBOX_RETENTION") is None:
        raise click.ClickException("Give the age to purge with --days N, or set NOTIFICATIONS_INBOX_RETENTION.")
    if days == 0 and not yes:
        click.confirm("--days 0 deletes every notification of every user, read or not. Go on?", abort=True)
    with _inbox() as inbox:
        deleted = inbox.purge(timedelta(days=days) if days is not None else None)
    click.echo(f"Deleted {deleted} notification{'s' if deleted != 1 else ''}.")


migration_command = add_migration_command(
    inbox_cli,
    "flask_notifications.inbox",
    table_key="NOTIFICATIONS_INBOX_TABLE",
    what="the inbox table",
    hook_module="flask_notifications.inbox",
    extras="inbox",
    help="Add the inbox table's migration to the application's Alembic migrations, after their current head; "
    "then run 'flask db upgrade'.",
)
