"""Settings and Secret Manager references, with the real client over REST to a local endpoint."""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import secretmanager

from sandbox.processes import send_json
from voiceclone.config import ConfigError, load_settings
from voiceclone.secret_manager import SecretResolver, version_name

SECRETS = {
    "projects/proj/secrets/el-key/versions/latest": "sk_from_secret_manager",
    "projects/proj/secrets/hook/versions/3": "whsec_a,whsec_b",
}


class _SecretManagerHandler(BaseHTTPRequestHandler):
    calls: list[str] = []

    def log_message(self, *args) -> None:
        return

    def do_GET(self) -> None:
        name = self.path.split("?")[0].removeprefix("/v1/").removesuffix(":access")
        type(self).calls.append(name)
        if name in SECRETS:
            status, body = 200, {"name": name, "payload": {"data": base64.b64encode(SECRETS[name].encode()).decode()}}
        else:
            status, body = 404, {"error": {"code": 404, "message": f"Secret [{name}] not found", "status": "NOT_FOUND"}}
        send_json(self, status, body)


@pytest.fixture
def secret_manager():
    _SecretManagerHandler.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SecretManagerHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"

    def factory():
        return secretmanager.SecretManagerServiceClient(
            transport="rest", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint})

    yield factory
    server.shutdown()


def test_sm_references_resolve_once_through_the_real_client(secret_manager):
    resolver = SecretResolver("proj", secret_manager)
    settings = load_settings({"ELEVENLABS_API_KEY": "sm://el-key",
                              "ELEVENLABS_WEBHOOK_SECRET": "sm://projects/proj/secrets/hook/versions/3",
                              "GOOGLE_CLOUD_PROJECT": "proj"}, resolver)
    assert settings.elevenlabs_api_key == "sk_from_secret_manager"
    assert settings.webhook_secrets == ("whsec_a", "whsec_b")
    assert resolver.resolve("sm://el-key") == "sk_from_secret_manager"
    assert sorted(_SecretManagerHandler.calls) == sorted(SECRETS)


def test_unreadable_secret_names_the_variable_and_hides_the_reference_details(secret_manager):
    with pytest.raises(ConfigError) as raised:
        load_settings({"ELEVENLABS_API_KEY": "sm://missing", "ELEVENLABS_WEBHOOK_SECRET": "x",
                       "GOOGLE_CLOUD_PROJECT": "proj"}, SecretResolver("proj", secret_manager))
    assert str(raised.value).startswith("ELEVENLABS_API_KEY: could not read the secret")


def test_plain_values_need_no_secret_manager():
    settings = load_settings({"ELEVENLABS_API_KEY": "k", "ELEVENLABS_WEBHOOK_SECRET": " s1 , s2 "},
                             SecretResolver(None, lambda: pytest.fail("Secret Manager must not be called")))
    assert settings.webhook_secrets == ("s1", "s2")
    assert settings.max_body_bytes == 10485760 * 4 // 3 + 65536
    assert (settings.agent_update_mode, settings.first_message_template) == ("patch", "Hallo {name}, fijn dat je belt!")


def test_reference_forms():
    assert version_name("sm://k", "p") == "projects/p/secrets/k/versions/latest"
    assert version_name("sm://projects/a/secrets/k", None) == "projects/a/secrets/k/versions/latest"
    assert version_name("sm://projects/a/secrets/k/versions/7", None) == "projects/a/secrets/k/versions/7"


VALID = {"ELEVENLABS_API_KEY": "k", "ELEVENLABS_WEBHOOK_SECRET": "s"}


@pytest.mark.parametrize("env,variable", [
    ({"ELEVENLABS_WEBHOOK_SECRET": "s"}, "ELEVENLABS_API_KEY"),
    ({"ELEVENLABS_API_KEY": "k"}, "ELEVENLABS_WEBHOOK_SECRET"),
    ({**VALID, "ELEVENLABS_API_KEY": "sm://k"}, "ELEVENLABS_API_KEY"),  # short form without a project
    ({**VALID, "AGENT_UPDATE_MODE": "sometimes"}, "AGENT_UPDATE_MODE"),
    ({**VALID, "WEBHOOK_TOLERANCE_SECONDS": "soon"}, "WEBHOOK_TOLERANCE_SECONDS"),
    ({**VALID, "MAX_SAMPLE_BYTES": "0"}, "MAX_SAMPLE_BYTES"),
    ({**VALID, "REMOVE_BACKGROUND_NOISE": "maybe"}, "REMOVE_BACKGROUND_NOISE"),
    ({**VALID, "FIRST_MESSAGE_TEMPLATE": "Hi {first_name}"}, "FIRST_MESSAGE_TEMPLATE"),
    ({**VALID, "VOICE_EVENTS_TOPIC": "voices"}, "VOICE_EVENTS_TOPIC"),  # bare name without a project
    ({**VALID, "ELEVENLABS_BASE_URL": "ftp://x"}, "ELEVENLABS_BASE_URL"),
    ({**VALID, "LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ({**VALID, "SAMPLE_QUALITY_GATE": "strict"}, "SAMPLE_QUALITY_GATE"),
    ({**VALID, "MIN_SPEECH_SECONDS": "two"}, "MIN_SPEECH_SECONDS"),
    ({**VALID, "MIN_SPEECH_SECONDS": "-1"}, "MIN_SPEECH_SECONDS"),
    ({**VALID, "MIN_SPEECH_SECONDS": "25"}, "MIN_SPEECH_SECONDS"),  # more than the 20 s the gate measures
])
def test_invalid_settings_name_their_variable(env, variable):
    with pytest.raises(ConfigError) as raised:
        load_settings(env, SecretResolver(None, lambda: pytest.fail("no Secret Manager")))
    assert raised.value.variable == variable


def test_the_quality_gate_enforces_two_seconds_of_speech_by_default_and_reads_its_settings():
    default = load_settings(VALID)
    assert (default.sample_quality_gate, default.min_speech_seconds, default.enforces_quality) == ("enforce", 2.0, True)
    report = load_settings({**VALID, "SAMPLE_QUALITY_GATE": " Report ", "MIN_SPEECH_SECONDS": "4.5"})
    assert (report.measures_quality, report.enforces_quality, report.min_speech_seconds) == (True, False, 4.5)
    assert not load_settings({**VALID, "SAMPLE_QUALITY_GATE": "off"}).measures_quality


def test_topic_short_form_uses_the_project():
    settings = load_settings({"ELEVENLABS_API_KEY": "k", "ELEVENLABS_WEBHOOK_SECRET": "s",
                              "VOICE_EVENTS_TOPIC": "voices", "GOOGLE_CLOUD_PROJECT": "p"})
    assert settings.voice_events_topic == "projects/p/topics/voices"
