"""A local ElevenLabs API for tests, benchmarks and the sandbox: real HTTP on loopback.

Speaks the paths, multipart fields, status codes and error bodies of the ElevenLabs API
reference for the calls this service makes (`/v1/voices/add`, `/v1/voices/{id}`, `/v2/voices`,
`/v1/convai/agents/{id}`, `/v1/convai/conversations/{id}`, `/v1/convai/twilio/register-call`) and those `doctor` reads
(`/v1/user/subscription`, `/v1/convai/settings`, `/v1/workspace/webhooks`). Records every request; injects
faults (status codes with ElevenLabs error bodies, `Retry-After`, delays, connection resets)
and latency, one by one (`inject`) or at random on every endpoint (`chaos`); keeps a ledger of every
voice made and deleted (`made`, `deleted`) for a soak to compare with the service's logs. Run standalone: `python -m sandbox.elevenlabs_server --port 8765`.

Strict mode (`strict=True`, `--strict`) plays the real API as documented at its least convenient:
undocumented label keys dropped, search over name and description only, an account already full
of the user's own voices, `400 voice_not_found` for a missing voice, current error bodies.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import re
import secrets
import socket
import string
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from werkzeug.formparser import MultiPartParser
from werkzeug.http import parse_options_header

from sandbox.processes import send_json

_ID_ALPHABET = string.ascii_letters + string.digits
PREMADE_VOICES = [("21m00Tcm4TlvDq8ikWAM", "Rachel"), ("EXAVITQu4vr4xnSDxMaL", "Sarah")]
# The user's own voices a strict-mode account holds: enough that listing them takes several pages.
STRICT_FOREIGN_VOICES = 12
# The only label keys the SDK documents for an instant voice clone: "Keys can be language, accent,
# gender, or age." (elevenlabs 2.78, elevenlabs/voices/ivc/client.py, `IvcClient.create`, `labels`).
DOCUMENTED_LABEL_KEYS = frozenset({"language", "accent", "gender", "age"})
# "legacy": {"status", "message"}; "current": {"type", "code", "message", "status"} as
# https://elevenlabs.io/docs/eleven-api/resources/errors documents it; "code_only": no legacy `status`.
ERROR_STYLES = ("legacy", "current", "code_only")
# `detail.type` of each `detail.code` this server answers with, from the "Error codes" table of the
# errors page above unless marked otherwise. Codes not listed get "validation_error" (a guess).
_ERROR_TYPES = {
    "invalid_api_key": "authentication_error",
    "voice_not_found": "not_found",
    "agent_not_found": "not_found",
    "conversation_not_found": "not_found",
    "invalid_audio": "validation_error",
    "invalid_page_size": "validation_error",
    "rate_limit_exceeded": "rate_limit_error",
    "internal_error": "internal_error",
    "internal_server_error": "internal_error",  # this server's legacy spelling of internal_error
    "paid_plan_required": "payment_required",  # not in the table; as in a real body (see NO_CLONING_HTTP_STATUS)
    "missing_permissions": "authentication_error",  # not in the table: a guess (real bodies seen are legacy, HTTP 401)
}
# No instant voice cloning on the plan. The errors page lists neither this code nor its status; it maps
# `type` payment_required to 402, but real answers published on GitHub are HTTP 400 with
# {"type": "payment_required", "code": "paid_plan_required", "status": "can_not_use_instant_voice_cloning"}.
# 400 it is: the real one, and the least convenient (the status alone does not tell it from bad audio).
NO_CLONING_HTTP_STATUS = 400
# A scoped key without the permission an endpoint needs: HTTP 401, `missing_permissions`, and a message naming
# the permission as the SDK's `PermissionType` does (elevenlabs/types/permission_type.py). Real answers published
# on GitHub (e.g. danielmiessler/LifeOS#667, VapiAI/docs#1198) read exactly like `MISSING_PERMISSION_MESSAGE`.
MISSING_PERMISSION_MESSAGE = "The API key you used is missing the permission {} to execute this operation."
# Which permission each endpoint needs. Not documented per endpoint; these follow the permission names. For
# `/v1/voices/add` it is unclear whether `voices_write` or `create_instant_voice_clone` is checked: both are.
ENDPOINT_PERMISSIONS = (
    ("POST", re.compile(r"/v1/voices/add"), ("voices_write", "create_instant_voice_clone")),
    ("GET", re.compile(r"/v2/voices|/v1/voices/[^/]+"), ("voices_read",)),
    ("DELETE", re.compile(r"/v1/voices/[^/]+"), ("voices_write",)),
    ("GET", re.compile(r"/v1/convai/.+"), ("convai_read",)),
    ("PATCH", re.compile(r"/v1/convai/.+"), ("convai_write",)),
    ("GET", re.compile(r"/v1/user(/.*)?"), ("user_read",)),
    ("GET", re.compile(r"/v1/workspace/.+"), ("workspace_read",)),
)
# What `chaos` may do to a request: an ElevenLabs 429 (with Retry-After) or 5xx, a stall (a slow answer the
# caller may give up on), a connection reset, and on `POST /v1/voices/add` a full account.
CHAOS_KINDS = ("429", "500", "503", "stall", "reset", "voice_limit_reached")
# Not what the service calls, so never failed by `chaos`: Twilio's media stream (this server's stand-in for
# the WebSocket between Twilio and ElevenLabs) and the sandbox's own routes.
NOT_THE_API = ("/v1/convai/conversation/twilio", "/_sandbox/")
# register-call: "configure your agent to use the correct audio format supported by Twilio" - µ-law 8000 Hz for
# the agent's output (Voice section) and the user's input (Advanced section); elevenlabs.io/docs/agents-platform/
# phone-numbers/twilio-integration/register-call. What the real API answers otherwise is not documented: this
# server refuses with 400, the least convenient guess (a mismatch would otherwise be noise on the line).
TWILIO_AUDIO_FORMAT = "ulaw_8000"
# Per-call overrides the agent's Security tab can allow (`platform_settings.overrides.conversation_config_override`).
# The docs say a conversation overriding a field the agent does not allow fails; this server refuses it at
# register-call with the message ElevenLabs closes such a conversation with.
OVERRIDE_NOT_ALLOWED = "Override for field '{}' is not allowed by config."
# Where `make run` serves precall_webhook: the sandbox account's webhooks point there.
SANDBOX_SERVICE_URL = "http://127.0.0.1:8080"
# A subscription field a test wants left out of `GET /v1/user/subscription` (`subscription_overrides`).
ABSENT = object()


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    body_size: int = 0
    received_at: float = field(default_factory=time.monotonic)  # when its body had arrived


@dataclass(frozen=True)
class RawBody:
    """A non-JSON answer (register-call answers TwiML as text)."""

    content_type: str
    text: str


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False
    times: int = 1
    until: threading.Event | None = None
    served: bool = False  # with `reset`: the request takes effect (a voice is made), then the answer is lost


def error_body(code: str, message: str, status: str | None = None, kind: str | None = None,
               style: str = "legacy") -> dict[str, Any]:
    """ElevenLabs' error body for API errors, in one of `ERROR_STYLES`.

    `code` is the current field and `status` the legacy one: the same unless given, because some
    errors carry two different values. `kind` is the `type`, looked up from `code` unless given.
    """
    if style not in ERROR_STYLES:
        raise ValueError(f"error style must be one of {ERROR_STYLES}, not {style!r}")
    legacy = code if status is None else status
    if style == "legacy":
        return {"detail": {"status": legacy, "message": message}}
    body = {"type": kind or _ERROR_TYPES.get(code, "validation_error"), "code": code, "message": message}
    if style == "current":
        body["status"] = legacy
    return {"detail": body}


def detail(status: str, message: str, style: str = "legacy") -> dict[str, Any]:
    """ElevenLabs' error body for API errors (one code for `code` and `status`)."""
    return error_body(status, message, style=style)


def validation_detail(loc: list[str], msg: str, kind: str = "missing") -> dict[str, Any]:
    """ElevenLabs' (FastAPI) error body for request validation errors (HTTP 422)."""
    return {"detail": [{"type": kind, "loc": loc, "msg": msg, "input": None}]}


class FakeElevenLabs:
    """State and behaviour; `start()` serves it on 127.0.0.1 in a background thread.

    Knobs a test may set (all but `strict` and `voice_limit` go back to their defaults on `reset()`):
    `strict`, `error_style`, `can_clone`, `requires_verification`, `omit_created_at_unix`, `missing_permissions`
    (permissions the key lacks), `max_voice_add_edits`, `subscription_overrides` (fields of the subscription,
    `ABSENT` to leave one out), `convai_settings` and `workspace_webhooks` (the workspace's post-call and
    initiation webhooks, by default healthy and pointing at `service_url`, see `_default_workspace`).
    """

    def __init__(self, api_key: str | None = "test-api-key", voice_limit: int = 30, latency: float = 0.0,
                 auto_create_agents: bool = False, record_file_bytes: bool = True, strict: bool = False,
                 service_url: str = SANDBOX_SERVICE_URL) -> None:
        self.api_key = api_key
        self._constructed_service_url = self.service_url = service_url.rstrip("/")
        self.voice_limit = voice_limit
        self.latency = latency
        # Per-endpoint latency, e.g. {("POST", "/v1/voices/add"): 1.5}; the path is a regex. Wins over `latency`.
        self.endpoint_latency: dict[tuple[str, str], float] = {}
        self.auto_create_agents = auto_create_agents
        self.record_file_bytes = record_file_bytes
        self.strict = strict
        self.can_clone = True
        self.requires_verification = False
        self.omit_created_at_unix = False
        self.missing_permissions: set[str] = set()
        self.max_voice_add_edits: int | None = None
        self.voice_add_edit_counter = 0
        self.subscription_overrides: dict[str, Any] = {}
        self.convai_settings: dict[str, Any] = {}
        self.workspace_webhooks: dict[str, dict[str, Any]] = {}
        self._error_style: str | None = None
        self.lock = threading.RLock()
        self.voices: dict[str, dict[str, Any]] = {}
        self.agents: dict[str, dict[str, Any]] = {}
        self.conversations: dict[str, dict[str, Any]] = {}
        # register-call: what each registration was sent and what the conversation will use, by registration id.
        self.registered_calls: dict[str, dict[str, Any]] = {}
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.uploaded_samples: dict[str, bytes] = {}
        self.made: dict[str, dict[str, Any]] = {}  # every voice the API created: name, when (time.time())
        self.deleted: dict[str, float] = {}  # every voice the API deleted, and when
        self.chaos_rate = 0.0
        self.chaos_kinds: tuple[str, ...] = CHAOS_KINDS
        self.chaos_stall = (2.0, 6.0)
        self.fault_counts: Counter[str] = Counter()
        self._chaos_random = random.Random(0)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for voice_id, name in PREMADE_VOICES:
            self.voices[voice_id] = {"voice_id": voice_id, "name": name, "category": "premade", "labels": {},
                                     "description": None, "created_at_unix": None}
        self._default_workspace()
        if strict:
            self._add_foreign_voices()

    @property
    def error_style(self) -> str:
        """The shape of API error bodies (`ERROR_STYLES`): "current" in strict mode, else "legacy", unless set."""
        return self._error_style or ("current" if self.strict else "legacy")

    @error_style.setter
    def error_style(self, style: str) -> None:
        if style not in ERROR_STYLES:
            raise ValueError(f"error style must be one of {ERROR_STYLES}, not {style!r}")
        self._error_style = style

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, port: int = 0) -> FakeElevenLabs:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = _Server(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-elevenlabs", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- test helpers --------------------------------------------------------------------

    def add_agent(self, agent_id: str, voice_id: str = PREMADE_VOICES[0][0], *, allow_first_message: bool = False,
                  allow_voice: bool = False, init_webhook: bool = False, first_message: str = "Hello",
                  prompt: str = "Be helpful.", dynamic_variable_placeholders: dict[str, Any] | None = None,
                  audio_format: str = "pcm_16000") -> None:
        """An agent shaped as the SDK's `GetAgentResponseModel`. Whether a conversation may override the
        greeting or the voice, and whether ElevenLabs asks a webhook for initiation data, live in
        `platform_settings.overrides` (`ConversationInitiationClientDataConfigOutput`); all off by default,
        as on a new agent. `audio_format` is the user input and agent output format (`pcm_16000` on a new agent;
        register-call needs `ulaw_8000`)."""
        now = int(time.time())
        with self.lock:
            self.agents[agent_id] = {
                "agent_id": agent_id, "name": "Customer Service Agent",
                "conversation_config": {
                    "agent": {"first_message": first_message, "prompt": {"prompt": prompt},
                              "dynamic_variables": {
                                  "dynamic_variable_placeholders": dict(dynamic_variable_placeholders or {})}},
                    "asr": {"user_input_audio_format": audio_format},
                    "tts": {"voice_id": voice_id, "model_id": "eleven_flash_v2", "agent_output_audio_format": audio_format}},
                "metadata": {"created_at_unix_secs": now, "updated_at_unix_secs": now},
                "platform_settings": {"overrides": {
                    "conversation_config_override": {"agent": {"first_message": allow_first_message},
                                                     "tts": {"voice_id": allow_voice}},
                    "enable_conversation_initiation_client_data_from_webhook": init_webhook}},
            }

    def set_conversation(self, conversation_id: str, status: str, agent_id: str = "agent") -> None:
        with self.lock:
            self.conversations[conversation_id] = {"conversation_id": conversation_id, "agent_id": agent_id,
                                                   "status": status, "transcript": [], "metadata": {}}

    def add_voice(self, name: str, labels: dict[str, str] | None = None, category: str = "cloned",
                  created_at_unix: int | None = None, description: str | None = None) -> str:
        """A voice that exists in the account already (e.g. the user's own, or an old clone). In strict
        mode its labels are stored as the API would store them: undocumented keys dropped."""
        voice_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))
        labels = dict(labels or {})
        if self.strict:
            labels = {k: v for k, v in labels.items() if k in DOCUMENTED_LABEL_KEYS}
        with self.lock:
            self.voices[voice_id] = {"voice_id": voice_id, "name": name, "category": category, "labels": labels,
                                     "description": description,
                                     "created_at_unix": int(time.time()) if created_at_unix is None else created_at_unix}
        return voice_id

    def custom_voice_count(self) -> int:
        """The voices that take a slot of `voice_limit`: all but the premade ones."""
        with self.lock:
            return sum(1 for v in self.voices.values() if v["category"] != "premade")

    def error(self, code: str, message: str, status: str | None = None, kind: str | None = None) -> dict[str, Any]:
        """`error_body` in this server's `error_style`: for its own answers and for bodies given to `inject`."""
        return error_body(code, message, status, kind, self.error_style)

    def inject(self, method: str, path: str, status: int | None = None, body: Any = None,
               headers: dict[str, str] | None = None, delay: float = 0.0, reset: bool = False, times: int = 1,
               until: threading.Event | None = None, served: bool = False) -> None:
        """Make the next `times` matching requests fail (or stall, or reset the connection). `until`
        holds each of them unanswered until the event is set (60 s at most): a call kept in flight
        for exactly as long as a test needs, however slow the machine. `served` with `reset`: the
        request is carried out first (a voice made, a voice deleted) and only its answer is lost, the
        case an idempotency probe exists for."""
        with self.lock:
            self.faults.append(Fault(method.upper(), re.compile(path), status, body, headers or {}, delay, reset, times,
                                     until, served))

    def chaos(self, rate: float, seed: int, kinds: tuple[str, ...] = CHAOS_KINDS,
              stall: tuple[float, float] = (2.0, 6.0)) -> None:
        """Fail about `rate` of all requests, on every endpoint, with a fault drawn from `kinds` (`CHAOS_KINDS`),
        from a generator seeded with `seed`; `stall` bounds a stall's seconds. `fault_counts` counts them."""
        unknown = set(kinds) - set(CHAOS_KINDS)
        if unknown:
            raise ValueError(f"unknown chaos kinds {sorted(unknown)}; known: {CHAOS_KINDS}")
        with self.lock:
            self.chaos_rate, self.chaos_kinds, self.chaos_stall = rate, tuple(kinds), stall
            self._chaos_random = random.Random(seed)

    def age_voices(self, seconds: float) -> None:
        """Move the account's clock: every cloned voice becomes `seconds` older (`created_at_unix` and a
        `created_at` label), as if that much time had passed. For a TTL without waiting for it."""
        with self.lock:
            for voice in self.voices.values():
                if voice["category"] != "cloned":
                    continue
                if voice.get("created_at_unix") is not None:
                    voice["created_at_unix"] -= int(seconds)
                labels = voice.get("labels") or {}
                if isinstance(labels.get("created_at"), str):
                    try:
                        moved = datetime.fromisoformat(labels["created_at"].replace("Z", "+00:00")) - timedelta(seconds=seconds)
                    except ValueError:
                        continue
                    labels["created_at"] = moved.isoformat(timespec="seconds").replace("+00:00", "Z")

    def requests_to(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        with self.lock:
            return [r for r in self.requests if r.method == method and re.fullmatch(path_pattern, r.path)]

    def cloned_voices(self) -> list[dict[str, Any]]:
        with self.lock:
            return [v for v in self.voices.values() if v["category"] == "cloned"]

    def latency_for(self, method: str, path: str) -> float:
        """How long ElevenLabs takes to answer this request here (realistic latencies for benchmarks)."""
        for (wanted_method, pattern), seconds in self.endpoint_latency.items():
            if wanted_method == method and re.fullmatch(pattern, path):
                return seconds
        return self.latency

    def reset(self) -> None:
        """A fresh account, as the constructor left it; `strict`, `voice_limit` and `api_key` stay."""
        with self.lock:
            self.requests.clear()
            self.faults.clear()
            self.conversations.clear()
            self.registered_calls.clear()
            self.agents.clear()
            self.uploaded_samples.clear()
            self.made.clear()
            self.deleted.clear()
            self.chaos_rate = 0.0
            self.fault_counts.clear()
            self.voices = {k: v for k, v in self.voices.items() if v["category"] == "premade"}
            self.latency = 0.0
            self.endpoint_latency = {}
            self.can_clone = True
            self.requires_verification = False
            self.omit_created_at_unix = False
            self.missing_permissions = set()
            self.max_voice_add_edits = None
            self.voice_add_edit_counter = 0
            self.subscription_overrides = {}
            self._error_style = None
            self.service_url = self._constructed_service_url
            self._default_workspace()
            if self.strict:
                self._add_foreign_voices()

    def add_workspace_webhook(self, url: str, *, name: str = "precall post-call", is_disabled: bool = False,
                              is_auto_disabled: bool = False, failure_code: int | None = None,
                              failure_timestamp: int | None = None) -> str:
        """A workspace webhook as the SDK's `WorkspaceWebhookResponseModel` shows it; returns its id."""
        webhook_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))
        with self.lock:
            self.workspace_webhooks[webhook_id] = {
                "name": name, "webhook_id": webhook_id, "webhook_url": url, "is_disabled": is_disabled,
                "is_auto_disabled": is_auto_disabled, "created_at_unix": int(time.time()), "auth_type": "hmac",
                "most_recent_failure_error_code": failure_code, "most_recent_failure_timestamp": failure_timestamp}
        return webhook_id

    def use_service_url(self, service_url: str) -> None:
        """Point the workspace's post-call and initiation webhooks at another deployment (until `reset()`)."""
        self.service_url = service_url.rstrip("/")
        self._default_workspace()

    def _default_workspace(self) -> None:
        """A workspace set up as docs/connecting-elevenlabs.md says: a post-call webhook on `service_url/post-call` subscribed to
        transcripts and call initiation failures, and the initiation webhook on `service_url/conversation-init`
        with the header secret (shaped as the SDK's `GetConvAiSettingsResponseModel`)."""
        with self.lock:
            self.workspace_webhooks = {}
            webhook_id = self.add_workspace_webhook(f"{self.service_url}/post-call")
            self.convai_settings = {
                "conversation_initiation_client_data_webhook": {
                    "url": f"{self.service_url}/conversation-init", "request_headers": {"X-Precall-Secret": "sandbox"}},
                "webhooks": {"post_call_webhook_id": webhook_id, "events": ["transcript", "call_initiation_failure"],
                             "transcript_format": "json", "send_audio": False},
                "can_use_mcp_servers": False, "rag_retention_period_days": 10}

    def _subscription(self) -> dict[str, Any]:
        """`GET /v1/user/subscription` as the SDK's `Subscription` model shows it; slots counted from the voices."""
        now = int(time.time())
        with self.lock:
            body: dict[str, Any] = {
                "tier": "creator", "character_count": 0, "character_limit": 100000, "max_character_limit_extension": None,
                "max_credit_limit_extension": 0, "can_extend_character_limit": True,
                "allowed_to_extend_character_limit": True, "next_character_count_reset_unix": now + 30 * 86400,
                "voice_slots_used": self.custom_voice_count(), "professional_voice_slots_used": 0,
                "professional_voice_slots_used_in_workspace": 0, "voice_limit": self.voice_limit,
                "max_voice_add_edits": self.max_voice_add_edits, "voice_add_edit_counter": self.voice_add_edit_counter,
                "professional_voice_limit": 1, "can_extend_voice_limit": False,
                "can_use_instant_voice_cloning": self.can_clone, "can_use_professional_voice_cloning": True,
                "currency": "usd", "current_overage": {"amount": "0", "currency": "usd"}, "status": "active",
                "billing_period": "monthly_period", "character_refresh_period": "monthly_period"}
            body.update(self.subscription_overrides)
        return {k: v for k, v in body.items() if v is not ABSENT}

    def _lacked_permission(self, method: str, path: str) -> str | None:
        for wanted_method, pattern, permissions in ENDPOINT_PERMISSIONS:
            if method == wanted_method and pattern.fullmatch(path):
                return next((p for p in permissions if p in self.missing_permissions), None)
        return None

    def _add_foreign_voices(self) -> None:
        """The user's own clones, made hours to days ago: a real account is rarely empty, and they share
        search results, pages and the voice limit with the clones this service makes."""
        now = int(time.time())
        for number in range(1, STRICT_FOREIGN_VOICES + 1):
            self.add_voice(f"Narrator {number}", labels={"accent": "british"}, description="My own narration voice",
                           created_at_unix=now - number * 9 * 3600)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.method in (method, "*") and fault.path.fullmatch(path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def _chaos_fault(self, method: str, path: str) -> Fault | None:
        """A random fault for this request, or None (see `chaos`)."""
        if path.startswith(NOT_THE_API):
            return None
        with self.lock:
            if self.chaos_rate <= 0 or self._chaos_random.random() >= self.chaos_rate:
                return None
            adding = method == "POST" and path == "/v1/voices/add"
            kinds = [k for k in self.chaos_kinds if adding or k != "voice_limit_reached"]
            if not kinds:
                return None
            kind = self._chaos_random.choice(kinds)
            self.fault_counts[kind] += 1
            stall = self._chaos_random.uniform(*self.chaos_stall)
        if kind == "429":
            return Fault(method, re.compile(re.escape(path)), 429, headers={"Retry-After": "1"})
        if kind in ("500", "503"):
            return Fault(method, re.compile(re.escape(path)), int(kind))
        if kind == "stall":
            return Fault(method, re.compile(re.escape(path)), delay=stall)
        if kind == "reset":
            return Fault(method, re.compile(re.escape(path)), reset=True)
        used = self.custom_voice_count()
        return Fault(method, re.compile(re.escape(path)), 400, body=self.error(
            "voice_limit_reached", f"You have reached your maximum amount of custom voices ({used} / {used})."))

    def _fault_body(self, status: int) -> dict[str, Any]:
        """The body of an injected failure given without one."""
        if status == 429:
            return self.error("rate_limit_exceeded", "Too many requests")
        # "internal_error" is the documented code; the legacy bodies keep this server's old spelling.
        code = "internal_server_error" if self.error_style == "legacy" else "internal_error"
        return self.error(code, "An internal error occurred")

    def _served(self, voice: dict[str, Any]) -> dict[str, Any]:
        """A voice as the API shows it: older voices come without `created_at_unix`."""
        if not self.omit_created_at_unix:
            return voice
        return {k: v for k, v in voice.items() if k != "created_at_unix"}

    # -- the API -------------------------------------------------------------------------

    def route(self, request: RecordedRequest, raw: bytes, content_type: str) -> tuple[int, Any]:
        path, method = request.path, request.method
        if path == "/v1/convai/conversation/twilio" and method == "GET":  # Twilio's media stream: no API key
            return self._stream_connected((request.query.get("registration") or [""])[0])
        match = re.fullmatch(r"/_sandbox/voices/([^/]+)", path)  # sandbox only: does a voice still exist
        if match and method == "GET":
            with self.lock:
                return 200, {"exists": match.group(1) in self.voices}
        if self.api_key is not None and request.headers.get("xi-api-key") != self.api_key:
            return 401, self.error("invalid_api_key", "Invalid API key")
        lacked = self._lacked_permission(method, path)
        if lacked is not None:
            return 401, self.error("missing_permissions", MISSING_PERMISSION_MESSAGE.format(lacked))
        if path == "/v1/user/subscription" and method == "GET":
            return 200, self._subscription()
        if path == "/v1/convai/settings" and method == "GET":
            with self.lock:
                return 200, json.loads(json.dumps(self.convai_settings))
        if path == "/v1/workspace/webhooks" and method == "GET":
            with self.lock:
                return 200, {"webhooks": [dict(w) for w in self.workspace_webhooks.values()]}
        if path == "/v1/convai/twilio/register-call" and method == "POST":
            return self._register_call(request.json)
        if path == "/v1/voices/add" and method == "POST":
            return self._add_voice(request, raw, content_type)
        if path == "/v2/voices" and method == "GET":
            return self._list_voices(request.query)
        match = re.fullmatch(r"/v1/voices/([^/]+)", path)
        if match and method in ("GET", "DELETE"):
            return self._voice(method, match.group(1))
        match = re.fullmatch(r"/v1/convai/agents/([^/]+)", path)
        if match and method in ("GET", "PATCH"):
            return self._agent(method, match.group(1), request.json)
        match = re.fullmatch(r"/v1/convai/conversations/([^/]+)", path)
        if match and method == "GET":
            with self.lock:
                conversation = self.conversations.get(match.group(1))
            if conversation is None:
                return 404, self.error("conversation_not_found", f"Conversation {match.group(1)} not found")
            return 200, conversation
        return 404, {"detail": "Not Found"}

    def _add_voice(self, request: RecordedRequest, raw: bytes, content_type: str) -> tuple[int, Any]:
        mime, options = parse_options_header(content_type)
        if mime != "multipart/form-data":
            return 422, validation_detail(["body", "name"], "Field required")
        parser = MultiPartParser(stream_factory=lambda *a, **k: io.BytesIO(), max_form_memory_size=50 * 1024 * 1024)
        form, files = parser.parse(io.BytesIO(raw), options.get("boundary", "").encode(), len(raw))
        request.form = {k: form[k] for k in form}
        uploads = files.getlist("files")
        request.files = {"files": []}
        samples = []
        for upload in uploads:
            data = upload.stream.read()
            samples.append(data)
            entry = {"filename": upload.filename, "content_type": upload.mimetype, "size": len(data),
                     "sha256": hashlib.sha256(data).hexdigest()}
            if self.record_file_bytes:
                entry["data"] = data
            request.files["files"].append(entry)
        if not form.get("name"):
            return 422, validation_detail(["body", "name"], "Field required")
        if not uploads:
            return 422, validation_detail(["body", "files"], "Field required")
        if not self.can_clone:
            message = "Your subscription does not include instant voice cloning. Please upgrade your plan."
            return NO_CLONING_HTTP_STATUS, self.error("paid_plan_required", message,
                                                      status="can_not_use_instant_voice_cloning")
        labels: dict[str, str] = {}
        if form.get("labels"):
            try:
                labels = json.loads(form["labels"])
            except ValueError:
                return 400, self.error("invalid_labels", "Labels must be a JSON object of strings")
            if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
                return 400, self.error("invalid_labels", "Labels must be a JSON object of strings")
        if self.strict:  # nothing promises that other keys are kept
            labels = {k: v for k, v in labels.items() if k in DOCUMENTED_LABEL_KEYS}
        if any(len(s) < 1000 for s in samples):
            return 400, self.error("invalid_audio", "Voice sample quality too low")
        with self.lock:
            used = self.custom_voice_count()
            if used >= self.voice_limit:
                message = (f"You have reached your maximum amount of custom voices ({used} / {self.voice_limit}). "
                           "You can upgrade your subscription to increase your custom voice limit.")
                return 400, self.error("voice_limit_reached", message)
            voice_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))
            self.voices[voice_id] = {
                "voice_id": voice_id, "name": form["name"], "category": "cloned", "labels": labels,
                "description": form.get("description"), "created_at_unix": int(time.time()),
                "samples": [{"sample_id": f"s{i}", "file_name": u.filename, "mime_type": u.mimetype,
                             "size_bytes": len(s)} for i, (u, s) in enumerate(zip(uploads, samples, strict=True))],
            }
            self.uploaded_samples[voice_id] = samples[0]
            self.made[voice_id] = {"name": form["name"], "at": time.time()}
            self.voice_add_edit_counter += 1
        # Even a voice that needs verification was created and takes a slot.
        return 200, {"voice_id": voice_id, "requires_verification": self.requires_verification}

    def _register_call(self, body: Any) -> tuple[int, Any]:
        """`POST /v1/convai/twilio/register-call` (SDK 2.78 conversational_ai/twilio/raw_client.py `register_call`):
        JSON `agent_id`, `from_number`, `to_number`, `direction`, `conversation_initiation_client_data`; answers the
        TwiML that connects the call as text (the SDK returns `_response.text`). Checks what the real one is documented
        to need: the agent's µ-law 8000 Hz formats, and overrides only where the agent allows them."""
        if not isinstance(body, dict):
            return 422, validation_detail(["body"], "Input should be a valid dictionary", "dict_type")
        for name in ("agent_id", "from_number", "to_number"):
            if not isinstance(body.get(name), str) or not body[name]:
                return 422, validation_detail(["body", name], "Field required")
        if body.get("direction", "inbound") not in ("inbound", "outbound"):
            return 422, validation_detail(["body", "direction"], "Input should be 'inbound' or 'outbound'", "enum")
        data = body.get("conversation_initiation_client_data") or {}
        if not isinstance(data, dict):
            return 422, validation_detail(["body", "conversation_initiation_client_data"], "Input should be a valid dictionary",
                                          "dict_type")
        variables = data.get("dynamic_variables") or {}
        if not isinstance(variables, dict) or not all(isinstance(v, (str, int, float, bool)) or v is None
                                                      for v in variables.values()):
            return 422, validation_detail(["body", "conversation_initiation_client_data", "dynamic_variables"],
                                          "Input should be a valid dictionary of scalars", "dict_type")
        override = data.get("conversation_config_override") or {}
        with self.lock:
            agent_id = body["agent_id"]
            agent = self._known_agent(agent_id)
            if agent is None:
                return 404, self.error("agent_not_found", f"Agent {agent_id} not found")
            config = agent["conversation_config"]
            formats = {"asr.user_input_audio_format": (config.get("asr") or {}).get("user_input_audio_format"),
                       "tts.agent_output_audio_format": (config.get("tts") or {}).get("agent_output_audio_format")}
            wrong = [f"{k} is {v}" for k, v in formats.items() if v != TWILIO_AUDIO_FORMAT]
            if wrong:
                return 400, self.error("invalid_audio_format", f"Twilio calls need {TWILIO_AUDIO_FORMAT} audio; the agent's "
                                       + ", ".join(wrong))
            allowed = (agent.get("platform_settings") or {}).get("overrides", {}).get("conversation_config_override", {})
            for field_path in _leaves(override if isinstance(override, dict) else {}):
                if not _allowed(allowed, field_path):
                    return 400, self.error("override_not_allowed", OVERRIDE_NOT_ALLOWED.format(field_path.split(".")[-1]))
            voice_id = (override.get("tts") or {}).get("voice_id") or config["tts"]["voice_id"]
            if voice_id not in self.voices:
                return 400, self.error("voice_not_found", f"A voice with the voice_id {voice_id} was not found.")
            first_message = (override.get("agent") or {}).get("first_message") or config["agent"]["first_message"]
            for key, value in variables.items():
                first_message = first_message.replace("{{" + key + "}}", str(value))
            registration = "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))
            conversation_id = "conv_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))
            self.registered_calls[registration] = {
                "request": json.loads(json.dumps(body)), "conversation_id": conversation_id, "voice_id": voice_id,
                "voice_name": self.voices[voice_id]["name"], "first_message": first_message, "connected": 0}
            self.conversations[conversation_id] = {"conversation_id": conversation_id, "agent_id": agent_id,
                                                   "status": "initiated", "transcript": [], "metadata": {}}
        host = self.url.replace("http://", "ws://")
        twiml = ('<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
                 f'<Stream url="{host}/v1/convai/conversation/twilio?registration={registration}">'
                 f'<Parameter name="conversation_id" value="{conversation_id}"/></Stream></Connect></Response>')
        return 200, RawBody("text/html; charset=utf-8", twiml)

    def _stream_connected(self, registration: str) -> tuple[int, Any]:
        """Stands in for Twilio opening the media stream of register-call's TwiML (a WebSocket in the real
        service): the conversation starts, with the voice and greeting it was registered with."""
        with self.lock:
            call = self.registered_calls.get(registration)
            if call is None:
                return 404, self.error("conversation_not_found", "No call was registered with this stream")
            call["connected"] += 1
            self.conversations[call["conversation_id"]]["status"] = "in-progress"
            return 200, {k: call[k] for k in ("conversation_id", "voice_id", "voice_name", "first_message")}

    def _list_voices(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        search = (query.get("search") or [""])[0].lower()
        category = (query.get("category") or [""])[0]
        page_size = int((query.get("page_size") or ["10"])[0])
        if self.strict and not 1 <= page_size <= 100:  # documented: "Can not exceed 100, defaults to 10."
            return 400, self.error("invalid_page_size", f"page_size must be between 1 and 100, not {page_size}")
        page_size = min(100, page_size)
        offset = int((query.get("next_page_token") or ["0"])[0] or 0)
        with self.lock:
            voices = list(self.voices.values())
        if category:
            voices = [v for v in voices if v["category"] == category]
        if search:
            # The SDK says search covers "name, description, labels, category" (voices/client.py, `search`);
            # strict mode promises only the first two, so a client cannot find its clones by label.
            def haystack(v: dict[str, Any]) -> str:
                fields = [v["name"] or "", v.get("description") or ""]
                if not self.strict:
                    fields += [v["category"], *v["labels"].values()]
                return " ".join(fields).lower()
            voices = [v for v in voices if search in haystack(v)]
        voices.sort(key=lambda v: -(v.get("created_at_unix") or 0))
        page = [self._served(v) for v in voices[offset: offset + page_size]]
        has_more = offset + page_size < len(voices)
        return 200, {"voices": page, "has_more": has_more, "total_count": len(voices),
                     "next_page_token": str(offset + page_size) if has_more else None}

    def _voice(self, method: str, voice_id: str) -> tuple[int, Any]:
        with self.lock:
            voice = self.voices.get(voice_id)
            if voice is None:
                # The real API answers these endpoints with 400, not 404, for a voice that does not exist.
                return 400 if self.strict else 404, self.error(
                    "voice_not_found", f"A voice with the voice_id {voice_id} was not found.")
            if method == "DELETE":
                del self.voices[voice_id]
                self.deleted[voice_id] = time.time()
                return 200, {"status": "ok"}
            return 200, self._served(voice)

    def _known_agent(self, agent_id: str) -> dict[str, Any] | None:
        """The agent, or None; with `auto_create_agents` an unknown one is made first. The sandbox's agents
        allow what every mode of the service needs (greeting and voice overrides, the conversation-initiation
        webhook, µ-law for Twilio), so `make run` works in every mode. Called with `self.lock` held."""
        if agent_id not in self.agents and self.auto_create_agents:
            self.add_agent(agent_id, allow_first_message=True, allow_voice=True, init_webhook=True,
                           audio_format=TWILIO_AUDIO_FORMAT)
        return self.agents.get(agent_id)

    def _agent(self, method: str, agent_id: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            agent = self._known_agent(agent_id)
            if agent is None:
                return 404, self.error("agent_not_found", f"Agent {agent_id} not found")
            if method == "GET":
                return 200, agent
            if not isinstance(body, dict):
                return 422, validation_detail(["body"], "Input should be a valid dictionary", "dict_type")
            config = body.get("conversation_config") or {}
            voice_id = (config.get("tts") or {}).get("voice_id")
            if voice_id is not None and voice_id not in self.voices:
                return 400, self.error("voice_not_found", f"A voice with the voice_id {voice_id} was not found.")
            _merge(agent, body)
            return 200, agent


def _leaves(document: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the values an override sets (`tts.voice_id`, `agent.first_message`)."""
    paths = []
    for key, value in document.items():
        path = f"{prefix}{key}"
        paths.extend(_leaves(value, path + ".") if isinstance(value, dict) else [path])
    return paths


def _allowed(switches: Any, path: str) -> bool:
    for part in path.split("."):
        switches = switches.get(part) if isinstance(switches, dict) else None
    return switches is True


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


class _Server(ThreadingHTTPServer):
    """A listen backlog for hundreds of concurrent calls (the default 5 drops connections into SYN retries)."""

    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a test that stopped waiting, a deadline) is normal here, not a traceback."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeElevenLabs
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def setup(self) -> None:
        super().setup()
        # Headers and body are written separately; without this, Nagle + delayed ACK add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        fake = self.fake
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type", "")
        record = RecordedRequest(self.command, parts.path, parse_qs(parts.query),
                                 {k.lower(): v for k, v in self.headers.items()}, body_size=len(raw))
        if content_type.startswith("application/json") and raw:
            try:
                record.json = json.loads(raw)
            except ValueError:
                record.json = None
        with fake.lock:
            fake.requests.append(record)
        delay = fake.latency_for(self.command, parts.path)
        if delay:
            time.sleep(delay)
        fault = fake._take_fault(self.command, parts.path) or fake._chaos_fault(self.command, parts.path)
        if fault is not None:
            if fault.until is not None:
                fault.until.wait(60)
            if fault.delay:
                time.sleep(fault.delay)
            if fault.reset:
                if fault.served:
                    fake.route(record, raw, content_type)
                # SO_LINGER 0: close with RST, as a crashed proxy would.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return
            if fault.status is not None:
                body = fault.body if fault.body is not None else fake._fault_body(fault.status)
                send_json(self, fault.status, body, fault.headers)
                return
        status, body = fake.route(record, raw, content_type)
        if isinstance(body, RawBody):
            payload = body.text.encode()
            self.send_response(status)
            self.send_header("Content-Type", body.content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        send_json(self, status, body)

    do_GET = do_POST = do_PATCH = do_DELETE = _serve


def main() -> None:
    parser = argparse.ArgumentParser(description="Local ElevenLabs API (sandbox) on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", default="sandbox", help="xi-api-key to require")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--strict", action="store_true",
                        help="behave like the real API at its least convenient (see the module docstring)")
    args = parser.parse_args()
    fake = FakeElevenLabs(api_key=args.api_key, latency=args.latency, auto_create_agents=True, record_file_bytes=False,
                          strict=args.strict)
    fake.start(args.port)
    print(f"local ElevenLabs API (sandbox{', strict' if args.strict else ''}) on {fake.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
