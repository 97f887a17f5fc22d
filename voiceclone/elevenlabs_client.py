"""The ElevenLabs REST calls this service makes, over one pooled `requests.Session`.

Retry policy: 429, 5xx and connection errors/timeouts are retried with exponential backoff
and full jitter, honouring `Retry-After`, for as long as the caller's `Deadline` allows; any
other 4xx is final at once. A POST that may have reached ElevenLabs before failing is only
retried after `already_done` (an idempotency probe) finds no trace of it.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from .deadline import Deadline, DeadlineExceeded
from .logs import get_logger, log_event
from .multipart import MultipartBody

UPLOAD_BLOCK_BYTES = 1024 * 1024
USER_AGENT = "precall-voice-clone/1.0"
_log = get_logger("elevenlabs")


@dataclass(frozen=True)
class NewVoice:
    voice_id: str
    requires_verification: bool
    # Not from an add answer: an earlier attempt's voice, found by the idempotency probe (`already_done`).
    # Whose attempt it was (this call's own, whose answer was lost, or another request's) only the caller can tell.
    found_by_probe: bool = False


class ElevenLabsError(Exception):
    """ElevenLabs answered with an error (or could not be reached after all retries).

    `codes` holds both the current `detail.code` and the legacy `detail.status`: they can differ
    (no cloning on the plan: `paid_plan_required` / `can_not_use_instant_voice_cloning`), so a
    known condition is recognised by `has()`. Only the HTTP status decides retries.
    """

    def __init__(self, status: int | None, code: str | None, message: str, codes: frozenset[str] = frozenset()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.codes = codes | ({code} if code else set())

    def has(self, *codes: str) -> bool:
        return not self.codes.isdisjoint(codes)

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500

    @property
    def means_not_found(self) -> bool:
        """A missing voice/conversation: `404`, or `400 voice_not_found` as some endpoints answer."""
        return self.status == 404 or (self.status == 400 and self.has(*NOT_FOUND_CODES))


NOT_FOUND_CODES = ("voice_not_found", "voice_does_not_exist", "conversation_not_found", "not_found")


def error_from_response(response: requests.Response) -> ElevenLabsError:
    """Turn ElevenLabs' error body into one readable line and its codes.

    API errors: `{"detail": {"type", "code", "message", "status"}}` (`status` is the legacy
    field; older bodies carry only `status` and `message`). Validation errors (FastAPI):
    `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`.
    """
    code: str | None = None
    codes: set[str] = set()
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, dict):
        codes = {detail[k] for k in ("code", "status") if isinstance(detail.get(k), str) and detail[k]}
        code = next((detail[k] for k in ("code", "status") if isinstance(detail.get(k), str) and detail[k]), None)
        message = str(detail.get("message") or code or "")
    elif isinstance(detail, list):
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg", "invalid")))
        message = "; ".join(parts)
        code = "validation_error"
    elif isinstance(detail, str):
        message = detail
    else:
        message = response.text[:200].strip()
    return ElevenLabsError(response.status_code, code, message or f"HTTP {response.status_code}", frozenset(codes))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class ElevenLabsClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_base: float = 0.25,
        backoff_cap: float = 4.0,
        pool_size: int = 512,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._jitter = jitter
        self._session = requests.Session()
        # Retries are ours (deadline-aware); urllib3's own are off.
        adapter = _LargeBlockAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update({"xi-api-key": api_key, "User-Agent": USER_AGENT, "Accept": "application/json"})
        _read_environment_once(self._session, self.base_url)

    # -- the endpoints -------------------------------------------------------------------

    def add_voice(
        self,
        *,
        name: str,
        sample: bytes,
        filename: str,
        mime_type: str,
        description: str,
        labels: dict[str, str],
        remove_background_noise: bool,
        deadline: Deadline,
        already_done: Callable[[], str | None] | None = None,
    ) -> NewVoice:
        """`POST /v1/voices/add` (Instant Voice Clone): the new voice id and whether ElevenLabs
        holds it for verification (`requires_verification`: the sample matched a protected voice)."""
        form = {
            "name": name,
            "description": description,
            "labels": json.dumps(labels),
            "remove_background_noise": "true" if remove_background_noise else "false",
        }
        upload = MultipartBody(form, "files", filename, mime_type, sample)  # streams the sample, no copy
        try:
            response = self._request(
                "POST", "/v1/voices/add", deadline,
                data=upload, headers={"Content-Type": upload.content_type},
                already_done=already_done,
            )
        except _FoundExisting as existing:
            return NewVoice(existing.voice_id, requires_verification=False, found_by_probe=True)
        body = _json(response)
        voice_id = body.get("voice_id")
        if not isinstance(voice_id, str) or not voice_id:
            raise ElevenLabsError(response.status_code, "invalid_response", "ElevenLabs returned no voice_id")
        return NewVoice(voice_id, requires_verification=body.get("requires_verification") is True)

    def update_agent(self, agent_id: str, *, first_message: str, voice_id: str, deadline: Deadline) -> None:
        """`PATCH /v1/convai/agents/{id}`: greeting and TTS voice (`conversation_config.tts.voice_id`)."""
        body = {"conversation_config": {"agent": {"first_message": first_message}, "tts": {"voice_id": voice_id}}}
        self._request("PATCH", f"/v1/convai/agents/{agent_id}", deadline, json=body)

    def register_twilio_call(self, *, agent_id: str, from_number: str, to_number: str,
                             initiation_data: dict[str, Any], deadline: Deadline) -> str:
        """`POST /v1/convai/twilio/register-call`: the TwiML that connects a Twilio call to the agent.
        JSON `agent_id`, `from_number`, `to_number`, `direction`, `conversation_initiation_client_data`
        (SDK 2.78 elevenlabs/conversational_ai/twilio/raw_client.py `register_call`;
        https://elevenlabs.io/docs/agents-platform/phone-numbers/twilio-integration/register-call).
        The answer is TwiML as text: the SDK returns `_response.text`, although the published OpenAPI
        schema says JSON. Retried like any call: a registration that is never connected costs nothing."""
        body = {"agent_id": agent_id, "from_number": from_number, "to_number": to_number, "direction": "inbound",
                "conversation_initiation_client_data": initiation_data}
        response = self._request("POST", "/v1/convai/twilio/register-call", deadline, json=body,
                                 headers={"Accept": "text/xml, text/html, application/xml"})
        twiml = response.text
        if "<Response" not in twiml:
            raise ElevenLabsError(response.status_code, "invalid_response", "register-call answered no TwiML")
        return twiml

    def get_agent(self, agent_id: str, deadline: Deadline) -> dict[str, Any]:
        """`GET /v1/convai/agents/{id}`: the agent's configuration and platform settings."""
        return _json(self._request("GET", f"/v1/convai/agents/{agent_id}", deadline))

    def get_voice(self, voice_id: str, deadline: Deadline) -> dict[str, Any] | None:
        """`GET /v1/voices/{id}`; None when the voice does not exist."""
        try:
            return _json(self._request("GET", f"/v1/voices/{voice_id}", deadline))
        except ElevenLabsError as exc:
            if exc.means_not_found:
                return None
            raise

    def iter_voices(self, deadline: Deadline, *, search: str | None = None, category: str | None = "cloned") -> Iterator[dict[str, Any]]:
        """Every voice from `GET /v2/voices` (paged by `next_page_token`)."""
        token: str | None = None
        while True:
            params: dict[str, Any] = {"page_size": 100, "include_total_count": "false"}
            if search:
                params["search"] = search
            if category:
                params["category"] = category
            if token:
                params["next_page_token"] = token
            page = _json(self._request("GET", "/v2/voices", deadline, params=params))
            yield from (v for v in page.get("voices") or [] if isinstance(v, dict))
            token = page.get("next_page_token")
            if not page.get("has_more") or not token:
                return

    def delete_voice(self, voice_id: str, deadline: Deadline) -> bool:
        """`DELETE /v1/voices/{id}`; False when it was already gone (404 or 400 voice_not_found)."""
        try:
            self._request("DELETE", f"/v1/voices/{voice_id}", deadline)
        except ElevenLabsError as exc:
            if exc.means_not_found:
                return False
            raise
        return True

    def get_conversation_status(self, conversation_id: str, deadline: Deadline) -> str | None:
        """`GET /v1/convai/conversations/{id}` status; None when ElevenLabs does not know it (yet)."""
        try:
            status = _json(self._request("GET", f"/v1/convai/conversations/{quote(conversation_id, safe='')}",
                                         deadline)).get("status")
        except ElevenLabsError as exc:
            if exc.means_not_found:
                return None
            raise
        return status if isinstance(status, str) else None

    # -- what `doctor` and the sweep read (no side effects) -------------------------------

    def get_subscription(self, deadline: Deadline) -> dict[str, Any]:
        """`GET /v1/user/subscription` (needs `user_read`): voice slots, cloning, add/edit counter.
        SDK 2.78 elevenlabs/user/subscription/raw_client.py, types/subscription_response.py;
        https://elevenlabs.io/docs/api-reference/user/subscription/get"""
        return _json(self._request("GET", "/v1/user/subscription", deadline))

    def get_convai_settings(self, deadline: Deadline) -> dict[str, Any]:
        """`GET /v1/convai/settings`: the workspace's post-call (`webhooks`) and initiation webhooks.
        SDK 2.78 elevenlabs/conversational_ai/settings/raw_client.py, types/get_conv_ai_settings_response_model.py;
        https://elevenlabs.io/docs/api-reference/workspace/get"""
        return _json(self._request("GET", "/v1/convai/settings", deadline))

    def list_workspace_webhooks(self, deadline: Deadline) -> list[dict[str, Any]]:
        """`GET /v1/workspace/webhooks` (`webhooks`: URL, `is_disabled`, `is_auto_disabled`, last failure).
        SDK 2.78 elevenlabs/webhooks/raw_client.py `list`, types/workspace_webhook_response_model.py."""
        hooks = _json(self._request("GET", "/v1/workspace/webhooks", deadline)).get("webhooks")
        return [h for h in hooks if isinstance(h, dict)] if isinstance(hooks, list) else []

    # -- the retry loop ------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        deadline: Deadline,
        already_done: Callable[[], str | None] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        url = self.base_url + path
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline.check()
            timeout = (min(self._connect_timeout, remaining), min(self._read_timeout, remaining))
            retry_after: float | None = None
            if hasattr(kwargs.get("data"), "seek"):
                kwargs["data"].seek(0)  # a streamed body is sent again from its start
            started = time.monotonic()
            try:
                response = self._session.request(method, url, timeout=timeout, **kwargs)
            except requests.Timeout:
                _log_call(method, path, None, started, attempt)
                if deadline.remaining() <= 0:
                    raise DeadlineExceeded(f"{method} {path} timed out at the deadline") from None
                failure = ElevenLabsError(None, "timeout", f"{method} {path} timed out")
            except requests.ConnectionError:
                _log_call(method, path, None, started, attempt)
                failure = ElevenLabsError(None, "connection_error", f"could not reach ElevenLabs for {method} {path}")
            else:
                _log_call(method, path, response.status_code, started, attempt)
                if response.status_code < 400:
                    return response
                failure = error_from_response(response)
                if not failure.retryable:
                    raise failure
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if attempt >= self._max_attempts:
                raise failure
            delay = self._backoff(attempt, retry_after)
            if delay >= deadline.remaining():
                raise DeadlineExceeded(f"{method} {path}: no time left to retry after {failure.message}")
            self._sleep(delay)
            if already_done is not None:
                found = already_done()
                if found:
                    raise _FoundExisting(found)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff, never shorter than the server's Retry-After."""
        ceiling = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
        delay = ceiling * self._jitter()
        return max(delay, retry_after) if retry_after is not None else delay


_ID_SEGMENT = re.compile(r"^(/v1/(?:voices|convai/agents|convai/conversations))/(?!add$)[^/]+")


def _log_call(method: str, path: str, status: int | None, started: float, attempt: int) -> None:
    """One `elevenlabs_call` line per attempt: API response times and statuses by endpoint, ids left out."""
    log_event(_log, logging.INFO, "ElevenLabs request", "elevenlabs_call", method=method,
              endpoint=_ID_SEGMENT.sub(r"\1/{id}", path), status=status,
              duration_ms=round((time.monotonic() - started) * 1000, 1), attempt=attempt)


class _FoundExisting(Exception):
    """The idempotency probe found the result of an earlier attempt."""

    def __init__(self, voice_id: str) -> None:
        super().__init__(voice_id)
        self.voice_id = voice_id


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise ElevenLabsError(response.status_code, "invalid_response", "ElevenLabs returned a non-JSON body") from None
    return body if isinstance(body, dict) else {}


def _read_environment_once(session: requests.Session, base_url: str) -> None:
    """Read what `requests` takes from the environment (HTTPS_PROXY / NO_PROXY, REQUESTS_CA_BUNDLE)
    now, for the one host this client talks to, instead of on every request: scanning the whole
    environment twice per request cost 0.37 ms of CPU each, over 1 ms per call."""
    settings = session.merge_environment_settings(base_url, {}, None, None, None)
    session.proxies.update(settings["proxies"])
    session.verify = settings["verify"]
    session.trust_env = False


class _LargeBlockAdapter(HTTPAdapter):
    """Uploads sent in 1 MiB blocks instead of urllib3's 16 KiB: each block is one `sendall`, and
    a thread takes the GIL back after each. Under load, every take can wait for the other threads'
    switch interval, so a 1 MB sample in 64 blocks queued behind them 64 times."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **{**kwargs, "blocksize": UPLOAD_BLOCK_BYTES})
