"""The predefined filters, one per module.

As in 0.1, they can be imported from the package::

    from flask_notifications.filters import WithEventType, Not, BeforeDate
"""

from __future__ import annotations

from ..event_filter import Not
from .after_date import AfterDate
from .always import Always
from .before_date import BeforeDate
from .expired import Expired
from .with_event_type import WithEventType
from .with_field import WithField
from .with_id import WithId
from .with_recipient import WithRecipient
from .with_recipients import WithRecipients
from .with_sender import WithSender
from .with_tag import WithTag

__all__ = [
    "AfterDate",
    "Always",
    "BeforeDate",
    "Expired",
    "Not",
    "WithEventType",
    "WithField",
    "WithId",
    "WithRecipient",
    "WithRecipients",
    "WithSender",
    "WithTag",
]
