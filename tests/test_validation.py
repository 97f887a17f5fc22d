"""Every client-side error code of docs/api.md, reached over HTTP with real audio."""

from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import (
    AGENT_ID,
    json_body,
    multipart_body,
    post_signed,
    signature_header,
)


def error_of(response):
    body = response.get_json()
    assert body["status"] == "error"
    return response.status_code, body["error_code"]


@pytest.mark.parametrize("name", ["wav_pcm16", "wav_pcm8_8k", "wav_pcm24_48k_stereo", "wav_float32", "wav_mulaw_8k",
                                  "wav_alaw_8k", "mp3_cbr", "mp3_vbr_stereo", "ogg_vorbis", "ogg_opus", "mp3_8kbps_20s"])
def test_every_supported_format_is_accepted(client, fake, audio_files, name):
    response = post_signed(client, "/webhook", json_body(audio_files[name].read_bytes(), conversation_id=f"conv_{name}"))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["quality"]["reasons"] == [] and response.get_json()["quality"]["speech_seconds"] >= 2


@pytest.mark.parametrize("name", ["wav_lying_header", "mp3_truncated_info", "mp3_big_id3_short", "wav_1_5s"])
def test_samples_shorter_than_the_minimum_by_what_decodes_are_too_short(client, fake, audio_files, name):
    response = post_signed(client, "/webhook", json_body(audio_files[name].read_bytes()))
    assert error_of(response) == (400, "SAMPLE_TOO_SHORT")
    assert response.get_json()["conversation_id"] == "conv_abc123xyz"
    assert fake.requests_to("POST", "/v1/voices/add") == []


@pytest.mark.parametrize("name", ["flac", "aac_adts", "ogg_flac", "text"])
def test_unsupported_formats_are_415(client, fake, audio_files, name):
    assert error_of(post_signed(client, "/webhook", json_body(audio_files[name].read_bytes()))) == (415, "UNSUPPORTED_AUDIO_FORMAT")


@pytest.mark.parametrize("name", ["wav_garbage", "ogg_garbage", "mp3_garbage"])
def test_undecodable_bytes_in_a_supported_container_are_invalid_audio(client, fake, audio_files, name):
    assert error_of(post_signed(client, "/webhook", json_body(audio_files[name].read_bytes()))) == (400, "INVALID_AUDIO")


def test_min_sample_seconds_is_configurable(make_client, fake, audio_files):
    client = make_client(MIN_SAMPLE_SECONDS="1", MIN_SPEECH_SECONDS="1")  # 1.5 s of audio holds 1.15 s of speech
    assert post_signed(client, "/webhook", json_body(audio_files["wav_1_5s"].read_bytes())).status_code == 200


def test_decoded_sample_over_the_limit_is_413_sample_too_large(make_client, fake, audio_files):
    client = make_client(MAX_SAMPLE_BYTES="240000")
    sample = audio_files["wav_pcm16"].read_bytes()  # ~265 kB: base64 body still under the body limit
    assert len(sample) > 240000 and len(base64.b64encode(sample)) < 240000 * 4 // 3 + 65536
    assert error_of(post_signed(client, "/webhook", json_body(sample))) == (413, "SAMPLE_TOO_LARGE")
    body, content_type = multipart_body(sample, {"conversation_id": "conv_x", "agent_id": AGENT_ID})
    assert error_of(post_signed(client, "/webhook", body, content_type)) == (413, "SAMPLE_TOO_LARGE")


def test_body_over_the_limit_is_refused_before_it_is_read(make_client, fake):
    client = make_client(MAX_SAMPLE_BYTES="1000")
    body = b"x" * (1000 * 4 // 3 + 65536 + 1)
    response = client.post("/webhook", data=body, headers={"Content-Type": "application/json",
                                                            "ElevenLabs-Signature": signature_header(body)})
    assert error_of(response) == (413, "SAMPLE_TOO_LARGE")


def signed(client, document):
    body = json.dumps(document).encode() if not isinstance(document, bytes) else document
    return post_signed(client, "/webhook", body)


def test_payload_errors(client, fake, audio_files):
    sample = base64.b64encode(audio_files["wav_pcm16"].read_bytes()).decode()
    assert error_of(signed(client, b"{not json")) == (400, "INVALID_PAYLOAD")
    assert error_of(signed(client, [1, 2])) == (400, "INVALID_PAYLOAD")
    assert error_of(signed(client, {"agent_id": AGENT_ID, "voice_sample": {"data": sample}})) == (400, "INVALID_PAYLOAD")
    no_agent = signed(client, {"conversation_id": "conv_1", "voice_sample": {"data": sample}})
    assert error_of(no_agent) == (400, "INVALID_PAYLOAD") and no_agent.get_json()["conversation_id"] == "conv_1"
    assert error_of(signed(client, {"conversation_id": "conv_1", "agent_id": AGENT_ID})) == (400, "MISSING_VOICE_SAMPLE")
    assert error_of(signed(client, {"conversation_id": "conv_1", "agent_id": AGENT_ID,
                                    "voice_sample": {"filename": "a.mp3"}})) == (400, "MISSING_VOICE_SAMPLE")
    assert error_of(signed(client, {"conversation_id": "conv_1", "agent_id": AGENT_ID,
                                    "voice_sample": {"data": "!!not base64!!"}})) == (400, "INVALID_PAYLOAD")
    assert error_of(signed(client, {"conversation_id": "conv/../1", "agent_id": AGENT_ID,
                                    "voice_sample": {"data": sample}})) == (400, "INVALID_PAYLOAD")
    assert error_of(signed(client, {"conversation_id": "conv_1", "agent_id": AGENT_ID, "caller_metadata": "Ivan",
                                    "voice_sample": {"data": sample}})) == (400, "INVALID_PAYLOAD")
    body, content_type = multipart_body(b"", {"conversation_id": "conv_1", "agent_id": AGENT_ID})
    assert error_of(post_signed(client, "/webhook", body, content_type)) == (400, "MISSING_VOICE_SAMPLE")
    assert fake.requests_to("POST", "/v1/voices/add") == []


def test_line_wrapped_and_escaped_slash_base64_are_accepted(client, fake, audio_files):
    raw = audio_files["mp3_cbr"].read_bytes()
    wrapped = base64.encodebytes(raw).decode()  # 76-column lines
    document = {"conversation_id": "conv_wrapped", "agent_id": AGENT_ID, "voice_sample": {"data": wrapped}}
    assert signed(client, document).status_code == 200
    escaped = json.dumps({"conversation_id": "conv_escaped", "agent_id": AGENT_ID,
                          "voice_sample": {"data": base64.b64encode(raw).decode()}}).replace("/", "\\/").encode()
    assert signed(client, escaped).status_code == 200
    uploads = [r.files["files"][0]["data"] for r in fake.requests_to("POST", "/v1/voices/add")]
    assert uploads == [raw, raw]
