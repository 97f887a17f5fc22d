"""Bounded fuzzing of the byte parsers: audio sniffing, probing and trimming, and request parsing.

A seeded mutation loop over real encodings and real request bodies, each loop within a fixed time
budget (about 20 s in all). Every input must end in a result or a `ServiceError` (a 4xx) within a
time and memory bound; an accepted sample must be plausible; and the JSON path must read exactly
what `json.loads` reads. A failure names its random seed and the input's file: `FUZZ_SEED=<seed>` replays
the run.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

from precall import audio, payload
from precall.payload import PrecallRequest, parse_request
from tests.conftest import AGENT_ID, json_body, multipart_body
from tests.hostile_corpus import with_fresh_ogg_checksums
from voiceclone.errors import InvalidPayload, ServiceError

SEED = int(os.environ.get("FUZZ_SEED", "20251210"))
AUDIO_SECONDS, JSON_SECONDS, MULTIPART_SECONDS = 9.0, 7.0, 3.0
TIME_BOUND_SECONDS = 2.0
MEMORY_BOUND_BYTES = 64 * 2**20
MAX_SAMPLE = 200_000  # small, so that some mutations cross it
AUDIO_SEEDS = ["wav_pcm16", "wav_pcm8_8k", "wav_float32", "wav_mulaw_8k", "wav_pcm24_48k_stereo", "mp3_cbr",
               "mp3_vbr_stereo", "mp3_8kbps_20s", "ogg_vorbis", "ogg_opus"]
INTERESTING = [0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 8000, 44100, 192001,
               0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]
T = TypeVar("T")
In = TypeVar("In")
MAGIC = [b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f", b"OggS\x00\x02", b"RIFF", b"LIST", b"fmt ", b"data", b"ds64",
         b"\xff\xfb\x90\x00", b"\xff\xf3\x00\x00", b"Xing", b"OpusHead", b"\x01vorbis", b"\x05vorbis"]


# --- Measurement ----------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


class Bounded:
    """Time and peak memory of one call: VmHWM (the kernel's exact peak, C allocations included)
    reset through /proc/self/clear_refs before it; without that file, time only."""

    def __init__(self) -> None:
        self.measures_memory = os.access("/proc/self/clear_refs", os.W_OK)

    def run(self, call: Callable[[], T]) -> tuple[T, float, int]:
        if self.measures_memory:
            Path("/proc/self/clear_refs").write_text("5")
            before = _status_kib("VmRSS")
        started = time.perf_counter()
        result = call()
        elapsed = time.perf_counter() - started
        grown = (_status_kib("VmHWM") - before) * 1024 if self.measures_memory else 0
        return result, elapsed, grown


def fuzz(tmp_path: Path, kind: str, seconds: float, next_input: Callable[[], In], check: Callable[[In], T]) -> list[T]:
    """`check` on inputs from `next_input` for `seconds`, each within the time and memory bound; an
    input that fails is written to `tmp_path` and named in the failure."""
    bounded, results, worst = Bounded(), [], (0.0, 0)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        data = next_input()
        try:
            result, elapsed, grown = bounded.run(lambda: check(data))
            assert elapsed < TIME_BOUND_SECONDS, f"{elapsed:.2f} s"
            assert grown < MEMORY_BOUND_BYTES, f"{grown / 2**20:.0f} MiB"
        except Exception as error:  # noqa: BLE001 - name the input, then fail
            path = tmp_path / f"{kind}-{SEED}-{len(results)}.bin"
            path.write_bytes(data if isinstance(data, bytes) else repr(data).encode())
            raise AssertionError(f"{kind} input {path} (FUZZ_SEED={SEED}): {type(error).__name__}: {error}") from error
        results.append(result)
        worst = (max(worst[0], elapsed), max(worst[1], grown))
    print(f"{kind} fuzz: {len(results)} inputs in {seconds:g} s, seed {SEED}, worst {worst[0] * 1000:.0f} ms, "
          f"{worst[1] / 2**20:.1f} MiB peak growth")
    return results


# --- Mutations -------------------------------------------------------------------------------------


def _position(rng: random.Random, data: bytearray) -> int:
    """Headers are where parsers decide: most mutations land in the first 512 bytes."""
    limit = len(data) if rng.random() < 0.3 else min(len(data), 512)
    return rng.randrange(max(1, limit))


def mutate(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            out = bytearray(rng.randbytes(16))
        kind = rng.randrange(9)
        at = _position(rng, out)
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                out[_position(rng, out)] ^= 1 << rng.randrange(8)
        elif kind == 1:
            width = rng.choice((1, 2, 4))
            value = rng.choice(INTERESTING) & ((1 << 8 * width) - 1)
            out[at:at + width] = value.to_bytes(width, rng.choice(("little", "big")))
        elif kind == 2:
            del out[rng.randrange(len(out) + 1):]
        elif kind == 3:
            start = rng.randrange(len(out) + 1)
            out[at:at] = out[start:start + rng.choice((4, 8, 64, 512, 4096))] * rng.choice((1, 2, 100))
        elif kind == 4:
            del out[at:at + rng.choice((1, 4, 16, 256, 4096))]
        elif kind == 5:
            out[at:at + rng.choice((4, 64, 1024))] = bytes([rng.choice((0, 0xFF))]) * rng.choice((4, 64, 1024))
        elif kind == 6:
            out[at:at] = rng.choice(MAGIC)
        elif kind == 7:
            other = rng.choice(others)
            out = out[:at] + bytearray(other[rng.randrange(len(other)):])
        else:
            out[at:at + 16] = rng.randbytes(16)
    if out[:4] == b"OggS" and rng.random() < 0.7:
        return with_fresh_ogg_checksums(bytes(out))
    return bytes(out)


# --- Audio -----------------------------------------------------------------------------------------


def check_audio(data: bytes) -> None:
    """A 4xx or a plausible, long-enough probe; a trim of an accepted sample stays in its format."""
    try:
        fmt = audio.sniff_format(data)
        probe = audio.probe(data, fmt, 3.0)
    except ServiceError as error:
        assert error.http_status in (400, 413, 415), error
        return
    assert audio.MIN_SAMPLE_RATE <= probe.sample_rate <= audio.MAX_SAMPLE_RATE
    assert 1 <= probe.channels <= audio.MAX_CHANNELS
    assert probe.decoded_seconds >= 3.0 - 1e-6
    try:
        trimmed = audio.trim(data, fmt, 2.0)
    except ServiceError as error:
        assert error.http_status == 400, error
        return
    assert audio.sniff_format(trimmed) is fmt and len(trimmed) <= len(data) + 64


def test_mutated_real_audio_ends_in_a_4xx_or_a_plausible_probe_within_bounds(audio_files, tmp_path, capfd):
    rng = random.Random(SEED)
    seeds = [audio_files[name].read_bytes() for name in AUDIO_SEEDS]
    results = fuzz(tmp_path, "audio", AUDIO_SECONDS, lambda: mutate(rng, rng.choice(seeds), seeds), check_audio)
    captured = capfd.readouterr()
    print(captured.out)
    assert len(results) > 200
    assert captured.err == "", "a native decoder wrote to stderr"


# --- JSON ------------------------------------------------------------------------------------------

NEVER = re.compile(rb"(?!)")


def outcome(body: bytes, content_type: str) -> tuple[str, Any]:
    try:
        return "ok", parse_request(body, content_type, None, MAX_SAMPLE)
    except ServiceError as error:
        assert error.http_status in (400, 413), error
        return "error", error.code


def reference_sample(document: dict[str, Any]) -> bytes:
    """What `json.loads` put in `voice_sample.data`, decoded by the standard library: strict base64,
    else with whitespace removed (line-wrapped base64)."""
    sample = document["voice_sample"]
    value = sample if isinstance(sample, str) else sample["data"]
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return base64.b64decode("".join(value.split()), validate=True)


def check_json(body: bytes) -> bool:
    """The parser's answer equals its own answer with the fast path off, and an accepted body is
    exactly what `json.loads` reads. True when the body was accepted."""
    fast = outcome(body, "application/json")
    with mock.patch.object(payload, "_DATA_VALUE", NEVER):
        slow = outcome(body, "application/json")
    assert fast == slow, (fast, slow)
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        assert fast == ("error", InvalidPayload.code)
        return False
    if fast[0] == "ok":
        request: PrecallRequest = fast[1]
        assert isinstance(document, dict)
        assert request.sample.data == reference_sample(document)
        assert request.conversation_id in (document.get("conversation_id"), document.get("call_sid"))
        assert request.agent_id == document.get("agent_id")
    return fast[0] == "ok"


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(8 if depth < 4 else 5)
    if pick == 0:
        return rng.choice([None, True, False, 0, -1, 1e308, 10**30])
    if pick in (1, 2, 3):
        return rng.choice(["", "data", "voice_sample", "\u0000", "\ud800", "\"", "\\", "é", "QUJD", "conv_1", AGENT_ID])
    if pick == 4:
        return base64.b64encode(rng.randbytes(rng.randrange(64))).decode()
    if pick == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["data", "voice_sample", "conversation_id", "agent_id", "caller_metadata", "name", "call_sid", "x"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def _json_seeds(sample: bytes) -> list[bytes]:
    b64 = base64.b64encode(sample).decode()
    wrapped = base64.encodebytes(sample).decode()
    base = {"conversation_id": "conv_fuzz", "agent_id": AGENT_ID}
    return [
        json_body(sample, conversation_id="conv_fuzz"),
        json.dumps({**base, "voice_sample": b64}).encode(),
        json.dumps({**base, "voice_sample": {"data": wrapped}}).encode(),
        json.dumps({**base, "voice_sample": {"data": b64}}).replace("/", "\\/").encode(),
        json.dumps({"call_sid": "CA123", "agent_id": AGENT_ID, "voice_sample": {"data": b64}, "caller_id": "+31612345678",
                    "caller_metadata": {"name": "Ivan", "data": "QUJD"}}, separators=(",", ":")).encode(),
        json.dumps({**base, "caller_metadata": {"data": "QUJD"}, "voice_sample": {"data": b64}}).encode(),
    ]


def _forgeries(rng: random.Random, seed: bytes) -> bytes:
    """Edits aimed at the fast path: duplicate keys, escapes and raw control bytes in or near the value."""
    text = seed
    start = text.find(b'"data"')
    if start < 0:
        return text
    value = text.find(b'"', text.find(b":", start)) + 1
    edit = rng.randrange(6)
    if edit == 0:
        dup = rng.choice([b'"data": "QUJD", ', b'"data": "\\u0000precall-sample\\u0000", ', b'"data": 1, ', b'"data": "", '])
        close = text.find(b"}", value)
        return text[:close] + b", " + dup.rstrip(b", ") + text[close:]
    if edit == 1:
        at = value + rng.randrange(1, 200)
        return text[:at] + rng.choice([b"\n", b"\t", b"\x00", b"\x7f", b"\\n", b"\\/", b"\\u0041", b" ", b"\xc3\xa9", b"\xff"]) + text[at:]
    if edit == 2:
        return text.replace(b'"voice_sample"', b'"voice_sample": {"data": "QUJD"}, "voice_sample"', 1)
    if edit == 3:
        return text.replace(b'"data"', b'"d\\u0061ta"', 1)
    if edit == 4:
        return text[:value] + b"QUJD" + text[value:]
    return text.replace(b"{", b"{" + b'"x": ' + b"[" * rng.choice((10, 900, 5000)) + b"]" * 5000 + b", ", 1)


def test_json_bodies_are_read_exactly_as_json_loads_reads_them(audio_files, tmp_path):
    rng = random.Random(SEED + 1)
    seeds = _json_seeds(audio_files["mp3_8kbps_20s"].read_bytes()[:3000])

    def next_body() -> bytes:
        roll = rng.random()
        if roll < 0.2:
            return json.dumps(_random_json(rng), ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
        if roll < 0.6:
            return _forgeries(rng, rng.choice(seeds))
        return mutate(rng, rng.choice(seeds), seeds)

    accepted = fuzz(tmp_path, "json", JSON_SECONDS, next_body, check_json)
    assert len(accepted) > 1000 and sum(accepted) > 50


def test_mutated_multipart_bodies_end_in_a_result_or_a_4xx_within_bounds(audio_files, tmp_path):
    rng = random.Random(SEED + 2)
    sample = audio_files["mp3_8kbps_20s"].read_bytes()[:3000]
    seeds = [multipart_body(sample, {"conversation_id": "conv_fuzz", "agent_id": AGENT_ID,
                                     "caller_metadata": json.dumps({"name": "Ivan"})}),
             multipart_body(sample, {"call_sid": "CA1", "caller_name": "Ivan", "agent_id": AGENT_ID})]
    odd_types = ["multipart/form-data; boundary*=utf-8''%E2%82%AC", "multipart/form-data; boundary=" + "x" * 71,
                 "multipart/form-data", "multipart/form-data; boundary*0=a; boundary*1=b"]

    def next_request() -> tuple[bytes, str]:
        body, content_type = rng.choice(seeds)
        return mutate(rng, body, [b for b, _ in seeds]), rng.choice(odd_types) if rng.random() < 0.2 else content_type

    outcomes = fuzz(tmp_path, "multipart", MULTIPART_SECONDS, next_request, lambda request: outcome(*request))
    assert len(outcomes) > 200 and any(kind == "ok" for kind, _ in outcomes)
