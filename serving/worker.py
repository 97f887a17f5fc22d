"""gunicorn's threaded worker and logger as the service runs them: stalled clients cut off, request
bodies received directly, large buffers kept between calls, gunicorn's own lines as JSON."""

from __future__ import annotations

import socket
from typing import Any

from gunicorn.glogging import Logger
from gunicorn.workers.gthread import ThreadWorker

from voiceclone.logs import CloudLoggingFormatter
from voiceclone.pools import start_threads

from .body import receive_bodies_directly
from .memory import HeapTrimmer

# A client that sends nothing for this long while its request (headers or body) is incomplete is cut off.
CLIENT_STALL_SECONDS = 10.0
# Connections taken from the listener per readiness event (gunicorn takes one per turn of its loop).
ACCEPT_BATCH = 64


class _StallBoundedSocket(socket.socket):
    """A client socket whose blocking reads and writes give up after `CLIENT_STALL_SECONDS`.

    gunicorn switches each connection's socket to blocking mode (no timeout) before it parses a
    request in a worker thread; this keeps a timeout whenever it does."""

    __slots__ = ()

    def setblocking(self, flag: bool) -> None:
        super().setblocking(flag)
        if flag:
            self.settimeout(CLIENT_STALL_SECONDS)


class ServiceThreadWorker(ThreadWorker):
    """gunicorn's threaded worker, with a stall timeout on every client connection, connections
    accepted in batches, request bodies received straight into the application's buffer, and the
    heap trimmed when it holds more than calls need."""

    heap_trimmer: HeapTrimmer | None = None  # set by `serving.install` where libc is glibc

    def get_thread_pool(self) -> Any:
        """gunicorn's request threads, all started right after the fork (see `voiceclone.pools`)."""
        pool = super().get_thread_pool()
        start_threads(pool, self.cfg.threads)
        return pool

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = receive_bodies_directly(self.wsgi)
        if self.heap_trimmer is not None:
            self.wsgi = self.heap_trimmer.serving(self.wsgi)

    def accept(self, listener: Any) -> None:
        """Take every connection waiting on the listener, not one per turn of the event loop: under
        load the loop's thread waits for the GIL after each of its system calls. Measured with the
        threads started ahead: 128 calls arriving together at 1.26x one call, 1.30-1.37x without
        this (gunicorn's listeners are non-blocking, so an empty backlog ends the batch)."""
        for _ in range(ACCEPT_BATCH):
            before = self.nr_conns
            super().accept(listener)  # one connection, or none once the backlog is empty
            if self.nr_conns == before or self.nr_conns >= self.worker_connections:
                return

    def enqueue_req(self, conn: Any) -> None:
        if type(conn.sock) is socket.socket:
            conn.sock.__class__ = _StallBoundedSocket
        super().enqueue_req(conn)


class JsonLinesLogger(Logger):
    """gunicorn's own messages (a client cut off, a worker restart) as the service's JSON lines
    (docs/events.md): exception types, never multi-line tracebacks, on stderr."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(CloudLoggingFormatter())
