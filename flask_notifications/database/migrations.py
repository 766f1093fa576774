"""What the Alembic migrations of the inbox, the preferences and the push
subscriptions share: copying a shipped migration into an application's
migrations folder (the ``migration`` commands), and the ``include_object``
hooks that keep autogenerate away from the tables those migrations own.

Alembic is imported only when a migration is written, so that the hooks and
the commands' modules import without it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection
from importlib import import_module
from pathlib import Path
from typing import Any

import click
from flask import current_app, has_app_context


def write_migration(directory: str, template: str, table: str) -> Path:
    """Copy the migration ``template`` into the Alembic migrations folder
    ``directory``, after its current head, for the table named ``table``.

    :return: the new migration's path.
    :raises click.ClickException: Alembic is not installed, ``directory`` is
        not a migrations folder, it has several heads, or the template is not
        one of ours.
    """
    try:
        from alembic.config import Config
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError
    except ImportError as exc:
        raise click.ClickException(f"The migration needs Alembic (Flask-Migrate installs it) ({exc}).") from None

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


def add_migration_command(
    group: click.Group, package: str, *, table_key: str, what: str, hook_module: str, extras: str, help: str
) -> click.Command:
    """Give ``group`` a ``migration`` command that copies the migration of
    ``package`` (its ``migrations`` module's ``TEMPLATE`` and
    ``DEFAULT_TABLE``) into the application's migrations folder, for the
    table the application's ``table_key`` names, and then says what to do
    next: upgrade, and give ``env.py`` the ``include_object`` hook.

    :param what: the table, as the message names it (``"the inbox table"``).
    :param hook_module: the module the hook is imported from.
    :param extras: the extras the package needs, for the message when it
        cannot be imported.
    :param help: the command's help text.
    """

    @group.command("migration", help=help)
    @click.option(
        "-d",
        "--directory",
        default="migrations",
        show_default=True,
        type=click.Path(file_okay=False),
        help="The Alembic (Flask-Migrate) migrations folder.",
    )
    def migration_command(directory: str) -> None:
        try:
            migrations = import_module(f"{package}.migrations")
        except ImportError as exc:
            raise click.ClickException(
                f"The migration needs: pip install '.[{extras}]' from a clone of Flask-Notifications ({exc})."
            ) from None
        table = configured_table(table_key, migrations.DEFAULT_TABLE)
        path = write_migration(directory, migrations.TEMPLATE, table)
        click.echo(f"Wrote {path}; apply it with 'flask db upgrade'.")
        click.echo(
            f"So that 'flask db migrate' does not propose to drop {what}, give env.py the include_object hook:\n"
            f"    from {hook_module} import include_object\n"
            "    context.configure(..., include_object=include_object)"
        )

    return migration_command


def configured_table(key: str, default: str) -> str:
    """The table name the current application's ``key`` sets, or
    ``default`` (also outside an application context, as Alembic's
    ``env.py`` may run)."""
    if has_app_context():
        return str(current_app.config.get(key) or default)
    return default


def includes(tables: Collection[str], obj: Any, name: str | None, type_: str) -> bool:
    """The answer of an autogenerate ``include_object`` hook that leaves
    ``tables``, and their indexes and constraints, out."""
    if type_ == "table":
        return name not in tables
    return getattr(getattr(obj, "table", None), "name", None) not in tables
