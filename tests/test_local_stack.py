"""`make run` as a user runs it: sandbox and live mode, the round trip its banner prints (clone,
see it in the account, end the call, see it deleted) pasted with no exports (the commands find the
stack through its state file), settings passed through, a bad setting or a taken port as one line,
and Ctrl-C, SIGTERM or a closed terminal (SIGHUP) stopping everything. Stopping under load and
through make: tests/test_stopping.py."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sandbox.processes import ROOT, free_port
from tests.conftest import AGENT_ID, API_KEY, wait_until
from voiceclone.config import ENVIRONMENT_VARIABLES


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def processes_mentioning(port: int) -> list[str]:
    """Command lines of live processes that name `port` (functions-framework, gcloud, the emulator's Java)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if re.search(rf"(?<![\d.]){port}(?!\d)", text) and "pytest" not in text:
            found.append(text)
    return found


def clean_env(**settings: str) -> dict[str, str]:
    """The user's shell without any service setting, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT_VARIABLES and not k.startswith(("ELEVENLABS_", "VOICE_"))}
    return {**env, **settings}


class Stack:
    """`scripts/dev.py` (what `make run` starts) in its own session, its terminal read line by line."""

    def __init__(self, *args: str, env: dict[str, str], log_dir: Path) -> None:
        self.port, self.cleanup_port = free_port(), free_port()
        self.log_dir = log_dir
        self.state_file = log_dir.parent / "stack.json"
        self.process = subprocess.Popen(
            [sys.executable, "scripts/dev.py", "--port", str(self.port), "--cleanup-port", str(self.cleanup_port),
             "--log-dir", str(log_dir), "--state-file", str(self.state_file), *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self) -> str:
        assert wait_until(lambda: any(line.startswith("READY") for line in self.lines) or self.process.poll() is not None,
                          timeout=120), self.output
        assert "READY" in self.output, self.output
        return self.output

    def banner_command(self, marker: str) -> str:
        """The banner line ending in `# {marker}...`, as a user would paste it."""
        return next(line for line in self.lines if f"# {marker}" in line).strip()

    def paste(self, command: str, **exports: str) -> subprocess.CompletedProcess[str]:
        """Run one banner line in a fresh shell from the repository, exporting nothing but `exports`; the
        stack is found through its state file (here not the default .dev/stack.json, so tests never meet a
        developer's own make run)."""
        env = clean_env(PRECALL_STACK_FILE=str(self.state_file), **exports)
        env.pop("PRECALL_URL", None)
        return subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    def stop(self, sig: int) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        code = self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        return code

    def assert_nothing_left(self, *ports: int) -> None:
        for port in (self.port, self.cleanup_port, *ports):
            assert not port_open(port), f"port {port} still open"
            assert processes_mentioning(port) == [], processes_mentioning(port)
        with pytest.raises(ProcessLookupError):  # nothing of dev.py's own group survived either
            os.killpg(self.process.pid, 0)


@pytest.mark.parametrize("use_emulator,stop_signal", [
    pytest.param(True, signal.SIGHUP, id="pubsub-emulator-closed-terminal", marks=pytest.mark.emulator),
    pytest.param(False, signal.SIGINT, id="in-process-queue-ctrl-c"),
])
def test_sandbox_round_trip_as_the_banner_prints_it_then_everything_stops(use_emulator, stop_signal, request, tmp_path):
    if use_emulator:
        request.getfixturevalue("pubsub_emulator")  # skips (or fails under CI) where it cannot run
    stack = Stack(*([] if use_emulator else ["--no-emulator"]), env=clean_env(), log_dir=tmp_path / "run")
    emulator_port = None
    try:
        output = stack.wait_ready()
        assert "sandbox mode" in output
        assert ("Pub/Sub emulator at" in output) == use_emulator
        fake_port = int(re.search(r"test server at http://127\.0\.0\.1:(\d+)", output).group(1))
        if use_emulator:
            emulator_port = int(re.search(r"Pub/Sub emulator at 127\.0\.0\.1:(\d+)", output).group(1))

        state = json.loads(stack.state_file.read_text())  # what the operator commands read: the sandbox's own
        assert state["settings"]["ELEVENLABS_BASE_URL"] == f"http://127.0.0.1:{fake_port}"
        assert state["settings"]["PRECALL_URL"] == f"http://127.0.0.1:{stack.port}"
        assert stack.state_file.stat().st_mode & 0o077 == 0

        sent = stack.paste(stack.banner_command("1."))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "using make run's stack" in sent.stderr
        voice_id = json.loads(sent.stdout)["voice_id"]
        listed = stack.paste(stack.banner_command("2."))
        assert listed.returncode == 0, listed.stderr
        assert voice_id in listed.stdout and "this service's clones: 1," in listed.stdout
        assert wait_until(lambda: "[voice_clone_success]" in stack.output)  # the terminal shows the call

        ended = stack.paste(stack.banner_command("3."))
        assert ended.returncode == 0 and json.loads(ended.stdout)["status"] == "accepted"
        assert wait_until(lambda: f"[voice_deleted]  voice_id={voice_id}" in stack.output, timeout=30), stack.output
        gone = stack.paste(stack.banner_command("4."))
        assert voice_id not in gone.stdout and "this service's clones: 0," in gone.stdout

        called = stack.paste(stack.banner_command("5."))  # a phone call through the local Twilio
        assert called.returncode == 0, called.stdout + called.stderr
        assert 'connected to the agent: voice "Ivan_Clone_' in called.stdout and "clone: deleted" in called.stdout
        music = stack.paste(stack.banner_command("6."))
        assert music.returncode == 1 and json.loads(music.stdout)["reasons"] == ["too_little_speech"], music.stdout
        measures = stack.paste(stack.banner_command("7."))
        assert measures.returncode == 1 and "verdict: refused: too_little_speech" in measures.stdout
    finally:
        code = stack.stop(stop_signal)
    assert code == 0, stack.output
    assert "stopped" in stack.output
    stack.assert_nothing_left(fake_port, *([emulator_port] if emulator_port else []))
    assert not stack.state_file.exists()  # the commands no longer find a stack that is gone
    kept = (stack.log_dir / "precall_webhook.log").read_text()
    assert '"event_type": "voice_clone_success"' in kept  # the JSON lines stay, per run
    assert (stack.log_dir / "pubsub-emulator.log").exists() == use_emulator


def test_live_mode_talks_to_the_api_given_with_the_users_key_and_settings(fake, tmp_path):
    """The local ElevenLabs server poses as the real API: a base URL and key, exported as a user would."""
    stack = Stack("--no-emulator", log_dir=tmp_path / "run", env=clean_env(
        ELEVENLABS_API_KEY=API_KEY, ELEVENLABS_BASE_URL=fake.url, ELEVENLABS_AGENT_ID=AGENT_ID, AGENT_UPDATE_MODE="override",
        LOCAL_QUEUE_PATH=str(tmp_path / "voice-events.sqlite3")))  # not the developer's own .dev/ queue
    try:
        output = stack.wait_ready()
        assert f"live mode: ElevenLabs at {fake.url}" in output and "sandbox" not in output
        assert API_KEY not in output  # the key is never printed
        assert API_KEY not in stack.state_file.read_text()  # nor written for the commands: the user exports it
        assert "first export your ELEVENLABS_API_KEY" in output
        sent = stack.paste(stack.banner_command("1."))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        answer = json.loads(sent.stdout)
        assert answer["voice_id"] in fake.voices
        assert answer["agent_updated"] is False and fake.requests_to("PATCH", r"/v1/convai/agents/.*") == []  # override mode
        init = stack.paste(".venv/bin/python -m precall init --call-sid CA9")
        assert json.loads(init.stdout)["type"] == "conversation_initiation_client_data", init.stderr
        assert stack.paste(stack.banner_command("3.")).returncode == 0
        assert wait_until(lambda: answer["voice_id"] not in fake.voices, timeout=30)
    finally:
        code = stack.stop(signal.SIGTERM)
    assert code == 0, stack.output
    stack.assert_nothing_left()


def test_a_bad_setting_stops_make_run_with_the_one_line_that_names_it(tmp_path):
    stack = Stack("--no-emulator", log_dir=tmp_path / "run", env=clean_env(AGENT_UPDATE_MODE="sometimes"))
    code = stack.process.wait(timeout=60)
    stack._reader.join(timeout=10)
    assert code == 2
    assert stack.lines[-2:] == [
        "make run: cleanup_voices did not start: configuration error: AGENT_UPDATE_MODE: must be one of patch, override, both",
        "stopped"], stack.output
    assert "Traceback" not in stack.output and stack.output.count("AGENT_UPDATE_MODE") == 1
    stack.assert_nothing_left()


def test_a_taken_port_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "scripts/dev.py", "--port", str(port), "--log-dir", str(tmp_path / "run")],
                                cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"make run: port {port} is in use (another make run?); "
                                     "choose free ones: make run PORT=8090 CLEANUP_PORT=8091")
    assert "READY" not in result.stdout and not (tmp_path / "run").exists()  # no log of another run touched


def test_make_run_takes_its_ports_from_make_variables():
    dry = subprocess.run(["make", "-n", "run", "PORT=9123", "CLEANUP_PORT=9124"], cwd=ROOT, capture_output=True,
                         text=True, timeout=30)
    assert dry.returncode == 0, dry.stderr
    assert "scripts/dev.py --port 9123 --cleanup-port 9124" in dry.stdout


def test_make_run_with_another_port_moves_the_cleanup_port_along():
    """`make run PORT=8090` next to a running stack must not collide on the default cleanup port."""
    dry = subprocess.run(["make", "-n", "run", "PORT=9123"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert dry.returncode == 0, dry.stderr
    assert "scripts/dev.py --port 9123 --cleanup-port 9124" in dry.stdout
