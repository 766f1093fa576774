"""Config is checked in init_app (issue 23): a value of the wrong type or out
of range, or a malformed URL, is a ConfigurationError naming the key, the
value and what is expected, on every backend; an unknown NOTIFICATIONS_* key
is a ConfigurationWarning that names the key it probably means."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from flask import Flask

from flask_notifications import ConfigurationError, ConfigurationWarning, Notifications
from flask_notifications.config import CHECKS, DEFAULTS


def make_app(**config: Any) -> Flask:
    app = Flask("config_validation")
    app.config.update(CELERY_BROKER_URL="memory://", **config)
    return app


BACKENDS = ["memory", "redis", "amqp"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("NOTIFICATIONS_HISTORY_SIZE", "lots", "an integer of at least 1"),
        ("NOTIFICATIONS_HISTORY_SIZE", 0, "an integer of at least 1"),
        ("NOTIFICATIONS_HISTORY_TTL", -5, "greater than 0"),
        ("NOTIFICATIONS_MAX_RETRIES", 2.5, "an integer of at least 0"),
        ("NOTIFICATIONS_SSE_HEARTBEAT", "often", "a number of seconds"),
        ("NOTIFICATIONS_SSE_BLUEPRINT", "sometimes", "True or False"),
        ("NOTIFICATIONS_SSE_URL_PREFIX", "live", "starts with '/'"),
        ("NOTIFICATIONS_METRICS_WORKER_PORT", 70000, "at most 65535"),
        ("NOTIFICATIONS_KEY_PREFIX", "", "a non-empty string"),
        ("NOTIFICATIONS_PUBLISH_RETRY_POLICY", {"max_retries": "x"}, "kombu retry options"),
    ],
)
def test_wrong_value_is_a_configuration_error(backend: str, key: str, value: Any, expected: str) -> None:
    app = make_app(NOTIFICATIONS_BACKEND=backend, **{key: value})
    with pytest.raises(ConfigurationError) as info:
        Notifications(app)
    message = str(info.value)
    assert key in message
    assert repr(value) in message
    assert expected in message
    assert "notifications" not in app.extensions


@pytest.mark.parametrize(
    "url",
    [
        "redis//localhost:6379/0",
        "localhost:6379",
        "http://localhost:6379/0",
        "redis://localhost:notaport/0",
        "redis://localhost:6379/zero",
        "redis+sentinel://10.0.0.1:26379,10.0.0.2:x/mymaster",
        "redis+sentinel://10.0.0.1:26379",
        "redis+cluster://10.0.0.1:7000/3",
    ],
)
def test_malformed_redis_url_is_a_configuration_error(url: str) -> None:
    app = make_app(NOTIFICATIONS_BACKEND="redis", NOTIFICATIONS_REDIS_URL=url)
    with pytest.raises(ConfigurationError, match="NOTIFICATIONS_REDIS_URL") as info:
        Notifications(app)
    assert "a Redis URL" in str(info.value)


def test_malformed_redis_url_fallback_names_redis_url() -> None:
    app = make_app(NOTIFICATIONS_BACKEND="redis", REDIS_URL="redis:/localhost")
    with pytest.raises(ConfigurationError, match="REDIS_URL is 'redis:/localhost'"):
        Notifications(app)


def test_password_is_not_shown() -> None:
    app = make_app(NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_AMQP_LEDGER_URL="http://user:secret@host/0")
    with pytest.raises(ConfigurationError, match="NOTIFICATIONS_AMQP_LEDGER_URL") as info:
        Notifications(app)
    assert "secret" not in str(info.value)


def test_malformed_amqp_url_is_a_configuration_error() -> None:
    app = make_app(NOTIFICATIONS_BACKEND="amqp", NOTIFICATIONS_AMQP_URL="rabbit://localhost")
    with pytest.raises(ConfigurationError, match="NOTIFICATIONS_AMQP_URL is 'rabbit://localhost'.*an AMQP URL"):
        Notifications(app)


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "rediss://:secret@localhost:6380/2",
        "unix:///run/redis.sock?db=1",
        "redis+sentinel://10.0.0.1:26379,10.0.0.2,10.0.0.3:26380/mymaster/0",
        "redis+cluster://10.0.0.1:7000,10.0.0.2:7000",
    ],
)
def test_documented_redis_urls_pass(url: str) -> None:
    app = make_app(NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_REDIS_URL=url)
    Notifications(app)
    assert app.config["NOTIFICATIONS_REDIS_URL"] == url


def test_numbers_given_as_strings_are_taken() -> None:
    # Environment variables read with app.config.from_mapping(os.environ) are strings.
    app = make_app(
        NOTIFICATIONS_BACKEND="memory",
        NOTIFICATIONS_HISTORY_SIZE="50",
        NOTIFICATIONS_SSE_HEARTBEAT="2.5",
        NOTIFICATIONS_SSE_PUBLIC="false",
    )
    Notifications(app)
    assert app.config["NOTIFICATIONS_HISTORY_SIZE"] == 50
    assert app.config["NOTIFICATIONS_SSE_HEARTBEAT"] == 2.5
    assert app.config["NOTIFICATIONS_SSE_PUBLIC"] is False


def test_misspelt_key_warns_with_the_key_it_means() -> None:
    app = make_app(NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_SSE_BLUEPRNT=True)
    with pytest.warns(
        ConfigurationWarning, match=r"NOTIFICATIONS_SSE_BLUEPRNT.*did you mean NOTIFICATIONS_SSE_BLUEPRINT\?"
    ):
        Notifications(app)


def test_unknown_key_far_from_any_warns_without_a_guess() -> None:
    app = make_app(NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_WHATEVER_ELSE=1)
    with pytest.warns(ConfigurationWarning, match="NOTIFICATIONS_WHATEVER_ELSE") as record:
        Notifications(app)
    assert "did you mean" not in str(record[0].message)


def test_configuration_warning_can_be_filtered() -> None:
    assert issubclass(ConfigurationWarning, UserWarning)
    app = make_app(NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_SSE_BLUEPRNT=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=ConfigurationWarning)
        Notifications(app)


def test_defaults_pass_and_every_key_has_a_check() -> None:
    assert set(CHECKS) == set(DEFAULTS)
    app = make_app(NOTIFICATIONS_BACKEND="memory")
    Notifications(app)
