"""Flask-SocketIO, served the way its documentation shows for several
processes: ``message_queue`` on the bench's Redis, under gunicorn's gevent
WebSocket worker (``-k geventwebsocket.gunicorn.workers.GeventWebSocketWorker -w 1``).

Clients connect to ``/socket.io/?EIO=4&transport=websocket`` and join the
default namespace; the benchmark emits ``bench`` events to all of them from
another process through the same Redis channel (``BENCH_SOCKETIO_CHANNEL``).
"""

from __future__ import annotations

import os

from flask import Flask
from flask_socketio import SocketIO

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL = os.environ.get("BENCH_SOCKETIO_CHANNEL", "fn-bench-socketio")

app = Flask(__name__)
socketio = SocketIO(app, message_queue=REDIS_URL, channel=CHANNEL, async_mode="gevent", cors_allowed_origins="*")
