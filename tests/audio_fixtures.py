"""Real audio made by real encoders (espeak-ng speaks, ffmpeg encodes), plus the traps.

Every file that stands for a caller's voice is speech, in each supported format (WAV PCM, float,
µ-law, A-law, MP3, Ogg Vorbis, Opus): the quality gate refuses anything else. `hold_music` is the
one deliberately good-sounding sample that is not a voice.

`build_fixtures(directory)` writes every file the tests use and returns their paths by name.
Run it directly (`python tests/audio_fixtures.py DIR`) to look at or listen to the files.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import soundfile

from tests.quality_corpus import RATE, hold_music

SPEECH = (
    "Hallo, met Ivan. Ik bel over mijn afspraak van volgende week. "
    "Kunt u mij terugbellen op een later moment vandaag? Alvast bedankt en tot ziens."
)


def tools_missing() -> list[str]:
    return [tool for tool in ("ffmpeg", "espeak-ng") if shutil.which(tool) is None]


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def _speech_wav(path: Path, seconds: float) -> None:
    """At least `seconds` of real speech: espeak-ng, looped by ffmpeg if needed, then cut."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "nl", "-s", "150", "-w", str(raw), SPEECH], check=True)
    _ffmpeg("-stream_loop", "-1", "-i", str(raw), "-t", f"{seconds}", "-ar", "22050", "-ac", "1", str(path))
    raw.unlink()


def id3v2_tag(payload_bytes: int) -> bytes:
    """An ID3v2.3 tag holding one PRIV frame of `payload_bytes` (like embedded cover art)."""
    body = b"precall-test\x00" + b"\x00" * payload_bytes
    frame = b"PRIV" + struct.pack(">I", len(body)) + b"\x00\x00" + body
    size = len(frame)
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    return b"ID3\x03\x00\x00" + syncsafe + frame


def _wav_claiming(path: Path, source: Path, claimed_seconds: float) -> None:
    """Rewrite a PCM WAV's RIFF and data sizes to claim far more audio than it holds."""
    data = bytearray(source.read_bytes())
    rate, = struct.unpack_from("<I", data, 24)
    block_align, = struct.unpack_from("<H", data, 32)
    claimed = int(claimed_seconds * rate * block_align)
    idx = data.index(b"data")
    struct.pack_into("<I", data, idx + 4, claimed)
    struct.pack_into("<I", data, 4, claimed + idx)
    path.write_bytes(bytes(data))


def build_fixtures(directory: Path) -> dict[str, Path]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    speech = d / "speech_6s.wav"
    _speech_wav(speech, 6)
    long_speech = d / "speech_20s.wav"
    _speech_wav(long_speech, 20)
    short_speech = d / "speech_1_5s.wav"
    _speech_wav(short_speech, 1.5)
    one_second = d / "speech_1s.wav"
    _speech_wav(one_second, 1)

    files: dict[str, Path] = {"wav_pcm16": speech}
    encodings = {
        "wav_pcm8_8k": ("wav", ["-ar", "8000", "-c:a", "pcm_u8"]),
        "wav_pcm24_48k_stereo": ("wav", ["-ar", "48000", "-ac", "2", "-c:a", "pcm_s24le"]),
        "wav_float32": ("wav", ["-c:a", "pcm_f32le"]),
        "wav_mulaw_8k": ("wav", ["-ar", "8000", "-c:a", "pcm_mulaw"]),
        "wav_alaw_8k": ("wav", ["-ar", "8000", "-c:a", "pcm_alaw"]),
        "mp3_cbr": ("mp3", ["-c:a", "libmp3lame", "-b:a", "64k"]),
        "mp3_vbr_stereo": ("mp3", ["-ac", "2", "-ar", "44100", "-c:a", "libmp3lame", "-q:a", "4"]),
        "ogg_vorbis": ("ogg", ["-c:a", "libvorbis"]),
        "ogg_opus": ("ogg", ["-c:a", "libopus", "-b:a", "32k"]),
        "flac": ("flac", ["-c:a", "flac"]),
        "aac_adts": ("aac", ["-c:a", "aac", "-f", "adts"]),
        "ogg_flac": ("oga", ["-c:a", "flac", "-f", "ogg"]),
    }
    for name, (ext, args) in encodings.items():
        out = d / f"{name}.{ext}"
        _ffmpeg("-i", str(speech), *args, str(out))
        files[name] = out

    # 20 s of speech at 8 kbps: a tiny file that is nonetheless long enough.
    files["mp3_8kbps_20s"] = d / "mp3_8kbps_20s.mp3"
    _ffmpeg("-i", str(long_speech), "-ar", "8000", "-c:a", "libmp3lame", "-b:a", "8k", str(files["mp3_8kbps_20s"]))
    files["wav_20s"] = long_speech
    files["wav_1_5s"] = short_speech

    # An 8 s MP3 whose Xing/Info header still claims 8 s after the file is cut to ~1 s.
    full = d / "mp3_8s_full.mp3"
    _ffmpeg("-i", str(long_speech), "-t", "8", "-c:a", "libmp3lame", "-b:a", "64k", "-write_xing", "1", str(full))
    files["mp3_truncated_info"] = d / "mp3_truncated_info.mp3"
    files["mp3_truncated_info"].write_bytes(full.read_bytes()[: 64000 // 8 * 1 + 2000])

    # 1.5 s of MP3 behind a 1.5 MB ID3 tag: big file, short audio.
    short_mp3 = d / "mp3_1_5s_untagged.mp3"
    _ffmpeg("-i", str(short_speech), "-c:a", "libmp3lame", "-b:a", "64k", "-id3v2_version", "0", "-write_xing", "0", str(short_mp3))
    files["mp3_big_id3_short"] = d / "mp3_big_id3_short.mp3"
    files["mp3_big_id3_short"].write_bytes(id3v2_tag(1_500_000) + short_mp3.read_bytes())

    # A WAV header claiming 60 s over 1 s of PCM data.
    files["wav_lying_header"] = d / "wav_lying_header.wav"
    _wav_claiming(files["wav_lying_header"], one_second, 60)

    # Supported containers with undecodable contents.
    noise = bytes((i * 7919 + 13) % 251 for i in range(40_000))
    files["wav_garbage"] = d / "wav_garbage.wav"
    files["wav_garbage"].write_bytes(b"RIFF" + struct.pack("<I", len(noise) + 4) + b"WAVE" + noise)
    files["ogg_garbage"] = d / "ogg_garbage.ogg"
    vorbis = files["ogg_vorbis"].read_bytes()
    files["ogg_garbage"].write_bytes(vorbis[:58] + noise)
    files["mp3_garbage"] = d / "mp3_garbage.mp3"
    files["mp3_garbage"].write_bytes(id3v2_tag(100) + noise)

    # What a caller's phone plays instead of a voice: synthesised hold music (chords with rhythm), as an MP3.
    music = d / "hold_music.wav"
    soundfile.write(music, hold_music(10, 110, seed=7), RATE, subtype="FLOAT")
    files["hold_music"] = d / "hold_music.mp3"
    _ffmpeg("-i", str(music), "-ar", "44100", "-c:a", "libmp3lame", "-b:a", "128k", str(files["hold_music"]))

    files["text"] = d / "not_audio.mp3"
    files["text"].write_bytes(b"This is a text file pretending to be an MP3.\n" * 100)
    return files


if __name__ == "__main__":
    for key, value in build_fixtures(Path(sys.argv[1] if len(sys.argv) > 1 else "fixtures")).items():
        print(f"{key:24} {value.stat().st_size:>9}  {value}")
