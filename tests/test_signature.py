"""ElevenLabs' signature scheme, checked against the official SDK's `construct_event`."""

from __future__ import annotations

import json
import time

import pytest
from elevenlabs.errors import BadRequestError
from elevenlabs.webhooks_custom import WebhooksClient

from precall.postcall import CALL_END_EVENT_TYPES
from precall.signature import compute_signature, sign, verify
from tests.conftest import AGENT_ID, SECRET, json_body, post_call_body, post_signed, signature_header
from voiceclone.errors import InvalidSignature, SignatureExpired

BODY = json.dumps({"conversation_id": "conv_1", "voice_sample": {"data": "QUJD"}}).encode()


def sdk_accepts(body: bytes, header: str, secret: str = SECRET) -> bool:
    try:
        WebhooksClient(client_wrapper=None).construct_event(body.decode(), header, secret)  # type: ignore[arg-type]
    except BadRequestError:
        return False
    return True


def service_accepts(body: bytes, header: str, secrets: tuple[str, ...] = (SECRET,)) -> bool:
    try:
        verify(body, header, secrets, time.time(), 1800)
    except (InvalidSignature, SignatureExpired):
        return False
    return True


def test_sdk_accepts_what_we_sign_and_we_accept_what_the_sdk_accepts():
    now = int(time.time())
    cases = [
        sign(BODY, SECRET, now),
        sign(BODY, SECRET, now - 1700),
        sign(BODY, SECRET, now - 1900),                       # too old for both
        sign(BODY, "other", now),                            # wrong secret
        f"t={now},v0={compute_signature(BODY + b' ', SECRET, now)}",  # tampered body
        f"v0={compute_signature(BODY, SECRET, now)},t={now}",  # order does not matter
        f"t={now}",
        "",
        "garbage",
        # `t=` is whatever int() reads, and the text as sent is what was signed (SDK behaviour).
        f"t=+{now},v0={compute_signature(BODY, SECRET, f'+{now}')}",
        f"t=0{now},v0={compute_signature(BODY, SECRET, f'0{now}')}",
        f"t= {now},v0={compute_signature(BODY, SECRET, f' {now}')}",
        f"t=+{now},v0={compute_signature(BODY, SECRET, now)}",  # signed over other text than sent
    ]
    verdicts = [(service_accepts(BODY, h), sdk_accepts(BODY, h)) for h in cases]
    assert verdicts[0] == (True, True) and verdicts[1] == (True, True)
    assert verdicts[9:12] == [(True, True)] * 3 and verdicts[12] == (False, False)
    for ours, sdks in verdicts:
        assert ours == sdks


def test_beyond_the_sdk_spaces_after_commas_are_accepted_and_the_future_is_bounded():
    now = int(time.time())
    spaced = f"t={now}, v0={compute_signature(BODY, SECRET, now)}"
    assert service_accepts(BODY, spaced) and not sdk_accepts(BODY, spaced)  # docs/api.md: spaces after commas
    future = sign(BODY, SECRET, now + 3600)
    assert sdk_accepts(BODY, future) and not service_accepts(BODY, future)  # docs/api.md: at most 300 s ahead


def signed_json_requests(sample: bytes) -> list[tuple[str, bytes]]:
    """One of each JSON request the service takes with ElevenLabs' signature: the pre-call sample,
    each post-call event type (and one it ignores), the conversation-initiation webhook."""
    return [("/webhook", json_body(sample, conversation_id="conv_sdk")),
            *(("/post-call", post_call_body("conv_sdk", kind)) for kind in CALL_END_EVENT_TYPES),
            ("/post-call", json.dumps({"type": "something_new", "data": {}}).encode()),
            ("/conversation-init", json.dumps({"caller_id": "+31612345678", "agent_id": AGENT_ID,
                                               "called_number": "+31201234567", "call_sid": "CAsdk01"}).encode())]


def test_every_json_request_the_service_accepts_passes_the_sdk(client, fake, audio_files):
    for path, body in signed_json_requests(audio_files["wav_pcm16"].read_bytes()):
        header = signature_header(body)
        response = post_signed(client, path, body, header=header)
        assert response.status_code == 200, (path, response.get_json())
        assert sdk_accepts(body, header), path
        wrong = signature_header(body, secret="not-the-secret")
        assert post_signed(client, path, body, header=wrong).status_code == 401 and not sdk_accepts(body, wrong), path


def test_rotation_any_configured_secret_and_any_v0_entry_match():
    now = int(time.time())
    header = f"t={now},v0={'0' * 64},v0={compute_signature(BODY, 'new-secret', now)}"
    assert verify(BODY, header, ("old-secret", "new-secret"), now, 1800) == now
    with pytest.raises(InvalidSignature):
        verify(BODY, header, ("old-secret",), now, 1800)


@pytest.mark.parametrize("header", [None, "", "t=abc,v0=00", "v0=00", "t=123", "x=1", "t=" + "9" * 4301 + ",v0=00"])
def test_missing_or_malformed_header_is_invalid_signature(header):
    with pytest.raises(InvalidSignature):
        verify(BODY, header, (SECRET,), time.time(), 1800)


def test_a_negative_timestamp_is_expired_as_the_sdk_says():
    with pytest.raises(SignatureExpired):
        verify(BODY, "t=-5,v0=00", (SECRET,), time.time(), 1800)
    assert not sdk_accepts(BODY, "t=-5,v0=00")


def test_old_timestamps_and_future_skew_beyond_300s_are_expired():
    now = 1_800_000_000
    with pytest.raises(SignatureExpired):
        verify(BODY, sign(BODY, SECRET, now - 1801), (SECRET,), now, 1800)
    with pytest.raises(SignatureExpired):
        verify(BODY, sign(BODY, SECRET, now + 301), (SECRET,), now, 1800)
    assert verify(BODY, sign(BODY, SECRET, now + 299), (SECRET,), now, 1800) == now + 299
    with pytest.raises(SignatureExpired):  # a tolerance below 300 s also caps the future skew
        verify(BODY, sign(BODY, SECRET, now + 61), (SECRET,), now, 60)


def test_webhook_rejects_bad_signature_with_401_and_never_calls_elevenlabs(client, fake, audio_files):
    body = json_body(audio_files["wav_pcm16"].read_bytes())
    response = post_signed(client, "/webhook", body, secret="wrong")
    assert response.status_code == 401
    assert response.get_json() == {"status": "error", "error_code": "INVALID_SIGNATURE",
                                   "error_message": "Signature does not match the request body", "conversation_id": None}
    expired = post_signed(client, "/webhook", body, header=signature_header(body, timestamp=int(time.time()) - 3600))
    assert expired.status_code == 401 and expired.get_json()["error_code"] == "SIGNATURE_EXPIRED"
    missing = client.post("/webhook", data=body, headers={"Content-Type": "application/json"})
    assert missing.status_code == 401 and missing.get_json()["error_code"] == "INVALID_SIGNATURE"
    assert fake.requests == []


def test_multipart_signature_covers_the_audio_bytes(client, fake, audio_files):
    from tests.conftest import multipart_body

    sample = audio_files["wav_pcm16"].read_bytes()
    body, content_type = multipart_body(sample, {"conversation_id": "conv_mp", "agent_id": "agent_def456uvw"})
    header = signature_header(body)
    tampered = body.replace(sample[1000:1010], bytes(10))
    assert tampered != body
    response = post_signed(client, "/webhook", tampered, content_type, header=header)
    assert response.status_code == 401
    assert post_signed(client, "/webhook", body, content_type, header=header).status_code == 200
