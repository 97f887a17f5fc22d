"""How functions-framework's gunicorn serves both targets: threads for calls that wait on ElevenLabs,
bounded request lines and headers, stalled clients cut off (SPEC 8).

SPEC 1's plain `functions-framework --target …` builds its gunicorn server after importing
`main.py`, with 4 threads per CPU, no limit on the request line and no read timeout: a handful
of slow or stalled clients would hold every thread. `install()` (called by `main.py`) adjusts
that server before it is built: `THREADS` defaults to 256 (a call mostly waits on ElevenLabs, so
threads are cheap and queueing is the cost; an explicit `THREADS` wins), the request line and
header fields get gunicorn's usual limits, and every client connection gets a read timeout.
"""

from __future__ import annotations

import ctypes
import os
import socket
from typing import Any

from gunicorn.glogging import Logger
from gunicorn.workers.gthread import ThreadWorker

from voiceclone.logs import CloudLoggingFormatter

DEFAULT_THREADS = 256
# A client that sends nothing for this long while its request (headers or body) is incomplete is cut off.
CLIENT_STALL_SECONDS = 10.0
REQUEST_LIMITS = {"limit_request_line": 8190, "limit_request_fields": 100, "limit_request_field_size": 8190}
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


class _StallBoundedSocket(socket.socket):
    """A client socket whose blocking reads and writes give up after `CLIENT_STALL_SECONDS`.

    gunicorn switches each connection's socket to blocking mode (no timeout) before it parses a
    request in a worker thread; this keeps a timeout whenever it does."""

    __slots__ = ()

    def setblocking(self, flag: bool) -> None:
        super().setblocking(flag)
        if flag:
            self.settimeout(CLIENT_STALL_SECONDS)


class StallBoundedThreadWorker(ThreadWorker):
    """gunicorn's threaded worker, with a stall timeout on every client connection."""

    def enqueue_req(self, conn: Any) -> None:
        if type(conn.sock) is socket.socket:
            conn.sock.__class__ = _StallBoundedSocket
        super().enqueue_req(conn)


class JsonLinesLogger(Logger):
    """gunicorn's own messages (a client cut off, a worker restart) as the service's JSON lines
    (SPEC 7): exception types, never multi-line tracebacks, on stderr."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(CloudLoggingFormatter())


def give_large_buffers_back() -> None:
    """Keep large buffers (request bodies, samples) in their own mappings, returned to the system
    when freed. glibc otherwise raises its mmap threshold after the first big free (up to 32 MiB), so
    every later 13 MB body comes from the heap and a burst of them stays resident for good."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def install() -> None:
    """Adjust functions-framework's gunicorn application before it is built; idempotent."""
    os.environ.setdefault("THREADS", str(DEFAULT_THREADS))
    give_large_buffers_back()
    from functions_framework._http import gunicorn as ff_gunicorn

    application = ff_gunicorn.GunicornApplication
    if getattr(application.load_config, "_stall_bounded", False):
        return
    original = application.load_config

    def load_config(self: Any) -> None:
        original(self)
        for key, value in REQUEST_LIMITS.items():
            self.cfg.set(key, value)
        self.cfg.set("logger_class", JsonLinesLogger)
        if self.cfg.worker_class_str in ("sync", "gthread"):  # functions-framework's own choice, not a user's
            self.cfg.set("worker_class", StallBoundedThreadWorker)

    load_config._stall_bounded = True  # type: ignore[attr-defined]
    application.load_config = load_config
