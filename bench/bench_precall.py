"""Pre-call benchmark: prints numbers, asserts nothing.

1. The service's own time per pre-call (signature, parsing, validation, upload build, response)
   for 100 kB, 1 MB and 10 MB samples, JSON and multipart, measured stage by stage in-process.
2. End-to-end time of one call and of 32 concurrent calls through the real functions-framework
   server while the local ElevenLabs server adds 2 s to every request.
3. Peak RSS of the server worker per in-flight 10 MB sample.

Run: `make bench` (or `.venv/bin/python bench/bench_precall.py [--quick]`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from precall import audio, signature  # noqa: E402
from precall.outcome import CloneOutcome  # noqa: E402
from precall.payload import CallerInfo, parse_request  # noqa: E402
from precall.responses import success_body  # noqa: E402
from sandbox.elevenlabs_server import FakeElevenLabs  # noqa: E402
from sandbox.processes import FunctionServer  # noqa: E402
from tests.audio_fixtures import SPEECH  # noqa: E402
from tests.conftest import json_body, multipart_body  # noqa: E402
from voiceclone.config import load_settings  # noqa: E402

SECRET = "bench-secret"
API_KEY = "bench-key"
MAX_SAMPLE = 10 * 1024 * 1024


def make_sample(directory: Path, target_bytes: int, codec: str) -> bytes:
    """Real speech (espeak-ng), looped by ffmpeg to about `target_bytes`."""
    speech = directory / "speech.wav"
    if not speech.exists():
        subprocess.run(["espeak-ng", "-v", "nl", "-w", str(speech), SPEECH], check=True)
    if codec == "wav":  # 16-bit mono 44.1 kHz: 88200 bytes per second
        seconds, args, ext = target_bytes / 88200, ["-ar", "44100", "-ac", "1", "-c:a", "pcm_s16le"], "wav"
    else:  # 128 kbit/s MP3: 16000 bytes per second
        seconds, args, ext = target_bytes / 16000, ["-ar", "44100", "-c:a", "libmp3lame", "-b:a", "128k"], "mp3"
    out = directory / f"sample_{target_bytes}.{ext}"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(speech),
                    "-t", f"{seconds:.2f}", *args, str(out)], check=True)
    data = out.read_bytes()
    return data[:MAX_SAMPLE] if len(data) > MAX_SAMPLE else data


def p50(values: list[float]) -> float:
    return statistics.median(values) * 1000


def own_time(sample: bytes, kind: str, rounds: int) -> dict[str, float]:
    """Median milliseconds of each stage the service itself spends on one pre-call."""
    settings = load_settings({"ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_WEBHOOK_SECRET": SECRET})
    if kind == "json":
        body, content_type = json_body(sample, conversation_id="conv_bench"), "application/json"
    else:
        body, content_type = multipart_body(sample, {"conversation_id": "conv_bench", "agent_id": "agent_bench",
                                                     "caller_metadata": json.dumps({"name": "Ivan"})})
    header = signature.sign(body, SECRET, int(time.time()))
    stages: dict[str, list[float]] = {k: [] for k in ("signature", "parse", "validate", "upload_build", "response", "total")}
    for _ in range(rounds):
        t0 = time.perf_counter()
        signature.verify(body, header, settings.webhook_secrets, time.time(), 1800)
        t1 = time.perf_counter()
        parsed = parse_request(body, content_type, "agent_bench", settings.max_sample_bytes)
        t2 = time.perf_counter()
        fmt = audio.sniff_format(parsed.sample.data)
        audio.probe(parsed.sample.data, fmt, settings.min_sample_seconds)
        t3 = time.perf_counter()
        upload = requests.Request("POST", "http://x/v1/voices/add", data={"name": "n", "labels": "{}"},
                                  files={"files": ("voice_sample." + fmt.extension, parsed.sample.data, fmt.mime_type)}).prepare()
        t4 = time.perf_counter()
        outcome = CloneOutcome("conv_bench", "agent_bench", "v", "n", True, "hi", CallerInfo("Ivan"), False)
        json.dumps(success_body(outcome, settings, 1))
        t5 = time.perf_counter()
        del upload
        for key, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0), strict=True):
            stages[key].append(value)
    return {key: p50(values) for key, values in stages.items()}


def worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0]) if children else master


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def post(url: str, body: bytes, content_type: str = "application/json") -> float:
    start = time.perf_counter()
    response = requests.post(url, data=body, timeout=120, headers={
        "Content-Type": content_type, "ElevenLabs-Signature": signature.sign(body, SECRET, int(time.time()))})
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
    return elapsed


def concurrent(url: str, bodies: list[bytes]) -> float:
    start = time.perf_counter()
    errors: list[BaseException] = []

    def run(body: bytes) -> None:
        try:
            post(url, body)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, fewer concurrent calls")
    args = parser.parse_args()
    rounds = 5 if args.quick else 21
    workdir = Path(tempfile.mkdtemp(prefix="precall-bench-"))
    samples = {
        "100 kB mp3": make_sample(workdir, 100_000, "mp3"),
        "1 MB mp3": make_sample(workdir, 1_000_000, "mp3"),
        "10 MB mp3": make_sample(workdir, 10_000_000, "mp3"),
        "10 MB wav": make_sample(workdir, 10_000_000, "wav"),
    }

    print("== service's own time per pre-call, p50 ms (in-process, no network) ==")
    print(f"{'sample':12} {'body':9} {'signature':>9} {'parse':>7} {'validate':>8} {'upload':>7} {'response':>8} {'total':>7}")
    for label, sample in samples.items():
        for kind in ("json", "multipart"):
            t = own_time(sample, kind, rounds)
            print(f"{label:12} {kind:9} {t['signature']:9.2f} {t['parse']:7.2f} {t['validate']:8.2f} "
                  f"{t['upload_build']:7.2f} {t['response']:8.2f} {t['total']:7.2f}")

    fake = FakeElevenLabs(api_key=API_KEY, voice_limit=10_000, auto_create_agents=True, record_file_bytes=False).start()
    env = {"ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_WEBHOOK_SECRET": SECRET, "ELEVENLABS_BASE_URL": fake.url,
           "ELEVENLABS_AGENT_ID": "agent_bench", "VOICE_CLONE_AUTO_DELETE": "false", "THREADS": "64", "LOG_LEVEL": "WARNING"}
    server = FunctionServer("precall_webhook", env).start()
    url = server.url + "/webhook"
    try:
        one_mb = samples["1 MB mp3"]
        post(url, json_body(one_mb, conversation_id="conv_warm"))
        fake.latency = 0.0
        zero = [post(url, json_body(one_mb, conversation_id=f"conv_zero_{i}")) for i in range(rounds)]
        print("\n== end to end over HTTP, 1 MB JSON, ElevenLabs latency 0 ==")
        print(f"p50 {p50(zero):.1f} ms (includes the local ElevenLabs server parsing the upload)")

        fake.latency = 2.0
        count = 8 if args.quick else 32
        single = post(url, json_body(one_mb, conversation_id="conv_single"))
        together = concurrent(url, [json_body(one_mb, conversation_id=f"conv_c{i}") for i in range(count)])
        print(f"\n== {count} concurrent calls, 1 MB JSON, ElevenLabs latency 2 s per request (3 requests per call) ==")
        print(f"one call {single:.2f} s, {count} concurrent {together:.2f} s, ratio {together / single:.2f}x")

        fake.latency = 3.0
        ten_mb = samples["10 MB mp3"]
        pid = worker_pid(server.process.pid)
        time.sleep(0.5)
        baseline = rss_kib(pid)
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak (VmHWM)
        in_flight = 4 if args.quick else 8
        concurrent(url, [json_body(ten_mb, conversation_id=f"conv_rss{i}") for i in range(in_flight)])
        peak = rss_kib(pid, "VmHWM")
        per_call = (peak - baseline) * 1024 / in_flight
        print(f"\n== memory, {in_flight} in-flight 10 MB JSON samples ==")
        print(f"worker RSS baseline {baseline / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB, "
              f"{per_call / 2**20:.1f} MiB per in-flight call = {per_call / len(ten_mb):.2f}x the sample")
    finally:
        server.stop()
        fake.stop()


if __name__ == "__main__":
    main()
