"""Single-machine default (no VOICE_EVENTS_TOPIC): the in-process queue runs the cleanup code,
and the operator's sweep CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest

from sandbox.processes import ROOT
from tests.conftest import (
    API_KEY,
    BOTH_MODES,
    json_body,
    log_events,
    post_call_body,
    post_signed,
    seed_clone,
    wait_until,
)
from voiceclone.clones import Clone

OURS = {"source": "precall-webhook", "type": "instant_clone", "conversation_id": "conv_old", "created_at": "2020-01-01T00:00:00Z"}


def post_call(client, conversation_id: str, kind: str = "post_call_audio") -> Any:
    return post_signed(client, "/post-call", post_call_body(conversation_id, kind))


def output_of(capsys) -> Callable[[], str]:
    """Everything the in-process service has written to stdout so far (its queue logs from its own thread)."""
    seen: list[str] = []

    def read() -> str:
        seen.append(capsys.readouterr().out)
        return "".join(seen)
    return read


@pytest.mark.parametrize("fake_mode", BOTH_MODES)
def test_local_queue_deletes_the_clone_after_the_post_call_webhook(client, fake, audio_files, capsys):
    output = output_of(capsys)
    voice_id = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes(),
                                                         conversation_id="conv_local")).get_json()["voice_id"]
    assert client.get("/healthz").get_json()["events"] == "local"
    # voice.created handled: ElevenLabs does not list the conversation yet, so the call is not over: kept.
    assert wait_until(lambda: log_events(output(), "voice_kept_call_live", voice_id=voice_id))
    assert voice_id in fake.voices and not fake.requests_to("DELETE", f"/v1/voices/{voice_id}")
    assert post_call(client, "conv_local").get_json() == {"status": "accepted", "conversation_id": "conv_local"}
    assert wait_until(lambda: voice_id not in fake.voices)


def test_auto_delete_off_keeps_clones_after_the_call(make_client, fake, audio_files, capsys):
    output = output_of(capsys)
    client = make_client(VOICE_CLONE_AUTO_DELETE="false")
    voice_id = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes(),
                                                         conversation_id="conv_keep")).get_json()["voice_id"]
    assert post_call(client, "conv_keep").status_code == 200
    # Both events (voice.created, call.ended) were handled, and each left the clone alone.
    assert wait_until(lambda: len(log_events(output(), "voice_cleanup_skipped", conversation_id="conv_keep")) == 2)
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
