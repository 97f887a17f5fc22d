"""Wiring: settings -> client, event sink, service, HTTP app and cleanup handler.

Built once per instance (process). With `VOICE_EVENTS_TOPIC` unset, events go to an
in-process queue whose consumer is the same cleanup handler the Pub/Sub target runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cleanup.handler import CleanupHandler

from .clones import CloneInventory
from .config import Settings, load_settings
from .elevenlabs_client import ElevenLabsClient
from .http_app import WebhookApp
from .logs import configure_logging
from .publisher import EventSink, LocalEventQueue, PubSubPublisher
from .service import PrecallService


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
    cleanup = CleanupHandler(CloneInventory(client, settings.voice_clone_ttl_seconds, now), settings.voice_clone_auto_delete)
    sink: EventSink
    if settings.voice_events_topic:
        sink = PubSubPublisher(settings.voice_events_topic)
    else:
        sink = LocalEventQueue(cleanup.handle)
    service = PrecallService(settings, client, sink, now)
    return Runtime(settings, client, sink, WebhookApp(settings, service, sink), cleanup)


def runtime_from_env(env: Mapping[str, str], target: str | None) -> Runtime:
    """`target` decides which secrets are required: cleanup needs no webhook secret."""
    return build_runtime(load_settings(env, require_webhook_secret=target != "cleanup_voices"))
