"""The ``flask notifications`` command group.

``init_app`` adds it to ``app.cli``, so every application that uses the
extension has it::

    flask --app yourapp notifications hubs
    flask --app yourapp notifications send --type system --title "Deploy" --body "at 17:00"
    echo '{"event_type": "system", "title": "Deploy"}' | flask --app yourapp notifications send -
    flask --app yourapp notifications listen SystemHub --last-event-id 0-0
    flask --app yourapp notifications failed
    flask --app yourapp notifications retry --all

Mistakes (an unknown hub, an invalid event, a missing dead letter) end with a
message and a non-zero exit status, not a traceback.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

import click
from flask.cli import AppGroup

from .backends.base import Message, parse_id
from .backends.memory import MemoryPubSub
from .errors import BackendError, NotificationsError
from .event import Event
from .event_hub import HUB_ID_PREFIX, EventHub
from .inbox.cli import inbox_cli
from .preferences.cli import preferences_cli
from .state import current_notifications
from .webpush.cli import webpush_cli

if TYPE_CHECKING:
    from .ext import Notifications

#: The command group; :meth:`Notifications.init_app` adds it to ``app.cli``.
notifications_cli = AppGroup("notifications", help="Send, inspect and tail Flask-Notifications events.")
notifications_cli.add_command(inbox_cli)
notifications_cli.add_command(webpush_cli)
notifications_cli.add_command(preferences_cli)


def _extension() -> Notifications:
    try:
        return current_notifications.runtime().extension
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the extension's errors into a message and exit status 1."""
    try:
        yield
    except NotificationsError as exc:
        raise click.ClickException(str(exc)) from exc


def _find_hub(ext: Notifications, name: str) -> EventHub:
    """The hub with id or label ``name``."""
    hubs = ext.hubs
    if name in hubs:
        return hubs[name]
    if HUB_ID_PREFIX + name in hubs:
        return hubs[HUB_ID_PREFIX + name]
    known = ", ".join(hub.label for hub in hubs.values()) or "none"
    raise click.BadParameter(f"There is no hub {name!r}; known hubs: {known}.", param_hint="HUB")


# -- send ----------------------------------------------------------------------


def _parse_datetime(value: str, field: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 datetime.", param_hint=field) from None
    return parsed


def _event_from_json(source: IO[str]) -> Event:
    """An event from a JSON object, by the rule of :meth:`Event.from_dict`."""
    text = source.read()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise click.ClickException(f"The input is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise click.ClickException(f"The input must be a JSON object, not {type(data).__name__}.")
    with _user_errors():
        return Event.from_dict(data)


def _warn_if_process_local(ext: Notifications, command: str) -> None:
    """Say at once that the in-memory backend cannot reach another process.

    A command runs in a process of its own, so with the in-memory backend
    what it publishes stays in its own memory and it sees nothing that the
    application's server publishes.
    """
    if not isinstance(ext.backend, MemoryPubSub):
        return
    if command == "send":
        effect = (
            "the events this command pushes stay in its own process: no page served by another process "
            "shows them (consumers that write elsewhere, such as to a file, still run)"
        )
    else:
        effect = "this command sees only what its own process publishes, never what the application's server sends"
    click.echo(
        f"Warning: the in-memory backend keeps events in one process's memory, so {effect}. "
        "Set NOTIFICATIONS_BACKEND to 'redis' or 'amqp' to reach other processes.",
        err=True,
    )


@notifications_cli.command("send")
@click.argument("json_file", required=False, type=click.File("r"), metavar="[JSON_FILE]")
@click.option("-t", "--type", "event_type", help="The event type, such as 'user' or 'system'.")
@click.option("--title", help="The title.")
@click.option("--body", default="", show_default=False, help="The body.")
@click.option("--sender", default="", help="Who sends it.")
@click.option("-r", "--recipient", "recipients", multiple=True, help="A recipient; repeat for several.")
@click.option("--tag", "tags", multiple=True, help="A tag; repeat for several.")
@click.option("--id", "event_id", help="The event id (default: a fresh uuid4).")
@click.option("--expires", help="Expiration date, ISO 8601 (e.g. 2030-01-01T12:00:00+00:00).")
def send_command(
    json_file: IO[str] | None,
    event_type: str | None,
    title: str | None,
    body: str,
    sender: str,
    recipients: tuple[str, ...],
    tags: tuple[str, ...],
    event_id: str | None,
    expires: str | None,
) -> None:
    """Send an event, given as options or as JSON.

    Give JSON_FILE, or '-' to read the event's JSON object from standard
    input; fields it lacks get their defaults (a fresh id, now, no
    recipients). Otherwise --type and --title are required.
    """
    ext = _extension()
    if json_file is not None:
        given = [name for name, value in (("--type", event_type), ("--title", title)) if value is not None]
        if given:
            raise click.UsageError(f"Give the event as JSON or as options, not both ({', '.join(given)}).")
        event = _event_from_json(json_file)
    else:
        if event_type is None or title is None:
            raise click.UsageError("Give --type and --title, or the event's JSON ('-' reads standard input).")
        with _user_errors():
            event = Event(
                event_id,
                event_type,
                title,
                body,
                sender=sender,
                recipients=recipients,
                tags=tags,
                expiration_datetime=_parse_datetime(expires, "--expires") if expires else None,
            )
    _warn_if_process_local(ext, "send")
    with _user_errors():
        dispatch = ext.send(event)
    if event.is_expired():
        raise click.ClickException(f"Event {event['event_id']} has already expired (--expires), so it was not sent.")
    hubs = ", ".join(ext.hubs[hub_id].label for hub_id in dispatch.hub_ids) or "no hub (no filter matched)"
    click.echo(f"Sent event {event['event_id']} to {hubs}.")


# -- hubs ----------------------------------------------------------------------


@notifications_cli.command("hubs")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def hubs_command(as_json: bool) -> None:
    """List the hubs with their filters and consumers."""
    ext = _extension()
    hubs: list[dict[str, Any]] = [
        {
            "hub_id": hub.hub_id,
            "label": hub.label,
            "filter": repr(hub.event_filter),
            "consumers": [{"task": name, "consumer": repr(hub.get_consumer(name))} for name in hub.consumer_names],
        }
        for hub in ext.hubs.values()
    ]
    if as_json:
        click.echo(json.dumps(hubs, indent=2))
        return
    if not hubs:
        click.echo("No hubs. Create one with notifications.create_hub(label).")
    for hub in hubs:
        click.echo(f"{hub['label']} ({hub['hub_id']})")
        click.echo(f"  filter: {hub['filter']}")
        if not hub["consumers"]:
            click.echo("  consumers: none")
        for consumer in hub["consumers"]:
            click.echo(f"  consumer: {consumer['task']}  {consumer['consumer']}")


# -- listen --------------------------------------------------------------------


def _event_object(data: Any) -> Any:
    """The event that ``data``, its JSON, holds, as the ``--json`` outputs
    print it: an object, or the text as it is when it is not JSON."""
    if not isinstance(data, str):
        return data
    try:
        return json.loads(data)
    except ValueError:
        return data


def _format_message(message: Message, as_json: bool) -> str:
    if as_json:
        return json.dumps({"id": message.id, "hub_id": message.channel, "event": _event_object(message.data)})
    try:
        event = json.loads(message.data)
    except ValueError:
        return f"{message.id}  (not JSON) {message.data[:200]!r}"
    if not isinstance(event, dict):
        return f"{message.id}  {message.data[:200]}"
    stamp = str(event.get("timestamp", ""))
    body = f"  {event['body']}" if event.get("body") else ""
    return f"{message.id}  {stamp}  [{event.get('event_type', '')}] {event.get('title', '')}{body}"


@notifications_cli.command("listen")
@click.argument("hub")
@click.option(
    "--last-event-id",
    help="First print the events kept after this id, as an SSE client resuming from it would get them; "
    "'0-0' prints the whole history.",
)
@click.option("-n", "--count", type=click.IntRange(min=1), help="Exit after printing this many events.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per event.")
def listen_command(hub: str, last_event_id: str | None, count: int | None, as_json: bool) -> None:
    """Print the events pushed to HUB (its label or id) as they arrive, like
    'tail -f'. Stop with Ctrl-C.

    Only the events a PushConsumer publishes on the hub's channel appear.
    """
    ext = _extension()
    channel = _find_hub(ext, hub).hub_id
    _warn_if_process_local(ext, "listen")
    if last_event_id is not None:
        try:
            parse_id(last_event_id)
        except ValueError:
            raise click.BadParameter(
                f"{last_event_id!r} is not an event id; ids look like '1700000000000-0'.",
                param_hint="--last-event-id",
            ) from None
    backend = ext.backend
    printed = 0
    last_seen = None if last_event_id is None else parse_id(last_event_id)

    def show(message: Message) -> bool:
        nonlocal printed, last_seen
        if last_seen is not None and message.sort_key <= last_seen:
            return False
        last_seen = message.sort_key
        click.echo(_format_message(message, as_json))
        printed += 1
        return count is not None and printed >= count

    subscription = backend.subscribe()
    try:
        # Subscribe before reading the history, so nothing published in
        # between is missed; show() drops what both of them return.
        with _user_errors():
            subscription.add(channel)
            if last_event_id is not None:
                history = backend.history(channel, last_event_id)
                if history.gap:
                    click.echo(f"(some events after {last_event_id} are no longer kept)", err=True)
                for message in history.messages:
                    if show(message):
                        return
        failing = False
        with _stopped_by_ctrl_c() as stopped:
            # Said once Ctrl-C is ours: a Ctrl-C right after it sets the flag.
            click.echo(f"Listening to {channel}; press Ctrl-C to stop.", err=True)
            while not stopped.is_set():
                try:
                    messages = subscription.get(timeout=1.0)
                except BackendError as exc:
                    if not failing:
                        click.echo(f"{exc}; retrying until it answers.", err=True)
                    failing = True
                    time.sleep(1.0)
                    continue
                if failing:
                    click.echo("The backend answers again.", err=True)
                    failing = False
                for message in messages:
                    if message.channel == channel and show(message):
                        return
            click.echo("", err=True)
    except KeyboardInterrupt:
        click.echo("", err=True)
    finally:
        subscription.close()


@contextmanager
def _stopped_by_ctrl_c() -> Iterator[threading.Event]:
    """An event that the first Ctrl-C sets, instead of raising
    KeyboardInterrupt wherever the main thread happens to be: an interrupt
    inside redis-py's connection pool could leave one of its locks held, and
    closing the subscription would then wait on it forever. A second Ctrl-C
    interrupts as usual."""
    stopped = threading.Event()
    try:
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum: int, frame: Any) -> None:
            stopped.set()
            signal.signal(signal.SIGINT, previous)

        signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: Ctrl-C raises as usual
        yield stopped
        return
    try:
        yield stopped
    finally:
        signal.signal(signal.SIGINT, previous)


# -- dead letters --------------------------------------------------------------


def _letter_title(letter: dict[str, Any]) -> str:
    event = _event_object(letter.get("event", ""))
    return str(event.get("title", "")) if isinstance(event, dict) else "(invalid event)"


@notifications_cli.command("failed")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, with the tracebacks.")
def failed_command(as_json: bool) -> None:
    """List the dead letters: deliveries that failed for the last time."""
    ext = _extension()
    with _user_errors():
        letters = ext.dead_letters()
    if as_json:
        click.echo(
            json.dumps([{**letter, "event": _event_object(letter.get("event"))} for letter in letters], indent=2)
        )
        return
    if not letters:
        click.echo("No dead letters.")
        return
    for letter in letters:
        click.echo(
            f"{letter['id']}  {letter.get('failed_at', '')}  {letter.get('hub_id', '')}  "
            f"{letter.get('consumer', '')}  attempts={letter.get('attempts', '?')}  {_letter_title(letter)!r}"
        )
        click.echo(f"    {letter.get('error', '')}")


@notifications_cli.command("retry")
@click.argument("letter_ids", nargs=-1, metavar="[LETTER_ID]...")
@click.option("--all", "retry_all", is_flag=True, help="Retry every dead letter.")
def retry_command(letter_ids: tuple[str, ...], retry_all: bool) -> None:
    """Enqueue dead letters again, with a fresh retry budget.

    Give their ids (see 'failed'), or --all.
    """
    ext = _extension()
    if retry_all and letter_ids:
        raise click.UsageError("Give the ids of the dead letters to retry or --all, not both.")
    if not retry_all and not letter_ids:
        raise click.UsageError("Give the ids of the dead letters to retry (see 'failed'), or --all.")
    with _user_errors():
        ids = [letter["id"] for letter in ext.dead_letters()] if retry_all else list(letter_ids)
        if not ids:
            click.echo("No dead letters.")
            return
        for letter_id in ids:
            letter = ext.retry_dead_letter(letter_id)
            click.echo(f"Retrying {letter_id}: {letter['consumer']} on {letter['hub_id']}.")
