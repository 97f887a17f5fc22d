"""Voice names, labels and descriptions that mark a clone as this service's (pure, SPEC 4.3)."""

from __future__ import annotations

import re
from datetime import datetime, timezone

MAX_VOICE_NAME_LENGTH = 100
CLONE_SOURCE = "precall-webhook"
CLONE_TYPE = "instant_clone"
_NOT_NAME_CHARS = re.compile(r"[^\w-]", re.UNICODE)
# Caller part "C" + "_Clone_" + "YYYYMMDD_HHMMSS" + "_": what a conversation id leaves room for.
MAX_CONVERSATION_SUFFIX_LENGTH = MAX_VOICE_NAME_LENGTH - len("C_Clone_20250101_000000_")


def conversation_suffix(conversation_id: str) -> str:
    """The conversation id as it appears in voice names: without a leading `conv_`."""
    return conversation_id[5:] if conversation_id.startswith("conv_") else conversation_id


def voice_name(caller_name: str | None, created_at: datetime, conversation_id: str) -> str:
    """`{CallerName}_Clone_{YYYYMMDD_HHMMSS}_{conversation}` in at most 100 characters.

    The caller part keeps Unicode letters, digits, `-` and `_`, becomes `Caller` when nothing
    is left, and is cut so the whole fits; the conversation part is never cut (ids that cannot
    fit are refused at parsing).
    """
    suffix = f"_Clone_{created_at.astimezone(timezone.utc):%Y%m%d_%H%M%S}_{conversation_suffix(conversation_id)}"
    caller = _NOT_NAME_CHARS.sub("", caller_name or "") or "Caller"
    return caller[: max(1, MAX_VOICE_NAME_LENGTH - len(suffix))] + suffix


def clone_labels(conversation_id: str, agent_id: str, created_at: datetime) -> dict[str, str]:
    """Labels that mark a voice as ours and tie it to its call (read back by cleanup)."""
    return {
        "conversation_id": conversation_id,
        "agent_id": agent_id,
        "type": CLONE_TYPE,
        "source": CLONE_SOURCE,
        "created_at": iso_utc(created_at),
    }


def clone_description(conversation_id: str) -> str:
    return f"Instant clone for conversation {conversation_id}"


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_iso_utc(text: str) -> datetime | None:
    """Inverse of `iso_utc`, tolerant of offsets; None for anything unparsable."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError, TypeError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
