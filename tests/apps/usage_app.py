# ruff: noqa: E402, I001
"""The Usage guide of the original documentation, run at module level as
printed, the events sent when the module is imported.

What differs from the printed text, and why (nothing else does):

- ``___name__`` is ``__name__``; ``user_hub``/``event_hub``/``event_hub_id``
  are ``test_hub``/``test_hub_id``; ``"a+w"`` is ``"a"`` (an error on Python 3);
  ``datetime.now()`` after ``import datetime`` is ``datetime.datetime.now()``.
- The imports the guide leaves out (FlaskCeleryExt, StrictRedis, Not,
  PushConsumer, Event) are added where the names are first used.
- ``config = {...}`` is filled in with a Redis broker, and the printed
  configuration section's keys; it reads the environment so that a test can
  give it its own Redis (``USAGE_REDIS_URL``: the suite's ``REDIS_URL``, any
  host, port and database), keys, queue and log file.
- ``app = Flask(...)`` and ``app.config.update(config)`` come before
  ``FlaskCeleryExt(app)``, which the guide calls before ``app`` exists.
- The log file's path reads the environment too, and ``passed`` and
  ``filtered`` keep the two events for the test to look for.

A worker imports this module exactly as a user's worker imports their app:
``celery -A tests.apps.usage_app:celery worker``. As with 0.1, importing the
module sends the guide's two events, in the worker too.
"""

import os

from flask import Flask
from flask_notifications import Notifications
from flask_celeryext import FlaskCeleryExt
from redis import StrictRedis

redis_url = os.environ.get("USAGE_REDIS_URL", "redis://127.0.0.1:6379/0")
# Corresponding information for brokers and Celery
config = {
    "CELERY_BROKER_URL": redis_url,
    "CELERY_TASK_DEFAULT_QUEUE": os.environ.get("USAGE_QUEUE", "celery"),
    "NOTIFICATIONS_KEY_PREFIX": os.environ.get("USAGE_PREFIX", "notifications"),
    # Default option
    "BACKEND": "flask_notifications.pubsub.redis_pubsub.RedisPubSub",
    "CELERY_ACCEPT_CONTENT": ["application/json"],
    "CELERY_TASK_SERIALIZER": "json",
    "CELERY_RESULT_SERIALIZER": "json",
}
app = Flask(__name__)
app.config.update(config)
celery = FlaskCeleryExt(app).celery
redis = StrictRedis.from_url(redis_url)
notifications = Notifications()
notifications.init_app(app=app, celery=celery, broker=redis)

test_hub = notifications.create_hub("TestHub")
test_hub_id = test_hub.hub_id

import datetime

now = datetime.datetime.now()
from flask_notifications.filters.with_event_type import WithEventType
from flask_notifications.filters.before_date import BeforeDate
from flask_notifications.filters import Not

test_hub.filter_by(WithEventType("test") & Not(BeforeDate(now)))

LOG = os.environ.get("USAGE_LOG", "events.log")


@test_hub.register_consumer(celery_task_name="app.write_to_file")
def write_to_file(event, *args, **kwargs):
    with open(LOG, "a") as f:
        f.write(str(event))


from flask_notifications.consumers.push_consumer import PushConsumer

push_consumer = PushConsumer(redis, test_hub_id)
test_hub.register_consumer(push_consumer)

from flask_notifications.event import Event

event = Event(None, "test", "This event will pass the filter", "This is the body of the test", sender="system")
notifications.send(event.to_json())
passed = event
event = Event(None, "system", "This event will not pass the filter", "This is the body of the test", sender="system")
notifications.send(event.to_json())
filtered = event
