"""`make run`'s local stack end to end: start, send a sample with the CLI, fire post-call,
see the clone deleted, stop with Ctrl-C, nothing left running."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import requests

from sandbox.processes import ROOT, free_port
from tests.conftest import wait_until

CONVERSATION = "conv_localstack1"


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def cli(*args: str, port: int) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "ELEVENLABS_WEBHOOK_SECRET": "local-dev-webhook-secret"}
    return subprocess.run([sys.executable, "-m", "precall", *args, "--url", f"http://127.0.0.1:{port}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("use_emulator", [True, False], ids=["pubsub-emulator", "in-process-queue"])
def test_local_stack_runs_the_whole_pipeline_and_stops_cleanly(use_emulator, audio_files, request):
    if use_emulator:
        request.getfixturevalue("pubsub_emulator")  # skips (or fails under CI) where it cannot run
    port, cleanup_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ELEVENLABS_", "PUBSUB_", "VOICE_"))}
    command = [sys.executable, "scripts/dev.py", "--port", str(port), "--cleanup-port", str(cleanup_port)]
    if not use_emulator:
        command.append("--no-emulator")
    stack = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    lines: list[str] = []
    try:
        for line in stack.stdout:
            lines.append(line)
            if line.startswith("READY"):
                break
        output = "".join(lines)
        assert "READY" in output, output
        assert "sandbox mode" in output
        assert ("Pub/Sub emulator at" in output) == use_emulator
        fake_url = re.search(r"test server at (http://127\.0\.0\.1:\d+)", output).group(1)
        emulator_port = int(m.group(1)) if (m := re.search(r"Pub/Sub emulator at 127\.0\.0\.1:(\d+)", output)) else None

        sent = cli("send", str(audio_files["mp3_cbr"]), "--name", "Ivan", "--conversation-id", CONVERSATION, port=port)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        voice_id = json.loads(sent.stdout)["voice_id"]

        def voice_exists() -> bool:
            response = requests.get(f"{fake_url}/v1/voices/{voice_id}", headers={"xi-api-key": "sandbox"}, timeout=5)
            return response.status_code == 200

        assert voice_exists()
        ended = cli("post-call", CONVERSATION, port=port)
        assert ended.returncode == 0 and json.loads(ended.stdout)["status"] == "accepted"
        assert wait_until(lambda: not voice_exists(), timeout=30)
    finally:
        stack.send_signal(signal.SIGINT)
        rest, _ = stack.communicate(timeout=60)
    assert stack.returncode == 0, rest
    assert "stopped" in rest
    fake_port = int(fake_url.rsplit(":", 1)[1])
    for used in (port, cleanup_port, fake_port, emulator_port):
        if used is not None:
            assert not port_open(used), f"port {used} still open after Ctrl-C"
    with pytest.raises(ProcessLookupError):  # no process of the stack's group survived
        os.killpg(stack.pid, 0)
