"""The soak: hundreds of calls through the real services while things fail around them, then the proof
that no clone is left behind.

    .venv/bin/python bench/soak.py [--calls 500] [--seed 1] [--fault-rate 0.05] [--log-dir DIR]

`precall_webhook` and `cleanup_voices` run under functions-framework on both event paths at once: the
Pub/Sub emulator (push subscription as deploy/setup.sh makes it) and the local SQLite queue (both
processes consuming one file). The local ElevenLabs plays the account, failing about `--fault-rate` of
all requests at random (429, 5xx, stalls, connection resets, `voice_limit_reached`). Calls come in
overlapping waves: one-step (`/webhook` with the conversation id), two-step (`/webhook` with a call
sid, then `/conversation-init`) and telephony (the local Twilio places a phone call to the Twilio number:
consent, recording, the recording callback, the clone, the call update or the hold's redirect, register-call,
the status callback; Twilio failing some media fetches, Calls fetches and call updates), duplicates,
post-call webhooks sent, sent twice or never, calls still live when cleanup first looks. Mid-run each service is killed with SIGKILL and restarted on its port,
and Pub/Sub stalls for a moment. After the last call the account's clock moves past the TTL and a sweep
runs on both paths. Then it checks:

- no clone of the service is left, and no voice the service did not make was ever deleted;
- every answer came within its budget or is the documented fallback;
- no caller was given another caller's clone (`/webhook`, `/conversation-init`, and each register-call: the
  call's own clone or no voice override, the agent's own voice);
- every phone call was connected (with its clone or the agent's own voice) or heard the apology, within
  its budget; a call cut off because its service was being killed is counted apart;
- clones made = clones deleted as the stand-in saw them, and the service's log lines never claim more.

It prints the figures and exits 1 if a check failed. The plan (calls, kinds, timings, kills, faults) comes
from `--seed`; thread timing still varies between runs, so a failure replays its plan, not its exact
interleaving. A call flow is one function in `FLOWS`, with its share in `FLOW_WEIGHTS`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from precall.signature import sign  # noqa: E402
from sandbox.elevenlabs_server import PREMADE_VOICES, TWILIO_AUDIO_FORMAT, FakeElevenLabs  # noqa: E402
from sandbox.processes import FunctionServer, free_port  # noqa: E402
from sandbox.pubsub_emulator import PubSubEmulator, create_topology, emulator_available  # noqa: E402
from sandbox.twilio_server import Caller, FakeTwilio, SimulatedCall  # noqa: E402
from telephony.twiml import APOLOGY  # noqa: E402
from voiceclone import events  # noqa: E402
from voiceclone.clones import Clone  # noqa: E402
from voiceclone.local_queue import open_store  # noqa: E402
from voiceclone.naming import conversation_suffix  # noqa: E402

API_KEY = "soak-key"
SECRET = "soak-webhook-secret"
INIT_SECRET = "soak-init-secret"
AGENT_ID = "agent_soak"
REQUEST_DEADLINE_SECONDS = 20
WEBHOOK_BUDGET = REQUEST_DEADLINE_SECONDS + 2.0  # the deadline plus the answer's own way back
INIT_BUDGET = 3.0  # "about a second", on a shared 2-core machine
FALLBACK_CODES = {"VOICE_CLONING_FAILED", "UPSTREAM_TIMEOUT"}  # ElevenLabs refused, or the deadline ran out
# The Twilio number's agent: register-call needs its µ-law audio, and no one-step call PATCHes it, so its own
# voice is what a phone caller without a clone hears.
PHONE_AGENT_ID = "agent_soak_phone"
PHONE_AGENT_VOICE = PREMADE_VOICES[0][0]
PUBLIC_BASE_URL = "https://precall-soak.example"  # what Twilio calls (and signs); routed to each path's service
HOLD_SECONDS = 8
# End of the recording to the agent (or the apology): the hold, then `/twilio/connect`'s look-up (0.8 s) and
# register-call (8 s at most), and a second for the machine.
PHONE_WAIT_BUDGET = HOLD_SECONDS + 0.8 + 8.0 + 1.0


@dataclass
class SoakConfig:
    calls: int = 500
    seed: int = 1
    fault_rate: float = 0.05
    waves: int = 10
    wave_gap: float = 6.0  # seconds between wave starts; each wave spreads over 1.5 gaps, so they overlap
    live_seconds: tuple[float, float] = (0.5, 6.0)  # how long a call lasts after its answer
    ttl_seconds: int = 600
    drain_seconds: float = 90.0  # after the last call: time for post-call deletions and redeliveries
    sweep_seconds: float = 120.0  # after the sweep: time for every clone to go
    paths: tuple[str, ...] = ("pubsub", "local")
    log_dir: Path | None = None


@dataclass
class Call:
    index: int
    path: str
    flow: str
    start: float
    live: float
    post_call: str  # "sent", "twice", "missing"
    duplicate: float | None  # a second delivery of the webhook this many seconds later
    conversation_id: str = ""
    call_sid: str | None = None
    ended_at: float | None = None
    answers: list[tuple[int, float, dict[str, Any]]] = field(default_factory=list)
    init_answers: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    phone: SimulatedCall | None = None  # the telephony flow's call, as the local Twilio ran it
    phone_span: tuple[float, float] = (0.0, 0.0)  # when it rang and when it ended (time.monotonic)
    retried_while_down: int = 0
    problems: list[str] = field(default_factory=list)


class Stack:
    """`precall_webhook` and `cleanup_voices` on one event path, each restartable on its own port."""

    def __init__(self, path: str, env: dict[str, str], log_dir: Path, emulator: PubSubEmulator | None) -> None:
        self.path = path
        self.log_dir = log_dir / path
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(env)
        self.ports = {"precall_webhook": free_port(), "cleanup_voices": free_port()}
        self.servers: dict[str, FunctionServer] = {}
        self.emulator = emulator
        self.topic: str | None = None
        if path == "local":
            self.env["LOCAL_QUEUE_PATH"] = str(self.log_dir / "voice-events.sqlite3")
        self._start("cleanup_voices")
        if emulator is not None:
            topology = create_topology(emulator.project, f"soak-{uuid.uuid4().hex[:6]}", self.url("cleanup_voices") + "/",
                                       max_delivery_attempts=100, min_backoff_seconds=10, max_backoff_seconds=600)
            self.topic = topology.topic
            self.env.update(VOICE_EVENTS_TOPIC=topology.topic)
        self._start("precall_webhook")

    def url(self, target: str) -> str:
        return f"http://127.0.0.1:{self.ports[target]}"

    def _start(self, target: str) -> None:
        kind = "cloudevent" if target == "cleanup_voices" else "http"
        server = FunctionServer(target, self.env, signature_type=kind, port=self.ports[target], log_dir=self.log_dir)
        self.servers[target] = server.start(ready_path="/" if kind == "cloudevent" else "/healthz", timeout=60)

    def kill_and_restart(self, target: str) -> None:
        """SIGKILL, as a crash or an OOM kill: no shutdown, nothing flushed; then the same command again."""
        server = self.servers[target]
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        server.stop()
        self._start(target)

    def sweep(self) -> None:
        """A sweep event, as Cloud Scheduler (Pub/Sub) or an operator (local queue) sends it."""
        data, attributes = events.encode(events.sweep())
        if self.topic is not None:
            from google.cloud import pubsub_v1

            pubsub_v1.PublisherClient().publish(self.topic, data, **attributes).result(timeout=30)
        else:
            store = open_store(self.env["LOCAL_QUEUE_PATH"])
            store.add(data, events.SWEEP, None)
            store.close()

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


class Soak:
    def __init__(self, config: SoakConfig, emulator: PubSubEmulator | None = None) -> None:
        """`emulator`: one already running (the test suite's), used and left running; else one is started."""
        self.config = config
        self._own_emulator = emulator is None
        self.rng = random.Random(config.seed)
        self.log_dir = config.log_dir or Path(tempfile.mkdtemp(prefix=f"soak-{config.seed}-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.fake = FakeElevenLabs(api_key=API_KEY, voice_limit=100_000, record_file_bytes=False).start()
        self.fake.add_agent(AGENT_ID, allow_first_message=True, allow_voice=True, init_webhook=True)
        self.fake.add_agent(PHONE_AGENT_ID, PHONE_AGENT_VOICE, allow_first_message=True, allow_voice=True,
                            audio_format=TWILIO_AUDIO_FORMAT, first_message="Hallo {{caller_name}}!")
        self.twilio = FakeTwilio(media_delay=0.3).start()  # a new recording answers 404 for a moment, as Twilio may
        self.foreign = [self.fake.add_voice("My narrator", labels={"accent": "british"}),
                        # looks like one of ours by name, but its description is not: never ours
                        self.fake.add_voice("Ivan_Clone_20200101_000000_soak_foreign", description="a user's voice",
                                            created_at_unix=0)]
        self.sample_wav = (ROOT / "samples" / "sample.wav").read_bytes()
        self.sample = base64.b64encode(self.sample_wav).decode()
        self.emulator: PubSubEmulator | None = emulator
        self.stacks: dict[str, Stack] = {}
        self.restarts: Counter[str] = Counter()
        self.restart_spans: list[tuple[str, str, float, float]] = []  # path, target, killed, serving again
        self.pubsub_stalls = 0
        self.http = requests.Session()
        self.http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=128))

    # -- set-up -----------------------------------------------------------------------------

    def start(self) -> None:
        env = {"ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_BASE_URL": self.fake.url, "ELEVENLABS_WEBHOOK_SECRET": SECRET,
               "INIT_WEBHOOK_SECRET": INIT_SECRET, "AGENT_UPDATE_MODE": "both",
               "VOICE_CLONE_TTL_SECONDS": str(self.config.ttl_seconds),
               "REQUEST_DEADLINE_SECONDS": str(REQUEST_DEADLINE_SECONDS), "ELEVENLABS_AGENT_ID": PHONE_AGENT_ID,
               "TWILIO_ACCOUNT_SID": self.twilio.account_sid, "TWILIO_AUTH_TOKEN": self.twilio.auth_token,
               "TWILIO_API_BASE_URL": self.twilio.url, "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
               "TWILIO_HOLD_SECONDS": str(HOLD_SECONDS)}
        for path in self.config.paths:
            emulator = None
            if path == "pubsub":
                if self.emulator is None:
                    self.emulator = PubSubEmulator(free_port(), project="soak", log_dir=self.log_dir).start()
                emulator = self.emulator
                os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
                env_path = dict(env, PUBSUB_EMULATOR_HOST=emulator.host, GOOGLE_CLOUD_PROJECT=emulator.project)
            else:
                env_path = env
            self.stacks[path] = Stack(path, env_path, self.log_dir, emulator)
        self.fake.chaos(self.config.fault_rate, self.config.seed)
        self.twilio.chaos(self.config.fault_rate, self.config.seed)

    def stop(self) -> None:
        self.fake.chaos(0.0, 0)
        self.twilio.stop()
        for stack in self.stacks.values():
            stack.stop()
        if self.emulator is not None and self._own_emulator:
            self.emulator.stop()
        self.fake.stop()

    # -- the plan ---------------------------------------------------------------------------

    def plan(self) -> tuple[list[Call], list[tuple[float, Callable[[], None], str]]]:
        """Calls in overlapping waves, and the disruptions at fixed shares of the run."""
        config, rng = self.config, self.rng
        calls = []
        per_wave = max(1, -(-config.calls // config.waves))
        for index in range(config.calls):
            wave = index // per_wave
            calls.append(Call(
                index=index, path=rng.choice(config.paths), flow=rng.choices(list(FLOW_WEIGHTS), list(FLOW_WEIGHTS.values()))[0],
                start=wave * config.wave_gap + rng.uniform(0, 1.5 * config.wave_gap), live=rng.uniform(*config.live_seconds),
                post_call=rng.choices(["sent", "twice", "missing"], weights=[0.7, 0.1, 0.2])[0],
                duplicate=rng.choice([0.0, 0.25, 2.0]) if rng.random() < 0.1 else None))
        span = max(c.start for c in calls) or 1.0
        disruptions: list[tuple[float, Callable[[], None], str]] = []
        kills = [(path, target) for path in config.paths for target in ("precall_webhook", "cleanup_voices")]
        for share, (path, target) in zip((0.2, 0.35, 0.5, 0.65), kills):
            disruptions.append((share * span, lambda p=path, t=target: self._restart(p, t), f"kill -9 {path} {target}"))
        if "pubsub" in config.paths:
            disruptions.append((0.8 * span, self._stall_pubsub, "Pub/Sub stalled 2 s"))
        return calls, sorted(disruptions, key=lambda d: d[0])

    def _restart(self, path: str, target: str) -> None:
        killed = time.monotonic()
        self.stacks[path].kill_and_restart(target)
        self.restart_spans.append((path, target, killed, time.monotonic()))
        self.restarts[f"{path} {target}"] += 1

    def _stall_pubsub(self) -> None:
        assert self.emulator is not None
        self.emulator.pause()
        time.sleep(2.0)
        self.emulator.resume()
        self.pubsub_stalls += 1

    # -- calls ------------------------------------------------------------------------------

    def post(self, call: Call, target_path: str, body: bytes, headers: dict[str, str], budget: float,
             signed: bool = True) -> tuple[int, float, dict[str, Any]]:
        """POST to the call's webhook service, as a sender does: a refused connection (the service is
        restarting) is tried again until the budget is spent; the answer time counts from the attempt
        that reached a running server."""
        url = self.stacks[call.path].url("precall_webhook") + target_path
        give_up = time.monotonic() + budget + 60
        while True:
            if signed:
                headers = dict(headers, **{"ElevenLabs-Signature": sign(body, SECRET, int(time.time()))})
            started = time.monotonic()
            try:
                response = self.http.post(url, data=body, headers=headers, timeout=budget + 30)
            except requests.ConnectionError:
                call.retried_while_down += 1
                if time.monotonic() > give_up:
                    return 0, time.monotonic() - started, {}
                time.sleep(0.5)
                continue
            try:
                document = response.json()
            except ValueError:
                document = {"raw": response.text[:200]}
            return response.status_code, time.monotonic() - started, document

    def webhook(self, call: Call, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        answer = self.post(call, "/webhook", body, {"Content-Type": "application/json"}, WEBHOOK_BUDGET)
        call.answers.append(answer)

    def post_call(self, call: Call, data: dict[str, Any]) -> None:
        for _ in range(2 if call.post_call == "twice" else 1 if call.post_call == "sent" else 0):
            body = json.dumps({"type": "post_call_transcription", "event_timestamp": int(time.time()), "data": data}).encode()
            status, _, _ = self.post(call, "/post-call", body, {"Content-Type": "application/json"}, 10)
            if status != 200:
                call.problems.append(f"post-call answered {status}")

    def run_call(self, call: Call, started: float) -> None:
        time.sleep(max(0.0, started + call.start - time.monotonic()))
        try:
            FLOWS[call.flow](self, call)
        except Exception as error:  # noqa: BLE001 - a broken call is a finding, not a crash of the soak
            call.problems.append(f"{type(error).__name__}: {error}")

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        calls, disruptions = self.plan()
        started = time.monotonic()
        disrupter = threading.Thread(target=self._disrupt, args=(disruptions, started), daemon=True)
        disrupter.start()
        with ThreadPoolExecutor(max_workers=min(256, len(calls))) as pool:
            for future in [pool.submit(self.run_call, call, started) for call in calls]:
                future.result()
        disrupter.join()
        calls_done = time.monotonic()
        # Calls whose post-call webhook came: their clones go now, or at a redelivery.
        self._wait(lambda: not self._left(calls, with_post_call=True), self.config.drain_seconds)
        self.fake.chaos(0.0, 0)  # the sweep runs against a healthy account
        self.fake.age_voices(self.config.ttl_seconds + 60)
        for stack in self.stacks.values():
            stack.sweep()
        self._wait(lambda: not self._service_clones(), self.config.sweep_seconds)
        return self.report(calls, calls_done - started, time.monotonic() - started)

    def _disrupt(self, disruptions: list[tuple[float, Callable[[], None], str]], started: float) -> None:
        for at, action, _ in disruptions:
            time.sleep(max(0.0, started + at - time.monotonic()))
            action()

    @staticmethod
    def _wait(condition: Callable[[], bool], seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not condition():
            time.sleep(0.5)

    def _service_clones(self) -> list[Clone]:
        with self.fake.lock:
            voices = list(self.fake.voices.values())
        return [c for c in map(Clone.from_voice, voices) if c is not None]

    def _left(self, calls: list[Call], with_post_call: bool) -> list[Clone]:
        ids = {c.conversation_id for c in calls if (c.post_call != "missing") == with_post_call}
        ids |= {c.call_sid for c in calls if c.call_sid and (c.post_call != "missing") == with_post_call}
        return [c for c in self._service_clones() if c.conversation_id in ids]

    # -- the verdict ------------------------------------------------------------------------

    def report(self, calls: list[Call], calls_seconds: float, total_seconds: float) -> dict[str, Any]:
        fake = self.fake
        with fake.lock:
            made, deleted = dict(fake.made), dict(fake.deleted)
        left = self._service_clones()
        failures: list[str] = []
        if left:
            failures.append(f"{len(left)} clones of the service left: {[c.voice_id for c in left][:5]}")
        foreign_deleted = set(deleted) - set(made)
        if foreign_deleted:
            failures.append(f"voices the service did not make were deleted: {sorted(foreign_deleted)}")
        if set(made) != set(deleted):
            failures.append(f"made {len(made)} clones, deleted {len(deleted)}")
        answer_times, init_times, late, fallbacks, wrong = [], [], [], Counter(), []
        for call in calls:
            for problem in call.problems:
                failures.append(f"call {call.index} ({call.flow}, {call.path}): {problem}")
            own = conversation_suffix(call.call_sid or call.conversation_id)
            for status, seconds, answer in call.answers:
                if status == 200:
                    answer_times.append(seconds)
                    name = made.get(answer.get("voice_id"), {}).get("name", "")
                    if not name.endswith("_" + own):
                        wrong.append(f"call {call.index} got voice {answer.get('voice_id')} ({name or 'not a clone'})")
                elif answer.get("error_code") in FALLBACK_CODES:
                    fallbacks[answer["error_code"]] += 1
                else:
                    failures.append(f"call {call.index}: /webhook answered {status} {answer}")
                if seconds > WEBHOOK_BUDGET:
                    late.append(f"call {call.index} /webhook {seconds:.1f} s")
            for seconds, answer in call.init_answers:
                init_times.append(seconds)
                voice = (answer.get("dynamic_variables") or {}).get("precall_voice_id", "")
                if voice and not made.get(voice, {}).get("name", "").endswith("_" + own):
                    wrong.append(f"call {call.index} /conversation-init named voice {voice}")
                if seconds > INIT_BUDGET:
                    late.append(f"call {call.index} /conversation-init {seconds:.1f} s")
        phone, phone_failures = self._phone_report(calls, made)
        failures += wrong + late + phone_failures
        logs = "".join(stack.logs() for stack in self.stacks.values())
        log_made, log_deleted, made_twice = _log_counts(logs)
        if made_twice:
            failures.append(f"voices logged as made more than once: {made_twice[:5]}")
        if log_made > len(made) or log_deleted > len(deleted):
            failures.append(f"log lines claim more than happened: made {log_made}/{len(made)}, deleted {log_deleted}/{len(deleted)}")
        to_delete = _time_to_delete(calls, made, deleted)
        figures = {
            "seed": self.config.seed, "calls": len(calls), "paths": dict(Counter(c.path for c in calls)),
            "flows": dict(Counter(c.flow for c in calls)), "post_call": dict(Counter(c.post_call for c in calls)),
            "duplicate_webhooks": sum(1 for c in calls if c.duplicate is not None),
            "faults": dict(sorted(fake.fault_counts.items())), "pubsub_stalls": self.pubsub_stalls,
            "restarts": dict(self.restarts), "webhook_retries_while_down": sum(c.retried_while_down for c in calls),
            "fallback_answers": dict(fallbacks),
            "clones": {"made": len(made), "deleted": len(deleted), "left": len(left),
                       "made_per_logs": log_made, "deleted_per_logs": log_deleted},
            "time_to_delete_s": to_delete,
            "webhook_answer_ms": _percentiles(answer_times), "init_answer_ms": _percentiles(init_times),
            "telephony": phone,
            "seconds": {"calls": round(calls_seconds), "total": round(total_seconds)},
            "log_dir": str(self.log_dir), "failures": failures,
        }
        return figures


    def _phone_report(self, calls: list[Call], made: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
        """The phone calls' outcomes and the caller's wait (end of the recording to the agent or the apology),
        and what register-call was asked: for CallSid X, X's clone or no voice override (the agent's own)."""
        failures: list[str] = []
        outcomes: Counter[str] = Counter()
        waits: list[float] = []
        for call in calls:
            if call.phone is None:
                continue
            outcome, wait = self._phone_outcome(call, made)
            outcomes[outcome] += 1
            if outcome.startswith("FAILED"):
                failures.append(f"call {call.index} (telephony, {call.path}) {call.call_sid}: {outcome} {call.phone.kinds()}")
            if wait is not None:
                waits.append(wait)
                if wait > PHONE_WAIT_BUDGET:
                    failures.append(f"call {call.index} (telephony) waited {wait:.1f} s for the agent")
        with self.fake.lock:
            registered = [json.loads(json.dumps(r["request"])) for r in self.fake.registered_calls.values()]
        for request in registered:
            data = request.get("conversation_initiation_client_data") or {}
            call_sid = (data.get("dynamic_variables") or {}).get("precall_conversation_id", "")
            voice = ((data.get("conversation_config_override") or {}).get("tts") or {}).get("voice_id")
            if voice and not made.get(voice, {}).get("name", "").endswith("_" + conversation_suffix(call_sid)):
                failures.append(f"register-call for {call_sid} carried voice {voice}, not that call's clone")
        figures = {"calls": sum(outcomes.values()), "outcomes": dict(sorted(outcomes.items())),
                   "fallbacks": sum(n for k, n in outcomes.items() if k in ("own_voice", "apology")),
                   "register_calls": len(registered), "twilio_faults": dict(sorted(self.twilio.fault_counts.items())),
                   "caller_wait_ms": _percentiles(waits)}
        return figures, failures

    def _phone_outcome(self, call: Call, made: dict[str, dict[str, Any]]) -> tuple[str, float | None]:
        """`clone` (the agent in the caller's own voice), the documented fallbacks `own_voice` (the agent's own
        voice: the clone failed or came too late) and `apology` (ElevenLabs could not take the call),
        `consent_refused`, `cut_off_by_restart` (Twilio reached the call's service while it was being killed:
        Twilio's "application error"), or FAILED with why."""
        phone = call.phone
        assert phone is not None
        if not phone.done.is_set():
            return "FAILED: the call never ended", None
        spoke = phone.first("spoke")
        connected = phone.first("connected")
        apology = next((e for e in phone.events if e.kind == "say" and e.detail.get("text") == APOLOGY), None)
        reached = connected or apology
        wait = None if spoke is None or reached is None else reached.at - spoke.at
        if reached is None:
            started, ended = call.phone_span
            restarting = any(path == call.path and target == "precall_webhook" and killed <= ended and started <= back
                             for path, target, killed, back in self.restart_spans)
            if phone.first("application_error") is not None and restarting:
                return "cut_off_by_restart", None
            return "FAILED: neither connected nor told why", None
        if connected is None:
            return "apology", wait
        voice = connected.detail.get("voice_id")
        if voice == PHONE_AGENT_VOICE:
            return ("own_voice" if spoke is not None else "consent_refused"), wait
        if made.get(voice, {}).get("name", "").endswith("_" + conversation_suffix(phone.sid)):
            return "clone", wait
        return f"FAILED: the caller heard voice {voice}, not their own clone nor the agent's ({connected.detail})", wait


# -- the call flows ----------------------------------------------------------------------------

def one_step(soak: Soak, call: Call) -> None:
    """ElevenLabs' pre-call webhook with the sample and the conversation id (patch mode and overrides)."""
    call.conversation_id = f"conv_soak{soak.config.seed}_{call.index}"
    soak.fake.set_conversation(call.conversation_id, "in-progress", AGENT_ID)  # live when cleanup first looks
    document = {"conversation_id": call.conversation_id, "agent_id": AGENT_ID, "caller_metadata": {"name": "Ivan"},
                "voice_sample": {"data": soak.sample, "filename": "sample.wav"}}
    _deliver(soak, call, document)
    time.sleep(call.live)
    soak.fake.set_conversation(call.conversation_id, "done", AGENT_ID)
    call.ended_at = time.time()
    soak.post_call(call, {"conversation_id": call.conversation_id, "agent_id": AGENT_ID})


def two_step(soak: Soak, call: Call) -> None:
    """The sample with a call sid first, then ElevenLabs' conversation-initiation webhook for that call;
    the post-call webhook names the call sid in its metadata."""
    call.call_sid = f"CAsoak{soak.config.seed}x{call.index}"
    call.conversation_id = f"conv_soak{soak.config.seed}_{call.index}"
    document = {"call_sid": call.call_sid, "agent_id": AGENT_ID, "caller_metadata": {"name": "Ivan"},
                "voice_sample": {"data": soak.sample, "filename": "sample.wav"}}
    _deliver(soak, call, document)
    init = json.dumps({"caller_id": "+31610000000", "agent_id": AGENT_ID, "called_number": "+31200000000",
                       "call_sid": call.call_sid}).encode()
    status, seconds, answer = soak.post(call, "/conversation-init", init, {"Content-Type": "application/json",
                                                                          "X-Precall-Secret": INIT_SECRET},
                                        INIT_BUDGET, signed=False)
    if status != 200:
        call.problems.append(f"/conversation-init answered {status} {answer}")
    call.init_answers.append((seconds, answer))
    soak.fake.set_conversation(call.conversation_id, "in-progress", AGENT_ID)
    time.sleep(call.live)
    soak.fake.set_conversation(call.conversation_id, "done", AGENT_ID)
    call.ended_at = time.time()
    soak.post_call(call, {"conversation_id": call.conversation_id, "agent_id": AGENT_ID,
                          "metadata": {"phone_call": {"call_sid": call.call_sid}}})


def telephony(soak: Soak, call: Call) -> None:
    """A phone call to the Twilio number, run by the local Twilio against the call's path: signed webhooks,
    the consent key (one caller in ten presses 2), the sample spoken at the beep, the recording callback, the
    call update or the hold's redirect, register-call, the agent for the call's length, the status callback
    at the hang-up; then ElevenLabs' post-call webhook for its conversation, naming the CallSid."""
    presses = "1" if random.Random(f"{soak.config.seed}-{call.index}").random() < 0.9 else "2"
    caller = Caller(caller_name="Ivan", digits=presses, speech=[soak.sample_wav], talk_seconds=call.live)
    rang = time.monotonic()
    phone = soak.twilio.place_call(caller, PUBLIC_BASE_URL, soak.stacks[call.path].url("precall_webhook"))
    call.phone, call.call_sid, call.conversation_id = phone, phone.sid, phone.sid
    phone.done.wait(PHONE_WAIT_BUDGET + call.live + 30)
    call.phone_span = (rang, time.monotonic())
    call.ended_at = time.time()
    connected = phone.first("connected")
    conversation_id = connected.detail.get("conversation_id") if connected is not None else None
    if conversation_id:  # ElevenLabs had the call: its conversation ends, and its post-call webhook may come
        call.conversation_id = conversation_id
        soak.fake.set_conversation(conversation_id, "done", PHONE_AGENT_ID)
        soak.post_call(call, {"conversation_id": conversation_id, "agent_id": PHONE_AGENT_ID,
                              "metadata": {"phone_call": {"call_sid": phone.sid}}})


def _deliver(soak: Soak, call: Call, document: dict[str, Any]) -> None:
    """The webhook, and for a duplicate the same webhook again a moment later (a sender's retry)."""
    if call.duplicate is None:
        soak.webhook(call, document)
        return
    second = threading.Timer(call.duplicate, soak.webhook, args=(call, document))
    second.start()
    soak.webhook(call, document)
    second.join()


FLOWS: dict[str, Callable[[Soak, Call], None]] = {"one_step": one_step, "two_step": two_step, "telephony": telephony}
FLOW_WEIGHTS = {"one_step": 0.45, "two_step": 0.3, "telephony": 0.25}


def _log_counts(logs: str) -> tuple[int, int, list[str]]:
    """Clones made and deleted as the services' log lines say, counted as the log-based metrics count them
    (lines, not voices), and the voices whose making was logged more than once (a voice is made once: by
    `voice_clone_success`, or `voice_clone_duplicate` for one discarded at once; a call that answers with
    another request's clone logs `voice_clone_reused`, which is not a clone made)."""
    made: Counter[str] = Counter()
    deleted: set[str] = set()
    for line in logs.splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        kind, voice_id = entry.get("event_type"), str(entry.get("voice_id"))
        if kind in ("voice_clone_success", "voice_clone_duplicate"):
            made[voice_id] += 1
            if kind == "voice_clone_duplicate" and entry.get("deleted"):
                deleted.add(voice_id)
        elif kind == "voice_deleted" and entry.get("existed"):
            deleted.add(voice_id)
    return sum(made.values()), len(deleted), sorted(v for v, n in made.items() if n > 1)


def _time_to_delete(calls: list[Call], made: dict[str, dict[str, Any]], deleted: dict[str, float]) -> dict[str, Any]:
    """Seconds from a call's end to the deletion of its clones: with a post-call webhook, and without
    (those wait for a redelivery, or the TTL sweep after the clock moved); the slowest three named."""
    waits: dict[bool, list[tuple[float, str]]] = {True: [], False: []}
    for call in calls:
        if call.ended_at is None:
            continue
        own = "_" + conversation_suffix(call.call_sid or call.conversation_id)
        for voice_id, voice in made.items():
            if voice["name"].endswith(own) and voice_id in deleted:
                waits[call.post_call != "missing"].append(
                    (max(0.0, deleted[voice_id] - call.ended_at), f"call {call.index} ({call.flow}, {call.path})"))
    sent = sorted(waits[True], reverse=True)
    return {"with_post_call_worst": round(sent[0][0], 1) if sent else 0,
            "with_post_call_p50": round(statistics.median(w for w, _ in sent), 1) if sent else None,
            "with_post_call_slowest": [f"{w:.0f} s {who}" for w, who in sent[:3]],
            "without_post_call_worst": round(max((w for w, _ in waits[False]), default=0), 1)}


def _percentiles(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"n": 0}
    ordered = sorted(seconds)
    return {"n": len(ordered), "p50": round(statistics.median(ordered) * 1000),
            "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000),
            "max": round(ordered[-1] * 1000)}


def run_soak(config: SoakConfig, emulator: PubSubEmulator | None = None) -> dict[str, Any]:
    soak = Soak(config, emulator)
    try:
        soak.start()
        return soak.run()
    finally:
        soak.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-rate", type=float, default=0.05, help="share of ElevenLabs requests that fail")
    parser.add_argument("--waves", type=int, default=10)
    parser.add_argument("--log-dir", type=Path, help="where the services' logs go (default: a new temporary directory)")
    parser.add_argument("--no-emulator", action="store_true", help="the local queue path only")
    args = parser.parse_args()
    paths: tuple[str, ...] = ("pubsub", "local")
    reason = emulator_available()
    if args.no_emulator or reason is not None:
        paths = ("local",)
        print(f"Pub/Sub path left out: {reason or '--no-emulator'}", file=sys.stderr)
    figures = run_soak(SoakConfig(calls=args.calls, seed=args.seed, fault_rate=args.fault_rate, waves=args.waves,
                                  paths=paths, log_dir=args.log_dir))
    print(json.dumps(figures, indent=2))
    print(f"soak seed {args.seed}: {'PASSED' if not figures['failures'] else 'FAILED'} "
          f"({len(figures['failures'])} failures); replay with --seed {args.seed}", file=sys.stderr)
    return 1 if figures["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
