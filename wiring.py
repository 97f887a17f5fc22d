"""Wiring, the one place that builds an instance: settings -> client, event sink, webhook app (with the
telephony front when TWILIO_ACCOUNT_SID is set), cleanup.

Used by both targets in `main.py` and by the operator CLIs. Built once per instance (process).
With `VOICE_EVENTS_TOPIC` unset, events go to the durable local queue at `LOCAL_QUEUE_PATH`, whose
consumer is the same cleanup handler the Pub/Sub target runs (see docs/local-queue.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cleanup.handler import CleanupHandler
from precall.agent_overrides import AgentOverrides
from precall.conversation_init import ConversationInit
from precall.http_app import WebhookApp
from precall.service import PrecallService
from telephony.app import TwilioApp
from telephony.connect import Connector
from telephony.recording import RecordingStep
from telephony.twilio_client import TwilioClient
from telephony.twiml import Prompts
from voiceclone.config import Settings, load_settings
from voiceclone.elevenlabs_client import ElevenLabsClient
from voiceclone.local_queue import open_store
from voiceclone.logs import configure_logging
from voiceclone.sinks import EventSink, LocalEventQueue, PubSubPublisher


@dataclass
class Runtime:
    settings: Settings
    client: ElevenLabsClient
    sink: EventSink
    webhook: WebhookApp
    cleanup: CleanupHandler


def build_runtime(settings: Settings, log_stream: Any = None) -> Runtime:
    configure_logging(settings.log_level, log_stream)
    client = ElevenLabsClient(settings.elevenlabs_base_url, settings.elevenlabs_api_key)
    now = lambda: datetime.now(timezone.utc)  # noqa: E731
    cleanup = CleanupHandler.for_settings(settings, client)
    sink: EventSink
    if settings.voice_events_topic:
        sink = PubSubPublisher(settings.voice_events_topic)
    else:
        sink = LocalEventQueue(open_store(settings.local_queue_path), cleanup.handle_data)
    service = PrecallService(settings, client, sink, now)
    overrides = AgentOverrides(client)
    init = ConversationInit(settings, service.prepared, service.inventory, overrides, service.caller_ref, now=now)
    telephony = build_telephony(settings, client, sink, service, overrides, init, now) if settings.telephony_enabled else None
    return Runtime(settings, client, sink, WebhookApp(settings, service, sink, init, overrides, telephony), cleanup)


def build_telephony(settings: Settings, client: ElevenLabsClient, sink: EventSink, service: PrecallService,
                    overrides: AgentOverrides, init: ConversationInit, now: Callable[[], datetime]) -> TwilioApp:
    """The Twilio front on top of the pre-call service, its override cache and event sink (no copies)."""
    assert settings.twilio_account_sid is not None
    prompts = Prompts(settings.twilio_language, settings.twilio_prompt_consent, settings.twilio_prompt_record,
                      settings.twilio_prompt_retry, settings.twilio_prompt_hold, settings.twilio_record_seconds,
                      settings.twilio_hold_seconds, settings.twilio_hold_audio_url)
    twilio = TwilioClient(settings.twilio_api_base_url, settings.twilio_account_sid, settings.twilio_auth_tokens[0])
    connector = Connector(settings, client, overrides, init)
    return TwilioApp(settings, sink, connector, RecordingStep(settings, service, twilio, connector, prompts, sink, now), prompts, now)


def runtime_from_env(env: Mapping[str, str], target: str | None) -> Runtime:
    """`target` decides which secrets are required: cleanup needs no webhook secret."""
    return build_runtime(load_settings(env, require_webhook_secret=target != "cleanup_voices"))

