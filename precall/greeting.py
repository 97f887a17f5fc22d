"""What the caller hears and what the logs may show of a caller's name (pure functions; docs/api.md and docs/events.md)."""

from __future__ import annotations

import re

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def display_name(caller_name: str | None) -> str | None:
    """The caller's name as spoken in the greeting: trimmed, no control characters."""
    if caller_name is None:
        return None
    cleaned = " ".join(_CONTROL_CHARS.sub(" ", caller_name).split())[:80]
    return cleaned or None


def greeting(template: str, default: str, caller_name: str | None) -> str:
    name = display_name(caller_name)
    return template.format(name=name) if name else default


def mask_name(caller_name: str | None) -> str | None:
    """`Ivan` -> `I***`: enough to correlate logs, not enough to identify a caller."""
    name = display_name(caller_name)
    return f"{name[0]}***" if name else None
