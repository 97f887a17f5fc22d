"""Large buffers: reused from malloc's heap while calls come in, given back to the system once idle.

A call holds a few buffers of 10-14 MB (the request body, the decoded sample). Fresh memory costs
a page fault per 4 KiB page: measured here (a Firecracker VM, as Cloud Run's second generation
is), 8.5 ms for a 13 MB buffer, about half of what the service added to a 10 MB call. glibc's
defaults give no good choice: a buffer in its own mapping is fresh memory on every call, and once
glibc raises its threshold after the first large free, the heap keeps a burst's buffers for good
(8 in-flight 10 MB samples left +213 MiB behind).

So buffers up to `HEAP_BUFFER_MAX_BYTES` come from the heap, whose pages the next call reuses;
the heap is not trimmed on every free; and `HeapTrimmer` calls `malloc_trim`, which hands every
free page back, once the instance has served nothing for `IDLE_TRIM_SECONDS`, or, under steady
traffic that never leaves it idle, once more than `KEEP_FREE_BYTES` lie free after a burst
(measured: 200 MB in 13-23 ms, during which other threads' allocations wait).
There is one malloc arena: `malloc_trim` cannot release the free top of the other arenas' heaps
(a burst then stayed resident), and Python threads allocate under the GIL anyway, so more arenas
bought no parallelism.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .body import WsgiApp

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
HEAP_BUFFER_MAX_BYTES = 32 * 1024 * 1024
# Free memory at the top of the heap kept by `free` itself; the idle trim hands it back.
HEAP_KEPT_ON_FREE_BYTES = 512 * 1024 * 1024
IDLE_TRIM_SECONDS = 1.0
# Free heap kept for reuse while calls keep coming: two 10 MB calls' buffers; more is given back.
KEEP_FREE_BYTES = 64 * 1024 * 1024


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


class HeapTrimmer:
    """Calls `trim` once per idle spell (after requests ran, none ran for `idle_seconds`), and, while
    requests keep coming, whenever `free_bytes()` exceeds `keep_free_bytes` (checked each `idle_seconds`).

    One daemon thread, started by the first request in the process that serves (threads do not
    survive gunicorn's fork); a request only takes a lock to count itself."""

    def __init__(self, trim: Callable[[], object], free_bytes: Callable[[], int], idle_seconds: float = IDLE_TRIM_SECONDS,
                 keep_free_bytes: int = KEEP_FREE_BYTES, clock: Callable[[], float] = time.monotonic) -> None:
        self._trim = trim
        self._free_bytes = free_bytes
        self._idle_seconds = idle_seconds
        self._keep_free_bytes = keep_free_bytes
        self._clock = clock
        self._changed = threading.Condition()
        self._in_flight = 0
        self._served_since_trim = False
        self._last_finished = 0.0
        self._thread: threading.Thread | None = None

    def started(self) -> None:
        with self._changed:
            self._in_flight += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="heap-trim", daemon=True)
                self._thread.start()

    def finished(self) -> None:
        with self._changed:
            self._in_flight -= 1
            self._served_since_trim = True
            self._last_finished = self._clock()
            if self._in_flight == 0:
                self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._changed:
                idle = self._changed.wait_for(lambda: self._served_since_trim and self._in_flight == 0, self._idle_seconds)
                while idle and self._in_flight == 0 and (quiet := self._last_finished + self._idle_seconds - self._clock()) > 0:
                    self._changed.wait(quiet)
                idle = idle and self._in_flight == 0
                if idle:
                    self._served_since_trim = False
            if idle or self._free_bytes() > self._keep_free_bytes:
                self._trim()

    def serving(self, app: WsgiApp) -> WsgiApp:
        """The WSGI `app`, with each request counted while the application handles it."""

        def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            self.started()
            try:
                return app(environ, start_response)
            finally:
                self.finished()

        return wsgi


def keep_buffers_in_heap() -> HeapTrimmer | None:
    """Set glibc's thresholds (see the module docstring); the trimmer to run in the serving process,
    or None where libc is not glibc (nothing to tune there)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        malloc_trim, mallinfo2 = libc.malloc_trim, libc.mallinfo2  # mallinfo2: glibc 2.33 and later
    except (OSError, AttributeError):
        return None
    libc.mallopt(_M_ARENA_MAX, 1)
    libc.mallopt(_M_MMAP_THRESHOLD, HEAP_BUFFER_MAX_BYTES)
    libc.mallopt(_M_TRIM_THRESHOLD, HEAP_KEPT_ON_FREE_BYTES)
    mallinfo2.restype = _Mallinfo2
    return HeapTrimmer(lambda: malloc_trim(0), lambda: mallinfo2().fordblks)
