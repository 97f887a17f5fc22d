"""A caller on a plain Twilio number hears the agent in their own voice: the whole call through real HTTP
(functions-framework, the local Twilio placing the call, the local ElevenLabs)."""

from __future__ import annotations

from urllib.parse import urlsplit

from sandbox.elevenlabs_server import FakeElevenLabs
from sandbox.twilio_server import Caller, FakeTwilio
from tests.conftest import AGENT_ID, wait_until
from tests.telephony_stack import (  # noqa: F401 - fixtures
    PUBLIC_BASE_URL,
    SAMPLE,
    dial,
    log_lines,
    start_service,
    telephony_agent,
    twilio,
    twilio_server,
    wait_for_log,
)

HOLD_SECONDS = 5  # telephony_stack.service_env


def test_the_whole_call_connects_the_caller_in_their_own_voice_and_leaves_nothing_behind(
        fake: FakeElevenLabs, twilio: FakeTwilio, start_service):
    telephony_agent(fake)
    service = start_service()
    call = dial(twilio, service, Caller(caller_name="Ivan", digits="1", speech=[SAMPLE]))

    kinds = call.kinds()
    assert kinds[:2] == ["say", "pressed"], kinds
    assert kinds.count("connected") == 1 and "updated" in kinds, kinds
    assert kinds.index("beep") < kinds.index("spoke") < kinds.index("updated") < kinds.index("connected")
    [clone] = fake.cloned_voices()
    connected = call.first("connected")
    assert connected.detail["voice_id"] == clone["voice_id"]
    assert connected.detail["first_message"] == "Hallo Ivan, fijn dat je belt!"
    [registered] = fake.requests_to("POST", "/v1/convai/twilio/register-call")
    data = registered.json["conversation_initiation_client_data"]
    assert data["conversation_config_override"] == {"agent": {"first_message": "Hallo Ivan, fijn dat je belt!"},
                                                    "tts": {"voice_id": clone["voice_id"]}}
    assert data["dynamic_variables"]["caller_name"] == "Ivan"
    assert data["dynamic_variables"]["precall_conversation_id"] == call.sid
    assert registered.json["direction"] == "inbound" and registered.json["agent_id"] == AGENT_ID
    assert not fake.requests_to("PATCH", f"/v1/convai/agents/{AGENT_ID}")
    # The status callback alone (no ElevenLabs post-call webhook) deletes the clone; the recording is gone too.
    assert wait_until(lambda: not fake.cloned_voices(), timeout=10)
    assert all(r.deleted for r in twilio.recordings.values()) and twilio.recordings
    assert wait_for_log(service, "twilio_recording_deleted")[0]["deleted"] is True
    [connected_line] = wait_for_log(service, "twilio_call_connected")
    assert connected_line["clone_used"] is True and connected_line["via"] == "recording"
    assert "12345678" not in service.logs()  # neither phone number in any log line


def test_a_caller_who_refuses_consent_is_not_recorded_and_hears_the_agents_own_voice(
        fake: FakeElevenLabs, twilio: FakeTwilio, start_service):
    telephony_agent(fake)
    service = start_service()
    for digits in ("2", None):
        call = dial(twilio, service, Caller(digits=digits, speech=[SAMPLE]))
        kinds = call.kinds()
        assert "beep" not in kinds and kinds.count("connected") == 1, kinds
        assert call.first("connected").detail["voice_id"] == fake.agents[AGENT_ID]["conversation_config"]["tts"]["voice_id"]
    assert not twilio.recordings and not fake.requests_to("POST", "/v1/voices/add")
    assert wait_until(lambda: [line["given"] for line in log_lines(service, "twilio_consent")] == [False, False])


def test_two_instances_recording_callback_on_one_hold_redirect_on_the_other_make_one_clone_and_one_connection(
        fake: FakeElevenLabs, twilio: FakeTwilio, start_service):
    telephony_agent(fake)
    recorder, holder = start_service(), start_service()

    def route(url: str) -> str:
        instance = recorder if urlsplit(url).path == "/twilio/recording" else holder
        return instance.url + url[len(PUBLIC_BASE_URL):]

    in_time = dial(twilio, route)
    [clone] = fake.cloned_voices()
    assert in_time.kinds().count("connected") == 1 and "updated" in in_time.kinds()
    assert in_time.first("connected").detail["voice_id"] == clone["voice_id"]
    assert wait_for_log(recorder, "twilio_call_connected") and not log_lines(holder, "twilio_call_connected")

    fake.inject("POST", "/v1/voices/add", delay=HOLD_SECONDS + 1)  # the clone comes after the hold ran out
    too_late = dial(twilio, route)
    assert too_late.kinds().count("connected") == 1 and "updated" not in too_late.kinds(), too_late.kinds()
    clones = wait_until(lambda: [v for v in fake.cloned_voices() if too_late.sid in v["name"]], timeout=HOLD_SECONDS + 5)
    assert len(clones) == 1
    assert len(wait_for_log(holder, "twilio_call_connected")) == 1


def test_with_consent_off_the_caller_is_recorded_at_once_and_prompts_and_hold_audio_are_the_configured_ones(
        fake: FakeElevenLabs, twilio: FakeTwilio, start_service):
    telephony_agent(fake)
    service = start_service(TWILIO_CONSENT="off", TWILIO_LANGUAGE="en-GB", TWILIO_PROMPT_RECORD="Speak after the beep.",
                            TWILIO_PROMPT_HOLD="One moment.", TWILIO_HOLD_AUDIO_URL="https://cdn.example/hold.mp3")
    call = dial(twilio, service, Caller(digits=None, speech=[SAMPLE]))
    said = [(e.detail["text"], e.detail["language"]) for e in call.events if e.kind == "say"]
    assert said == [("Speak after the beep.", "en-GB"), ("One moment.", "en-GB")]
    assert call.first("play").detail["url"] == "https://cdn.example/hold.mp3"
    [clone] = fake.cloned_voices()
    assert call.first("connected").detail["voice_id"] == clone["voice_id"]
    assert wait_for_log(service, "twilio_consent")[0]["mode"] == "off"
