"""Pre-call benchmark: what a caller waits for. Prints numbers, asserts nothing.

Everything goes end to end over HTTP through the real functions-framework server (started as
the plain `functions-framework --target precall_webhook` command), against the local ElevenLabs
server with per-endpoint latencies, and is compared, in the same run, with the same ElevenLabs
calls made directly (this repository's ElevenLabs client, no service in between):

0. the quality gate's own cost, in process: 3, 10 and 30 s of speech, and 30 s of hold music, at
   8 kHz (µ-law WAV) and 44.1 kHz (MP3), validation with the gate (decode + measures) minus without;
1. added time at zero upstream latency, 1 MB and 10 MB samples: service minus direct add + PATCH,
   with `SAMPLE_QUALITY_GATE=enforce` (the default) and `off`;
2. one call with realistic latency (search 200 ms, add 1500 ms, PATCH 300 ms): service over
   direct add + PATCH (`patch` mode), and over the direct add alone (`override` mode);
3. 32 and 128 concurrent calls with 2 s on every ElevenLabs request, over one such call, with the
   quality gate on and off;
4. memory: peak per in-flight 10 MB sample, and what a burst leaves behind, on the whole process tree;
5. cold start with Pub/Sub configured (emulator): the first call after start-up over a warm one.

Run: `make bench` (or `.venv/bin/python bench/bench_precall.py [--quick]`).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests
import soundfile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from precall import audio, quality, signature, vad  # noqa: E402
from sandbox.elevenlabs_server import FakeElevenLabs  # noqa: E402
from sandbox.processes import FunctionServer, free_port, tree_rss_bytes  # noqa: E402
from sandbox.pubsub_emulator import PubSubEmulator, create_topology, emulator_available  # noqa: E402
from tests.audio_fixtures import SPEECH  # noqa: E402
from tests.conftest import json_body  # noqa: E402
from tests.quality_corpus import RATE as CORPUS_RATE  # noqa: E402
from tests.quality_corpus import hold_music  # noqa: E402
from voiceclone.deadline import Deadline  # noqa: E402
from voiceclone.elevenlabs_client import ElevenLabsClient  # noqa: E402

SECRET = "bench-secret"
API_KEY = "bench-key"
AGENT = "agent_bench"
MAX_SAMPLE = 10 * 1024 * 1024
REALISTIC = {("GET", "/v2/voices"): 0.2, ("POST", "/v1/voices/add"): 1.5, ("PATCH", "/v1/convai/agents/.*"): 0.3}


def make_sample(directory: Path, target_bytes: int) -> bytes:
    """Real speech (espeak-ng), looped by ffmpeg into a 128 kbit/s MP3 of about `target_bytes`."""
    speech = directory / "speech.wav"
    if not speech.exists():
        subprocess.run(["espeak-ng", "-v", "nl", "-w", str(speech), SPEECH], check=True)
    out = directory / f"sample_{target_bytes}.mp3"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(speech),
                    "-t", f"{target_bytes / 16000:.2f}", "-ar", "44100", "-c:a", "libmp3lame", "-b:a", "128k", str(out)],
                   check=True)
    return out.read_bytes()[:MAX_SAMPLE]


def speech_file(directory: Path, seconds: float, rate: int, codec: list[str], suffix: str, music: bool = False) -> bytes:
    """`seconds` of real speech (espeak-ng), or of synthesised hold music, looped by ffmpeg, at `rate`,
    encoded with `codec`."""
    source = directory / ("music.wav" if music else "speech.wav")
    if not source.exists() and music:
        soundfile.write(source, hold_music(30, 100, seed=1), CORPUS_RATE)
    elif not source.exists():
        subprocess.run(["espeak-ng", "-v", "nl", "-w", str(source), SPEECH], check=True)
    out = directory / f"{source.stem}_{seconds:g}s_{rate}{suffix}"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(source),
                    "-t", f"{seconds}", "-ar", str(rate), "-ac", "1", *codec, str(out)], check=True)
    return out.read_bytes()


def gate_cost(directory: Path, rounds: int) -> None:
    print("== 0. quality gate cost, in process (p50, and the least of all rounds: validation with the gate minus without) ==")
    vad.speech_detector.load()
    renderings = {"8 kHz µ-law WAV": (8000, ["-c:a", "pcm_mulaw"], ".wav"),
                  "44.1 kHz MP3": (44100, ["-c:a", "libmp3lame", "-b:a", "128k"], ".mp3")}
    rows = [(label, seconds, False) for label in renderings for seconds in (3, 10, 30)]
    rows += [(label, 30, True) for label in renderings]  # no voice: two windows, 20 s measured
    for label, seconds, music in rows:
        rate, codec, suffix = renderings[label]
        sample = speech_file(directory, seconds, rate, codec, suffix, music)
        fmt = audio.sniff_format(sample)
        plain, gated, measures = [], [], []
        for _ in range(rounds):
            plain.append(timed(lambda: audio.probe(sample, fmt, 3.0)))
            started = time.perf_counter()
            probe = audio.probe(sample, fmt, 3.0, keep_seconds=quality.FIRST_WINDOW_SECONDS)
            decoded = time.perf_counter()
            report = quality.assess(probe.samples, probe.sample_rate, 2.0,
                                    lambda: (audio.continued(sample, fmt, probe, quality.MAX_ANALYSED_SECONDS), probe.sample_rate))  # noqa: B023
            gated.append(time.perf_counter() - started)
            measures.append(time.perf_counter() - decoded)
        print(f"{label:16} {seconds:2} s {'music' if music else 'voice'}   validation {ms(p50(plain)):5.1f} ms   with the gate {ms(p50(gated)):5.1f} ms   "
              f"gate adds {ms(p50(gated) - p50(plain)):5.1f} ms (least {ms(min(gated) - min(plain)):5.1f} ms; "
              f"measures {ms(p50(measures)):5.1f} ms)   speech {report.speech_seconds:g} s, {'refused' if report.reasons else 'accepted'}")


def ms(seconds: float) -> float:
    return seconds * 1000


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


class Service:
    """One `precall_webhook` instance, started the plain way, and a signed-call helper."""

    def __init__(self, fake: FakeElevenLabs, logs: Path, **env: str) -> None:
        base = {"ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_WEBHOOK_SECRET": SECRET, "ELEVENLABS_BASE_URL": fake.url,
                "ELEVENLABS_AGENT_ID": AGENT, "VOICE_CLONE_AUTO_DELETE": "false", "LOG_LEVEL": "WARNING", "TMPDIR": str(logs)}
        self.server = FunctionServer("precall_webhook", {**base, **env}).start()
        self.url = self.server.url + "/webhook"
        self.session = requests.Session()

    def call(self, signed: tuple[bytes, str], session: requests.Session | None = None, expect: int = 200) -> None:
        """POST one prepared body (built and signed before the clock starts, as a sender would have it)."""
        body, header = signed
        response = (session or requests).post(self.url, data=body, timeout=300, headers={
            "Content-Type": "application/json", "ElevenLabs-Signature": header})
        if response.status_code != expect:
            raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

    def rss(self) -> int:
        return tree_rss_bytes(self.server.process.pid)

    def stop(self) -> None:
        self.server.stop()


def signed_bodies(sample: bytes, count: int, secret: str = SECRET) -> list[tuple[bytes, str]]:
    """`count` pre-call bodies for distinct conversations, signed (with `secret`)."""
    bodies = []
    for _ in range(count):
        body = json_body(sample, conversation_id=f"conv_{uuid.uuid4().hex[:12]}", agent_id=AGENT)
        bodies.append((body, signature.sign(body, secret, int(time.time()))))
    return bodies


class Direct:
    """The same ElevenLabs calls without the service: the baseline a caller would wait anyway."""

    def __init__(self, fake: FakeElevenLabs) -> None:
        self.client = ElevenLabsClient(fake.url, API_KEY)

    def add(self, sample: bytes) -> str:
        fmt = audio.sniff_format(sample)
        return self.client.add_voice(name=f"Ivan_Clone_20260101_000000_{uuid.uuid4().hex[:8]}", sample=sample,
                                     filename=f"sample.{fmt.extension}", mime_type=fmt.mime_type, description="d",
                                     labels={"source": "bench"}, remove_background_noise=False,
                                     deadline=Deadline(60)).voice_id

    def add_and_patch(self, sample: bytes) -> None:
        voice_id = self.add(sample)
        self.client.update_agent(AGENT, first_message="Hallo Ivan", voice_id=voice_id, deadline=Deadline(60))


def concurrently(action: Callable[[requests.Session, int], None], count: int) -> float:
    """Wall time of `count` simultaneous calls (each on its own connection; `action` gets its index)."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(count + 1)

    def run(index: int) -> None:
        session = requests.Session()
        barrier.wait()
        try:
            action(session, index)
        except BaseException as exc:  # noqa: BLE001 - reported after the run
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def added_time(fake: FakeElevenLabs, logs: Path, samples: dict[str, bytes], rounds: int) -> None:
    print("\n== 1. added time at zero upstream latency (p50; service minus the same add + PATCH made directly) ==")
    fake.endpoint_latency, fake.latency = {}, 0.0
    for gate in ("enforce", "off"):
        print(f"SAMPLE_QUALITY_GATE={gate}")
        _added_time(fake, logs, samples, rounds, gate)


def _added_time(fake: FakeElevenLabs, logs: Path, samples: dict[str, bytes], rounds: int, gate: str) -> None:
    service, direct = Service(fake, logs, SAMPLE_QUALITY_GATE=gate), Direct(fake)
    try:
        for label, sample in samples.items():
            accepted, refused = signed_bodies(sample, rounds + 1), signed_bodies(sample, rounds, secret="not-the-secret")
            service.call(accepted.pop(), service.session)
            direct.add_and_patch(sample)
            through, alone, receive = [], [], []
            for good, bad in zip(accepted, refused):  # interleaved, so drift on the machine hits all three alike
                through.append(timed(lambda: service.call(good, service.session)))
                alone.append(timed(lambda: direct.add_and_patch(sample)))
                receive.append(timed(lambda: service.call(bad, service.session, expect=401)))
            print(f"{label:6} service {ms(p50(through)):7.1f} ms   direct {ms(p50(alone)):7.1f} ms   "
                  f"added {ms(p50(through) - p50(alone)):6.1f} ms   (of which sending + receiving the "
                  f"{len(json_body(sample)) / 1e6:.1f} MB body and answering 401: {ms(p50(receive)):.1f} ms)")
    finally:
        service.stop()


def realistic_latency(fake: FakeElevenLabs, logs: Path, sample: bytes, rounds: int) -> None:
    print("\n== 2. one call, realistic upstream latency (search 200 ms, add 1500 ms, PATCH 300 ms), p50 ==")
    fake.endpoint_latency = dict(REALISTIC)
    direct = Direct(fake)
    for mode, baseline_name, baseline in (("patch", "add + PATCH", direct.add_and_patch), ("override", "add", direct.add)):
        service = Service(fake, logs, AGENT_UPDATE_MODE=mode)
        try:
            bodies = signed_bodies(sample, rounds + 1)
            service.call(bodies.pop(), service.session)
            through = p50([timed(lambda b=b: service.call(b, service.session)) for b in bodies])
            alone = p50([timed(lambda: baseline(sample)) for _ in range(rounds)])
            print(f"{mode:8} service {through:.3f} s   direct {baseline_name} {alone:.3f} s   ratio {through / alone:.3f}x")
        finally:
            service.stop()


def concurrency(fake: FakeElevenLabs, logs: Path, sample: bytes, counts: list[int]) -> None:
    print("\n== 3. concurrent calls on one instance started plainly (2 s on every ElevenLabs request) ==")
    fake.endpoint_latency, fake.latency = {}, 2.0
    try:
        for gate in ("enforce", "off"):
            service = Service(fake, logs, SAMPLE_QUALITY_GATE=gate)
            try:
                warm, single = signed_bodies(sample, 2)
                service.call(warm)
                one = timed(lambda: service.call(single))  # noqa: B023
                print(f"SAMPLE_QUALITY_GATE={gate}: one call {one:.2f} s")
                for count in counts:
                    bodies = signed_bodies(sample, count)
                    wall = concurrently(lambda session, index, bodies=bodies: service.call(bodies[index], session), count)  # noqa: B023
                    print(f"{count:4} concurrent {wall:.2f} s   ratio {wall / one:.2f}x")
            finally:
                service.stop()
    finally:
        fake.latency = 0.0


def memory(fake: FakeElevenLabs, logs: Path, sample: bytes, in_flight: int) -> None:
    print(f"\n== 4. memory, {in_flight} in-flight 10 MB JSON samples, whole process tree ==")
    fake.endpoint_latency = {("POST", "/v1/voices/add"): 3.0}
    service = Service(fake, logs)
    try:
        bodies = signed_bodies(sample, in_flight + 1)
        service.call(bodies.pop())
        time.sleep(2)
        idle = service.rss()
        peak = [idle]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], service.rss())
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        concurrently(lambda session, index: service.call(bodies[index], session), in_flight)
        done.set()
        watcher.join()
        time.sleep(3)
        after = service.rss()
        per_call = (peak[0] - idle) / in_flight
        print(f"idle {idle / 2**20:.0f} MiB, peak {peak[0] / 2**20:.0f} MiB: {per_call / 2**20:.1f} MiB per in-flight call "
              f"= {per_call / len(sample):.2f}x the sample; 3 s after the burst {after / 2**20:.0f} MiB "
              f"({(after - idle) / 2**20:+.0f} MiB over idle)")
    finally:
        service.stop()
        fake.endpoint_latency = {}


def warm_up_emulator(project: str) -> None:
    """Publish to the emulator from another client, as Pub/Sub in Google Cloud is always warm: a just-
    started emulator spends 50-180 ms of Java warm-up on the first publishes it ever serves."""
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(project, f"bench-warm-{uuid.uuid4().hex[:6]}")
    publisher.create_topic(name=topic)
    for _ in range(50):
        publisher.publish(topic, b"warm-up").result(timeout=30)


def cold_start(fake: FakeElevenLabs, logs: Path, sample: bytes, rounds: int) -> None:
    print("\n== 5. cold start with Pub/Sub configured (emulator), first call after start-up over a warm one ==")
    reason = emulator_available()
    if reason is not None:
        print(f"skipped: {reason}")
        return
    emulator = PubSubEmulator(free_port(), project="bench-project").start()
    try:
        import os

        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
        topology = create_topology("bench-project", f"bench-{uuid.uuid4().hex[:6]}", "http://127.0.0.1:9/")
        rows = (("zero latency, emulator just started", {}, False, 5), ("zero latency, emulator warm", {}, True, 5),
                ("realistic latency", REALISTIC, False, 2))
        for label, latencies, warm_emulator_first, starts in rows:
            if warm_emulator_first:
                warm_up_emulator("bench-project")
            fake.endpoint_latency = dict(latencies)
            firsts, warms = [], []
            for _ in range(starts):  # a fresh instance each time: one first call per start-up
                service = Service(fake, logs, PUBSUB_EMULATOR_HOST=emulator.host, GOOGLE_CLOUD_PROJECT="bench-project",
                                  VOICE_EVENTS_TOPIC=topology.topic)
                try:
                    first_body, *warm_bodies = signed_bodies(sample, rounds + 1)
                    firsts.append(timed(lambda: service.call(first_body, service.session)))
                    warms.extend(timed(lambda b=b: service.call(b, service.session)) for b in warm_bodies)
                finally:
                    service.stop()
            first, warm = p50(firsts), p50(warms)
            print(f"{label:36} first p50 {ms(first):7.1f} ms   warm p50 {ms(warm):7.1f} ms   ratio {first / warm:.2f}x   "
                  f"({starts} start-ups)")
    finally:
        emulator.stop()
        fake.endpoint_latency = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls")
    parser.add_argument("--only", choices=("gate", "concurrency", "cold-start"),
                        help="run only the quality gate's rows (0 and 1), the concurrent calls (3) or the cold start (5)")
    args = parser.parse_args()
    rounds = 5 if args.quick else 15
    workdir = Path(tempfile.mkdtemp(prefix="precall-bench-"))
    logs = workdir / "logs"
    logs.mkdir()
    samples = {"1 MB": make_sample(workdir, 1_000_000), "10 MB": make_sample(workdir, 10_000_000)}
    fake = FakeElevenLabs(api_key=API_KEY, voice_limit=1_000_000, auto_create_agents=True, record_file_bytes=False).start()
    try:
        if args.only in (None, "gate"):
            gate_cost(workdir, rounds * 2)
            added_time(fake, logs, samples, rounds * 2)
        if args.only is None:
            realistic_latency(fake, logs, samples["1 MB"], 3 if args.quick else 7)
        if args.only in (None, "concurrency"):
            concurrency(fake, logs, samples["1 MB"], [32] if args.quick else [32, 128])
        if args.only is None:
            memory(fake, logs, samples["10 MB"], 4 if args.quick else 8)
        if args.only in (None, "cold-start"):
            cold_start(fake, logs, samples["1 MB"], 3 if args.quick else 5)
    finally:
        fake.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
