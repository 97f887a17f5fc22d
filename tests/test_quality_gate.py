"""The quality gate through the real app: a refused sample never reaches ElevenLabs, the answer says
why, `report` and `off` behave as named, and the `sample_quality` log line carries numbers only."""

from __future__ import annotations

import base64
import json

import numpy
import pytest
import soundfile

from tests.conftest import json_body, post_signed
from tests.quality_corpus import BUNDLED_SAMPLE, DTMF_COLS, DTMF_ROWS

QUALITY_KEYS = {"speech_seconds", "analysed_seconds", "speech_level_dbfs", "snr_db", "loud_other_seconds",
                "clipped_percent", "keypad_tones", "reasons"}


def quality_lines(output: str) -> list[dict]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event_type") == "sample_quality"]


def test_hold_music_is_refused_with_its_reason_before_any_call_to_elevenlabs(client, fake, audio_files, capsys):
    response = post_signed(client, "/webhook", json_body(audio_files["hold_music"].read_bytes(), conversation_id="conv_music"))
    body = response.get_json()
    assert response.status_code == 422 and body["error_code"] == "SAMPLE_QUALITY_TOO_LOW"
    assert body["reasons"] == ["too_little_speech"] and body["quality"]["reasons"] == ["too_little_speech"]
    assert set(body["quality"]) == QUALITY_KEYS and body["quality"]["speech_seconds"] < 0.5
    assert body["conversation_id"] == "conv_music" and "too little speech" in body["error_message"]
    assert fake.requests_to("POST", "/v1/voices/add") == []
    [line] = quality_lines(capsys.readouterr().out)
    assert (line["verdict"], line["reason"], line["severity"]) == ("refused", "too_little_speech", "WARNING")


def test_a_voice_is_accepted_and_its_measures_come_back_in_the_answer_and_the_log(client, fake, audio_files, capsys):
    response = post_signed(client, "/webhook", json_body(audio_files["wav_mulaw_8k"].read_bytes(), conversation_id="conv_voice"))
    assert response.status_code == 200, response.get_json()
    quality = response.get_json()["quality"]
    assert set(quality) == QUALITY_KEYS and quality["reasons"] == [] and quality["speech_seconds"] >= 2
    assert -40 < quality["speech_level_dbfs"] < -3 and quality["snr_db"] > 8
    assert len(fake.requests_to("POST", "/v1/voices/add")) == 1
    [line] = quality_lines(capsys.readouterr().out)
    assert (line["verdict"], line["reason"], line["severity"]) == ("accepted", "", "INFO")
    measures = {k: v for k, v in line.items() if k in QUALITY_KEYS - {"reasons"}}
    assert all(isinstance(v, (int, float)) for v in measures.values()), measures
    sample_text = base64.b64encode(audio_files["wav_mulaw_8k"].read_bytes()).decode()
    assert sample_text[:64] not in json.dumps(line) and "Ivan" not in json.dumps(line)


def test_report_mode_measures_and_logs_but_clones_what_enforce_would_refuse(make_client, fake, audio_files, capsys):
    client = make_client(SAMPLE_QUALITY_GATE="report")
    response = post_signed(client, "/webhook", json_body(audio_files["hold_music"].read_bytes(), conversation_id="conv_rep"))
    assert response.status_code == 200 and response.get_json()["quality"]["reasons"] == ["too_little_speech"]
    assert len(fake.requests_to("POST", "/v1/voices/add")) == 1
    [line] = quality_lines(capsys.readouterr().out)
    assert (line["verdict"], line["reason"], line["gate"]) == ("would_refuse", "too_little_speech", "report")


def test_off_measures_nothing(make_client, fake, audio_files, capsys):
    client = make_client(SAMPLE_QUALITY_GATE="off")
    response = post_signed(client, "/webhook", json_body(audio_files["hold_music"].read_bytes(), conversation_id="conv_off"))
    assert response.status_code == 200 and "quality" not in response.get_json()
    assert quality_lines(capsys.readouterr().out) == []


@pytest.mark.parametrize("seconds,status", [("1", 200), ("8", 422)])
def test_min_speech_seconds_is_the_speech_a_sample_must_hold(make_client, fake, audio_files, seconds, status):
    client = make_client(MIN_SPEECH_SECONDS=seconds)
    response = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes()))  # 6 s, ~5 s of speech
    assert response.status_code == status, response.get_json()
    if status == 422:
        assert response.get_json()["reasons"] == ["too_little_speech"]


def test_keypad_presses_over_a_voice_are_refused_as_keypad_tones(client, fake, tmp_path):
    voice, rate = soundfile.read(BUNDLED_SAMPLE, dtype="float32")
    t = numpy.arange(int(0.15 * rate)) / rate
    key_5 = 0.25 * (numpy.sin(2 * numpy.pi * DTMF_ROWS[1] * t) + numpy.sin(2 * numpy.pi * DTMF_COLS[1] * t))
    for at in (1.0, 3.0):
        voice[int(at * rate): int(at * rate) + len(t)] += key_5
    path = tmp_path / "keys.wav"
    soundfile.write(path, voice, rate, subtype="ULAW")
    response = post_signed(client, "/webhook", json_body(path.read_bytes()))
    assert response.status_code == 422 and response.get_json()["reasons"] == ["keypad_tones"]
    assert response.get_json()["quality"]["keypad_tones"] == 2


def test_a_refused_sample_is_kept_in_debug_sample_dir_so_check_sample_can_say_why(make_client, fake, audio_files, tmp_path):
    client = make_client(DEBUG_SAMPLE_DIR=str(tmp_path / "kept"))
    music = audio_files["hold_music"].read_bytes()
    assert post_signed(client, "/webhook", json_body(music, conversation_id="conv_kept")).status_code == 422
    assert (tmp_path / "kept" / "conv_kept.mp3").read_bytes() == music
