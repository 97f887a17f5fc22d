"""Where lifecycle events go: a Pub/Sub topic, or an in-process queue on a single machine.

`publish` never raises: a lost event must not fail a call. It is logged as
`voice_event_publish_failed` and the TTL sweep finds the clone later.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from . import events
from .logs import get_logger, log_event

_log = get_logger("events")


class EventSink(Protocol):
    kind: str

    def publish(self, event: dict[str, Any]) -> bool: ...

    def warm_up(self) -> None:
        """Get ready for the first publish (clients, channels) in the process that will publish."""


def _report_failure(event: dict[str, Any], error: BaseException) -> None:
    log_event(_log, logging.ERROR, "Publishing a voice lifecycle event failed", "voice_event_publish_failed",
              lifecycle_event=event.get("event_type"), voice_id=event.get("voice_id"),
              conversation_id=event.get("conversation_id"), error_type=type(error).__name__)


class PubSubPublisher:
    """One lazily created google-cloud-pubsub publisher per instance, tuned for latency.

    Every event is sent at once, unbatched: a call publishes one event and waits for it, so a batch
    would only add its wait (measured on the emulator: 10-17 ms a publish with a 5 ms batch window,
    3-6 ms without). A publish gets `timeout_seconds` in total (retries included) so a Pub/Sub
    hiccup costs a call at most that much. Honours PUBSUB_EMULATOR_HOST.
    """

    kind = "pubsub"

    def __init__(self, topic: str, timeout_seconds: float = 5.0) -> None:
        self.topic = topic
        self._timeout = timeout_seconds
        self._client: Any = None
        self._lock = threading.Lock()

    def _publisher(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.cloud import pubsub_v1

                self._client = pubsub_v1.PublisherClient(
                    batch_settings=pubsub_v1.types.BatchSettings(max_messages=1),
                )
            return self._client

    def warm_up(self) -> None:
        """Create the client and connect its channel before the first call needs them (cold start:
        the channel otherwise connects during the first publish, ~200 ms on the emulator)."""
        try:
            import grpc
            from google.api_core import retry as _  # noqa: F401 - imported here, not during the first publish

            transport = getattr(self._publisher(), "transport", None)
            channel = getattr(transport, "grpc_channel", None)
            if channel is not None:
                grpc.channel_ready_future(channel).result(timeout=self._timeout)
        except Exception as exc:  # noqa: BLE001 - the first publish will try again and log the failure
            _report_failure({"event_type": "warm_up"}, exc)

    def publish(self, event: dict[str, Any]) -> bool:
        try:
            from google.api_core import retry as api_retry

            data, attributes = events.encode(event)
            retry = api_retry.Retry(initial=0.1, maximum=1.0, multiplier=2.0, timeout=self._timeout)
            future = self._publisher().publish(self.topic, data, retry=retry, timeout=self._timeout, **attributes)
            future.result(timeout=self._timeout + 1)
        except Exception as exc:  # noqa: BLE001 - any failure is logged, never raised
            _report_failure(event, exc)
            return False
        return True


class LocalEventQueue:
    """Single-machine stand-in for Pub/Sub: a background thread feeds events to `handler`.

    Like a push subscription, a handler exception means "redeliver later": the event is retried
    with exponential backoff (`min_backoff` to `max_backoff`) up to `max_attempts` times, then
    dropped with an error log (the dead-letter equivalent). Events live in memory only.
    """

    kind = "local"

    def __init__(
        self,
        handler: Callable[[dict[str, Any]], None],
        min_backoff: float = 10.0,
        max_backoff: float = 600.0,
        max_attempts: int = 100,
    ) -> None:
        self._handler = handler
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._max_attempts = max_attempts
        self._pending: list[tuple[float, int, int, dict[str, Any]]] = []
        self._sequence = 0
        self._condition = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False

    def publish(self, event: dict[str, Any]) -> bool:
        self._schedule(event, attempt=1, delay=0.0)
        return True

    def warm_up(self) -> None:
        """Nothing to prepare: the worker thread starts with the first event."""

    def _schedule(self, event: dict[str, Any], attempt: int, delay: float) -> None:
        with self._condition:
            if self._closed:
                return
            self._sequence += 1
            heapq.heappush(self._pending, (time.monotonic() + delay, self._sequence, attempt, event))
            # Started lazily: a thread started before gunicorn forks its worker would not survive.
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="local-event-queue", daemon=True)
                self._worker.start()
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._closed and (not self._pending or self._pending[0][0] > time.monotonic()):
                    timeout = self._pending[0][0] - time.monotonic() if self._pending else None
                    self._condition.wait(timeout)
                if self._closed:
                    return
                _, _, attempt, event = heapq.heappop(self._pending)
            try:
                self._handler(event)
            except Exception as exc:  # noqa: BLE001 - the handler asked for redelivery
                if attempt >= self._max_attempts:
                    log_event(_log, logging.ERROR, "Dropping a lifecycle event after too many attempts",
                              "voice_event_dropped", lifecycle_event=event.get("event_type"),
                              conversation_id=event.get("conversation_id"), attempts=attempt)
                    continue
                delay = min(self._max_backoff, self._min_backoff * 2 ** (attempt - 1))
                log_event(_log, logging.INFO, "Lifecycle event will be redelivered", "voice_event_redelivery",
                          lifecycle_event=event.get("event_type"), conversation_id=event.get("conversation_id"),
                          attempt=attempt, delay_seconds=delay, error_type=type(exc).__name__)
                self._schedule(event, attempt + 1, delay)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker once the event in hand is done; pending ones are dropped (the TTL
        sweep is the backstop)."""
        with self._condition:
            self._closed = True
            self._pending.clear()
            self._condition.notify_all()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)
