"""The whole pipeline on this machine, in one command (`make run`).

Starts, on loopback: the local ElevenLabs API in sandbox mode when ELEVENLABS_API_KEY is unset
(the real API, or ELEVENLABS_BASE_URL, with your key otherwise), the Pub/Sub emulator with topic,
dead-letter topic and push subscription when gcloud is installed (else the in-process event queue),
`cleanup_voices` and `precall_webhook` under functions-framework with your settings. Prints the
round trip to try, then one short line per service event; the JSON logs are kept per run.
Ctrl-C, SIGTERM or closing the terminal (SIGHUP) stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox.elevenlabs_server import FakeElevenLabs  # noqa: E402
from sandbox.event_lines import describe  # noqa: E402
from sandbox.processes import FunctionServer, StartupError, failure_line, free_port, port_is_free  # noqa: E402
from sandbox.pubsub_emulator import PubSubEmulator, create_topology, emulator_available  # noqa: E402
from voiceclone.config import DEFAULT_BASE_URL, ENVIRONMENT_VARIABLES  # noqa: E402

LOCAL_WEBHOOK_SECRET = "local-dev-webhook-secret"
LOCAL_INIT_SECRET = "local-dev-init-secret"
SANDBOX_API_KEY = "sandbox"
SANDBOX_AGENT_ID = "agent_local_sandbox"
SAMPLE = "samples/sample.wav"
HOLD_MUSIC = "samples/hold_music.mp3"  # synthesised hold music: what a phone plays instead of a voice
RUNS_KEPT = 20
# Where events go is `make run`'s choice (emulator or in-process queue), never the shell's.
OWNED_BY_RUN = ("VOICE_EVENTS_TOPIC", "PUBSUB_EMULATOR_HOST")


class Stop(Exception):
    """SIGINT, SIGTERM or SIGHUP: leave whatever is being done and stop everything."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="precall_webhook port (make run PORT=...)")
    parser.add_argument("--cleanup-port", type=int, default=8081, help="cleanup_voices port (make run CLEANUP_PORT=...)")
    parser.add_argument("--no-emulator", action="store_true", help="use the in-process event queue even if gcloud is here")
    parser.add_argument("--log-dir", type=Path, help="where this run's logs go (default: a new .dev/runs/TIME directory)")
    args = parser.parse_args()
    console = Console()

    taken = [port for port in dict.fromkeys((args.port, args.cleanup_port)) if not port_is_free(port)]
    if taken or args.port == args.cleanup_port:
        problem = (f"port {' and '.join(map(str, taken))} {'is' if len(taken) == 1 else 'are'} in use (another make run?)"
                   if taken else "the two services need two different ports")
        console.error(f"make run: {problem}; choose free ones: make run PORT=8090 CLEANUP_PORT=8091")
        return 2

    def stop(signum: int, _frame: Any) -> None:
        raise Stop(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    started: list[Any] = []
    try:
        log_dir = args.log_dir or new_run_dir(ROOT / ".dev" / "runs")
        log_dir.mkdir(parents=True, exist_ok=True)
        env, fake_url = service_env(os.environ, started, console, f"http://127.0.0.1:{args.port}")
        cleanup = FunctionServer("cleanup_voices", env, signature_type="cloudevent", port=args.cleanup_port,
                                 log_dir=log_dir, on_line=console.events_of("cleanup"))
        started.append(cleanup)
        cleanup.start(ready_path="/")
        emulator_reason = "disabled by --no-emulator" if args.no_emulator else emulator_available()
        if emulator_reason is None:
            emulator_reason = start_emulator(env, cleanup.url, started, log_dir)
        if emulator_reason is None:
            events_line = (f"Pub/Sub emulator at {env['PUBSUB_EMULATOR_HOST']}, topic {env['VOICE_EVENTS_TOPIC']} "
                           "pushing to cleanup_voices")
        else:
            events_line = f"in-process event queue (Pub/Sub emulator not used: {emulator_reason})"
        webhook = FunctionServer("precall_webhook", env, port=args.port, log_dir=log_dir,
                                 on_line=console.events_of("webhook"))
        started.append(webhook)
        webhook.start()
        console.say(banner(webhook.url, cleanup.url, events_line, log_dir, env, fake_url))
        console.show_events = True
        while True:
            for server in (webhook, cleanup):
                if server.process.poll() is not None:
                    console.error(f"make run: {server.target} exited: {failure_line(server.logs())}; its log: {server.log_path}")
                    return 1
            time.sleep(0.5)
    except Stop:
        return 0
    except StartupError as error:
        console.error(f"make run: {error}")
        return 2
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        for thing in reversed(started):
            thing.stop()
        console.say("stopped")


def start_emulator(env: dict[str, str], cleanup_url: str, started: list[Any], log_dir: Path) -> str | None:
    """The emulator with topic and push subscription, its settings added to `env`; or why not (the
    stack then uses the in-process queue rather than failing)."""
    os.environ.setdefault("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")  # a missing component fails, never waits on a prompt
    emulator = PubSubEmulator(free_port(), project="local-project")
    emulator.log_path = log_dir / "pubsub-emulator.log"  # with the run's other logs
    started.append(emulator)
    try:
        emulator.start()
    except (RuntimeError, TimeoutError) as error:
        emulator.stop()
        started.remove(emulator)
        return f"it did not start: {str(error).splitlines()[0]}; see {emulator.log_path}"
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
    topology = create_topology("local-project", f"voice-events-{uuid.uuid4().hex[:6]}", cleanup_url + "/")
    env.update(PUBSUB_EMULATOR_HOST=emulator.host, VOICE_EVENTS_TOPIC=topology.topic)
    return None


def service_env(shell: Mapping[str, str], started: list[Any], console: Console,
                service_url: str) -> tuple[dict[str, str], str | None]:
    """The services' settings: the user's (every variable the service reads), local secrets where
    none are given, and in sandbox mode the local ElevenLabs, whose account's webhooks point at
    `service_url` (so `doctor --service-url` agrees). Returns them and the sandbox's URL."""
    env = {name: shell[name] for name in ENVIRONMENT_VARIABLES if name in shell and name not in OWNED_BY_RUN}
    if "THREADS" in shell:
        env["THREADS"] = shell["THREADS"]
    env.setdefault("ELEVENLABS_WEBHOOK_SECRET", LOCAL_WEBHOOK_SECRET)
    env.setdefault("INIT_WEBHOOK_SECRET", LOCAL_INIT_SECRET)
    if shell.get("ELEVENLABS_API_KEY"):
        base_url = shell.get("ELEVENLABS_BASE_URL") or DEFAULT_BASE_URL
        console.say(f"live mode: ElevenLabs at {base_url} with your ELEVENLABS_API_KEY; each clone is made in that "
                    "account and deleted after its call")
        if not shell.get("ELEVENLABS_AGENT_ID"):
            console.say("  ELEVENLABS_AGENT_ID is not set: give `precall send` an --agent-id, or export it and restart")
        return env, None
    fake = FakeElevenLabs(api_key=SANDBOX_API_KEY, auto_create_agents=True, record_file_bytes=False,
                          service_url=service_url)
    started.append(fake)
    fake.start()
    console.say(f"sandbox mode: no ELEVENLABS_API_KEY, so the local ElevenLabs test server at {fake.url} plays ElevenLabs")
    env.update(ELEVENLABS_API_KEY=SANDBOX_API_KEY, ELEVENLABS_BASE_URL=fake.url)
    env.setdefault("ELEVENLABS_AGENT_ID", SANDBOX_AGENT_ID)
    return env, fake.url


def banner(webhook_url: str, cleanup_url: str, events_line: str, log_dir: Path, env: Mapping[str, str],
           fake_url: str | None) -> str:
    """Where everything is, and the whole round trip to paste into another terminal: clone, see the
    clone in the account, end the call, see it deleted."""
    python = ".venv/bin/python"
    conversation = f"conv_try_{uuid.uuid4().hex[:6]}"
    exports, yours = f"export PRECALL_URL={webhook_url}", []  # what the user must export as well
    if env["ELEVENLABS_WEBHOOK_SECRET"] == LOCAL_WEBHOOK_SECRET:
        exports += f" ELEVENLABS_WEBHOOK_SECRET={LOCAL_WEBHOOK_SECRET}"
    else:
        yours.append("ELEVENLABS_WEBHOOK_SECRET")
    init_secret = f"INIT_WEBHOOK_SECRET={LOCAL_INIT_SECRET} " if env["INIT_WEBHOOK_SECRET"] == LOCAL_INIT_SECRET else ""
    # `cleanup status` reads the account the services use: the sandbox's, or yours.
    account = f"ELEVENLABS_API_KEY={SANDBOX_API_KEY} ELEVENLABS_BASE_URL={fake_url} " if fake_url else ""
    if not fake_url:
        yours += ["ELEVENLABS_API_KEY"] + (["ELEVENLABS_BASE_URL"] if "ELEVENLABS_BASE_URL" in env else [])
    if yours:
        exports += f"   # and your {', '.join(yours)}"
    return "\n".join([
        f"precall_webhook  {webhook_url}   /webhook  /conversation-init  /post-call  /healthz",
        f"cleanup_voices   {cleanup_url}/",
        f"events           {events_line}",
        f"logs             {relative(log_dir)}/  (JSON lines as on Cloud Run; one short line per event below)",
        "",
        "Try the round trip from another terminal in this directory:",
        f"  {exports}",
        f"  {python} -m precall send {SAMPLE} --name Ivan --conversation-id {conversation}   # 1. the clone",
        f"  {account}{python} -m cleanup status   # 2. the clone in the account",
        f"  {python} -m precall post-call {conversation}   # 3. the call ends",
        f"  {account}{python} -m cleanup status   # 4. gone (voice_deleted shows below)",
        f"Two-step: {python} -m precall send {SAMPLE} --call-sid CA123, then "
        f"{init_secret}{python} -m precall init --call-sid CA123",
        "The quality gate refuses what is not a voice, before ElevenLabs is asked:",
        f"  {python} -m precall send {HOLD_MUSIC} --name Ivan   # 5. hold music: 422 SAMPLE_QUALITY_TOO_LOW",
        f"  {python} -m precall check-sample {HOLD_MUSIC}   # 6. its measures, no service needed",
        "READY (Ctrl-C stops everything)",
    ])


def relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def new_run_dir(runs: Path) -> Path:
    """A fresh directory for this run's logs; only the newest RUNS_KEPT runs are kept."""
    runs.mkdir(parents=True, exist_ok=True)
    for old in sorted(p for p in runs.iterdir() if p.is_dir())[:-(RUNS_KEPT - 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


class Console:
    """The terminal: lines from several threads never interleave, and a terminal that went away
    (SIGHUP closes it) makes printing a no-op instead of an error in the middle of stopping.
    Service events show once everything is up: a start-up failure is its one line, not a log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.show_events = False

    def say(self, text: str) -> None:
        self._write(sys.stdout, text)

    def error(self, text: str) -> None:
        self._write(sys.stderr, text)

    def events_of(self, service: str) -> Callable[[str], None]:
        def show(line: str) -> None:
            text = describe(line, service) if self.show_events else None
            if text is not None:
                self.say(text)
        return show

    def _write(self, stream: Any, text: str) -> None:
        with self._lock:
            try:
                print(text, file=stream, flush=True)
            except (OSError, ValueError):
                pass


if __name__ == "__main__":
    sys.exit(main())
