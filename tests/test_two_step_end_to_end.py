"""The two-step flow end to end on two real service instances: the sample reaches one, ElevenLabs'
initiation webhook the other, the post-call webhook names the call only by its call sid, and the
clone is deleted. Once through the Pub/Sub emulator, once with each instance's in-process queue."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests

from sandbox.processes import FunctionServer
from sandbox.pubsub_emulator import create_topology
from tests.conftest import (
    AGENT_ID,
    API_KEY,
    BOTH_MODES,
    SECRET,
    signature_header,
    wait_until,
)
from tests.test_two_step_flow import (
    CALL_SID,
    HEADER,
    INIT_SECRET,
    PHONE,
    allow,
    sample_body,
)

pytestmark = pytest.mark.parametrize("fake_mode", BOTH_MODES)


def signed_post(url: str, body: bytes) -> requests.Response:
    return requests.post(url, data=body, timeout=60, headers={"Content-Type": "application/json",
                                                              "ElevenLabs-Signature": signature_header(body)})


def run_two_step(first: FunctionServer, second: FunctionServer, fake, audio_files, call_sid: str) -> str:
    """Sample on `first`, initiation and post-call on `second`; returns the clone's voice id."""
    answer = signed_post(first.url + "/webhook", sample_body(audio_files, call_sid=call_sid, name="Ivan"))
    assert answer.status_code == 200, answer.text
    voice_id = answer.json()["voice_id"]
    # voice.created reached cleanup, which asked ElevenLabs whether the call is over (it is not): waited for,
    # because the event travels on its own (a push, or the local queue) and may come after the answer.
    assert wait_until(lambda: fake.requests_to("GET", f"/v1/convai/conversations/{call_sid}"), timeout=30)
    init = requests.post(second.url + "/conversation-init", timeout=10, headers={HEADER: INIT_SECRET}, json={
        "caller_id": PHONE, "agent_id": AGENT_ID, "called_number": "+31201234567", "call_sid": call_sid})
    assert init.status_code == 200
    assert init.json()["conversation_config_override"] == {"agent": {"first_message": "Hallo Ivan, fijn dat je belt!"},
                                                           "tts": {"voice_id": voice_id}}
    assert voice_id in fake.voices  # the call is on: nothing deleted it
    post_call = json.dumps({"type": "post_call_transcription", "event_timestamp": int(time.time()), "data": {
        "agent_id": AGENT_ID, "conversation_id": f"conv_{uuid.uuid4().hex[:10]}", "status": "done",
        "metadata": {"phone_call": {"type": "twilio", "direction": "inbound", "call_sid": call_sid}}}}).encode()
    assert signed_post(second.url + "/post-call", post_call).status_code == 200
    assert wait_until(lambda: voice_id not in fake.voices, timeout=30)
    return voice_id


def instance_env(fake, **extra: str) -> dict[str, str]:
    return {"ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_BASE_URL": fake.url, "ELEVENLABS_WEBHOOK_SECRET": SECRET,
            "ELEVENLABS_AGENT_ID": AGENT_ID, "AGENT_UPDATE_MODE": "override", "INIT_WEBHOOK_SECRET": INIT_SECRET, **extra}


@pytest.mark.emulator
def test_two_step_flow_across_two_instances_through_pubsub(pubsub_emulator, fake, audio_files):
    allow(fake)  # before start-up: each instance reads the agent's override settings ahead of the first call
    common = {"ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_BASE_URL": fake.url, "PUBSUB_EMULATOR_HOST": pubsub_emulator.host,
              "GOOGLE_CLOUD_PROJECT": pubsub_emulator.project}
    cleanup = FunctionServer("cleanup_voices", common, signature_type="cloudevent").start(ready_path="/")
    topology = create_topology(pubsub_emulator.project, f"two-step-{uuid.uuid4().hex[:8]}", cleanup.url + "/",
                               min_backoff_seconds=1, max_backoff_seconds=2, ack_deadline_seconds=10)
    env = instance_env(fake, PUBSUB_EMULATOR_HOST=pubsub_emulator.host, GOOGLE_CLOUD_PROJECT=pubsub_emulator.project,
                       VOICE_EVENTS_TOPIC=topology.topic)
    first, second = FunctionServer("precall_webhook", env).start(), FunctionServer("precall_webhook", env).start()
    try:
        voice_id = run_two_step(first, second, fake, audio_files, "CAtwostepPubSub01")
        assert '"source": "elevenlabs"' in second.logs()  # the second instance found it by search
        assert fake.requests_to("DELETE", f"/v1/voices/{voice_id}")
    finally:
        for server in (first, second, cleanup):
            server.stop()


def test_two_step_flow_across_two_instances_with_in_process_queues(fake, audio_files):
    allow(fake)
    first = FunctionServer("precall_webhook", instance_env(fake)).start()
    second = FunctionServer("precall_webhook", instance_env(fake)).start()
    try:
        # Each worker read the agent's override settings at start-up, before any call reached it.
        assert wait_until(lambda: len(fake.requests_to("GET", f"/v1/convai/agents/{AGENT_ID}")) >= 2, timeout=10)
        run_two_step(first, second, fake, audio_files, CALL_SID)
        assert '"source": "elevenlabs"' in second.logs()
    finally:
        first.stop()
        second.stop()
