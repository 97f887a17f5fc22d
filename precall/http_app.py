"""HTTP routing for the `precall_webhook` target: `/webhook`, `/conversation-init`, `/post-call`, `/healthz`.

Order of checks on a webhook: body size (before reading it whole), signature over the raw
bytes, parsing, audio validation, then the ElevenLabs calls. Every failure becomes the JSON
error body of docs/api.md.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import flask
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from voiceclone import events
from voiceclone.config import Settings
from voiceclone.errors import (
    InternalError,
    InvalidPayload,
    InvalidSignature,
    MethodNotAllowed,
    RequestTimeout,
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
from .payload import PrecallRequest, parse_request, peek_conversation_id
from .postcall import parse_post_call
from .responses import error_body, success_body
from .service import PrecallService
from .streamed_body import read_signed_json

HEALTHZ_WARM_UP_WAIT_SECONDS = 0.8
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
        self._warm = threading.Event()

    def warm_up(self) -> None:
        """Get ready for the first call once per process, in the background (after gunicorn's fork:
        a thread, socket or gRPC channel of the parent would not serve the worker): the Pub/Sub
        client and channel, and the default agent's override settings (which also opens a pooled
        connection to ElevenLabs). `/healthz` answers once the Pub/Sub side is ready."""
        if self._warm_pid != os.getpid():
            self._warm_pid = os.getpid()
            self._warm = threading.Event()
            log_event(_log, logging.INFO, "Worker ready", "service_started", agent_update_mode=self._settings.agent_update_mode,
                      events=self._sink.kind, threads=os.environ.get("THREADS"), pid=self._warm_pid)
            threading.Thread(target=self._warm_up_sink, name="warm-up", daemon=True).start()
            if self._settings.default_agent_id:
                self._overrides.prefetch(self._settings.default_agent_id)

    def prepare_worker(self) -> None:
        """`warm_up`, plus the pre-call's side threads started ahead of a burst: for the process a
        server forked to serve calls (not for every instance a test or a CLI builds)."""
        self.warm_up()
        self._service.warm_up()

    def _warm_up_sink(self) -> None:
        try:
            self._sink.warm_up()
        finally:
            self._warm.set()

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
                response = self._error(MethodNotAllowed(f"{request.method} is not allowed on {path}"), path, None)
                response.headers["Allow"] = ", ".join(allowed)
                return response
            if path == "/healthz":
                # A startup probe learns the worker is ready once its Pub/Sub client is: the first call
                # then finds it warm (importing and connecting it takes ~250 ms). Bounded, within the
                # deployed probe's 1 s timeout: an unreachable Pub/Sub delays the answer, never withholds it.
                self._warm.wait(HEALTHZ_WARM_UP_WAIT_SECONDS)
                return _json_response({"status": "ok", "agent_update_mode": self._settings.agent_update_mode,
                                       "events": self._sink.kind}, 200)
            if path == "/post-call":
                return self._post_call(request)
            if path == "/conversation-init":
                return self._init(request)
            return self._precall(request, conversation)
        except ServiceError as error:
            return self._error(error, path, conversation["id"])
        except Exception as exc:  # noqa: BLE001 - last resort: a JSON 500, the type logged, no details leaked
            log_event(_log, logging.ERROR, "Unexpected error", "internal_error", path=path,
                      conversation_id=conversation["id"], error_type=type(exc).__name__)
            return self._error(InternalError("Internal error"), path, conversation["id"])

    def _error(self, error: ServiceError, path: str, conversation_id: str | None) -> flask.Response:
        """Every error answer is one `webhook_error` line (error rates by code), then its JSON body; a
        refused signature or header secret, on any route, is also one `signature_rejected` line."""
        if isinstance(error, (InvalidSignature, SignatureExpired)):
            log_event(_log, logging.WARNING, "Webhook signature rejected", "signature_rejected", path=path,
                      reason=error.code)
        log_event(_log, logging.ERROR if error.http_status >= 500 else logging.WARNING, "Webhook answered with an error",
                  "webhook_error", path=path, error_code=error.code, http_status=error.http_status,
                  conversation_id=conversation_id)
        if isinstance(error, SampleTooLarge) or isinstance(error.__cause__, _BodyUnread):
            return _unread_body_response(error_body(error, conversation_id), error.http_status)
        return _json_response(error_body(error, conversation_id), error.http_status)

    def _precall(self, request: flask.Request, conversation: dict[str, str | None]) -> flask.Response:
        started = time.monotonic()
        parsed = self._parse_signed(request, conversation)
        conversation["id"] = parsed.conversation_id
        outcome = self._service.handle(parsed, started)
        elapsed_ms = round((time.monotonic() - started) * 1000)
        log_event(_log, logging.INFO, "Pre-call webhook processed", "webhook_complete",
                  conversation_id=parsed.conversation_id, voice_id=outcome.voice_id, agent_updated=outcome.agent_updated,
                  reused=outcome.reused, caller_name=mask_name(parsed.caller.name), processing_time_ms=elapsed_ms,
                  **outcome.timings)
        return _json_response(success_body(outcome, self._settings, elapsed_ms), 200)

    def _parse_signed(self, request: flask.Request, conversation: dict[str, str | None]) -> PrecallRequest:
        """The verified, parsed request. The body is hashed piece by piece as it is received (13 MB
        cost 7.5 ms of HMAC after the read; now it overlaps with the sender), and the raw body lives
        only in here: it is freed as soon as its sample is decoded."""
        try:
            verifier = signature.StreamingVerifier(request.headers.get(signature.SIGNATURE_HEADER),
                                                   self._settings.webhook_secrets, self._wall_clock(),
                                                   self._settings.webhook_tolerance_seconds)
        except ServiceError:
            # A refused header is answered only after the body is read: answering while the client is
            # still sending makes its kernel see a reset instead of the 401.
            _read_body(request, self._settings.max_body_bytes)
            raise
        body = _read_body(request, self._settings.max_body_bytes, verifier.update)
        verifier.finish()
        content_type = request.headers.get("Content-Type")
        try:
            return parse_request(body, content_type, self._settings.default_agent_id, self._settings.max_sample_bytes)
        except ServiceError:
            # Only a failed parse needs the best-effort id (a regex over the body): not the hot path.
            conversation["id"] = peek_conversation_id(body, content_type)
            raise

    def _init(self, request: flask.Request) -> flask.Response:
        body = _read_body(request, MAX_INIT_BODY_BYTES)
        self._conversation_init.authenticate(request, body)
        return _json_response(self._conversation_init.answer(body), 200)

    def _post_call(self, request: flask.Request) -> flask.Response:
        """Any size is read (post_call_audio carries the whole call, chunked): the signature is computed
        while the body streams and only its skeleton is kept, so memory stays flat (docs/api.md). A 413
        would count towards ElevenLabs disabling the webhook."""
        with _body_read_errors():
            signed = read_signed_json(request.stream, request.headers.get(signature.SIGNATURE_HEADER),
                                      self._settings.webhook_secrets, self._wall_clock(), self._settings.webhook_tolerance_seconds)
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


def _read_body(request: flask.Request, limit: int, feed: Callable[[memoryview], None] | None = None) -> bytes | bytearray:
    """The raw body, refused with 413 as soon as it is known to exceed `limit`; never kept on the
    request, so it is freed with its last reference. `feed` sees each piece as it arrives.

    A body of declared length (checked before reading) is received into one buffer of that size
    with `readinto`, which `serving` gives gunicorn's body: no copy between the socket and the
    buffer. A chunked body is read at most one byte past the limit (werkzeug stops there
    silently, so the extra byte is the tell).
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise SampleTooLarge(f"Request body is larger than {limit} bytes")
    request.max_content_length = limit + 1
    with _body_read_errors():
        if declared is not None:
            return _receive_exactly(request.stream, declared, feed)
        try:
            body = request.get_data(cache=False)
        except RequestEntityTooLarge:
            raise SampleTooLarge(f"Request body is larger than {limit} bytes") from None
    if len(body) > limit:
        raise SampleTooLarge(f"Request body is larger than {limit} bytes")
    if feed is not None:
        feed(memoryview(body))
    return body


def _receive_exactly(stream: Any, length: int, feed: Callable[[memoryview], None] | None) -> bytearray:
    """`length` bytes received into one buffer, each piece shown to `feed` as it lands; a body that
    ends early is a `400`, its rest unread."""
    buffer = bytearray(length)
    view = memoryview(buffer)
    received = 0
    while received < length:
        count = stream.readinto(view[received:])
        if not count:
            raise InvalidPayload("The request body ended before its declared length") from _BodyUnread()
        if feed is not None:
            feed(view[received:received + count])
        received += count
    return buffer


class _BodyUnread(Exception):
    """Marks a failure met while the request body was still (partly) unread: its answer must not
    make anyone read the rest (see `_unread_body_response`)."""


@contextmanager
def _body_read_errors() -> Iterator[None]:
    """A body that ends early, stalls or is badly framed is the client's fault: `400`/`408`, never a `500`."""
    try:
        yield
    except ServiceError:
        raise  # ours: a signature, size or payload verdict, already the right answer
    except ClientDisconnected:
        raise InvalidPayload("The request body ended before its declared length") from _BodyUnread()
    except TimeoutError:
        raise RequestTimeout("The client stopped sending its request body") from _BodyUnread()
    except Exception:  # noqa: BLE001 - only body reads run here: gunicorn's framing errors and the like
        raise InvalidPayload("Malformed request body framing") from _BodyUnread()


def _unread_body_response(body: dict[str, Any], status: int) -> flask.Response:
    """An answer that leaves the rest of the request body unread (docs/design.md, hostile traffic). Streamed, because
    functions-framework's after-request hook reads the whole body of any other response into
    memory (200 MiB declared: 200 MiB read); gunicorn then drains at most 5 s of it, discarding,
    before it closes the connection."""
    return flask.Response(iter([json.dumps(body, ensure_ascii=False)]), status=status, mimetype="application/json")


def _json_response(body: dict[str, Any], status: int) -> flask.Response:
    return flask.Response(json.dumps(body, ensure_ascii=False), status=status, mimetype="application/json")
