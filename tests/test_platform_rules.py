"""ElevenLabs as it really is (docs/events.md, docs/api.md): clones recognised without custom labels, error bodies
with `code` and the legacy `status`, missing voices as `400 voice_not_found`, `requires_verification`,
post-call ids, and the warning about `patch` mode's shared agent."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

from precall.postcall import parse_post_call
from tests.conftest import AGENT_ID, API_KEY, BOTH_MODES, json_body, post_signed
from voiceclone.clones import Clone
from voiceclone.deadline import Deadline
from voiceclone.elevenlabs_client import ElevenLabsClient, ElevenLabsError

NAME = "Ivan_Clone_20251210_123456_abc123xyz"
DESCRIPTION = "Instant clone for conversation conv_abc123xyz"


def test_a_clone_whose_labels_were_dropped_is_still_ours_by_name_and_description():
    clone = Clone.from_voice({"voice_id": "v1", "name": NAME, "description": DESCRIPTION, "labels": {"accent": "dutch"},
                              "created_at_unix": 1765370096})
    assert clone is not None and clone.conversation_id == "conv_abc123xyz" and clone.caller_name == "Ivan"
    assert clone.created_at == datetime.fromtimestamp(1765370096, timezone.utc)


def test_without_created_at_unix_the_age_comes_from_the_name():
    clone = Clone.from_voice({"voice_id": "v1", "name": NAME, "description": DESCRIPTION})
    assert clone is not None and clone.created_at == datetime(2025, 12, 10, 12, 34, 56, tzinfo=timezone.utc)


@pytest.mark.parametrize("voice", [
    {"name": NAME, "description": "Instant clone for conversation conv_other"},  # another call's description
    {"name": NAME, "description": None},
    {"name": "Narrator", "description": DESCRIPTION},
    {"name": "Ivan_Clone_2025_abc123xyz", "description": DESCRIPTION},  # no timestamp
    {"name": NAME, "description": DESCRIPTION + " and more"},
])
def test_voices_that_only_resemble_ours_are_not_ours(voice):
    assert Clone.from_voice({"voice_id": "v1", **voice}) is None


def test_a_clone_named_caller_has_no_caller_name():
    clone = Clone.from_voice({"voice_id": "v1", "name": "Caller_Clone_20251210_123456_abc123xyz", "description": DESCRIPTION})
    assert clone is not None and clone.caller_name is None


@pytest.mark.parametrize("detail", [
    {"type": "payment_required", "code": "paid_plan_required", "message": "No cloning on this plan",
     "status": "can_not_use_instant_voice_cloning"},
    {"code": "paid_plan_required", "message": "No cloning on this plan"},
    {"status": "can_not_use_instant_voice_cloning", "message": "No cloning on this plan"},
])
def test_a_known_condition_is_recognised_in_code_or_legacy_status(fake, detail):
    fake.inject("POST", "/v1/voices/add", status=400, body={"detail": detail})
    client = ElevenLabsClient(fake.url, API_KEY)
    with pytest.raises(ElevenLabsError) as raised:
        client.add_voice(name="V", sample=b"x" * 2000, filename="a.wav", mime_type="audio/wav", description="d", labels={},
                         remove_background_noise=False, deadline=Deadline(10))
    assert raised.value.has("paid_plan_required", "can_not_use_instant_voice_cloning")
    assert raised.value.message == "No cloning on this plan" and not raised.value.retryable


def test_voice_limit_in_code_only_frees_a_finished_clone_and_retries(client, fake, audio_files):
    finished = fake.add_voice("Old_Clone_20200101_000000_old", description="Instant clone for conversation conv_old")
    fake.set_conversation("conv_old", "done")
    fake.inject("POST", "/v1/voices/add", status=400, body={"detail": {
        "type": "limit", "code": "voice_limit_reached", "status": "quota_exceeded", "message": "maximum amount of custom voices"}})
    response = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes()))
    assert response.status_code == 200, response.get_json()
    assert finished not in fake.voices  # recognised as ours without labels, and freed


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_missing_voice_answered_400_voice_not_found_counts_as_gone(fake, method):
    fake.inject(method, "/v1/voices/gone", status=400, body={"detail": {
        "type": "not_found", "code": "voice_not_found", "message": "A voice with the voice_id gone was not found."}})
    client = ElevenLabsClient(fake.url, API_KEY)
    if method == "GET":
        assert client.get_voice("gone", Deadline(10)) is None
    else:
        assert client.delete_voice("gone", Deadline(10)) is False


def test_other_400s_on_a_voice_are_not_taken_for_missing(fake):
    fake.inject("DELETE", "/v1/voices/v1", status=400, body={"detail": {"code": "voice_in_use", "message": "In use"}})
    with pytest.raises(ElevenLabsError):
        ElevenLabsClient(fake.url, API_KEY).delete_voice("v1", Deadline(10))


def test_post_call_event_collects_the_call_sid_from_metadata_and_dynamic_variables():
    body = json.dumps({"type": "post_call_transcription", "data": {
        "conversation_id": "conv_1", "agent_id": "a",
        "metadata": {"phone_call": {"type": "sip_trunking", "call_sid": "CAmeta"}},
        "conversation_initiation_client_data": {"dynamic_variables": {
            "system__call_sid": "CAsystem", "precall_conversation_id": "CAmeta", "other": "x"}}}}).encode()
    assert parse_post_call(body).related_ids == ("CAmeta", "CAsystem")


def test_post_call_related_ids_ignore_nulls_and_odd_values():
    body = json.dumps({"type": "post_call_audio", "data": {
        "conversation_id": "conv_1", "metadata": {"phone_call": None},
        "conversation_initiation_client_data": {"dynamic_variables": {"system__call_sid": None,
                                                                       "precall_conversation_id": "../x"}}}}).encode()
    assert parse_post_call(body).related_ids == ()


def test_patch_mode_warns_when_one_agent_is_patched_for_two_calls_close_together(client, fake, audio_files, capsys):
    sample = audio_files["wav_pcm16"].read_bytes()
    for conversation_id in ("conv_first", "conv_second"):
        assert post_signed(client, "/webhook", json_body(sample, conversation_id=conversation_id)).status_code == 200
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    [warning] = [line for line in lines if line.get("event_type") == "agent_patch_overlap"]
    assert warning["severity"] == "WARNING" and warning["agent_id"] == AGENT_ID
    assert warning["conversation_id"] == "conv_second" and warning["previous_conversation_id"] == "conv_first"


def test_a_redelivered_webhook_for_the_same_call_does_not_warn(client, fake, audio_files, capsys):
    body = json_body(audio_files["wav_pcm16"].read_bytes(), conversation_id="conv_same")
    for _ in range(2):
        assert post_signed(client, "/webhook", body).status_code == 200
        time.sleep(0.01)
    assert "agent_patch_overlap" not in capsys.readouterr().out


@pytest.mark.parametrize("fake_mode", BOTH_MODES)
def test_a_clone_that_requires_verification_is_deleted_at_once_and_the_call_refused(client, fake, audio_files):
    fake.requires_verification = True
    response = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes(), conversation_id="conv_protected"))
    assert response.status_code == 422
    body = response.get_json()
    assert body["error_code"] == "VOICE_CLONING_FAILED" and "requires verification" in body["error_message"]
    assert len(fake.requests_to("POST", "/v1/voices/add")) == 1
    assert not any(v["name"].endswith("_protected") for v in fake.cloned_voices())
    assert len(fake.requests_to("DELETE", r"/v1/voices/.*")) == 1  # no slot left taken
    assert fake.requests_to("PATCH", r"/v1/convai/agents/.*") == []  # never put on the agent
