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
from sandbox.processes import FunctionServer, tree_pids, tree_rss_bytes
from tests.conftest import (
    MAX_SAMPLE_BYTES,
    function_server,
    in_parallel,
    json_body,
    log_events,
    service_settings,
    signature_header,
    wait_until,
)
from tests.hostile_corpus import CATEGORIES, HostileCase, build_corpus, encodings, long_speech_mp3
from voiceclone.errors import SampleTooShort

# The promise is an answer within about a second; 2 s leaves the margin a loaded 2-core machine needs
# (the slowest case took 124 ms here, unloaded).
TIME_BOUND_SECONDS = 2.0
# Growth of the server's whole process tree during one request, its own body (up to 13 MB) and
# decoded sample (up to 10 MB) included.
MEMORY_BOUND_BYTES = 64 * 2**20
ERROR_KEYS = {"status", "error_code", "error_message", "conversation_id"}
QUALITY_KEYS = {"reasons", "quality"}  # what a refusal by the quality gate adds


class TreeMemory:
    """Peak resident memory of a process tree during a block, above its level before the block.

    `tree_rss_bytes` is sampled every 2 ms in a thread (it sees short-lived children such as a
    decoder subprocess); each process's own peak (VmHWM, reset through clear_refs before the block)
    catches what falls between two samples."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.growth = 0

    def _reset_peaks(self) -> list[int]:
        pids = tree_pids(self.root)
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


# What the corpus is built for: the default sample limit, a 3 s minimum, no trimming.
HOSTILE_SETTINGS = {"MAX_SAMPLE_BYTES": str(MAX_SAMPLE_BYTES), "MIN_SAMPLE_SECONDS": "3", "CLONE_SAMPLE_MAX_SECONDS": "0"}


@pytest.fixture(scope="module")
def encoded(audio_files, tmp_path_factory) -> dict[str, bytes]:
    return encodings(audio_files, tmp_path_factory.mktemp("encodings"))


@pytest.fixture(scope="module")
def corpus(audio_files, encoded) -> dict[str, list[HostileCase]]:
    cases = build_corpus(audio_files, encoded)
    return {category: [case for case in cases if case.category == category] for category in CATEGORIES}


@pytest.fixture(scope="module")
def hostile_server(fake_server: FakeElevenLabs) -> Iterator[FunctionServer]:
    """One server for every category (a start-up per category would double this file's time)."""
    with function_server({**service_settings(fake_server), **HOSTILE_SETTINGS}) as server:
        yield server


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
    # Every answer's `webhook_error` line has come through the server's output pipe: what it wrote
    # about these requests is all there.
    assert wait_until(lambda: len(log_events(hostile_server.logs()[log_start:], "webhook_error")) >= len(corpus[category]),
                      timeout=10)
    assert _non_json_lines(hostile_server.logs()[log_start:]) == []
    assert requests.get(hostile_server.url + "/healthz", timeout=5).status_code == 200


def test_a_43_minute_sample_is_validated_and_trimmed_within_bounds(real_server, fake, audio_files, encoded):
    """The valid twin of the corrupted-tag MP3 (and a 3.5-minute WAV): accepted, decoded only as far
    as the minimum, trimmed by cutting frames, so the upload holds `CLONE_SAMPLE_MAX_SECONDS`."""
    speech, rate = soundfile.read(audio_files["wav_pcm16"], dtype="int16")
    long_wav = io.BytesIO()
    soundfile.write(long_wav, numpy.tile(speech, 35), rate, format="WAV", subtype="PCM_16")  # 3.5 minutes, 9.3 MB
    server = real_server(**dict(HOSTILE_SETTINGS, CLONE_SAMPLE_MAX_SECONDS="30"))
    log_start = len(server.logs())
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
    assert wait_until(lambda: len(log_events(server.logs()[log_start:], "webhook_complete")) == 2, timeout=10)
    assert _non_json_lines(server.logs()[log_start:]) == []


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
