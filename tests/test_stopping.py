"""`make run` always stops everything, under load (one CPU burner per core): two SIGTERMs 5 ms apart
to make's process group (what `timeout` and make's own forwarding deliver together), and SIGINT to
make's own pid (a supervisor or an IDE), which make does not forward. Each case runs STOP_ITERATIONS
times (default 2: once when the stack is ready, once while it is still starting; STOP_ITERATIONS=20
reproduces a race that struck about 1 run in 23). The stack runs without the Pub/Sub emulator, to
keep each run to a few seconds; the emulator's own stop is covered in tests/test_local_stack.py."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox.processes import ROOT, free_port
from tests.conftest import wait_until
from tests.test_local_stack import clean_env, port_open, processes_mentioning

ITERATIONS = int(os.environ.get("STOP_ITERATIONS", "2"))


@pytest.fixture(scope="module")
def load() -> Iterator[None]:
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


class MakeRun:
    """`make run` in its own process group, as a terminal, `timeout` or a supervisor starts it."""

    def __init__(self, tmp_path: Path, index: int) -> None:
        self.port, self.cleanup_port = free_port(), free_port()
        self.state_file = tmp_path / f"stack-{index}.json"
        self.process = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"PORT={self.port}", f"CLEANUP_PORT={self.cleanup_port}",
             f"STACK_STATE={self.state_file}", f"ARGS=--no-emulator --log-dir {tmp_path / f'run-{index}'}"],
            cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, preexec_fn=_default_sigint)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, condition: Callable[[], bool]) -> None:
        assert wait_until(lambda: condition() or self.process.poll() is not None, timeout=120), self.output
        assert self.process.poll() is None, self.output

    def ports(self) -> list[int]:
        fake = re.search(r"test server at http://127\.0\.0\.1:(\d+)", self.output)
        return [self.port, self.cleanup_port, *([int(fake.group(1))] if fake else [])]

    def assert_everything_stopped(self) -> None:
        self.process.wait(timeout=90)
        self._reader.join(timeout=10)
        assert "stopped" in self.lines, self.output  # dev.py's clean-up ran to its end
        for port in self.ports():
            assert not port_open(port), f"port {port} still listening\n{self.output}"
            assert processes_mentioning(port) == [], processes_mentioning(port)
        with pytest.raises(ProcessLookupError):  # neither make nor dev.py survived
            os.killpg(self.process.pid, 0)
        assert not self.state_file.exists()


def _default_sigint() -> None:
    """A shell that starts a job in the background makes it ignore SIGINT, and make keeps an ignored
    SIGINT ignored: the case is SIGINT handled as a terminal would deliver it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(tmp_path: Path, index: int) -> MakeRun:
    """Even runs are signalled once the stack is ready, odd ones while precall_webhook is still starting."""
    run = MakeRun(tmp_path, index)
    if index % 2 == 0:
        run.wait_for(lambda: any(line.startswith("READY") for line in run.lines))
    else:
        run.wait_for(lambda: port_open(run.cleanup_port))
    return run


@pytest.mark.parametrize("index", range(ITERATIONS))
def test_two_sigterms_5_ms_apart_to_make_stop_everything_under_load(load, tmp_path, index):
    run = start(tmp_path, index)
    os.killpg(run.process.pid, signal.SIGTERM)
    time.sleep(0.005)
    os.killpg(run.process.pid, signal.SIGTERM)
    run.assert_everything_stopped()


@pytest.mark.parametrize("index", range(ITERATIONS))
def test_sigint_to_makes_own_pid_stops_everything_under_load(load, tmp_path, index):
    run = start(tmp_path, index)
    os.kill(run.process.pid, signal.SIGINT)
    run.assert_everything_stopped()
    assert "interrupted" in run.output
