"""How functions-framework's gunicorn serves both targets: threads for calls that wait on ElevenLabs,
bounded request lines and headers, stalled clients cut off (docs/design.md), bodies and buffers handled
without needless copies and page faults (docs/benchmarks.md).

The plain `functions-framework --target …` command builds its gunicorn server after importing
`main.py`, with 4 threads per CPU, no limit on the request line and no read timeout: a handful
of slow or stalled clients would hold every thread. `install()` (called by `main.py`) adjusts
that server before it is built: `THREADS` defaults to 256 (a call mostly waits on ElevenLabs, so
threads are cheap and queueing is the cost; an explicit `THREADS` wins), the request line and
header fields get gunicorn's usual limits, and the worker is `worker.ServiceThreadWorker`:
a read timeout on every client connection, a request body of declared length received straight
into the application's buffer (`body`), and large buffers kept in the heap between calls and
handed back once idle (`memory`).
"""

from __future__ import annotations

import os
from typing import Any

from .memory import keep_buffers_in_heap
from .worker import CLIENT_STALL_SECONDS, JsonLinesLogger, ServiceThreadWorker

__all__ = ["CLIENT_STALL_SECONDS", "DEFAULT_THREADS", "REQUEST_LIMITS", "install"]

DEFAULT_THREADS = 256
REQUEST_LIMITS = {"limit_request_line": 8190, "limit_request_fields": 100, "limit_request_field_size": 8190}


def install() -> None:
    """Adjust functions-framework's gunicorn application before it is built; idempotent."""
    from functions_framework._http import gunicorn as ff_gunicorn

    application = ff_gunicorn.GunicornApplication
    if getattr(application.load_config, "_service_worker", False):
        return
    os.environ.setdefault("THREADS", str(DEFAULT_THREADS))
    ServiceThreadWorker.heap_trimmer = keep_buffers_in_heap()
    original = application.load_config

    def load_config(self: Any) -> None:
        original(self)
        for key, value in REQUEST_LIMITS.items():
            self.cfg.set(key, value)
        self.cfg.set("logger_class", JsonLinesLogger)
        if self.cfg.worker_class_str in ("sync", "gthread"):  # functions-framework's own choice, not a user's
            self.cfg.set("worker_class", ServiceThreadWorker)

    load_config._service_worker = True  # type: ignore[attr-defined]
    application.load_config = load_config
