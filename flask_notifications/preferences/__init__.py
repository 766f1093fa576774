"""What each user wants: per hub and per channel, on or off, kept in SQL
beside the inbox, and honoured by every consumer task whose consumer names
its channel. Needs the ``inbox`` extra (SQLAlchemy 2); see :doc:`preferences`."""

from __future__ import annotations

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
