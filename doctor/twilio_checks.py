"""What `doctor` concludes about the telephony front (pure): Twilio credentials, the number's webhooks,
the agent's audio formats. Each line that is not ok carries its one fix.

Fields as Twilio documents them: the Account resource's `status` and `type`
(https://www.twilio.com/docs/iam/api/account), the IncomingPhoneNumber resource's `phone_number`,
`voice_url`, `voice_method`, `status_callback`, `status_callback_method` and `voice_application_sid`
(https://www.twilio.com/docs/phone-numbers/api/incomingphonenumber-resource; with an application SID
set, Twilio ignores the number's own voice URLs). ElevenLabs: an agent used through register-call must
take and give µ-law 8000 Hz (`conversation_config.asr.user_input_audio_format`,
`conversation_config.tts.agent_output_audio_format`; elevenlabs/types/asr_conversational_config.py,
tts_conversational_config_output.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from voiceclone.documents import dig
from voiceclone.readiness import FAILED, OK, UNKNOWN, WARNING, Finding, public_url

VOICE_PATH = "/twilio/voice"
STATUS_PATH = "/twilio/status"
TWILIO_AUDIO_FORMAT = "ulaw_8000"
CREDENTIALS_FIX = ("set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN to the Account SID and Auth Token of Twilio Console → "
                   "Account Info (deploy/setup.sh stores the token in Secret Manager)")


def credentials_finding(account: dict[str, Any]) -> Finding:
    """`GET /2010-04-01/Accounts/{sid}.json` answered: the credentials are valid; a suspended or closed
    account answers no calls, and a trial account plays Twilio's own notice before the service's."""
    name = "twilio: credentials"
    status, kind = account.get("status"), account.get("type")
    if status in ("suspended", "closed"):
        return Finding(name, FAILED, f"accepted, but the account is {status}: Twilio answers no call",
                       "Twilio Console → Account: reactivate the account (or use another one)")
    if kind == "Trial":
        return Finding(name, WARNING, "accepted; a trial account: callers hear Twilio's trial notice first and only "
                       "verified numbers may call", "Twilio Console → Account: upgrade the account before real callers")
    return Finding(name, OK, f"accepted ({status or 'status not reported'}, {kind or 'type not reported'})")


def credentials_failed_finding(reason: str, base_url: str) -> Finding:
    name = "twilio: credentials"
    if "401" in reason or "20003" in reason:
        return Finding(name, FAILED, f"Twilio rejected the account SID and auth token ({reason})", CREDENTIALS_FIX)
    return Finding(name, FAILED, f"could not read the account at {public_url(base_url)}: {reason}",
                   "check TWILIO_API_BASE_URL (unset: https://api.twilio.com) and this machine's network")


def numbers_unreadable_finding(reason: str) -> Finding:
    return Finding("twilio: number", UNKNOWN, f"could not read IncomingPhoneNumbers: {reason}",
                   "run doctor again; if it persists, check Twilio's status page")


def number_findings(numbers: Sequence[dict[str, Any]], wanted: str | None, base_url: str | None) -> list[Finding]:
    """The voice URL and the status callback of the number (`--twilio-number`, else the account's one
    number, else those already pointing at this service), against `base_url` (PUBLIC_BASE_URL, else
    --service-url)."""
    if wanted and not numbers:
        return [Finding("twilio: number", FAILED, f"the account has no number {wanted}",
                        "pass --twilio-number as Twilio Console → Phone Numbers shows it (+ and digits)")]
    if not numbers:
        return [Finding("twilio: number", FAILED, "the account has no phone number",
                        "Twilio Console → Phone Numbers → Buy a number, then run deploy/setup.sh --twilio-number +…")]
    if base_url is None:
        return [Finding("twilio: number", UNKNOWN, "no service URL to compare the number's webhooks with",
                        "set PUBLIC_BASE_URL as deployed, or pass --service-url")]
    base = base_url.rstrip("/")
    chosen = list(numbers)
    if not wanted and len(numbers) > 1:
        chosen = [n for n in numbers if _same(n.get("voice_url"), base + VOICE_PATH)]
        if not chosen:
            return [Finding("twilio: number", FAILED, f"none of the account's {len(numbers)} numbers sends calls to "
                            f"{public_url(base + VOICE_PATH)}", "pass --twilio-number +… to check one, and point it "
                            "here: deploy/setup.sh --twilio-number +…")]
    found: list[Finding] = []
    for number in chosen:
        found += [_webhook(number, base, "voice URL", "voice_url", "voice_method", VOICE_PATH),
                  _webhook(number, base, "status callback", "status_callback", "status_callback_method", STATUS_PATH)]
    return found


def _webhook(number: dict[str, Any], base: str, what: str, url_field: str, method_field: str, path: str) -> Finding:
    phone = str(number.get("phone_number") or number.get("sid") or "?")
    name = f"twilio: {what}"
    wanted = base + path
    fix = (f"Twilio Console → Phone Numbers → {phone} → Voice Configuration: "
           + ("'A call comes in' → Webhook " if path == VOICE_PATH else "'Call status changes' → ")
           + f"{wanted}, HTTP POST (or deploy/setup.sh --twilio-number {phone})")
    if path == VOICE_PATH and number.get("voice_application_sid"):
        return Finding(name, FAILED, f"{phone} sends calls to TwiML App {number['voice_application_sid']}, which "
                       "overrides its voice URL", f"remove the TwiML App from the number; then: {fix}")
    url, method = number.get(url_field) or "", str(number.get(method_field) or "POST").upper()
    if not url:
        return Finding(name, FAILED, f"{phone} has none", fix)
    if not _same(url, wanted):
        return Finding(name, FAILED, f"{phone}: {public_url(url)}, not {public_url(wanted)}", fix)
    if method != "POST":
        return Finding(name, FAILED, f"{phone}: {public_url(url)} with HTTP {method}, not POST", fix)
    return Finding(name, OK, f"{phone}: {public_url(url)} (POST)")


def _same(url: Any, wanted: str) -> bool:
    return isinstance(url, str) and url.rstrip("/") == wanted.rstrip("/")


def audio_format_finding(agent: dict[str, Any]) -> Finding:
    """register-call connects Twilio's µ-law 8000 Hz media stream straight to the agent: any other format
    is noise or silence on the phone."""
    name = "twilio: agent audio format"
    formats = {"user input (asr.user_input_audio_format)": dig(agent, "conversation_config", "asr", "user_input_audio_format"),
               "agent output (tts.agent_output_audio_format)": dig(agent, "conversation_config", "tts",
                                                                   "agent_output_audio_format")}
    fix = ("ElevenLabs → Agents → your agent: set the user input audio format (Advanced) and the TTS output format "
           f"(Voice) to μ-law 8000 Hz, i.e. {TWILIO_AUDIO_FORMAT}")
    unknown = [k for k, v in formats.items() if not isinstance(v, str)]
    wrong = [f"{k} is {v}" for k, v in formats.items() if isinstance(v, str) and v != TWILIO_AUDIO_FORMAT]
    if wrong:
        return Finding(name, FAILED, f"{'; '.join(wrong)}, not {TWILIO_AUDIO_FORMAT}: Twilio calls would be noise", fix)
    if unknown:
        return Finding(name, UNKNOWN, f"ElevenLabs did not report the {' and the '.join(unknown)}", fix)
    return Finding(name, OK, f"{TWILIO_AUDIO_FORMAT} in and out")
