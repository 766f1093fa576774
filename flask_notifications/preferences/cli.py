"""The ``flask notifications preferences`` commands::

    flask --app yourapp notifications preferences init-db
    flask --app yourapp notifications preferences migration   # for Flask-Migrate

It imports the preferences when a command runs, so that ``flask
notifications`` works without SQLAlchemy installed.
"""

from __future__ import annotations

import click
from flask.cli import AppGroup

from ..database.migrations import add_migration_command
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


migration_command = add_migration_command(
    preferences_cli,
    "flask_notifications.preferences",
    table_key="NOTIFICATIONS_PREFERENCES_TABLE",
    what="the preferences table",
    hook_module="flask_notifications.preferences",
    extras="inbox",
    help="Add the preferences table's migration to the application's Alembic migrations, after their current "
    "head; then run 'flask db upgrade'.",
)
