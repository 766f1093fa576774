"""What each user wants: per hub and per channel, on or off, kept in SQL
beside the inbox, and honoured by every consumer task whose consumer names
its channel. Needs the ``inbox`` extra (SQLAlchemy 2); see :doc:`preferences`. Each name is imported on first use, so
that the package imports without it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .cache import PreferenceCache
    from .migrations import include_object
    from .model import DEFAULT_TABLE, HubRule, define_preferences_table
    from .store import Preferences
    from .views import preferences_blueprint

__all__ = [
    "DEFAULT_TABLE",
    "HubRule",
    "PreferenceCache",
    "Preferences",
    "define_preferences_table",
    "include_object",
    "preferences_blueprint",
]

_HOMES = {
    "PreferenceCache": "cache",
    "include_object": "migrations",
    "DEFAULT_TABLE": "model",
    "HubRule": "model",
    "define_preferences_table": "model",
    "Preferences": "store",
    "preferences_blueprint": "views",
}

__getattr__ = lazy_exports(__name__, _HOMES)
