"""Lifecycle events in, clone deletions out. Idempotent and safe under at-least-once delivery.

Raising means "redeliver later" (the push endpoint answers 500 and Pub/Sub retries with its
backoff); returning means "acknowledged". Malformed messages and permanent refusals are
acknowledged so they are never retried forever.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from voiceclone import events
from voiceclone.clones import CloneInventory
from voiceclone.config import Settings
from voiceclone.deadline import Deadline, DeadlineExceeded
from voiceclone.elevenlabs_client import ElevenLabsClient, ElevenLabsError
from voiceclone.logs import get_logger, log_event
from voiceclone.readiness import FAILED, OK, UNKNOWN, Finding, assess_postcall_webhook, worst

_log = get_logger("cleanup")
HANDLER_DEADLINE_SECONDS = 50.0  # under a 60 s ack deadline
POSTCALL_CHECK_SECONDS = 10.0


class RetryLater(Exception):
    """The clone must live on for now (its call is still live); Pub/Sub should redeliver."""


class CleanupHandler:
    def __init__(self, inventory: CloneInventory, auto_delete: bool,
                 postcall_webhook: Callable[[Deadline], list[Finding]] | None = None,
                 subscription: Callable[[Deadline], dict[str, Any]] | None = None) -> None:
        self._inventory = inventory
        self._auto_delete = auto_delete
        self._postcall_webhook = postcall_webhook
        self._subscription = subscription

    @classmethod
    def for_settings(cls, settings: Settings, client: ElevenLabsClient) -> CleanupHandler:
        now = lambda: datetime.now(timezone.utc)  # noqa: E731
        return cls(CloneInventory(client, settings.voice_clone_ttl_seconds, now), settings.voice_clone_auto_delete,
                   lambda deadline: read_postcall_webhook(client, settings.default_agent_id, deadline),
                   client.get_subscription)

    def handle_cloud_event(self, cloud_event: Any) -> None:
        """Entry for the CloudEvent target: a Pub/Sub push (or Eventarc) message."""
        try:
            message = (cloud_event.data or {})["message"]
            data = base64.b64decode(message.get("data") or "", validate=True)
        except (KeyError, TypeError, AttributeError, binascii.Error, ValueError):
            log_event(_log, logging.ERROR, "Acknowledging a message that is not a Pub/Sub message",
                      "voice_event_malformed", reason="not a Pub/Sub message")
            return
        self.handle_data(data)

    def handle_data(self, data: bytes) -> None:
        try:
            event = events.decode(data)
        except events.MalformedEvent as exc:
            log_event(_log, logging.ERROR, "Acknowledging a malformed lifecycle message", "voice_event_malformed",
                      reason=str(exc))
            return
        self.handle(event)

    def handle(self, event: dict[str, Any]) -> None:
        if not self._auto_delete:
            log_event(_log, logging.INFO, "VOICE_CLONE_AUTO_DELETE is off; nothing deleted", "voice_cleanup_skipped",
                      lifecycle_event=event["event_type"], conversation_id=event.get("conversation_id"))
            return
        deadline = Deadline(HANDLER_DEADLINE_SECONDS)
        kind = event["event_type"]
        if kind == events.CALL_ENDED:
            self._call_ended(event["conversation_id"], events.related_ids(event), deadline)
        elif kind == events.VOICE_CREATED:
            self._voice_created(event["voice_id"], event["conversation_id"], deadline)
        else:
            self.sweep(deadline, apply=True)

    def _call_ended(self, conversation_id: str, related: list[str], deadline: Deadline) -> None:
        """Delete the clones of the call and of each of its related ids (a clone prepared under the
        call sid before ElevenLabs' conversation id existed goes with the call)."""
        clones = {c.voice_id: c for cid in (conversation_id, *related) for c in self._inventory.for_conversation(cid, deadline)}
        for clone in clones.values():
            self._inventory.delete(clone, deadline, reason="call_ended")
        log_event(_log, logging.INFO, "Call ended; its clones were deleted", "call_ended_processed",
                  conversation_id=conversation_id, related_ids=related, clones=len(clones))

    def _voice_created(self, voice_id: str, conversation_id: str, deadline: Deadline) -> None:
        clone = self._inventory.get(voice_id, deadline)
        if clone is None:
            log_event(_log, logging.INFO, "Clone already gone or not ours", "voice_cleanup_done",
                      voice_id=voice_id, conversation_id=conversation_id)
            return
        if self._inventory.is_expired(clone):
            self._inventory.delete(clone, deadline, reason="ttl")
        elif self._inventory.call_is_over(clone.conversation_id or conversation_id, deadline):
            self._inventory.delete(clone, deadline, reason="call_over")
        else:
            log_event(_log, logging.INFO, "Call still live; clone kept, message will be redelivered",
                      "voice_kept_call_live", voice_id=voice_id, conversation_id=conversation_id)
            raise RetryLater(f"conversation {conversation_id} is still live")

    def sweep(self, deadline: Deadline, apply: bool) -> list[dict[str, Any]]:
        """Every clone of ours older than the TTL; deleted when `apply`. Returns what it found."""
        expired = [c for c in self._inventory.all(deadline) if self._inventory.is_expired(c)]
        for clone in expired:
            if apply:
                self._inventory.delete(clone, deadline, reason="sweep")
        log_event(_log, logging.INFO, "Sweep finished", "sweep_complete", expired=len(expired), applied=apply,
                  postcall_webhook=self._check_postcall_webhook(deadline))
        self._log_voice_slots(deadline)
        return [{"voice_id": c.voice_id, "voice_name": c.name, "conversation_id": c.conversation_id,
                 "created_at": c.created_at.isoformat() if c.created_at else None} for c in expired]

    def _check_postcall_webhook(self, deadline: Deadline) -> str | None:
        """`doctor`'s post-call webhook check, every sweep: without that webhook no clone is deleted before its
        TTL, so a failure is logged at ERROR (`postcall_webhook_unhealthy`) for an alert. Never fails the sweep."""
        if self._postcall_webhook is None:
            return None
        try:
            findings = self._postcall_webhook(Deadline(min(POSTCALL_CHECK_SECONDS, deadline.remaining())))
        except (ElevenLabsError, DeadlineExceeded) as exc:
            log_event(_log, logging.WARNING, "Could not check the post-call webhook", "postcall_webhook_unknown",
                      reason=getattr(exc, "message", None) or type(exc).__name__)
            return UNKNOWN
        failed = [f for f in findings if f.status == FAILED]
        if failed:
            log_event(_log, logging.ERROR, "Post-call webhook unhealthy: clones are deleted only after their TTL",
                      "postcall_webhook_unhealthy", problems=[f"{f.name}: {f.detail}" for f in failed], fix=failed[0].fix)
        elif worst(findings) != OK:
            log_event(_log, logging.WARNING, "Post-call webhook needs attention", "postcall_webhook_warning",
                      problems=[f"{f.name}: {f.detail}" for f in findings if f.status != OK])
        return worst(findings)


    def _log_voice_slots(self, deadline: Deadline) -> None:
        """The account's voice slots, every sweep (`voice_slots`, for the slot-usage metric and alert).
        `GET /v1/user/subscription` `voice_slots_used` / `voice_limit` (SDK 2.78 types/subscription_response.py)."""
        if self._subscription is None:
            return
        try:
            subscription = self._subscription(Deadline(min(POSTCALL_CHECK_SECONDS, deadline.remaining())))
        except (ElevenLabsError, DeadlineExceeded) as exc:
            log_event(_log, logging.WARNING, "Could not read the account's voice slots", "voice_slots_unknown",
                      reason=getattr(exc, "message", None) or type(exc).__name__)
            return
        used, limit = subscription.get("voice_slots_used"), subscription.get("voice_limit")
        if isinstance(used, int) and isinstance(limit, int):
            log_event(_log, logging.INFO, "Voice slots in the account", "voice_slots", voice_slots_used=used,
                      voice_limit=limit, voice_slots_free=limit - used)


def read_postcall_webhook(client: ElevenLabsClient, agent_id: str | None, deadline: Deadline) -> list[Finding]:
    """What the check reads: `GET /v1/convai/settings`, `GET /v1/workspace/webhooks` and, for its own
    `workspace_overrides`, the agent (`ELEVENLABS_AGENT_ID`; unreadable means the workspace's settings apply)."""
    agent: dict[str, Any] | None = None
    if agent_id:
        with contextlib.suppress(ElevenLabsError):
            agent = client.get_agent(agent_id, deadline)
    convai_settings = client.get_convai_settings(deadline)
    try:
        webhooks = client.list_workspace_webhooks(deadline)
    except ElevenLabsError:
        # No post-call webhook selected at all is a failure whatever the workspace's webhooks are.
        findings = assess_postcall_webhook(convai_settings, agent, None)
        if worst(findings) == FAILED:
            return findings
        raise
    return assess_postcall_webhook(convai_settings, agent, webhooks)
