"""Hostile input cannot hurt an instance (docs/api.md, docs/design.md): every case of `tests/hostile_corpus.py` sent
to the real server (`functions-framework --target precall_webhook`) gets its 4xx with the JSON
error body, within a time bound and a memory bound measured on the server's whole process tree,
without reaching ElevenLabs, and with nothing but JSON lines in the server's output."""

from __future__ import annotations

import ctypes
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy
import pytest
import requests
import soundfile

from precall import audio
from sandbox.elevenlabs_server import FakeElevenLabs
from sandbox.processes import FunctionServer, tree_rss_bytes
from tests.conftest import API_KEY, SECRET, in_parallel, json_body, signature_header
from tests.hostile_corpus import CATEGORIES, HostileCase, build_corpus, encodings, long_speech_mp3
from voiceclone.errors import SampleTooShort

TIME_BOUND_SECONDS = 2.0
# Growth of the server's whole process tree during one request, its own body (up to 13 MB) and
# decoded sample (up to 10 MB) included.
MEMORY_BOUND_BYTES = 64 * 2**20
ERROR_KEYS = {"status", "error_code", "error_message", "conversation_id"}
QUALITY_KEYS = {"reasons", "quality"}  # what a refusal by the quality gate adds


def _tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


class TreeMemory:
    """Peak resident memory of a process tree during a block, above its level before the block.

    `tree_rss_bytes` is sampled every 2 ms in a thread (it sees short-lived children such as a
    decoder subprocess); each process's own peak (VmHWM, reset through clear_refs before the block)
    catches what falls between two samples."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.growth = 0

    def _reset_peaks(self) -> list[int]:
        pids = _tree_pids(self.root)
        for pid in pids:
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass
        return pids

    @staticmethod
    def _peak(pid: int) -> int:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            return 0
        return next((int(line.split()[1]) * 1024 for line in lines if line.startswith("VmHWM:")), 0)

    def __enter__(self) -> TreeMemory:
        self._pids = self._reset_peaks()
        self._baseline = tree_rss_bytes(self.root)
        self._sampled = self._baseline
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.002):
            self._sampled = max(self._sampled, tree_rss_bytes(self.root))

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        peaks = sum(self._peak(pid) for pid in self._pids)
        self.growth = max(self._sampled, peaks) - self._baseline


def _env(fake: FakeElevenLabs, **extra: str) -> dict[str, str]:
    return {"ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_WEBHOOK_SECRET": SECRET, "ELEVENLABS_BASE_URL": fake.url,
            "REQUEST_DEADLINE_SECONDS": "20", "MAX_SAMPLE_BYTES": str(10 * 1024 * 1024), "MIN_SAMPLE_SECONDS": "3",
            "CLONE_SAMPLE_MAX_SECONDS": "0", **extra}


@pytest.fixture(scope="module")
def encoded(audio_files, tmp_path_factory) -> dict[str, bytes]:
    return encodings(audio_files, tmp_path_factory.mktemp("encodings"))


@pytest.fixture(scope="module")
def corpus(audio_files, encoded) -> dict[str, list[HostileCase]]:
    cases = build_corpus(audio_files, encoded)
    return {category: [case for case in cases if case.category == category] for category in CATEGORIES}


@pytest.fixture(scope="module")
def hostile_server(fake_server: FakeElevenLabs) -> Iterator[FunctionServer]:
    server = FunctionServer("precall_webhook", _env(fake_server)).start()
    yield server
    server.stop()


def _send(server: FunctionServer, body: bytes, content_type: str, signature: str | None = None) -> requests.Response:
    return requests.post(server.url + "/webhook", data=body, timeout=30, headers={
        "Content-Type": content_type, "ElevenLabs-Signature": signature or signature_header(body)})


def _non_json_lines(text: str) -> list[str]:
    bad = []
    for line in filter(None, text.splitlines()):
        try:
            json.loads(line)
        except ValueError:
            bad.append(line)
    return bad


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_hostile_input_gets_its_4xx_in_bounded_time_and_memory(category, corpus, hostile_server, fake):
    log_start = len(hostile_server.logs())
    failures, slowest, largest = [], (0.0, ""), (0, "")
    for case in corpus[category]:
        with TreeMemory(hostile_server.process.pid) as memory:
            started = time.monotonic()
            response = _send(hostile_server, case.body, case.content_type, case.signature)
            elapsed = time.monotonic() - started
        body = response.json() if response.headers.get("Content-Type") == "application/json" else None
        problems = []
        if response.status_code != case.status or body is None or body.get("error_code") != case.error_code:
            problems.append(f"answered {response.status_code} {response.text[:160]!r}")
        elif set(body) != ERROR_KEYS | (QUALITY_KEYS if case.error_code == "SAMPLE_QUALITY_TOO_LOW" else set()) \
                or body["status"] != "error" or not body["error_message"]:
            problems.append(f"error body {body}")
        if elapsed >= TIME_BOUND_SECONDS:
            problems.append(f"took {elapsed:.2f} s")
        if memory.growth >= MEMORY_BOUND_BYTES:
            problems.append(f"grew the server by {memory.growth / 2**20:.0f} MiB")
        if problems:
            failures.append(f"{case.name} (expected {case.status} {case.error_code}): {'; '.join(problems)}")
        slowest, largest = max(slowest, (elapsed, case.name)), max(largest, (memory.growth, case.name))
    print(f"{category}: {len(corpus[category])} cases; slowest {slowest[1]} {slowest[0] * 1000:.0f} ms; "
          f"largest peak growth {largest[1]} {largest[0] / 2**20:.1f} MiB")
    assert not failures, "\n".join(failures)
    assert fake.requests_to("POST", "/v1/voices/add") == []
    time.sleep(0.2)
    assert _non_json_lines(hostile_server.logs()[log_start:]) == []
    assert requests.get(hostile_server.url + "/healthz", timeout=5).status_code == 200


def test_a_43_minute_sample_is_validated_and_trimmed_within_bounds(fake, audio_files, encoded):
    """The valid twin of the corrupted-tag MP3 (and a 3.5-minute WAV): accepted, decoded only as far
    as the minimum, trimmed by cutting frames, so the upload holds `CLONE_SAMPLE_MAX_SECONDS`."""
    speech, rate = soundfile.read(audio_files["wav_pcm16"], dtype="int16")
    long_wav = io.BytesIO()
    soundfile.write(long_wav, numpy.tile(speech, 35), rate, format="WAV", subtype="PCM_16")  # 3.5 minutes, 9.3 MB
    server = FunctionServer("precall_webhook", _env(fake, CLONE_SAMPLE_MAX_SECONDS="30")).start()
    log_start = len(server.logs())
    try:
        for index, sample in enumerate((long_speech_mp3(encoded["mp3_32k_frames"]), long_wav.getvalue())):
            body = json_body(sample, conversation_id=f"conv_long{index}")
            with TreeMemory(server.process.pid) as memory:
                started = time.monotonic()
                response = _send(server, body, "application/json")
                elapsed = time.monotonic() - started
            assert response.status_code == 200, response.text
            assert elapsed < TIME_BOUND_SECONDS and memory.growth < MEMORY_BOUND_BYTES, (elapsed, memory.growth)
            print(f"{len(sample) / 1e6:.1f} MB sample: {elapsed * 1000:.0f} ms, peak growth {memory.growth / 2**20:.1f} MiB")
        uploads = [r.files["files"][0]["data"] for r in fake.requests_to("POST", "/v1/voices/add")]
        assert [round(soundfile.info(io.BytesIO(upload)).duration) for upload in uploads] == [30, 30]
        assert _non_json_lines(server.logs()[log_start:]) == []
    finally:
        server.stop()


def test_native_decoder_messages_never_reach_stderr_even_from_many_threads(audio_files, capfd):
    """libmpg123 complains on stderr about a truncated MP3's Xing header and about corrupt frames;
    while decodes run on 16 threads nothing gets out, and afterwards C's stderr works again."""
    noisy = [audio_files["mp3_truncated_info"].read_bytes(), audio_files["mp3_cbr"].read_bytes()[:20000] + bytes(range(256)) * 40]
    errors: list[BaseException] = []

    def decode() -> None:
        for _ in range(20):
            for data in noisy:
                try:
                    audio.probe(data, audio.AudioFormat.MP3, 3.0)
                except SampleTooShort:
                    pass
                except BaseException as error:  # noqa: BLE001 - collected, asserted below
                    errors.append(error)

    in_parallel(lambda _: decode(), range(16))
    assert errors == []
    assert capfd.readouterr().err == ""
    libc = ctypes.CDLL(None)
    stream = ctypes.c_void_p.in_dll(libc, "stderr")
    libc.fputs(b"C stderr still works\n", stream)
    libc.fflush(stream)
    assert capfd.readouterr().err == "C stderr still works\n"
