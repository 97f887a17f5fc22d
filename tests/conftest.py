"""Shared fixtures: the local ElevenLabs server, real audio files, signed requests, the app."""

from __future__ import annotations

import base64
import fnmatch
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from precall.signature import sign  # noqa: E402
from sandbox.elevenlabs_server import FakeElevenLabs  # noqa: E402
from sandbox.processes import FunctionServer  # noqa: E402
from tests.audio_fixtures import build_fixtures, tools_missing  # noqa: E402
from voiceclone.config import Settings  # noqa: E402

API_KEY = "test-api-key"
SECRET = "whsec_test_secret"
AGENT_ID = "agent_def456uvw"
MAX_SAMPLE_BYTES = Settings.max_sample_bytes  # the service's default MAX_SAMPLE_BYTES
ALLOWED_SKIPS = ROOT / "tests" / "allowed_skips.txt"


# -- What CI refuses: a skip it was not told to expect, an emulator test not marked as one ----------

def allowed_skips(path: Path = ALLOWED_SKIPS) -> dict[str, str]:
    """`test id pattern -> reason` from the allow-list: one `PATTERN  # reason` a line (fnmatch
    patterns over pytest's node ids); an entry without a reason is refused, so each says why."""
    allowed: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pattern, _, reason = line.partition("#")
        if not pattern.strip() or not reason.strip():
            raise pytest.UsageError(f"{path.name}:{number}: each entry is `PATTERN  # reason`, got {line!r}")
        allowed[pattern.strip()] = reason.strip()
    return allowed


def refused_skip(report: pytest.TestReport | pytest.CollectReport, allow_list: Path = ALLOWED_SKIPS) -> str | None:
    """Under REQUIRE_NO_SKIPS=1 (set by .ci/run), why this skip must fail instead; None if it may skip."""
    if not report.skipped or hasattr(report, "wasxfail") or os.environ.get("REQUIRE_NO_SKIPS") != "1":
        return None
    if any(fnmatch.fnmatchcase(report.nodeid, pattern) for pattern in allowed_skips(allow_list)):
        return None
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return (f"skipped ({reason}), and REQUIRE_NO_SKIPS=1 fails every skip not listed in tests/allowed_skips.txt: "
            "install what it needs (scripts/bootstrap.sh test) or list it there with the reason")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    refusal = refused_skip(report)
    if refusal is not None:
        report.outcome, report.longrepr = "failed", refusal
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    report = yield
    refusal = refused_skip(report)
    if refusal is not None:
        report.outcome, report.longrepr = "failed", refusal
    return report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`-m "not emulator"` must leave out every test that starts the emulator: a test using the
    fixture without the mark is a collection error."""
    unmarked = [item.nodeid for item in items
                if "pubsub_emulator" in getattr(item, "fixturenames", ()) and item.get_closest_marker("emulator") is None]
    if unmarked:
        raise pytest.UsageError(f"tests using pubsub_emulator without @pytest.mark.emulator: {', '.join(unmarked)}")


@pytest.fixture(scope="session", autouse=True)
def private_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What the tests start (the Pub/Sub emulator, gcloud, `make run`'s stack) keeps its temporary files
    and logs under pytest's own temporary directory, never loose in /tmp."""
    previous = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp_path_factory.mktemp("tmpdir"))
    yield
    if previous is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = previous


@pytest.fixture(scope="session", autouse=True)
def no_shared_queue_file() -> Iterator[None]:
    """No test may use the working directory's local event queue (`.precall/`) or `make run`'s live-mode
    one (`.dev/`): a developer's pending deletions live there, and tests would share them."""
    shared = [ROOT / directory / name for directory in (".precall", ".dev")
              for name in ("voice-events.sqlite3", "voice-events.sqlite3-wal")]
    before = {path: path.stat().st_mtime_ns if path.exists() else None for path in shared}
    yield
    touched = [str(p) for p in shared if (p.stat().st_mtime_ns if p.exists() else None) != before[p]]
    assert not touched, f"a test wrote to a shared local event queue: {touched}"


@pytest.fixture(scope="session", autouse=True)
def quiet_background_logs() -> Iterator[None]:
    """In-process service logs go to `sys.stdout` as it is when they are written. A background thread
    (event queue, prefetch) finishing after its test would write between pytest's progress dots:
    such lines, written while no test captures output, are dropped."""
    from voiceclone.logs import _LateStreamHandler

    original = _LateStreamHandler.emit

    def emit(self: _LateStreamHandler, record: logging.LogRecord) -> None:
        if self._fixed_stream is None and sys.stdout is sys.__stdout__:
            return
        original(self, record)

    _LateStreamHandler.emit = emit  # type: ignore[method-assign]
    yield
    _LateStreamHandler.emit = original  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeElevenLabs]:
    server = FakeElevenLabs(api_key=API_KEY).start()
    yield server
    server.stop()


@pytest.fixture
def fake_mode() -> str:
    """`lenient` (the API at its most convenient) or `strict` (as documented, at its least convenient:
    custom labels dropped, `code` apart from `status`, 400 for missing voices, foreign voices paged).
    Parametrize it to run a test in both: `@pytest.mark.parametrize("fake_mode", BOTH_MODES)`."""
    return "lenient"


BOTH_MODES = ["lenient", "strict"]


@pytest.fixture
def fake(fake_server: FakeElevenLabs, fake_mode: str) -> FakeElevenLabs:
    fake_server.strict = fake_mode == "strict"
    fake_server.reset()
    fake_server.add_agent(AGENT_ID)
    fake_server.voice_limit = fake_server.custom_voice_count() + 30
    return fake_server


def seed_clone(fake: FakeElevenLabs, conversation_id: str, created_at: datetime, caller: str = "Ivan",
               labels: dict[str, str] | None = None) -> str:
    """A clone of this service already in the account, as the service names, describes and labels it
    (in strict mode the fake drops the custom labels, as ElevenLabs may)."""
    from voiceclone.naming import clone_description, clone_labels, voice_name

    return fake.add_voice(voice_name(caller, created_at, conversation_id), description=clone_description(conversation_id),
                          labels=labels if labels is not None else clone_labels(conversation_id, AGENT_ID, created_at),
                          created_at_unix=int(created_at.timestamp()))


@pytest.fixture(scope="session")
def audio_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    missing = tools_missing()
    if missing:
        pytest.skip(f"audio encoders not installed: {', '.join(missing)} (apt-get install ffmpeg espeak-ng)")
    return build_fixtures(tmp_path_factory.mktemp("audio"))


def service_settings(fake: FakeElevenLabs) -> dict[str, str]:
    """The service's settings pointed at the local ElevenLabs server."""
    return {"ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_WEBHOOK_SECRET": SECRET, "ELEVENLABS_BASE_URL": fake.url,
            "REQUEST_DEADLINE_SECONDS": "20"}


@pytest.fixture
def service_env(fake: FakeElevenLabs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Environment for the service pointed at the local ElevenLabs server; tests may add to it. Each
    test has its own local event queue file: no test sees another's events."""
    env = {**service_settings(fake), "LOCAL_QUEUE_PATH": str(tmp_path / "voice-events.sqlite3")}
    for name in list(os.environ):
        if name.startswith(("ELEVENLABS_", "VOICE_", "FIRST_MESSAGE_", "AGENT_UPDATE", "MAX_SAMPLE", "MIN_SAMPLE",
                            "CLONE_SAMPLE", "WEBHOOK_TOLERANCE", "REQUEST_DEADLINE", "DEBUG_SAMPLE", "FUNCTION_TARGET",
                            "LOCAL_QUEUE", "TWILIO_", "PUBLIC_BASE_URL", "SAMPLE_QUALITY", "MIN_SPEECH")):
            monkeypatch.delenv(name, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def make_client(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """A Flask test client of the real functions-framework app for `precall_webhook`."""
    import functions_framework

    modules: list[Any] = []

    def make(**env: str) -> Any:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        app = functions_framework.create_app(target="precall_webhook", source=str(ROOT / "main.py"))
        modules.append(sys.modules["main"])
        return app.test_client()

    yield make
    for module in modules:  # stop each instance's background event queue
        sink = getattr(module._runtime, "sink", None)
        if hasattr(sink, "close"):
            sink.close()


@pytest.fixture
def client(make_client: Callable[..., Any]) -> Any:
    return make_client()


def start_function_server(env: dict[str, str], target: str = "precall_webhook") -> FunctionServer:
    """The real server as deployed (`functions-framework --target TARGET`) with exactly `env`, up and
    answering (its `stop()` ends it and its workers)."""
    cloudevent = target == "cleanup_voices"
    server = FunctionServer(target, env, signature_type="cloudevent" if cloudevent else "http")
    return server.start(ready_path="/" if cloudevent else "/healthz")


@contextmanager
def function_server(env: dict[str, str], target: str = "precall_webhook") -> Iterator[FunctionServer]:
    """`start_function_server`, stopped on the way out (for fixtures wider than one test)."""
    server = start_function_server(env, target)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def real_server(service_env: dict[str, str]) -> Iterator[Callable[..., FunctionServer]]:
    """`real_server(**settings)` starts the real server (`target=` picks the function, default
    `precall_webhook`) with `service_env` plus `settings`; all it started are stopped together after
    the test (a stop waits for the workers to finish, so one at a time would add up)."""
    started: list[FunctionServer] = []

    def start(target: str = "precall_webhook", **settings: str) -> FunctionServer:
        started.append(start_function_server({**service_env, **settings}, target))
        return started[-1]
    yield start
    in_parallel(lambda server: server.stop(), started)


def signature_header(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    return sign(body, secret, int(time.time()) if timestamp is None else timestamp)


def json_body(sample: bytes | None, conversation_id: str = "conv_abc123xyz", agent_id: str | None = AGENT_ID,
              name: str | None = "Ivan", dob: str | None = "11.12.2007", filename: str = "sample.mp3",
              content_type: str = "audio/mpeg") -> bytes:
    document: dict[str, Any] = {"conversation_id": conversation_id}
    if agent_id is not None:
        document["agent_id"] = agent_id
    if sample is not None:
        document["voice_sample"] = {"data": base64.b64encode(sample).decode(), "filename": filename,
                                    "content_type": content_type}
    metadata = {k: v for k, v in (("name", name), ("date_of_birth", dob)) if v is not None}
    if metadata:
        document["caller_metadata"] = metadata
    return json.dumps(document).encode()


def post_call_body(conversation_id: str, kind: str = "post_call_transcription", call_sid: str | None = None,
                   event_timestamp: int | None = None, **data: Any) -> bytes:
    """An ElevenLabs post-call webhook body (`type`, `event_timestamp`, `data` with the agent, the
    conversation and its status); `call_sid` adds `data.metadata.phone_call` as for a Twilio call;
    `data` adds or replaces fields of `data`."""
    fields: dict[str, Any] = {"agent_id": AGENT_ID, "conversation_id": conversation_id, "status": "done"}
    if call_sid is not None:
        fields["metadata"] = {"phone_call": {"type": "twilio", "direction": "inbound", "call_sid": call_sid}}
    document = {"type": kind, "event_timestamp": int(time.time()) if event_timestamp is None else event_timestamp,
                "data": {**fields, **data}}
    return json.dumps(document).encode()


def multipart_body(sample: bytes, fields: dict[str, str], filename: str = "sample.bin",
                   content_type: str = "application/octet-stream") -> tuple[bytes, str]:
    prepared = requests.Request("POST", "http://localhost/webhook", data=fields,
                                files={"voice_sample": (filename, sample, content_type)}).prepare()
    return prepared.body, prepared.headers["Content-Type"]


def post_signed(client: Any, path: str, body: bytes, content_type: str = "application/json",
                secret: str = SECRET, header: str | None = None) -> Any:
    return client.post(path, data=body, headers={
        "Content-Type": content_type,
        "ElevenLabs-Signature": header if header is not None else signature_header(body, secret),
    })


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real emulator, once per session. Skips where it cannot run, unless
    REQUIRE_PUBSUB_EMULATOR=1 (set by .ci/run), where a missing emulator is a failure."""
    from sandbox.processes import free_port
    from sandbox.pubsub_emulator import PubSubEmulator, emulator_available

    reason = emulator_available()
    if reason is not None:
        if os.environ.get("REQUIRE_PUBSUB_EMULATOR") == "1":
            pytest.fail(f"REQUIRE_PUBSUB_EMULATOR=1 but the Pub/Sub emulator cannot run: {reason}")
        pytest.skip(f"Pub/Sub emulator unavailable: {reason}")
    emulator = PubSubEmulator(free_port(), log_dir=tmp_path_factory.mktemp("pubsub-emulator")).start()
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
    yield emulator
    emulator.stop()
    if previous is None:
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)
    else:
        os.environ["PUBSUB_EMULATOR_HOST"] = previous


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.2) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def log_events(output: str, event_type: str, **fields: Any) -> list[dict[str, Any]]:
    """The service's JSON log lines in `output` of this `event_type` whose fields have these values."""
    found = []
    for line in output.splitlines():
        if f'"{event_type}"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event_type") == event_type and all(entry.get(k) == v for k, v in fields.items()):
            found.append(entry)
    return found


def in_parallel(action: Callable[[Any], object], items: Iterable[Any]) -> None:
    """`action(item)` for every item, each in its own thread, all started before any is joined; the
    first exception a thread raised is raised here (a bare thread would only print it)."""
    errors: list[BaseException] = []

    def run(item: Any) -> None:
        try:
            action(item)
        except BaseException as error:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


class InBackground:
    """`action()` on its own thread, started at once; `join()` waits for it and raises what it raised
    (an assert in a bare thread would only print a warning and the test would pass)."""

    def __init__(self, action: Callable[[], object]) -> None:
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(action,), daemon=True)
        self._thread.start()

    def _run(self, action: Callable[[], object]) -> None:
        try:
            action()
        except BaseException as error:  # noqa: BLE001 - re-raised by join(), in the test's thread
            self._errors.append(error)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float = 120.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"still running after {timeout} s"
        if self._errors:
            raise self._errors[0]
