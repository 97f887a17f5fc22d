"""Start and stop local processes (the real functions-framework server) for the tests and `make run`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import requests

from voiceclone.config import ENVIRONMENT_VARIABLES

ROOT = Path(__file__).resolve().parent.parent


def tree_pids(pid: int) -> list[int]:
    """A process and all its descendants (gunicorn workers, decoder children), walked through /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current, []))
    return found


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (gunicorn workers, ffmpeg children)."""
    total = 0
    for current in tree_pids(pid):
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
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
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or too busy to answer yet
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


class StartupError(RuntimeError):
    """A server that did not come up; the message is the one line that says why."""


class FunctionServer:
    """`functions-framework --target TARGET` on a loopback port, as a user would run it.

    The service sees only the settings in `env` (plus PATH and the like), never this shell's own
    service settings, so a test is not changed by what the developer exported. Its output goes to
    `log_dir/TARGET.log` when a directory is given (`make run` keeps them per run), else to memory:
    tests leave no files behind. Without a `LOCAL_QUEUE_PATH` in `env`, its local event queue is a
    fresh file under TMPDIR, never the working directory's default one that another run may share. `on_line` sees every output line as it is written. The server runs
    in its own session, so a terminal's SIGINT/SIGHUP reach only whoever owns it, who then `stop()`s it.
    """

    def __init__(self, target: str, env: dict[str, str], signature_type: str = "http", port: int = 0,
                 log_dir: Path | None = None, on_line: Callable[[str], None] | None = None) -> None:
        self.target = target
        if port and not port_is_free(port):
            raise StartupError(f"port {port} is already in use")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items()
                    if k not in ENVIRONMENT_VARIABLES and not k.startswith(("ELEVENLABS_", "VOICE_", "PUBSUB_"))}
        full_env.update(env)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        if "LOCAL_QUEUE_PATH" not in full_env:
            full_env["LOCAL_QUEUE_PATH"] = str(Path(tempfile.mkdtemp(prefix="queue-")) / "voice-events.sqlite3")
        executable = Path(sys.executable).with_name("functions-framework")
        self.log_path = None if log_dir is None else Path(log_dir) / f"{target}.log"
        self._log = None if self.log_path is None else open(self.log_path, "a", encoding="utf-8")
        self._lines: list[str] = []
        self._on_line = on_line
        self.process = subprocess.Popen(
            [str(executable), "--target", target, "--signature-type", signature_type,
             "--host", "127.0.0.1", "--port", str(self.port), "--source", str(ROOT / "main.py")],
            cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, errors="replace", bufsize=1, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read_output, name=f"{target}-output", daemon=True)
        self._reader.start()

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if self._log is not None:
                self._log.write(line)
                self._log.flush()
            else:
                self._lines.append(line)
            if self._on_line is not None:
                self._on_line(line.rstrip("\n"))

    def start(self, ready_path: str = "/healthz", timeout: float = 30.0) -> FunctionServer:
        """Wait until it answers; `StartupError` with the reason if it exits or never answers."""
        try:
            wait_for_http(self.url + ready_path, self.process, timeout)
        except (RuntimeError, TimeoutError) as error:
            self.stop()
            raise StartupError(f"{self.target} did not start: {failure_line(self.logs()) or error}") from None
        return self

    def logs(self) -> str:
        if self.log_path is not None:
            return self.log_path.read_text(errors="replace")
        return "".join(self._lines)

    def stop(self) -> None:
        """SIGTERM to the server and its workers, SIGKILL if they have not gone within 10 s."""
        _signal_group(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _signal_group(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._reader.join(timeout=5)
        if self._log is not None:
            self._log.close()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def failure_line(output: str) -> str | None:
    """The line of a server's output that says why it stopped: the service's own configuration
    error, else gunicorn's first error, else the last line (of a traceback, typically)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("configuration error:"):
            return line
    for line in lines:
        if "[ERROR]" in line:
            return line.split("[ERROR]", 1)[1].strip()
    return lines[-1] if lines else None


def port_is_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:`port` (bound as gunicorn binds it, with SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
