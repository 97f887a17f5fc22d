"""The voice lifecycle on the real Pub/Sub emulator: pre-call -> voice.created -> push ->
`cleanup_voices` (a real functions-framework server) -> the clone deleted in ElevenLabs."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import requests

from sandbox.pubsub_emulator import create_topology
from tests.conftest import (
    AGENT_ID,
    BOTH_MODES,
    json_body,
    log_events,
    post_call_body,
    seed_clone,
    signature_header,
    wait_until,
)
from voiceclone import events

pytestmark = pytest.mark.emulator
# The lifecycle against the API at its most convenient, and as documented at its least convenient.
both_modes = pytest.mark.parametrize("fake_mode", BOTH_MODES)
OLD = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=3)


class Lifecycle:
    """Both functions on one topic of the emulator: `cleanup_voices` behind its push subscription,
    `precall_webhook` publishing to it (each started by `real_server`, stopped after the test)."""

    def __init__(self, emulator, real_server):
        name = f"voice-events-{uuid.uuid4().hex[:8]}"
        common = {"PUBSUB_EMULATOR_HOST": emulator.host, "GOOGLE_CLOUD_PROJECT": emulator.project}
        self.cleanup = real_server(target="cleanup_voices", **common)
        self.topology = create_topology(emulator.project, name, self.cleanup.url + "/",
                                        max_delivery_attempts=5, min_backoff_seconds=1, max_backoff_seconds=2,
                                        ack_deadline_seconds=10)
        self.webhook = real_server(**common, VOICE_EVENTS_TOPIC=self.topology.topic)
        from google.cloud import pubsub_v1

        self.publisher = pubsub_v1.PublisherClient()

    def precall(self, sample: bytes, conversation_id: str) -> dict:
        body = json_body(sample, conversation_id=conversation_id)
        response = requests.post(self.webhook.url + "/webhook", data=body, timeout=30, headers={
            "Content-Type": "application/json", "ElevenLabs-Signature": signature_header(body)})
        assert response.status_code == 200, response.text
        return response.json()

    def post_call(self, conversation_id: str, kind: str = "post_call_transcription") -> requests.Response:
        body = post_call_body(conversation_id, kind)
        return requests.post(self.webhook.url + "/post-call", data=body, timeout=10, headers={
            "Content-Type": "application/json", "ElevenLabs-Signature": signature_header(body)})

    def publish(self, data: bytes, **attributes: str) -> None:
        self.publisher.publish(self.topology.topic, data, **attributes).result(timeout=10)

    def publish_event(self, event: dict) -> None:
        data, attributes = events.encode(event)
        self.publish(data, **attributes)

    def logged(self, event_type: str, **fields: str) -> list[dict]:
        """The cleanup function's log lines of this kind (as its output pipe has delivered them so far)."""
        return log_events(self.cleanup.logs(), event_type, **fields)

    def dead_letters(self) -> list[bytes]:
        from google.cloud import pubsub_v1

        subscriber = pubsub_v1.SubscriberClient()
        response = subscriber.pull(request={"subscription": self.topology.dead_letter_subscription, "max_messages": 10},
                                   timeout=10)
        subscriber.close()
        return [m.message.data for m in response.received_messages]


@pytest.fixture
def lifecycle(pubsub_emulator, fake, real_server):
    return Lifecycle(pubsub_emulator, real_server)


@both_modes
def test_precall_then_post_call_deletes_the_clone(lifecycle, fake, audio_files):
    answer = lifecycle.precall(audio_files["mp3_cbr"].read_bytes(), "conv_full_path")
    voice_id = answer["voice_id"]
    assert voice_id in fake.voices
    # voice.created reached the cleanup function, which asked ElevenLabs whether the call is over: the
    # conversation is unknown there (not listed yet), which means not over, so it decided to keep the clone.
    assert wait_until(lambda: lifecycle.logged("voice_kept_call_live", voice_id=voice_id), timeout=30), \
        lifecycle.cleanup.logs()[-3000:]
    assert voice_id in fake.voices and not fake.requests_to("DELETE", f"/v1/voices/{voice_id}")
    response = lifecycle.post_call("conv_full_path")
    assert response.status_code == 200 and response.json()["status"] == "accepted"
    assert wait_until(lambda: voice_id not in fake.voices)
    assert fake.requests_to("DELETE", f"/v1/voices/{voice_id}")


@both_modes
def test_clone_survives_while_the_call_is_live_and_goes_once_it_ends(lifecycle, fake, audio_files):
    fake.set_conversation("conv_live_call", "in-progress")
    voice_id = lifecycle.precall(audio_files["wav_pcm16"].read_bytes(), "conv_live_call")["voice_id"]
    # The expected "redeliver later" path: one INFO line per delivery, no traceback, nothing at ERROR.
    assert wait_until(lambda: len(lifecycle.logged("voice_kept_call_live", voice_id=voice_id)) >= 2, timeout=30), \
        lifecycle.cleanup.logs()[-3000:]
    assert voice_id in fake.voices and not fake.requests_to("DELETE", f"/v1/voices/{voice_id}")  # redelivered, kept
    logs = lifecycle.cleanup.logs()
    assert "Traceback" not in logs and '"severity": "ERROR"' not in logs
    fake.set_conversation("conv_live_call", "done")  # ended, but the post-call webhook never came
    assert wait_until(lambda: voice_id not in fake.voices, timeout=30)


@both_modes
def test_ttl_deletes_a_clone_without_any_post_call_webhook(lifecycle, fake):
    old = seed_clone(fake, "conv_ttl", OLD)
    fake.set_conversation("conv_ttl", "in-progress")  # ElevenLabs still says live: only the TTL can end it
    lifecycle.publish_event(events.voice_created(old, fake.voices[old]["name"], "conv_ttl", AGENT_ID, OLD))
    assert wait_until(lambda: old not in fake.voices)


@both_modes
def test_sweep_deletes_only_our_clones_older_than_the_ttl(lifecycle, fake):
    stale = seed_clone(fake, "conv_old", OLD)
    fresh = seed_clone(fake, "conv_new", datetime.now(timezone.utc))
    foreign = fake.add_voice("Narrator", labels={"conversation_id": "conv_old", "source": "studio"}, created_at_unix=0)
    lifecycle.publish_event(events.sweep())
    swept = wait_until(lambda: lifecycle.logged("sweep_complete"), timeout=30)  # logged after its deletes
    assert swept and swept[0]["expired"] == 1 and stale not in fake.voices  # (a redelivery would find none left)
    assert fresh in fake.voices and foreign in fake.voices


@both_modes
def test_foreign_voice_mentioning_the_conversation_survives_everything(lifecycle, fake):
    foreign = fake.add_voice("Ivan_Clone_20250101_000000_conv_foreign", description="conv_foreign",
                             labels={"conversation_id": "conv_foreign", "type": "instant_clone"}, created_at_unix=0)
    fake.set_conversation("conv_foreign", "done")
    assert lifecycle.post_call("conv_foreign").status_code == 200
    lifecycle.publish_event(events.voice_created(foreign, "x", "conv_foreign", AGENT_ID, datetime(2020, 1, 1, tzinfo=timezone.utc)))
    lifecycle.publish_event(events.sweep())
    # Each of the three events was handled to its end (each logs its last line after any delete).
    assert wait_until(lambda: lifecycle.logged("call_ended_processed", conversation_id="conv_foreign")
                      and (lifecycle.logged("voice_cleanup_done", voice_id=foreign) or lifecycle.logged("voice_deleted"))
                      and lifecycle.logged("sweep_complete"), timeout=30), lifecycle.cleanup.logs()[-3000:]
    assert lifecycle.logged("call_ended_processed")[0]["clones"] == 0
    assert foreign in fake.voices
    assert fake.requests_to("DELETE", r"/v1/voices/.*") == []


def test_malformed_message_is_acknowledged_not_retried(lifecycle, fake):
    lifecycle.publish(b"this is not json", event_type="voice.created")
    assert wait_until(lambda: lifecycle.logged("voice_event_malformed"), timeout=30)
    # Acknowledged means a 2xx answer to the push (Pub/Sub redelivers anything else, then dead-letters
    # it): the same push, as the emulator sends it, answered here.
    push = {"subscription": lifecycle.topology.subscription, "message": {
        "data": base64.b64encode(b"this is not json").decode(), "attributes": {"event_type": "voice.created"},
        "messageId": "1", "publishTime": "2026-01-01T00:00:00Z"}}
    response = requests.post(lifecycle.cleanup.url + "/", json=push, timeout=30)
    assert 200 <= response.status_code < 300, response.status_code
    # its line reaches the log file from the server's pipe after the answer: wait for it
    assert wait_until(lambda: len(lifecycle.logged("voice_event_malformed")) >= 2, timeout=10)


@pytest.mark.timeout(180)  # five deliveries with Pub/Sub's backoff
def test_message_that_keeps_failing_ends_in_the_dead_letter_topic(lifecycle, fake):
    fake.inject("GET", "/v1/voices/always_failing", status=500, times=1000)
    data = json.dumps(events.voice_created("always_failing", "x", "conv_poison", AGENT_ID, datetime.now(timezone.utc))).encode()
    lifecycle.publish(data, event_type="voice.created")
    dead = wait_until(lifecycle.dead_letters, timeout=120, interval=2)  # five deliveries, backoff between them
    assert dead and json.loads(dead[0])["voice_id"] == "always_failing"


def test_unknown_post_call_types_are_acknowledged_and_bad_signatures_refused(lifecycle, fake):
    body = json.dumps({"type": "something_new", "data": {}}).encode()
    ok = requests.post(lifecycle.webhook.url + "/post-call", data=body, timeout=10, headers={
        "Content-Type": "application/json", "ElevenLabs-Signature": signature_header(body)})
    assert ok.status_code == 200 and ok.json() == {"status": "ignored"}
    bad = requests.post(lifecycle.webhook.url + "/post-call", data=body, timeout=10, headers={
        "Content-Type": "application/json", "ElevenLabs-Signature": signature_header(body, secret="nope")})
    assert bad.status_code == 401 and bad.json()["error_code"] == "INVALID_SIGNATURE"


@both_modes
def test_call_initiation_failure_also_ends_the_clone(lifecycle, fake):
    voice_id = seed_clone(fake, "conv_initfail", datetime.now(timezone.utc))
    assert lifecycle.post_call("conv_initfail", kind="call_initiation_failure").status_code == 200
    assert wait_until(lambda: voice_id not in fake.voices)


def test_failed_publish_is_logged_and_never_fails_the_call(pubsub_emulator, real_server, audio_files):
    missing_topic = f"projects/{pubsub_emulator.project}/topics/does-not-exist"
    server = real_server(PUBSUB_EMULATOR_HOST=pubsub_emulator.host, VOICE_EVENTS_TOPIC=missing_topic)
    body = json_body(audio_files["wav_pcm16"].read_bytes(), conversation_id="conv_nopub")
    response = requests.post(server.url + "/webhook", data=body, timeout=60, headers={
        "Content-Type": "application/json", "ElevenLabs-Signature": signature_header(body)})
    assert response.status_code == 200
    assert wait_until(lambda: log_events(server.logs(), "voice_event_publish_failed"))


def test_with_pubsub_stalled_the_answer_does_not_wait_for_the_publish_which_lands_once_it_recovers(
        lifecycle, pubsub_emulator, fake, audio_files):
    """A hanging Pub/Sub (its server stopped, connections open) held every answer ~6 s and lost the event;
    now the answer goes after about a second and the publish finishes behind it."""
    lifecycle.precall(audio_files["wav_pcm16"].read_bytes(), "conv_before_stall")  # the channel is up
    pubsub_emulator.pause()
    try:
        answer = lifecycle.precall(audio_files["wav_pcm16"].read_bytes(), "conv_stall")
    finally:
        pubsub_emulator.resume()
    assert answer["voice_id"] in fake.voices
    # the line is copied from the server's pipe to its log file after the answer: wait for it
    assert wait_until(lambda: '"event_type": "voice_event_publish_pending"' in lifecycle.webhook.logs(), timeout=10)
    # voice.created did reach cleanup: it asked ElevenLabs whether that call is over.
    assert wait_until(lambda: fake.requests_to("GET", "/v1/convai/conversations/conv_stall"), timeout=30)
    assert '"event_type": "voice_event_publish_failed"' not in lifecycle.webhook.logs()
    assert pubsub_emulator.log_path.parent.name.startswith("pubsub-emulator") and pubsub_emulator.log_path.exists()
