"""Whatever fails, the caller reaches the agent (in their own voice when possible), once, never in silence."""

from __future__ import annotations

from sandbox.elevenlabs_server import FakeElevenLabs
from sandbox.twilio_server import Caller, SimulatedCall
from tests.conftest import AGENT_ID, in_parallel, wait_until
from tests.telephony_stack import (  # noqa: F401 - fixtures
    SAMPLE,
    dial,
    log_lines,
    shared_service,
    start_service,
    telephony_agent,
    tone_wav,
    twilio,
    twilio_server,
    wait_for_log,
)

HOLD_SECONDS = 5  # telephony_stack.service_env


def agent_voice(fake: FakeElevenLabs) -> str:
    return fake.agents[AGENT_ID]["conversation_config"]["tts"]["voice_id"]


def connected_once(call: SimulatedCall) -> dict:
    kinds = call.kinds()
    assert kinds.count("connected") == 1, " ".join(f"{e.kind}:{e.detail}" for e in call.events)[-1500:]
    assert "application_error" not in kinds, kinds
    return call.first("connected").detail


def fallback_reasons(service) -> list[str]:
    return [line["reason"] for line in log_lines(service, "twilio_fallback")]


def left_to_the_hold(service) -> list[str]:
    return [line["reason"] for line in log_lines(service, "twilio_left_to_hold")]


def test_an_absent_recording_connects_through_the_next_verb_without_a_clone(fake, twilio, shared_service):
    telephony_agent(fake)
    call = dial(twilio, shared_service, Caller(speech=[b""]))
    assert connected_once(call)["voice_id"] == agent_voice(fake)
    assert "silence" in call.kinds() and "updated" not in call.kinds()
    assert not fake.requests_to("POST", "/v1/voices/add")
    assert wait_until(lambda: "absent" in fallback_reasons(shared_service))


def test_a_recording_that_answers_404_for_two_seconds_is_waited_for_and_cloned(fake, twilio, start_service):
    telephony_agent(fake)
    twilio.media_delay = 2.0
    service = start_service(TWILIO_HOLD_SECONDS="8")
    call = dial(twilio, service)
    [clone] = fake.cloned_voices()
    assert connected_once(call)["voice_id"] == clone["voice_id"]
    assert len(twilio.requests_to("GET", r".*/Recordings/RE[0-9a-f]{32}\.wav")) > 2  # 404s, then the file
    assert wait_for_log(service, "twilio_recording_fetched")[0]["not_found_retries"] > 0


def test_a_refused_sample_is_asked_for_once_more_then_the_call_connects_without_a_clone(fake, twilio, shared_service):
    telephony_agent(fake)
    call = dial(twilio, shared_service, Caller(speech=[tone_wav(1.0), tone_wav(1.0)]))
    kinds = call.kinds()
    assert kinds.count("beep") == 2 and kinds.count("updated") == 2, kinds
    said = [e.detail["text"] for e in call.events if e.kind == "say"]
    assert any("nog één keer" in text for text in said)  # the retry prompt
    assert connected_once(call)["voice_id"] == agent_voice(fake)
    assert not fake.requests_to("POST", "/v1/voices/add")
    assert wait_until(lambda: "sample_refused" in fallback_reasons(shared_service))
    assert wait_until(lambda: all(r.deleted for r in twilio.recordings.values()) and len(twilio.recordings) == 2)


def test_a_second_recording_that_is_good_is_cloned(fake, twilio, shared_service):
    telephony_agent(fake)
    call = dial(twilio, shared_service, Caller(speech=[tone_wav(1.0), SAMPLE]))
    [clone] = fake.cloned_voices()
    assert connected_once(call)["voice_id"] == clone["voice_id"]


def test_a_recording_the_quality_gate_refuses_is_asked_for_once_more_and_a_good_second_one_is_cloned(
        fake, twilio, shared_service):
    """Five seconds of a steady tone (long enough for validation, but no voice): the gate's refusal gets
    the retry prompt like a too-short sample, before ElevenLabs is asked."""
    telephony_agent(fake)
    call = dial(twilio, shared_service, Caller(speech=[tone_wav(5.0), SAMPLE]))
    said = [e.detail["text"] for e in call.events if e.kind == "say"]
    assert any("nog één keer" in text for text in said)  # the retry prompt
    [clone] = fake.cloned_voices()
    assert connected_once(call)["voice_id"] == clone["voice_id"]
    assert len(fake.requests_to("POST", "/v1/voices/add")) == 1  # the tone never reached ElevenLabs
    reprompts = wait_until(lambda: [line for line in log_lines(shared_service, "twilio_sample_reprompt")
                                    if line.get("call_sid") == call.sid])
    assert [line["error_code"] for line in reprompts] == ["SAMPLE_QUALITY_TOO_LOW"], reprompts


def test_a_clone_refused_by_elevenlabs_connects_the_agents_own_voice_at_once(fake, twilio, shared_service):
    telephony_agent(fake)
    fake.can_clone = False
    call = dial(twilio, shared_service)
    assert connected_once(call)["voice_id"] == agent_voice(fake)
    assert "updated" in call.kinds()  # not left waiting for the hold to run out
    assert wait_until(lambda: "clone_failed" in fallback_reasons(shared_service))


def assert_connected_by_the_hold(call: SimulatedCall, fake: FakeElevenLabs) -> None:
    detail = connected_once(call)
    assert "updated" not in call.kinds(), call.kinds()
    assert detail["voice_id"] == agent_voice(fake)
    waited = call.first("connected").at - call.first("spoke").at
    assert waited <= HOLD_SECONDS + 1, waited


def test_elevenlabs_stalling_past_the_hold_leaves_the_call_to_the_hold_which_connects_it_once(fake, twilio, shared_service):
    telephony_agent(fake)
    fake.inject("POST", "/v1/voices/add", status=503, delay=HOLD_SECONDS + 2)
    call = dial(twilio, shared_service)
    assert_connected_by_the_hold(call, fake)
    assert wait_until(lambda: "out_of_time" in left_to_the_hold(shared_service))
    assert "out_of_time" not in fallback_reasons(shared_service)  # not a fallback: the hold decides


def test_twilio_media_stalling_past_the_hold_leaves_the_call_to_the_hold(fake, twilio, shared_service):
    telephony_agent(fake)
    twilio.inject("GET", r".*/Recordings/RE[0-9a-f]{32}\.wav", status=503, delay=HOLD_SECONDS + 2)
    call = dial(twilio, shared_service)
    assert_connected_by_the_hold(call, fake)
    assert not fake.requests_to("POST", "/v1/voices/add")


def test_register_call_stalling_past_the_hold_still_connects_once(fake, twilio, shared_service):
    telephony_agent(fake)
    fake.inject("POST", "/v1/convai/twilio/register-call", status=503, delay=HOLD_SECONDS + 2)
    call = dial(twilio, shared_service)
    connected_once(call)
    waited = call.first("connected").at - call.first("spoke").at
    assert waited <= HOLD_SECONDS + 1, waited
    recording_step_done(shared_service, call)
    [connected] = wait_until(lambda: call_lines(shared_service, call, "twilio_call_connected"), timeout=10, interval=0.05)
    assert connected["via"] == "redirect"
    # no apology claimed, no fallback: register-call ran out of the step's time and left the call to the hold
    assert call_lines(shared_service, call, "twilio_fallback") == []
    assert [(line["reason"], line.get("step")) for line in call_lines(shared_service, call, "twilio_left_to_hold")] == [
        ("out_of_time", "register")]


def test_register_call_refused_gives_the_caller_an_apology_not_silence(fake, twilio, shared_service):
    telephony_agent(fake)
    fake.inject("POST", "/v1/convai/twilio/register-call", status=404,
                body=fake.error("agent_not_found", "Agent not found"), times=5)
    call = dial(twilio, shared_service, Caller(digits="2"))
    said = [e.detail["text"] for e in call.events if e.kind == "say"]
    assert said[-1].startswith("Sorry") and "connected" not in call.kinds()
    assert wait_until(lambda: [(line["reason"], line.get("via")) for line in call_lines(shared_service, call, "twilio_fallback")]
                      == [("consent_refused", None), ("register_failed", "consent_refused")])


def test_overrides_the_agent_does_not_allow_are_not_sent(fake, twilio, start_service):
    telephony_agent(fake, allow_first_message=False, allow_voice=False)
    service = start_service()
    call = dial(twilio, service)
    [registered] = fake.requests_to("POST", "/v1/convai/twilio/register-call")
    assert registered.json["conversation_initiation_client_data"]["conversation_config_override"] == {}
    assert registered.json["conversation_initiation_client_data"]["dynamic_variables"]["caller_name"] == "Ivan"
    assert connected_once(call)["first_message"] == "Hallo Ivan!"  # the agent's own {{caller_name}} greeting


def test_only_the_allowed_override_is_sent(fake, twilio, start_service):
    telephony_agent(fake, allow_first_message=True, allow_voice=False)
    service = start_service()
    dial(twilio, service)
    [registered] = fake.requests_to("POST", "/v1/convai/twilio/register-call")
    assert set(registered.json["conversation_initiation_client_data"]["conversation_config_override"]) == {"agent"}


def test_two_calls_at_once_on_one_agent_each_get_their_own_voice(fake, twilio, shared_service):
    telephony_agent(fake)
    calls: dict[str, SimulatedCall] = {}
    in_parallel(lambda name: calls.__setitem__(name, dial(twilio, shared_service, Caller(caller_name=name, speech=[SAMPLE]))),
                ["Ivan", "Anna"])
    for name, call in calls.items():
        detail = connected_once(call)
        assert detail["voice_name"].startswith(f"{name}_Clone_") and detail["first_message"].startswith(f"Hallo {name}")
    assert calls["Ivan"].first("connected").detail["voice_id"] != calls["Anna"].first("connected").detail["voice_id"]
    assert not fake.requests_to("PATCH", f"/v1/convai/agents/{AGENT_ID}")


def test_no_phone_number_reaches_a_log_line_or_an_elevenlabs_label(fake, twilio, shared_service):
    telephony_agent(fake)
    caller = Caller(from_number="+31687654321", to_number="+31201112233", caller_name="+31687654321", speech=[SAMPLE])
    call = dial(twilio, shared_service, caller)
    [voice] = [v for v in fake.voices.values() if v["category"] == "cloned"] or [None]
    assert voice is not None and connected_once(call)["voice_id"] == voice["voice_id"]
    text = f"{voice['name']} {voice['description']} {voice['labels']} {shared_service.logs()}"
    for number in ("87654321", "01112233"):
        assert number not in text


def test_an_agent_not_on_ulaw_8000_is_refused_by_register_call_and_the_caller_hears_an_apology(fake, twilio, shared_service):
    fake.add_agent(AGENT_ID, audio_format="pcm_16000", allow_first_message=True, allow_voice=True)
    call = dial(twilio, shared_service, Caller(digits="2"))
    said = [e.detail["text"] for e in call.events if e.kind == "say"]
    assert said[-1].startswith("Sorry") and "connected" not in call.kinds()
    assert wait_until(lambda: any(line.get("elevenlabs_code") == "invalid_audio_format"
                                  for line in log_lines(shared_service, "twilio_fallback")))


def test_without_the_calls_numbers_the_clone_is_made_and_the_holds_redirect_connects_it(fake, twilio, shared_service):
    """A recording callback carries no phone numbers; when Twilio will not say them (call fetch refused),
    register-call cannot be asked there, so the hold's redirect connects the call, finding the clone by CallSid."""
    telephony_agent(fake)
    twilio.inject("GET", r".*/Calls/CA[0-9a-f]{32}\.json", status=404, times=5)
    call = dial(twilio, shared_service)
    [clone] = fake.cloned_voices()
    assert "updated" not in call.kinds()
    assert connected_once(call)["voice_id"] == clone["voice_id"]
    assert wait_until(lambda: "call_details_unavailable" in left_to_the_hold(shared_service))


def test_a_caller_who_hangs_up_on_hold_before_the_clone_is_ready_leaves_no_clone(fake, twilio, shared_service):
    telephony_agent(fake)
    fake.inject("POST", "/v1/voices/add", delay=1.5)  # the clone is ready after the caller has gone
    call = dial(twilio, shared_service, Caller(speech=[SAMPLE], hangs_up_on_hold=0.5))
    assert "connected" not in call.kinds()
    assert wait_until(lambda: fake.requests_to("POST", "/v1/voices/add") and fake.voice_add_edit_counter == 1
                      and not fake.cloned_voices(), timeout=15)


def test_a_call_update_stalling_past_the_hold_is_never_applied_on_top_of_the_holds_connection(fake, twilio, shared_service):
    telephony_agent(fake)
    twilio.inject("POST", r".*/Calls/CA[0-9a-f]{32}\.json", status=503, delay=HOLD_SECONDS + 2)
    call = dial(twilio, shared_service)
    detail = connected_once(call)
    [clone] = fake.cloned_voices()
    assert detail["voice_id"] == clone["voice_id"]  # the hold's redirect found this call's clone
    waited = call.first("connected").at - call.first("spoke").at
    assert waited <= HOLD_SECONDS + 1, waited
    assert wait_until(lambda: [line["carried"] for line in log_lines(shared_service, "twilio_call_update_failed")
                               if line["call_sid"] == call.sid] == ["agent"])


def call_lines(service, call: SimulatedCall, event_type: str) -> list[dict]:
    return [line for line in log_lines(service, event_type) if line.get("call_sid") == call.sid]


def recording_step_done(service, call: SimulatedCall) -> list[dict]:
    """The recording step's last line (the recording deleted at Twilio, after the call update): its lines are all in."""
    return wait_until(lambda: call_lines(service, call, "twilio_recording_deleted"), timeout=10, interval=0.05)


def refuse_register_call(fake: FakeElevenLabs, times: int) -> None:
    fake.inject("POST", "/v1/convai/twilio/register-call", status=404,
                body=fake.error("agent_not_found", "Agent not found"), times=times)


def test_an_apology_whose_call_update_fails_is_not_logged_and_the_holds_connection_is(fake, twilio, shared_service):
    """register-call refuses the recording step (with the clone, then without), the apology's call update
    fails, and the hold's redirect connects the caller with their clone after all: no line may say the
    caller heard the apology or went on without their voice; the connected line matches what they heard."""
    telephony_agent(fake)
    refuse_register_call(fake, times=2)
    twilio.inject("POST", r".*/Calls/CA[0-9a-f]{32}\.json", status=500)
    call = dial(twilio, shared_service)
    [clone] = fake.cloned_voices()
    detail = connected_once(call)
    said = [e.detail["text"] for e in call.events if e.kind == "say"]
    assert detail["voice_id"] == clone["voice_id"] and not any(text.startswith("Sorry") for text in said), said
    assert "updated" not in call.kinds()
    recording_step_done(shared_service, call)
    [connected] = wait_until(lambda: call_lines(shared_service, call, "twilio_call_connected"), timeout=10, interval=0.05)
    assert call_lines(shared_service, call, "twilio_fallback") == []  # no apology claimed, no clone refusal either
    assert (connected["via"], connected["clone_used"], connected["voice_id"]) == ("redirect", True, detail["voice_id"])
    [failed] = call_lines(shared_service, call, "twilio_call_update_failed")
    assert (failed["carried"], failed["status"], failed["elevenlabs_code"]) == ("apology", 500, "agent_not_found")


def test_an_apology_the_call_update_delivers_is_logged_as_register_failed_once(fake, twilio, shared_service):
    telephony_agent(fake)
    refuse_register_call(fake, times=2)
    call = dial(twilio, shared_service)
    said = [e.detail["text"] for e in call.events if e.kind == "say"]
    assert said[-1].startswith("Sorry") and "connected" not in call.kinds() and "updated" in call.kinds()
    recording_step_done(shared_service, call)
    lines = call_lines(shared_service, call, "twilio_fallback")
    assert [(line["reason"], line["via"]) for line in lines] == [("clone_refused_at_connect", "recording"),
                                                                  ("register_failed", "recording")], lines
    assert lines[1]["elevenlabs_code"] == "agent_not_found"
    assert not call_lines(shared_service, call, "twilio_call_connected")


def test_a_retry_prompt_whose_call_update_fails_leaves_the_caller_to_the_hold_without_a_clone(fake, twilio, shared_service):
    telephony_agent(fake)
    twilio.inject("POST", r".*/Calls/CA[0-9a-f]{32}\.json", status=500)
    call = dial(twilio, shared_service, Caller(speech=[tone_wav(1.0), SAMPLE]))
    said = [e.detail["text"] for e in call.events if e.kind == "say"]
    assert not any("nog één keer" in text for text in said) and call.kinds().count("beep") == 1, said
    assert connected_once(call)["voice_id"] == agent_voice(fake)
    recording_step_done(shared_service, call)
    [connected] = wait_until(lambda: call_lines(shared_service, call, "twilio_call_connected"), timeout=10, interval=0.05)
    assert (connected["via"], connected["clone_used"]) == ("redirect", False)
    [failed] = call_lines(shared_service, call, "twilio_call_update_failed")
    assert failed["carried"] == "retry_prompt" and failed["error_code"]
    assert not call_lines(shared_service, call, "twilio_sample_reprompt")
