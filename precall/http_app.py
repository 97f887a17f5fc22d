"""HTTP routing for the `precall_webhook` target: `/webhook`, `/conversation-init`, `/post-call`, `/healthz`.

Order of checks on a webhook: body size (before reading it whole), signature over the raw
bytes, parsing, audio validation, then the ElevenLabs calls. Every failure becomes the JSON
error body of SPEC 4.5.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import flask
from werkzeug.exceptions import RequestEntityTooLarge

from voiceclone import events
from voiceclone.config import Settings
from voiceclone.errors import (
    InternalError,
    InvalidSignature,
    MethodNotAllowed,
    RouteNotFound,
    SampleTooLarge,
    ServiceError,
    SignatureExpired,
)
from voiceclone.logs import get_logger, log_event, set_trace
from voiceclone.sinks import EventSink

from . import signature
from .agent_overrides import AgentOverrides
from .conversation_init import MAX_INIT_BODY_BYTES, ConversationInit
from .greeting import mask_name
from .payload import parse_request, peek_conversation_id
from .postcall import parse_post_call
from .responses import error_body, success_body
from .service import PrecallService
from .streamed_body import read_signed_json

_ROUTES = {"/webhook": ("POST",), "/conversation-init": ("POST",), "/post-call": ("POST",), "/healthz": ("GET", "HEAD")}
_log = get_logger("http")


class WebhookApp:
    def __init__(
        self,
        settings: Settings,
        service: PrecallService,
        sink: EventSink,
        conversation_init: ConversationInit,
        overrides: AgentOverrides,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._service = service
        self._sink = sink
        self._conversation_init = conversation_init
        self._overrides = overrides
        self._wall_clock = wall_clock
        self._warm_pid: int | None = None

    def warm_up(self) -> None:
        """Read the default agent's override settings ahead of the first call, once per process
        (after gunicorn's fork: a thread or socket of the parent would not serve the worker)."""
        if self._warm_pid != os.getpid():
            self._warm_pid = os.getpid()
            if self._settings.default_agent_id:
                self._overrides.prefetch(self._settings.default_agent_id)

    def __call__(self, request: flask.Request) -> flask.Response:
        self.warm_up()
        set_trace(request.headers.get("X-Cloud-Trace-Context"), self._settings.google_cloud_project)
        path = request.path.rstrip("/") or "/"
        conversation: dict[str, str | None] = {"id": None}
        try:
            allowed = _ROUTES.get(path)
            if allowed is None:
                raise RouteNotFound(f"No route for {path}")
            if request.method not in allowed:
                response = _json_response(error_body(MethodNotAllowed(f"{request.method} is not allowed on {path}"), None), 405)
                response.headers["Allow"] = ", ".join(allowed)
                return response
            if path == "/healthz":
                return _json_response({"status": "ok", "agent_update_mode": self._settings.agent_update_mode,
                                       "events": self._sink.kind}, 200)
            if path == "/post-call":
                return self._post_call(request)
            if path == "/conversation-init":
                return self._init(request)
            return self._precall(request, conversation)
        except ServiceError as error:
            return _json_response(error_body(error, conversation["id"]), error.http_status)
        except Exception as exc:  # noqa: BLE001 - last resort: a JSON 500, the type logged, no details leaked
            log_event(_log, logging.ERROR, "Unexpected error", "internal_error", path=path,
                      conversation_id=conversation["id"], error_type=type(exc).__name__)
            return _json_response(error_body(InternalError("Internal error"), conversation["id"]), 500)

    def _precall(self, request: flask.Request, conversation: dict[str, str | None]) -> flask.Response:
        started = time.monotonic()
        body = _read_body(request, self._settings.max_body_bytes)
        self._verify(request, body, "/webhook")
        content_type = request.headers.get("Content-Type")
        try:
            parsed = parse_request(body, content_type, self._settings.default_agent_id, self._settings.max_sample_bytes)
        except ServiceError:
            # Only a failed parse needs the best-effort id (a regex over the body): not the hot path.
            conversation["id"] = peek_conversation_id(body, content_type)
            raise
        conversation["id"] = parsed.conversation_id
        outcome = self._service.handle(parsed, started)
        elapsed_ms = round((time.monotonic() - started) * 1000)
        log_event(_log, logging.INFO, "Pre-call webhook processed", "webhook_complete",
                  conversation_id=parsed.conversation_id, voice_id=outcome.voice_id, agent_updated=outcome.agent_updated,
                  reused=outcome.reused, caller_name=mask_name(parsed.caller.name), processing_time_ms=elapsed_ms)
        return _json_response(success_body(outcome, self._settings, elapsed_ms), 200)

    def _init(self, request: flask.Request) -> flask.Response:
        body = _read_body(request, MAX_INIT_BODY_BYTES)
        try:
            self._conversation_init.authenticate(request, body)
        except InvalidSignature as error:
            log_event(_log, logging.WARNING, "Conversation initiation webhook rejected", "signature_rejected",
                      path="/conversation-init", reason=error.code)
            raise
        return _json_response(self._conversation_init.answer(body), 200)

    def _post_call(self, request: flask.Request) -> flask.Response:
        """Any size is read (post_call_audio carries the whole call, chunked): the signature is computed
        while the body streams and only its skeleton is kept, so memory stays flat (SPEC 5). A 413
        would count towards ElevenLabs disabling the webhook."""
        try:
            signed = read_signed_json(request.stream, request.headers.get(signature.SIGNATURE_HEADER),
                                      self._settings.webhook_secrets, self._wall_clock(), self._settings.webhook_tolerance_seconds)
        except (InvalidSignature, SignatureExpired) as error:
            log_event(_log, logging.WARNING, "Webhook signature rejected", "signature_rejected", path="/post-call",
                      reason=error.code)
            raise
        if signed.overflowed:
            log_event(_log, logging.ERROR, "Post-call event too large to read; its clones wait for the TTL",
                      "post_call_unreadable", body_bytes=signed.body_bytes)
            return _json_response({"status": "ignored"}, 200)
        event = parse_post_call(signed.skeleton)
        if event is None:
            return _json_response({"status": "ignored"}, 200)
        published = self._sink.publish(events.call_ended(event.conversation_id, event.agent_id, datetime.now(timezone.utc),
                                                         event.related_ids))
        log_event(_log, logging.INFO, "Post-call webhook received", "post_call_received",
                  conversation_id=event.conversation_id, agent_id=event.agent_id, webhook_type=event.event_type,
                  related_ids=list(event.related_ids), published=published)
        return _json_response({"status": "accepted", "conversation_id": event.conversation_id}, 200)

    def _verify(self, request: flask.Request, body: bytes, path: str) -> None:
        try:
            signature.verify(body, request.headers.get(signature.SIGNATURE_HEADER), self._settings.webhook_secrets,
                             self._wall_clock(), self._settings.webhook_tolerance_seconds)
        except (InvalidSignature, SignatureExpired) as error:
            log_event(_log, logging.WARNING, "Webhook signature rejected", "signature_rejected",
                      path=path, reason=error.code)
            raise


def _read_body(request: flask.Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it is known to exceed `limit`.

    A declared Content-Length is checked before reading; a chunked body is read at most one
    byte past the limit (werkzeug stops there silently, so the extra byte is the tell).
    """
    if request.content_length is not None and request.content_length > limit:
        raise SampleTooLarge(f"Request body is larger than {limit} bytes")
    request.max_content_length = limit + 1
    try:
        body = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise SampleTooLarge(f"Request body is larger than {limit} bytes") from None
    if len(body) > limit:
        raise SampleTooLarge(f"Request body is larger than {limit} bytes")
    return body


def _json_response(body: dict[str, Any], status: int) -> flask.Response:
    return flask.Response(json.dumps(body, ensure_ascii=False), status=status, mimetype="application/json")
