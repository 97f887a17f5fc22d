"""The service as a user runs it: `functions-framework --target precall_webhook` over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone

import pytest
import requests

from sandbox.processes import ROOT
from tests.conftest import API_KEY, SECRET, json_body, log_events, signature_header, wait_until


@pytest.fixture
def webhook_server(real_server):
    return real_server(THREADS="16")


def test_webhook_over_real_http_clones_and_logs_structured_lines_without_personal_data(webhook_server, fake, audio_files):
    body = json_body(audio_files["mp3_cbr"].read_bytes(), name="Ivanka", dob="11.12.2007")
    response = requests.post(webhook_server.url + "/webhook", data=body, timeout=30,
                             headers={"Content-Type": "application/json", "ElevenLabs-Signature": signature_header(body),
                                      "X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1;o=1"})
    assert response.status_code == 200, response.text
    voice_id = response.json()["voice_id"]
    assert voice_id in fake.voices
    assert wait_until(lambda: log_events(webhook_server.logs(), "webhook_complete"), timeout=10)  # the call's last line
    lines = [json.loads(line) for line in webhook_server.logs().splitlines() if line.startswith("{")]
    kinds = [line.get("event_type") for line in lines]
    for kind in ("voice_clone_start", "voice_clone_success", "agent_update_success", "webhook_complete"):
        assert kind in kinds
    assert all(line["severity"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") for line in lines)
    assert any(line.get("logging.googleapis.com/trace", "").endswith("105445aa7843bc8bf206b12000100000") for line in lines)
    assert any(line.get("caller_name") == "I***" for line in lines)
    text = webhook_server.logs()
    for forbidden in ("Ivanka", "11.12.2007", API_KEY, SECRET, json.loads(body)["voice_sample"]["data"][:40]):
        assert forbidden not in text


def test_rejected_signature_is_logged_without_the_signature(webhook_server, fake):
    body = b'{"conversation_id": "conv_1"}'
    header = signature_header(body, secret="wrong")
    response = requests.post(webhook_server.url + "/webhook", data=body, timeout=10,
                             headers={"Content-Type": "application/json", "ElevenLabs-Signature": header})
    assert response.status_code == 401
    assert wait_until(lambda: log_events(webhook_server.logs(), "webhook_error", error_code="INVALID_SIGNATURE"), timeout=10)
    assert log_events(webhook_server.logs(), "signature_rejected")  # written before the webhook_error line
    assert header.split("v0=")[1] not in webhook_server.logs()


def test_chunked_body_without_content_length_is_capped_at_the_body_limit(real_server):
    server = real_server(MAX_SAMPLE_BYTES="1000")
    chunks = (b"x" * 40000 for _ in range(4))
    response = requests.post(server.url + "/webhook", data=chunks, timeout=10, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error_code"] == "SAMPLE_TOO_LARGE"


@pytest.mark.parametrize("target", ["precall_webhook", "cleanup_voices"])
def test_missing_required_setting_stops_start_up_with_one_line_naming_it(target):
    env = {"PATH": "/usr/bin:/bin", "FUNCTION_TARGET": target}
    result = subprocess.run([sys.executable, "-c", "import main"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "configuration error: ELEVENLABS_API_KEY: is required"


def test_cleanup_target_does_not_need_the_webhook_secret_but_precall_does(tmp_path):
    base = {"PATH": "/usr/bin:/bin", "ELEVENLABS_API_KEY": "k", "LOCAL_QUEUE_PATH": str(tmp_path / "queue.sqlite3")}
    ok = subprocess.run([sys.executable, "-c", "import main"], cwd=ROOT, env=dict(base, FUNCTION_TARGET="cleanup_voices"),
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, "-c", "import main"], cwd=ROOT, env=dict(base, FUNCTION_TARGET="precall_webhook"),
                         capture_output=True, text=True, timeout=60)
    assert bad.stderr.strip() == "configuration error: ELEVENLABS_WEBHOOK_SECRET: is required"


def test_a_retry_that_takes_over_an_earlier_requests_clone_logs_it_as_reused_not_as_a_second_success(real_server, fake,
                                                                                                      audio_files):
    """The first delivery's add makes the voice at ElevenLabs, but its answer is lost (the connection resets): the
    client's retry finds the voice through the add's idempotency probe, and it is this call's own clone (one
    `voice_clone_success`). The sender's retry then reaches a fresh instance (the first was killed before its answer
    got out, as in the soak): its add fails, its probe finds the same voice, and it takes that clone over. That is a
    `voice_clone_reused` line, not a second success, so the log-based "clones made" counts the clone once."""
    first, second = real_server(), real_server()
    body = json_body(audio_files["wav_pcm16"].read_bytes(), conversation_id="conv_takeover")

    def deliver(server) -> dict:
        response = requests.post(server.url + "/webhook", data=body, timeout=30, headers={
            "Content-Type": "application/json", "ElevenLabs-Signature": signature_header(body)})
        assert response.status_code == 200, response.text
        return response.json()

    fake.inject("POST", "/v1/voices/add", reset=True, served=True)  # the voice is made; the answer never comes
    made_first = deliver(first)
    [voice_id] = fake.made
    name = fake.made[voice_id]["name"]
    assert made_first["voice_id"] == voice_id and made_first["voice_name"] == name
    # The retry's own attempt is told from another request's by its voice name, which carries the second it started.
    stamp = name.split("_Clone_")[1][:15]
    assert wait_until(lambda: datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S") > stamp, timeout=5, interval=0.05)
    fake.inject("POST", "/v1/voices/add", status=503)
    taken = deliver(second)
    assert taken["voice_id"] == voice_id and taken["voice_name"] == name
    assert list(fake.made) == [voice_id]  # one clone in all

    def lines(event_type: str) -> list[dict]:
        return log_events(first.logs() + second.logs(), event_type, voice_id=voice_id)

    assert wait_until(lambda: lines("voice_clone_reused"), timeout=10, interval=0.05)
    assert wait_until(lambda: log_events(second.logs(), "webhook_complete"), timeout=10, interval=0.05)
    assert len(lines("voice_clone_success")) == 1 and len(lines("voice_clone_reused")) == 1
    assert log_events(first.logs(), "voice_clone_success", voice_id=voice_id)
    assert lines("voice_clone_reused")[0]["found_by"] == "add_probe"
