"""Webhook bodies of any size: signature verified and JSON skeleton kept while the body streams."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from precall.json_skeleton import JsonSkeleton
from precall.signature import StreamingVerifier, compute_signature, sign, verify
from precall.streamed_body import read_signed_json
from tests.conftest import SECRET
from voiceclone.errors import InvalidSignature, SignatureExpired

NOW = 1_800_000_000
TOLERANCE = 1800
BODY = json.dumps(
    {"type": "post_call_transcription", "data": {"conversation_id": "conv_1", "note": 'a "quoted" \\ é'}}
).encode()


class PieceStream:
    """A request stream over pieces: `read(n)` returns at most n bytes, often fewer (as a chunked
    body does), and b"" only at the end. Counts its reads."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = iter(pieces)
        self._buffer = b""
        self.reads = 0

    def read(self, size: int, /) -> bytes:
        self.reads += 1
        while not self._buffer:
            piece = next(self._pieces, None)
            if piece is None:
                return b""
            self._buffer = piece
        returned, self._buffer = self._buffer[:size], self._buffer[size:]
        return returned


def ragged_pieces(data: bytes, rng: random.Random, largest: int) -> list[bytes]:
    pieces, start = [], 0
    while start < len(data):
        end = start + rng.randint(1, largest)
        pieces.append(data[start:end])
        start = end
    return pieces


def skeleton_of(pieces: Iterable[bytes], **limits: int) -> JsonSkeleton:
    skeleton = JsonSkeleton(**limits)
    for piece in pieces:
        skeleton.feed(piece)
    return skeleton


# --- signature ---------------------------------------------------------------------------------

GOOD = compute_signature(BODY, SECRET, NOW)
SIGNATURE_CASES = [
    pytest.param(sign(BODY, SECRET, NOW), (SECRET,), NOW, id="valid"),
    pytest.param(sign(BODY, "other", NOW), (SECRET,), InvalidSignature, id="wrong-secret"),
    pytest.param(sign(BODY + b" ", SECRET, NOW), (SECRET,), InvalidSignature, id="tampered-body"),
    pytest.param(sign(BODY, "new", NOW), ("old", "new"), NOW, id="rotated-new-secret"),
    pytest.param(sign(BODY, "old", NOW - 60), ("old", "new"), NOW - 60, id="rotated-old-secret"),
    pytest.param(sign(BODY, SECRET, NOW), (), InvalidSignature, id="no-secrets"),
    pytest.param(f"t={NOW},v0={'0' * 64},v0={GOOD}", (SECRET,), NOW, id="second-v0-matches"),
    pytest.param(f"v0={GOOD},t={NOW},v0={'0' * 64}", (SECRET,), NOW, id="first-v0-matches"),
    pytest.param(f"t={NOW},v0={'0' * 64},v0={'1' * 64}", (SECRET,), InvalidSignature, id="no-v0-matches"),
    pytest.param(f"t={NOW},v0=é", (SECRET,), InvalidSignature, id="non-ascii-v0"),
    pytest.param(sign(BODY, SECRET, NOW - 1800), (SECRET,), NOW - 1800, id="oldest-accepted"),
    pytest.param(sign(BODY, SECRET, NOW - 1801), (SECRET,), SignatureExpired, id="expired"),
    pytest.param(sign(BODY, SECRET, NOW + 300), (SECRET,), NOW + 300, id="future-skew-accepted"),
    pytest.param(sign(BODY, SECRET, NOW + 301), (SECRET,), SignatureExpired, id="future"),
    pytest.param(sign(BODY, "other", NOW - 3600), (SECRET,), SignatureExpired, id="expired-and-wrong"),
    pytest.param(None, (SECRET,), InvalidSignature, id="missing"),
    pytest.param("", (SECRET,), InvalidSignature, id="empty"),
    pytest.param("garbage", (SECRET,), InvalidSignature, id="garbage"),
    pytest.param(f"t={NOW}", (SECRET,), InvalidSignature, id="no-v0"),
    pytest.param(f"t={NOW}, v0={GOOD}", (SECRET,), NOW, id="space-after-comma"),  # accepted (docs/api.md)
]


def outcome(check: Callable[..., int], *args: Any) -> int | type[Exception]:
    """The timestamp `check(*args)` returns or the type of signature error it raises."""
    try:
        return check(*args)
    except (InvalidSignature, SignatureExpired) as error:
        return type(error)


def streamed_verdict(header: str | None, secrets: tuple[str, ...], piece_bytes: int) -> int:
    verifier = StreamingVerifier(header, secrets, NOW, TOLERANCE)
    for start in range(0, len(BODY), piece_bytes):
        verifier.update(BODY[start:start + piece_bytes])
    return verifier.finish()


@pytest.mark.parametrize(("header", "secrets", "expected"), SIGNATURE_CASES)
def test_streaming_verification_gives_the_same_verdict_as_verify(header, secrets, expected):
    assert outcome(verify, BODY, header, secrets, NOW, TOLERANCE) == expected
    for piece_bytes in (1, 3, 64, len(BODY)):
        assert outcome(streamed_verdict, header, secrets, piece_bytes) == expected
    stream = PieceStream(ragged_pieces(BODY, random.Random(1), 17))
    assert outcome(lambda: read_signed_json(stream, header, secrets, NOW, TOLERANCE, chunk_size=10).timestamp) \
        == expected


@pytest.mark.parametrize(("header", "error"), [
    pytest.param(None, InvalidSignature, id="missing"),
    pytest.param("t=abc,v0=00", InvalidSignature, id="malformed"),
    pytest.param(sign(BODY, SECRET, NOW - 1801), SignatureExpired, id="expired"),
    pytest.param(sign(BODY, SECRET, NOW + 301), SignatureExpired, id="future"),
])
def test_a_bad_or_out_of_window_header_is_refused_before_any_body_byte_is_read(header, error):
    stream = PieceStream([BODY])
    with pytest.raises(error):
        read_signed_json(stream, header, (SECRET,), NOW, TOLERANCE)
    assert stream.reads == 0


def test_a_wrong_signature_is_refused_after_the_whole_body_streamed():
    stream = PieceStream([BODY])
    with pytest.raises(InvalidSignature):
        read_signed_json(stream, sign(BODY, "other", NOW), (SECRET,), NOW, TOLERANCE)
    assert stream.read(1) == b""


def test_read_signed_json_returns_the_skeleton_size_and_timestamp_of_a_signed_body():
    stream = PieceStream(ragged_pieces(BODY, random.Random(2), 9))
    result = read_signed_json(stream, sign(BODY, SECRET, NOW - 5), (SECRET,), NOW, TOLERANCE, chunk_size=7,
                              max_string_bytes=4)
    assert result.body_bytes == len(BODY)
    assert result.timestamp == NOW - 5
    assert not result.overflowed
    assert json.loads(result.skeleton) == {"type": "", "data": {"": "", "note": ""}}


# --- skeleton: the reference transform on random documents ----------------------------------------

PLAIN_CHARS = "abXY09 _-"
TRICKY_CHARS = ['"', "\\", "/", "\n", "\t", "\b", "\f", "\r", "\x00", "\x1f", "é", "中", "😀", "\u2028"]
SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
NUMBERS = ["0", "-1", "42", "3.25", "-0.5e10", "1E-3", "12345678901234567890"]
WHITESPACE = ["", "", "", " ", "\n", "\t ", "\r\n  "]


class RandomJson:
    """Writes random JSON text by hand (escapes chosen at random, so several spellings of one value
    occur) and, in the same pass, the value `json.loads` must give and the value the skeleton must
    give: every string whose raw text between the quotes exceeds `max_string_bytes` UTF-8 bytes
    becomes ""."""

    def __init__(self, rng: random.Random, max_string_bytes: int) -> None:
        self.rng = rng
        self.max_string_bytes = max_string_bytes

    def document(self) -> tuple[bytes, Any, Any]:
        text, value, expected = self.value(depth=0, kind=self.rng.choice(["object", "object", "array", "string"]))
        return (self.space() + text + self.space()).encode(), value, expected

    def value(self, depth: int, kind: str | None = None) -> tuple[str, Any, Any]:
        if kind is None:
            containers = ["object", "array"] * (3 - depth) if depth < 3 else []
            kind = self.rng.choice(["string", "string", "string", "number", "literal", *containers])
        if kind == "string":
            return self.string()
        if kind == "number":
            text = self.rng.choice(NUMBERS)
            return text, json.loads(text), json.loads(text)
        if kind == "literal":
            text = self.rng.choice(["true", "false", "null"])
            return text, json.loads(text), json.loads(text)
        if kind == "array":
            items = [self.value(depth + 1) for _ in range(self.rng.randint(0, 5))]
            text = "[" + ",".join(self.space() + t + self.space() for t, _, _ in items) + "]"
            return text, [v for _, v, _ in items], [e for _, _, e in items]
        texts, value, expected = [], {}, {}
        for _ in range(self.rng.randint(0, 5)):
            key_text, key, expected_key = self.string()
            item_text, item, expected_item = self.value(depth + 1)
            texts.append(f"{self.space()}{key_text}{self.space()}:{self.space()}{item_text}{self.space()}")
            value[key] = item  # a repeated key: the last one wins, in json.loads as here
            expected[expected_key] = expected_item
        return "{" + ",".join(texts) + "}", value, expected

    def string(self) -> tuple[str, str, str]:
        length = self.rng.choice([0, 1, 2, 3, 5, 8, self.rng.randint(0, 40)])
        chars = [self.rng.choice(TRICKY_CHARS if self.rng.random() < 0.4 else PLAIN_CHARS) for _ in range(length)]
        raw = "".join(self.spell(c) for c in chars)
        value = "".join(chars)
        return f'"{raw}"', value, value if len(raw.encode()) <= self.max_string_bytes else ""

    def spell(self, char: str) -> str:
        must_escape = char in '"\\' or char < " "
        choice = self.rng.random()
        if char in SHORT_ESCAPES and (must_escape or choice < 0.3) and choice < 0.7:
            return SHORT_ESCAPES[char]
        if must_escape or choice < 0.2:
            return "".join(self.unicode_escape(unit) for unit in units_utf16(char))
        return char

    def unicode_escape(self, unit: int) -> str:
        digits = f"{unit:04x}"
        return "\\u" + (digits.upper() if self.rng.random() < 0.5 else digits)

    def space(self) -> str:
        return self.rng.choice(WHITESPACE)


def units_utf16(char: str) -> list[int]:
    encoded = char.encode("utf-16-be")
    return [int.from_bytes(encoded[i:i + 2], "big") for i in range(0, len(encoded), 2)]


def every_chunking(body: bytes, rng: random.Random) -> Iterator[list[bytes]]:
    """Every fixed chunk size from 1 byte to the whole body, every single cut, some ragged cuts."""
    for size in range(1, len(body) + 1):
        yield [body[start:start + size] for start in range(0, len(body), size)]
    for cut in range(len(body) + 1):
        yield [body[:cut], body[cut:]]
    for _ in range(20):
        yield ragged_pieces(body, rng, 6)


@pytest.mark.parametrize("seed", range(6))
def test_skeleton_equals_the_reference_transform_for_random_documents_in_every_chunking(seed):
    rng = random.Random(seed)
    for _ in range(40):
        max_string_bytes = rng.choice([0, 1, 2, 5, 8, 16])
        body, value, expected = RandomJson(rng, max_string_bytes).document()
        assert json.loads(body) == value  # the generator writes the JSON it means to
        whole = skeleton_of([body], max_string_bytes=max_string_bytes).skeleton
        assert json.loads(whole) == expected, body
        for pieces in every_chunking(body, rng):
            assert skeleton_of(pieces, max_string_bytes=max_string_bytes).skeleton == whole, (body, pieces)


def test_a_document_without_long_strings_is_kept_byte_for_byte():
    rng = random.Random(99)
    for _ in range(50):
        body, _, _ = RandomJson(rng, max_string_bytes=10**6).document()
        assert skeleton_of(ragged_pieces(body, rng, 5)).skeleton == body


def test_every_two_cut_split_of_an_escape_dense_document_gives_the_same_skeleton():
    body = b'{"k\\\\":"\\"\\\\\\"","\\\\":["\\\\\\\\","x\\"y\\u0022"],"z":"\\\\"}'
    assert json.loads(body) == {"k\\": '"\\"', "\\": ["\\\\", 'x"y"'], "z": "\\"}
    whole = skeleton_of([body], max_string_bytes=4).skeleton
    assert json.loads(whole) == {"k\\": "", "\\": ["\\\\", ""], "z": "\\"}
    for first in range(len(body) + 1):
        for second in range(first, len(body) + 1):
            pieces = [body[:first], body[first:second], body[second:]]
            assert skeleton_of(pieces, max_string_bytes=4).skeleton == whole, pieces


def test_the_limit_counts_raw_escaped_bytes_and_a_string_at_the_limit_is_kept():
    body = '["abcdef","abcdefg","\\u00e9","\\u00e9x","ééé","éééx","\\n\\n\\n","\\n\\n\\nx","\\"\\"\\"\\""]'.encode()
    expected = ["abcdef", "", "é", "", "ééé", "", "\n\n\n", "", ""]
    assert json.loads(skeleton_of([body], max_string_bytes=6).skeleton) == expected
    assert json.loads(skeleton_of([body[i:i + 1] for i in range(len(body))], max_string_bytes=6).skeleton) == expected


def test_default_limit_keeps_64_kib_strings_and_drops_longer_ones_across_chunks():
    kept = "a" * 65536
    body = json.dumps({"kept": kept, "one_over": "a" * 65537, "escapes": "\n" * 40000, "after": 1}).encode()
    expected = {"kept": kept, "one_over": "", "escapes": "", "after": 1}
    for chunk_bytes in (4093, 65536):
        pieces = [body[start:start + chunk_bytes] for start in range(0, len(body), chunk_bytes)]
        assert json.loads(skeleton_of(pieces).skeleton) == expected


# --- skeleton: invalid input and its own memory bound ---------------------------------------------

def test_feed_never_raises_on_invalid_json_and_its_result_does_not_depend_on_chunking():
    rng = random.Random(5)
    alphabet = b'"\\{}[],:a \x00\xff\xc3'
    bodies = [b'"', b"\\", b'"\\', b'"abc', b'{"a":"\\', b'""""', b'\xff\xfe"\\"', b"x" * 100 + b'"' + b"\\" * 99]
    bodies += [bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(200)]
    bodies += [rng.randbytes(rng.randint(1, 60)) for _ in range(100)]
    for body in bodies:
        whole = skeleton_of([body], max_string_bytes=3, max_skeleton_bytes=40)
        assert len(whole.skeleton) <= 40
        for _ in range(5):
            assert skeleton_of(ragged_pieces(body, rng, 4), max_string_bytes=3, max_skeleton_bytes=40).skeleton \
                == whole.skeleton, body


def test_overflow_is_reported_exactly_when_the_complete_skeleton_exceeds_its_bound():
    body = json.dumps([f"value {i}" for i in range(100)]).encode()
    size = len(body)
    for bound in (size - 1, size, size + 1):
        skeleton = skeleton_of([body[start:start + 7] for start in range(0, size, 7)], max_skeleton_bytes=bound)
        assert skeleton.overflowed == (size > bound)
        if skeleton.overflowed:
            assert skeleton.skeleton == body[:bound]
            skeleton.feed(b'"more"')  # feeding on after an overflow is harmless
            assert len(skeleton.skeleton) <= bound
        else:
            assert skeleton.skeleton == body


def test_dropped_long_strings_do_not_count_towards_the_skeleton_bound():
    body = json.dumps({"audio": "A" * 1_000_000, "id": "c1"}).encode()
    skeleton = skeleton_of([body[start:start + 4096] for start in range(0, len(body), 4096)], max_skeleton_bytes=32)
    assert not skeleton.overflowed
    assert json.loads(skeleton.skeleton) == {"audio": "", "id": "c1"}


def test_read_signed_json_reports_an_overflowed_skeleton_of_an_authentic_body():
    result = read_signed_json(PieceStream([BODY]), sign(BODY, SECRET, NOW), (SECRET,), NOW, TOLERANCE,
                              max_skeleton_bytes=16)
    assert result.overflowed and len(result.skeleton) <= 16 and result.body_bytes == len(BODY)


# --- the post_call_audio case ----------------------------------------------------------------------

AUDIO_BLOCK = base64.b64encode(random.Random(7).randbytes(48 * 1024))  # 64 KiB of base64


def post_call_audio_pieces(audio_blocks: int) -> Iterator[bytes]:
    """A `post_call_audio` body, generated piece by piece: it never exists whole, here either."""
    document = {"type": "post_call_audio", "event_timestamp": NOW,
                "data": {"agent_id": "agent_1", "full_audio": "@", "conversation_id": "conv_big"}}
    head, tail = json.dumps(document).encode().split(b"@")
    yield head
    for _ in range(audio_blocks):
        yield AUDIO_BLOCK
    yield tail


def test_a_50_mb_post_call_audio_body_streams_with_a_tiny_skeleton_and_little_memory():
    audio_blocks = 800  # 50 MiB of base64
    mac = hmac.new(SECRET.encode(), f"{NOW}.".encode(), hashlib.sha256)
    body_bytes = 0
    for piece in post_call_audio_pieces(audio_blocks):
        mac.update(piece)
        body_bytes += len(piece)
    header = f"t={NOW},v0={mac.hexdigest()}"

    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = read_signed_json(PieceStream(post_call_audio_pieces(audio_blocks)), header, ("old", SECRET), NOW,
                                  TOLERANCE)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"\n{body_bytes / 2**20:.0f} MiB streamed in {elapsed:.3f} s (two secrets, tracemalloc on); "
          f"peak traced memory {peak / 2**10:.0f} KiB; skeleton {len(result.skeleton)} bytes")

    assert result.body_bytes == body_bytes > 50 * 2**20
    assert result.timestamp == NOW and not result.overflowed
    assert json.loads(result.skeleton) == {
        "type": "post_call_audio", "event_timestamp": NOW,
        "data": {"agent_id": "agent_1", "full_audio": "", "conversation_id": "conv_big"},
    }
    assert len(result.skeleton) < 200
    assert peak < 2 * 2**20  # the body is 50 MiB; a chunk is 64 KiB
