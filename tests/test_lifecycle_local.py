"""Single-machine default (no VOICE_EVENTS_TOPIC): the in-process queue runs the cleanup code,
and the operator's sweep CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from sandbox.processes import ROOT
from tests.conftest import (
    AGENT_ID,
    API_KEY,
    BOTH_MODES,
    json_body,
    post_signed,
    seed_clone,
    wait_until,
)
from voiceclone.clones import Clone

OURS = {"source": "precall-webhook", "type": "instant_clone", "conversation_id": "conv_old", "created_at": "2020-01-01T00:00:00Z"}


def post_call(client, conversation_id: str, kind: str = "post_call_audio"):
    body = json.dumps({"type": kind, "event_timestamp": int(time.time()),
                       "data": {"agent_id": AGENT_ID, "conversation_id": conversation_id}}).encode()
    return post_signed(client, "/post-call", body)


@pytest.mark.parametrize("fake_mode", BOTH_MODES)
def test_local_queue_deletes_the_clone_after_the_post_call_webhook(client, fake, audio_files):
    voice_id = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes(),
                                                         conversation_id="conv_local")).get_json()["voice_id"]
    assert client.get("/healthz").get_json()["events"] == "local"
    assert wait_until(lambda: fake.requests_to("GET", "/v1/convai/conversations/conv_local"))
    assert voice_id in fake.voices  # call not over: kept
    assert post_call(client, "conv_local").get_json() == {"status": "accepted", "conversation_id": "conv_local"}
    assert wait_until(lambda: voice_id not in fake.voices)


def test_auto_delete_off_keeps_clones_after_the_call(make_client, fake, audio_files):
    client = make_client(VOICE_CLONE_AUTO_DELETE="false")
    voice_id = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes(),
                                                         conversation_id="conv_keep")).get_json()["voice_id"]
    assert post_call(client, "conv_keep").status_code == 200
    time.sleep(1)
    assert voice_id in fake.voices and fake.requests_to("DELETE", r"/v1/voices/.*") == []


@pytest.mark.parametrize("fake_mode", BOTH_MODES)
def test_sweep_cli_is_a_dry_run_unless_applied(fake):
    stale = seed_clone(fake, "conv_old", datetime(2020, 1, 1, tzinfo=timezone.utc))
    foreign = fake.add_voice("Narrator", created_at_unix=0)
    env = {"PATH": "/usr/bin:/bin", "ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_BASE_URL": fake.url}
    dry = subprocess.run([sys.executable, "-m", "cleanup", "sweep"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["applied"] is False and [c["voice_id"] for c in report["expired_clones"]] == [stale]
    assert stale in fake.voices
    applied = subprocess.run([sys.executable, "-m", "cleanup", "sweep", "--apply"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert applied.returncode == 0 and stale not in fake.voices and foreign in fake.voices


def test_our_labels_mark_a_clone_and_lookalike_labels_do_not():
    assert Clone.from_voice({"voice_id": "v", "labels": OURS}) is not None
    assert Clone.from_voice({"voice_id": "v", "labels": {**OURS, "source": "studio"}}) is None
    assert Clone.from_voice({"voice_id": "v", "labels": {"conversation_id": "conv_old"}}) is None
    assert Clone.from_voice({"voice_id": "v"}) is None


def test_each_sweep_logs_the_accounts_voice_slots(fake):
    seed_clone(fake, "conv_slots", datetime(2020, 1, 1, tzinfo=timezone.utc))
    env = {"PATH": "/usr/bin:/bin", "ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_BASE_URL": fake.url}
    result = subprocess.run([sys.executable, "-m", "cleanup", "sweep"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    [slots] = [json.loads(line) for line in result.stderr.splitlines() if '"voice_slots"' in line]
    assert slots["voice_slots_used"] == fake.custom_voice_count() and slots["voice_limit"] == fake.voice_limit
