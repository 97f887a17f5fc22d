"""Retry rules, proven by counting the requests the local ElevenLabs server saw."""

from __future__ import annotations

import pytest

from sandbox.elevenlabs_server import detail, validation_detail
from sandbox.processes import free_port
from tests.conftest import API_KEY
from voiceclone.deadline import Deadline, DeadlineExceeded
from voiceclone.elevenlabs_client import (
    ElevenLabsClient,
    ElevenLabsError,
    parse_retry_after,
)

SAMPLE = b"RIFF" + bytes(4000)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make(fake, **kwargs) -> tuple[ElevenLabsClient, Sleeps]:
    sleeps = Sleeps()
    return ElevenLabsClient(fake.url, API_KEY, sleep=sleeps, jitter=lambda: 1.0, **kwargs), sleeps


def add(client: ElevenLabsClient, deadline: float = 10.0, already_done=None) -> str:
    return client.add_voice(name="V", sample=SAMPLE, filename="a.wav", mime_type="audio/wav", description="d",
                            labels={"type": "instant_clone"}, remove_background_noise=False,
                            deadline=Deadline(deadline), already_done=already_done).voice_id


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_429_and_5xx_are_retried_with_backoff(fake, status):
    client, sleeps = make(fake)
    fake.inject("POST", "/v1/voices/add", status=status, times=2)
    voice_id = add(client)
    assert voice_id in fake.voices
    assert len(fake.requests_to("POST", "/v1/voices/add")) == 3
    assert sleeps == [0.25, 0.5]


@pytest.mark.parametrize("status,body", [
    (400, detail("invalid_audio", "Voice sample quality too low")),
    (401, detail("invalid_api_key", "Invalid API key")),
    (404, detail("not_found", "nope")),
    (422, validation_detail(["body", "name"], "Field required")),
])
def test_other_4xx_are_never_retried_and_carry_elevenlabs_reason(fake, status, body):
    client, sleeps = make(fake)
    fake.inject("POST", "/v1/voices/add", status=status, body=body)
    with pytest.raises(ElevenLabsError) as raised:
        add(client)
    assert len(fake.requests_to("POST", "/v1/voices/add")) == 1
    assert sleeps == []
    expected = {400: "Voice sample quality too low", 401: "Invalid API key", 404: "nope", 422: "name: Field required"}
    assert raised.value.message == expected[status] and raised.value.status == status


def test_retry_after_is_honoured_over_shorter_backoff(fake):
    client, sleeps = make(fake)
    fake.inject("PATCH", "/v1/convai/agents/a1", status=429, headers={"Retry-After": "2"})
    fake.add_agent("a1")
    client.update_agent("a1", first_message="hi", voice_id="21m00Tcm4TlvDq8ikWAM", deadline=Deadline(10))
    assert sleeps == [2.0]
    assert len(fake.requests_to("PATCH", "/v1/convai/agents/a1")) == 2


def test_retry_after_beyond_the_deadline_gives_up_at_once(fake):
    client, sleeps = make(fake)
    fake.inject("DELETE", "/v1/voices/v1", status=503, headers={"Retry-After": "30"})
    with pytest.raises(DeadlineExceeded):
        client.delete_voice("v1", Deadline(5))
    assert sleeps == [] and len(fake.requests_to("DELETE", "/v1/voices/v1")) == 1


def test_connection_reset_is_retried(fake):
    client, _ = make(fake)
    fake.inject("GET", "/v2/voices", reset=True)
    assert list(client.iter_voices(Deadline(10), category=None))  # premade voices
    assert len(fake.requests_to("GET", "/v2/voices")) == 2


def test_read_timeout_is_retried_then_succeeds(fake):
    client, _ = make(fake, read_timeout=0.3)
    fake.inject("GET", "/v1/convai/conversations/conv_t", delay=1.0)
    fake.set_conversation("conv_t", "done")
    assert client.get_conversation_status("conv_t", Deadline(10)) == "done"
    assert len(fake.requests_to("GET", "/v1/convai/conversations/conv_t")) == 2


def test_attempts_are_capped_and_the_last_error_surfaces(fake):
    client, sleeps = make(fake, max_attempts=3)
    fake.inject("POST", "/v1/voices/add", status=500, times=10)
    with pytest.raises(ElevenLabsError) as raised:
        add(client)
    assert raised.value.status == 500 and len(fake.requests_to("POST", "/v1/voices/add")) == 3
    assert len(sleeps) == 2


def test_deadline_bounds_the_whole_retry_loop_with_real_sleeps(fake):
    # With attempts effectively unlimited, only the deadline can end the loop.
    client = ElevenLabsClient(fake.url, API_KEY, backoff_base=0.2, read_timeout=5, max_attempts=10_000)
    fake.inject("POST", "/v1/voices/add", status=503, times=10_000)
    with pytest.raises(DeadlineExceeded):
        add(client, deadline=1.0)
    assert len(fake.requests_to("POST", "/v1/voices/add")) >= 2


def test_ambiguous_clone_failure_is_not_repeated_when_the_probe_finds_the_voice(fake):
    client, _ = make(fake)
    existing = fake.add_voice("V", labels={"source": "precall-webhook"})
    fake.inject("POST", "/v1/voices/add", status=502)
    assert add(client, already_done=lambda: existing) == existing
    assert len(fake.requests_to("POST", "/v1/voices/add")) == 1


def test_404s_mean_absent_for_lookups_and_deletes(fake):
    client, _ = make(fake)
    assert client.get_voice("missing", Deadline(5)) is None
    assert client.delete_voice("missing", Deadline(5)) is False
    assert client.get_conversation_status("conv_unknown", Deadline(5)) is None


def test_voice_listing_follows_pages(fake):
    client, _ = make(fake)
    for index in range(130):
        fake.add_voice(f"Clone_{index}", labels={"source": "precall-webhook"})
    assert len(list(client.iter_voices(Deadline(10)))) == 130
    assert len(fake.requests_to("GET", "/v2/voices")) == 2


def test_retry_after_parses_seconds_and_http_dates():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_the_environments_proxy_settings_still_apply(fake, monkeypatch):
    # They are read once, when the client is made, not on every request (docs/design.md).
    for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    through_dead_proxy, _ = make(fake, max_attempts=1)
    with pytest.raises(ElevenLabsError) as raised:
        through_dead_proxy.get_subscription(Deadline(5))
    assert raised.value.code == "connection_error"
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct, _ = make(fake, max_attempts=1)
    assert "voice_limit" in direct.get_subscription(Deadline(5))
