"""ElevenLabs webhook signatures: `ElevenLabs-Signature: t=<unix seconds>,v0=<hex>`.

`hex = HMAC-SHA256(secret, "<t>." + raw body)`, where `<t>` is the timestamp text exactly as
the header carries it. Every header the official SDK's `construct_event` accepts is accepted
(`t=` is whatever `int()` reads, e.g. `t=+1700000000`, and the text is what was signed; docs/api.md);
beyond the SDK, spaces after the commas, any of several `v0=` entries and several secrets (which
is what makes secret rotation possible).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from voiceclone.errors import InvalidSignature, SignatureExpired

SIGNATURE_HEADER = "ElevenLabs-Signature"
MAX_FUTURE_SKEW_SECONDS = 300
# Longer `t=` texts are malformed: any Unix time fits in 19 digits, and `int()` refuses more than 4300.
MAX_TIMESTAMP_CHARS = 32


def _signing_mac(secret: str, timestamp_text: str) -> hmac.HMAC:
    """An HMAC already fed the signed prefix `"<t>."`, so the body can follow in any pieces."""
    return hmac.new(secret.encode("utf-8"), f"{timestamp_text}.".encode("utf-8"), hashlib.sha256)


def compute_signature(body: bytes, secret: str, timestamp: int | str) -> str:
    """Hex HMAC of `"<t>." + body`, fed in two updates so a 13 MB body is never copied."""
    mac = _signing_mac(secret, str(timestamp))
    mac.update(body)
    return mac.hexdigest()


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The header value ElevenLabs would send for this body."""
    return f"t={timestamp},v0={compute_signature(body, secret, timestamp)}"


def parse_header(header: str | None) -> tuple[int, str, list[str]]:
    """The timestamp, its text as signed, and the `v0` digests; malformed means rejected.

    A `t=` is read as the SDK reads it (`int()` of the text after `t=`); one that `int()` refuses,
    or longer than `MAX_TIMESTAMP_CHARS`, is ignored like any malformed item."""
    if not header:
        raise InvalidSignature("Missing ElevenLabs-Signature header")
    timestamp: tuple[int, str] | None = None
    digests: list[str] = []
    for item in header.split(","):
        key, _, value = item.lstrip(" ").partition("=")
        if key == "t" and len(value) <= MAX_TIMESTAMP_CHARS:
            try:
                timestamp = (int(value), value)
            except ValueError:
                continue
        elif key == "v0" and value:
            digests.append(value)
    if timestamp is None or not digests:
        raise InvalidSignature("Malformed ElevenLabs-Signature header")
    return timestamp[0], timestamp[1], digests


def verify(
    body: bytes,
    header: str | None,
    secrets: Sequence[str],
    now: float,
    tolerance_seconds: int,
) -> int:
    """Raise unless `header` signs `body` with one of `secrets` within the time window.

    The timestamp is checked first so a replayed old request costs no hashing. Returns the
    signed timestamp.
    """
    verifier = StreamingVerifier(header, secrets, now, tolerance_seconds)
    verifier.update(body)
    return verifier.finish()


class StreamingVerifier:
    """`verify` for a body that arrives in pieces and is never held whole.

    The constructor parses the header and checks the time window, so a missing, malformed or
    replayed header is refused before a single body byte is read. Every configured secret gets
    its own HMAC, fed by `update`; `finish` compares them all with the header's `v0` entries.
    """

    def __init__(self, header: str | None, secrets: Sequence[str], now: float, tolerance_seconds: int) -> None:
        self.timestamp, timestamp_text, digests = parse_header(header)
        future_skew = min(tolerance_seconds, MAX_FUTURE_SKEW_SECONDS)
        if self.timestamp < now - tolerance_seconds or self.timestamp > now + future_skew:
            raise SignatureExpired("Signature timestamp is outside the accepted window")
        self._candidates = [d.encode("ascii", "replace") for d in digests]
        self._macs = [_signing_mac(secret, timestamp_text) for secret in secrets]

    def update(self, chunk: bytes) -> None:
        """Feed the next piece of the raw body to every secret's HMAC."""
        for mac in self._macs:
            mac.update(chunk)

    def finish(self) -> int:
        """The signed timestamp, or `InvalidSignature` if no secret's digest is among the `v0` entries."""
        for mac in self._macs:
            expected = mac.hexdigest().encode("ascii")
            # Compare against every entry (no early exit) so timing reveals nothing.
            matched = False
            for candidate in self._candidates:
                matched |= hmac.compare_digest(expected, candidate)
            if matched:
                return self.timestamp
        raise InvalidSignature("Signature does not match the request body")
