"""A local Twilio for tests, benchmarks and `make run`: its REST API and a phone call, on loopback.

REST, with Twilio's paths, form fields, HTTP Basic auth (account SID + auth token), status codes and
error bodies (`{"code", "message", "more_info", "status"}`, https://www.twilio.com/docs/usage/twilios-response):
- `GET /2010-04-01/Accounts/{Sid}/Calls/{CallSid}.json` (`from`, `to`, `caller_name`, `status`);
- `POST /2010-04-01/Accounts/{Sid}/Calls/{CallSid}.json` updates a live call with `Twiml` or `Url` (mutually
  exclusive) or `Status=completed`; a call that has ended answers `400` code 21220 ("Call is not in-progress");
- `GET .../Recordings/{RecordingSid}.wav`: the media, `404` (code 20404) for `media_delay` seconds after the
  recording was made, as Twilio may announce a file before it serves it;
- `DELETE .../Recordings/{RecordingSid}.json` (`204`), `GET /2010-04-01/Accounts/{Sid}.json`, and
  `GET/POST .../IncomingPhoneNumbers[/{Sid}].json` (voice URL and status callback of a number).

The phone: `place_call` plays Twilio running an inbound call against the service. It posts the
signed webhooks (`X-Twilio-Signature` computed by the `twilio` package over the public URL, as Twilio
signs the URL it called), follows the TwiML (`Say`, `Play`, `Pause`, `Gather`, `Record`, `Redirect`,
`Connect/Stream`, `Hangup`), presses the caller's key, "speaks" the caller's WAV at each beep (a
recording served as above, the `<Record>` action, then the `recordingStatusCallback`), lets a call
update replace whatever runs, and posts the status callback when the caller hangs up. A `Stream` to the
local ElevenLabs is "connected" by a GET of its URL (the sandbox's stand-in for the media WebSocket).
Everything it was sent is recorded. `chaos` fails a share of the REST requests a call's recording step makes
(the media fetch, the Calls fetch and the call update) at random with Twilio's `500`/`503`, for a soak.
`make run` serves it; `POST /_sandbox/calls` places a call there
(`python -m precall dial`), `GET /_sandbox/calls/{CallSid}` shows what the caller experienced.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import re
import secrets
import socket
import sys
import threading
import time
import wave
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import requests
from twilio.request_validator import RequestValidator

from sandbox.processes import send_json

SANDBOX_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
SANDBOX_AUTH_TOKEN = "sandbox-twilio-auth-token"
WEBHOOK_TIMEOUT_SECONDS = 15.0  # Twilio waits at most 15 s for a webhook's answer (error 11200)
_API = "/2010-04-01/Accounts"
# What `chaos` may fail, by the name its faults are counted under: the requests of a call's recording step.
CHAOS_ENDPOINTS = {"media fetch": ("GET", re.compile(_API + r"/AC[0-9a-f]{32}/Recordings/RE[0-9a-f]{32}(\.wav)?")),
                   "call fetch": ("GET", re.compile(_API + r"/AC[0-9a-f]{32}/Calls/CA[0-9a-f]{32}\.json")),
                   "call update": ("POST", re.compile(_API + r"/AC[0-9a-f]{32}/Calls/CA[0-9a-f]{32}\.json"))}


def twilio_error(status: int, code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    form: dict[str, str]
    received_at: float = field(default_factory=time.monotonic)


@dataclass
class Recording:
    sid: str
    call_sid: str
    data: bytes
    available_at: float
    deleted: bool = False


@dataclass
class Caller:
    """What the person on the phone does. `speech`: the WAV spoken at each beep, in order (b"" or none
    left: silence, so Twilio records nothing). `digits` None: no key pressed at the consent question."""

    from_number: str = "+31612345678"
    to_number: str = "+31201234567"
    caller_name: str | None = "Ivan"
    digits: str | None = "1"
    speech: list[bytes] = field(default_factory=list)
    talk_seconds: float = 0.0
    hangs_up_on_hold: float | None = None  # seconds into the first pause after which the caller hangs up


@dataclass
class CallEvent:
    at: float  # seconds since the call came in
    kind: str
    detail: dict[str, Any]


class _Navigate(Exception):
    def __init__(self, twiml: str) -> None:
        super().__init__("navigate")
        self.twiml = twiml


class _Hangup(Exception):
    pass


class SimulatedCall:
    """One inbound call, run by Twilio (this server) in its own thread."""

    def __init__(self, twilio: FakeTwilio, caller: Caller, public_base_url: str, route: Callable[[str], str]) -> None:
        self.sid = _sid("CA")
        self.twilio = twilio
        self.caller = caller
        self.public = public_base_url.rstrip("/")
        self.route = route
        self.events: list[CallEvent] = []
        self.status = "in-progress"
        self.done = threading.Event()
        self._started = time.monotonic()
        self._speech = list(caller.speech)
        self._update: tuple[str, str] | None = None  # ("twiml", text) or ("url", url) or ("status", "completed")
        self._updated = threading.Event()
        self._lock = threading.Lock()
        self._document_url = self.public + "/twilio/voice"

    # -- what a test or the dial CLI reads ------------------------------------------------

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def first(self, kind: str) -> CallEvent | None:
        return next((e for e in self.events if e.kind == kind), None)

    def as_json(self) -> dict[str, Any]:
        return {"call_sid": self.sid, "status": self.status, "done": self.done.is_set(),
                "events": [{"at": round(e.at, 3), "kind": e.kind, **e.detail} for e in self.events]}

    # -- the REST side ---------------------------------------------------------------------

    def update(self, form: dict[str, str]) -> tuple[int, Any]:
        if "Twiml" in form and "Url" in form:
            return 400, twilio_error(400, 21218, "Twiml and Url are mutually exclusive")
        with self._lock:
            if self.status != "in-progress":
                return 400, twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
            if "Twiml" in form:
                self._update = ("twiml", form["Twiml"])
            elif "Url" in form:
                self._update = ("url", form["Url"])
            elif form.get("Status") in ("completed", "canceled"):
                self._update = ("status", "completed")
            else:
                return 400, twilio_error(400, 21201, "No TwiML, Url or Status given")
            self._updated.set()
        return 200, self.resource()

    def resource(self) -> dict[str, Any]:
        return {"sid": self.sid, "account_sid": self.twilio.account_sid, "status": self.status, "direction": "inbound",
                "from": self.caller.from_number, "to": self.caller.to_number, "caller_name": self.caller.caller_name,
                "api_version": "2010-04-01",
                "uri": f"{_API}/{self.twilio.account_sid}/Calls/{self.sid}.json"}

    # -- running the call ------------------------------------------------------------------

    def run(self) -> None:
        try:
            twiml = self._fetch(self._document_url, {})
            while twiml is not None:
                try:
                    self._execute(twiml)
                    twiml = None  # the document ran out: Twilio hangs up
                except _Navigate as navigate:
                    twiml = navigate.twiml
                except _Interrupted:
                    twiml = self._take_update()
        except _Hangup:
            pass
        finally:
            with self._lock:
                self.status = "completed"
            self._event("hangup")
            self._post_async(self.public + "/twilio/status", {"CallStatus": "completed",
                                                              "CallDuration": str(round(self._now()))})
            self.done.set()

    def _now(self) -> float:
        return time.monotonic() - self._started

    def _event(self, kind: str, **detail: Any) -> None:
        with self._lock:
            self.events.append(CallEvent(self._now(), kind, detail))

    def _params(self, extra: dict[str, str]) -> dict[str, str]:
        params = {"AccountSid": self.twilio.account_sid, "CallSid": self.sid, "From": self.caller.from_number,
                  "To": self.caller.to_number, "CallStatus": self.status, "Direction": "inbound", "ApiVersion": "2010-04-01"}
        if self.caller.caller_name:
            params["CallerName"] = self.caller.caller_name
        params.update(extra)
        return params

    def _check_update(self) -> None:
        if self._updated.is_set():
            raise _Interrupted()

    def _take_update(self) -> str | None:
        with self._lock:
            update, self._update = self._update, None
            self._updated.clear()
        assert update is not None
        kind, value = update
        self._event("updated", how=kind)
        if kind == "status":
            raise _Hangup()
        if kind == "url":
            return self._fetch(urljoin(self._document_url, value), {})
        return value

    def _fetch(self, url: str, extra: dict[str, str]) -> str:
        """POST a webhook as Twilio does and return the TwiML it answered; an answer Twilio cannot
        use ends the call (Twilio says "an application error has occurred" and hangs up)."""
        self._document_url = url
        answer = self.twilio.post_webhook(url, self._params(extra), self.route)
        self._check_update()
        if answer is None or answer.status_code != 200 or "xml" not in answer.headers.get("Content-Type", ""):
            self._event("application_error", url=urlsplit(url).path,
                        status=None if answer is None else answer.status_code)
            raise _Hangup()
        return answer.text

    def _post_async(self, url: str, extra: dict[str, str], delay: float = 0.0, call_params: bool = True) -> None:
        """A callback. A recording status callback carries the recording's fields, `AccountSid` and `CallSid`
        only: no `From`, `To` or `CallerName` (https://www.twilio.com/docs/voice/twiml/record)."""
        params = self._params(extra) if call_params else {"AccountSid": self.twilio.account_sid, "CallSid": self.sid, **extra}

        def post() -> None:
            if delay:
                time.sleep(delay)
            self.twilio.post_webhook(url, params, self.route)

        threading.Thread(target=post, daemon=True).start()

    def _execute(self, twiml: str) -> None:
        try:
            root = ET.fromstring(twiml)
        except ET.ParseError:
            self._event("application_error", reason="TwiML is not XML")
            raise _Hangup() from None
        if root.tag != "Response":
            self._event("application_error", reason=f"root element {root.tag}")
            raise _Hangup()
        for verb in root:
            self._check_update()
            getattr(self, f"_{verb.tag.lower()}", self._unsupported)(verb)

    def _unsupported(self, verb: ET.Element) -> None:
        self._event("unsupported", verb=verb.tag)

    def _say(self, verb: ET.Element) -> None:
        self._event("say", text=verb.text or "", language=verb.get("language"))

    def _play(self, verb: ET.Element) -> None:
        self._event("play", url=verb.text or "")

    def _pause(self, verb: ET.Element) -> None:
        length = float(verb.get("length", "1"))
        self._event("pause", seconds=length)
        patience = self.caller.hangs_up_on_hold
        if patience is not None and patience < length:
            if self._updated.wait(patience * self.twilio.time_scale):
                raise _Interrupted()
            raise _Hangup()
        if self._updated.wait(length * self.twilio.time_scale):
            raise _Interrupted()

    def _redirect(self, verb: ET.Element) -> None:
        raise _Navigate(self._fetch(urljoin(self._document_url, (verb.text or "").strip()), {}))

    def _hangup(self, verb: ET.Element) -> None:
        raise _Hangup()

    def _gather(self, verb: ET.Element) -> None:
        for nested in verb:
            getattr(self, f"_{nested.tag.lower()}", self._unsupported)(nested)
        self._check_update()
        if not self.caller.digits:
            self._event("no_key")
            return  # Twilio goes on with the next verb when nothing was pressed
        digits = self.caller.digits[: int(verb.get("numDigits", "1"))]
        self._event("pressed", digits=digits)
        action = urljoin(self._document_url, verb.get("action") or self._document_url)
        raise _Navigate(self._fetch(action, {"Digits": digits}))

    def _record(self, verb: ET.Element) -> None:
        if verb.get("playBeep", "true") == "true":
            self._event("beep")
        speech = self._speech.pop(0) if self._speech else b""
        callback = verb.get("recordingStatusCallback")
        callback_url = urljoin(self._document_url, callback) if callback else None
        events = (verb.get("recordingStatusCallbackEvent") or "completed").split()
        seconds = wav_seconds(speech) if speech else 0.0
        started = datetime.now(timezone.utc) - timedelta(seconds=seconds)  # the caller spoke until now
        if not speech:
            self._event("silence")
            if callback_url and "absent" in events:
                self._post_async(callback_url, {"RecordingStatus": "absent", "RecordingSid": _sid("RE"),
                                                "RecordingDuration": "0", "RecordingStartTime": format_datetime(started),
                                                "RecordingChannels": "1", "RecordingSource": "RecordVerb"}, call_params=False)
            return  # an empty recording skips the action: the next verb runs
        recording = self.twilio.add_recording(self.sid, speech)
        self._event("spoke", seconds=round(seconds, 2), recording_sid=recording.sid)
        url = f"{self.twilio.public_api_url}{_API}/{self.twilio.account_sid}/Recordings/{recording.sid}"
        fields = {"RecordingUrl": url, "RecordingSid": recording.sid, "RecordingDuration": str(round(seconds)),
                  "RecordingStartTime": format_datetime(started), "RecordingChannels": "1", "RecordingSource": "RecordVerb"}
        if callback_url and "completed" in events:
            self._post_async(callback_url, {**fields, "RecordingStatus": "completed"}, self.twilio.callback_delay,
                             call_params=False)
        action = urljoin(self._document_url, verb.get("action") or self._document_url)
        raise _Navigate(self._fetch(action, fields))

    def _connect(self, verb: ET.Element) -> None:
        stream = verb.find("Stream")
        if stream is None:
            self._unsupported(verb)
            return
        url = stream.get("url", "")
        agent = self.twilio.open_stream(url)
        self._event("connected", stream_url=url, **agent)
        if self._updated.wait(self.caller.talk_seconds * self.twilio.time_scale):
            raise _Interrupted()  # a call update replaces the conversation: Twilio closes the stream
        raise _Hangup()


class _Interrupted(Exception):
    """A call update arrived: what runs now stops and the update's TwiML runs instead."""


def wav_seconds(data: bytes) -> float:
    try:
        with wave.open(BytesIO(data)) as reader:
            return reader.getnframes() / float(reader.getframerate())
    except (wave.Error, EOFError):
        return 0.0


class FakeTwilio:
    """State and behaviour; `start()` serves it on 127.0.0.1. Knobs: `media_delay` (seconds a new
    recording answers 404), `callback_delay` (seconds between the `<Record>` action and the recording
    status callback), `time_scale` (multiplies every `<Pause>` and talk time; 1 is real time)."""

    def __init__(self, account_sid: str = SANDBOX_ACCOUNT_SID, auth_token: str = SANDBOX_AUTH_TOKEN,
                 media_delay: float = 0.0, callback_delay: float = 0.05) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.media_delay = media_delay
        self.callback_delay = callback_delay
        self.time_scale = 1.0
        self.media_latency = 0.0
        self.update_latency = 0.0
        self.lock = threading.RLock()
        self.requests: list[RecordedRequest] = []
        self.webhooks: list[tuple[str, dict[str, str], int | None]] = []  # (public URL, params, status) sent
        self.recordings: dict[str, Recording] = {}
        self.calls: dict[str, SimulatedCall] = {}
        self.numbers: dict[str, dict[str, Any]] = {}
        self.faults: list[tuple[str, re.Pattern[str], int | None, float, int]] = []
        self.chaos_rate = 0.0
        self.fault_counts: Counter[str] = Counter()  # chaos faults by kind, e.g. "503 media fetch"
        self._chaos_random = random.Random(0)
        self.service_url: str | None = None  # where `/_sandbox/calls` sends calls (make run)
        self._server: ThreadingHTTPServer | None = None
        self._session = requests.Session()

    def start(self, port: int = 0) -> FakeTwilio:
        handler = type("Handler", (_Handler,), {"twilio": self})
        self._server = _Server(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-twilio", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def public_api_url(self) -> str:
        """Where RecordingUrl points (Twilio's API host; here this server)."""
        return self.url

    # -- test helpers --------------------------------------------------------------------

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.webhooks.clear()
            self.recordings.clear()
            self.calls.clear()
            self.faults.clear()
            self.chaos_rate = 0.0
            self.fault_counts.clear()
            self.media_delay, self.callback_delay, self.time_scale = 0.0, 0.05, 1.0
            self.media_latency = self.update_latency = 0.0

    def inject(self, method: str, path: str, status: int | None = None, delay: float = 0.0, times: int = 1) -> None:
        """The next `times` matching REST requests stall `delay` seconds, then answer `status` (if given)."""
        with self.lock:
            self.faults.append((method.upper(), re.compile(path), status, delay, times))

    def chaos(self, rate: float, seed: int) -> None:
        """Fail about `rate` of the requests in `CHAOS_ENDPOINTS` with a `500` or `503` (Twilio's error body), from
        a generator seeded with `seed`; `fault_counts` counts them. A failed call update is not applied."""
        with self.lock:
            self.chaos_rate, self._chaos_random = rate, random.Random(seed)

    def requests_to(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        with self.lock:
            return [r for r in self.requests if r.method == method and re.fullmatch(path_pattern, r.path)]

    def add_number(self, phone_number: str, voice_url: str = "", status_callback: str = "") -> str:
        sid = _sid("PN")
        with self.lock:
            self.numbers[sid] = {"sid": sid, "account_sid": self.account_sid, "phone_number": phone_number,
                                 "friendly_name": phone_number, "voice_url": voice_url, "voice_method": "POST",
                                 "status_callback": status_callback, "status_callback_method": "POST",
                                 "uri": f"{_API}/{self.account_sid}/IncomingPhoneNumbers/{sid}.json"}
        return sid

    def add_recording(self, call_sid: str, data: bytes) -> Recording:
        recording = Recording(_sid("RE"), call_sid, data, time.monotonic() + self.media_delay)
        with self.lock:
            self.recordings[recording.sid] = recording
        return recording

    def place_call(self, caller: Caller, public_base_url: str, route: Callable[[str], str] | str) -> SimulatedCall:
        """An inbound call to the service. `route` maps each public webhook URL to where it is really sent
        (a base URL string: the same for all; a function: e.g. two instances behind one public URL)."""
        if isinstance(route, str):
            target = route.rstrip("/")
            public = public_base_url.rstrip("/")
            route = lambda url: target + url[len(public):] if url.startswith(public) else url  # noqa: E731
        call = SimulatedCall(self, caller, public_base_url, route)
        with self.lock:
            self.calls[call.sid] = call
        threading.Thread(target=call.run, name=f"call-{call.sid[:8]}", daemon=True).start()
        return call

    def sign(self, url: str, params: dict[str, str]) -> str:
        return RequestValidator(self.auth_token).compute_signature(url, params)

    def post_webhook(self, url: str, params: dict[str, str], route: Callable[[str], str]) -> requests.Response | None:
        """Twilio's webhook request: form-encoded, signed over the public `url`, 15 s at most."""
        headers = {"X-Twilio-Signature": self.sign(url, params), "User-Agent": "TwilioProxy/1.1",
                   "Content-Type": "application/x-www-form-urlencoded"}
        try:
            answer = self._session.post(route(url), data=params, headers=headers, timeout=WEBHOOK_TIMEOUT_SECONDS)
        except requests.RequestException:
            answer = None
        with self.lock:
            self.webhooks.append((url, dict(params), None if answer is None else answer.status_code))
        return answer

    def open_stream(self, url: str) -> dict[str, Any]:
        """Connect a `<Stream>`: with the local ElevenLabs, a GET of its URL starts the conversation and
        says which voice and greeting it has; any other URL is only noted."""
        if not url.startswith("ws://127.0.0.1"):
            return {}
        try:
            answer = self._session.get("http://" + url[len("ws://"):], timeout=5)
            return answer.json() if answer.status_code == 200 else {"stream_error": answer.status_code}
        except (requests.RequestException, ValueError):
            return {"stream_error": "unreachable"}

    # -- the REST API --------------------------------------------------------------------

    def route(self, method: str, path: str, headers: dict[str, str], form: dict[str, str],
              query: dict[str, list[str]]) -> tuple[int, Any, str]:
        if path.startswith("/_sandbox/"):
            return self._sandbox(method, path, form)
        if not self._authorised(headers.get("authorization", "")):
            return 401, twilio_error(401, 20003, "Authenticate"), "json"
        prefix = f"{_API}/{self.account_sid}"
        if method == "GET" and path == prefix + ".json":
            return 200, {"sid": self.account_sid, "friendly_name": "Sandbox account", "status": "active",
                         "type": "Full"}, "json"
        if not path.startswith(prefix + "/"):
            return 404, twilio_error(404, 20404, f"The requested resource {path} was not found"), "json"
        rest = path[len(prefix):]
        match = re.fullmatch(r"/Calls/(CA[0-9a-f]{32})\.json", rest)
        if match and method in ("GET", "POST"):
            time.sleep(self.update_latency if method == "POST" else self.media_latency)
            with self.lock:
                call = self.calls.get(match.group(1))
            if call is None:
                return 404, twilio_error(404, 20404, f"The requested resource {path} was not found"), "json"
            if method == "GET":
                return 200, call.resource(), "json"
            status, body = call.update(form)
            return status, body, "json"
        match = re.fullmatch(r"/Recordings/(RE[0-9a-f]{32})(\.wav|\.json)?", rest)
        if match:
            return self._recording(method, path, match.group(1), match.group(2) or "")
        if rest == "/IncomingPhoneNumbers.json" and method == "GET":
            wanted = (query.get("PhoneNumber") or [None])[0]
            with self.lock:
                numbers = [dict(n) for n in self.numbers.values() if wanted in (None, n["phone_number"])]
            return 200, {"incoming_phone_numbers": numbers, "page": 0, "page_size": 50}, "json"
        match = re.fullmatch(r"/IncomingPhoneNumbers/(PN[0-9a-f]{32})\.json", rest)
        if match and method in ("GET", "POST"):
            with self.lock:
                number = self.numbers.get(match.group(1))
                if number is None:
                    return 404, twilio_error(404, 20404, f"The requested resource {path} was not found"), "json"
                for name, key in (("VoiceUrl", "voice_url"), ("VoiceMethod", "voice_method"),
                                  ("StatusCallback", "status_callback"), ("StatusCallbackMethod", "status_callback_method")):
                    if method == "POST" and name in form:
                        number[key] = form[name]
                return 200, dict(number), "json"
        return 404, twilio_error(404, 20404, f"The requested resource {path} was not found"), "json"

    def _recording(self, method: str, path: str, sid: str, extension: str) -> tuple[int, Any, str]:
        missing = (404, twilio_error(404, 20404, f"The requested resource {path} was not found"), "json")
        with self.lock:
            recording = self.recordings.get(sid)
        if recording is None or recording.deleted:
            return missing
        if method == "DELETE" and extension == ".json":
            recording.deleted = True
            return 204, None, "json"
        if method == "GET" and extension in ("", ".wav"):
            time.sleep(self.media_latency)
            if time.monotonic() < recording.available_at:
                return missing
            return 200, recording.data, "wav"
        return 405, twilio_error(405, 20004, "Method not allowed"), "json"

    def _authorised(self, header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == self.account_sid and secrets.compare_digest(password, self.auth_token)

    def _sandbox(self, method: str, path: str, form: dict[str, str]) -> tuple[int, Any, str]:
        """Sandbox-only routes (no Twilio equivalent): place a call against `service_url`, read a call."""
        if method == "POST" and path == "/_sandbox/calls":
            service = form.get("service_url") or self.service_url
            if not service:
                return 400, {"message": "no service_url"}, "json"
            try:
                speech = [base64.b64decode(part) for part in json.loads(form.get("speech", "[]"))]
            except (ValueError, TypeError):
                return 400, {"message": "speech must be a JSON list of base64 WAVs"}, "json"
            caller = Caller(caller_name=form.get("caller_name") or None, digits=form.get("digits") or None, speech=speech,
                            talk_seconds=float(form.get("talk_seconds", "2")))
            call = self.place_call(caller, form.get("public_base_url") or service, service)
            return 201, {"call_sid": call.sid}, "json"
        match = re.fullmatch(r"/_sandbox/calls/(CA[0-9a-f]{32})", path)
        if match and method == "GET":
            with self.lock:
                call = self.calls.get(match.group(1))
                if call is None:
                    return 404, {"message": "no such call"}, "json"
                body = call.as_json()
                body["recordings"] = [{"sid": r.sid, "deleted": r.deleted} for r in self.recordings.values()
                                      if r.call_sid == call.sid]
            return 200, body, "json"
        return 404, {"message": "not found"}, "json"

    def _chaos_fault(self, method: str, path: str) -> tuple[int | None, float] | None:
        endpoint = next((name for name, (wanted, pattern) in CHAOS_ENDPOINTS.items()
                         if wanted == method and pattern.fullmatch(path)), None)
        with self.lock:
            if endpoint is None or self.chaos_rate <= 0 or self._chaos_random.random() >= self.chaos_rate:
                return None
            status = self._chaos_random.choice((500, 503))
            self.fault_counts[f"{status} {endpoint}"] += 1
        return status, 0.0

    def _take_fault(self, method: str, path: str) -> tuple[int | None, float] | None:
        with self.lock:
            for index, (wanted, pattern, status, delay, times) in enumerate(self.faults):
                if wanted in (method, "*") and pattern.fullmatch(path):
                    if times <= 1:
                        del self.faults[index]
                    else:
                        self.faults[index] = (wanted, pattern, status, delay, times - 1)
                    return status, delay
        return None


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    twilio: FakeTwilio
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        twilio = self.twilio
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        form = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        with twilio.lock:
            twilio.requests.append(RecordedRequest(self.command, parts.path, parse_qs(parts.query), headers, form))
        fault = twilio._take_fault(self.command, parts.path) or twilio._chaos_fault(self.command, parts.path)
        if fault is not None:
            status, delay = fault
            time.sleep(delay)
            if status is not None:
                send_json(self, status, twilio_error(status, 20500 if status >= 500 else 20001, "Injected failure"))
                return
        status, body, kind = twilio.route(self.command, parts.path, headers, form, parse_qs(parts.query))
        if kind == "wav":
            self.send_response(status)
            self.send_header("Content-Type", "audio/x-wav")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif body is None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            send_json(self, status, body)

    do_GET = do_POST = do_DELETE = _serve


def main() -> None:
    parser = argparse.ArgumentParser(description="Local Twilio API and phone (sandbox) on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--service-url", default="http://127.0.0.1:8080", help="where calls go (precall_webhook)")
    parser.add_argument("--media-delay", type=float, default=1.0, help="seconds a new recording answers 404")
    args = parser.parse_args()
    twilio = FakeTwilio(media_delay=args.media_delay).start(args.port)
    twilio.service_url = args.service_url
    print(f"local Twilio (sandbox) on {twilio.url}, account {twilio.account_sid}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        twilio.stop()


if __name__ == "__main__":
    main()
