"""Per-instance cache of what each agent allows to be overridden (docs/api.md, `/conversation-init`), read from ElevenLabs.

`/conversation-init` must answer in about a second and must never send an override the agent
does not allow, so it reads permissions from here: fresh entries at once, a missing one waited
for only as long as the caller's budget allows (then "unknown": no override). Entries are
refreshed in the background before they expire; failures are remembered briefly so a wrong agent
id does not cost every call a round trip.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from voiceclone.deadline import Deadline
from voiceclone.elevenlabs_client import ElevenLabsClient
from voiceclone.logs import get_logger, log_event

from .init_answer import OverridePermissions

_log = get_logger("agent_overrides")
FETCH_SECONDS = 10.0


class _Entry:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.permissions: OverridePermissions | None = None
        self.fetched_at = 0.0
        self.refreshing = False


class AgentOverrides:
    def __init__(self, client: ElevenLabsClient, ttl_seconds: float = 300.0, failure_ttl_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._failure_ttl = failure_ttl_seconds
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def prefetch(self, agent_id: str) -> None:
        """Start reading an agent's permissions now (start-up), without waiting for them."""
        self._entry(agent_id)

    def get(self, agent_id: str, wait_seconds: float) -> OverridePermissions | None:
        """The agent's permissions, waiting at most `wait_seconds` for a fetch; None when unknown."""
        entry = self._entry(agent_id)
        entry.done.wait(max(0.0, wait_seconds))
        return entry.permissions if entry.done.is_set() else None

    def _entry(self, agent_id: str) -> _Entry:
        """The entry to answer from: a new fetch when there is none or it expired; a background
        refresh (answering from the old entry meanwhile) once it is 80% through its life."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(agent_id)
            if entry is None or (entry.done.is_set() and now - entry.fetched_at >= self._life(entry)):
                entry = self._entries[agent_id] = _Entry()
                self._start(agent_id, entry)
            elif entry.done.is_set() and not entry.refreshing and now - entry.fetched_at >= 0.8 * self._life(entry):
                entry.refreshing = True
                self._start(agent_id, _Entry(), replacing=entry)
            return entry

    def _life(self, entry: _Entry) -> float:
        return self._ttl if entry.permissions is not None else self._failure_ttl

    def _start(self, agent_id: str, entry: _Entry, replacing: _Entry | None = None) -> None:
        threading.Thread(target=self._fetch, args=(agent_id, entry, replacing), daemon=True,
                         name=f"agent-overrides-{agent_id[:16]}").start()

    def _fetch(self, agent_id: str, entry: _Entry, replacing: _Entry | None) -> None:
        try:
            entry.permissions = OverridePermissions.from_agent(self._client.get_agent(agent_id, Deadline(FETCH_SECONDS)))
        except Exception as exc:  # noqa: BLE001 - unknown permissions mean no override, never a failed call
            log_event(_log, logging.WARNING, "Could not read the agent's override settings; answering without overrides",
                      "agent_overrides_unknown", agent_id=agent_id, error_type=type(exc).__name__,
                      status=getattr(exc, "status", None), reason=getattr(exc, "message", None))
        entry.fetched_at = self._clock()
        entry.done.set()
        with self._lock:
            if replacing is None or entry.permissions is not None:
                self._entries[agent_id] = entry
            else:
                replacing.refreshing = False  # a failed refresh keeps the older answer until it expires
        if entry.permissions is not None:
            log_event(_log, logging.INFO, "Agent override settings read", "agent_overrides_read", agent_id=agent_id,
                      first_message=entry.permissions.first_message, voice=entry.permissions.voice,
                      initiation_webhook=entry.permissions.initiation_webhook)
