"""Voice-sample checks: format from the bytes, duration from what actually decodes.

The common path is in-process: `soundfile` (libsndfile with mpg123, Vorbis and Opus) opens the
bytes from memory and decodes only the first `MIN_SAMPLE_SECONDS`, which is enough to decide
"long enough" and costs milliseconds even for a 10 MB file. Header claims (WAV data sizes, MP3
Info/Xing frame counts) are never trusted for the decision. pydub (ffmpeg) is used only as the
fallback decoder for a file libsndfile cannot open, and to trim when `CLONE_SAMPLE_MAX_SECONDS`
is set.
"""

from __future__ import annotations

import enum
import io
import math
from dataclasses import dataclass

import soundfile

from voiceclone.errors import InvalidAudio, SampleTooShort, UnsupportedAudioFormat

_DECODE_BLOCK_SECONDS = 1.0


class AudioFormat(enum.Enum):
    """Supported formats with the filename extension, MIME type and ffmpeg names they upload with."""

    WAV = ("wav", "audio/wav", "wav", None)
    MP3 = ("mp3", "audio/mpeg", "mp3", None)
    OGG_VORBIS = ("ogg", "audio/ogg", "ogg", "libvorbis")
    OGG_OPUS = ("ogg", "audio/ogg", "ogg", "libopus")

    def __init__(self, extension: str, mime_type: str, ffmpeg_format: str, ffmpeg_codec: str | None) -> None:
        self.extension = extension
        self.mime_type = mime_type
        self.ffmpeg_format = ffmpeg_format
        self.ffmpeg_codec = ffmpeg_codec


# libsndfile's major formats that may legitimately back each sniffed format.
_SNDFILE_FORMATS = {
    AudioFormat.WAV: {"WAV", "WAVEX", "RF64"},
    AudioFormat.MP3: {"MPEG", "MP3"},
    AudioFormat.OGG_VORBIS: {"OGG"},
    AudioFormat.OGG_OPUS: {"OGG"},
}


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


def sniff_format(data: bytes) -> AudioFormat:
    """Identify the container and codec from magic bytes; names and MIME hints are ignored."""
    head = data[:12]
    if len(head) >= 12 and head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
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
    if len(data) < 28:
        raise UnsupportedAudioFormat("Truncated Ogg stream")
    segments = data[26]
    packet = data[27 + segments: 27 + segments + 8]
    if packet.startswith(b"\x01vorbis"):
        return AudioFormat.OGG_VORBIS
    if packet.startswith(b"OpusHead"):
        return AudioFormat.OGG_OPUS
    raise UnsupportedAudioFormat("Unsupported Ogg codec: only Vorbis and Opus are accepted")


def _is_mp3_frame_header(header: bytes) -> bool:
    """An MPEG audio Layer III frame header with valid version, bitrate and rate fields."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return False
    version = (header[1] >> 3) & 0x3
    layer = (header[1] >> 1) & 0x3
    bitrate_index = header[2] >> 4
    rate_index = (header[2] >> 2) & 0x3
    return version != 1 and layer == 1 and bitrate_index != 0xF and rate_index != 0x3


def probe(data: bytes, fmt: AudioFormat, min_seconds: float) -> AudioProbe:
    """Decode until `min_seconds` of audio are proven; raise if they are not there."""
    try:
        sound = soundfile.SoundFile(io.BytesIO(data))
    except Exception:  # libsndfile cannot open it: ask ffmpeg before calling it invalid
        return _probe_with_ffmpeg(data, fmt, min_seconds)
    with sound:
        if sound.format not in _SNDFILE_FORMATS[fmt] or sound.samplerate <= 0:
            raise InvalidAudio(f"The bytes look like {fmt.extension.upper()} but do not decode as such")
        decoded_frames = _decode_frames(sound, math.ceil(min_seconds * sound.samplerate))
        declared = sound.frames / sound.samplerate if 0 < sound.frames < 2**62 else 0.0
        result = AudioProbe(fmt, sound.samplerate, sound.channels, decoded_frames / sound.samplerate, declared)
    _require_duration(result.decoded_seconds, min_seconds)
    return result


def _decode_frames(sound: soundfile.SoundFile, wanted: int) -> int:
    """Frames that really decode, up to `wanted`; a decode error ends the count, not the call."""
    block = max(1, int(sound.samplerate * _DECODE_BLOCK_SECONDS))
    decoded = 0
    while decoded < wanted:
        try:
            chunk = sound.read(min(block, wanted - decoded), dtype="int16", always_2d=True)
        except Exception:
            break
        if len(chunk) == 0:
            break
        decoded += len(chunk)
    return decoded


def _require_duration(decoded_seconds: float, min_seconds: float) -> None:
    if decoded_seconds <= 0:
        raise InvalidAudio("The voice sample contains no decodable audio")
    if decoded_seconds + 1e-6 < min_seconds:
        raise SampleTooShort(
            f"Voice sample too short: {decoded_seconds:.2f} s of decodable audio, at least {min_seconds:g} s required"
        )


def _probe_with_ffmpeg(data: bytes, fmt: AudioFormat, min_seconds: float) -> AudioProbe:
    """Fallback decoder (subprocess) for files libsndfile cannot open."""
    from pydub import AudioSegment
    from pydub.exceptions import CouldntDecodeError

    try:
        segment = AudioSegment.from_file(io.BytesIO(data), format=fmt.ffmpeg_format)
    except (CouldntDecodeError, OSError, IndexError, ValueError):
        raise InvalidAudio(f"The {fmt.extension.upper()} data could not be decoded") from None
    seconds = len(segment) / 1000.0
    _require_duration(seconds, min_seconds)
    return AudioProbe(fmt, segment.frame_rate, segment.channels, seconds, seconds)


def trim(data: bytes, fmt: AudioFormat, max_seconds: float) -> bytes:
    """The first `max_seconds` of the sample, re-encoded in its own format (pydub/ffmpeg)."""
    from pydub import AudioSegment

    segment = AudioSegment.from_file(io.BytesIO(data), format=fmt.ffmpeg_format)
    out = io.BytesIO()
    segment[: int(max_seconds * 1000)].export(out, format=fmt.ffmpeg_format, codec=fmt.ffmpeg_codec)
    return out.getvalue()
