"""The telephony front under test: the real functions-framework server, the local Twilio and ElevenLabs."""

from __future__ import annotations

import io
import json
import math
import struct
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.elevenlabs_server import TWILIO_AUDIO_FORMAT, FakeElevenLabs
from sandbox.processes import ROOT, FunctionServer
from sandbox.twilio_server import Caller, FakeTwilio, SimulatedCall
from tests.conftest import AGENT_ID, API_KEY, SECRET, wait_until

PUBLIC_BASE_URL = "https://precall-webhook-abc123-ez.a.run.app"
SAMPLE = (ROOT / "samples" / "sample.wav").read_bytes()


def tone_wav(seconds: float, rate: int = 8000) -> bytes:
    """A WAV of a 440 Hz tone: decodable audio of a chosen length (too short to clone when under 3 s)."""
    frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(int(seconds * rate)))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(frames)
    return buffer.getvalue()


def service_env(fake: FakeElevenLabs, twilio: FakeTwilio, **extra: str) -> dict[str, str]:
    env = {"ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_WEBHOOK_SECRET": SECRET, "ELEVENLABS_BASE_URL": fake.url,
           "ELEVENLABS_AGENT_ID": AGENT_ID, "AGENT_UPDATE_MODE": "patch", "TWILIO_ACCOUNT_SID": twilio.account_sid,
           "TWILIO_AUTH_TOKEN": twilio.auth_token, "TWILIO_API_BASE_URL": twilio.url, "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
           "TWILIO_HOLD_SECONDS": "5", "THREADS": "64"}
    env.update(extra)
    return env


def telephony_agent(fake: FakeElevenLabs, **permissions: bool) -> None:
    fake.add_agent(AGENT_ID, audio_format=TWILIO_AUDIO_FORMAT, first_message="Hallo {{caller_name}}!",
                   **{"allow_first_message": True, "allow_voice": True, **permissions})


def dial(twilio: FakeTwilio, service: FunctionServer | Any, caller: Caller | None = None, timeout: float = 30.0) -> SimulatedCall:
    """Place a call and wait until it has ended."""
    route = service if isinstance(service, str) or callable(service) and not isinstance(service, FunctionServer) else service.url
    call = twilio.place_call(caller or Caller(speech=[SAMPLE]), PUBLIC_BASE_URL, route)
    assert call.done.wait(timeout), call.kinds()
    return call


def log_lines(server: FunctionServer, event_type: str | None = None) -> list[dict[str, Any]]:
    lines = []
    for line in server.logs().splitlines():
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if event_type is None or entry.get("event_type") == event_type:
                lines.append(entry)
    return lines


def wait_for_log(server: FunctionServer, event_type: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    return wait_until(lambda: log_lines(server, event_type), timeout=timeout, interval=0.05)


@pytest.fixture(scope="session")
def twilio_server() -> Iterator[FakeTwilio]:
    server = FakeTwilio().start()
    yield server
    server.stop()


@pytest.fixture
def twilio(twilio_server: FakeTwilio) -> FakeTwilio:
    twilio_server.reset()
    return twilio_server


@pytest.fixture
def start_service(fake: FakeElevenLabs, twilio: FakeTwilio, tmp_path: Path) -> Iterator[Any]:
    """`start_service(**env)`: a precall_webhook instance with the telephony front on (stopped after the test)."""
    servers: list[FunctionServer] = []

    def start(**extra: str) -> FunctionServer:
        server = FunctionServer("precall_webhook", service_env(fake, twilio, **extra)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def shared_service(fake_server: FakeElevenLabs, twilio_server: FakeTwilio) -> Iterator[FunctionServer]:
    """One instance for the tests of a module that keep the default settings and agent (its override
    cache lives for minutes, so a test that changes the agent's switches starts its own)."""
    telephony_agent(fake_server)  # read (and cached) by the instance as it starts
    server = FunctionServer("precall_webhook", service_env(fake_server, twilio_server)).start()
    yield server
    server.stop()
