"""The Usage guide of the original documentation, as printed.

Only the obvious typos are fixed (``___name___``, ``user_hub``/``event_hub``
for ``test_hub``, ``datetime.now()``, ``"a+w"``) and the configuration is read
from the environment, so that a test can run it against its own Redis keys
and Celery queue. A worker imports this module exactly as a user's worker
imports their app: ``celery -A tests.apps.usage_app worker``.
"""

import datetime
import os

from flask import Flask
from flask_celeryext import FlaskCeleryExt
from redis import StrictRedis

from flask_notifications import Notifications
from flask_notifications.consumers.push_consumer import PushConsumer
from flask_notifications.event import Event
from flask_notifications.filters.before_date import BeforeDate
from flask_notifications.filters.not_filter import Not
from flask_notifications.filters.with_event_type import WithEventType

redis_url = os.environ.get("USAGE_REDIS_URL", "redis://127.0.0.1:6379/0")
# Corresponding information for brokers and Celery
config = {
    "CELERY_BROKER_URL": redis_url,
    "CELERY_TASK_DEFAULT_QUEUE": os.environ.get("USAGE_QUEUE", "celery"),
    "CELERY_ACCEPT_CONTENT": ["application/json"],
    "CELERY_TASK_SERIALIZER": "json",
    "CELERY_RESULT_SERIALIZER": "json",
    "NOTIFICATIONS_KEY_PREFIX": os.environ.get("USAGE_PREFIX", "notifications"),
    "BACKEND": "flask_notifications.pubsub.redis_pubsub.RedisPubSub",
}

app = Flask(__name__)
app.config.update(config)
celery = FlaskCeleryExt(app).celery
redis = StrictRedis.from_url(redis_url)
notifications = Notifications()
notifications.init_app(app=app, celery=celery, broker=redis)

test_hub = notifications.create_hub("TestHub")
test_hub_id = test_hub.hub_id

now = datetime.datetime.now()
test_hub.filter_by(WithEventType("test") & Not(BeforeDate(now)))

LOG = os.environ.get("USAGE_LOG", "events.log")


@test_hub.register_consumer(celery_task_name="app.write_to_file")
def write_to_file(event, *args, **kwargs):
    with open(LOG, "a+") as f:
        f.write(str(event) + "\n")


push_consumer = PushConsumer(redis, test_hub_id)
test_hub.register_consumer(push_consumer)


def send_examples():
    event = Event(None, "test", "This event will pass the filter", "This is the body of the test", sender="system")
    notifications.send(event.to_json())
    event2 = Event(
        None, "system", "This event will not pass the filter", "This is the body of the test", sender="system"
    )
    notifications.send(event2.to_json())
    return event, event2
