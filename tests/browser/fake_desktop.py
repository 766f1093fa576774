"""A desktop's notification server for headless Chromium: a private D-Bus
session bus (``dbus-daemon``) with ``org.freedesktop.Notifications`` served
by the test, as a desktop's notification daemon serves it.

Chromium on Linux shows a web notification by calling ``Notify`` on it,
and takes a click from its ``ActionInvoked`` signal with the ``default``
action: its own code path for a user's click, which dispatches the service
worker's ``notificationclick``. :meth:`DesktopNotifications.click` sends
that signal.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from dataclasses import dataclass
from typing import Any

from jeepney import DBusAddress, HeaderFields, MessageType, new_method_return, new_signal
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import DBusConnection, open_dbus_connection

from tests.helpers import missing, wait_for

NAME = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"


@dataclass(frozen=True)
class Shown:
    """A notification Chromium asked the desktop to show."""

    id: int
    summary: str
    body: str
    actions: list[str]


class DesktopNotifications:
    """``with DesktopNotifications() as desktop:``; give Chromium
    ``desktop.env`` and read ``desktop.shown``."""

    def __init__(self) -> None:
        binary = shutil.which("dbus-daemon")
        if binary is None:
            missing("no dbus-daemon, which the notification click test needs (apt-get install dbus-daemon)")
        self._bus = subprocess.Popen(
            [str(binary), "--session", "--nofork", "--print-address=1"], stdout=subprocess.PIPE, text=True
        )
        assert self._bus.stdout is not None
        self.address = self._bus.stdout.readline().strip()
        self.shown: list[Shown] = []
        self.closed: list[int] = []
        self._lock = threading.Lock()
        self._conn: DBusConnection = open_dbus_connection(bus=self.address)
        self._conn.send_and_get_reply(message_bus.RequestName(NAME, 4))  # 4: do not queue
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def env(self) -> dict[str, str]:
        """What Chromium's environment needs to find this desktop."""
        return {"DBUS_SESSION_BUS_ADDRESS": self.address}

    def __enter__(self) -> DesktopNotifications:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()
        self._bus.terminate()
        self._bus.wait(timeout=30)
        if self._bus.stdout is not None:
            self._bus.stdout.close()

    def wait_shown(self, summary: str, count: int = 1) -> Shown:
        """The last notification titled ``summary``, once Chromium asked to
        show ``count`` of them (a push's promise may settle before Chromium's
        call reaches the desktop)."""

        def found() -> Shown | None:
            with self._lock:
                titled = [item for item in self.shown if item.summary == summary]
            return titled[-1] if len(titled) >= count else None

        return wait_for(found, timeout=30)

    def click(self, shown: Shown) -> None:
        """Click ``shown``, as a user clicks a notification on the desktop."""
        signal = new_signal(DBusAddress(PATH, interface=NAME), "ActionInvoked", "us", (shown.id, "default"))
        with self._lock:
            self._conn.send(signal)

    def _answer(self, call: Any, signature: str, body: tuple[Any, ...]) -> None:
        with self._lock:
            self._conn.send(new_method_return(call, signature, body))

    def _serve(self) -> None:
        try:
            while True:
                call = self._conn.receive()
                if call.header.message_type != MessageType.method_call:
                    continue
                member = call.header.fields.get(HeaderFields.member)
                if member == "GetCapabilities":
                    self._answer(call, "as", (["actions", "body"],))
                elif member == "GetServerInformation":
                    self._answer(call, "ssss", ("tests", "flask-notifications", "1", "1.2"))
                elif member == "Notify":
                    _app, replaces, _icon, summary, body, actions, _hints, _timeout = call.body
                    with self._lock:
                        # A replacement keeps its id, as the specification says.
                        number = int(replaces) or len(self.shown) + 1
                        shown = Shown(number, summary, body, list(actions))
                        self.shown.append(shown)
                    self._answer(call, "u", (shown.id,))
                elif member == "CloseNotification":
                    with self._lock:
                        self.closed.append(int(call.body[0]))
                    self._answer(call, "", ())
                else:
                    self._answer(call, "", ())
        except (OSError, EOFError, ValueError):
            return  # the connection was closed: the test is over
