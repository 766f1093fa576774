"""The consumer interface and the predefined consumers::

    from flask_notifications.consumers import EventConsumer, LogConsumer, PushConsumer

:class:`Delayed` and :class:`Digest` wrap any consumer, to run it later
or once per window (see :doc:`timers`).

:class:`FlaskMailConsumer` needs the ``mail`` extra, so it is imported on
first use: ``pip install ".[mail]"`` from a clone of the repository.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .consumer import Consumer, EventConsumer, FunctionConsumer
from .flaskemail_consumer import FlaskEmailConsumer
from .log_consumer import LogConsumer, LoggingConsumer
from .mail_consumer import MailConsumer
from .push_consumer import PushConsumer

if TYPE_CHECKING:
    from .delayed import Delayed
    from .digest import Digest
    from .flaskmail_consumer import FlaskMailConsumer

__all__ = [
    "Consumer",
    "Delayed",
    "Digest",
    "EventConsumer",
    "FlaskEmailConsumer",
    "FlaskMailConsumer",
    "FunctionConsumer",
    "LogConsumer",
    "LoggingConsumer",
    "MailConsumer",
    "PushConsumer",
]


def __getattr__(name: str) -> Any:
    if name == "FlaskMailConsumer":
        from .flaskmail_consumer import FlaskMailConsumer

        return FlaskMailConsumer
    # Imported on first use: they build on flask_notifications.timers, which builds on this package.
    if name == "Delayed":
        from .delayed import Delayed

        return Delayed
    if name == "Digest":
        from .digest import Digest

        return Digest
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
