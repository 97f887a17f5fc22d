"""Thread pools started ahead of a burst.

`ThreadPoolExecutor` starts a thread only when a task finds none idle, and `submit` holds the
pool's lock while it waits for the new thread to run. In a burst of calls each new thread must
first win the GIL from the busy ones, so 128 calls arriving at once were let in over 1.4 s instead
of 0.5 s with the threads already there (measured through the real server; docs/design.md).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor


def start_threads(pool: ThreadPoolExecutor, count: int) -> None:
    """Start up to `count` of `pool`'s threads now, in the background, without occupying them: work
    submitted meanwhile is served as usual. Uses the pool's own thread-starting step (CPython
    3.8-3.13 `_adjust_thread_count`, under the pool's lock, as `submit` calls it); where that is
    missing, threads start on demand as before."""
    start_one = getattr(pool, "_adjust_thread_count", None)
    lock = getattr(pool, "_shutdown_lock", None)
    if start_one is None or lock is None:
        return

    def start_all() -> None:
        for _ in range(min(count, pool._max_workers)):  # noqa: SLF001 - the pool's own bound
            with lock:
                if pool._shutdown:  # noqa: SLF001
                    return
                start_one()

    threading.Thread(target=start_all, name="start-threads", daemon=True).start()
