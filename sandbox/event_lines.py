"""One short line per service log event, for the `make run` terminal.

The services write Cloud Logging JSON lines (what Cloud Run wants, and what `make run` keeps in
its log files); a person watching a call wants `12:03:04 Voice cloned successfully voice_id=…`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

# Fields every line has, or that only Cloud Logging reads.
_HIDDEN = {"severity", "message", "time", "logger", "event_type", "logging.googleapis.com/trace"}


def describe(line: str, source: str) -> str | None:
    """The human line for one line of `source`'s output (`12:03:04 webhook  ...`); None for what a
    person need not see (gunicorn's start-up chatter, traceback frames)."""
    try:
        entry = json.loads(line)
    except ValueError:
        entry = None
    if isinstance(entry, dict) and "event_type" in entry:
        return f"{_clock(entry.get('time'))} {source:<8} {_severity(entry)}{_text(entry)}"
    text = _plain(line)
    return None if text is None else f"{_clock(None)} {source:<8} {text}"


def _text(entry: dict[str, Any]) -> str:
    if entry["event_type"] == "elevenlabs_call":  # one per API request: keep it terse
        status = entry.get("status") or "no answer"
        attempt = f" (attempt {entry['attempt']})" if (entry.get("attempt") or 1) > 1 else ""
        return f"  ElevenLabs {entry.get('method')} {entry.get('endpoint')} -> {status} in {entry.get('duration_ms')} ms{attempt}"
    if entry["event_type"] == "twilio_request":  # likewise for Twilio's API
        status = entry.get("status") or "no answer"
        return f"  Twilio {entry.get('method')} {entry.get('endpoint')} -> {status} in {entry.get('duration_ms')} ms"
    fields = " ".join(f"{key}={_value(value)}" for key, value in entry.items()
                      if key not in _HIDDEN and value not in (None, "", [], {}))
    return f"{entry.get('message') or entry['event_type']} [{entry['event_type']}]" + (f"  {fields}" if fields else "")


def _severity(entry: dict[str, Any]) -> str:
    severity = str(entry.get("severity", "INFO"))
    return "" if severity in ("INFO", "DEBUG") else f"{severity} "


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)


def _clock(stamp: Any) -> str:
    """Local wall-clock time of the event (now, for lines without one)."""
    try:
        return datetime.fromisoformat(str(stamp)).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return datetime.now().strftime("%H:%M:%S")


def _plain(line: str) -> str | None:
    """Non-JSON output: start-up failures and gunicorn warnings matter, its INFO lines and
    traceback frames do not (the traceback's last line names the error)."""
    text = line.rstrip()
    if not text or text[0].isspace() or "] [INFO] " in text or text.startswith("Traceback"):
        return None
    return text
