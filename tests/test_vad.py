"""The numpy port of Silero VAD's 8 kHz network gives the published model's probabilities: onnxruntime
runs `precall/data/silero_vad.onnx` (the file the weights were taken from) frame by frame, as
silero-vad's own `OnnxWrapper` does, on speech, music, keypad tones and noise."""

from __future__ import annotations

import numpy
import onnxruntime
import pytest
import soundfile

from precall import vad
from tests.quality_corpus import BUNDLED_SAMPLE, hold_music

MODEL = vad.WEIGHTS_PATH.with_name("silero_vad.onnx")


def published_model(samples: numpy.ndarray) -> numpy.ndarray:
    """One probability per 256-sample frame, the state and the 32 samples of context carried from
    each frame to the next (silero-vad's `OnnxWrapper.__call__` at 8 kHz)."""
    session = onnxruntime.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    state = numpy.zeros((2, 1, 128), numpy.float32)
    context = numpy.zeros((1, 32), numpy.float32)
    rate = numpy.array(vad.SAMPLE_RATE, dtype=numpy.int64)
    found = []
    for start in range(0, len(samples) - vad.FRAME_SAMPLES + 1, vad.FRAME_SAMPLES):
        window = numpy.concatenate([context, samples[None, start:start + vad.FRAME_SAMPLES]], axis=1)
        probability, state = session.run(None, {"input": window, "state": state, "sr": rate})
        context = window[:, -32:]
        found.append(float(probability[0, 0]))
    return numpy.array(found, numpy.float32)


def signals() -> dict[str, numpy.ndarray]:
    voice, rate = soundfile.read(BUNDLED_SAMPLE, dtype="float32")
    assert rate == vad.SAMPLE_RATE
    rng = numpy.random.default_rng(3)
    keypad = numpy.zeros(3 * rate, numpy.float32)
    t = numpy.arange(int(0.1 * rate)) / rate
    for index, (row, column) in enumerate(((697, 1209), (770, 1336), (852, 1477), (941, 1336))):
        start = int((0.2 + 0.5 * index) * rate)
        keypad[start:start + len(t)] = 0.25 * (numpy.sin(2 * numpy.pi * row * t) + numpy.sin(2 * numpy.pi * column * t))
    return {
        "speech": voice,
        "hold music": hold_music(4, 120, seed=2)[::2],  # made at 16 kHz: every other sample is 8 kHz
        "keypad tones": keypad,
        "speech in noise": voice + 0.05 * rng.standard_normal(len(voice)).astype(numpy.float32),
    }


@pytest.mark.parametrize("name", list(signals()))
def test_the_numpy_network_gives_the_published_models_probabilities(name):
    samples = signals()[name].astype(numpy.float32)
    # The detector's rows start after WARM_UP_FRAMES of silence: one row as long as the sample is one
    # run of the model over that silence and the sample.
    lead = numpy.zeros(vad.WARM_UP_FRAMES * vad.FRAME_SAMPLES, numpy.float32)
    expected = published_model(numpy.concatenate([lead, samples]))[vad.WARM_UP_FRAMES:]
    one_row = vad.SpeechDetector(segment_frames=len(samples) // vad.FRAME_SAMPLES)
    found = one_row.probabilities(samples)
    assert len(found) == len(expected) > 90
    assert numpy.abs(found - expected).max() < 1e-4
    if name == "speech":  # the comparison covers both answers, not only silence
        assert (expected >= 0.5).sum() > 50 and (expected < 0.5).sum() > 10


def test_frames_of_segments_not_wanted_read_zero_and_the_others_are_unchanged():
    samples = signals()["speech"]
    every = vad.speech_detector.probabilities(samples)
    wanted = numpy.array([True, False, True, False, True, False])
    some = vad.speech_detector.probabilities(samples, wanted)
    size = vad.SEGMENT_FRAMES
    assert numpy.all(some[size:2 * size] == 0) and numpy.array_equal(some[:size], every[:size])
    assert numpy.array_equal(some[2 * size:3 * size], every[2 * size:3 * size]) and every[size:2 * size].max() > 0.5


def test_the_weights_are_read_once_and_numpys_blas_kept_to_one_thread():
    from threadpoolctl import threadpool_info

    detector = vad.SpeechDetector()
    assert detector.load() is detector.load()
    assert all(pool["num_threads"] == 1 for pool in threadpool_info() if pool["user_api"] == "blas")
