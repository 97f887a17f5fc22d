"""What a pre-call produced: the clone, the greeting and whether the agent was updated."""

from __future__ import annotations

from dataclasses import dataclass, field

from .payload import CallerInfo
from .quality import QualityReport


@dataclass(frozen=True)
class CloneOutcome:
    """What a pre-call produced; shared by duplicate webhooks of the same conversation."""

    conversation_id: str
    agent_id: str
    voice_id: str
    voice_name: str
    agent_updated: bool
    first_message: str
    caller: CallerInfo
    reused: bool
    timings: dict[str, int] = field(default_factory=dict)  # per-step milliseconds: lookup, clone, agent update, publish
    quality: QualityReport | None = None  # the sample's measures; None with SAMPLE_QUALITY_GATE=off
