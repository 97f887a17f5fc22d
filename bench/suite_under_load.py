"""The whole test suite, run after run, on a machine made busy on purpose: does it still pass?

A flaky test fails a good change when the machine is slow. This runs `python -m pytest` RUNS times
in a row while every core is kept busy (`stress-ng --cpu N` where installed, else busy processes of
its own), and optionally while the Pub/Sub emulator started by those runs is frozen in bursts
(SIGSTOP / SIGCONT to its Java process, found among the run's own descendants only). It prints one
line per run (exit status, pytest's summary, wall time) and asserts nothing.

Run: `.venv/bin/python bench/suite_under_load.py --runs 5` (add `--slow-emulator`, `--burn 0` for
no CPU load, and pytest arguments after `--`, e.g. `-- tests/test_lifecycle_pubsub.py -x`).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox.processes import tree_pids  # noqa: E402


def start_burners(cpus: int) -> subprocess.Popen[bytes] | None:
    """`cpus` busy processes in a group of their own (stopped with it), or None for no load."""
    if cpus <= 0:
        return None
    if shutil.which("stress-ng"):
        command = ["stress-ng", "--cpu", str(cpus), "--quiet"]
    else:
        command = [sys.executable, "-c", f"import multiprocessing as m\ndef burn(_):\n    while True: pass\n"
                                         f"m.Pool({cpus}).map(burn, range({cpus}))"]
    return subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def emulator_pids(root: int) -> list[int]:
    """The Pub/Sub emulator's Java processes among `root`'s descendants (never anyone else's)."""
    found = []
    for pid in tree_pids(root):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "java" in command.split(" ", 1)[0] and "pubsub" in command:
            found.append(pid)
    return found


def freeze_in_bursts(root: int, stop: threading.Event, rng: random.Random, frozen: list[float]) -> None:
    """Until `stop`: freeze the run's emulator for 0.2-1.0 s, let it run for 0.5-1.5 s, again.
    Each freeze's length goes to `frozen`."""
    while not stop.is_set():
        pids = emulator_pids(root)
        if pids:
            frozen.append(rng.uniform(0.2, 1.0))
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        if pids:
            stop.wait(frozen[-1])
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        stop.wait(rng.uniform(0.5, 1.5))


def run_suite(pytest_args: list[str], slow_emulator: bool, seed: int,
              output_file: Path | None) -> tuple[int, str, float, list[float]]:
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stop, frozen = threading.Event(), []
    freezer = threading.Thread(target=freeze_in_bursts, args=(process.pid, stop, random.Random(seed), frozen), daemon=True)
    if slow_emulator:
        freezer.start()
    output, _ = process.communicate()
    stop.set()
    if slow_emulator:
        freezer.join()
    if output_file is not None:
        output_file.write_text(output)
    summary = next((line.strip("= ") for line in reversed(output.splitlines()) if re.search(r"\d+ (passed|failed)", line)),
                   output.splitlines()[-1] if output else "")
    failures = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return process.returncode, "\n    ".join([summary, *failures]), time.monotonic() - started, frozen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--burn", type=int, default=os.cpu_count() or 2, help="busy CPUs (0: none)")
    parser.add_argument("--slow-emulator", action="store_true", help="freeze the Pub/Sub emulator in bursts")
    parser.add_argument("--output-dir", type=Path, help="keep each run's whole pytest output here (run-N.txt)")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args()
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    burners = start_burners(args.burn)
    try:
        for run in range(1, args.runs + 1):
            output_file = None if args.output_dir is None else args.output_dir / f"run-{run}.txt"
            status, summary, seconds, frozen = run_suite(args.pytest_args, args.slow_emulator, run, output_file)
            slowed = f", emulator frozen {len(frozen)} times ({sum(frozen):.0f} s)" if args.slow_emulator else ""
            print(f"run {run}: exit {status}, {seconds:.0f} s, burn {args.burn} CPUs{slowed}: {summary}", flush=True)
    finally:
        if burners is not None:
            os.killpg(burners.pid, signal.SIGTERM)
            burners.wait()


if __name__ == "__main__":
    main()
