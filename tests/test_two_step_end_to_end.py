"""The two-step flow end to end on two real service instances: the sample reaches one, ElevenLabs'
initiation webhook the other, the post-call webhook names the call only by its call sid, and the
clone is deleted. Once through the Pub/Sub emulator, once with each instance's in-process queue."""

from __future__ import annotations

import uuid

import pytest
import requests

from sandbox.processes import FunctionServer
from sandbox.pubsub_emulator import create_topology
from tests.conftest import (
    AGENT_ID,
    BOTH_MODES,
    log_events,
    post_call_body,
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


def run_two_step(first: FunctionServer, second: FunctionServer, fake, audio_files, call_sid: str,
                 cleanup: FunctionServer) -> str:
    """Sample on `first`, initiation and post-call on `second`; returns the clone's voice id. `cleanup`
    is the server whose output has the cleanup function's lines."""
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
    # The second instance found it by search in ElevenLabs (it never saw the sample).
    assert wait_until(lambda: log_events(second.logs(), "conversation_init", found=True, source="elevenlabs"), timeout=10)
    # The clone's voice.created was handled: ElevenLabs knows no conversation by the call sid, which
    # means not over, so the clone stays.
    assert wait_until(lambda: log_events(cleanup.logs(), "voice_kept_call_live", voice_id=voice_id), timeout=30), \
        cleanup.logs()[-3000:]
    assert voice_id in fake.voices
    before_the_call_ended = len(fake.requests)
    post_call = post_call_body(f"conv_{uuid.uuid4().hex[:10]}", call_sid=call_sid)
    assert signed_post(second.url + "/post-call", post_call).status_code == 200
    # Deleted once the call ended, and not before. (Which event deletes it depends on the order the two
    # arrive in, which Pub/Sub does not keep: call.ended, or voice.created redelivered after it.)
    assert wait_until(lambda: voice_id not in fake.voices, timeout=30)
    assert [r.path for r in fake.requests[:before_the_call_ended] if r.method == "DELETE"] == []
    return voice_id


# Each instance as the two-step flow deploys it (on top of `real_server`'s settings for the local ElevenLabs).
INSTANCE = {"ELEVENLABS_AGENT_ID": AGENT_ID, "AGENT_UPDATE_MODE": "override", "INIT_WEBHOOK_SECRET": INIT_SECRET}


@pytest.mark.emulator
def test_two_step_flow_across_two_instances_through_pubsub(pubsub_emulator, real_server, fake, audio_files):
    allow(fake)  # before start-up: each instance reads the agent's override settings ahead of the first call
    common = {"PUBSUB_EMULATOR_HOST": pubsub_emulator.host, "GOOGLE_CLOUD_PROJECT": pubsub_emulator.project}
    cleanup = real_server(target="cleanup_voices", **common)
    topology = create_topology(pubsub_emulator.project, f"two-step-{uuid.uuid4().hex[:8]}", cleanup.url + "/",
                               min_backoff_seconds=1, max_backoff_seconds=2, ack_deadline_seconds=10)
    first, second = (real_server(**INSTANCE, **common, VOICE_EVENTS_TOPIC=topology.topic) for _ in range(2))
    voice_id = run_two_step(first, second, fake, audio_files, "CAtwostepPubSub01", cleanup)
    assert fake.requests_to("DELETE", f"/v1/voices/{voice_id}")


def test_two_step_flow_across_two_instances_with_in_process_queues(real_server, fake, audio_files):
    allow(fake)
    first, second = real_server(**INSTANCE), real_server(**INSTANCE)
    # Each worker read the agent's override settings at start-up, before any call reached it.
    assert wait_until(lambda: len(fake.requests_to("GET", f"/v1/convai/agents/{AGENT_ID}")) >= 2, timeout=10)
    run_two_step(first, second, fake, audio_files, CALL_SID, cleanup=first)  # first's queue runs its cleanup
