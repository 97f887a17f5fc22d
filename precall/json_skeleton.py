"""A JSON body's structure and short values, kept while the body streams past.

ElevenLabs' `post_call_audio` webhook carries the whole call's audio as one base64 string of
50+ MB inside an otherwise tiny JSON document. `JsonSkeleton` is fed the raw body chunk by
chunk and keeps a copy of it in which every string longer than `max_string_bytes` is replaced
by `""`, so `json.loads(skeleton)` gives everything the service reads without the body ever
being held whole.

A string's length is its raw length: the bytes between its quotes exactly as they arrive,
escapes undecoded (`"\\u00e9"` counts 6, `"é"` counts 2, its UTF-8 bytes). That is what
this copy costs in memory, it needs no decoding state across chunks, and it bounds the
decoded value too, which is never longer than its raw text. A string exactly
`max_string_bytes` long is kept. Object keys obey the same rule.

Only JSON's string syntax is tracked (a `"` opens or closes a string, and inside one a `\\`
makes the next byte inert), so chunk boundaries may fall anywhere, including between a
backslash and the byte it escapes. Everything outside strings is copied verbatim and is
validated only by the caller's `json.loads`. `feed` never raises, whatever the bytes.

No byte is visited by a Python loop: runs of structure and short strings are matched by one
regex, a long string costs two `bytes.find` calls per chunk (a 50 MB base64 string takes a
few milliseconds), and a string dense with escapes is scanned by a regex (~120 MB/s).
"""

from __future__ import annotations

import re

DEFAULT_MAX_STRING_BYTES = 64 * 1024
DEFAULT_MAX_SKELETON_BYTES = 8 * 1024 * 1024

_QUOTE = ord('"')
# Inside a string: plain runs and escape pairs, consumed in C and without backtracking. It
# stops at the closing quote, at the chunk's end, or at a backslash that is the chunk's last
# byte (its escaped byte arrives with the next chunk). Like `_verbatim_run`'s pattern it also
# matches the empty string, so `match` never returns None.
_STRING_BODY = re.compile(rb'[^"\\]*+(?:\\.[^"\\]*+)*+', re.DOTALL)


def _verbatim_run(max_string_bytes: int) -> re.Pattern[bytes]:
    """Bytes outside strings and whole strings certainly within the limit, matched in C.

    Keeping the common case out of Python is what makes a body of a million short strings
    cheap. A string is certainly within the limit if either
    - it holds no escaped quote and its first quote byte is at most `max_string_bytes` after the
      opening one (the lookahead): that quote closes it, so its raw length is exactly known; or
    - it has at most `max_string_bytes // 2` units, a unit being a byte or an escape pair.
    Any other string (long, cut by the chunk's end, or holding `\\"` and near the limit) stops
    the run at its opening quote and is read by `_scan_string`, which measures it exactly.
    """
    without_escaped_quote = rb'"(?=[^"]{0,%d}")[^"\\]*+(?:\\[^"][^"\\]*+)*+"' % max_string_bytes
    few_units = rb'"(?:[^"\\]|\\.){0,%d}+"' % (max_string_bytes // 2)
    return re.compile(rb'(?:[^"]++|' + without_escaped_quote + b"|" + few_units + rb")*+", re.DOTALL)


class JsonSkeleton:
    """Incremental copy of a JSON body with its long strings emptied, bounded in memory.

    Memory is at most `max_skeleton_bytes` of skeleton plus `max_string_bytes` for the string
    being read. If the complete skeleton would be longer than `max_skeleton_bytes`, keeping
    stops and `overflowed` becomes True; `skeleton` is then the complete skeleton's first
    `max_skeleton_bytes` bytes, not valid JSON, good only for best-effort diagnostics.
    """

    def __init__(
        self,
        max_string_bytes: int = DEFAULT_MAX_STRING_BYTES,
        max_skeleton_bytes: int = DEFAULT_MAX_SKELETON_BYTES,
    ) -> None:
        self.max_string_bytes = max_string_bytes
        self.max_skeleton_bytes = max_skeleton_bytes
        self.overflowed = False
        self._verbatim_run = _verbatim_run(max_string_bytes)
        self._kept = bytearray()
        self._in_string = False
        self._escape_pending = False
        self._string_length = 0
        self._string_content = bytearray()

    @property
    def skeleton(self) -> bytes:
        """The body so far, every string longer than `max_string_bytes` (raw) replaced by `""`."""
        return bytes(self._kept)

    def feed(self, chunk: bytes) -> None:
        """Consume the next piece of the body; pieces may be cut anywhere."""
        position = 0
        while position < len(chunk) and not self.overflowed:
            if self._in_string:
                position = self._scan_string(chunk, position)
            else:
                position = self._scan_structure(chunk, position)

    def _scan_structure(self, chunk: bytes, position: int) -> int:
        """Copy structure and short strings up to the next string `_scan_string` must read."""
        run_end = self._verbatim_run.match(chunk, position).end()  # type: ignore[union-attr]
        self._keep(chunk[position:run_end])
        if run_end == len(chunk):
            return run_end
        self._in_string = True  # the run stopped at an opening quote
        self._string_length = 0
        return run_end + 1

    def _scan_string(self, chunk: bytes, position: int) -> int:
        """Consume string content up to its closing quote or the chunk's end.

        The common case, a string without escapes (base64), costs two `find` calls per chunk;
        a backslash hands the rest of the chunk to `_STRING_BODY` so escape-dense text is
        still scanned in C rather than per escape in Python.
        """
        if self._escape_pending:
            self._escape_pending = False
            self._take(chunk, position, position + 1)
            return position + 1
        quote = chunk.find(b'"', position)
        content_end = len(chunk) if quote < 0 else quote
        backslash = chunk.find(b"\\", position, content_end)
        if backslash >= 0:
            content_end = _STRING_BODY.match(chunk, backslash).end()  # type: ignore[union-attr]
        self._take(chunk, position, content_end)
        if content_end == len(chunk):
            return content_end
        if chunk[content_end] == _QUOTE:
            self._close_string()
            return content_end + 1
        self._take(chunk, content_end, content_end + 1)  # a trailing backslash
        self._escape_pending = True
        return content_end + 1

    def _take(self, chunk: bytes, start: int, end: int) -> None:
        """Count `chunk[start:end]` as string content; hold no more of it than a kept string can have."""
        self._string_length += end - start
        if self._string_length <= self.max_string_bytes:
            self._string_content += chunk[start:end]

    def _close_string(self) -> None:
        if self._string_length <= self.max_string_bytes:
            self._keep(b'"' + self._string_content + b'"')
        else:
            self._keep(b'""')
        self._string_content.clear()
        self._in_string = False

    def _keep(self, piece: bytes) -> None:
        room = self.max_skeleton_bytes - len(self._kept)
        if len(piece) > room:
            # Fill up to the bound so the prefix kept does not depend on how the body was cut.
            self._kept += piece[:room]
            self.overflowed = True
            return
        self._kept += piece
