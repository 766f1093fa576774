"""The ``flask notifications`` commands, run through Flask's CliRunner
against the example application."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner

from flask_notifications.event import Event
from tests.helpers import RedisServer, wait_for
from tests.helpers.example import ROOT, load_example


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ModuleType]:
    (tmp_path / "logs").mkdir()
    module = load_example(
        monkeypatch, EXAMPLE_LOG_FILE=str(tmp_path / "logs" / "events.log"), NOTIFICATIONS_MAX_RETRIES="1"
    )
    yield module
    module.notifications.get_backend(module.app).close()


@pytest.fixture
def app(example: ModuleType) -> Flask:
    app: Flask = example.app
    return app


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


def log_lines(app: Flask) -> list[Event]:
    path = Path(app.config["EXAMPLE_LOG_FILE"])
    return [Event.from_json(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_group_is_registered(app: Flask, runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["notifications", "--help"])
    assert result.exit_code == 0
    for command in ("send", "hubs", "listen", "failed", "retry"):
        assert command in result.output


def test_hubs_lists_filters_and_consumers(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["notifications", "hubs"])
    assert result.exit_code == 0, result.output
    assert "UserHub (event-hub-UserHub)" in result.output
    assert "(WithSender('john') | WithRecipients(['tim', 'tom']))" in result.output
    assert "SystemHub (event-hub-SystemHub)" in result.output
    assert "(WithEventType('system') & ~BeforeDate(" in result.output
    assert "examples.app.write_to_file" in result.output
    assert "PushConsumer" in result.output

    listed = json.loads(runner.invoke(args=["notifications", "hubs", "--json"]).output)
    assert [hub["label"] for hub in listed] == ["UserHub", "SystemHub", "Inbox"]
    assert [c["task"] for c in listed[1]["consumers"]] == ["flask_notifications.event-hub-SystemHub.PushConsumer"]


def test_send_with_options_reaches_the_consumers(app: Flask, example: ModuleType, runner: FlaskCliRunner) -> None:
    result = runner.invoke(
        args=["notifications", "send", "-t", "user", "--title", "Hi", "--body", "B", "--sender", "ann"]
        + ["-r", "tom", "-r", "tim", "--tag", "greeting", "--id", "cli-1"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "Sent event cli-1 to UserHub.\n"
    assert result.stderr.startswith("Warning: the in-memory backend keeps events in one process's memory")
    [logged] = log_lines(app)
    assert (logged["event_id"], logged["sender"], logged["recipients"], logged["tags"]) == (
        "cli-1",
        "ann",
        ["tom", "tim"],
        ["greeting"],
    )
    with app.app_context():
        [pushed] = example.notifications.backend.history(example.user_hub.hub_id, None).messages
    assert Event.from_json(pushed.data) == logged


def test_send_reads_json_from_stdin(app: Flask, example: ModuleType, runner: FlaskCliRunner) -> None:
    result = runner.invoke(
        args=["notifications", "send", "-"], input=json.dumps({"event_type": "system", "title": "Deploy", "x": 1})
    )
    assert result.exit_code == 0, result.output
    assert result.output.endswith("to SystemHub.\n")
    with app.app_context():
        [pushed] = example.notifications.backend.history(example.system_hub.hub_id, None).messages
    event = Event.from_json(pushed.data)
    assert (event["title"], event["body"], event.extra) == ("Deploy", "", {"x": 1})


def test_send_reports_when_no_hub_matches(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["notifications", "send", "-t", "user", "--title", "Hi", "--sender", "ann"])
    assert result.exit_code == 0
    assert "no hub (no filter matched)" in result.output


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["send"], None, "Give --type and --title"),
        (["send", "-t", "user"], None, "Give --type and --title"),
        (["send", "-", "--title", "x"], "{}", "not both (--title)"),
        (["send", "-"], "{not json", "The input is not valid JSON"),
        (["send", "-"], "[1, 2]", "must be a JSON object, not list"),
        (["send", "-"], '{"title": "x"}', "The event has no 'event_type' field;"),
        (["send", "-"], '{"body": "x"}', "The event has no 'event_type' and 'title' fields;"),
        (["send", "-"], '{"event_type": 3, "title": "x"}', "Field 'event_type' must be a string"),
        (["send", "-"], '{"event_type": "a", "title": "x", "timestamp": "soon"}', "not an ISO 8601 datetime"),
        (["send", "-t", "a", "--title", "x", "--expires", "soon"], None, "'soon' is not an ISO 8601 datetime"),
        (["send", "-t", "a", "--title", "x" * 70000], None, "more than NOTIFICATIONS_MAX_EVENT_SIZE"),
        (["send", "-t", "a", "--title", "x", "--expires", "2001-01-01T00:00:00+00:00"], None, "already expired"),
        (["listen", "Nope"], None, "There is no hub 'Nope'; known hubs: UserHub, SystemHub, Inbox."),
        (["listen", "UserHub", "--last-event-id", "yesterday"], None, "'yesterday' is not an event id"),
        (["retry"], None, "Give the ids of the dead letters to retry"),
        (["retry", "1-1", "--all"], None, "not both"),
        (["retry", "1-1"], None, "There is no dead letter '1-1'."),
    ],
)
def test_user_mistakes_exit_non_zero_with_a_message(
    runner: FlaskCliRunner, args: list[str], stdin: str | None, message: str
) -> None:
    result = runner.invoke(args=["notifications", *args], input=stdin)
    assert result.exit_code in (1, 2), result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_listen_replays_history_after_an_id(app: Flask, example: ModuleType, runner: FlaskCliRunner) -> None:
    for title in ("one", "two", "three"):
        assert runner.invoke(args=["notifications", "send", "-t", "system", "--title", title]).exit_code == 0
    with app.app_context():
        first, second, third = example.notifications.backend.history(example.system_hub.hub_id, None).messages

    result = runner.invoke(args=["notifications", "listen", "SystemHub", "--last-event-id", first.id, "-n", "2"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [second.id, third.id]
    assert "[system] two" in lines[0] and "[system] three" in lines[1]

    result = runner.invoke(
        args=["notifications", "listen", "event-hub-SystemHub", "--last-event-id", "0-0"]
        + [
            "-n",
            "1",
            "--json",
        ]
    )
    assert json.loads(result.stdout) == {
        "id": first.id,
        "hub_id": "event-hub-SystemHub",
        "event": json.loads(first.data),
    }


def test_listen_tails_live_events(app: Flask, example: ModuleType, runner: FlaskCliRunner) -> None:
    done = threading.Event()

    def publish() -> None:
        # Keep publishing until the command has printed one: it subscribes
        # at some point after invoke() starts.
        with app.app_context():
            while not done.wait(0.05):
                example.notifications.send(Event(None, "system", "live", "body", sender="system"))

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        result = runner.invoke(args=["notifications", "listen", "SystemHub", "-n", "2"])
    finally:
        done.set()
        thread.join()
    assert result.exit_code == 0, result.output
    assert "Listening to event-hub-SystemHub" in result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all("[system] live  body" in line for line in lines)


def test_failed_and_retry(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    assert runner.invoke(args=["notifications", "failed"]).output == "No dead letters.\n"
    # The file consumer cannot write into a missing directory: it fails, is
    # retried once (NOTIFICATIONS_MAX_RETRIES=1) and ends as a dead letter.
    (tmp_path / "logs").rmdir()
    for title in ("first", "second"):
        assert (
            runner.invoke(args=["notifications", "send", "-t", "user", "--title", title, "--sender", "john"]).exit_code
            == 0
        )

    result = runner.invoke(args=["notifications", "failed"])
    assert result.exit_code == 0
    assert "examples.app.write_to_file" in result.output and "attempts=2" in result.output
    assert "LogWriteError: Cannot open the event log" in result.output and "'first'" in result.output
    letters = json.loads(runner.invoke(args=["notifications", "failed", "--json"]).output)
    assert [letter["consumer"] for letter in letters] == ["examples.app.write_to_file"] * 2
    # The event is an object, as listen --json prints it.
    assert [letter["event"]["title"] for letter in letters] == ["first", "second"]

    (tmp_path / "logs").mkdir()
    result = runner.invoke(args=["notifications", "retry", letters[0]["id"]])
    assert result.exit_code == 0, result.output
    assert f"Retrying {letters[0]['id']}: examples.app.write_to_file on event-hub-UserHub." in result.output
    assert [event["title"] for event in log_lines(app)] == ["first"]

    result = runner.invoke(args=["notifications", "retry", "--all"])
    assert result.exit_code == 0 and letters[1]["id"] in result.output
    assert [event["title"] for event in log_lines(app)] == ["first", "second"]
    assert runner.invoke(args=["notifications", "failed"]).output == "No dead letters.\n"
    assert runner.invoke(args=["notifications", "retry", "--all"]).output == "No dead letters.\n"


@pytest.mark.redis
@pytest.mark.subprocess
def test_listen_stops_cleanly_on_ctrl_c(redis_url: str, unique: str, tmp_path: Path) -> None:
    """A real ``flask notifications listen`` process, on Redis, interrupted."""
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "FLASK_NOTIFICATIONS_KEY_PREFIX": unique,
        "FLASK_CELERY_TASK_DEFAULT_QUEUE": unique,
        "PYTHONPATH": str(ROOT),
        # On a hang, SIGABRT makes it print every thread's stack (below).
        "PYTHONFAULTHANDLER": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "examples.app", "notifications", "listen", "SystemHub"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = wait_for(proc.stderr.readline, timeout=60)
        while "Listening to" not in line:
            line = wait_for(proc.stderr.readline, timeout=60)
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            _, stacks = proc.communicate(timeout=30)
            pytest.fail(f"listen did not stop within 30 s of Ctrl-C; its threads:\n{stacks[-6000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def _collect(stream: Any, lines: list[str]) -> threading.Thread:
    thread = threading.Thread(target=lambda: lines.extend(iter(stream.readline, "")), daemon=True)
    thread.start()
    return thread


@pytest.mark.redis
@pytest.mark.subprocess
def test_listen_waits_out_a_redis_restart(private_redis: Callable[..., RedisServer], unique: str) -> None:
    """``listen`` says once that the server is gone, and carries on when it is back."""
    from flask_notifications.backends.redis import RedisPubSub

    server = private_redis()
    env = {**os.environ, "REDIS_URL": server.url, "FLASK_NOTIFICATIONS_KEY_PREFIX": unique, "PYTHONPATH": str(ROOT)}
    env["FLASK_NOTIFICATIONS_RECONNECT_BACKOFF_MAX"] = "0.5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "examples.app", "notifications", "listen", "SystemHub", "-n", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: list[str] = []
    err: list[str] = []
    readers = [_collect(proc.stdout, out), _collect(proc.stderr, err)]
    backend = RedisPubSub(url=server.url, key_prefix=unique)
    try:
        wait_for(lambda: any("Listening to" in line for line in err), timeout=60)
        server.kill()
        wait_for(lambda: any("retrying until it answers" in line for line in err), timeout=60)
        server.start()

        def printed() -> bool:
            if not out:
                backend.publish("event-hub-SystemHub", Event(None, "system", "back", "", sender="s").to_json())
            return proc.poll() is not None

        wait_for(printed, timeout=60, interval=0.2)
        for reader in readers:
            reader.join(timeout=10)
    finally:
        backend.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == 0, err
    assert len(out) == 1 and "[system] back" in out[0]
    assert sum("retrying until it answers" in line for line in err) == 1
    assert any("The backend answers again." in line for line in err)
    assert not any("Traceback" in line for line in err)


def _example_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "examples.app", "notifications", *args]


@pytest.mark.subprocess
def test_commands_on_the_memory_backend_warn_at_once(tmp_path: Path) -> None:
    """On the embedded default another process never sees the command's
    events (nor the command the server's): send and listen say so."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MAIL_SERVER")}
    env.update(PYTHONPATH=str(ROOT), FLASK_EXAMPLE_LOG_FILE=json.dumps(str(tmp_path / "events.log")))
    sent = subprocess.run(
        _example_command("send", "-t", "system", "--title", "Hi"), cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("Sent event ")
    assert "Warning: the in-memory backend keeps events in one process's memory" in sent.stderr
    assert "no page served by another process shows them" in sent.stderr

    proc = subprocess.Popen(
        _example_command("listen", "SystemHub"), cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        first = wait_for(proc.stderr.readline, timeout=60)
        # Before it starts waiting, not after.
        assert first.startswith("Warning: the in-memory backend"), first
        assert "never what the application's server sends" in first
    finally:
        proc.kill()
        proc.communicate(timeout=30)
