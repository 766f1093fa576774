"""Under gevent, the fan-out hands a burst of events to a stream as one
write, instead of one write per event (issue 6: found by the benchmark's
profile, where a patched ``threading.Condition`` yielded on every notify).

The check runs in a child process, because it needs gevent's monkey
patching, which must not leak into the test process.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.subprocess]

SCRIPT = r"""
from gevent import monkey

monkey.patch_all()

import gevent

from flask_notifications.event import Event
from flask_notifications.backends.base import Message
from flask_notifications.backends.memory import MemoryPubSub
from flask_notifications.streaming.fanout import Fanout

HUB = "event-hub-burst"
fanout = Fanout(MemoryPubSub(), poll_interval=0.05)
streams = [fanout.open(HUB).frames(retry=1000, heartbeat=30.0) for _ in range(3)]
for stream in streams:
    next(stream)  # retry and start id
others_ran = []
gevent.spawn(others_ran.append, True)
burst = [Message(HUB, f"{10**12 + n}-0", Event(f"e{n}", "burst", "t", "b").to_json()) for n in range(5)]
fanout._dispatch(burst)
print("yielded" if others_ran else "kept the hub")
print(*(next(stream).count(b"event: burst") for stream in streams))
fanout.close()
"""


def test_a_burst_reaches_each_stream_in_one_write_without_yielding_per_event() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["kept the hub", "5 5 5"], done.stdout + done.stderr
