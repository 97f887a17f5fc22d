"""Strict mode of the local ElevenLabs server: the real API as documented, at its least convenient."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from sandbox.elevenlabs_server import (
    PREMADE_VOICES,
    STRICT_FOREIGN_VOICES,
    FakeElevenLabs,
    detail,
    error_body,
)
from sandbox.processes import ROOT, free_port, wait_for_http

API_KEY = "strict-test-key"
SAMPLE = b"\x00" * 2000  # the server refuses samples under 1000 bytes
OUR_LABELS = {"language": "nl", "accent": "dutch", "gender": "male", "age": "young", "source": "precall-webhook",
              "type": "instant_clone", "conversation_id": "conv_1", "created_at": "2025-01-01T00:00:00Z",
              "caller_ref": "ref_1"}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeElevenLabs]:
    fake = FakeElevenLabs(api_key=API_KEY, strict=True).start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(server: FakeElevenLabs) -> Iterator[FakeElevenLabs]:
    server.reset()
    server.voice_limit = 30
    yield server
    server.auto_create_agents = False  # reset() leaves it as it is


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["xi-api-key"] = API_KEY
        yield session


@contextmanager
def lenient(fake: FakeElevenLabs) -> Iterator[None]:
    """Today's (non-strict) behaviour for a moment, to show what strict mode changes."""
    fake.strict = False
    try:
        yield
    finally:
        fake.strict = True


def clone(http: requests.Session, fake: FakeElevenLabs, name: str = "Ivan_Clone_20250101_000000_conv_1",
          labels: dict[str, str] | None = None, description: str | None = None) -> requests.Response:
    data = {"name": name, "labels": json.dumps(labels or {})}
    if description is not None:
        data["description"] = description
    return http.post(f"{fake.url}/v1/voices/add", data=data, files=[("files", ("s.mp3", SAMPLE, "audio/mpeg"))],
                     timeout=5)


def voice(http: requests.Session, fake: FakeElevenLabs, voice_id: str) -> requests.Response:
    return http.get(f"{fake.url}/v1/voices/{voice_id}", timeout=5)


def search(http: requests.Session, fake: FakeElevenLabs, term: str) -> list[str]:
    page = http.get(f"{fake.url}/v2/voices", params={"search": term, "page_size": 100}, timeout=5).json()
    return [v["name"] for v in page["voices"]]


def all_pages(http: requests.Session, fake: FakeElevenLabs, **params: Any) -> list[list[dict[str, Any]]]:
    pages, token = [], None
    while True:
        query = dict(params, **({"next_page_token": token} if token else {}))
        page = http.get(f"{fake.url}/v2/voices", params=query, timeout=5).json()
        pages.append(page["voices"])
        if not page["has_more"]:
            return pages
        token = page["next_page_token"]


# -- the switch ------------------------------------------------------------------------------


def test_strict_is_off_by_default_survives_reset_and_can_be_set_later() -> None:
    fake = FakeElevenLabs()
    assert fake.strict is False and fake.custom_voice_count() == 0 and fake.error_style == "legacy"
    fake.strict = True
    fake.reset()
    assert fake.strict is True
    assert fake.custom_voice_count() == STRICT_FOREIGN_VOICES
    fake.reset()
    assert fake.custom_voice_count() == STRICT_FOREIGN_VOICES  # seeded afresh, not added twice


def test_cli_strict_flag_serves_a_strict_account() -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "sandbox.elevenlabs_server", "--strict", "--port", str(port),
                                "--api-key", API_KEY], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(url, process, timeout=10)
        answer = requests.get(f"{url}/v1/voices/missing", headers={"xi-api-key": API_KEY}, timeout=5)
        assert answer.status_code == 400 and answer.json()["detail"]["code"] == "voice_not_found"
    finally:
        process.terminate()
        process.wait(timeout=5)


# -- labels ----------------------------------------------------------------------------------


def test_strict_clone_keeps_only_the_label_keys_the_sdk_documents(fake, http) -> None:
    created = clone(http, fake, labels=OUR_LABELS)
    assert created.status_code == 200
    assert voice(http, fake, created.json()["voice_id"]).json()["labels"] == {
        "language": "nl", "accent": "dutch", "gender": "male", "age": "young"}


def test_non_strict_clone_keeps_every_label_key(fake, http) -> None:
    with lenient(fake):
        created = clone(http, fake, labels=OUR_LABELS)
        assert voice(http, fake, created.json()["voice_id"]).json()["labels"] == OUR_LABELS


# -- search ----------------------------------------------------------------------------------


def test_strict_search_matches_name_and_description_case_insensitively_never_labels(fake, http) -> None:
    clone(http, fake, name="Ivan_Clone_20250101_000000_conv_7", labels={"accent": "dutch"}, description="conv_ref_7")
    assert search(http, fake, "IVAN_clone") == ["Ivan_Clone_20250101_000000_conv_7"]
    assert search(http, fake, "CONV_REF_7") == ["Ivan_Clone_20250101_000000_conv_7"]
    assert search(http, fake, "dutch") == []
    assert search(http, fake, "british") == []  # every foreign voice has the label accent=british
    assert search(http, fake, "cloned") == []  # nor the category


def test_non_strict_search_also_matches_label_values(fake, http) -> None:
    with lenient(fake):
        assert len(search(http, fake, "british")) == STRICT_FOREIGN_VOICES


# -- an account full of the user's own voices -----------------------------------------------


def test_strict_account_holds_foreign_voices_that_take_several_default_pages(fake, http) -> None:
    pages = all_pages(http, fake)
    assert [len(page) for page in pages] == [10, 4]  # page_size defaults to 10
    voices = [v for page in pages for v in page]
    assert len({v["voice_id"] for v in voices}) == STRICT_FOREIGN_VOICES + len(PREMADE_VOICES)
    foreign = [v for v in voices if v["category"] == "cloned"]
    assert {v["name"] for v in foreign} == {f"Narrator {n}" for n in range(1, STRICT_FOREIGN_VOICES + 1)}
    assert all(v["description"] == "My own narration voice" and v["labels"] == {"accent": "british"} for v in foreign)
    assert fake.custom_voice_count() == STRICT_FOREIGN_VOICES
    assert [len(page) for page in all_pages(http, fake, page_size=100)] == [STRICT_FOREIGN_VOICES + len(PREMADE_VOICES)]


def test_strict_page_size_over_100_is_refused(fake, http) -> None:
    answer = http.get(f"{fake.url}/v2/voices", params={"page_size": 101}, timeout=5)
    assert answer.status_code == 400 and answer.json()["detail"]["code"] == "invalid_page_size"


def test_foreign_voices_count_against_the_voice_limit(fake, http) -> None:
    fake.voice_limit = fake.custom_voice_count() + 1
    assert clone(http, fake).status_code == 200
    refused = clone(http, fake, name="second")
    assert refused.status_code == 400
    assert refused.json()["detail"]["code"] == "voice_limit_reached"


# -- error bodies ----------------------------------------------------------------------------


def test_error_style_is_current_when_strict_and_reset_restores_the_default(fake, http) -> None:
    answer = requests.get(f"{fake.url}/v2/voices", headers={"xi-api-key": "wrong"}, timeout=5)
    assert answer.status_code == 401
    assert answer.json() == {"detail": {"type": "authentication_error", "code": "invalid_api_key",
                                        "message": "Invalid API key", "status": "invalid_api_key"}}
    fake.error_style = "legacy"
    fake.reset()
    assert fake.error_style == "current"


def test_code_only_and_legacy_error_styles(fake, http) -> None:
    fake.error_style = "code_only"
    assert voice(http, fake, "missing").json()["detail"].keys() == {"type", "code", "message"}
    fake.error_style = "legacy"
    assert voice(http, fake, "missing").json()["detail"].keys() == {"status", "message"}
    with pytest.raises(ValueError):
        fake.error_style = "newest"


def test_error_body_helpers_build_every_style_and_keep_detail_legacy() -> None:
    assert detail("voice_limit_reached", "full") == {"detail": {"status": "voice_limit_reached", "message": "full"}}
    assert error_body("paid_plan_required", "m", status="can_not_use_instant_voice_cloning", style="current") == {
        "detail": {"type": "payment_required", "code": "paid_plan_required", "message": "m",
                   "status": "can_not_use_instant_voice_cloning"}}
    assert error_body("x", "m", kind="conflict", style="code_only") == {
        "detail": {"type": "conflict", "code": "x", "message": "m"}}
    assert error_body("x", "m", status="y") == {"detail": {"status": "y", "message": "m"}}


def test_injected_failure_without_a_body_answers_in_the_current_style(fake, http) -> None:
    fake.inject("GET", "/v2/voices", status=500)
    fake.inject("GET", "/v2/voices", status=429)
    assert http.get(f"{fake.url}/v2/voices", timeout=5).json()["detail"]["code"] == "internal_error"
    assert http.get(f"{fake.url}/v2/voices", timeout=5).json()["detail"]["type"] == "rate_limit_error"


def test_plan_without_instant_cloning_answers_paid_plan_required_and_creates_nothing(fake, http) -> None:
    fake.can_clone = False
    refused = clone(http, fake)
    assert refused.status_code == 400
    assert refused.json()["detail"] == {"type": "payment_required", "code": "paid_plan_required",
                                        "message": refused.json()["detail"]["message"],
                                        "status": "can_not_use_instant_voice_cloning"}
    assert fake.custom_voice_count() == STRICT_FOREIGN_VOICES
    fake.reset()
    assert clone(http, fake).status_code == 200


# -- missing voices and conversations --------------------------------------------------------


def test_strict_missing_voice_is_400_voice_not_found_for_get_and_delete(fake, http) -> None:
    for answer in (voice(http, fake, "missing"), http.delete(f"{fake.url}/v1/voices/missing", timeout=5)):
        assert answer.status_code == 400
        assert answer.json()["detail"]["code"] == answer.json()["detail"]["status"] == "voice_not_found"
        assert answer.json()["detail"]["type"] == "not_found"


def test_non_strict_missing_voice_is_404(fake, http) -> None:
    with lenient(fake):
        assert voice(http, fake, "missing").status_code == 404
        assert http.delete(f"{fake.url}/v1/voices/missing", timeout=5).status_code == 404


def test_missing_conversation_is_404_conversation_not_found(fake, http) -> None:
    answer = http.get(f"{fake.url}/v1/convai/conversations/conv_missing", timeout=5)
    assert answer.status_code == 404
    assert answer.json()["detail"]["code"] == "conversation_not_found"
    assert answer.json()["detail"]["type"] == "not_found"


# -- clones that need verification -----------------------------------------------------------


def test_requires_verification_still_creates_the_voice_and_takes_a_slot(fake, http) -> None:
    fake.requires_verification = True
    created = clone(http, fake).json()
    assert created["requires_verification"] is True
    assert voice(http, fake, created["voice_id"]).status_code == 200
    assert fake.custom_voice_count() == STRICT_FOREIGN_VOICES + 1


# -- agents ----------------------------------------------------------------------------------


def test_agent_carries_its_override_and_webhook_settings_where_the_sdk_reads_them(fake, http) -> None:
    from elevenlabs.types import DynamicVariablesConfig, GetAgentResponseModel

    fake.add_agent("agent_x", voice_id="v1", allow_first_message=True, init_webhook=True, first_message="Hi",
                   prompt="Be brief.", dynamic_variable_placeholders={"caller_name": "there"})
    body = http.get(f"{fake.url}/v1/convai/agents/agent_x", timeout=5).json()
    agent = GetAgentResponseModel.model_validate(body)
    overrides = agent.platform_settings.overrides
    assert overrides.conversation_config_override.agent.first_message is True
    assert overrides.conversation_config_override.tts.voice_id is False
    assert overrides.enable_conversation_initiation_client_data_from_webhook is True
    assert agent.conversation_config.agent.first_message == "Hi"
    assert agent.conversation_config.agent.prompt.prompt == "Be brief."
    assert agent.conversation_config.tts.voice_id == "v1"
    variables = DynamicVariablesConfig.model_validate(body["conversation_config"]["agent"]["dynamic_variables"])
    assert variables.dynamic_variable_placeholders == {"caller_name": "there"}


def test_new_agent_allows_no_overrides_and_no_init_webhook(fake, http) -> None:
    fake.add_agent("agent_plain")
    overrides = http.get(f"{fake.url}/v1/convai/agents/agent_plain", timeout=5).json()["platform_settings"]["overrides"]
    assert overrides == {"conversation_config_override": {"agent": {"first_message": False}, "tts": {"voice_id": False}},
                         "enable_conversation_initiation_client_data_from_webhook": False}


def test_auto_created_agents_allow_both_overrides_and_the_init_webhook(fake, http) -> None:
    fake.auto_create_agents = True
    overrides = http.get(f"{fake.url}/v1/convai/agents/agent_new", timeout=5).json()["platform_settings"]["overrides"]
    assert overrides == {"conversation_config_override": {"agent": {"first_message": True}, "tts": {"voice_id": True}},
                         "enable_conversation_initiation_client_data_from_webhook": True}


# -- timestamps ------------------------------------------------------------------------------


def test_omit_created_at_unix_serves_voices_without_it(fake, http) -> None:
    voice_id = clone(http, fake).json()["voice_id"]
    assert "created_at_unix" in voice(http, fake, voice_id).json()
    fake.omit_created_at_unix = True
    assert "created_at_unix" not in voice(http, fake, voice_id).json()
    listed = http.get(f"{fake.url}/v2/voices", params={"page_size": 100}, timeout=5).json()["voices"]
    assert listed and all("created_at_unix" not in v for v in listed)
    assert fake.voices[voice_id]["created_at_unix"]  # only hidden from clients, still used for sorting
