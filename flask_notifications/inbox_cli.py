"""The ``flask notifications inbox`` commands::

    flask --app yourapp notifications inbox init-db
    flask --app yourapp notifications inbox purge            # NOTIFICATIONS_INBOX_RETENTION
    flask --app yourapp notifications inbox purge --days 90

It lives apart from the inbox package so that ``flask notifications`` works
without SQLAlchemy installed; the commands import the inbox when they run.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import click
from flask import current_app
from flask.cli import AppGroup

from .errors import NotificationsError

if TYPE_CHECKING:
    from .inbox import Inbox

#: The group; ``flask notifications`` has it as ``inbox``.
inbox_cli = AppGroup("inbox", help="Set up and trim the notification inbox.")


def _inbox() -> Inbox:
    try:
        ext = current_app.extensions["notifications"]
    except KeyError:
        raise click.ClickException("Flask-Notifications is not initialised on this application.") from None
    try:
        inbox: Inbox = ext.inbox
    except ImportError as exc:
        raise click.ClickException(
            f"The inbox needs SQLAlchemy 2: pip install 'Flask-Notifications[inbox]' ({exc})."
        ) from None
    return inbox


@inbox_cli.command("init-db")
def init_db_command() -> None:
    """Create the inbox table and its indexes, if they do not exist."""
    inbox = _inbox()
    try:
        table, url = inbox.table.name, inbox.engine.url.render_as_string()
        inbox.create_all()
    except NotificationsError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        inbox.close()
    click.echo(f"The inbox table {table!r} is ready in {url}.")


@inbox_cli.command("purge")
@click.option(
    "--days",
    type=click.FloatRange(min=0),
    help="Delete notifications stored more than this many days ago (default: NOTIFICATIONS_INBOX_RETENTION).",
)
def purge_command(days: float | None) -> None:
    """Delete old notifications, read or not."""
    inbox = _inbox()
    try:
        deleted = inbox.purge(timedelta(days=days) if days is not None else None)
    except NotificationsError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        inbox.close()
    click.echo(f"Deleted {deleted} notification{'s' if deleted != 1 else ''}.")
