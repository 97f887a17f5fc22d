"""One computation per key at a time, with recent successes remembered.

Makes duplicate webhooks for one conversation (ElevenLabs redelivery, concurrent retries) cost
one clone on an instance: concurrent callers wait for the first and share its outcome; later
callers within `ttl_seconds` get the remembered outcome. Failures are not remembered.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Call(Generic[T]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None
        self.finished_at = 0.0


class SingleFlight(Generic[T]):
    def __init__(self, ttl_seconds: float = 3600.0, max_entries: int = 4096) -> None:
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._calls: OrderedDict[str, _Call[T]] = OrderedDict()
        self._lock = threading.Lock()

    def run(self, key: str, compute: Callable[[], T]) -> T:
        """The outcome for `key`: computed by this caller, or shared from another."""
        with self._lock:
            call = self._calls.get(key)
            stale = call is not None and call.done.is_set() and (
                call.error is not None or time.monotonic() - call.finished_at > self._ttl)
            owner = call is None or stale
            if owner:
                call = _Call()
                self._calls[key] = call
                self._calls.move_to_end(key)
                while len(self._calls) > self._max_entries:
                    self._calls.popitem(last=False)
        assert call is not None
        if not owner:
            call.done.wait()
            if call.error is not None:
                raise call.error
            return call.result  # type: ignore[return-value]
        try:
            call.result = compute()
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            call.finished_at = time.monotonic()
            call.done.set()
        return call.result
