"""The ``flask notifications inbox`` commands::

    flask --app yourapp notifications inbox init-db
    flask --app yourapp notifications inbox purge            # NOTIFICATIONS_INBOX_RETENTION
    flask --app yourapp notifications inbox purge --days 90
    flask --app yourapp notifications inbox migration     # for Flask-Migrate

It lives apart from the inbox package so that ``flask notifications`` works
without SQLAlchemy installed; the commands import the inbox when they run.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click
from flask import current_app
from flask.cli import AppGroup

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


def write_migration(directory: str, template: str, table: str) -> Path:
    """Copy the migration ``template`` into the Alembic migrations folder
    ``directory``, after its current head, for the table named ``table``.

    :return: the new migration's path.
    :raises click.ClickException: ``directory`` is not a migrations folder,
        it has several heads, or the template is not one of ours.
    """
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    ini = Path(directory) / "alembic.ini"
    config = Config(str(ini) if ini.is_file() else None)
    config.set_main_option("script_location", directory)
    try:
        scripts = ScriptDirectory.from_config(config)
    except CommandError as exc:
        raise click.ClickException(
            f"{directory!r} is not an Alembic migrations folder ('flask db init'): {exc}"
        ) from None
    heads = scripts.get_heads()
    if len(heads) > 1:
        raise click.ClickException(
            f"The migrations have {len(heads)} heads ({', '.join(heads)}); merge them first ('flask db merge heads')."
        )
    revision = uuid.uuid4().hex[:12]
    text = Path(template).read_text(encoding="utf-8")
    replacements = {
        r'^revision = ".*"$': f'revision = "{revision}"',
        r"^Revision ID: .*$": f"Revision ID: {revision}",
        r"^down_revision = .*$": f"down_revision = {heads[0]!r}" if heads else "down_revision = None",
        r"^Revises:.*$": f"Revises: {heads[0] if heads else ''}",
        r"^branch_labels = .*$": "branch_labels = None",
        r'^TABLE = ".*"$': f"TABLE = {table!r}",
    }
    for pattern, value in replacements.items():
        text, found = re.subn(pattern, value.replace("\\", "\\\\"), text, count=1, flags=re.MULTILINE)
        if found != 1:
            raise click.ClickException(f"The migration template {template!r} has no line matching {pattern!r}.")
    path = Path(scripts.versions) / f"{revision}_create_{table}.py"
    path.write_text(text, encoding="utf-8")
    return path


@inbox_cli.command("migration")
@click.option(
    "-d",
    "--directory",
    default="migrations",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The Alembic (Flask-Migrate) migrations folder.",
)
def migration_command(directory: str) -> None:
    """Add the inbox table's migration to the application's Alembic
    migrations, after their current head; then run 'flask db upgrade'."""
    from .migrations import TEMPLATE

    table = current_app.config.get("NOTIFICATIONS_INBOX_TABLE") or "notifications_inbox"
    path = write_migration(directory, TEMPLATE, table)
    click.echo(f"Wrote {path}; apply it with 'flask db upgrade'.")
    click.echo(
        "So that 'flask db migrate' does not propose to drop the inbox table, give env.py the include_object hook:\n"
        "    from flask_notifications.inbox import include_object\n"
        "    context.configure(..., include_object=include_object)"
    )
