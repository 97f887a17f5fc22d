"""ElevenLabs' conversation-initiation webhook (docs/api.md): the request read and the answer built (pure).

ElevenLabs throws an error, and the call fails, when an answer overrides a field the agent does
not allow, so overrides are only ever built from `OverridePermissions` read off the agent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from voiceclone.documents import dig
from voiceclone.naming import ID_PATTERN

from .greeting import display_name, greeting

ANSWER_TYPE = "conversation_initiation_client_data"
SERVICE_VARIABLES = ("caller_name", "precall_voice_id", "precall_conversation_id")


@dataclass(frozen=True)
class InitRequest:
    """What ElevenLabs sends: `{caller_id, agent_id, called_number, call_sid}`; other fields ignored.
    ElevenLabs' SIP trunking guide calls the SIP `X-CALL-ID` value `call_id`, so that is read when
    `call_sid` is absent. Malformed values become None: the call goes on with defaults, never fails here."""

    call_sid: str | None = None
    caller_id: str | None = None
    agent_id: str | None = None


def parse_init_request(body: bytes) -> InitRequest:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return InitRequest()
    if not isinstance(document, dict):
        return InitRequest()
    caller_id = document.get("caller_id")
    return InitRequest(_id(document.get("call_sid")) or _id(document.get("call_id")),
                       caller_id if isinstance(caller_id, str) and caller_id else None, _id(document.get("agent_id")))


def _id(value: Any) -> str | None:
    return value if isinstance(value, str) and ID_PATTERN.fullmatch(value) else None


@dataclass(frozen=True)
class OverridePermissions:
    """Which per-call overrides the agent allows (its Security tab)."""

    first_message: bool = False
    voice: bool = False
    initiation_webhook: bool = False

    @classmethod
    def from_agent(cls, agent: dict[str, Any]) -> OverridePermissions:
        """From `GET /v1/convai/agents/{id}`: `platform_settings.overrides` (SDK 2.78
        `ConversationInitiationClientDataConfigOutput`: `conversation_config_override.agent.first_message`,
        `.tts.voice_id`, `enable_conversation_initiation_client_data_from_webhook`). Absent means not allowed."""
        overrides = dig(agent, "platform_settings", "overrides")
        return cls(
            first_message=dig(overrides, "conversation_config_override", "agent", "first_message") is True,
            voice=dig(overrides, "conversation_config_override", "tts", "voice_id") is True,
            initiation_webhook=dig(overrides, "enable_conversation_initiation_client_data_from_webhook") is True,
        )


@dataclass(frozen=True)
class ClonedVoice:
    """The clone found for this call, wherever it was found."""

    voice_id: str
    conversation_id: str
    caller_name: str | None


def build_answer(clone: ClonedVoice | None, permissions: OverridePermissions | None, defaults: tuple[tuple[str, str], ...],
                 template: str, default_greeting: str) -> dict[str, Any]:
    """The documented answer. `permissions` None means unknown: no override at all. The caller's
    name always travels as the `caller_name` variable, which needs no permission."""
    name = display_name(clone.caller_name) if clone else None
    variables = dict(defaults)
    filled = {"caller_name": name or "", "precall_voice_id": clone.voice_id if clone else "",
              "precall_conversation_id": clone.conversation_id if clone else ""}
    for key, value in filled.items():
        variables[key] = value or variables.get(key, "")
    override: dict[str, Any] = {}
    if permissions is not None and permissions.first_message:
        override["agent"] = {"first_message": greeting(template, default_greeting, name)}
    if permissions is not None and permissions.voice and clone is not None:
        override["tts"] = {"voice_id": clone.voice_id}
    return {"type": ANSWER_TYPE, "dynamic_variables": variables, "conversation_config_override": override}
