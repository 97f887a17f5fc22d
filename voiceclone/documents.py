"""Reading ElevenLabs' JSON documents (agents, webhooks, settings) without trusting their shape (pure)."""

from __future__ import annotations

from typing import Any


def dig(document: Any, *keys: str) -> Any:
    """`document[k1][k2]...`, or None where a level is missing or not an object."""
    for key in keys:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document
