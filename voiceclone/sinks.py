"""Where lifecycle events go: a Pub/Sub topic, or a durable local queue on a single machine.

`publish` never raises: a lost event must not fail a call. It is logged as
`voice_event_publish_failed` and the TTL sweep finds the clone later.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from . import events
from .local_queue import Delivery, QueueStore
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
    """Single-machine stand-in for Pub/Sub: events in a durable SQLite queue (`voiceclone.local_queue`),
    fed to `handler` (the cleanup function's `handle_data`) by a consumer thread in every process that
    serves. Like a push subscription, a handler exception means "redeliver later": the event is due
    again after an exponential backoff (`min_backoff` to `max_backoff`), and after `max_attempts`
    deliveries it moves to the dead-letter table (`python -m cleanup redrive` puts it back).
    """

    kind = "local"

    def __init__(
        self,
        store: QueueStore,
        handler: Callable[[bytes], None],
        clock: Callable[[], float] = time.time,
        min_backoff: float = 10.0,
        max_backoff: float = 600.0,
        max_attempts: int = 100,
        poll_seconds: float = 1.0,
        orphan_check_seconds: float = 5.0,
    ) -> None:
        self.store = store
        self._handler = handler
        self._clock = clock
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._max_attempts = max_attempts
        self._poll = poll_seconds
        self._orphan_check = orphan_check_seconds
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._worker: threading.Thread | None = None
        self._worker_pid = 0
        self._start_lock = threading.Lock()

    def publish(self, event: dict[str, Any]) -> bool:
        try:
            data, _ = events.encode(event)
            self.store.add(data, event.get("event_type"), event.get("conversation_id"))
        except Exception as exc:  # noqa: BLE001 - a full disk or a locked file is logged, never raised
            _report_failure(event, exc)
            return False
        self._wake.set()
        return True

    def warm_up(self) -> None:
        """Start this process's consumer (after gunicorn's fork: a thread of the parent would not
        serve the worker); it first takes back what a killed process held, then works off what is due."""
        with self._start_lock:
            if self._closed.is_set() or (self._worker_pid == os.getpid() and self._worker is not None):
                return
            self._worker_pid = os.getpid()
            self._worker = threading.Thread(target=self._run, name="local-event-queue", daemon=True)
            self._worker.start()

    def delay_after(self, attempt: int) -> float:
        """Backoff before delivery `attempt + 1`, doubling from `min_backoff` up to `max_backoff`."""
        return min(self._max_backoff, self._min_backoff * 2 ** (attempt - 1))

    def deliver_one(self) -> bool:
        """Claim the event due first and hand it to the handler; False if none was due."""
        delivery = self.store.claim()
        if delivery is None:
            return False
        try:
            self._handler(delivery.data)
        except Exception as exc:  # noqa: BLE001 - the handler asked for redelivery
            self._failed(delivery, exc)
        else:
            self.store.ack(delivery)
        return True

    def _failed(self, delivery: Delivery, error: Exception) -> None:
        reason = f"{type(error).__name__}: {error}"[:500]
        event_type, conversation_id = _peek(delivery.data)
        if delivery.attempt >= self._max_attempts:
            self.store.dead_letter(delivery, reason)
            log_event(_log, logging.ERROR, "Lifecycle event dead-lettered after too many deliveries",
                      "voice_event_dead_lettered", lifecycle_event=event_type, conversation_id=conversation_id,
                      attempts=delivery.attempt, error_type=type(error).__name__)
            return
        delay = self.delay_after(delivery.attempt)
        self.store.retry(delivery, delay, reason)
        log_event(_log, logging.INFO, "Lifecycle event will be redelivered", "voice_event_redelivery",
                  lifecycle_event=event_type, conversation_id=conversation_id, attempt=delivery.attempt,
                  delay_seconds=delay, error_type=type(error).__name__)

    def _run(self) -> None:
        next_orphan_check = 0.0
        while not self._closed.is_set():
            self._wake.clear()
            try:
                if time.monotonic() >= next_orphan_check:
                    released = self.store.release_orphans()
                    if released:
                        log_event(_log, logging.WARNING, "Events held by a process that is gone are due again",
                                  "voice_event_lease_released", events=released)
                    next_orphan_check = time.monotonic() + self._orphan_check
                if self.deliver_one():
                    continue
                due = self.store.next_due()
            except Exception as exc:  # noqa: BLE001 - a locked or vanished file: log, wait, try again
                log_event(_log, logging.ERROR, "The local event queue could not be read", "voice_event_queue_error",
                          error_type=type(exc).__name__, reason=str(exc)[:200])
                due = None
            wait = self._poll if due is None else max(0.0, min(self._poll, due - self._clock()))
            self._wake.wait(wait)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the consumer once the event in hand is done; what is pending stays in the file."""
        with self._start_lock:
            self._closed.set()
            self._wake.set()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread() and self._worker_pid == os.getpid():
            worker.join(timeout)
        self.store.close()


def _peek(data: bytes) -> tuple[str | None, str | None]:
    """Event type and conversation of a stored event, for log lines (None for a malformed one)."""
    try:
        event = events.decode(data)
    except events.MalformedEvent:
        return None, None
    return event.get("event_type"), event.get("conversation_id")
