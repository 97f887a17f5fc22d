"""Pre-call request bodies (docs/api.md) parsed from raw bytes into a `PrecallRequest`.

Parsing happens only after the signature over the same bytes was verified. Both JSON (base64
sample) and multipart (file part `voice_sample`) end in the same shape.
"""

from __future__ import annotations

import binascii
import io
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

import pybase64
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import MultiPartParser
from werkzeug.http import parse_options_header

from voiceclone.errors import InvalidPayload, MissingVoiceSample, SampleTooLarge
from voiceclone.naming import ID_PATTERN, MAX_CONVERSATION_SUFFIX_LENGTH, conversation_suffix

_PHONE_PATTERN = re.compile(r"\+?[0-9][0-9 ().-]{2,31}")
_WHITESPACE = re.compile(rb"\s+")
# Where the JSON string value of a "data" key starts.
_DATA_VALUE = re.compile(rb'"data"\s*:\s*"')
# RFC 2046: 1 to 70 of these characters, the last not a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,./:=? -]{0,69}[0-9A-Za-z'()+_,./:=?-]")
MAX_FORM_PARTS = 64
MAX_TEXT_PART_BYTES = 1024 * 1024


@dataclass(frozen=True)
class CallerInfo:
    name: str | None = None
    date_of_birth: str | None = None

    def as_response(self) -> dict[str, str | None]:
        return {"Name": self.name, "DateOfBirth": self.date_of_birth}


@dataclass(frozen=True)
class VoiceSample:
    data: bytes
    filename: str | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class PrecallRequest:
    """`call_sid` links a sample sent before the call to ElevenLabs' initiation webhook; `caller_id`
    (a phone number) is only ever used to compute `caller_ref`, never stored or logged."""

    conversation_id: str
    agent_id: str
    sample: VoiceSample
    caller: CallerInfo
    call_sid: str | None = None
    caller_id: str | None = None


def peek_conversation_id(body: bytes, content_type: str | None) -> str | None:
    """Best-effort id for error bodies when full parsing fails; never raises."""
    match = re.search(rb'"conversation_id"\s*:\s*"([A-Za-z0-9_-]{1,128})"', body[:65536])
    if match is None and content_type and "multipart" in content_type:
        match = re.search(rb'name="conversation_id"\r\n\r\n([A-Za-z0-9_-]{1,128})\r\n', body)
    return match.group(1).decode("ascii") if match else None


def parse_request(body: bytes, content_type: str | None, default_agent_id: str | None, max_sample_bytes: int) -> PrecallRequest:
    mime, _ = parse_options_header(content_type or "")
    if mime == "multipart/form-data":
        return parse_multipart(body, content_type or "", default_agent_id, max_sample_bytes)
    if mime in ("application/json", "") or mime.endswith("+json"):
        return parse_json(body, default_agent_id, max_sample_bytes)
    raise InvalidPayload(f"Unsupported Content-Type {mime!r}: send application/json or multipart/form-data")


def parse_json(body: bytes, default_agent_id: str | None, max_sample_bytes: int) -> PrecallRequest:
    document, data = _load_json(body)
    call_sid = _call_sid(document.get("call_sid"))
    conversation_id = _conversation_id(document.get("conversation_id"), call_sid)
    caller_id = _caller_id(document.get("caller_id"))
    agent_id = _agent_id(document.get("agent_id"), default_agent_id)
    caller = _caller(document.get("caller_metadata"), None, None)
    sample = document.get("voice_sample")
    if sample is None or sample == {} or sample == "":
        raise MissingVoiceSample("voice_sample is required")
    if not isinstance(sample, dict):
        raise InvalidPayload("voice_sample must be an object with base64 'data'")
    if data is None:
        value = sample.get("data")
        if value is None or value == "":
            raise MissingVoiceSample("voice_sample.data is required")
        if not isinstance(value, str):
            raise InvalidPayload("voice_sample.data must be a base64 string")
        data = _decode_base64(value)
    if len(data) > max_sample_bytes:
        raise SampleTooLarge(f"Voice sample is larger than {max_sample_bytes} bytes")
    return PrecallRequest(
        conversation_id,
        agent_id,
        VoiceSample(data, _optional_text(sample.get("filename"), "voice_sample.filename"),
                    _optional_text(sample.get("content_type"), "voice_sample.content_type")),
        caller,
        call_sid,
        caller_id,
    )


def _load_json(body: bytes) -> tuple[dict[str, Any], bytes | None]:
    """The JSON document, and the decoded sample when it could be taken without a 13 MB Python str.

    The first `"data": "` value is cut out, an unguessable marker put in its place, and the rest
    parsed. The cut is used only if the marker is `voice_sample.data` and the cut bytes are strict
    base64. Then the marker string is exactly that token (no one can place a copy of it, so
    duplicate keys cannot forge it), the cut holds no quote, backslash or control character, and
    `json.loads(body)` gives this document with the cut string in the marker's place. Anything
    else (escapes, raw control characters, another key order) is parsed whole by `json.loads`:
    the service reads exactly what a standard JSON parser reads.
    """
    match = _DATA_VALUE.search(body)
    end = body.find(b'"', match.end()) if match is not None else -1
    if match is not None and end >= 0:
        marker = secrets.token_hex(16)
        try:
            document = _json_object(b"".join((body[:match.end()], marker.encode("ascii"), body[end:])), "Request body")
        except InvalidPayload:
            document = {}
        sample = document.get("voice_sample")
        if isinstance(sample, dict) and sample.get("data") == marker:
            data = _strict_base64(memoryview(body)[match.end():end])
            if data:
                return document, data
    document = _json_object(body, "Request body")
    if isinstance(document.get("voice_sample"), str):  # a bare base64 string is accepted too
        document["voice_sample"] = {"data": document["voice_sample"]}
    return document, None


def _json_object(text: bytes | str, what: str) -> dict[str, Any]:
    """`json.loads`, as it is, of an object; its failures (deep nesting is a RecursionError) are `400`s."""
    try:
        document = json.loads(text)
    except RecursionError:
        raise InvalidPayload(f"{what} is nested too deeply") from None
    except ValueError:
        raise InvalidPayload(f"{what} is not valid JSON") from None
    if not isinstance(document, dict):
        raise InvalidPayload(f"{what} must be a JSON object")
    return document


def parse_multipart(body: bytes, content_type: str, default_agent_id: str | None, max_sample_bytes: int) -> PrecallRequest:
    _, options = parse_options_header(content_type)
    boundary = options.get("boundary", "")
    if not _BOUNDARY.fullmatch(boundary):
        raise InvalidPayload("multipart boundary missing or not 1-70 RFC 2046 characters")
    # Files go to memory, never to a temporary file: samples must not touch the disk. 64 KiB
    # reads are werkzeug's sweet spot (1 MiB reads make its boundary search ~10x slower).
    parser = MultiPartParser(stream_factory=_memory_stream, max_form_memory_size=MAX_TEXT_PART_BYTES,
                             max_form_parts=MAX_FORM_PARTS, buffer_size=64 * 1024)
    try:
        form, files = parser.parse(io.BytesIO(body), boundary.encode("ascii"), len(body))
    except ValueError:
        raise InvalidPayload("Malformed multipart body") from None
    except RequestEntityTooLarge:  # werkzeug's word for its limits; the body itself is within ours
        raise InvalidPayload(f"Malformed multipart body: more than {MAX_FORM_PARTS} parts, or a text part or part "
                             f"headers over {MAX_TEXT_PART_BYTES // 1024} KiB") from None
    call_sid = _call_sid(form.get("call_sid"))
    conversation_id = _conversation_id(form.get("conversation_id"), call_sid)
    caller_id = _caller_id(form.get("caller_id"))
    agent_id = _agent_id(form.get("agent_id"), default_agent_id)
    metadata: Any = None
    if form.get("caller_metadata"):
        metadata = _json_object(form["caller_metadata"], "caller_metadata")
    caller = _caller(metadata, form.get("caller_name"), form.get("caller_date_of_birth"))
    upload = files.get("voice_sample")
    if upload is None:
        raise MissingVoiceSample("multipart part 'voice_sample' is required")
    data = upload.stream.read()
    if not data:
        raise MissingVoiceSample("multipart part 'voice_sample' is empty")
    if len(data) > max_sample_bytes:
        raise SampleTooLarge(f"Voice sample is larger than {max_sample_bytes} bytes")
    return PrecallRequest(conversation_id, agent_id, VoiceSample(data, upload.filename, upload.mimetype or None), caller,
                          call_sid, caller_id)


def _memory_stream(*_args: Any, **_kwargs: Any) -> io.BytesIO:
    return io.BytesIO()


def _strict_base64(encoded: bytes | memoryview) -> bytes | None:
    """Decoded base64 (SIMD-fast via pybase64), None unless every byte is in the base64 alphabet."""
    try:
        return pybase64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None


def _decode_base64(value: str) -> bytes:
    """Strict base64; line-wrapped MIME-style base64 (whitespace in the parsed string) is tolerated."""
    try:
        encoded = value.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidPayload("voice_sample.data is not valid base64") from None
    data = _strict_base64(encoded)
    if data is None:
        data = _strict_base64(_WHITESPACE.sub(b"", encoded))
    if data is None:
        raise InvalidPayload("voice_sample.data is not valid base64")
    if not data:
        raise MissingVoiceSample("voice_sample.data is empty")
    return data


def _call_sid(value: Any) -> str | None:
    """The telephony call id (Twilio CallSid, SIP X-CALL-ID): it becomes a conversation id and a
    voice-name suffix, so it follows the same character rules."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise InvalidPayload("call_sid must be letters, digits, '-' or '_'")
    if len(conversation_suffix(value)) > MAX_CONVERSATION_SUFFIX_LENGTH:
        raise InvalidPayload("call_sid is too long")
    return value


def _caller_id(value: Any) -> str | None:
    """A phone number (E.164 expected; spaces, dots, dashes and brackets tolerated)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _PHONE_PATTERN.fullmatch(value):
        raise InvalidPayload("caller_id must be a phone number such as +31612345678")
    return value


def _conversation_id(value: Any, call_sid: str | None = None) -> str:
    if (value is None or value == "") and call_sid is not None:
        return call_sid
    if value is None or value == "":
        raise InvalidPayload("conversation_id is required (or call_sid)")
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise InvalidPayload("conversation_id must be letters, digits, '-' or '_'")
    if len(conversation_suffix(value)) > MAX_CONVERSATION_SUFFIX_LENGTH:
        raise InvalidPayload("conversation_id is too long")
    return value


def _agent_id(value: Any, default: str | None) -> str:
    if value is None or value == "":
        if default is None:
            raise InvalidPayload("agent_id is required (no ELEVENLABS_AGENT_ID configured)")
        return default
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise InvalidPayload("agent_id must be letters, digits, '-' or '_'")
    return value


def _caller(metadata: Any, flat_name: str | None, flat_dob: str | None) -> CallerInfo:
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InvalidPayload("caller_metadata must be a JSON object")
    name = _optional_text(metadata.get("name", flat_name), "caller_metadata.name")
    dob = _optional_text(metadata.get("date_of_birth", flat_dob), "caller_metadata.date_of_birth")
    return CallerInfo(name or None, dob or None)


def _optional_text(value: Any, field: str) -> str | None:
    """A string that is Unicode text: JSON's `\\ud800` escapes give lone surrogates, which no UTF-8
    answer, log line or ElevenLabs request can carry (they failed the answer after the clone was made)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidPayload(f"{field} must be a string")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidPayload(f"{field} is not valid Unicode text (lone surrogate)") from None
    return value

