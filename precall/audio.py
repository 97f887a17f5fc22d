"""Voice-sample checks: format from the bytes, duration from what actually decodes.

Everything runs in-process on the bytes in memory; nothing spawns a subprocess. A WAV header is
read first: its codec decides `415` before any decoder runs, and its rate, channels and sample
width must be plausible. Then `soundfile` (libsndfile with mpg123, Vorbis and Opus) opens the bytes
and decodes only the first `MIN_SAMPLE_SECONDS`, which is enough to decide "long enough" and costs
milliseconds even for a 10 MB file. Header claims (WAV data sizes, MP3 Info/Xing frame counts) are
never trusted for the decision.

There is no fallback decoder: what libsndfile cannot open is `400 INVALID_AUDIO`. ffmpeg used to
be asked, and its tolerance was the attack surface (a WAV naming a WMA codec decoded to 700 s and
400 MB; a LIST chunk claiming 2 GB was allocated). libsndfile decodes every supported format;
what is lost are damaged files that only ffmpeg resynchronises (junk between an ID3 tag and the
first MP3 frame, a WAV whose data chunk precedes its fmt chunk). Trimming
(`CLONE_SAMPLE_MAX_SECONDS`) cuts the container at a frame or page boundary: nothing is decoded
or re-encoded, and the cost is bounded by the bytes kept.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import io
import math
import os
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType

import numpy
import soundfile

from voiceclone.errors import InvalidAudio, SampleTooShort, UnsupportedAudioFormat

_DECODE_BLOCK_SECONDS = 1.0
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 192000
MAX_CHANNELS = 8


class AudioFormat(enum.Enum):
    """Supported formats: the extension and MIME type they upload with, and the libsndfile major
    formats and subtypes that may back them (a Layer II stream behind an ID3 tag is not MP3)."""

    WAV = ("wav", "audio/wav", frozenset({"WAV", "WAVEX", "RF64"}),
           frozenset({"PCM_U8", "PCM_S8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"}))
    MP3 = ("mp3", "audio/mpeg", frozenset({"MP3"}), frozenset({"MPEG_LAYER_III"}))
    OGG_VORBIS = ("ogg", "audio/ogg", frozenset({"OGG"}), frozenset({"VORBIS"}))
    OGG_OPUS = ("ogg", "audio/ogg", frozenset({"OGG"}), frozenset({"OPUS"}))

    def __init__(self, extension: str, mime_type: str, majors: frozenset[str], subtypes: frozenset[str]) -> None:
        self.extension = extension
        self.mime_type = mime_type
        self.sndfile_majors = majors
        self.sndfile_subtypes = subtypes


@dataclass(frozen=True)
class AudioProbe:
    """What decoding the start of a sample showed.

    `decoded_seconds` is measured and stops once the minimum is reached; `declared_seconds`
    is what the container claims and is used only to decide whether trimming is needed.
    """

    format: AudioFormat
    sample_rate: int
    channels: int
    decoded_seconds: float
    declared_seconds: float
    # The first `keep_seconds` as mono float samples (full scale ±1) at `sample_rate`; empty when not asked for.
    samples: numpy.ndarray = field(default_factory=lambda: numpy.zeros(0, numpy.float32), compare=False, repr=False)


def sniff_format(data: bytes) -> AudioFormat:
    """Identify the container and codec from magic bytes; names and MIME hints are ignored."""
    head = data[:12]
    if len(head) >= 12 and head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        header = _read_wav_header(data)
        if header is not None and header.codec not in _WAV_CODECS:
            raise UnsupportedAudioFormat(f"Unsupported WAV codec 0x{header.codec:04x}: send PCM, float, µ-law or A-law")
        return AudioFormat.WAV
    if head[:4] == b"OggS":
        return _sniff_ogg(data)
    if head[:3] == b"ID3" and len(data) >= 10:
        return AudioFormat.MP3
    if _is_mp3_frame_header(data[:4]):
        return AudioFormat.MP3
    raise UnsupportedAudioFormat("Unsupported audio format: send WAV, MP3 or OGG (Vorbis or Opus)")


def _sniff_ogg(data: bytes) -> AudioFormat:
    """The first Ogg page's first packet names the codec."""
    packet = _first_ogg_packet(data)
    if packet is None:
        raise UnsupportedAudioFormat("Truncated Ogg stream")
    if packet.startswith(b"\x01vorbis"):
        return AudioFormat.OGG_VORBIS
    if packet.startswith(b"OpusHead"):
        return AudioFormat.OGG_OPUS
    raise UnsupportedAudioFormat("Unsupported Ogg codec: only Vorbis and Opus are accepted")


def _first_ogg_packet(data: bytes) -> bytes | None:
    """The start of the first page's first packet (the codec's identification header)."""
    if len(data) < 28:
        return None
    segments = data[26]
    return data[27 + segments: 27 + segments + 64]


def _is_mp3_frame_header(header: bytes) -> bool:
    """An MPEG audio Layer III frame header with valid version, bitrate and rate fields."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return False
    version = (header[1] >> 3) & 0x3
    layer = (header[1] >> 1) & 0x3
    bitrate_index = header[2] >> 4
    rate_index = (header[2] >> 2) & 0x3
    return version != 1 and layer == 1 and bitrate_index != 0xF and rate_index != 0x3


def probe(data: bytes, fmt: AudioFormat, min_seconds: float, keep_seconds: float = 0.0) -> AudioProbe:
    """Decode until `min_seconds` of audio are proven; raise if they are not there. With
    `keep_seconds`, decode that much as well (when there is that much) and keep it, downmixed to mono
    float, for the quality measures: one decode serves both.

    Bounded whatever the bytes: the WAV header and MP3 tags are checked before libsndfile sees
    them, the stream's rate and channels before any audio is decoded, and at most the larger of the
    two durations is decoded, one second at a time. What is kept is mono, so at most
    `keep_seconds` x 192 kHz x 4 bytes (15 MB for 20 s) whatever the channel count.
    """
    with _opened(data, fmt) as sound:
        kept: list[numpy.ndarray] | None = [] if keep_seconds > 0 else None
        decoded_frames = _decode_frames(sound, math.ceil(max(min_seconds, keep_seconds) * sound.samplerate), kept)
        declared = sound.frames / sound.samplerate if 0 < sound.frames < 2**62 else 0.0
        samples = _joined(kept or [], math.ceil(keep_seconds * sound.samplerate))
        result = AudioProbe(fmt, sound.samplerate, sound.channels, decoded_frames / sound.samplerate, declared, samples)
    _require_duration(result.decoded_seconds, min_seconds)
    return result


def continued(data: bytes, fmt: AudioFormat, probe: AudioProbe, seconds: float) -> numpy.ndarray:
    """`probe.samples` continued to the first `seconds` of the sample, decoding only what follows them
    (a seek, then at most the missing seconds; the same checks and bounds as `probe`)."""
    wanted = math.ceil(seconds * probe.sample_rate) - len(probe.samples)
    if wanted <= 0:
        return probe.samples[: math.ceil(seconds * probe.sample_rate)]
    more: list[numpy.ndarray] = []
    with _opened(data, fmt) as sound:
        try:
            sound.seek(len(probe.samples))
        except (soundfile.SoundFileError, RuntimeError):
            return probe.samples
        _decode_frames(sound, wanted, more)
    return _joined([probe.samples, *more], len(probe.samples) + wanted)


@contextlib.contextmanager
def _opened(data: bytes, fmt: AudioFormat) -> Iterator[soundfile.SoundFile]:
    """The sample opened by libsndfile once its header, tags, format, rate and channels are checked."""
    if fmt is AudioFormat.WAV:
        data = _checked_wav(data)
    if fmt is AudioFormat.MP3 and _after_id3_tags(data) is None:
        raise InvalidAudio(f"More than {_MAX_ID3_TAGS} ID3 tags before the MP3 audio")
    with _quiet_native_stderr:
        try:
            sound = soundfile.SoundFile(io.BytesIO(data))
        except soundfile.SoundFileError:
            raise InvalidAudio(f"The {fmt.extension.upper()} data could not be decoded") from None
        with sound:
            if sound.format not in fmt.sndfile_majors or sound.subtype not in fmt.sndfile_subtypes:
                raise UnsupportedAudioFormat(f"The bytes hold {sound.format} {sound.subtype}, which is not a supported format")
            _require_plausible(sound.samplerate, sound.channels)
            yield sound


def _require_plausible(sample_rate: int, channels: int) -> None:
    """A voice is 8-192 kHz with 1 to 8 channels; anything else is a crafted stream."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise InvalidAudio(f"Implausible sample rate {sample_rate} Hz: {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz expected")
    if not 1 <= channels <= MAX_CHANNELS:
        raise InvalidAudio(f"Implausible channel count {channels}: 1 to {MAX_CHANNELS} expected")


def _decode_frames(sound: soundfile.SoundFile, wanted: int, kept: list[numpy.ndarray] | None = None) -> int:
    """Frames that really decode, up to `wanted`; a decode error ends the count, not the call.
    With `kept`, each block is appended to it as mono float32."""
    block = max(1, int(sound.samplerate * _DECODE_BLOCK_SECONDS))
    decoded = 0
    while decoded < wanted:
        try:
            chunk = sound.read(min(block, wanted - decoded), dtype="int16" if kept is None else "float32", always_2d=True)
        except soundfile.SoundFileError:
            break
        if len(chunk) == 0:
            break
        if kept is not None:
            kept.append(chunk[:, 0] if chunk.shape[1] == 1 else chunk.mean(axis=1, dtype=numpy.float32))
        decoded += len(chunk)
    return decoded


def _joined(blocks: list[numpy.ndarray], limit: int) -> numpy.ndarray:
    samples = numpy.concatenate(blocks) if blocks else numpy.zeros(0, numpy.float32)
    return numpy.ascontiguousarray(samples[:limit])


def _require_duration(decoded_seconds: float, min_seconds: float) -> None:
    if decoded_seconds <= 0:
        raise InvalidAudio("The voice sample contains no decodable audio")
    if decoded_seconds + 1e-6 < min_seconds:
        raise SampleTooShort(
            f"Voice sample too short: {decoded_seconds:.2f} s of decodable audio, at least {min_seconds:g} s required"
        )


# --- WAV header -------------------------------------------------------------------------------

# Format tags accepted inside WAV (docs/api.md): PCM, IEEE float, A-law, µ-law.
_WAV_CODECS = frozenset({0x0001, 0x0003, 0x0006, 0x0007})
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# KSDATAFORMAT_SUBTYPE_* GUIDs are the format tag followed by these 14 bytes.
_SUBFORMAT_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
# fmt comes first in every writer's files (after ds64/JUNK/bext at most): do not walk a crafted chain.
_MAX_WAV_CHUNKS = 64


@dataclass(frozen=True)
class _WavHeader:
    codec: int  # the format tag, or the subformat's for WAVE_FORMAT_EXTENSIBLE
    channels: int
    sample_rate: int
    block_align: int
    bits: int
    fmt_chunk: tuple[int, int]  # start and end of the whole fmt chunk (id and size included)
    data: tuple[int, int] | None  # start of the samples and their declared size, if a data chunk follows fmt


def _read_wav_header(data: bytes) -> _WavHeader | None:
    """The fmt chunk and where the samples start; None when no complete fmt chunk comes first."""
    offset, fmt_at, ds64_data_size = 12, None, None
    samples: tuple[int, int] | None = None
    for _ in range(_MAX_WAV_CHUNKS):
        if offset + 8 > len(data):
            break
        chunk_id = data[offset:offset + 4]
        size, = struct.unpack_from("<I", data, offset + 4)
        body = offset + 8
        if chunk_id == b"ds64" and size >= 16 and body + 16 <= len(data):
            ds64_data_size, = struct.unpack_from("<Q", data, body + 8)
        elif chunk_id == b"fmt " and fmt_at is None:
            fmt_at = offset
        elif chunk_id == b"data":
            if fmt_at is not None:
                samples = (body, ds64_data_size if size == 0xFFFFFFFF and ds64_data_size is not None else size)
            break
        offset = body + size + (size & 1)
    if fmt_at is None:
        return None
    fmt_size, = struct.unpack_from("<I", data, fmt_at + 4)
    body = fmt_at + 8
    if fmt_size < 16 or body + 16 > len(data):
        return None
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", data, body)
    if tag == _WAVE_FORMAT_EXTENSIBLE and fmt_size >= 40 and body + 40 <= len(data) \
            and data[body + 26:body + 40] == _SUBFORMAT_GUID_TAIL:
        tag, = struct.unpack_from("<H", data, body + 24)
    return _WavHeader(tag, channels, rate, block_align, bits, (fmt_at, body + fmt_size), samples)


def _checked_wav(data: bytes) -> bytes:
    """The bytes for libsndfile once the header is plausible; BW64 is RF64 under another name."""
    header = _read_wav_header(data)
    if header is None:
        raise InvalidAudio("The WAV data has no readable fmt chunk")
    if header.codec not in _WAV_CODECS:
        raise UnsupportedAudioFormat(f"Unsupported WAV codec 0x{header.codec:04x}: send PCM, float, µ-law or A-law")
    _require_plausible(header.sample_rate, header.channels)
    if header.bits == 0 or header.block_align == 0:
        raise InvalidAudio("Implausible WAV header: zero-width samples")
    return b"RF64" + data[4:] if data[:4] == b"BW64" else data


# --- Quiet native decoders --------------------------------------------------------------------


class _QuietNativeStderr:
    """While at least one decode runs, the C library's `stderr` stream writes to /dev/null.

    libmpg123 (inside libsndfile) prints decoder complaints with `fprintf(stderr, ...)`, even for
    valid MP3s, and libsndfile never sets MPG123_QUIET nor offers a switch. Those lines are not
    JSON (docs/events.md) and describe the sender's bytes; the verdict is logged by the service instead.
    glibc documents `stderr` as a variable a program may assign. Only C stdio's `stderr` changes,
    not file descriptor 2: Python's own output is untouched, and another C library's stdio
    messages are lost only while a decode runs (milliseconds). Reference-counted, so overlapping
    decodes on many threads restore the original exactly once, when the last one ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._saved: int | None = None
        self._stderr, self._null = _glibc_stderr()

    def __enter__(self) -> None:
        if self._stderr is None:
            return
        with self._lock:
            if self._active == 0:
                self._saved = self._stderr.value
                self._stderr.value = self._null
            self._active += 1

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self._stderr is None:
            return
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self._stderr.value = self._saved


def _glibc_stderr() -> tuple[ctypes.c_void_p | None, int | None]:
    """glibc's `stderr` variable and a /dev/null stream; (None, None) elsewhere (musl's is const)."""
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return None, None
        libc = ctypes.CDLL(None)
        fopen = libc.fopen
        fopen.restype, fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
        null = fopen(os.devnull.encode(), b"w")
        return (ctypes.c_void_p.in_dll(libc, "stderr"), null) if null else (None, None)
    except (ValueError, OSError, AttributeError):
        return None, None


_quiet_native_stderr = _QuietNativeStderr()


# --- Trimming ---------------------------------------------------------------------------------


def trim(data: bytes, fmt: AudioFormat, max_seconds: float) -> bytes:
    """The first `max_seconds` of a validated sample, in its own container and codec.

    Cut at a WAV block, MP3 frame or Ogg page boundary: nothing is decoded or re-encoded, so the
    cost is a walk over the bytes kept and the sample's quality is untouched.
    """
    cutters: dict[AudioFormat, Callable[[bytes, float], bytes]] = {
        AudioFormat.WAV: _trim_wav, AudioFormat.MP3: _trim_mp3,
        AudioFormat.OGG_VORBIS: _trim_ogg, AudioFormat.OGG_OPUS: _trim_ogg,
    }
    return cutters[fmt](data, max_seconds)


def _trim_wav(data: bytes, max_seconds: float) -> bytes:
    """A plain RIFF file: the original fmt chunk and the first `max_seconds` of whole blocks."""
    header = _read_wav_header(data)
    if header is None or header.data is None or header.block_align == 0:
        raise InvalidAudio("The WAV data could not be trimmed")
    start, declared = header.data
    available = len(data) - start if declared in (0, 0xFFFFFFFF) else min(declared, len(data) - start)
    keep = min(available, int(max_seconds * header.sample_rate) * header.block_align)
    keep -= keep % header.block_align
    fmt_start, fmt_end = header.fmt_chunk
    fmt_chunk = data[fmt_start:fmt_end] + b"\x00" * ((fmt_end - fmt_start) & 1)
    body = b"".join((b"WAVE", fmt_chunk, b"data", struct.pack("<I", keep), data[start:start + keep], b"\x00" * (keep & 1)))
    return b"RIFF" + struct.pack("<I", len(body)) + body


# Layer III bitrates in kbit/s by version bits (3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5) and bitrate index.
_MP3_KBPS_V1 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MP3_KBPS_V2 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_MP3_KBPS = {3: _MP3_KBPS_V1, 2: _MP3_KBPS_V2, 0: _MP3_KBPS_V2}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_MP3_RESYNC_BYTES = 64 * 1024
# Files carry one tag, two at most; mpg123 spends ~4 µs on each of a crafted 10 MB stack (1.7 s).
_MAX_ID3_TAGS = 8


def _mp3_frame(data: bytes, offset: int) -> tuple[int, int, int] | None:
    """(length in bytes, samples, sample rate) of the Layer III frame at `offset`; None if there is
    none, or if it is free-format (its length is not in its header)."""
    header = data[offset:offset + 4]
    if not _is_mp3_frame_header(header):
        return None
    version = (header[1] >> 3) & 0x3
    kbps = _MP3_KBPS[version][header[2] >> 4]
    if kbps == 0:
        return None
    rate = _MP3_RATES[version][(header[2] >> 2) & 0x3]
    samples = 1152 if version == 3 else 576
    length = samples // 8 * kbps * 1000 // rate + ((header[2] >> 1) & 0x1)
    return (length, samples, rate) if offset + length <= len(data) else None


def _after_id3_tags(data: bytes) -> int | None:
    """Where the bytes after the leading ID3v2 tags start; None beyond `_MAX_ID3_TAGS` tags."""
    offset = 0
    for _ in range(_MAX_ID3_TAGS + 1):
        if data[offset:offset + 3] != b"ID3" or offset + 10 > len(data):
            return offset
        size = 0
        for byte in data[offset + 6:offset + 10]:
            size = size << 7 | (byte & 0x7F)
        offset += 10 + size + (10 if data[offset + 5] & 0x10 else 0)
    return None


def _first_mp3_frame(data: bytes) -> int | None:
    """Where the audio starts: after the ID3v2 tags, at the first of two consecutive frames."""
    offset = _after_id3_tags(data)
    if offset is None:
        return None
    for start in range(offset, min(len(data), offset + _MP3_RESYNC_BYTES)):
        frame = _mp3_frame(data, start)
        if frame is not None and _mp3_frame(data, start + frame[0]) is not None:
            return start
    return None


def _trim_mp3(data: bytes, max_seconds: float) -> bytes:
    """Whole frames from the first audio frame on; tags and the Xing/Info frame (whose counts
    would still describe the whole file) are left out."""
    start = _first_mp3_frame(data)
    if start is None:
        raise InvalidAudio("The MP3 data could not be trimmed")
    first = _mp3_frame(data, start)
    if first is not None and any(tag in data[start:start + min(first[0], 64)] for tag in (b"Xing", b"Info", b"VBRI")):
        start += first[0]
    end, seconds = start, 0.0
    while seconds < max_seconds:
        frame = _mp3_frame(data, end)
        if frame is None:
            break
        length, samples, rate = frame
        end += length
        seconds += samples / rate
    if end == start:
        raise InvalidAudio("The MP3 data could not be trimmed")
    return data[start:end]


# Page header: capture pattern, version, flags, granule position, serial, sequence, CRC, segment count.
_OGG_HEADER = struct.Struct("<4sBBqIIIB")
_OGG_EOS = 0x04


def _ogg_crc_entry(byte: int) -> int:
    crc = byte << 24
    for _ in range(8):
        crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


_OGG_CRC_TABLE = tuple(_ogg_crc_entry(byte) for byte in range(256))


def _trim_ogg(data: bytes, max_seconds: float) -> bytes:
    """The first logical stream's pages up to the one that passes `max_seconds`; that page becomes
    the last (end-of-stream flag, granule position at the cut), which tells decoders to drop the
    samples beyond it (the Vorbis I specification, 4.3.8; RFC 7845, 4.5)."""
    packet = _first_ogg_packet(data) or b""
    if packet.startswith(b"OpusHead") and len(packet) >= 12:
        rate, pre_skip = 48000, struct.unpack_from("<H", packet, 10)[0]
    elif packet.startswith(b"\x01vorbis") and len(packet) >= 16:
        rate, pre_skip = struct.unpack_from("<I", packet, 12)[0], 0
    else:
        raise InvalidAudio("The Ogg data could not be trimmed")
    limit = pre_skip + int(max_seconds * rate)
    spans: list[tuple[int, int]] = []  # the kept pages, adjacent ones merged (a flood of tiny pages is one span)
    kept, last_page, offset, serial = 0, b"", 0, None
    while offset + _OGG_HEADER.size <= len(data):
        magic, _version, flags, granule, page_serial, _sequence, _crc, segments = _OGG_HEADER.unpack_from(data, offset)
        body = offset + _OGG_HEADER.size + segments
        start, offset = offset, body + sum(data[offset + _OGG_HEADER.size:body])
        if magic != b"OggS" or offset > len(data):
            break
        serial = page_serial if serial is None else serial
        if page_serial != serial:
            continue
        kept += 1
        if granule >= limit:
            last_page = _last_ogg_page(data[start:offset], limit)
            break
        if spans and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], offset)
        else:
            spans.append((start, offset))
        if flags & _OGG_EOS:
            break
    if kept < 2:
        raise InvalidAudio("The Ogg data could not be trimmed")
    return b"".join([*(data[begin:end] for begin, end in spans), last_page])


def _last_ogg_page(page: bytes, granule: int) -> bytes:
    """`page` flagged end-of-stream at `granule`, with its checksum recomputed."""
    edited = bytearray(page)
    edited[5] |= _OGG_EOS
    struct.pack_into("<q", edited, 6, granule)
    struct.pack_into("<I", edited, 22, 0)
    crc = 0
    for byte in edited:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC_TABLE[(crc >> 24) ^ byte]
    struct.pack_into("<I", edited, 22, crc)
    return bytes(edited)
