"""Voice lifecycle messages (docs/events.md): built, encoded and decoded here, sent elsewhere.

Body: UTF-8 JSON; attribute `event_type` equals the body's `event_type`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .naming import iso_utc

VOICE_CREATED = "voice.created"
CALL_ENDED = "call.ended"
SWEEP = "sweep"
EVENT_TYPES = (VOICE_CREATED, CALL_ENDED, SWEEP)


class MalformedEvent(ValueError):
    """A message that can never be processed; acknowledged, not retried."""


def voice_created(voice_id: str, voice_name: str, conversation_id: str, agent_id: str, created_at: datetime) -> dict[str, str]:
    return {
        "event_type": VOICE_CREATED,
        "voice_id": voice_id,
        "voice_name": voice_name,
        "conversation_id": conversation_id,
        "agent_id": agent_id,
        "created_at": iso_utc(created_at),
    }


def call_ended(conversation_id: str, agent_id: str | None, ended_at: datetime,
               related_ids: Sequence[str] = ()) -> dict[str, Any]:
    """`related_ids`: the call's telephony ids, so clones prepared under the call sid go with it."""
    event: dict[str, Any] = {"event_type": CALL_ENDED, "conversation_id": conversation_id, "agent_id": agent_id,
                             "ended_at": iso_utc(ended_at)}
    if related_ids:
        event["related_ids"] = list(related_ids)
    return event


def related_ids(event: dict[str, Any]) -> list[str]:
    """The well-formed `related_ids` of a `call.ended` (anything else in the list is ignored)."""
    values = event.get("related_ids")
    if not isinstance(values, list):
        return []
    return [v for v in values if isinstance(v, str) and v and v != event.get("conversation_id")]


def sweep() -> dict[str, str]:
    return {"event_type": SWEEP}


def encode(event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """Message data and attributes for publishing."""
    return json.dumps(event, separators=(",", ":")).encode("utf-8"), {"event_type": event["event_type"]}


_REQUIRED = {
    VOICE_CREATED: ("voice_id", "conversation_id"),
    CALL_ENDED: ("conversation_id",),
    SWEEP: (),
}


def decode(data: bytes) -> dict[str, Any]:
    """Parse and check a message body; MalformedEvent if it can never be handled."""
    try:
        event = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise MalformedEvent("message body is not JSON") from None
    if not isinstance(event, dict) or event.get("event_type") not in EVENT_TYPES:
        raise MalformedEvent("unknown or missing event_type")
    for field in _REQUIRED[event["event_type"]]:
        if not isinstance(event.get(field), str) or not event[field]:
            raise MalformedEvent(f"{event['event_type']} without {field}")
    return event
