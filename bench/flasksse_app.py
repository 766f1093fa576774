"""flask-sse 1.0.0, served the way its documentation shows, on the bench's Redis.

Stream: ``GET /stream?channel=<channel>``; publish with ``sse.publish`` inside
an app context.
"""

from __future__ import annotations

import os

from flask import Flask
from flask_sse import sse

app = Flask(__name__)
app.config["REDIS_URL"] = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app.register_blueprint(sse, url_prefix="/stream")
