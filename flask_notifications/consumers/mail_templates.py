"""The templates of the mail consumers: the subject, the plain-text body and
the HTML body of an email, for one event or for a digest of several.

Each part comes, in this order, from the template given to the consumer
(``subject=`` or ``subject_template=``...), from a file of the consumer's
``templates`` folder found through Flask's template loader, or from the
default. HTML is autoescaped, whatever its origin; the subject and the plain
text are not.

A *digest* is an event whose ``event_type`` is ``"digest"`` and that carries
the digested events as the list ``events`` (their dictionaries, as
:meth:`Event.to_dict` gives them). Its parts are the ``digest_*`` ones, whose
templates see ``events`` too.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from flask import current_app, render_template
from jinja2 import Environment, Template, TemplateNotFound

from ..errors import ConsumerError, InvalidEventError
from ..event import Event
from ..worker.delivery import current_delivery

#: The ``templates`` folder of a hub's own templates: ``{hub}`` is the label
#: of the hub whose consumer runs, as ``notifications/orders/subject.txt``.
HUB_TEMPLATES = "notifications/{hub}"

#: The event type of a digest.
DIGEST_TYPE = "digest"

#: The file of each part in a ``templates`` folder.
FILES = {
    "subject": "subject.txt",
    "body": "body.txt",
    "html": "body.html",
    "digest_subject": "digest_subject.txt",
    "digest_body": "digest.txt",
    "digest_html": "digest.html",
}

#: What a part is when neither the consumer nor its folder gives it;
#: ``None``: no such part (no HTML alternative).
DEFAULTS: dict[str, str | None] = {
    "subject": "{{ event.title }}",
    "body": "{{ event.body }}",
    "html": None,
    "digest_subject": "{{ event.title or (events | length) ~ ' notifications' }}",
    "digest_body": (
        "{% for item in events %}- {{ item.title }}{% if item.body %}\n  {{ item.body }}{% endif %}\n{% endfor %}"
    ),
    "digest_html": None,
}

# The parts whose source is HTML, and so autoescaped.
_HTML = frozenset({"html", "digest_html"})

_PREFIX = "event-hub-"  # event_hub.HUB_ID_PREFIX; event_hub imports the consumers


def is_digest(event: Event) -> bool:
    """Whether ``event`` is a digest: its type is ``"digest"`` and it carries
    a list ``events``."""
    return event["event_type"] == DIGEST_TYPE and isinstance(event.get("events"), list)


def digest_events(event: Event) -> list[Any]:
    """The events a digest lists, each as an :class:`Event` when it is one
    (else as the dictionary it carries), in order, each once."""
    found: list[Any] = []
    seen: set[str] = set()
    for item in event.get("events") or []:
        try:
            parsed: Any = Event.from_dict(item)
        except InvalidEventError:
            parsed = item
        key = str(parsed.get("event_id")) if isinstance(parsed, dict) and parsed.get("event_id") else None
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        found.append(parsed)
    return found


def explicit(part: str, source: str | None, template: str | None) -> tuple[str, str] | None:
    """A part given to the consumer: ``("source", text)`` or ``("name", template name)``.

    :raises ConsumerError: both are given.
    """
    if source is not None and template is not None:
        raise ConsumerError(f"Give either {part}= or {part}_template=, not both.")
    if template is not None:
        return ("name", template)
    if source is not None:
        return ("source", source)
    return None


class MailTemplates:
    """The parts of a mail consumer's emails.

    :param parts: the parts given to the consumer, by part name, as
        :func:`explicit` returns them.
    :param folder: a folder of the application's templates holding the
        :data:`FILES` it overrides; ``{hub}`` in it is the hub's label.
    """

    def __init__(self, parts: dict[str, tuple[str, str] | None], folder: str | None = None) -> None:
        if folder is not None and (not isinstance(folder, str) or not folder.strip("/")):
            raise ConsumerError(f"templates is a folder of the application's templates, not {folder!r}.")
        self.parts = parts
        self.folder = folder.strip("/") if folder is not None else None
        # Compiled template source, per application (Jinja environment).
        self._compiled: WeakKeyDictionary[Environment, dict[tuple[str, str], Template]] = WeakKeyDictionary()
        # An autoescaping overlay of each application's environment, with a cache of its own.
        self._escaping: WeakKeyDictionary[Environment, Environment] = WeakKeyDictionary()

    def render(self, part: str, event: Event, addresses: list[str]) -> str | None:
        """Render ``part`` (``"subject"``, ``"body"`` or ``"html"``) of the
        email for ``event`` (its digest part, if it is a digest); ``None``
        when the part is not wanted."""
        context: dict[str, Any] = {"event": event, "recipients": addresses}
        if is_digest(event):
            part = f"digest_{part}"
            context["events"] = digest_events(event)
        env = current_app.jinja_env
        spec = self.parts.get(part)
        if spec is not None and spec[0] == "name":
            if part in _HTML:
                return self._html_by_name(env, spec[1], context)
            return render_template(spec[1], **context)
        if spec is not None:
            return self._from_source(env, part, spec[1]).render(context)
        found = self._in_folder(env, part)
        if found is not None:
            # Flask's loader and context, and its autoescaping by extension (.html).
            return render_template(found, **context)
        default = DEFAULTS[part]
        return None if default is None else self._from_source(env, part, default).render(context)

    def _in_folder(self, env: Environment, part: str) -> str | None:
        if self.folder is None:
            return None
        folder = self.folder
        if "{hub}" in folder:
            delivery = current_delivery()
            if delivery is None:
                return None
            folder = folder.replace("{hub}", delivery.hub_id.removeprefix(_PREFIX))
        name = f"{folder}/{FILES[part]}"
        try:
            env.get_template(name)
        except TemplateNotFound as exc:
            if exc.name != name:
                raise  # the file exists, and includes one that does not
            return None
        return name

    def _html_by_name(self, env: Environment, name: str, context: dict[str, Any]) -> str:
        """Render the HTML template ``name`` autoescaped, whatever its
        extension (Flask's loader escapes only names ending in ``.html``...)."""
        escaping = self._escaping.get(env)
        if escaping is None:
            # Its own cache: the shared one would hand Flask the escaping compilation.
            escaping = self._escaping[env] = env.overlay(autoescape=True, cache_size=50)
        current_app.update_template_context(context)
        return escaping.get_template(name).render(context)

    def _from_source(self, env: Environment, part: str, source: str) -> Template:
        compiled = self._compiled.get(env)
        if compiled is None:
            compiled = self._compiled[env] = {}
        template = compiled.get((part, source))
        if template is None:
            # Flask autoescapes template source; only the HTML parts want that.
            template = compiled[(part, source)] = env.overlay(autoescape=part in _HTML).from_string(source)
        return template
