"""A local ElevenLabs API for tests, benchmarks and the sandbox: real HTTP on loopback.

Speaks the paths, multipart fields, status codes and error bodies of the ElevenLabs API
reference for the calls this service makes (`/v1/voices/add`, `/v1/voices/{id}`, `/v2/voices`,
`/v1/convai/agents/{id}`, `/v1/convai/conversations/{id}`). Records every request; injects
faults (status codes with ElevenLabs error bodies, `Retry-After`, delays, connection resets)
and latency. Run standalone: `python -m sandbox.elevenlabs_server --port 8765`.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import secrets
import socket
import string
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from werkzeug.formparser import MultiPartParser
from werkzeug.http import parse_options_header

from sandbox.processes import send_json

_ID_ALPHABET = string.ascii_letters + string.digits
PREMADE_VOICES = [("21m00Tcm4TlvDq8ikWAM", "Rachel"), ("EXAVITQu4vr4xnSDxMaL", "Sarah")]


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


def detail(status: str, message: str) -> dict[str, Any]:
    """ElevenLabs' error body for API errors."""
    return {"detail": {"status": status, "message": message}}


def validation_detail(loc: list[str], msg: str, kind: str = "missing") -> dict[str, Any]:
    """ElevenLabs' (FastAPI) error body for request validation errors (HTTP 422)."""
    return {"detail": [{"type": kind, "loc": loc, "msg": msg, "input": None}]}


class FakeElevenLabs:
    """State and behaviour; `start()` serves it on 127.0.0.1 in a background thread."""

    def __init__(self, api_key: str | None = "test-api-key", voice_limit: int = 30, latency: float = 0.0,
                 auto_create_agents: bool = False, record_file_bytes: bool = True) -> None:
        self.api_key = api_key
        self.voice_limit = voice_limit
        self.latency = latency
        self.auto_create_agents = auto_create_agents
        self.record_file_bytes = record_file_bytes
        self.lock = threading.RLock()
        self.voices: dict[str, dict[str, Any]] = {}
        self.agents: dict[str, dict[str, Any]] = {}
        self.conversations: dict[str, dict[str, Any]] = {}
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.uploaded_samples: dict[str, bytes] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for voice_id, name in PREMADE_VOICES:
            self.voices[voice_id] = {"voice_id": voice_id, "name": name, "category": "premade", "labels": {},
                                     "description": None, "created_at_unix": None}

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, port: int = 0) -> FakeElevenLabs:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
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

    def add_agent(self, agent_id: str, voice_id: str = PREMADE_VOICES[0][0]) -> None:
        with self.lock:
            self.agents[agent_id] = {"agent_id": agent_id, "name": "Customer Service Agent", "conversation_config": {
                "agent": {"first_message": "Hello", "prompt": {"prompt": "Be helpful."}},
                "tts": {"voice_id": voice_id, "model_id": "eleven_flash_v2"}}}

    def set_conversation(self, conversation_id: str, status: str, agent_id: str = "agent") -> None:
        with self.lock:
            self.conversations[conversation_id] = {"conversation_id": conversation_id, "agent_id": agent_id,
                                                   "status": status, "transcript": [], "metadata": {}}

    def add_voice(self, name: str, labels: dict[str, str] | None = None, category: str = "cloned",
                  created_at_unix: int | None = None, description: str | None = None) -> str:
        """A voice that exists in the account already (e.g. the user's own, or an old clone)."""
        voice_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))
        with self.lock:
            self.voices[voice_id] = {"voice_id": voice_id, "name": name, "category": category, "labels": labels or {},
                                     "description": description,
                                     "created_at_unix": int(time.time()) if created_at_unix is None else created_at_unix}
        return voice_id

    def inject(self, method: str, path: str, status: int | None = None, body: Any = None,
               headers: dict[str, str] | None = None, delay: float = 0.0, reset: bool = False, times: int = 1) -> None:
        """Make the next `times` matching requests fail (or stall, or reset the connection)."""
        with self.lock:
            self.faults.append(Fault(method.upper(), re.compile(path), status, body, headers or {}, delay, reset, times))

    def requests_to(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        with self.lock:
            return [r for r in self.requests if r.method == method and re.fullmatch(path_pattern, r.path)]

    def cloned_voices(self) -> list[dict[str, Any]]:
        with self.lock:
            return [v for v in self.voices.values() if v["category"] == "cloned"]

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.faults.clear()
            self.conversations.clear()
            self.agents.clear()
            self.uploaded_samples.clear()
            self.voices = {k: v for k, v in self.voices.items() if v["category"] == "premade"}
            self.latency = 0.0

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.method in (method, "*") and fault.path.fullmatch(path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    # -- the API -------------------------------------------------------------------------

    def route(self, request: RecordedRequest, raw: bytes, content_type: str) -> tuple[int, Any]:
        if self.api_key is not None and request.headers.get("xi-api-key") != self.api_key:
            return 401, detail("invalid_api_key", "Invalid API key")
        path, method = request.path, request.method
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
                return 404, detail("conversation_not_found", f"Conversation {match.group(1)} not found")
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
        labels: dict[str, str] = {}
        if form.get("labels"):
            try:
                labels = json.loads(form["labels"])
            except ValueError:
                return 400, detail("invalid_labels", "Labels must be a JSON object of strings")
            if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
                return 400, detail("invalid_labels", "Labels must be a JSON object of strings")
        if any(len(s) < 1000 for s in samples):
            return 400, detail("invalid_audio", "Voice sample quality too low")
        with self.lock:
            used = sum(1 for v in self.voices.values() if v["category"] != "premade")
            if used >= self.voice_limit:
                return 400, detail("voice_limit_reached", f"You have reached your maximum amount of custom voices "
                                   f"({used} / {self.voice_limit}). You can upgrade your subscription to increase your custom voice limit.")
            voice_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))
            self.voices[voice_id] = {
                "voice_id": voice_id, "name": form["name"], "category": "cloned", "labels": labels,
                "description": form.get("description"), "created_at_unix": int(time.time()),
                "samples": [{"sample_id": f"s{i}", "file_name": u.filename, "mime_type": u.mimetype,
                             "size_bytes": len(s)} for i, (u, s) in enumerate(zip(uploads, samples, strict=True))],
            }
            self.uploaded_samples[voice_id] = samples[0]
        return 200, {"voice_id": voice_id, "requires_verification": False}

    def _list_voices(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        search = (query.get("search") or [""])[0].lower()
        category = (query.get("category") or [""])[0]
        page_size = min(100, int((query.get("page_size") or ["10"])[0]))
        offset = int((query.get("next_page_token") or ["0"])[0] or 0)
        with self.lock:
            voices = list(self.voices.values())
        if category:
            voices = [v for v in voices if v["category"] == category]
        if search:
            def haystack(v: dict[str, Any]) -> str:
                return " ".join([v["name"] or "", v.get("description") or "", v["category"], *v["labels"].values()]).lower()
            voices = [v for v in voices if search in haystack(v)]
        voices.sort(key=lambda v: -(v.get("created_at_unix") or 0))
        page = voices[offset: offset + page_size]
        has_more = offset + page_size < len(voices)
        return 200, {"voices": page, "has_more": has_more, "total_count": len(voices),
                     "next_page_token": str(offset + page_size) if has_more else None}

    def _voice(self, method: str, voice_id: str) -> tuple[int, Any]:
        with self.lock:
            voice = self.voices.get(voice_id)
            if voice is None:
                return 404, detail("voice_not_found", f"A voice with the voice_id {voice_id} was not found.")
            if method == "DELETE":
                del self.voices[voice_id]
                return 200, {"status": "ok"}
            return 200, voice

    def _agent(self, method: str, agent_id: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            if agent_id not in self.agents and self.auto_create_agents:
                self.add_agent(agent_id)
            agent = self.agents.get(agent_id)
            if agent is None:
                return 404, detail("agent_not_found", f"Agent {agent_id} not found")
            if method == "GET":
                return 200, agent
            if not isinstance(body, dict):
                return 422, validation_detail(["body"], "Input should be a valid dictionary", "dict_type")
            config = body.get("conversation_config") or {}
            voice_id = (config.get("tts") or {}).get("voice_id")
            if voice_id is not None and voice_id not in self.voices:
                return 400, detail("voice_not_found", f"A voice with the voice_id {voice_id} was not found.")
            _merge(agent, body)
            return 200, agent


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


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
        if fake.latency:
            time.sleep(fake.latency)
        fault = fake._take_fault(self.command, parts.path)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.reset:
                # SO_LINGER 0: close with RST, as a crashed proxy would.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return
            if fault.status is not None:
                body = fault.body if fault.body is not None else detail(
                    "rate_limit_exceeded" if fault.status == 429 else "internal_server_error",
                    "Too many requests" if fault.status == 429 else "An internal error occurred")
                send_json(self, fault.status, body, fault.headers)
                return
        status, body = fake.route(record, raw, content_type)
        send_json(self, status, body)

    do_GET = do_POST = do_PATCH = do_DELETE = _serve


def main() -> None:
    parser = argparse.ArgumentParser(description="Local ElevenLabs API (sandbox) on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", default="sandbox", help="xi-api-key to require")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    args = parser.parse_args()
    fake = FakeElevenLabs(api_key=args.api_key, latency=args.latency, auto_create_agents=True, record_file_bytes=False)
    fake.start(args.port)
    print(f"local ElevenLabs API (sandbox) on {fake.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
