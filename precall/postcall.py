"""ElevenLabs post-call webhook bodies (SPEC 5): which call ended, if any."""

from __future__ import annotations

import json
from dataclasses import dataclass

from voiceclone.errors import InvalidPayload

CALL_END_EVENT_TYPES = ("post_call_transcription", "post_call_audio", "call_initiation_failure")


@dataclass(frozen=True)
class PostCallEvent:
    event_type: str
    conversation_id: str
    agent_id: str | None


def parse_post_call(body: bytes) -> PostCallEvent | None:
    """The ended call, or None for an event type this service does not act on."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidPayload("Post-call body is not valid JSON") from None
    if not isinstance(document, dict):
        raise InvalidPayload("Post-call body must be a JSON object")
    event_type = document.get("type")
    if event_type not in CALL_END_EVENT_TYPES:
        return None
    data = document.get("data")
    conversation_id = data.get("conversation_id") if isinstance(data, dict) else None
    if not isinstance(conversation_id, str) or not conversation_id:
        raise InvalidPayload("Post-call event without data.conversation_id")
    agent_id = data.get("agent_id")
    return PostCallEvent(event_type, conversation_id, agent_id if isinstance(agent_id, str) else None)
