"""Blinker signals sent by Flask-Notifications.

They live on a private :class:`blinker.Namespace`, as Flask's own signals do.
Every signal is sent with the Flask application as its sender.

``event_sent``
    After :meth:`Notifications.send` enqueued an event. Keyword arguments:
    ``event`` and ``hub_ids`` (the hubs whose filter matched).
``send_failed``
    When :meth:`Notifications.send` raises, having enqueued nothing.
    Keyword arguments: ``exception``.
``hub_matched``
    Once per hub whose filter matched an event being sent. Keyword arguments:
    ``event`` and ``hub``.
``consumer_succeeded``
    In the worker, after a consumer handled an event. Keyword arguments:
    ``event``, ``hub_id`` and ``consumer``.
``consumer_failed``
    In the worker, each time a consumer raises. Keyword arguments: ``event``,
    ``hub_id``, ``consumer``, ``exception`` and ``will_retry``.
``event_dead_lettered``
    In the worker, when a consumer failed for the last time and the failure
    was recorded as a dead letter. Keyword arguments: ``dead_letter``.
``event_published``
    In the worker, after a :class:`PushConsumer` published an event to its
    hub's streams. Keyword arguments: ``hub_id``, ``message`` (the backend's
    :class:`~flask_notifications.backends.base.Message`) and ``seconds``
    (how long the backend took).
``stream_refused``
    When a request for a stream is answered with an error instead (400,
    403, 404, 429 or 503). Keyword arguments: ``hub_id`` (as requested)
    and ``status``.
``stream_backend_down``
    In a process that serves streams, once per outage, when its listener
    cannot read the backend. Keyword arguments: ``exception``.
``stream_backend_up``
    When that listener reads the backend again. Keyword arguments:
    ``failures`` (the failed reads of the outage).
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

event_sent = _signals.signal("notifications-event-sent")
hub_matched = _signals.signal("notifications-hub-matched")
consumer_succeeded = _signals.signal("notifications-consumer-succeeded")
consumer_failed = _signals.signal("notifications-consumer-failed")
event_dead_lettered = _signals.signal("notifications-event-dead-lettered")
stream_backend_down = _signals.signal("notifications-stream-backend-down")
stream_backend_up = _signals.signal("notifications-stream-backend-up")
send_failed = _signals.signal("notifications-send-failed")
event_published = _signals.signal("notifications-event-published")
stream_refused = _signals.signal("notifications-stream-refused")
