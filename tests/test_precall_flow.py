"""The pre-call webhook end to end in-process: the real functions-framework app, the real
ElevenLabs client, over HTTP to the local ElevenLabs server."""

from __future__ import annotations

import json

from tests.conftest import AGENT_ID, json_body, multipart_body, post_signed


def test_json_webhook_clones_voice_updates_agent_and_answers_with_caller_info(client, fake, audio_files):
    sample = audio_files["mp3_cbr"].read_bytes()
    response = post_signed(client, "/webhook", json_body(sample))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "success"
    assert body["conversation_id"] == "conv_abc123xyz"
    assert body["agent_updated"] is True
    assert body["caller_info"] == {"Name": "Ivan", "DateOfBirth": "11.12.2007"}
    assert body["voice_name"].startswith("Ivan_Clone_") and body["voice_name"].endswith("_abc123xyz")
    assert isinstance(body["processing_time_ms"], int)
    assert "type" not in body  # patch mode: no per-call overrides
    assert body["voice_id"] in fake.voices

    [add] = fake.requests_to("POST", "/v1/voices/add")
    assert add.headers["xi-api-key"] == "test-api-key"
    assert add.form["name"] == body["voice_name"]
    assert add.form["description"] == "Instant clone for conversation conv_abc123xyz"
    assert add.form["remove_background_noise"] == "false"
    labels = json.loads(add.form["labels"])
    assert {k: labels[k] for k in ("conversation_id", "agent_id", "type", "source")} == {
        "conversation_id": "conv_abc123xyz", "agent_id": AGENT_ID, "type": "instant_clone", "source": "precall-webhook"}
    assert labels["created_at"].endswith("Z")
    [upload] = add.files["files"]
    assert upload["filename"] == "sample.mp3" and upload["content_type"] == "audio/mpeg"
    assert upload["data"] == sample

    [patch] = fake.requests_to("PATCH", f"/v1/convai/agents/{AGENT_ID}")
    assert patch.json == {"conversation_config": {"agent": {"first_message": "Hallo Ivan, fijn dat je belt!"},
                                                  "tts": {"voice_id": body["voice_id"]}}}
    assert fake.agents[AGENT_ID]["conversation_config"]["tts"]["voice_id"] == body["voice_id"]


def test_multipart_webhook_with_flat_caller_fields_uploads_the_real_format(client, fake, audio_files):
    sample = audio_files["ogg_opus"].read_bytes()
    body, content_type = multipart_body(sample, {"conversation_id": "conv_multi1", "agent_id": AGENT_ID,
                                                 "caller_name": "Zoë", "caller_date_of_birth": "01.02.1990"},
                                        filename="recording.mp3", content_type="audio/mpeg")
    response = post_signed(client, "/webhook", body, content_type)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["caller_info"] == {"Name": "Zoë", "DateOfBirth": "01.02.1990"}
    assert response.get_json()["voice_name"].startswith("Zoë_Clone_")
    [add] = fake.requests_to("POST", "/v1/voices/add")
    # The name and MIME hint said MP3; the bytes are Ogg Opus, and that is what is uploaded.
    assert add.files["files"][0]["filename"] == "recording.ogg"
    assert add.files["files"][0]["content_type"] == "audio/ogg"


def test_multipart_caller_metadata_json_part_is_read(client, fake, audio_files):
    body, content_type = multipart_body(audio_files["wav_pcm16"].read_bytes(), {
        "conversation_id": "conv_meta", "agent_id": AGENT_ID,
        "caller_metadata": json.dumps({"name": "Ivan", "date_of_birth": "11.12.2007"})})
    response = post_signed(client, "/webhook", body, content_type)
    assert response.status_code == 200
    assert response.get_json()["caller_info"] == {"Name": "Ivan", "DateOfBirth": "11.12.2007"}


def test_caller_without_name_gets_default_greeting_and_caller_voice_name(client, fake, audio_files):
    response = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes(), name=None, dob=None))
    assert response.status_code == 200
    assert response.get_json()["voice_name"].startswith("Caller_Clone_")
    assert response.get_json()["caller_info"] == {"Name": None, "DateOfBirth": None}
    [patch] = fake.requests_to("PATCH", f"/v1/convai/agents/{AGENT_ID}")
    assert patch.json["conversation_config"]["agent"]["first_message"] == "Hallo, fijn dat je belt!"


def test_agent_id_falls_back_to_configured_agent(make_client, fake, audio_files):
    fake.add_agent("agent_configured")
    client = make_client(ELEVENLABS_AGENT_ID="agent_configured")
    response = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes(), agent_id=None))
    assert response.status_code == 200
    assert fake.requests_to("PATCH", "/v1/convai/agents/agent_configured")


def test_override_mode_answers_with_per_call_overrides_and_does_not_patch(make_client, fake, audio_files):
    client = make_client(AGENT_UPDATE_MODE="override", FIRST_MESSAGE_TEMPLATE="Hi {name}!")
    response = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes()))
    body = response.get_json()
    assert response.status_code == 200
    assert body["type"] == "conversation_initiation_client_data"
    assert body["dynamic_variables"] == {"caller_name": "Ivan"}
    assert body["conversation_config_override"] == {"agent": {"first_message": "Hi Ivan!"},
                                                    "tts": {"voice_id": body["voice_id"]}}
    assert body["agent_updated"] is False
    assert fake.requests_to("PATCH", r"/v1/convai/agents/.*") == []


def test_both_mode_patches_and_returns_overrides(make_client, fake, audio_files):
    client = make_client(AGENT_UPDATE_MODE="both")
    body = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes())).get_json()
    assert body["agent_updated"] is True and body["conversation_config_override"]["tts"]["voice_id"] == body["voice_id"]
    assert len(fake.requests_to("PATCH", f"/v1/convai/agents/{AGENT_ID}")) == 1


def test_agent_update_failure_still_answers_200_with_agent_updated_false(client, fake, audio_files):
    response = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes(), agent_id="agent_missing"))
    assert response.status_code == 200
    assert response.get_json()["agent_updated"] is False
    assert response.get_json()["voice_id"] in fake.voices


def test_remove_background_noise_setting_is_sent(make_client, fake, audio_files):
    client = make_client(REMOVE_BACKGROUND_NOISE="true")
    assert post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes())).status_code == 200
    assert fake.requests_to("POST", "/v1/voices/add")[0].form["remove_background_noise"] == "true"


def test_long_sample_is_trimmed_before_upload_when_configured(make_client, fake, audio_files):
    import io

    import soundfile

    client = make_client(CLONE_SAMPLE_MAX_SECONDS="5")
    response = post_signed(client, "/webhook", json_body(audio_files["wav_20s"].read_bytes()))
    assert response.status_code == 200
    uploaded = fake.requests_to("POST", "/v1/voices/add")[0].files["files"][0]["data"]
    info = soundfile.info(io.BytesIO(uploaded))
    assert abs(info.duration - 5.0) < 0.05


def test_debug_sample_dir_keeps_a_copy_only_when_set(make_client, fake, audio_files, tmp_path):
    client = make_client(DEBUG_SAMPLE_DIR=str(tmp_path / "samples"))
    sample = audio_files["mp3_cbr"].read_bytes()
    assert post_signed(client, "/webhook", json_body(sample, conversation_id="conv_dbg")).status_code == 200
    assert (tmp_path / "samples" / "conv_dbg.mp3").read_bytes() == sample


def test_healthz_reveals_no_secrets(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert response.get_json()["status"] == "ok"
    assert "test-api-key" not in text and "whsec_test_secret" not in text


def test_unknown_route_is_404_json_and_wrong_method_is_405(client):
    missing = client.get("/nope")
    assert missing.status_code == 404
    assert missing.get_json() == {"status": "error", "error_code": "NOT_FOUND",
                                  "error_message": "No route for /nope", "conversation_id": None}
    wrong = client.get("/webhook")
    assert wrong.status_code == 405 and wrong.get_json()["error_code"] == "METHOD_NOT_ALLOWED"
    assert wrong.headers["Allow"] == "POST"
