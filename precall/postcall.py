"""ElevenLabs post-call webhook bodies (docs/api.md): which call ended, and the ids linked to it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from voiceclone.documents import dig
from voiceclone.errors import InvalidPayload
from voiceclone.naming import ID_PATTERN

CALL_END_EVENT_TYPES = ("post_call_transcription", "post_call_audio", "call_initiation_failure")
# Where ElevenLabs reports the telephony call id that a clone prepared before the call is named after.
RELATED_DYNAMIC_VARIABLES = ("system__call_sid", "precall_conversation_id")


@dataclass(frozen=True)
class PostCallEvent:
    event_type: str
    conversation_id: str
    agent_id: str | None
    related_ids: tuple[str, ...] = ()


def parse_post_call(body: bytes) -> PostCallEvent | None:
    """The ended call, or None for an event type this service does not act on."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
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
    return PostCallEvent(event_type, conversation_id, agent_id if isinstance(agent_id, str) else None,
                         related_ids(data, conversation_id))


def related_ids(data: dict[str, Any], conversation_id: str) -> tuple[str, ...]:
    """The call's telephony id from `metadata.phone_call.call_sid` and the dynamic variables
    (`system__call_sid`, and `precall_conversation_id` where ElevenLabs echoes it); any one suffices."""
    candidates: list[Any] = [dig(data, "metadata", "phone_call", "call_sid")]
    variables = dig(data, "conversation_initiation_client_data", "dynamic_variables")
    if isinstance(variables, dict):
        candidates.extend(variables.get(name) for name in RELATED_DYNAMIC_VARIABLES)
    found: list[str] = []
    for value in candidates:
        if isinstance(value, str) and ID_PATTERN.fullmatch(value) and value != conversation_id and value not in found:
            found.append(value)
    return tuple(found)
