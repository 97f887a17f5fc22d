"""Audio probing on real encoder output: formats from bytes, durations from decoding."""

from __future__ import annotations

import io
import subprocess

import numpy
import pytest
import soundfile

from precall import audio
from voiceclone.errors import InvalidAudio, SampleTooShort, UnsupportedAudioFormat

SUPPORTED = {"wav_pcm16": audio.AudioFormat.WAV, "wav_pcm8_8k": audio.AudioFormat.WAV,
             "wav_pcm24_48k_stereo": audio.AudioFormat.WAV, "wav_float32": audio.AudioFormat.WAV,
             "wav_mulaw_8k": audio.AudioFormat.WAV, "wav_alaw_8k": audio.AudioFormat.WAV, "mp3_cbr": audio.AudioFormat.MP3,
             "mp3_vbr_stereo": audio.AudioFormat.MP3, "mp3_big_id3_short": audio.AudioFormat.MP3,
             "ogg_vorbis": audio.AudioFormat.OGG_VORBIS, "ogg_opus": audio.AudioFormat.OGG_OPUS}


@pytest.mark.parametrize("name,expected", SUPPORTED.items())
def test_format_is_read_from_the_bytes(audio_files, name, expected):
    assert audio.sniff_format(audio_files[name].read_bytes()) is expected


@pytest.mark.parametrize("name", ["flac", "aac_adts", "ogg_flac", "text"])
def test_other_formats_are_unsupported(audio_files, name):
    with pytest.raises(UnsupportedAudioFormat):
        audio.sniff_format(audio_files[name].read_bytes())


def test_the_common_path_spawns_no_subprocess(audio_files, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a subprocess was started on the common path")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    for name, fmt in SUPPORTED.items():
        if name == "mp3_big_id3_short":
            continue
        probe = audio.probe(audio_files[name].read_bytes(), fmt, 3.0)
        assert probe.decoded_seconds >= 3.0
    with pytest.raises(SampleTooShort):
        audio.probe(audio_files["mp3_big_id3_short"].read_bytes(), audio.AudioFormat.MP3, 3.0)


def test_decoding_stops_once_the_minimum_is_proven(audio_files):
    probe = audio.probe(audio_files["wav_20s"].read_bytes(), audio.AudioFormat.WAV, 3.0)
    assert probe.decoded_seconds == pytest.approx(3.0, abs=0.01)
    assert probe.declared_seconds == pytest.approx(20.0, abs=0.05)


def test_a_tiny_low_bitrate_file_can_be_long_enough(audio_files):
    data = audio_files["mp3_8kbps_20s"].read_bytes()
    assert len(data) < 25_000
    assert audio.probe(data, audio.AudioFormat.MP3, 15.0).decoded_seconds >= 15.0


def test_a_container_header_alone_is_invalid_audio():
    header_only = b"RIFF" + (36).to_bytes(4, "little") + b"WAVEfmt " + bytes(24)
    with pytest.raises(InvalidAudio):
        audio.probe(header_only, audio.AudioFormat.WAV, 3.0)


@pytest.mark.parametrize("name", ["mp3_cbr", "ogg_vorbis", "ogg_opus", "wav_20s"])
def test_trimming_keeps_the_format_and_cuts_to_length(audio_files, name):
    data = audio_files[name].read_bytes()
    fmt = audio.sniff_format(data)
    trimmed = audio.trim(data, fmt, 4.0)
    assert audio.sniff_format(trimmed) is fmt
    assert soundfile.info(io.BytesIO(trimmed)).duration == pytest.approx(4.0, abs=0.1)


@pytest.mark.parametrize("name", ["wav_20s", "mp3_8kbps_20s", "ogg_vorbis", "ogg_opus", "wav_pcm24_48k_stereo"])
def test_a_probe_continued_holds_the_same_samples_as_one_longer_decode(audio_files, name):
    data = audio_files[name].read_bytes()
    fmt = audio.sniff_format(data)
    first = audio.probe(data, fmt, 3.0, keep_seconds=4.0)
    continued = audio.continued(data, fmt, first, 20.0)
    whole = audio.probe(data, fmt, 3.0, keep_seconds=20.0).samples
    assert len(first.samples) < len(continued) == len(whole)
    assert numpy.abs(continued - whole).max() < 0.01  # Opus restarts its decoder at a seek: one sample was 0.001 off
