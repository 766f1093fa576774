"""The ``flask notifications preferences`` commands::

    flask --app yourapp notifications preferences init-db
    flask --app yourapp notifications preferences migration   # for Flask-Migrate

It imports the preferences when a command runs, so that ``flask
notifications`` works without SQLAlchemy installed.
"""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from ..errors import NotificationsError
from ..state import current_notifications

#: The group; ``flask notifications`` has it as ``preferences``.
preferences_cli = AppGroup("preferences", help="Set up the table of what each user wants.")


@preferences_cli.command("init-db")
def init_db_command() -> None:
    """Create the preferences table, if it does not exist."""
    try:
        ext = current_notifications.runtime().extension
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        preferences = ext.preferences
        table, url = preferences.table.name, ext.inbox.engine.url.render_as_string()
        preferences.create_all()
    except (ImportError, NotificationsError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        ext.inbox.close()
    click.echo(f"The preferences table {table!r} is ready in {url}.")


@preferences_cli.command("migration")
@click.option(
    "-d",
    "--directory",
    default="migrations",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The Alembic (Flask-Migrate) migrations folder.",
)
def migration_command(directory: str) -> None:
    """Add the preferences table's migration to the application's Alembic
    migrations, after their current head; then run 'flask db upgrade'."""
    from ..inbox.cli import write_migration
    from .migrations import TEMPLATE

    table = current_app.config.get("NOTIFICATIONS_PREFERENCES_TABLE") or "notifications_preferences"
    path = write_migration(directory, TEMPLATE, table)
    click.echo(f"Wrote {path}; apply it with 'flask db upgrade'.")
    click.echo(
        "So that 'flask db migrate' does not propose to drop the preferences table, give env.py the hook:\n"
        "    from flask_notifications.preferences import include_object\n"
        "    context.configure(..., include_object=include_object)"
    )
