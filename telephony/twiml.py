"""The TwiML of each step: what the caller hears (pure; `twilio.twiml.voice_response.VoiceResponse`).

URLs are absolute, built from the public base the request came in on: TwiML sent in a call update
has no document to resolve a relative URL against.
"""

from __future__ import annotations

from dataclasses import dataclass

from twilio.twiml.voice_response import VoiceResponse

CONSENT_SECONDS = 6  # how long the consent question waits for a key; nothing pressed is a refusal
RECORD_SILENCE_SECONDS = 2  # silence that ends the recording
# Said when ElevenLabs cannot take the call at all: an apology, never silence or a dropped line.
APOLOGY = "Sorry, we kunnen je nu niet doorverbinden. Probeer het later nog eens."


@dataclass(frozen=True)
class Prompts:
    language: str
    consent: str
    record: str
    retry: str
    hold: str
    record_seconds: int
    hold_seconds: int
    hold_audio_url: str | None


def consent(prompts: Prompts, base: str) -> str:
    """The disclosure and the question; no key within `CONSENT_SECONDS` goes on to `consent` without
    `Digits` (Twilio runs the next verb when a `<Gather>` gets no input), which is a refusal."""
    response = VoiceResponse()
    gather = response.gather(num_digits=1, action=f"{base}consent", method="POST", timeout=CONSENT_SECONDS)
    gather.say(prompts.consent, language=prompts.language)
    response.redirect(f"{base}consent", method="POST")
    return str(response)


def record(prompts: Prompts, base: str, attempt: int) -> str:
    """The record prompt (the retry prompt on the second attempt) and `<Record>`. Twilio skips the
    action when nothing was recorded and runs the next verb: the `<Redirect>` that connects the call
    (https://www.twilio.com/docs/voice/twiml/record). `recordingStatusCallback` with `completed` is
    the reliable sign that the file can be fetched; `absent` says nothing usable was recorded."""
    response = VoiceResponse()
    response.say(prompts.record if attempt == 1 else prompts.retry, language=prompts.language)
    response.record(max_length=prompts.record_seconds, timeout=RECORD_SILENCE_SECONDS, play_beep=True,
                    trim="trim-silence", action=f"{base}recorded?attempt={attempt}", method="POST",
                    recording_status_callback=f"{base}recording?attempt={attempt}",
                    recording_status_callback_event="completed absent", recording_status_callback_method="POST")
    response.redirect(f"{base}connect", method="POST")
    return str(response)


def hold(prompts: Prompts, base: str) -> str:
    """The hold: its prompt, the hold audio if any, then silence for `hold_seconds`, then connect. The
    silence is never shorter than `hold_seconds` (the recording step relies on that to know when it
    must have finished); hold audio plays before it, so keep that clip short."""
    response = VoiceResponse()
    response.say(prompts.hold, language=prompts.language)
    if prompts.hold_audio_url:
        response.play(prompts.hold_audio_url)
    response.pause(length=prompts.hold_seconds)
    response.redirect(f"{base}connect", method="POST")
    return str(response)


def connect_now(base: str) -> str:
    """Straight to the agent (what a failed step falls back to)."""
    response = VoiceResponse()
    response.redirect(f"{base}connect", method="POST")
    return str(response)


def apology(language: str) -> str:
    response = VoiceResponse()
    response.say(APOLOGY, language=language)
    response.hangup()
    return str(response)
