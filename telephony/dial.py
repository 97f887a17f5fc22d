"""`python -m precall dial SAMPLE.wav`: a simulated phone call against the running service (`make run`).

The local Twilio (sandbox/twilio_server.py, started by `make run`) places the call: it posts the
signed `/twilio/voice`, presses the key, "speaks" the file at the beep, waits on hold and follows
the call update, exactly as Twilio would. This prints what the caller experiences, then whether
the recording (at Twilio) and the clone (at the local ElevenLabs) were deleted after the hang-up.
Talks only HTTP to the sandbox's `/_sandbox/` routes; nothing here runs in the service.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

DEFAULT_TWILIO_URL = "http://127.0.0.1:8766"
POLL_SECONDS = 0.2
AFTER_CALL_SECONDS = 20.0  # how long to watch for the recording and the clone to be deleted


def dial(twilio_url: str, sample: Path, *, caller_name: str | None, digits: str | None, service_url: str | None,
         talk_seconds: float, timeout: float, say: Callable[[str], None] = print) -> int:
    """0 when the caller reached the agent in their own voice and nothing was left behind, 1 otherwise."""
    speech = [base64.b64encode(sample.read_bytes()).decode()]
    form = {"speech": json.dumps(speech), "caller_name": caller_name or "", "digits": digits or "",
            "talk_seconds": str(talk_seconds)}
    if service_url:
        form["service_url"] = service_url
    placed = requests.post(f"{twilio_url}/_sandbox/calls", data=form, timeout=10)
    placed.raise_for_status()
    call_sid = placed.json()["call_sid"]
    say(f"calling as {caller_name or 'a caller without caller-name lookup'} ({call_sid})")
    shown, call, end = 0, {}, time.monotonic() + timeout
    while time.monotonic() < end:
        call = requests.get(f"{twilio_url}/_sandbox/calls/{call_sid}", timeout=10).json()
        for event in call["events"][shown:]:
            line = describe(event, call["events"], sample.name)
            if line:
                say(line)
        shown = len(call["events"])
        if call["done"]:
            break
        time.sleep(POLL_SECONDS)
    connected = next((e for e in call.get("events", []) if e["kind"] == "connected"), None)
    return _after_the_call(twilio_url, call_sid, connected, say)


def describe(event: dict[str, Any], events: list[dict[str, Any]], sample_name: str) -> str | None:
    at, kind = f"{event['at']:6.1f} s", event["kind"]
    if kind == "say":
        return f"{at}  hears: \"{event['text']}\""
    if kind == "pressed":
        return f"{at}  presses {event['digits']}"
    if kind == "no_key":
        return f"{at}  presses nothing"
    if kind == "beep":
        return f"{at}  hears the beep"
    if kind == "spoke":
        return f"{at}  speaks {sample_name} ({event['seconds']:.1f} s)"
    if kind == "silence":
        return f"{at}  says nothing"
    if kind == "play":
        return f"{at}  hears the hold audio"
    if kind == "pause":
        return f"{at}  waits on hold (at most {event['seconds']:g} s)"
    if kind == "updated":
        held = next((e["at"] for e in reversed(events) if e["kind"] == "pause" and e["at"] <= event["at"]), None)
        return f"{at}  the service updates the call" + (f" after {event['at'] - held:.1f} s on hold" if held is not None else "")
    if kind == "connected":
        if "voice_id" not in event:
            return f"{at}  connected to the agent ({event.get('stream_url', '')})"
        return (f"{at}  connected to the agent: voice \"{event['voice_name']}\" ({event['voice_id']}), "
                f"greeting \"{event['first_message']}\"")
    if kind == "hangup":
        return f"{at}  hangs up"
    if kind == "application_error":
        return f"{at}  hears \"an application error has occurred\" (the service answered {event.get('status')})"
    return f"{at}  {kind}"


def _after_the_call(twilio_url: str, call_sid: str, connected: dict[str, Any] | None, say: Callable[[str], None]) -> int:
    voice_id = connected.get("voice_id") if connected else None
    own_voice = bool(connected and "_Clone_" in str(connected.get("voice_name", "")))
    elevenlabs = None
    if connected and connected.get("stream_url", "").startswith("ws://"):
        parts = urlsplit(connected["stream_url"])
        elevenlabs = f"http://{parts.netloc}"
    recordings_gone = clone_gone = False
    end = time.monotonic() + AFTER_CALL_SECONDS
    while time.monotonic() < end:
        call = requests.get(f"{twilio_url}/_sandbox/calls/{call_sid}", timeout=10).json()
        recordings_gone = all(r["deleted"] for r in call["recordings"])
        if own_voice and elevenlabs and voice_id:
            clone_gone = not requests.get(f"{elevenlabs}/_sandbox/voices/{voice_id}", timeout=10).json()["exists"]
        if recordings_gone and (clone_gone or not own_voice):
            break
        time.sleep(POLL_SECONDS)
    count = len(call["recordings"])
    say(f"recording{'s' if count != 1 else ''} at Twilio: " + ("none made" if not count else
                                                               "deleted" if recordings_gone else "NOT deleted"))
    if own_voice:
        say("clone: deleted after the call" if clone_gone else "clone: NOT deleted yet (see the service's log)")
    else:
        say("the agent spoke with its own voice (no clone)")
    return 0 if own_voice and clone_gone and recordings_gone else 1
