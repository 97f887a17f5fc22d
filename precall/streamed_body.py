"""Read a signed JSON webhook body of any size without holding it: verify and skeletonize as it streams.

The glue between the HTTP layer's request stream and the two pure parts: `StreamingVerifier`
(the signature) and `JsonSkeleton` (the structure and short values). A body of 50+ MB, as
ElevenLabs' `post_call_audio` events are, costs one chunk of memory plus a small skeleton.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .json_skeleton import (
    DEFAULT_MAX_SKELETON_BYTES,
    DEFAULT_MAX_STRING_BYTES,
    JsonSkeleton,
)
from .signature import StreamingVerifier

DEFAULT_CHUNK_BYTES = 64 * 1024


class Readable(Protocol):
    """What `read_signed_json` needs of a request stream: `read(n)` gives b"" only at the end."""

    def read(self, size: int, /) -> bytes: ...


@dataclass(frozen=True)
class SignedJson:
    """A verified body, kept only as its skeleton (see `JsonSkeleton`)."""

    skeleton: bytes
    body_bytes: int
    overflowed: bool
    timestamp: int


def read_signed_json(
    stream: Readable,
    header: str | None,
    secrets: Sequence[str],
    now: float,
    tolerance_seconds: int,
    chunk_size: int = DEFAULT_CHUNK_BYTES,
    max_string_bytes: int = DEFAULT_MAX_STRING_BYTES,
    max_skeleton_bytes: int = DEFAULT_MAX_SKELETON_BYTES,
) -> SignedJson:
    """Read `stream` to its end, verifying the signature while it streams.

    A missing, malformed or out-of-window header raises before anything is read; a wrong
    signature raises `InvalidSignature` once the whole body has been hashed. An overflowed
    skeleton is reported, not raised: whether that is an error is the caller's decision,
    made only for a body that is known to be authentic.
    """
    verifier = StreamingVerifier(header, secrets, now, tolerance_seconds)
    skeleton = JsonSkeleton(max_string_bytes, max_skeleton_bytes)
    body_bytes = 0
    while chunk := stream.read(chunk_size):
        verifier.update(chunk)
        skeleton.feed(chunk)
        body_bytes += len(chunk)
    timestamp = verifier.finish()
    return SignedJson(skeleton.skeleton, body_bytes, skeleton.overflowed, timestamp)
