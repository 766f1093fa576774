"""The ``flask notifications webpush`` commands::

    flask --app yourapp notifications webpush generate-keys
    flask --app yourapp notifications webpush init-db
    flask --app yourapp notifications webpush migration     # for Flask-Migrate

The commands import pywebpush and SQLAlchemy when they run, so that
``flask notifications`` works without the ``webpush`` extra.
"""

from __future__ import annotations

import click
from flask.cli import AppGroup

from ..database.migrations import add_migration_command
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


migration_command = add_migration_command(
    webpush_cli,
    "flask_notifications.webpush",
    table_key="NOTIFICATIONS_WEBPUSH_TABLE",
    what="the table",
    hook_module="flask_notifications.webpush.migrations",
    extras="webpush,inbox",
    help="Add the push subscriptions table's migration to the application's Alembic migrations, after their "
    "current head; then run 'flask db upgrade'.",
)
