"""Voice names, labels and descriptions that mark a clone as this service's (pure; docs/events.md)."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timezone

MAX_VOICE_NAME_LENGTH = 100
CLONE_SOURCE = "precall-webhook"
CLONE_TYPE = "instant_clone"
_NOT_NAME_CHARS = re.compile(r"[^\w-]", re.UNICODE)
# Caller part "C" + "_Clone_" + "YYYYMMDD_HHMMSS" + "_": what a conversation id leaves room for.
MAX_CONVERSATION_SUFFIX_LENGTH = MAX_VOICE_NAME_LENGTH - len("C_Clone_20250101_000000_")
# Conversation, call and agent ids: they go into URLs and voice names, so letters, digits, '-', '_'.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")
DEFAULT_CALLER_PART = "Caller"
DESCRIPTION_PREFIX = "Instant clone for conversation "
_DESCRIPTION = re.compile(re.escape(DESCRIPTION_PREFIX) + f"({ID_PATTERN.pattern})" + r"(?: caller ([0-9a-f]{16}))?")
_NAME_HEAD = re.compile(r"(.+)_Clone_(\d{8}_\d{6})", re.DOTALL)
_PHONE_NOISE = re.compile(r"[\s().-]")


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
    caller = _NOT_NAME_CHARS.sub("", caller_name or "") or DEFAULT_CALLER_PART
    return caller[: max(1, MAX_VOICE_NAME_LENGTH - len(suffix))] + suffix


def clone_labels(conversation_id: str, agent_id: str, created_at: datetime, caller_ref: str | None = None) -> dict[str, str]:
    """Labels that mark a voice as ours and tie it to its call (read back by cleanup).

    ElevenLabs documents label keys as language, accent, gender and age and may drop these, so
    the name and description carry the same facts (`parse_clone_identity`)."""
    labels = {
        "conversation_id": conversation_id,
        "agent_id": agent_id,
        "type": CLONE_TYPE,
        "source": CLONE_SOURCE,
        "created_at": iso_utc(created_at),
    }
    if caller_ref:
        labels["caller_ref"] = caller_ref
    return labels


def clone_description(conversation_id: str, caller_ref: str | None = None) -> str:
    base = f"{DESCRIPTION_PREFIX}{conversation_id}"
    return f"{base} caller {caller_ref}" if caller_ref else base


def caller_ref(secret: str, phone_number: str) -> str:
    """What is kept of a caller's phone number: 16 hex digits of a keyed hash (`caller_ref`, docs/api.md).

    Spaces, dashes, dots and brackets are ignored so `+31 6 1234-5678` and `+31612345678` match."""
    normalized = _PHONE_NOISE.sub("", phone_number)
    return hmac.new(secret.encode("utf-8"), normalized.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class CloneIdentity:
    """What a voice's name and description say about the clone, without any label."""

    conversation_id: str
    caller_name: str
    created_at: datetime
    caller_ref: str | None


def parse_clone_identity(name: str | None, description: str | None) -> CloneIdentity | None:
    """This service's clone as recognised by name and description alone (docs/events.md), else None.

    The description names the conversation; the name must end in `_Clone_{timestamp}_{suffix}`
    for that same conversation, so one foreign voice that merely looks similar does not match."""
    described = _DESCRIPTION.fullmatch(description or "")
    if described is None or not name:
        return None
    conversation_id = described.group(1)
    tail = "_" + conversation_suffix(conversation_id)
    if not name.endswith(tail):
        return None
    stamped = _NAME_HEAD.fullmatch(name[: -len(tail)])
    if stamped is None:
        return None
    try:
        created = datetime.strptime(stamped.group(2), "%Y%m%d_%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return CloneIdentity(conversation_id, stamped.group(1), created, described.group(2))


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_iso_utc(text: str) -> datetime | None:
    """Inverse of `iso_utc`, tolerant of offsets; None for anything unparsable."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError, TypeError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
