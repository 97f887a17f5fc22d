"""This service's clones in the ElevenLabs account: find them, judge them, delete them.

Shared by the pre-call flow (duplicate webhooks, freeing a slot on `voice_limit_reached`) and
the cleanup function. A voice is ours only if its labels say `source: precall-webhook` and
`type: instant_clone`; nothing else is ever deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .deadline import Deadline
from .elevenlabs_client import ElevenLabsClient, ElevenLabsError
from .logs import get_logger, log_event
from .naming import CLONE_SOURCE, CLONE_TYPE, conversation_suffix, parse_iso_utc

LIVE_CONVERSATION_STATUSES = ("initiated", "in-progress")
ENDED_CONVERSATION_STATUSES = ("processing", "done", "failed")
_log = get_logger("clones")


@dataclass(frozen=True)
class Clone:
    voice_id: str
    name: str
    conversation_id: str | None
    agent_id: str | None
    created_at: datetime | None

    @classmethod
    def from_voice(cls, voice: dict[str, Any]) -> Clone | None:
        """The clone behind an ElevenLabs voice object, or None if the voice is not ours."""
        labels = voice.get("labels") or {}
        if not isinstance(labels, dict) or labels.get("source") != CLONE_SOURCE or labels.get("type") != CLONE_TYPE:
            return None
        voice_id = voice.get("voice_id")
        if not isinstance(voice_id, str) or not voice_id:
            return None
        created = parse_iso_utc(labels.get("created_at", ""))
        if created is None and isinstance(voice.get("created_at_unix"), (int, float)):
            created = datetime.fromtimestamp(voice["created_at_unix"], timezone.utc)
        return cls(voice_id, str(voice.get("name") or ""), labels.get("conversation_id"), labels.get("agent_id"), created)

    def belongs_to(self, conversation_id: str) -> bool:
        if self.conversation_id is not None:
            return self.conversation_id == conversation_id
        return self.name.endswith("_" + conversation_suffix(conversation_id))

    def age_seconds(self, now: datetime) -> float | None:
        return None if self.created_at is None else (now - self.created_at).total_seconds()


class CloneInventory:
    def __init__(self, client: ElevenLabsClient, ttl_seconds: int, now: Callable[[], datetime]) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._now = now

    def for_conversation(self, conversation_id: str, deadline: Deadline) -> list[Clone]:
        """Our clones of one call, found by ElevenLabs search (name, description, labels)."""
        found = (Clone.from_voice(v) for v in self._client.iter_voices(deadline, search=conversation_id))
        return [c for c in found if c is not None and c.belongs_to(conversation_id)]

    def all(self, deadline: Deadline) -> list[Clone]:
        return [c for c in map(Clone.from_voice, self._client.iter_voices(deadline)) if c is not None]

    def get(self, voice_id: str, deadline: Deadline) -> Clone | None:
        voice = self._client.get_voice(voice_id, deadline)
        return None if voice is None else Clone.from_voice(voice)

    def is_expired(self, clone: Clone) -> bool:
        age = clone.age_seconds(self._now())
        return age is not None and age > self._ttl

    def call_is_over(self, conversation_id: str | None, deadline: Deadline) -> bool:
        """True once ElevenLabs reports the conversation ended; unknown ids count as live
        (the pre-call webhook can fire before ElevenLabs lists the conversation)."""
        if not conversation_id:
            return False
        return self._client.get_conversation_status(conversation_id, deadline) in ENDED_CONVERSATION_STATUSES

    def delete(self, clone: Clone, deadline: Deadline, reason: str) -> bool:
        """Delete one clone. 404 counts as done; 429/5xx/connection errors raise for a retry;
        any other refusal is logged and treated as final. Returns True if a voice was deleted."""
        try:
            deleted = self._client.delete_voice(clone.voice_id, deadline)
        except ElevenLabsError as exc:
            log_event(_log, logging.ERROR if exc.retryable else logging.WARNING, "Voice delete failed",
                      "voice_delete_failed", voice_id=clone.voice_id, conversation_id=clone.conversation_id,
                      status=exc.status, reason=exc.message, will_retry=exc.retryable)
            if exc.retryable:
                raise
            return False
        log_event(_log, logging.INFO, "Voice deleted" if deleted else "Voice already gone", "voice_deleted",
                  voice_id=clone.voice_id, conversation_id=clone.conversation_id, reason=reason, existed=deleted)
        return deleted

    def free_slot(self, deadline: Deadline, keep_conversation: str | None = None) -> bool:
        """Delete our oldest clone whose call is over or whose TTL passed; False if none."""
        candidates = sorted(
            (c for c in self.all(deadline) if c.conversation_id != keep_conversation),
            key=lambda c: c.created_at or datetime.min.replace(tzinfo=timezone.utc),
        )
        for clone in candidates:
            if self.is_expired(clone) or self.call_is_over(clone.conversation_id, deadline):
                if self.delete(clone, deadline, reason="voice_limit_reached"):
                    return True
        return False
