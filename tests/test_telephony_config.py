"""The telephony front's settings: off by default, each bad value stops start-up naming its variable."""

from __future__ import annotations

import pytest

from voiceclone.config import DEFAULT_PROMPT_CONSENT, ConfigError, load_settings

BASE = {"ELEVENLABS_API_KEY": "k", "ELEVENLABS_WEBHOOK_SECRET": "s"}
SID = "AC" + "0123456789abcdef" * 2
ON = {**BASE, "TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "new,old", "ELEVENLABS_AGENT_ID": "agent_1"}


def test_off_without_an_account_sid_with_the_documented_defaults():
    settings = load_settings(BASE)
    assert not settings.telephony_enabled
    assert (settings.twilio_consent, settings.twilio_language, settings.twilio_record_seconds,
            settings.twilio_hold_seconds, settings.twilio_api_base_url) == ("required", "nl-NL", 12, 25, "https://api.twilio.com")
    assert settings.twilio_prompt_consent == DEFAULT_PROMPT_CONSENT and "Druk op 1" in DEFAULT_PROMPT_CONSENT


def test_on_with_an_account_sid_and_every_token_kept_for_rotation():
    settings = load_settings({**ON, "PUBLIC_BASE_URL": "https://x.run.app/", "TWILIO_CONSENT": "OFF",
                              "TWILIO_HOLD_AUDIO_URL": "https://cdn.example/hold.mp3"})
    assert settings.telephony_enabled and settings.twilio_auth_tokens == ("new", "old")
    assert settings.public_base_url == "https://x.run.app" and settings.twilio_consent == "off"


@pytest.mark.parametrize("change,variable", [
    ({"TWILIO_ACCOUNT_SID": "AC123"}, "TWILIO_ACCOUNT_SID"),
    ({"TWILIO_AUTH_TOKEN": ""}, "TWILIO_AUTH_TOKEN"),
    ({"ELEVENLABS_AGENT_ID": ""}, "ELEVENLABS_AGENT_ID"),
    ({"TWILIO_CONSENT": "maybe"}, "TWILIO_CONSENT"),
    ({"PUBLIC_BASE_URL": "precall.example"}, "PUBLIC_BASE_URL"),
    ({"TWILIO_API_BASE_URL": "ftp://x"}, "TWILIO_API_BASE_URL"),
    ({"TWILIO_HOLD_SECONDS": "0"}, "TWILIO_HOLD_SECONDS"),
    ({"TWILIO_RECORD_SECONDS": "ten"}, "TWILIO_RECORD_SECONDS"),
    ({"TWILIO_HOLD_AUDIO_URL": "hold.mp3"}, "TWILIO_HOLD_AUDIO_URL"),
])
def test_a_bad_value_names_its_variable(change, variable):
    with pytest.raises(ConfigError) as error:
        load_settings({**ON, **change})
    assert error.value.variable == variable
