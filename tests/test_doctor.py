"""`python -m precall doctor` against the local ElevenLabs server in the account states that break calls,
the real functions-framework server (`--service-url`), the Pub/Sub emulator, and the sweep's webhook alert."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from cleanup.handler import CleanupHandler
from doctor.checkup import Doctor, Options, topic_finding
from doctor.checks import exit_code, render_json, render_text, slot_margin
from sandbox.elevenlabs_server import ABSENT, FakeElevenLabs
from sandbox.processes import ROOT, FunctionServer
from sandbox.twilio_server import FakeTwilio
from tests.conftest import AGENT_ID, API_KEY, BOTH_MODES, SECRET, seed_clone
from voiceclone.config import load_settings
from voiceclone.deadline import Deadline
from voiceclone.elevenlabs_client import ElevenLabsClient
from voiceclone.logs import get_logger
from voiceclone.readiness import FAILED, OK, UNKNOWN, WARNING, Finding

INIT_SECRET = "init-secret-for-doctor-1234"
TWILIO_TOKEN = "twilio-token-for-doctor-5678"
SECRETS = (API_KEY, SECRET, INIT_SECRET, TWILIO_TOKEN)


@dataclass
class Checklist:
    findings: list[Finding]

    def __getitem__(self, name: str) -> Finding:
        return next(f for f in self.findings if f.name == name)

    def names(self) -> list[str]:
        return [f.name for f in self.findings]

    @property
    def exit_code(self) -> int:
        return exit_code(self.findings)


@pytest.fixture
def env(service_env: dict[str, str]) -> dict[str, str]:
    """The service's configuration for the two-step flow."""
    return {**service_env, "ELEVENLABS_AGENT_ID": AGENT_ID, "AGENT_UPDATE_MODE": "override", "INIT_WEBHOOK_SECRET": INIT_SECRET}


@pytest.fixture
def ready(fake: FakeElevenLabs) -> FakeElevenLabs:
    """An account and agent set up as docs/connecting-elevenlabs.md says."""
    fake.add_agent(AGENT_ID, allow_first_message=True, allow_voice=True, init_webhook=True,
                   first_message="Hallo {{caller_name}}, fijn dat je belt!", prompt="Help {{ caller_name }}. {{system__time}}")
    return fake


def diagnose(env: dict[str, str], agent: str | None = None, **options) -> Checklist:
    settings = load_settings(env)
    findings = Doctor(settings, Options(agent or settings.default_agent_id, **options)).run()
    for finding in findings:  # every line that is not ok says what to do
        assert finding.status == OK or finding.fix, finding
    printed = render_text("doctor", findings) + render_json({}, findings)
    assert not any(secret in printed for secret in SECRETS)
    return Checklist(findings)


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "precall", "doctor", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={"PATH": os.environ["PATH"], **env})
    assert not any(secret in result.stdout + result.stderr for secret in SECRETS)
    return result


# -- a ready account ----------------------------------------------------------------------------

@pytest.mark.parametrize("fake_mode", BOTH_MODES)
def test_a_ready_account_and_agent_pass_every_check(ready, env):
    report = diagnose(env)
    assert report.exit_code == 0
    not_ok = {f.name: f.status for f in report.findings if f.status != OK}
    assert not_ok == {"key: write permissions": UNKNOWN}  # proven only by --probe-labels
    assert report.names()[:2] == ["key", "key: write permissions"]
    assert report["dynamic variables"].detail == "all answered: caller_name"
    assert report["post-call webhook"].detail.endswith("http://127.0.0.1:8080/post-call")


@pytest.mark.parametrize("mode", ["patch", "override"])
def test_make_runs_sandbox_account_passes_doctor(mode):
    sandbox = FakeElevenLabs(api_key="sandbox", auto_create_agents=True, record_file_bytes=False).start()
    try:
        env = {"ELEVENLABS_API_KEY": "sandbox", "ELEVENLABS_WEBHOOK_SECRET": "local", "ELEVENLABS_BASE_URL": sandbox.url,
               "ELEVENLABS_AGENT_ID": "agent_local_sandbox", "AGENT_UPDATE_MODE": mode, "INIT_WEBHOOK_SECRET": "x"}
        report = diagnose(env, probe_labels=True)
    finally:
        sandbox.stop()
    assert report.exit_code == 0 and report["label probe: cleanup"].status == OK
    assert (report["agent: update mode"].status == WARNING) if mode == "patch" else ("agent: update mode" not in report.names())


# -- the key --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fake_mode", BOTH_MODES)
def test_a_rejected_key_is_a_failed_bad_key_and_nothing_else_is_asked(ready, env):
    report = diagnose({**env, "ELEVENLABS_API_KEY": "sk_wrong_key"})
    assert report.exit_code == 1
    assert report["key"].status == FAILED and "invalid_api_key" in report["key"].detail
    assert "ELEVENLABS_API_KEY" in report["key"].fix
    assert report.names() == ["key", "Pub/Sub topic"]
    assert ready.requests_to("GET", r"/v1/convai/.*") == []


@pytest.mark.parametrize("fake_mode", BOTH_MODES)
def test_a_key_without_a_permission_names_it_and_is_not_called_bad(ready, env):
    ready.missing_permissions = {"workspace_read", "user_read"}
    report = diagnose(env)
    assert report.exit_code == 1
    key = report["key"]
    assert key.status == FAILED and "invalid" not in key.detail
    assert "lacks user_read, workspace_read" in key.detail
    assert ("voices_read, voices_write, create_instant_voice_clone, convai_read, convai_write, user_read, workspace_read"
            in key.detail)
    assert "allow user_read, workspace_read" in key.fix
    assert report["cloning"].status == UNKNOWN and "the key lacks user_read" in report["cloning"].detail
    assert report["post-call webhook"].status == UNKNOWN
    assert report["agent: overrides"].status == OK  # what the key can read is still checked


def test_an_unreachable_elevenlabs_fails_with_the_base_url_to_check(ready, env):
    report = diagnose({**env, "ELEVENLABS_BASE_URL": "http://127.0.0.1:9"}, timeout=5)
    assert report.exit_code == 1 and report["key"].status == FAILED
    assert "ELEVENLABS_BASE_URL" in report["key"].fix


# -- cloning ------------------------------------------------------------------------------------

def test_a_plan_without_instant_cloning_fails(ready, env):
    ready.can_clone = False
    report = diagnose(env)
    assert report["cloning: plan"].status == FAILED and "upgrade" in report["cloning: plan"].fix
    assert report.exit_code == 1


def test_full_voice_slots_fail_and_nearly_full_warn(ready, env):
    ready.voice_limit = ready.custom_voice_count()
    full = diagnose(env)["cloning: voice slots"]
    assert full.status == FAILED and "the next call cannot clone" in full.detail and "cleanup sweep --apply" in full.fix
    ready.voice_limit = ready.custom_voice_count() + 1
    nearly = diagnose(env)
    assert nearly["cloning: voice slots"].status == WARNING and nearly.exit_code == 0
    assert diagnose(env, slot_margin=1)["cloning: voice slots"].status == OK


def test_the_slot_margin_is_a_tenth_of_the_limit_and_at_least_two():
    assert (slot_margin(30, None), slot_margin(5, None), slot_margin(101, None), slot_margin(30, 0)) == (3, 2, 11, 0)


def test_a_cap_on_voice_additions_is_read_where_present(ready, env):
    ready.max_voice_add_edits, ready.voice_add_edit_counter = 95, 95
    assert diagnose(env)["cloning: voice additions"].status == FAILED
    ready.max_voice_add_edits, ready.voice_add_edit_counter = 95, 10
    assert diagnose(env)["cloning: voice additions"].status == OK
    ready.subscription_overrides = {"max_voice_add_edits": ABSENT, "can_use_instant_voice_cloning": ABSENT}
    report = diagnose(env)
    assert report["cloning: voice additions"].status == UNKNOWN and report["cloning: plan"].status == UNKNOWN


@pytest.mark.parametrize("fake_mode", BOTH_MODES)
def test_clones_older_than_the_ttl_are_counted_as_overdue(ready, env):
    seed_clone(ready, "conv_stale", datetime.now(timezone.utc) - timedelta(hours=5))
    seed_clone(ready, "conv_fresh", datetime.now(timezone.utc))
    ready.add_voice("My narrator", created_at_unix=0)  # not ours: never counted
    line = diagnose(env)["clones of this service"]
    assert line.status == WARNING and line.detail.startswith("2 clones of this service, 1 older than the TTL")


# -- the agent ----------------------------------------------------------------------------------

def test_an_agent_that_does_not_exist_fails(ready, env):
    report = diagnose(env, agent="agent_missing")
    assert report["agent"].status == FAILED and "ELEVENLABS_AGENT_ID" in report["agent"].fix and report.exit_code == 1


def test_overrides_not_allowed_fail_naming_the_security_tab_switch(fake, env):
    fake.add_agent(AGENT_ID, allow_first_message=True, allow_voice=False, init_webhook=True)
    line = diagnose(env)["agent: overrides"]
    assert line.status == FAILED and "voice" in line.detail and "first message" not in line.detail
    assert "Security tab" in line.fix and "Voice" in line.fix


def test_the_initiation_webhook_switch_off_fails(fake, env):
    fake.add_agent(AGENT_ID, allow_first_message=True, allow_voice=True, init_webhook=False)
    line = diagnose(env)["agent: initiation webhook"]
    assert line.status == FAILED and "Fetch conversation initiation data" in line.fix


def test_an_initiation_webhook_without_the_header_secret_fails(ready, env):
    ready.convai_settings["conversation_initiation_client_data_webhook"]["request_headers"] = {}
    line = diagnose(env)["agent: initiation webhook URL"]
    assert line.status == FAILED and "X-Precall-Secret" in line.detail


def test_patch_mode_warns_about_the_shared_agent_race(fake, env):
    fake.add_agent(AGENT_ID)  # overrides off: patch mode does not need them
    report = diagnose({**env, "AGENT_UPDATE_MODE": "patch"})
    assert report["agent: update mode"].status == WARNING and "AGENT_UPDATE_MODE=override" in report["agent: update mode"].fix
    assert "agent: overrides" not in report.names() and report.exit_code == 0


def test_variables_the_answer_would_not_cover_fail_and_defaults_cover_them(fake, env):
    fake.add_agent(AGENT_ID, allow_first_message=True, allow_voice=True, init_webhook=True,
                   first_message="Hallo {{caller_name}}, tier {{customer_tier}}",
                   prompt="Account {{ account_id }} at {{system__time_utc}}", dynamic_variable_placeholders={"region": "eu"})
    line = diagnose(env)["dynamic variables"]
    assert line.status == FAILED and "account_id, customer_tier, region" in line.detail and "system__" not in line.detail
    assert "INIT_DYNAMIC_VARIABLES" in line.fix
    covered = {**env, "INIT_DYNAMIC_VARIABLES": json.dumps({"account_id": "", "customer_tier": "", "region": "eu"})}
    assert diagnose(covered)["dynamic variables"].status == OK


# -- the post-call webhook ----------------------------------------------------------------------

def test_no_post_call_webhook_selected_fails(ready, env):
    ready.convai_settings["webhooks"]["post_call_webhook_id"] = None
    line = diagnose(env)["post-call webhook"]
    assert line.status == FAILED and "VOICE_CLONE_TTL_SECONDS" in line.detail and "/post-call" in line.fix


def test_a_post_call_webhook_pointing_elsewhere_fails(ready, env):
    elsewhere = ready.add_workspace_webhook("https://hooks.example.com/elevenlabs?token=s3cret")
    ready.convai_settings["webhooks"]["post_call_webhook_id"] = elsewhere
    line = diagnose(env)["post-call webhook"]
    assert line.status == FAILED and "hooks.example.com/elevenlabs" in line.detail and "s3cret" not in line.detail


def test_an_auto_disabled_post_call_webhook_fails_showing_its_last_failure(ready, env):
    failed_at = int(datetime(2025, 12, 1, 8, 30, tzinfo=timezone.utc).timestamp())
    broken = ready.add_workspace_webhook("https://precall.example.run.app/post-call", is_auto_disabled=True,
                                         failure_code=503, failure_timestamp=failed_at)
    ready.convai_settings["webhooks"]["post_call_webhook_id"] = broken
    report = diagnose(env)
    line = report["post-call webhook: enabled"]
    assert line.status == FAILED and "HTTP 503 at 2025-12-01 08:30:00Z" in line.detail and "re-enable" in line.fix
    assert report.exit_code == 1


def test_a_post_call_webhook_subscribed_to_audio_warns_and_one_without_transcripts_fails(ready, env):
    ready.convai_settings["webhooks"]["events"] = ["transcript", "audio", "call_initiation_failure"]
    assert diagnose(env)["post-call webhook: events"].status == WARNING
    ready.convai_settings["webhooks"]["events"] = ["audio"]
    line = diagnose(env)["post-call webhook: events"]
    assert line.status == FAILED and "transcript, call_initiation_failure" in line.detail


def test_the_agents_own_webhook_override_is_the_one_checked(ready, env):
    ready.convai_settings["webhooks"]["post_call_webhook_id"] = None
    own = ready.add_workspace_webhook("https://precall.example.run.app/post-call")
    ready.agents[AGENT_ID]["platform_settings"]["workspace_overrides"] = {
        "webhooks": {"post_call_webhook_id": own, "events": ["transcript", "call_initiation_failure"]}}
    assert diagnose(env)["post-call webhook"].status == OK


# -- the label probe ----------------------------------------------------------------------------

@pytest.mark.parametrize("fake_mode", BOTH_MODES)
def test_the_label_probe_reports_what_survived_and_deletes_the_probe(ready, env, fake_mode):
    before = set(ready.voices)
    report = diagnose(env, probe_labels=True)
    probe = report["label probe"]
    if fake_mode == "strict":  # custom labels dropped: ownership by name and description
        assert probe.detail.startswith("kept: none; dropped: conversation_id, agent_id, type, source, created_at")
        assert probe.detail.endswith("ownership falls back to name and description")
    else:
        assert probe.detail.endswith("dropped: none; ownership by labels")
    assert probe.status == OK and report["label probe: cleanup"].status == OK
    assert report["key: write permissions"].status == OK and report.exit_code == 0
    [added] = ready.requests_to("POST", "/v1/voices/add")
    assert added.form["name"].startswith("Doctor_Clone_") and added.files["files"][0]["size"] < 40_000
    assert set(ready.voices) == before


def test_a_probe_held_for_verification_is_reported_and_deleted(ready, env):
    ready.requires_verification = True
    before = set(ready.voices)
    report = diagnose(env, probe_labels=True)
    assert report["label probe: verification"].status == WARNING
    assert report["label probe: cleanup"].status == OK and set(ready.voices) == before


def test_a_failure_in_the_middle_of_the_probe_still_deletes_the_probe_voice(ready, env):
    ready.inject("GET", r"/v1/voices/[^/]+", 500, times=10)
    before = set(ready.voices)
    report = diagnose(env, probe_labels=True)
    assert report["label probe"].status == UNKNOWN and "could not read the probe voice back" in report["label probe"].detail
    assert report["label probe: cleanup"].status == OK and set(ready.voices) == before
    assert len(ready.requests_to("DELETE", r"/v1/voices/.+")) == 1


def test_a_probe_that_cannot_be_deleted_says_which_voice_to_delete_by_hand(ready, env):
    ready.inject("DELETE", r"/v1/voices/[^/]+", 403, body=ready.error("forbidden", "Not allowed"))
    report = diagnose(env, probe_labels=True)
    line = report["label probe: cleanup"]
    [leftover] = [v["voice_id"] for v in ready.cloned_voices() if v["name"].startswith("Doctor_Clone_")]
    assert line.status == FAILED and leftover in line.detail and f"DELETE /v1/voices/{leftover}" in line.fix
    assert report.exit_code == 1


# -- Pub/Sub and the deployment -----------------------------------------------------------------

@pytest.mark.emulator
def test_the_topic_must_exist_and_publishing_rights_are_could_not_tell_on_the_emulator(pubsub_emulator):
    from google.cloud import pubsub_v1

    topic = f"projects/{pubsub_emulator.project}/topics/doctor-events-{int(time.time() * 1000)}"
    pubsub_v1.PublisherClient().create_topic(name=topic)
    line = topic_finding(topic)
    assert line.status == UNKNOWN and line.detail.startswith(f"{topic} exists; could not tell whether")
    missing = topic_finding(topic + "-missing")
    assert missing.status == FAILED and "does not exist" in missing.detail
    assert topic_finding(None).status == OK


def test_service_url_proves_the_deployment_end_to_end_and_leaves_nothing_behind(ready, env):
    server = FunctionServer("precall_webhook", {**env, "LOG_LEVEL": "WARNING"}).start()
    try:
        ready.use_service_url(server.url)
        voices_before = set(ready.voices)
        right = diagnose(env, service_url=server.url)
        wrong = diagnose({**env, "INIT_WEBHOOK_SECRET": "not-the-deployed-secret"}, service_url=server.url)
        laptop = diagnose({**env, "AGENT_UPDATE_MODE": "patch"}, service_url=server.url)
    finally:
        server.stop()
    # This machine says patch, the deployment runs override: the agent is judged as deployed (no race warning).
    assert "agent: update mode" not in laptop.names() and laptop.exit_code == 0
    assert "this machine's AGENT_UPDATE_MODE=patch differs" in laptop["deployment: /healthz"].detail
    assert right.exit_code == 0, [f for f in right.findings if f.status != OK]
    assert right["deployment: /healthz"].status == OK
    answer = right["deployment: /conversation-init"]
    assert answer.status == OK and "caller_name, precall_conversation_id, precall_voice_id" in answer.detail
    assert right["deployment: /conversation-init auth"].status == OK
    assert right["post-call webhook"].status == OK  # exactly SERVICE_URL/post-call
    refused = wrong["deployment: /conversation-init"]
    assert refused.status == FAILED and "401" in refused.detail and "INIT_WEBHOOK_SECRET" in refused.fix
    assert wrong.exit_code == 1
    assert ready.requests_to("POST", "/v1/voices/add") == [] and ready.requests_to("PATCH", r"/v1/convai/agents/.*") == []
    assert set(ready.voices) == voices_before


def test_the_deployments_events_win_over_this_machines_topic_setting():
    unset_here = topic_finding(None, deployed_events="pubsub")
    assert unset_here.status == UNKNOWN and "VOICE_EVENTS_TOPIC is unset" in unset_here.detail
    assert "export VOICE_EVENTS_TOPIC" in unset_here.fix
    unused_here = topic_finding("projects/p/topics/t", deployed_events="local")
    assert unused_here.status == WARNING and "not used" in unused_here.detail
    assert topic_finding(None, deployed_events="local").status == OK


def test_the_old_agent_flag_still_works(ready, env):
    result = run_cli({**env, "ELEVENLABS_AGENT_ID": ""}, "--json", "--agent", AGENT_ID)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["agent_id"] == AGENT_ID


def test_a_service_url_that_does_not_answer_fails(ready, env):
    report = diagnose(env, service_url="http://127.0.0.1:9")
    assert report["deployment: /healthz"].status == FAILED and "--service-url" in report["deployment: /healthz"].fix


# -- the command line ---------------------------------------------------------------------------

def test_cli_json_prints_only_the_document_and_exits_by_the_worst_line(ready, env):
    ok = run_cli(env, "--json", "--verbose")
    assert ok.returncode == 0, ok.stderr
    document = json.loads(ok.stdout)
    assert document["ok"] is True and document["agent_id"] == AGENT_ID
    assert {c["name"]: c["status"] for c in document["checks"]}["post-call webhook"] == OK
    assert "elevenlabs_call" in ok.stderr  # logs go to stderr
    ready.voice_limit = ready.custom_voice_count()
    full = run_cli(env)
    assert full.returncode == 1
    line = next(line for line in full.stdout.splitlines() if "cloning: voice slots" in line)
    assert line.split()[0] == FAILED
    assert "→ delete voices you no longer need" in full.stdout and "NOT READY: 1 failed" in full.stdout


@pytest.mark.parametrize("change, args, named", [
    ({"ELEVENLABS_API_KEY": ""}, [], "ELEVENLABS_API_KEY"),
    ({"ELEVENLABS_AGENT_ID": ""}, [], "ELEVENLABS_AGENT_ID"),
    ({"AGENT_UPDATE_MODE": "sometimes"}, [], "AGENT_UPDATE_MODE"),
    ({}, ["--service-url", "ftp://precall"], "--service-url"),
    ({}, ["--twilio-number", "+31201234567"], "--twilio-number: needs TWILIO_ACCOUNT_SID"),
])
def test_a_missing_or_malformed_setting_is_a_configuration_error(fake, env, change, args, named):
    result = run_cli({**env, **change}, "--json", *args)
    assert result.returncode == 2 and f"configuration error: {named}" in result.stderr
    assert json.loads(result.stdout)["exit_code"] == 2
    assert fake.requests == []


def test_a_usage_error_exits_2():
    assert run_cli({}, "--slot-margin", "many").returncode == 2


# -- the telephony front (TWILIO_ACCOUNT_SID) ---------------------------------------------------

PUBLIC = "https://precall-webhook-abc123-ez.a.run.app"
NUMBER = "+31201234567"


@pytest.fixture
def twilio() -> FakeTwilio:
    server = FakeTwilio(auth_token=TWILIO_TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def phone_env(env, twilio) -> dict[str, str]:
    return {**env, "TWILIO_ACCOUNT_SID": twilio.account_sid, "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "TWILIO_API_BASE_URL": twilio.url, "PUBLIC_BASE_URL": PUBLIC}


@pytest.fixture
def phone_ready(ready, twilio) -> FakeElevenLabs:
    """A Twilio number and an agent set up as docs/telephony.md says."""
    ready.add_agent(AGENT_ID, allow_first_message=True, allow_voice=True, init_webhook=True, audio_format="ulaw_8000",
                    first_message="Hallo {{caller_name}}, fijn dat je belt!")
    twilio.add_number(NUMBER, PUBLIC + "/twilio/voice", PUBLIC + "/twilio/status")
    return ready


def twilio_lines(report: Checklist) -> dict[str, str]:
    return {f.name: f.status for f in report.findings if f.name.startswith("twilio")}


def test_without_a_twilio_account_doctor_asks_twilio_nothing(phone_ready, env, twilio):
    report = diagnose(env)
    assert twilio_lines(report) == {} and twilio.requests == []


def test_a_ready_twilio_number_and_agent_pass_the_telephony_checks(phone_ready, phone_env, twilio):
    report = diagnose(phone_env)
    assert report.exit_code == 0, [f for f in report.findings if f.status == FAILED]
    assert twilio_lines(report) == {"twilio: credentials": OK, "twilio: voice URL": OK, "twilio: status callback": OK,
                                    "twilio: agent audio format": OK}
    assert report["twilio: voice URL"].detail == f"{NUMBER}: {PUBLIC}/twilio/voice (POST)"
    assert [r.headers["authorization"].startswith("Basic ") for r in twilio.requests] == [True, True]


def test_an_agent_without_ulaw_8000_fails_with_the_format_to_set(phone_ready, phone_env):
    phone_ready.add_agent(AGENT_ID, allow_first_message=True, allow_voice=True, init_webhook=True, audio_format="pcm_16000",
                          first_message="Hallo {{caller_name}}, fijn dat je belt!")
    report = diagnose(phone_env)
    line = report["twilio: agent audio format"]
    assert report.exit_code == 1 and line.status == FAILED
    assert "user input (asr.user_input_audio_format) is pcm_16000" in line.detail
    assert "agent output (tts.agent_output_audio_format) is pcm_16000" in line.detail
    assert "μ-law 8000 Hz" in line.fix and "ulaw_8000" in line.fix


def test_a_number_whose_voice_url_points_elsewhere_fails_with_the_url_to_paste(phone_ready, phone_env, twilio):
    twilio.numbers.clear()
    twilio.add_number(NUMBER, "https://old-ivr.example.com/answer", PUBLIC + "/twilio/status")
    report = diagnose(phone_env)
    line = report["twilio: voice URL"]
    assert line.status == FAILED and line.detail == f"{NUMBER}: https://old-ivr.example.com/answer, not {PUBLIC}/twilio/voice"
    assert f"Webhook {PUBLIC}/twilio/voice, HTTP POST" in line.fix and f"--twilio-number {NUMBER}" in line.fix
    assert report["twilio: status callback"].status == OK


def test_a_status_callback_by_get_or_missing_fails(phone_ready, phone_env, twilio):
    sid = next(iter(twilio.numbers))
    twilio.numbers[sid]["status_callback_method"] = "GET"
    assert "not POST" in diagnose(phone_env)["twilio: status callback"].detail
    twilio.numbers[sid]["status_callback"] = ""
    assert diagnose(phone_env)["twilio: status callback"].detail == f"{NUMBER} has none"


def test_the_twilio_number_option_picks_one_of_several_numbers(phone_ready, phone_env, twilio):
    twilio.add_number("+31207654321", "https://elsewhere.example.com/voice", "")
    several = diagnose(phone_env)  # only the one pointing here is judged
    assert several.exit_code == 0 and several["twilio: voice URL"].detail.startswith(NUMBER)
    other = diagnose(phone_env, twilio_number="+31207654321")
    assert other["twilio: voice URL"].status == FAILED and other["twilio: voice URL"].detail.startswith("+31207654321")
    unknown = diagnose(phone_env, twilio_number="+31200000000")
    assert unknown["twilio: number"].status == FAILED and "no number +31200000000" in unknown["twilio: number"].detail


def test_the_service_url_is_the_reference_when_public_base_url_is_unset(phone_ready, phone_env):
    here = {k: v for k, v in phone_env.items() if k != "PUBLIC_BASE_URL"}
    assert twilio_lines(diagnose(here, service_url=PUBLIC)).get("twilio: voice URL") == OK
    unknown = diagnose(here)
    assert unknown["twilio: number"].status == UNKNOWN and "PUBLIC_BASE_URL" in unknown["twilio: number"].fix


def test_rejected_twilio_credentials_fail_and_no_number_is_read(phone_ready, phone_env, twilio):
    report = diagnose({**phone_env, "TWILIO_AUTH_TOKEN": "not-the-token"})
    line = report["twilio: credentials"]
    assert line.status == FAILED and "20003" in line.detail and "TWILIO_AUTH_TOKEN" in line.fix
    assert "twilio: voice URL" not in report.names()
    assert twilio.requests_to("GET", r".*/IncomingPhoneNumbers\.json") == []


def test_overrides_are_checked_for_twilio_callers_in_patch_mode_too(phone_ready, phone_env):
    phone_ready.add_agent(AGENT_ID, allow_first_message=True, allow_voice=False, init_webhook=True, audio_format="ulaw_8000")
    line = diagnose({**phone_env, "AGENT_UPDATE_MODE": "patch"})["agent: overrides"]
    assert line.status == FAILED and "Twilio callers keep the agent's own" in line.detail and "Voice" in line.fix


def test_python_m_doctor_checks_the_chosen_number_and_never_logs_it(phone_ready, phone_env):
    result = subprocess.run([sys.executable, "-m", "doctor", "--json", "--verbose", "--twilio-number", "+31 20 123 4567"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, env={"PATH": os.environ["PATH"], **phone_env})
    assert result.returncode == 0, result.stdout + result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["twilio: voice URL"]["status"] == OK and NUMBER in checks["twilio: voice URL"]["detail"]
    assert "twilio_request" in result.stderr and "20123" not in result.stderr
    assert TWILIO_TOKEN not in result.stdout + result.stderr
    bad = run_cli(phone_env, "--twilio-number", "0201234567")
    assert bad.returncode == 2 and "--twilio-number" in bad.stderr


# -- the sweep's alert --------------------------------------------------------------------------

@pytest.fixture
def cleanup_records():
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = get_logger("cleanup")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def sweep(env: dict[str, str]) -> None:
    settings = load_settings(env, require_webhook_secret=False)
    client = ElevenLabsClient(settings.elevenlabs_base_url, settings.elevenlabs_api_key)
    CleanupHandler.for_settings(settings, client).sweep(Deadline(20), apply=True)


def test_the_sweep_logs_an_unhealthy_post_call_webhook_at_error(ready, env, cleanup_records):
    sweep(env)
    assert [r.fields["postcall_webhook"] for r in cleanup_records if r.fields["event_type"] == "sweep_complete"] == [OK]
    assert not [r for r in cleanup_records if r.levelno >= logging.WARNING]
    webhook_id = ready.convai_settings["webhooks"]["post_call_webhook_id"]
    ready.workspace_webhooks[webhook_id]["is_auto_disabled"] = True
    sweep(env)
    [alert] = [r for r in cleanup_records if r.fields["event_type"] == "postcall_webhook_unhealthy"]
    assert alert.levelno == logging.ERROR and "disabled it after repeated failures" in alert.fields["problems"][0]


def test_a_sweep_that_cannot_read_the_webhook_still_sweeps(ready, env, cleanup_records):
    stale = seed_clone(ready, "conv_old", datetime(2020, 1, 1, tzinfo=timezone.utc))
    ready.missing_permissions = {"workspace_read"}
    sweep(env)
    assert stale not in ready.voices
    [unknown] = [r for r in cleanup_records if r.fields["event_type"] == "postcall_webhook_unknown"]
    assert unknown.levelno == logging.WARNING and "workspace_read" in unknown.fields["reason"]


def test_a_sweep_that_cannot_read_the_webhooks_still_reports_that_none_is_selected(ready, env, cleanup_records):
    ready.missing_permissions = {"workspace_read"}
    ready.convai_settings["webhooks"]["post_call_webhook_id"] = None
    sweep(env)
    [alert] = [r for r in cleanup_records if r.fields["event_type"] == "postcall_webhook_unhealthy"]
    assert alert.levelno == logging.ERROR and "no post-call webhook is selected" in alert.fields["problems"][0]
    assert not [r for r in cleanup_records if r.fields["event_type"] == "postcall_webhook_unknown"]
