"""The checks of the plain values: numbers, booleans, text and paths.

A check takes a value and returns it normalised, or raises ``ValueError``
saying what is expected. Values often come from the environment
(``app.config.from_prefixed_env()``, ``from_mapping(os.environ)``), so a
string is read the way Python reads a literal: ``"50"``, ``"2.5"``,
``"1e3"`` and ``"64_000"`` are numbers (an integer key takes ``"1e3"``, which
is whole, but not ``"2.5"``), ``"true"``/``"false"``/``"yes"``/``"no"``/
``"on"``/``"off"``/``"1"``/``"0"`` are booleans, and ``"none"``/``"null"`` is
``None`` for a key that takes ``None``. :mod:`.checks` turns a blank string
into the key's default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

#: A check takes a value and returns it normalised (a number given as a
#: string, as environment variables give it, becomes that number), or raises
#: ValueError with what is expected.
Check = Callable[[Any], Any]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
#: Strings that mean ``None`` for a key that takes it.
NONE_STRINGS = {"none", "null"}


def is_none(value: Any) -> bool:
    """Whether ``value`` is ``None`` or a string that means it."""
    return value is None or (isinstance(value, str) and value.strip().lower() in NONE_STRINGS)


def integer(minimum: int = 0, *, optional: bool = False, maximum: int | None = None) -> Check:
    """An integer within the bounds: an int, a whole float, or a string of either."""

    def accept(value: float) -> int | None:
        if isinstance(value, float):
            if not value.is_integer():
                return None
            value = int(value)
        return value if value >= minimum and (maximum is None or value <= maximum) else None

    expected = f"an integer of at least {minimum}" + (f" and at most {maximum}" if maximum is not None else "")
    return _numeric(expected, accept, optional=optional)


def number(minimum: float = 0.0, *, positive: bool = False, optional: bool = False) -> Check:
    """A finite number of seconds within the bounds, or a string of one."""

    def accept(value: float) -> float | None:
        fits = math.isfinite(value) and value >= minimum and not (positive and value == minimum)
        return value if fits else None

    expected = "a number of seconds " + ("greater than" if positive else "of at least") + f" {minimum:g}"
    return _numeric(expected, accept, optional=optional)


def _numeric(expected: str, accept: Callable[[float], float | None], *, optional: bool) -> Check:
    """The check of a number, or a string of one, that ``accept`` returns
    (normalised) or refuses with ``None``; with ``optional``, of ``None`` too."""
    if optional:
        expected += ", or None"

    def check(value: Any) -> Any:
        if optional and is_none(value):
            return None
        if isinstance(value, str):
            value = _parse_number(value, expected)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(expected)
        accepted = accept(value)
        if accepted is None:
            raise ValueError(expected)
        return accepted

    return check


def _parse_number(text: str, expected: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ValueError(expected) from None


def boolean(value: Any) -> bool:
    """True or False, 1 or 0, or a string of a boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("True or False (or one of the strings true, false, yes, no, on, off, 1, 0)")


def text(value: Any) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a non-empty string")
    return value


def optional_text(value: Any) -> str | None:
    """A non-empty string, or None."""
    if is_none(value):
        return None
    try:
        return text(value)
    except ValueError:
        raise ValueError("a non-empty string, or None") from None


def url_prefix(*, optional: bool = False) -> Check:
    """A URL path: empty, or starting with ``/``."""
    expected = "a URL path that starts with '/'" + (", or None" if optional else "")

    def check(value: Any) -> Any:
        if optional and is_none(value):
            return None
        if not isinstance(value, str) or (value and not value.startswith("/")):
            raise ValueError(expected)
        return value

    return check


def retention(value: Any) -> Any:
    """A number of seconds, a timedelta, or None."""
    if is_none(value):
        return None
    if isinstance(value, timedelta):
        return value
    try:
        return number(0.0, positive=True)(value)
    except ValueError:
        raise ValueError("a number of seconds greater than 0, a timedelta, or None") from None


def retry_policy(value: Any) -> Any:
    """kombu's retry options, each a number."""
    expected = "a dict of kombu retry options (max_retries, interval_start, interval_step, interval_max)"
    if not isinstance(value, Mapping):
        raise ValueError(expected)
    known = {"max_retries", "interval_start", "interval_step", "interval_max", "timeout"}
    policy = dict(value)
    for name, item in policy.items():
        if name not in known:
            raise ValueError(f"{expected}; {name!r} is none of them")
        if item is None and name in ("max_retries", "timeout"):
            continue
        try:
            policy[name] = number(0.0)(item)
        except ValueError:
            raise ValueError(f"{expected}, each a number of at least 0; {name} is {item!r}") from None
    return policy


def anything(value: Any) -> Any:
    """Checked where it is used (a backend or ledger, which lists the choices)."""
    return value


def urgency(value: Any) -> Any:
    """A Web Push urgency."""
    if value not in ("very-low", "low", "normal", "high"):
        raise ValueError("one of very-low, low, normal, high")
    return value


def mapping(value: Any) -> Any:
    """A dict."""
    if not isinstance(value, dict):
        raise ValueError("a dict")
    return value


def url_lists(value: Any) -> Any:
    """A dict whose values are lists of URLs (strings)."""
    if not isinstance(value, dict) or not all(
        isinstance(urls, (list, tuple)) and all(isinstance(url, str) for url in urls) for urls in value.values()
    ):
        raise ValueError('a dict of lists of URLs: {"hub label": ["scheme://..."]}')
    return value
