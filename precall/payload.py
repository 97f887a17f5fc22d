"""Pre-call request bodies (SPEC 4.1) parsed from raw bytes into a `PrecallRequest`.

Parsing happens only after the signature over the same bytes was verified. Both JSON (base64
sample) and multipart (file part `voice_sample`) end in the same shape.
"""

from __future__ import annotations

import binascii
import io
import json
import re
from dataclasses import dataclass
from typing import Any

import pybase64
from werkzeug.formparser import MultiPartParser
from werkzeug.http import parse_options_header

from voiceclone.errors import InvalidPayload, MissingVoiceSample, SampleTooLarge
from voiceclone.naming import MAX_CONVERSATION_SUFFIX_LENGTH, conversation_suffix

_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")
_PHONE_PATTERN = re.compile(r"\+?[0-9][0-9 ().-]{2,31}")
_WHITESPACE = re.compile(rb"\s+")
# Where a plain (escape-free) JSON string value of a "data" key starts.
_DATA_VALUE = re.compile(rb'"data"\s*:\s*"')
_SENTINEL = "\x00precall-sample\x00"  # parsed value; NUL never occurs in base64
_SENTINEL_JSON = rb"\u0000precall-sample\u0000"


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
    document, encoded = _load_json_without_sample(body)
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
    if encoded is None:
        value = sample.get("data")
        if value is None or value == "":
            raise MissingVoiceSample("voice_sample.data is required")
        if not isinstance(value, str):
            raise InvalidPayload("voice_sample.data must be a base64 string")
        try:
            encoded = memoryview(value.encode("ascii"))
        except UnicodeEncodeError:
            raise InvalidPayload("voice_sample.data is not valid base64") from None
    data = _decode_base64(encoded, max_sample_bytes)
    return PrecallRequest(
        conversation_id,
        agent_id,
        VoiceSample(data, _optional_text(sample.get("filename"), "voice_sample.filename"),
                    _optional_text(sample.get("content_type"), "voice_sample.content_type")),
        caller,
        call_sid,
        caller_id,
    )


def _load_json_without_sample(body: bytes) -> tuple[dict[str, Any], memoryview | None]:
    """Parse the JSON envelope without turning a 13 MB base64 string into a Python str.

    The base64 value is cut out and replaced by a sentinel string before parsing. The bytes
    before the cut are unchanged, so if the sentinel lands exactly at `voice_sample.data` the
    cut was that value (a JSON string with no escapes); otherwise the body is parsed whole.
    Returns the document and the base64 bytes (None when they are still in the document).
    """
    for match in _DATA_VALUE.finditer(body):
        start = match.end()
        end = body.find(b'"', start)
        if end < 0 or body.find(b"\\", start, end) >= 0:
            continue
        stripped = b"".join((body[:start], _SENTINEL_JSON, body[end:]))
        try:
            document = json.loads(stripped)
        except (ValueError, UnicodeDecodeError):
            break
        sample = document.get("voice_sample") if isinstance(document, dict) else None
        if isinstance(sample, dict) and sample.get("data") == _SENTINEL:
            return document, memoryview(body)[start:end]
        break
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidPayload("Request body is not valid JSON") from None
    if not isinstance(document, dict):
        raise InvalidPayload("Request body must be a JSON object")
    if isinstance(document.get("voice_sample"), str):  # a bare base64 string is accepted too
        document["voice_sample"] = {"data": document["voice_sample"]}
    return document, None


def parse_multipart(body: bytes, content_type: str, default_agent_id: str | None, max_sample_bytes: int) -> PrecallRequest:
    _, options = parse_options_header(content_type)
    boundary = options.get("boundary", "").encode("latin-1")
    if not boundary:
        raise InvalidPayload("multipart body without a boundary")
    # Files go to memory, never to a temporary file: samples must not touch the disk. 64 KiB
    # reads are werkzeug's sweet spot (1 MiB reads make its boundary search ~10x slower).
    parser = MultiPartParser(stream_factory=_memory_stream, max_form_memory_size=1024 * 1024, max_form_parts=64,
                             buffer_size=64 * 1024)
    try:
        form, files = parser.parse(io.BytesIO(body), boundary, len(body))
    except ValueError:
        raise InvalidPayload("Malformed multipart body") from None
    call_sid = _call_sid(form.get("call_sid"))
    conversation_id = _conversation_id(form.get("conversation_id"), call_sid)
    caller_id = _caller_id(form.get("caller_id"))
    agent_id = _agent_id(form.get("agent_id"), default_agent_id)
    metadata: Any = None
    if form.get("caller_metadata"):
        try:
            metadata = json.loads(form["caller_metadata"])
        except ValueError:
            raise InvalidPayload("caller_metadata must be a JSON object") from None
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


def _decode_base64(encoded: memoryview, max_sample_bytes: int) -> bytes:
    """Strict base64 (SIMD-fast via pybase64); line-wrapped MIME-style base64 is tolerated."""
    if len(encoded) == 0:
        raise MissingVoiceSample("voice_sample.data is empty")
    if len(encoded) * 3 // 4 > max_sample_bytes + 3:
        raise SampleTooLarge(f"Voice sample is larger than {max_sample_bytes} bytes")
    try:
        try:
            data = pybase64.b64decode(encoded, validate=True)
        except binascii.Error:
            data = pybase64.b64decode(_WHITESPACE.sub(b"", bytes(encoded)), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidPayload("voice_sample.data is not valid base64") from None
    if not data:
        raise MissingVoiceSample("voice_sample.data is empty")
    if len(data) > max_sample_bytes:
        raise SampleTooLarge(f"Voice sample is larger than {max_sample_bytes} bytes")
    return data


def _call_sid(value: Any) -> str | None:
    """The telephony call id (Twilio CallSid, SIP X-CALL-ID): it becomes a conversation id and a
    voice-name suffix, so it follows the same character rules."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _ID_PATTERN.fullmatch(value):
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
    if not isinstance(value, str) or not _ID_PATTERN.fullmatch(value):
        raise InvalidPayload("conversation_id must be letters, digits, '-' or '_'")
    if len(conversation_suffix(value)) > MAX_CONVERSATION_SUFFIX_LENGTH:
        raise InvalidPayload("conversation_id is too long")
    return value


def _agent_id(value: Any, default: str | None) -> str:
    if value is None or value == "":
        if default is None:
            raise InvalidPayload("agent_id is required (no ELEVENLABS_AGENT_ID configured)")
        return default
    if not isinstance(value, str) or not _ID_PATTERN.fullmatch(value):
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
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidPayload(f"{field} must be a string")
    return value

