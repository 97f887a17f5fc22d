"""The whole pipeline on this machine, in one command (`make run`).

Starts, on loopback: the local ElevenLabs API in sandbox mode when ELEVENLABS_API_KEY is unset
(the real API, or ELEVENLABS_BASE_URL, with your key otherwise), the local Twilio (API and phone)
unless TWILIO_ACCOUNT_SID is yours, the Pub/Sub emulator with topic,
dead-letter topic and push subscription when gcloud is installed (else the local SQLite event queue),
`cleanup_voices` and `precall_webhook` under functions-framework with your settings. Prints the
round trip to try, then one short line per service event; the JSON logs are kept per run. Writes
`.dev/stack.json` (URLs, the sandbox's key and secrets) for the operator commands beside it.

Ctrl-C, SIGTERM or closing the terminal (SIGHUP) stops everything it started, and so does the state
file's removal: `make` deletes it when make itself is interrupted (make forwards only SIGTERM to its
recipe; see the Makefile). The first signal starts the stop; later ones are ignored, and whatever is
left of the process tree is killed at the end, so no signal can leave a server running.
"""

from __future__ import annotations

import argparse
import ctypes
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
from sandbox.processes import FunctionServer, StartupError, failure_line, free_port, port_is_free, tree_pids  # noqa: E402
from sandbox.pubsub_emulator import PubSubEmulator, create_topology, emulator_available  # noqa: E402
from voiceclone import dev_stack  # noqa: E402
from sandbox.twilio_server import Caller, FakeTwilio  # noqa: E402
from voiceclone.config import DEFAULT_BASE_URL, ENVIRONMENT_VARIABLES  # noqa: E402

LOCAL_WEBHOOK_SECRET = "local-dev-webhook-secret"
LOCAL_INIT_SECRET = "local-dev-init-secret"
SANDBOX_API_KEY = "sandbox"
SANDBOX_AGENT_ID = "agent_local_sandbox"
SAMPLE = "samples/sample.wav"
HOLD_MUSIC = "samples/hold_music.mp3"  # synthesised hold music: what a phone plays instead of a voice
RUNS_KEPT = 20
# Where events go is `make run`'s choice (emulator or local queue), never the shell's.
OWNED_BY_RUN = ("VOICE_EVENTS_TOPIC", "PUBSUB_EMULATOR_HOST")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


class Stop(Exception):
    """SIGINT, SIGTERM or SIGHUP: leave whatever is being done and stop everything."""


class StopSignals:
    """The first stop signal raises `Stop` in the main thread; every later one is a no-op. A second
    SIGTERM (`timeout` signals the group and make forwards its own, milliseconds apart) used to raise
    again inside the clean-up and skip it. A signal arriving while the first handler runs nests inside
    it and raises the one `Stop` in its place: either way exactly one `Stop` is raised."""

    def __init__(self) -> None:
        self.received: str | None = None

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
            raise Stop(self.received)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="precall_webhook port (make run PORT=...)")
    parser.add_argument("--cleanup-port", type=int, help="cleanup_voices port (make run CLEANUP_PORT=...; default: --port + 1)")
    parser.add_argument("--no-emulator", action="store_true", help="use the local event queue even if gcloud is here")
    parser.add_argument("--log-dir", type=Path, help="where this run's logs go (default: a new .dev/runs/TIME directory)")
    parser.add_argument("--state-file", type=Path, default=ROOT / dev_stack.STATE_FILE,
                        help="where the operator commands find this stack (default: .dev/stack.json; make run passes it)")
    args = parser.parse_args()
    args.cleanup_port = args.cleanup_port or args.port + 1
    console = Console()

    taken = [port for port in dict.fromkeys((args.port, args.cleanup_port)) if not port_is_free(port)]
    if taken or args.port == args.cleanup_port:
        problem = (f"port {' and '.join(map(str, taken))} {'is' if len(taken) == 1 else 'are'} in use (another make run?)"
                   if taken else "the two services need two different ports")
        console.error(f"make run: {problem}; choose free ones: make run PORT=8090 CLEANUP_PORT=8091")
        return 2

    signals = StopSignals()
    started: list[Any] = []
    try:
        signals.install()
        adopt_orphans()
        other = dev_stack.read(args.state_file)
        if other is not None:
            console.error(f"make run: another make run (pid {other['pid']}) uses {relative(args.state_file)}; stop it, or "
                          "give this one its own: make run PORT=8090 CLEANUP_PORT=8091 STACK_STATE=.dev/stack-2.json")
            return 2
        dev_stack.write(args.state_file, {"ready": False}, create=True)
        log_dir = args.log_dir or new_run_dir(ROOT / ".dev" / "runs")
        log_dir.mkdir(parents=True, exist_ok=True)
        env, fake_url = service_env(os.environ, started, console, f"http://127.0.0.1:{args.port}")
        # The sandbox account lives as long as this run, so do its events; a real account's outlive it.
        env.setdefault("LOCAL_QUEUE_PATH", str(log_dir / "voice-events.sqlite3" if fake_url else ROOT / ".dev" / "voice-events.sqlite3"))
        twilio_url = local_twilio(env, started, f"http://127.0.0.1:{args.port}")
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
            events_line = f"local queue {relative(Path(env['LOCAL_QUEUE_PATH']))} (Pub/Sub emulator not used: {emulator_reason})"
        webhook = FunctionServer("precall_webhook", env, port=args.port, log_dir=log_dir,
                                 on_line=console.events_of("webhook"))
        started.append(webhook)
        webhook.start()
        state = stack_state(webhook.url, cleanup.url, fake_url, twilio_url, log_dir, env)
        if not dev_stack.write(args.state_file, state, create=False):
            return interrupted(console)
        console.say(banner(webhook.url, cleanup.url, events_line, log_dir, env, fake_url, args.state_file, twilio_url))
        console.show_events = True
        while True:
            for server in (webhook, cleanup):
                if server.process.poll() is not None:
                    console.error(f"make run: {server.target} exited: {failure_line(server.logs())}; its log: {server.log_path}")
                    return 1
            if not args.state_file.exists():
                return interrupted(console)
            time.sleep(0.2)
    except Stop:
        return 0
    except StartupError as error:
        console.error(f"make run: {error}")
        return 2
    finally:
        try:
            for thing in reversed(started):
                try:
                    thing.stop()
                except Exception as error:  # noqa: BLE001 - one part failing to stop must not keep the rest running
                    console.error(f"make run: stopping {type(thing).__name__}: {error}")
        finally:
            kill_descendants()
            dev_stack.remove(args.state_file)
            console.say("stopped")


def interrupted(console: Console) -> int:
    """The state file is gone: make deleted it because make itself was interrupted (SIGINT to its pid)."""
    console.say("make run: interrupted (its state file was removed); stopping")
    return 0


def adopt_orphans() -> None:
    """Make this process the reaper of its orphaned descendants (a gunicorn worker whose master died, a
    server whose `Popen` a signal cut short), so `kill_descendants` still finds them. Linux only."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def kill_descendants() -> None:
    """The last word of every stop, run whatever happened before it: SIGKILL to whatever this process
    started that is still there (the orderly stops come first and normally leave nothing), then reap."""
    killed = tree_pids(os.getpid())[1:]  # every live process below this one
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in killed) and time.monotonic() < deadline:
        reap()
        time.sleep(0.02)
    reap()


def alive(pid: int) -> bool:
    """Running, not a zombie (a zombie holds no port and no memory)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def reap() -> None:
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                break
        except ChildProcessError:
            break


def start_emulator(env: dict[str, str], cleanup_url: str, started: list[Any], log_dir: Path) -> str | None:
    """The emulator with topic and push subscription, its settings added to `env`; or why not (the
    stack then uses the local queue rather than failing)."""
    os.environ.setdefault("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")  # a missing component fails, never waits on a prompt
    emulator = PubSubEmulator(free_port(), project="local-project", log_dir=log_dir)  # with the run's other logs
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


def local_twilio(env: dict[str, str], started: list[Any], service_url: str) -> str | None:
    """The local Twilio, the service's telephony front pointed at it, unless the user's own Twilio account
    is configured or there is no agent for calls to reach (ELEVENLABS_AGENT_ID). Returns its URL."""
    if "TWILIO_ACCOUNT_SID" in env or not env.get("ELEVENLABS_AGENT_ID"):
        return None
    twilio = FakeTwilio(media_delay=1.0)
    started.append(twilio)
    twilio.start()
    twilio.service_url = service_url
    # A number pointed at the service, as docs/telephony.md says to, so `make doctor` beside this stack passes.
    twilio.add_number(Caller.to_number, service_url + "/twilio/voice", service_url + "/twilio/status")
    env.update(TWILIO_ACCOUNT_SID=twilio.account_sid, TWILIO_AUTH_TOKEN=twilio.auth_token, TWILIO_API_BASE_URL=twilio.url)
    return twilio.url


def stack_state(webhook_url: str, cleanup_url: str, fake_url: str | None, twilio_url: str | None, log_dir: Path,
                env: Mapping[str, str]) -> dict[str, Any]:
    """What the operator commands need to find this stack: URLs and settings, with no secret of the
    user's (their key and secrets stay in their shell); the local ones are the sandbox's own."""
    yours = {"ELEVENLABS_API_KEY"} if fake_url is None else set()
    if twilio_url is None:  # the user's own Twilio account: its token stays in their shell
        yours.add("TWILIO_AUTH_TOKEN")
    yours |= {name for name, local in (("ELEVENLABS_WEBHOOK_SECRET", LOCAL_WEBHOOK_SECRET),
                                        ("INIT_WEBHOOK_SECRET", LOCAL_INIT_SECRET)) if env.get(name) != local}
    settings = {name: value for name, value in env.items() if name in ENVIRONMENT_VARIABLES and name not in yours}
    return {"ready": True, "precall_url": webhook_url, "cleanup_url": cleanup_url, "elevenlabs_sandbox_url": fake_url,
            "twilio_sandbox_url": twilio_url,
            "log_dir": str(log_dir), "settings": {"PRECALL_URL": webhook_url, **settings}}


def banner(webhook_url: str, cleanup_url: str, events_line: str, log_dir: Path, env: Mapping[str, str],
           fake_url: str | None, state_file: Path, twilio_url: str | None = None) -> str:
    """Where everything is, and the whole round trip to paste into another terminal: clone, see the
    clone in the account, end the call, see it deleted. The commands need no exports: they read the
    state file, except for secrets of the user's own, which the user exports."""
    python = ".venv/bin/python"
    conversation = f"conv_try_{uuid.uuid4().hex[:6]}"
    yours = [name for name, local in (("ELEVENLABS_WEBHOOK_SECRET", LOCAL_WEBHOOK_SECRET),
                                      ("INIT_WEBHOOK_SECRET", LOCAL_INIT_SECRET)) if env[name] != local]
    if not fake_url:
        yours.insert(0, "ELEVENLABS_API_KEY")
    phone = ([f"  {python} -m precall dial {SAMPLE} --name Ivan --twilio-url {twilio_url}   "
              "# 5. a phone call: consent, beep, hold, the agent in your voice; clone and recording deleted"]
             if twilio_url else [])
    lines = [
        f"precall_webhook  {webhook_url}   /webhook  /conversation-init  /post-call  /healthz"
        + ("  /twilio/*" if twilio_url else ""),
        f"cleanup_voices   {cleanup_url}/",
        f"events           {events_line}",
        *([f"twilio (local)   {twilio_url}   REST API and phone; calls go to /twilio/voice"] if twilio_url else []),
        f"logs             {relative(log_dir)}/  (JSON lines as on Cloud Run; one short line per event below)",
        f"state            {relative(state_file)}  (how the commands below find this stack; removed when it stops)",
        "",
        "Try the round trip from another terminal in this directory:",
    ]
    if yours:
        lines.append(f"  # first export your {', '.join(yours)} there too (they are never written to the state file)")
    lines += [
        f"  {python} -m precall send {SAMPLE} --name Ivan --conversation-id {conversation}   # 1. the clone",
        f"  {python} -m cleanup status   # 2. the clone in the account",
        f"  {python} -m precall post-call {conversation}   # 3. the call ends",
        f"  {python} -m cleanup status   # 4. gone (voice_deleted shows below)",
        *phone,
        f"Two-step: {python} -m precall send {SAMPLE} --call-sid CA123, then {python} -m precall init --call-sid CA123",
        "The quality gate refuses what is not a voice, before ElevenLabs is asked:",
        f"  {python} -m precall send {HOLD_MUSIC} --name Ivan   # 6. hold music: 422 SAMPLE_QUALITY_TOO_LOW",
        f"  {python} -m precall check-sample {HOLD_MUSIC}   # 7. its measures, no service needed",
        "READY (Ctrl-C stops everything)",
    ]
    return "\n".join(lines)


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
