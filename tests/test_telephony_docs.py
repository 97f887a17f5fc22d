"""docs/telephony.md documents every setting, route and log event of the telephony front."""

from __future__ import annotations

import re

from sandbox.processes import ROOT
from telephony.app import ROUTES

DOC = (ROOT / "docs" / "telephony.md").read_text()
SETTINGS = ("PUBLIC_BASE_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_BASE_URL", "TWILIO_CONSENT",
            "TWILIO_LANGUAGE", "TWILIO_PROMPT_CONSENT", "TWILIO_PROMPT_RECORD", "TWILIO_PROMPT_RETRY", "TWILIO_PROMPT_HOLD",
            "TWILIO_RECORD_SECONDS", "TWILIO_HOLD_SECONDS", "TWILIO_HOLD_AUDIO_URL")


def test_every_setting_route_and_event_is_documented():
    source = "\n".join(path.read_text() for path in (ROOT / "telephony").glob("*.py"))
    events = set(re.findall(r'"(twilio_[a-z_]+)"', source)) - {"twilio_api_base_url"}
    reasons = set(re.findall(r'reason="([a-z_]+)"', source)) | set(re.findall(r'_fallback\(\w+(?:\.\w+)?, "([a-z_]+)"', source))
    missing = [name for name in (*SETTINGS, *events, *reasons) if f"`{name}`" not in DOC]
    missing += [route for route in ROUTES if route not in DOC and route.rsplit("/", 1)[1] not in DOC]
    assert missing == []
