"""`POST /conversation-init`: ElevenLabs' conversation-initiation webhook, the second step (docs/api.md).

The customer's telephony side sent the caller's sample to `/webhook` with the call's `call_sid`;
when the call reaches ElevenLabs, ElevenLabs asks here which voice and greeting to use. The
answer is always `200` within about a second: no clone found, or ElevenLabs slow, means the
default greeting and no voice override, never a failed call.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timezone
from typing import Any

import flask

from voiceclone.clones import Clone, CloneInventory
from voiceclone.config import Settings
from voiceclone.deadline import Deadline
from voiceclone.errors import InvalidSignature, SignatureExpired
from voiceclone.logs import get_logger, log_event

from . import signature
from .agent_overrides import AgentOverrides
from .init_answer import ClonedVoice, InitRequest, build_answer, parse_init_request
from .prepared_clones import PreparedClones

# Time for the whole look-up (clone search and, if not cached, the agent's override settings).
LOOKUP_BUDGET_SECONDS = 0.8
MAX_INIT_BODY_BYTES = 64 * 1024
_log = get_logger("conversation_init")


class ConversationInit:
    def __init__(self, settings: Settings, prepared: PreparedClones, inventory: CloneInventory, overrides: AgentOverrides,
                 caller_ref: Callable[[str | None], str | None], wall_clock: Callable[[], float] = time.time,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self._settings = settings
        self._prepared = prepared
        self._inventory = inventory
        self._overrides = overrides
        self._caller_ref = caller_ref
        self._wall_clock = wall_clock
        self._now = now
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="init-lookup")

    def authenticate(self, request: flask.Request, body: bytes) -> None:
        """The configured header secret (constant time, any of several), or a valid ElevenLabs signature."""
        presented = request.headers.get(self._settings.init_webhook_header, "").encode("utf-8", "replace")
        matched = False
        for secret in self._settings.init_webhook_secrets:
            matched |= hmac.compare_digest(presented, secret.encode("utf-8"))
        if matched and presented:
            return
        if request.headers.get(signature.SIGNATURE_HEADER):
            try:
                signature.verify(body, request.headers.get(signature.SIGNATURE_HEADER), self._settings.webhook_secrets,
                                 self._wall_clock(), self._settings.webhook_tolerance_seconds)
                return
            except (InvalidSignature, SignatureExpired):
                pass
        if not self._settings.init_webhook_secrets:
            raise InvalidSignature("INIT_WEBHOOK_SECRET is not set, so only requests with a valid ElevenLabs-Signature "
                                   "are accepted here; set it and configure the same value as the "
                                   f"{self._settings.init_webhook_header} request header of the webhook in ElevenLabs")
        raise InvalidSignature(f"Missing or wrong {self._settings.init_webhook_header} header (INIT_WEBHOOK_SECRET)")

    def answer(self, body: bytes) -> dict[str, Any]:
        started = time.monotonic()
        call = parse_init_request(body)
        agent_id = call.agent_id or self._settings.default_agent_id
        deadline = Deadline(LOOKUP_BUDGET_SECONDS)
        if agent_id:
            self._overrides.prefetch(agent_id)  # runs beside the clone search, usually a cache hit
        clone, source = self._find_clone(call, deadline)
        permissions = self._overrides.get(agent_id, deadline.remaining()) if agent_id else None
        answer = build_answer(clone, permissions, self._settings.init_dynamic_variables,
                              self._settings.first_message_template, self._settings.first_message_default)
        log_event(_log, logging.INFO, "Conversation initiation answered", "conversation_init",
                  call_sid=call.call_sid, agent_id=agent_id, found=clone is not None, source=source,
                  voice_id=clone.voice_id if clone else None, overrides=sorted(answer["conversation_config_override"]),
                  permissions_known=permissions is not None, lookup_ms=round((time.monotonic() - started) * 1000))
        return answer

    def _find_clone(self, call: InitRequest, deadline: Deadline) -> tuple[ClonedVoice | None, str]:
        """This instance's memory first; else ElevenLabs search, given only what is left of the budget."""
        max_age = self._settings.prepared_clone_max_age_seconds
        reference = self._caller_ref(call.caller_id)
        local = self._prepared.find(call.call_sid, reference, self._now(), max_age)
        if local is not None:
            return ClonedVoice(local.voice_id, local.conversation_id, local.caller_name), "this_instance"
        if call.call_sid is None and reference is None:
            return None, "none"
        future = self._pool.submit(self._search, call.call_sid, reference, deadline)
        try:
            found = future.result(timeout=deadline.remaining())
        except FutureTimeout:
            return None, "elevenlabs_too_slow"
        except Exception as exc:  # noqa: BLE001 - a failed search means no clone, never a failed call
            log_event(_log, logging.WARNING, "Clone search failed during conversation initiation", "conversation_init_search_failed",
                      call_sid=call.call_sid, error_type=type(exc).__name__, reason=getattr(exc, "message", None))
            return None, "elevenlabs_error"
        if found is None:
            return None, "none"
        return ClonedVoice(found.voice_id, found.conversation_id or call.call_sid or "", found.caller_name), "elevenlabs"

    def _search(self, call_sid: str | None, reference: str | None, deadline: Deadline) -> Clone | None:
        now = self._now()
        max_age = self._settings.prepared_clone_max_age_seconds

        def fresh(clones: list[Clone]) -> Clone | None:
            return next((c for c in clones if (c.age_seconds(now) or 0.0) <= max_age), None)

        found = fresh(self._inventory.for_conversation(call_sid, deadline)) if call_sid else None
        if found is None and reference:
            found = fresh(self._inventory.for_caller(reference, deadline))
        return found
