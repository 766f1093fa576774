"""Negation of a filter: 0.1's import path of :class:`Not`, which lives
beside ``And``, ``Or`` and ``Xor`` in :mod:`flask_notifications.event_filter`."""

from __future__ import annotations

from ..event_filter import Not

__all__ = ["Not"]
