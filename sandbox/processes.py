"""Start and stop local processes (the real functions-framework server) for the tests and `make run`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (gunicorn workers, ffmpeg children)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
        pending.extend(children.get(current, []))
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def send_json(handler: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    """Answer a test HTTP server's request with a JSON body (keep-alive safe)."""
    payload = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(payload)


def wait_for_http(url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


class FunctionServer:
    """`functions-framework --target TARGET` on a free loopback port, as a user would run it."""

    def __init__(self, target: str, env: dict[str, str], signature_type: str = "http", port: int = 0) -> None:
        self.target = target
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The service sees only what the caller passes (plus PATH and the like), not this shell's settings.
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("ELEVENLABS_", "VOICE_", "PUBSUB_", "GOOGLE_CLOUD_PROJECT"))}
        full_env.update(env)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        executable = Path(sys.executable).with_name("functions-framework")
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"ff-{target}-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [str(executable), "--target", target, "--signature-type", signature_type,
             "--host", "127.0.0.1", "--port", str(self.port), "--source", str(ROOT / "main.py")],
            cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def start(self, ready_path: str = "/healthz") -> FunctionServer:
        wait_for_http(self.url + ready_path, self.process)
        return self

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()
