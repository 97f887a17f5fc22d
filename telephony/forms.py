"""What Twilio posts to the telephony routes, read from the raw form body (pure).

Only the fields the flow uses are kept, each checked against Twilio's documented shape; anything
else about a form is ignored. A form that cannot be read at all is an `InvalidPayload` (400).
Phone numbers are kept only to pass on to ElevenLabs' register-call and to compute `caller_ref`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl

from werkzeug.datastructures import MultiDict

from voiceclone.errors import InvalidPayload

MAX_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 200
CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
RECORDING_SID = re.compile(r"RE[0-9a-fA-F]{32}")
_DIGITS_IN_NAME = re.compile(r"[0-9]")


@dataclass(frozen=True)
class TwilioForm:
    call_sid: str
    from_number: str
    to_number: str
    caller_name: str | None = None
    digits: str | None = None
    recording_sid: str | None = None
    recording_url: str | None = None
    recording_status: str | None = None
    recording_ended_at: datetime | None = None
    call_status: str | None = None


def parse_params(body: bytes | bytearray) -> MultiDict[str, str]:
    """The form as Twilio's signature sees it (every value of every name), or `InvalidPayload`."""
    try:
        pairs = parse_qsl(bytes(body).decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise InvalidPayload("The form is not application/x-www-form-urlencoded UTF-8 within 200 fields") from None
    return MultiDict(pairs)


def read_form(params: MultiDict[str, str]) -> TwilioForm:
    """The fields of a call webhook; `CallSid` is required (every voice webhook carries it)."""
    call_sid = params.get("CallSid", "")
    if not CALL_SID.fullmatch(call_sid):
        raise InvalidPayload("CallSid is missing or not a Twilio call sid")
    recording_sid = params.get("RecordingSid") or None
    if recording_sid is not None and not RECORDING_SID.fullmatch(recording_sid):
        raise InvalidPayload("RecordingSid is not a Twilio recording sid")
    return TwilioForm(
        call_sid=call_sid,
        from_number=_phone(params.get("From")),
        to_number=_phone(params.get("To")),
        caller_name=caller_name(params.get("CallerName")),
        digits=(params.get("Digits") or "").strip() or None,
        recording_sid=recording_sid,
        recording_url=params.get("RecordingUrl") or None,
        recording_status=params.get("RecordingStatus") or None,
        recording_ended_at=_ended_at(params.get("RecordingStartTime"), params.get("RecordingDuration")),
        call_status=params.get("CallStatus") or None,
    )


def caller_name(value: str | None) -> str | None:
    """Twilio's `CallerName` (caller-name lookup) as the greeting may use it. A value with digits is no
    name (lookups answer the number itself, or codes), and a phone number must never reach a voice
    name, label or log: dropped."""
    name = " ".join((value or "").split())[:80]
    if not name or _DIGITS_IN_NAME.search(name):
        return None
    return name


def _phone(value: str | None) -> str:
    """`From` / `To` as given (a number, or `anonymous` for a hidden caller), bounded."""
    return (value or "").strip()[:64]


def _ended_at(start: str | None, duration: str | None) -> datetime | None:
    """When the caller stopped speaking, as Twilio's recording callback tells it: `RecordingStartTime`
    (RFC 2822) plus `RecordingDuration` seconds. None when either is missing or malformed."""
    if not start or not duration or not duration.isdigit():
        return None
    try:
        started = parsedate_to_datetime(start)
    except (TypeError, ValueError, IndexError):
        return None
    if started.tzinfo is None:
        return None
    return started + timedelta(seconds=int(duration))


def media_url(recording_url: str | None, recording_sid: str | None, api_base_url: str, account_sid: str) -> str | None:
    """The WAV to fetch, or None when `RecordingUrl` is not this account's recording at
    `TWILIO_API_BASE_URL`: the service never fetches (with its credentials) a URL a form chose."""
    if not recording_url or not recording_sid:
        return None
    expected = f"{api_base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Recordings/{recording_sid}"
    if recording_url not in (expected, expected + ".wav", expected + ".mp3"):
        return None
    return expected + ".wav"
