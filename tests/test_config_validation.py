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


# -- the hostile review of issue 23 ---------------------------------------------------


@pytest.mark.parametrize("key", ["NOTIFICATIONS_INBOX_URL", "NOTIFICATIONS_LEDGER_URL"])
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgress://app:secret@db.example/app", "SQLAlchemy has no dialect 'postgress'"),
        ("postgresql+psycopg3://app:secret@db.example/app", "no dialect 'postgresql+psycopg3'"),
        ("postgresql://app:secret@db.example:fivefour/app", "SQLAlchemy cannot parse it"),
        ("mysql://app:secret@db.example/app", "the module MySQLdb, is not installed"),
        ("//app:secret@db.example/app", "it has no scheme"),
    ],
)
def test_malformed_database_url_names_the_key_and_hides_the_password(key: str, url: str, expected: str) -> None:
    """Issue 23: the database URLs were only checked for '://'; a typo in
    the dialect, a port that is no number or a driver not installed failed
    at the first send, far from the setting."""
    app = make_app(NOTIFICATIONS_BACKEND="memory", **{key: url})
    with pytest.raises(ConfigurationError) as info:
        Notifications(app)
    message = str(info.value)
    assert message.startswith(f"{key} is '"), message
    assert expected in message and "a SQLAlchemy URL" in message, message
    assert "secret" not in message and "***@db.example" in message, message


def test_ledger_url_of_no_known_kind_lists_both_kinds() -> None:
    app = make_app(NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_LEDGER_URL="http://user:secret@ledger.example/0")
    with pytest.raises(ConfigurationError, match=r"NOTIFICATIONS_LEDGER_URL is 'http://\*\*\*@ledger") as info:
        Notifications(app)
    assert "a Redis URL (redis://, rediss://" in str(info.value) and "a SQLAlchemy URL" in str(info.value)
    assert "secret" not in str(info.value)


def test_malformed_redis_ledger_url_is_parsed_as_redis() -> None:
    app = make_app(NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_LEDGER_URL="redis://:secret@localhost:port/0")
    with pytest.raises(ConfigurationError, match="NOTIFICATIONS_LEDGER_URL.*a Redis URL") as info:
        Notifications(app)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/inbox.db", "postgresql+psycopg://app@db.example:5432/app"])
def test_documented_database_urls_pass(url: str, tmp_path: Any) -> None:
    app = make_app(NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_INBOX_URL=url.format(tmp=tmp_path))
    Notifications(app)
    app = make_app(NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_LEDGER_URL=f"sqlite:///{tmp_path}/ledger.db")
    Notifications(app)


@pytest.mark.parametrize("subject", ["admin@example.org", "mailto:", "http://example.org", 5])
def test_vapid_subject_is_a_mailto_or_https_url(subject: Any) -> None:
    app = make_app(NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_WEBPUSH_VAPID_SUBJECT=subject)
    with pytest.raises(ConfigurationError, match="NOTIFICATIONS_WEBPUSH_VAPID_SUBJECT.*a mailto: URL"):
        Notifications(app)
    app = make_app(NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_WEBPUSH_VAPID_SUBJECT="mailto:ops@example.org")
    Notifications(app)


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("NOTIFICATION_SSE_BLUEPRINT", "NOTIFICATIONS_SSE_BLUEPRINT"),
        ("notifications_sse_blueprint", "NOTIFICATIONS_SSE_BLUEPRINT"),
        ("Notification_Redis_Url", "NOTIFICATIONS_REDIS_URL"),
        ("NOTIFICATIONSSSE_BLUEPRINT", "NOTIFICATIONS_SSE_BLUEPRINT"),
    ],
)
def test_key_spelt_with_another_prefix_or_case_warns_with_the_key_it_means(key: str, meant: str) -> None:
    """Issue 23: only keys spelt NOTIFICATIONS_ were looked at; the singular
    or a lower-case key was ignored without a word."""
    app = make_app(NOTIFICATIONS_BACKEND="memory", **{key: "1"})
    with pytest.warns(ConfigurationWarning, match=rf"no setting {key}, so it is ignored; did you mean {meant}\?"):
        Notifications(app)


def test_the_applications_own_notification_keys_are_left_alone() -> None:
    app = make_app(NOTIFICATIONS_BACKEND="memory", NOTIFICATION_EMAIL_SENDER="ops@example.org", NOTIFICATION_LIMIT=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigurationWarning)
        Notifications(app)


def test_strings_from_the_environment_read_as_python_reads_literals() -> None:
    """Issue 23: '1e3' for an integer key, 'None' for a key that takes None
    and a blank value were refused. A whole number in any notation is taken;
    'none'/'null' is None where the key takes None; a blank string leaves a
    non-text key at its default, as an unset environment variable would."""
    app = make_app(
        NOTIFICATIONS_BACKEND="memory",
        NOTIFICATIONS_HISTORY_SIZE="1e3",
        NOTIFICATIONS_MAX_EVENT_SIZE="64_000",
        NOTIFICATIONS_SSE_HEARTBEAT=" 2.5 ",
        NOTIFICATIONS_HISTORY_TTL="None",
        NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT="null",
        NOTIFICATIONS_METRICS_WORKER_PORT="",
        NOTIFICATIONS_SSE_BLUEPRINT="",
        NOTIFICATIONS_CLAIM_TIMEOUT="  ",
        NOTIFICATIONS_CELERY_QUEUE="",
        NOTIFICATIONS_REDIS_URL="",
        NOTIFICATIONS_INBOX_URL="none",
    )
    Notifications(app)
    config = app.config
    assert config["NOTIFICATIONS_HISTORY_SIZE"] == 1000 and isinstance(config["NOTIFICATIONS_HISTORY_SIZE"], int)
    assert config["NOTIFICATIONS_MAX_EVENT_SIZE"] == 64000
    assert config["NOTIFICATIONS_SSE_HEARTBEAT"] == 2.5
    assert config["NOTIFICATIONS_HISTORY_TTL"] is None
    assert config["NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT"] is None
    assert config["NOTIFICATIONS_METRICS_WORKER_PORT"] is DEFAULTS["NOTIFICATIONS_METRICS_WORKER_PORT"]
    assert config["NOTIFICATIONS_SSE_BLUEPRINT"] is DEFAULTS["NOTIFICATIONS_SSE_BLUEPRINT"]
    assert config["NOTIFICATIONS_CLAIM_TIMEOUT"] == DEFAULTS["NOTIFICATIONS_CLAIM_TIMEOUT"]
    assert config["NOTIFICATIONS_CELERY_QUEUE"] is None and config["NOTIFICATIONS_REDIS_URL"] is None
    assert config["NOTIFICATIONS_INBOX_URL"] is None


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("NOTIFICATIONS_HISTORY_SIZE", "2.5", "an integer of at least 1"),
        ("NOTIFICATIONS_HISTORY_SIZE", "None", "an integer of at least 1"),
        ("NOTIFICATIONS_HISTORY_SIZE", "1e400", "an integer of at least 1"),
        ("NOTIFICATIONS_SSE_HEARTBEAT", "nan", "a number of seconds greater than 0"),
        ("NOTIFICATIONS_SSE_BLUEPRINT", "None", "True or False"),
        ("NOTIFICATIONS_KEY_PREFIX", " ", "a non-empty string"),
        ("NOTIFICATIONS_INBOX_TABLE", "", "a non-empty string"),
    ],
)
def test_strings_that_mean_nothing_for_the_key_are_refused(key: str, value: str, expected: str) -> None:
    app = make_app(NOTIFICATIONS_BACKEND="memory", **{key: value})
    with pytest.raises(ConfigurationError, match=rf"{key} is {value!r}.*{expected}"):
        Notifications(app)


# -- one Celery app, one application ---------------------------------------------------


def _on(celery: Any, prefix: str, ext: Notifications | None = None, **config: Any) -> tuple[Flask, Notifications]:
    app = make_app(NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_KEY_PREFIX=prefix, **config)
    ext = ext or Notifications()
    ext.init_app(app, celery=celery)
    return app, ext


def _queue_of_dispatch(celery: Any, app: Flask) -> str:
    from flask_notifications.worker.messages import DISPATCH_TASK

    with app.app_context():
        return str(celery.amqp.router.route({}, DISPATCH_TASK, (), {})["queue"].name)


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        ({"prefix": "beta"}, "another Notifications object (other hubs), NOTIFICATIONS_KEY_PREFIX 'alpha'"),
        ({"prefix": "alpha"}, "another Notifications object (other hubs)"),
        ({"prefix": "beta", "same_ext": True}, "the same Notifications object, NOTIFICATIONS_KEY_PREFIX 'alpha'"),
        ({"prefix": "alpha", "same_ext": True, "NOTIFICATIONS_CELERY_QUEUE": "other"}, "queue 'alpha'"),
    ],
)
def test_two_applications_of_other_prefixes_or_hubs_on_one_celery_app_are_refused(
    second: dict[str, Any], expected: str
) -> None:
    """Issue 23 (hostile review): one Celery app has one router and binds one
    application; the second init_app took both, so the first application's
    dispatches went to the second's queue and its worker ran them with the
    second's hubs and keys."""
    from celery import Celery

    shared = Celery("shared", broker="memory://", set_as_current=False)
    first, ext = _on(shared, "alpha")
    prefix = second.pop("prefix")
    same = ext if second.pop("same_ext", False) else None
    app = make_app(NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_KEY_PREFIX=prefix, **second)
    with pytest.raises(ConfigurationError, match="already runs Flask-Notifications") as info:
        (same or Notifications()).init_app(app, celery=shared)
    message = str(info.value)
    assert expected in message and "'config_validation'" in message and "its own Celery app" in message, message
    assert "notifications" not in app.extensions
    assert _queue_of_dispatch(shared, first) == "alpha"


def test_one_notifications_object_on_several_applications_shares_a_celery_app() -> None:
    from celery import Celery

    shared = Celery("shared", broker="memory://", set_as_current=False)
    first, ext = _on(shared, "alpha")
    second, _ = _on(shared, "alpha", ext)
    assert ext.get_celery(first) is ext.get_celery(second) is shared


def test_an_application_gone_leaves_its_celery_app_to_another() -> None:
    """A test suite that makes an application per test on one Celery app: the
    previous one, no longer referenced, is no owner."""
    import gc

    from celery import Celery

    shared = Celery("shared", broker="memory://", set_as_current=False)
    _on(shared, "alpha")
    gc.collect()
    second, _ = _on(shared, "beta")
    assert _queue_of_dispatch(shared, second) == "beta"


def test_a_private_key_of_the_wrong_type_is_not_shown() -> None:
    app = make_app(NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY=b"very-secret-key")
    with pytest.raises(ConfigurationError, match="VAPID_PRIVATE_KEY is a value not shown") as info:
        Notifications(app)
    assert "very-secret" not in str(info.value)


@pytest.mark.parametrize(
    "targets",
    [
        # Natural mistakes: the URLs without the {hub: [...]} around them.
        ["slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"],
        "json://hooks.example.org/TIiajkdnlazkcOXrIdevi7FQ",
        ("tgram://123456789:TIiajkdnlazkcOXrIdevi7FQ/12315544",),
    ],
)
def test_apprise_targets_of_the_wrong_type_are_not_shown(targets: Any) -> None:
    # Apprise URLs hold tokens: an error saying the setting is wrong must not
    # print them into the logs.
    app = make_app(NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_APPRISE_TARGETS=targets)
    with pytest.raises(ConfigurationError, match="APPRISE_TARGETS is a value not shown") as info:
        Notifications(app)
    assert "TIiajkdnlazkcOXrIdevi7FQ" not in str(info.value)


def test_apprise_targets_are_lists_of_urls_per_hub() -> None:
    # A string where a list belongs would be notified one character at a time.
    app = make_app(NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_APPRISE_TARGETS={"ops": "json://localhost/hook"})
    with pytest.raises(ConfigurationError, match="a dict of lists of URLs"):
        Notifications(app)
    app = make_app(NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_APPRISE_TARGETS={"ops": ["json://localhost/hook"]})
    Notifications(app)
