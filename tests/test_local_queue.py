"""The durable local queue (no VOICE_EVENTS_TOPIC): Pub/Sub's delivery semantics in one SQLite file.

The consumer is the real cleanup handler against the local ElevenLabs; the clock is injected, so a
10 s backoff is a step of the clock, not a wait. Restarts, crashes and sharing are real processes:
functions-framework servers on one file, one of them killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from cleanup.handler import CleanupHandler
from sandbox.processes import ROOT, FunctionServer, StartupError
from tests.conftest import API_KEY, seed_clone, wait_until
from voiceclone import events
from voiceclone.config import load_settings
from voiceclone.elevenlabs_client import ElevenLabsClient
from voiceclone.local_queue import QueueStore, open_store
from voiceclone.sinks import LocalEventQueue

NOW = datetime.now(timezone.utc).replace(microsecond=0)


class Clock:
    """Wall-clock seconds that move only when a test moves them."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue_path(tmp_path):
    return str(tmp_path / "queue" / "voice-events.sqlite3")


@pytest.fixture
def queue(fake, clock, queue_path):
    """The local queue fed to the real cleanup handler, its consumer driven by the test (`deliver_one`)."""
    settings = load_settings({"ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_BASE_URL": fake.url}, require_webhook_secret=False)
    handler = CleanupHandler.for_settings(settings, ElevenLabsClient(fake.url, API_KEY))
    local = LocalEventQueue(QueueStore(queue_path, clock), handler.handle_data, clock=clock)
    yield local
    local.close()


def live_clone(fake, conversation_id: str) -> str:
    fake.set_conversation(conversation_id, "in-progress")
    return seed_clone(fake, conversation_id, NOW)


def created(voice_id: str, conversation_id: str) -> dict:
    return events.voice_created(voice_id, "Ivan_Clone", conversation_id, "agent", NOW)


def test_a_live_call_is_redelivered_after_10_20_40_seconds_and_deleted_once_it_ended(fake, queue, clock):
    voice_id = live_clone(fake, "conv_q_live")
    assert queue.publish(created(voice_id, "conv_q_live"))
    waits = []
    for expected in (10, 20, 40):
        assert queue.deliver_one()  # the call is live: kept, due again later
        clock.now += expected - 1
        assert not queue.deliver_one(), f"redelivered before {expected} s"
        clock.now += 1
        waits.append(expected)
    fake.set_conversation("conv_q_live", "done")
    assert queue.deliver_one()
    assert voice_id not in fake.voices
    assert queue.store.counts().pending + queue.store.counts().retrying == 0
    assert [queue.delay_after(n) for n in (1, 2, 3, 6, 7, 50)] == [10, 20, 40, 320, 600, 600]


def test_after_100_failed_deliveries_the_event_is_dead_lettered_and_redrive_brings_it_back(fake, queue, clock, queue_path):
    voice_id = live_clone(fake, "conv_q_dead")
    queue.publish(created(voice_id, "conv_q_dead"))
    for _ in range(100):
        assert queue.deliver_one()
        clock.now += 600
    assert not queue.deliver_one()
    counts = queue.store.counts()
    assert (counts.pending, counts.retrying, counts.dead_lettered) == (0, 0, 1)
    [dead] = queue.store.listing()["dead_letters"]
    assert dead["attempts"] == 100 and dead["conversation_id"] == "conv_q_dead" and "RetryLater" in dead["last_error"]

    redriven = subprocess.run([sys.executable, "-m", "cleanup", "redrive"], cwd=ROOT, capture_output=True, text=True,
                              timeout=60, env={"PATH": os.environ["PATH"], "ELEVENLABS_API_KEY": API_KEY,
                                               "ELEVENLABS_BASE_URL": fake.url, "LOCAL_QUEUE_PATH": queue_path})
    assert redriven.returncode == 0, redriven.stderr
    assert json.loads(redriven.stdout)["redriven"] == 1
    fake.set_conversation("conv_q_dead", "done")
    assert queue.deliver_one() and voice_id not in fake.voices
    assert queue.store.counts().dead_lettered == 0


def test_a_malformed_event_is_acknowledged_not_retried(queue):
    queue.store.add(b"not json at all", None, None)
    queue.store.add(json.dumps({"event_type": "voice.created"}).encode(), "voice.created", None)
    assert queue.deliver_one() and queue.deliver_one()
    counts = queue.store.counts()
    assert (counts.pending, counts.retrying, counts.dead_lettered) == (0, 0, 0)


def test_what_a_stopped_process_left_pending_is_delivered_by_the_next_one(fake, queue, clock, queue_path):
    voice_id = seed_clone(fake, "conv_q_left", NOW)
    queue.publish(events.call_ended("conv_q_left", "agent", NOW))
    queue.close()  # stopped before delivering anything
    settings = load_settings({"ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_BASE_URL": fake.url}, require_webhook_secret=False)
    handler = CleanupHandler.for_settings(settings, ElevenLabsClient(fake.url, API_KEY))
    restarted = LocalEventQueue(QueueStore(queue_path, clock), handler.handle_data, clock=clock)
    assert restarted.deliver_one() and voice_id not in fake.voices
    restarted.close()


def test_the_file_is_in_wal_mode_and_memory_keeps_the_old_behaviour(queue, queue_path, make_client, fake, audio_files):
    queue.publish(events.sweep())
    with sqlite3.connect(queue_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    from tests.conftest import json_body, post_signed

    client = make_client(LOCAL_QUEUE_PATH=":memory:")
    voice_id = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes(),
                                                         conversation_id="conv_q_mem")).get_json()["voice_id"]
    fake.set_conversation("conv_q_mem", "done")
    assert wait_until(lambda: voice_id not in fake.voices)


def server_env(fake, queue_path: str, **extra: str) -> dict[str, str]:
    return {"ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_BASE_URL": fake.url, "LOCAL_QUEUE_PATH": queue_path, **extra}


def test_two_processes_on_one_file_never_handle_the_same_event(fake, queue_path):
    """Two `cleanup_voices` servers consume one file while events arrive: each `call.ended` leads to exactly
    one search of the account for its conversation, and both servers did part of the work."""
    servers = [FunctionServer("cleanup_voices", server_env(fake, queue_path), signature_type="cloudevent") for _ in range(2)]
    try:
        for server in servers:
            server.start(ready_path="/")
        store = open_store(queue_path)
        ids = [f"conv_q_two_{n}" for n in range(120)]
        for conversation_id in ids:
            data, _ = events.encode(events.call_ended(conversation_id, "agent", NOW))
            store.add(data, events.CALL_ENDED, conversation_id)
        assert wait_until(lambda: sum(s.logs().count('"call_ended_processed"') for s in servers) >= len(ids), timeout=60)
        searches = [r.query["search"][0] for r in fake.requests_to("GET", "/v2/voices") if "search" in r.query]
        assert sorted(searches) == sorted(c.removeprefix("conv_") for c in ids)  # each exactly once
        assert all(s.logs().count('"call_ended_processed"') > 0 for s in servers), "one server did everything"
        assert store.counts().pending == 0
    finally:
        for server in servers:
            server.stop()


def test_an_event_in_hand_when_its_process_is_killed_is_delivered_by_the_restarted_one(fake, queue_path):
    """The webhook worker takes `call.ended` and is SIGKILLed while ElevenLabs is slow to answer; the
    restarted service sees the lease's holder is gone and deletes the clone (no 60 s lease wait)."""
    import requests

    from tests.conftest import SECRET, signature_header

    env = server_env(fake, queue_path, ELEVENLABS_WEBHOOK_SECRET=SECRET)
    first = FunctionServer("precall_webhook", env).start()
    voice_id = seed_clone(fake, "conv_q_kill", NOW)
    fake.set_conversation("conv_q_kill", "done")
    fake.inject("GET", "/v2/voices", delay=30)  # the next search hangs: the event is in hand
    ended = json.dumps({"type": "post_call_transcription", "event_timestamp": 1,
                        "data": {"conversation_id": "conv_q_kill", "agent_id": "agent"}}).encode()
    assert requests.post(first.url + "/post-call", data=ended, timeout=10, headers={
        "Content-Type": "application/json", "ElevenLabs-Signature": signature_header(ended)}).status_code == 200
    searched = lambda: [r for r in fake.requests_to("GET", "/v2/voices") if r.query.get("search") == ["q_kill"]]  # noqa: E731
    assert wait_until(searched, timeout=20)
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    assert voice_id in fake.voices and open_store(queue_path).counts().in_hand == 1
    second = FunctionServer("precall_webhook", env).start()
    try:
        assert wait_until(lambda: voice_id not in fake.voices, timeout=30), second.logs()
        assert wait_until(lambda: '"voice_event_lease_released"' in second.logs(), timeout=10)
    finally:
        second.stop()


def test_a_corrupt_or_unwritable_queue_file_stops_start_up_with_one_line(fake, tmp_path):
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"this is not a database" * 100)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    for path, reason in ((corrupt, "file is not a database"), (blocked / "queue.sqlite3", "File exists"),
                         (tmp_path, "unable to open database file")):
        with pytest.raises(StartupError) as refused:
            FunctionServer("precall_webhook", server_env(fake, str(path), ELEVENLABS_WEBHOOK_SECRET="s")).start()
        line = str(refused.value)
        assert line.startswith("precall_webhook did not start: configuration error: LOCAL_QUEUE_PATH: "), line
        assert str(path) in line and reason in line
    assert corrupt.read_bytes().startswith(b"this is not a database")  # never overwritten


def test_status_shows_pending_retrying_and_dead_lettered_events(fake, queue, clock, queue_path):
    queue.publish(events.call_ended("conv_q_refused", None, NOW))
    fake.inject("GET", "/v2/voices", status=401, times=100)  # the key refused at every delivery
    for _ in range(100):
        assert queue.deliver_one()
        clock.now += 600
    voice_id = live_clone(fake, "conv_q_status")
    queue.publish(created(voice_id, "conv_q_status"))
    assert queue.deliver_one()  # the call is live: retrying
    queue.publish(events.sweep())  # not delivered yet: pending
    env = {"PATH": os.environ["PATH"], "ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_BASE_URL": fake.url,
           "LOCAL_QUEUE_PATH": queue_path}
    result = subprocess.run([sys.executable, "-m", "cleanup", "status", "--json"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    report = json.loads(result.stdout)["local_queue"]
    assert (report["pending"], report["retrying"], report["dead_lettered"]) == (1, 1, 1), report
    assert report["dead_letters"][0]["conversation_id"] == "conv_q_refused"
    text = subprocess.run([sys.executable, "-m", "cleanup", "status"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60).stdout
    assert f"local queue {queue_path}: 1 pending, 1 retrying, 0 being handled, 1 dead-lettered" in text
    assert "conv_q_refused" in text and "python -m cleanup redrive" in text
