"""This instance's memory of clones prepared for calls that are about to start (docs/api.md, `/conversation-init`).

`/webhook` remembers each clone under its conversation id (the call sid in the two-step flow)
and its `caller_ref`; `/conversation-init` asks here first, so a call whose sample reached this
instance costs no ElevenLabs round trip, and the greeting uses the name the sample came with.
Bounded and in memory only: another instance, or a restart, falls back to ElevenLabs search.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class PreparedClone:
    voice_id: str
    voice_name: str
    conversation_id: str
    caller_name: str | None
    caller_ref: str | None
    created_at: datetime

    def fresh(self, now: datetime, max_age_seconds: float) -> bool:
        return (now - self.created_at).total_seconds() <= max_age_seconds


class PreparedClones:
    def __init__(self, max_entries: int = 4096) -> None:
        self._max_entries = max_entries
        self._by_conversation: OrderedDict[str, PreparedClone] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, clone: PreparedClone) -> None:
        with self._lock:
            self._by_conversation[clone.conversation_id] = clone
            self._by_conversation.move_to_end(clone.conversation_id)
            while len(self._by_conversation) > self._max_entries:
                self._by_conversation.popitem(last=False)

    def forget(self, voice_id: str) -> None:
        with self._lock:
            for key in [k for k, c in self._by_conversation.items() if c.voice_id == voice_id]:
                del self._by_conversation[key]

    def find(self, call_sid: str | None, caller_ref: str | None, now: datetime, max_age_seconds: float) -> PreparedClone | None:
        """The newest fresh clone of this call, else the newest fresh one of this caller."""
        with self._lock:
            clones = list(self._by_conversation.values())
        fresh = [c for c in clones if c.fresh(now, max_age_seconds)]
        for matches in ([c for c in fresh if call_sid and c.conversation_id == call_sid],
                        [c for c in fresh if caller_ref and c.caller_ref == caller_ref]):
            if matches:
                return max(matches, key=lambda c: c.created_at)
        return None
