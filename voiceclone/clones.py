"""This service's clones in the ElevenLabs account: find them, judge them, delete them.

Shared by the pre-call flow (duplicate webhooks, freeing a slot on `voice_limit_reached`) and
the cleanup function. A voice is ours only if its labels say so, or, without those labels, its
name and description follow this service's pattern (`Clone.from_voice`); nothing else is ever deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .deadline import Deadline
from .elevenlabs_client import ElevenLabsClient, ElevenLabsError
from .logs import get_logger, log_event
from .naming import CLONE_SOURCE, CLONE_TYPE, DEFAULT_CALLER_PART, conversation_suffix, parse_clone_identity, parse_iso_utc

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
    caller_ref: str | None = None

    @classmethod
    def from_voice(cls, voice: dict[str, Any]) -> Clone | None:
        """The clone behind an ElevenLabs voice object, or None if the voice is not ours.

        Ours: labels `source: precall-webhook` and `type: instant_clone`, or, when those labels
        are gone (ElevenLabs may keep only language, accent, gender, age), a name and description
        in this service's pattern for the same conversation. Age: the `created_at` label, else
        `created_at_unix`, else the timestamp in the name."""
        voice_id = voice.get("voice_id")
        if not isinstance(voice_id, str) or not voice_id:
            return None
        labels = voice.get("labels")
        labels = labels if isinstance(labels, dict) else {}
        name = str(voice.get("name") or "")
        identity = parse_clone_identity(name, voice.get("description") if isinstance(voice.get("description"), str) else None)
        labelled = labels.get("source") == CLONE_SOURCE and labels.get("type") == CLONE_TYPE
        if not labelled and identity is None:
            return None
        created = parse_iso_utc(labels.get("created_at", ""))
        if created is None and isinstance(voice.get("created_at_unix"), (int, float)):
            created = datetime.fromtimestamp(voice["created_at_unix"], timezone.utc)
        if created is None and identity is not None:
            created = identity.created_at
        conversation_id = _text(labels.get("conversation_id")) or (identity.conversation_id if identity else None)
        caller = _text(labels.get("caller_ref")) or (identity.caller_ref if identity else None)
        return cls(voice_id, name, conversation_id, _text(labels.get("agent_id")), created, caller)

    @property
    def caller_name(self) -> str | None:
        """The caller part of the voice name; None when it is the placeholder for no name."""
        head = self.name.split("_Clone_", 1)[0] if "_Clone_" in self.name else ""
        return head if head and head != DEFAULT_CALLER_PART else None

    def belongs_to(self, conversation_id: str) -> bool:
        if self.conversation_id is not None:
            return self.conversation_id == conversation_id
        return self.name.endswith("_" + conversation_suffix(conversation_id))

    def age_seconds(self, now: datetime) -> float | None:
        return None if self.created_at is None else (now - self.created_at).total_seconds()


def _newest_first(clones: Iterable[Clone]) -> list[Clone]:
    return sorted(clones, key=lambda c: c.created_at or _EPOCH, reverse=True)


_EPOCH = datetime.min.replace(tzinfo=timezone.utc)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class CloneInventory:
    def __init__(self, client: ElevenLabsClient, ttl_seconds: int, now: Callable[[], datetime]) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._now = now

    def for_conversation(self, conversation_id: str, deadline: Deadline) -> list[Clone]:
        """Our clones of one call, newest first. Found by ElevenLabs search for the id as it appears
        in the voice name (search covers names and descriptions; labels may be gone), then checked."""
        found = (Clone.from_voice(v) for v in self._client.iter_voices(deadline, search=conversation_suffix(conversation_id)))
        return _newest_first(c for c in found if c is not None and c.belongs_to(conversation_id))

    def for_caller(self, caller_ref: str, deadline: Deadline) -> list[Clone]:
        """Our clones made for one caller (`caller_ref` is in the description), newest first."""
        found = (Clone.from_voice(v) for v in self._client.iter_voices(deadline, search=caller_ref))
        return _newest_first(c for c in found if c is not None and c.caller_ref == caller_ref)

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
            key=lambda c: c.created_at or _EPOCH,
        )
        for clone in candidates:
            if self.is_expired(clone) or self.call_is_over(clone.conversation_id, deadline):
                if self.delete(clone, deadline, reason="voice_limit_reached"):
                    return True
        return False
