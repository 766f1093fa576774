"""WebPushConsumer end to end: a real worker pushes to the local push
service, which checks the VAPID signature and decrypts each message as the
browser would."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.consumers.webpush_consumer import WebPushConsumer, retry_after
from flask_notifications.errors import PushPayloadTooLargeError
from flask_notifications.webpush import push_subscriptions
from flask_notifications.webpush.payload import MAX_PAYLOAD, default_payload, encode, fit
from flask_notifications.webpush.vapid import VapidKeys
from tests.consumers.push_service import PushService
from tests.helpers import WorkerFactory, free_port, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]


def _subscribe(service: PushService, user: str, *devices: str) -> None:
    for name in devices:
        push_subscriptions.subscribe(user, service.device(name).subscription(service.base))


def test_each_device_of_each_recipient_gets_the_exact_payload(
    webpush_app: Flask, notifications: Notifications, push_service: PushService, celery_worker: WorkerFactory
) -> None:
    hub = notifications.create_hub("push")
    hub.register_consumer(WebPushConsumer())
    _subscribe(push_service, "alice", "alice-laptop", "alice-phone")
    _subscribe(push_service, "bob", "bob-laptop")
    _subscribe(push_service, "carol", "carol-laptop")
    event = Event(None, "comment", "New comment", "Nice post!", recipients=["alice", "bob"], url="/posts/7")
    urgent = Event(None, "alarm", "Disk full", "", recipients=["bob"], push_ttl=60, push_urgency="high", tag="disk")
    with celery_worker():
        notifications.send(event)
        notifications.send(urgent)
        wait_for(lambda: len(push_service.pushes) == 4)
    assert push_service.refusals == []
    expected = fit(default_payload(event))
    assert json.loads(expected) == {
        "title": "New comment",
        "body": "Nice post!",
        "url": "/posts/7",
        "event_id": event["event_id"],
        "event_type": "comment",
    }
    for device in ("alice-laptop", "alice-phone"):
        (push,) = push_service.received(device)
        assert push.plaintext == expected
        assert push.headers["TTL"] == "86400" and push.headers["Urgency"] == "normal"
        assert push.claims["sub"] == "mailto:ops@example.org"
    bob = {push.plaintext: push for push in push_service.received("bob-laptop")}
    assert set(bob) == {expected, fit(default_payload(urgent))}
    assert bob[fit(default_payload(urgent))].headers["TTL"] == "60"
    assert bob[fit(default_payload(urgent))].headers["Urgency"] == "high"
    assert push_service.received("carol-laptop") == []
    # One Topic per delivery: a delivery's pushes share it, two deliveries differ.
    topics = {device: push_service.received(device)[0].headers["Topic"] for device in ("alice-laptop", "alice-phone")}
    assert topics["alice-laptop"] == topics["alice-phone"] == bob[expected].headers["Topic"]
    assert bob[fit(default_payload(urgent))].headers["Topic"] != topics["alice-laptop"]


def test_a_gone_subscription_is_deleted_and_the_others_still_get_the_push(
    webpush_app: Flask, notifications: Notifications, push_service: PushService, celery_worker: WorkerFactory
) -> None:
    hub = notifications.create_hub("push")
    hub.register_consumer(WebPushConsumer())
    _subscribe(push_service, "alice", "old-phone", "laptop", "uninstalled")
    push_service.answer("old-phone", (410, {}))
    push_service.answer("uninstalled", (404, {}))
    with celery_worker():
        notifications.send(Event(None, "t", "Hello", "", recipients=["alice"]))
        wait_for(lambda: len(push_service.attempts) == 3 and push_service.received("laptop"))
    endpoints = [s.endpoint.rsplit("/", 1)[-1] for s in push_subscriptions.of_users(["alice"])]
    assert endpoints == ["laptop"]
    assert notifications.dead_letters() == []


def test_429_and_5xx_are_retried_after_retry_after_and_each_device_gets_one_push(
    webpush_app: Flask, notifications: Notifications, push_service: PushService, celery_worker: WorkerFactory
) -> None:
    webpush_app.config["NOTIFICATIONS_RETRY_BACKOFF_MAX"] = 30.0
    hub = notifications.create_hub("push")
    hub.register_consumer(WebPushConsumer())
    _subscribe(push_service, "alice", "busy", "broken", "fine")
    push_service.answer("busy", (429, {"Retry-After": "2"}))
    push_service.answer("broken", (503, {}), (502, {}))
    with celery_worker():
        notifications.send(Event(None, "t", "Hello", "", recipients=["alice"]))
        wait_for(lambda: all(push_service.received(name) for name in ("busy", "broken", "fine")))
    tries = {name: [at for device, _, at in push_service.attempts if device == name] for name in push_service.devices}
    # "fine" was accepted on the first run and never pushed again; the
    # others were tried until accepted.
    assert [len(tries[name]) for name in ("busy", "broken", "fine")] == [2, 3, 1]
    assert [len(push_service.received(name)) for name in ("busy", "broken", "fine")] == [1, 1, 1]
    # Retry-After: 2 held the first retry back for at least 2 seconds (the
    # backoff alone is a few tenths).
    assert tries["busy"][1] - tries["busy"][0] >= 1.9
    assert notifications.dead_letters() == []


def test_retry_after_is_capped_at_the_backoff_maximum(
    webpush_app: Flask, notifications: Notifications, push_service: PushService, celery_worker: WorkerFactory
) -> None:
    """A push service asking for an hour is retried after
    NOTIFICATIONS_RETRY_BACKOFF_MAX (here one second): within this test's
    wait, not an hour later."""
    webpush_app.config["NOTIFICATIONS_RETRY_BACKOFF_MAX"] = 1.0
    hub = notifications.create_hub("push")
    hub.register_consumer(WebPushConsumer())
    _subscribe(push_service, "alice", "busy")
    push_service.answer("busy", (429, {"Retry-After": "3600"}))
    with celery_worker():
        notifications.send(Event(None, "t", "Hello", "", recipients=["alice"]))
        wait_for(lambda: push_service.received("busy"), timeout=60)
    assert [status for _, status, _ in push_service.attempts] == [429, 201]


def test_a_push_service_that_does_not_answer_is_retried_later(
    webpush_app: Flask, notifications: Notifications, push_service: PushService
) -> None:
    from flask_notifications.errors import PushServiceUnavailableError, RetryLaterError

    down = f"http://127.0.0.1:{free_port()}"
    webpush_app.config["NOTIFICATIONS_WEBPUSH_ENDPOINTS"] = [push_service.base, down]
    push_subscriptions.subscribe("alice", push_service.device("gone-away").subscription(down))
    _subscribe(push_service, "alice", "laptop")
    with pytest.raises(PushServiceUnavailableError, match=r"1 of 2 pushes failed for now.*no answer") as raised:
        WebPushConsumer()(Event(None, "t", "Hello", "", recipients=["alice"]))
    assert isinstance(raised.value, RetryLaterError)
    # An endpoint is a capability: a device is named by its row and push service.
    assert "subscription 1 (" + down + "): no answer" in str(raised.value) and "/push/gone-away" not in str(
        raised.value
    )
    assert len(push_service.received("laptop")) == 1  # the others got it


def test_a_payload_over_4_kb_is_trimmed_and_what_cannot_be_trimmed_is_refused(
    webpush_app: Flask, notifications: Notifications, push_service: PushService
) -> None:
    _subscribe(push_service, "alice", "laptop")
    long_body = "é" * 5000
    event = Event(None, "t", "Title", long_body, recipients=["alice"], url="/x")
    WebPushConsumer()(event)
    (push,) = push_service.received("laptop")
    data = json.loads(push.plaintext)
    assert len(push.plaintext) <= MAX_PAYLOAD and push.body_size <= 4096
    assert data["truncated"] is True and data["title"] == "Title" and data["url"] == "/x"
    assert data["body"].endswith("…") and long_body.startswith(data["body"][:-1])
    # Trimmed no more than needed: one more character would not fit.
    one_more = {**default_payload(event), "truncated": True, "body": long_body[: len(data["body"])] + "…"}
    assert len(encode(one_more)) > MAX_PAYLOAD
    with pytest.raises(PushPayloadTooLargeError, match="Shorten the event's url"):
        WebPushConsumer()(Event(None, "t", "Title", "b", recipients=["alice"], url="/" + "u" * 5000))
    assert len(push_service.received("laptop")) == 1


def test_a_push_with_the_wrong_vapid_key_is_refused_and_dead_lettered_at_once(
    webpush_app: Flask, notifications: Notifications, push_service: PushService, celery_worker: WorkerFactory
) -> None:
    webpush_app.config["NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY"] = VapidKeys.generate().private_text
    hub = notifications.create_hub("push")
    hub.register_consumer(WebPushConsumer())
    _subscribe(push_service, "alice", "laptop")
    with celery_worker():
        notifications.send(Event(None, "t", "Hello", "", recipients=["alice"]))
        (letter,) = wait_for(notifications.dead_letters)
    assert letter["attempts"] == 1
    assert "PushRejectedError" in letter["error"] and "answered 400" in letter["error"]
    assert "/push/laptop" not in letter["error"] + letter.get("trace", "")
    assert push_service.received("laptop") == []


def test_ttl_never_outlives_the_event_and_invalid_push_fields_are_refused(
    webpush_app: Flask, notifications: Notifications, push_service: PushService
) -> None:
    _subscribe(push_service, "alice", "laptop")
    soon = datetime.now(UTC) + timedelta(seconds=100)
    WebPushConsumer(ttl=3600, urgency="low")(
        Event(None, "t", "Hello", "", recipients=["alice"], expiration_datetime=soon)
    )
    (push,) = push_service.received("laptop")
    assert 0 < int(push.headers["TTL"]) <= 100 and push.headers["Urgency"] == "low"
    for field, value in (("push_ttl", -1), ("push_urgency", "asap")):
        with pytest.raises(Exception, match=field):
            WebPushConsumer()(Event(None, "t", "Hello", "", recipients=["alice"], **{field: value}))


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("120", 120.0), (None, None), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0)],
)
def test_retry_after_reads_seconds_and_http_dates(header: str | None, seconds: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 27, tzinfo=UTC)
    assert retry_after(header, now) == seconds


def _post(client: Any, path: str, body: Any, user: str | None = "alice", **headers: str) -> Any:
    if user is not None:
        headers["X-User"] = user
    return client.post(f"/push{path}", json=body, headers=headers)


def test_the_blueprint_subscribes_and_unsubscribes_the_current_user_only(
    webpush_app: Flask, notifications: Notifications, push_service: PushService, vapid_keys: VapidKeys
) -> None:
    from flask_notifications.webpush import webpush_blueprint

    webpush_app.register_blueprint(webpush_blueprint, url_prefix="/push")
    client = webpush_app.test_client()
    laptop = push_service.device("laptop").subscription(push_service.base)
    assert client.get("/push/vapid-public-key").json == {"public_key": vapid_keys.public_text}
    sw = client.get("/push/notifications-sw.js")
    assert sw.status_code == 200 and sw.headers["Service-Worker-Allowed"] == "/"
    assert b"showNotification" in sw.data and b"openWindow" in sw.data

    assert _post(client, "/subscribe", laptop, user=None).status_code == 401
    cross = _post(client, "/subscribe", laptop, Origin="https://evil.example", **{"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    form = client.post("/push/subscribe", data={"endpoint": "x"}, headers={"X-User": "alice"})
    assert form.status_code == 415
    elsewhere = {**laptop, "endpoint": "http://10.0.0.1:8080/admin"}
    refused = _post(client, "/subscribe", elsewhere)
    assert refused.status_code == 400 and "not an allowed push service" in refused.json["error"]
    bad_keys = {**laptop, "keys": {"p256dh": "AAAA", "auth": laptop["keys"]["auth"]}}
    assert _post(client, "/subscribe", bad_keys).status_code == 400

    created = _post(client, "/subscribe", laptop)
    assert created.status_code == 201 and created.json["endpoint"] == laptop["endpoint"]
    assert _post(client, "/subscribe", laptop).status_code == 201  # again: still one row
    listed = client.get("/push/", headers={"X-User": "alice"}).json["subscriptions"]
    assert [s["endpoint"] for s in listed] == [laptop["endpoint"]]
    assert client.get("/push/", headers={"X-User": "bob"}).json == {"subscriptions": []}
    # Bob cannot remove Alice's device.
    assert _post(client, "/unsubscribe", {"endpoint": laptop["endpoint"]}, user="bob").json == {"unsubscribed": False}
    assert _post(client, "/unsubscribe", {"endpoint": laptop["endpoint"]}).json == {"unsubscribed": True}
    assert push_subscriptions.of_users(["alice"]) == []

    # A browser that changes hands: the endpoint subscribed again by another
    # user moves to them, with its new keys.
    assert _post(client, "/subscribe", laptop).status_code == 201
    again = push_service.device("laptop").subscription(push_service.base)
    assert again["endpoint"] == laptop["endpoint"] and again["keys"] != laptop["keys"]
    assert _post(client, "/subscribe", again, user="bob").status_code == 201
    assert push_subscriptions.of_users(["alice"]) == []
    (moved,) = push_subscriptions.of_users(["bob"])
    assert (moved.endpoint, moved.p256dh, moved.auth) == (
        again["endpoint"],
        again["keys"]["p256dh"],
        again["keys"]["auth"],
    )


def test_a_user_keeps_at_most_the_configured_number_of_devices(
    webpush_app: Flask, notifications: Notifications, push_service: PushService
) -> None:
    webpush_app.config["NOTIFICATIONS_WEBPUSH_MAX_SUBSCRIPTIONS"] = 2
    _subscribe(push_service, "alice", "one", "two", "three")
    assert [s.endpoint.rsplit("/", 1)[-1] for s in push_subscriptions.of_users(["alice"])] == ["two", "three"]


def test_the_cli_generates_a_key_pair_the_config_accepts_and_creates_the_table(
    webpush_app: Flask, notifications: Notifications
) -> None:
    runner = webpush_app.test_cli_runner()
    result = runner.invoke(args=["notifications", "webpush", "generate-keys", "--subject", "mailto:me@example.org"])
    assert result.exit_code == 0, result.output
    config: dict[str, Any] = {}
    for line in result.output.splitlines():
        if line.startswith("NOTIFICATIONS_"):
            key, _, value = line.partition(" = ")
            config[key] = json.loads(value)
    keys = VapidKeys.from_config(config)
    assert keys.subject == "mailto:me@example.org" and keys.public_text in result.output
    push_subscriptions.drop_all()
    result = runner.invoke(args=["notifications", "webpush", "init-db"])
    assert result.exit_code == 0 and "notifications_push_subscriptions" in result.output
    assert push_subscriptions.of_users(["anyone"]) == []


def test_missing_vapid_keys_say_which_key_to_set(webpush_app: Flask, notifications: Notifications) -> None:
    from flask_notifications.errors import PermanentConsumerError

    webpush_app.config["NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY"] = None
    with pytest.raises(PermanentConsumerError, match="NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY"):
        WebPushConsumer()(Event(None, "t", "Hello", "", recipients=["alice"]))


@pytest.mark.parametrize(
    "keys",
    [
        # Characters outside base64url, which a lenient decoder skips: the
        # row would hold whatever an attacker adds (and overflow its column).
        lambda p256dh, auth: {"p256dh": p256dh + "!" * 300, "auth": auth},
        lambda p256dh, auth: {"p256dh": p256dh, "auth": auth[:4] + " $\n!" * 50 + auth[4:]},
    ],
)
def test_keys_that_are_not_base64url_are_refused(
    webpush_app: Flask, notifications: Notifications, push_service: PushService, keys: Any
) -> None:
    from flask_notifications.webpush import webpush_blueprint

    webpush_app.register_blueprint(webpush_blueprint, url_prefix="/push")
    laptop = push_service.device("laptop").subscription(push_service.base)
    hostile = {**laptop, "keys": keys(laptop["keys"]["p256dh"], laptop["keys"]["auth"])}
    refused = _post(webpush_app.test_client(), "/subscribe", hostile)
    assert refused.status_code == 400 and "base64url" in refused.json["error"]
    assert push_subscriptions.of_users(["alice"]) == []


def test_an_endpoint_whose_port_is_not_a_number_is_refused(
    webpush_app: Flask, notifications: Notifications, push_service: PushService
) -> None:
    from flask_notifications.webpush import webpush_blueprint

    # It matches the default pattern https://*.push.apple.com, but no push
    # can ever reach it: each event to its user would be retried, then
    # dead-lettered.
    webpush_app.config["NOTIFICATIONS_WEBPUSH_ENDPOINTS"] = ["https://*.push.apple.com"]
    webpush_app.register_blueprint(webpush_blueprint, url_prefix="/push")
    laptop = push_service.device("laptop").subscription(push_service.base)
    hostile = {**laptop, "endpoint": "https://web:1.push.apple.com/push/laptop"}
    refused = _post(webpush_app.test_client(), "/subscribe", hostile)
    assert refused.status_code == 400
    assert push_subscriptions.of_users(["alice"]) == []


def test_a_redirect_from_a_push_service_is_refused_and_not_followed(
    webpush_app: Flask, notifications: Notifications, push_service: PushService, vapid_keys: VapidKeys
) -> None:
    from flask_notifications.errors import PushRejectedError

    # The worker posts only to the allowed push services: a redirect must
    # not take the push (its body and headers) anywhere else.
    with PushService(vapid_keys.public_text) as internal:
        internal.device("laptop")
        push_service.answer("laptop", (307, {"Location": f"{internal.base}/push/laptop"}))
        # 201 with the message's Location (RFC 8030) is no redirect: pushed.
        push_service.answer("phone", (201, {"Location": f"{push_service.base}/message/1"}))
        _subscribe(push_service, "alice", "laptop", "phone")
        with pytest.raises(PushRejectedError, match="1 of 2 pushes were refused.*answered 307"):
            WebPushConsumer()(Event(None, "t", "Hello", "", recipients=["alice"]))
        assert internal.attempts == []
        assert len(push_service.received("phone")) == 1


def test_a_stored_endpoint_no_longer_allowed_is_not_pushed_to(
    webpush_app: Flask, notifications: Notifications, push_service: PushService, caplog: pytest.LogCaptureFixture
) -> None:
    # Subscribed while the list allowed it (or stored by another
    # application's config); the list was tightened since. The worker posts
    # only to the push services allowed now.
    _subscribe(push_service, "alice", "laptop")
    webpush_app.config["NOTIFICATIONS_WEBPUSH_ENDPOINTS"] = ["https://fcm.googleapis.com"]
    WebPushConsumer()(Event(None, "t", "Hello", "", recipients=["alice"]))
    assert push_service.attempts == []
    assert "push service is not allowed" in caplog.text and "/push/laptop" not in caplog.text
