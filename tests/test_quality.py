"""The quality gate's measures on a generated, labelled corpus, and its edges (odd input, the model
skipping silence), as pure functions: what reaches HTTP is in tests/test_quality_gate.py."""

from __future__ import annotations

from pathlib import Path

import numpy
import pytest
import soundfile

from precall import audio, quality, vad
from tests.quality_corpus import BUNDLED_SAMPLE, DTMF_COLS, DTMF_ROWS, KEYS, RATE, VOICES, CorpusFile, build_corpus, hold_music


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[CorpusFile]:
    """Two voices (one of them the German female voice whose vowels once matched a keypad key) and the
    bundled sample, in every rendering, with every kind of bad sample: about 100 files in a few seconds."""
    return build_corpus(tmp_path_factory.mktemp("quality-corpus"), (VOICES[0], VOICES[2]))


def measured(path: Path, min_speech_seconds: float = 2.0) -> quality.QualityReport:
    """As the service measures: the same decode (the first 10 s, mono float; 20 s when they hold too
    little speech) and the same code."""
    data = path.read_bytes()
    fmt = audio.sniff_format(data)
    probe = audio.probe(data, fmt, 3.0, keep_seconds=quality.FIRST_WINDOW_SECONDS)
    return quality.assess(probe.samples, probe.sample_rate, min_speech_seconds,
                          lambda: (audio.continued(data, fmt, probe, quality.MAX_ANALYSED_SECONDS), probe.sample_rate))


def test_every_good_sample_of_the_corpus_is_accepted_and_every_bad_one_refused_with_its_reason(corpus):
    wrong = []
    for item in corpus:
        report = measured(item.path)
        right = not report.reasons if item.good else item.reason in report.reasons
        if not right:
            wrong.append(f"{item.name}: {report}")
    assert len(corpus) > 80 and sum(item.good for item in corpus) > 20
    assert not wrong, "\n".join(wrong)


def test_hold_music_ring_back_and_keypad_tones_hold_no_speech(corpus):
    for item in corpus:
        if any(kind in item.name for kind in ("hold-music", "ringback", "busy", "dtmf-sequence", "tone-1khz", "hum")):
            assert measured(item.path).speech_seconds < 0.5, item.name


def test_a_refused_sample_carries_every_reason_that_applies():
    t = numpy.arange(8 * RATE) / RATE
    sequence = numpy.concatenate([
        numpy.concatenate([0.3 * (numpy.sin(2 * numpy.pi * DTMF_ROWS[i // 4] * t[:1600]) +
                                  numpy.sin(2 * numpy.pi * DTMF_COLS[i % 4] * t[:1600])), numpy.zeros(1600)])
        for i in (KEYS.index(k) for k in "0612")])
    report = quality.measure(sequence.astype(numpy.float32), RATE, 2.0)
    assert report.reasons == ("too_little_speech", "keypad_tones")
    assert report.keypad_tones == 4 and report.speech_level_dbfs is None and report.snr_db is None


def test_min_speech_seconds_counts_speech_not_duration(corpus):
    bundled = next(item.path for item in corpus if item.name == "good-ok-bundled-clean-tel.wav")  # 5.9 s, ~4.7 s of speech
    report = measured(bundled)
    assert 3.5 < report.speech_seconds < report.analysed_seconds
    assert "too_little_speech" in measured(bundled, min_speech_seconds=report.speech_seconds + 0.5).reasons


def test_clipping_is_measured_at_the_files_own_maximum_and_only_flat_tops_count():
    voice_like, _ = soundfile.read(BUNDLED_SAMPLE, dtype="float32")
    assert quality.clipped_percent(voice_like / numpy.abs(voice_like).max()) < 0.1  # peak-normalised, not clipped
    mu_law_ceiling = 32124 / 32768  # a saturated µ-law encoder's top level: -0.17 dBFS, not 0
    assert quality.clipped_percent(numpy.clip(voice_like * 10, -1, 1) * mu_law_ceiling) > 10
    assert quality.clipped_percent(numpy.clip(voice_like * 10, -1, 1) * 1.4) > 10  # a lossy decoder's overshoot
    assert quality.clipped_percent(voice_like * 0.1) == 0.0  # never above -12 dBFS: not clipped


def test_any_float_input_gives_finite_measures():
    rng = numpy.random.default_rng(1)
    hostile = rng.standard_normal(3 * RATE).astype(numpy.float32) * 1e30
    hostile[::7] = numpy.nan
    hostile[::11] = numpy.inf
    for samples in (hostile, numpy.zeros(0, numpy.float32), numpy.zeros(100, numpy.float32)):
        report = quality.measure(samples, RATE, 2.0)
        assert all(numpy.isfinite(v) for v in report.as_dict().values() if isinstance(v, float)), report
        assert "too_little_speech" in report.reasons


def test_the_model_is_not_run_on_silent_segments():
    class Counting(vad.SpeechDetector):
        rows = 0

        def probabilities(self, samples, wanted=None):
            Counting.rows = int(numpy.count_nonzero(wanted))
            return super().probabilities(samples, wanted)

    music = hold_music(3, 120, seed=1)
    samples = numpy.concatenate([numpy.zeros(5 * RATE, numpy.float32), music, numpy.zeros(5 * RATE, numpy.float32)])
    report = quality.measure(samples, RATE, 2.0, detector=Counting())
    segments = len(samples) / RATE / (vad.SEGMENT_FRAMES * vad.FRAME_SECONDS)  # at 16 kHz: twice the frames
    assert 0 < Counting.rows <= 8 < segments and report.speech_seconds < 0.5


def test_batched_segments_find_what_the_model_finds_frame_by_frame(corpus):
    """Warm-up frames make each one-second row agree with one long run of the model (on the corpus'
    clean speech the batch finds about 2 % fewer speech frames on average, 5 % at worst)."""
    data = next(item.path for item in corpus if item.name == "good-ok-nl-clean-tel.wav").read_bytes()
    probe = audio.probe(data, audio.sniff_format(data), 3.0, keep_seconds=20)
    batched = vad.speech_detector.probabilities(probe.samples) >= 0.5
    frames = len(probe.samples) // vad.FRAME_SAMPLES
    whole = vad.SpeechDetector(segment_frames=frames).probabilities(probe.samples) >= 0.5  # one row: frame after frame
    assert whole.sum() > 100 and abs(int(batched.sum()) - int(whole.sum())) <= 0.08 * whole.sum()


def test_only_a_sample_without_speech_in_its_first_ten_seconds_is_measured_again():
    voice, rate = soundfile.read(BUNDLED_SAMPLE, dtype="float32")  # 5.9 s at 8 kHz
    late = numpy.concatenate([numpy.zeros(11 * rate, numpy.float32), voice, voice])
    longer_decodes: list[float] = []

    def decode_longer(samples: numpy.ndarray) -> tuple[numpy.ndarray, int]:
        longer_decodes.append(len(samples) / rate)
        return samples[: int(quality.MAX_ANALYSED_SECONDS * rate)], rate

    first = late[: int(quality.FIRST_WINDOW_SECONDS * rate)]
    report = quality.assess(first, rate, 2.0, lambda: decode_longer(late))
    assert longer_decodes and report.analysed_seconds == 20 and report.speech_seconds > 3 and not report.reasons
    longer_decodes.clear()
    ten_seconds_of_voice = numpy.tile(voice, 3)[: int(quality.FIRST_WINDOW_SECONDS * rate)]
    report = quality.assess(ten_seconds_of_voice, rate, 2.0, lambda: decode_longer(numpy.tile(voice, 5)))
    assert longer_decodes == [] and report.analysed_seconds == 10 and not report.reasons


def test_the_second_window_reuses_the_first_windows_model_segments_and_finds_the_same():
    class Counting(vad.SpeechDetector):
        rows: list[int] = []

        def probabilities(self, samples, wanted=None):
            Counting.rows.append(int(numpy.count_nonzero(wanted)))
            return super().probabilities(samples, wanted)

    voice, rate = soundfile.read(BUNDLED_SAMPLE, dtype="float32")
    music = hold_music(11, 100, seed=4)[::2]  # made at 16 kHz: every other sample is 8 kHz
    late = numpy.concatenate([music, voice, voice]).astype(numpy.float32)
    first = late[: int(quality.FIRST_WINDOW_SECONDS * rate)]
    detector = Counting()
    reused = quality.assess(first, rate, 2.0, lambda: (late[: int(quality.MAX_ANALYSED_SECONDS * rate)], rate), detector)
    fresh = quality.measure(late[: int(quality.MAX_ANALYSED_SECONDS * rate)], rate, 2.0)
    assert reused == fresh and "too_noisy" in reused.reasons
    assert Counting.rows[0] == 10 and Counting.rows[1] <= 11  # 9 of the first 10 one-second segments not run again
