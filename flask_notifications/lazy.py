"""Names a package exports but imports on first use (PEP 562), so that the
package loads without the optional extra those names need."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package``.

    :param package: the package's ``__name__``.
    :param homes: each exported name and the submodule, relative to the
        package, that defines it.
    :return: the function that imports a name's submodule when the name is
        first looked up, and keeps the value in the package.
    """

    def __getattr__(name: str) -> Any:
        try:
            home = homes[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(f".{home}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
