"""Response bodies (docs/api.md) built from outcomes and errors; pure functions."""

from __future__ import annotations

from typing import Any

from voiceclone.config import Settings
from voiceclone.errors import SampleQualityTooLow, ServiceError

from .greeting import display_name
from .outcome import CloneOutcome


def success_body(outcome: CloneOutcome, settings: Settings, processing_time_ms: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": "success",
        "conversation_id": outcome.conversation_id,
        "voice_id": outcome.voice_id,
        "voice_name": outcome.voice_name,
        "agent_updated": outcome.agent_updated,
        "caller_info": outcome.caller.as_response(),
        "processing_time_ms": processing_time_ms,
    }
    if outcome.quality is not None:
        body["quality"] = outcome.quality.as_dict()
    if settings.returns_overrides:
        # ElevenLabs' conversation-initiation fields; the agent must allow these overrides.
        body["type"] = "conversation_initiation_client_data"
        body["dynamic_variables"] = {"caller_name": display_name(outcome.caller.name) or ""}
        body["conversation_config_override"] = {
            "agent": {"first_message": outcome.first_message},
            "tts": {"voice_id": outcome.voice_id},
        }
    return body


def error_body(error: ServiceError, conversation_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": "error",
        "error_code": error.code,
        "error_message": error.message,
        "conversation_id": conversation_id,
    }
    if isinstance(error, SampleQualityTooLow):
        body["reasons"] = list(error.reasons)
        body["quality"] = error.quality
    return body
