"""The preferences' table and the rules a hub sets: its defaults, and the
channels nobody can opt out of."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa

from ..errors import InvalidPreferenceError

#: The table's name unless ``NOTIFICATIONS_PREFERENCES_TABLE`` says otherwise;
#: the shipped Alembic migration creates it under this name.
DEFAULT_TABLE = "notifications_preferences"
#: Longest hub label or channel name, as hub labels are limited.
NAME_LENGTH = 100

_NAME = re.compile(r"[\w.\-]{1,100}")


def checked_name(kind: str, value: object) -> str:
    """``value`` if it is a valid hub label or channel name (``kind`` says
    which, for the error).

    :raises InvalidPreferenceError: it is not 1 to 100 letters, digits,
        ``_``, ``.`` or ``-``.
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        shown = f"{value!r:.40}" if isinstance(value, (str, int, float, bool)) or value is None else "a value"
        raise InvalidPreferenceError(f"A {kind} is 1 to {NAME_LENGTH} letters, digits, '_', '.' or '-', not {shown}.")
    return value


def define_preferences_table(metadata: sa.MetaData, name: str = DEFAULT_TABLE) -> sa.Table:
    """Define the preferences table on ``metadata``: one row per choice a
    user made (a hub's channel on or off); what nobody chose is the hub's
    default, and is not stored.

    :param name: the table's name; its primary key is named after it.
    """
    return sa.Table(
        name,
        metadata,
        sa.Column("recipient", sa.String(255), nullable=False),
        sa.Column("hub", sa.String(NAME_LENGTH), nullable=False),
        sa.Column("channel", sa.String(NAME_LENGTH), nullable=False),
        sa.Column("enabled", sa.Boolean(name=f"ck_{name}_enabled"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("recipient", "hub", "channel", name=f"pk_{name}"),
    )


@dataclass(frozen=True)
class HubRule:
    """What a hub decides for users who chose nothing, and what they cannot
    choose.

    :param defaults: each channel's default (``True``: delivered); a channel
        it does not name is delivered.
    :param required: the channels nobody can opt out of; ``True`` in
        :meth:`Preferences.define` means every channel of the hub.
    :param every_channel: the hub is required on every channel, including
        those its consumers declare later.
    """

    defaults: Mapping[str, bool] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    every_channel: bool = False

    def is_required(self, channel: str) -> bool:
        return self.every_channel or channel in self.required

    def default(self, channel: str) -> bool:
        return self.is_required(channel) or self.defaults.get(channel, True)


def make_rule(defaults: Mapping[str, bool] | None, required: bool | Iterable[str]) -> HubRule:
    """A :class:`HubRule` from :meth:`Preferences.define`'s arguments.

    :raises InvalidPreferenceError: a channel name is invalid, or a default
        is not a boolean.
    """
    checked: dict[str, bool] = {}
    for channel, value in (defaults or {}).items():
        if not isinstance(value, bool):
            raise InvalidPreferenceError(f"The default of channel {channel!r} is True or False, not {value!r:.40}.")
        checked[checked_name("channel", channel)] = value
    if isinstance(required, bool):
        return HubRule(checked, frozenset(), required)
    if isinstance(required, str):
        required = [required]
    return HubRule(checked, frozenset(checked_name("channel", channel) for channel in required))
