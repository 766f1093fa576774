"""The ``flask notifications webpush`` commands::

    flask --app yourapp notifications webpush generate-keys
    flask --app yourapp notifications webpush init-db
    flask --app yourapp notifications webpush migration     # for Flask-Migrate

The commands import pywebpush and SQLAlchemy when they run, so that
``flask notifications`` works without the ``webpush`` extra.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from ..errors import NotificationsError

#: The group; ``flask notifications`` has it as ``webpush``.
webpush_cli = AppGroup("webpush", help="Set up Web Push: VAPID keys and the subscriptions table.")


@webpush_cli.command("generate-keys", with_appcontext=False)
@click.option("--subject", default="mailto:admin@example.org", show_default=True, help="mailto: or https: URL.")
def generate_keys(subject: str) -> None:
    """Print a new VAPID key pair as configuration lines. Keep the private
    key secret; a new pair invalidates every stored subscription."""
    try:
        from .vapid import VapidKeys
    except ImportError as exc:
        raise click.ClickException(
            f"Web Push needs: pip install '.[webpush]' from a clone of Flask-Notifications ({exc})."
        ) from None
    keys = VapidKeys.generate(subject)
    click.echo(f'NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY = "{keys.private_text}"')
    click.echo(f'NOTIFICATIONS_WEBPUSH_VAPID_SUBJECT = "{subject}"')
    click.echo(f"# applicationServerKey (GET <blueprint>/vapid-public-key serves it): {keys.public_text}")


@webpush_cli.command("init-db")
def init_db() -> None:
    """Create the push subscriptions table, beside the inbox."""
    try:
        from .subscriptions import push_subscriptions
    except ImportError as exc:
        raise click.ClickException(
            f"Web Push needs: pip install '.[webpush,inbox]' from a clone of Flask-Notifications ({exc})."
        ) from None
    try:
        push_subscriptions.create_all()
    except NotificationsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Created {push_subscriptions.table.name} (if it did not exist).")


@webpush_cli.command("migration")
@click.option(
    "-d",
    "--directory",
    default="migrations",
    show_default=True,
    help="The Alembic (Flask-Migrate) migrations folder.",
)
def migration_command(directory: str) -> None:
    """Add the push subscriptions table's migration to the application's
    Alembic migrations, after their current head; then run 'flask db upgrade'."""
    try:
        from alembic.config import Config
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError

        from .migrations import DEFAULT_TABLE, TEMPLATE
    except ImportError as exc:
        raise click.ClickException(
            f"The migration needs Alembic and: pip install '.[webpush,inbox]' from a clone of Flask-Notifications "
            f"({exc})."
        ) from None
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
    table = current_app.config.get("NOTIFICATIONS_WEBPUSH_TABLE") or DEFAULT_TABLE
    revision = uuid.uuid4().hex[:12]
    text = Path(TEMPLATE).read_text(encoding="utf-8")
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
            raise click.ClickException(f"The push subscriptions' migration template has no line matching {pattern!r}.")
    path = Path(scripts.versions) / f"{revision}_create_{table}.py"
    path.write_text(text, encoding="utf-8")
    click.echo(f"Wrote {path}; apply it with 'flask db upgrade'.")
    click.echo(
        "So that 'flask db migrate' does not propose to drop the table, give env.py the include_object hook:\n"
        "    from flask_notifications.webpush.migrations import include_object\n"
        "    context.configure(..., include_object=include_object)"
    )
