"""The wake-up of a stream under gevent (:class:`~flask_notifications.streaming.green.Parking`):
what :class:`~flask_notifications.streaming.green.GreenletCondition` promises
a stream, with a waiter made for each wait and a loop timer for a timed wait
(a queued stream's next heartbeat) instead of an event held for the
stream's life and a ``gevent.Timeout`` raised into the greenlet.

The checks run in a child process, because they need gevent's monkey
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

from flask_notifications.streaming.green import Parking

# A notify no wait has consumed yet: the next wait returns at once, without
# yielding, and consumes it.
parking = Parking()
others_ran = []
gevent.spawn(others_ran.append, True)
parking.notify()
print("at once", parking.wait(None), bool(others_ran))
print("consumed", parking.wait(0.01))

# A timed wait with no notify ends on its timer.
print("timer", Parking().wait(0.01))

# A waiting greenlet wakes on a notify, which does not yield.
parking = Parking()
woken = []
waiter = gevent.spawn(lambda: woken.append(parking.wait(None)))
gevent.sleep(0)
parking.notify()
print("notify yields", bool(woken))
waiter.join(5)
print("woken", woken)

# A notify wakes a timed wait before its timer, and the timer is gone: a
# later wait without a timeout is not woken by it.
parking = Parking()
woken = []
waiter = gevent.spawn(lambda: woken.append(parking.wait(0.2)))
gevent.sleep(0)
parking.notify()
waiter.join(5)
later = gevent.spawn(lambda: woken.append(parking.wait(None)))
gevent.sleep(0.4)
print("timed", woken, "later waits", not later.dead)
later.kill()

# A greenlet killed while it waits leaves nothing behind: a notify after
# it is kept for the next wait.
parking = Parking()
waiter = gevent.spawn(parking.wait, None)
gevent.sleep(0)
waiter.kill()
parking.notify()
gevent.sleep(0)
print("after kill", parking.wait(None))
"""


def test_a_parked_stream_wakes_as_a_greenlet_condition_would() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "at once True False",
        "consumed False",
        "timer False",
        "notify yields False",
        "woken [True]",
        "timed [True] later waits True",
        "after kill True",
    ], done.stdout + done.stderr
