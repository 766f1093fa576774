"""How a pluggable part is named in the config, as kombu's
``resolve_transport`` does it: a class, an instance, an alias or a dotted
path (``"a.b.C"`` or ``"a.b:C"``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .errors import ConfigurationError

T = TypeVar("T")


def resolve(
    spec: object,
    base: type[T],
    aliases: Mapping[str, str],
    what: str,
    *,
    explain: Callable[[str, Any], None] | None = None,
) -> type[T] | T:
    """Turn a setting into a subclass of ``base`` or an instance of one.

    :param aliases: short names and the dotted paths they stand for.
    :param what: what the part is called in messages (``"backend"``).
    :param explain: called with the setting and what it named when that is
        not a subclass of ``base``, to raise a more helpful error.
    :raises ConfigurationError: nothing importable is named, or it is not a
        subclass of ``base``. The message lists the valid choices.
    """
    if isinstance(spec, base) or (isinstance(spec, type) and issubclass(spec, base)):
        return spec
    choices = ", ".join(sorted(aliases)) + f", or a dotted path to a {base.__name__} subclass"
    if not isinstance(spec, str) or not spec:
        raise ConfigurationError(f"Unknown notifications {what} {spec!r}; use {choices}.")
    path = aliases.get(spec.lower(), spec)
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigurationError(f"Unknown notifications {what} {spec!r} ({exc}); use {choices}.") from exc
    if isinstance(found, type) and issubclass(found, base):
        return found
    if explain is not None:
        explain(spec, found)
    raise ConfigurationError(f"{spec!r} is not a {base.__name__} subclass; use {choices}.")
