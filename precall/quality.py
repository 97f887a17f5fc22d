"""Can this sample make a good clone? Measures on decoded audio, and the reasons to refuse it.

Pure computation: float samples and their rate in, a `QualityReport` out; no I/O. What is
measured (docs/quality-gate.md has the figures behind every threshold):

- speech seconds, by voice activity detection (`precall.vad`), not by loudness: hold music, keypad
  tones, ring-back, hum and noise are loud and are not speech;
- the share of clipped samples, at the file's own rate and maximum (µ-law peaks at -0.2 dBFS);
- the speech level, RMS of the speech frames in dBFS (a full-scale square wave is 0 dBFS);
- a signal-to-noise estimate: the power of the speech frames over the median power of the other
  frames (noise, or music after the speech);
- keypad (DTMF) presses, by Goertzel filters with the rules of Asterisk's and spandsp's detectors.

Voice activity and keypad tones are found at 8 kHz (resampled once, with soxr): the phone band is
where they are calibrated, and it keeps the model's cost down. Clipping, level and noise are
measured at the file's own rate, so that hiss above 4 kHz counts as noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy
import soxr

from . import vad

# The first this-much of a sample is measured: enough to tell a voice at a bounded cost (the model's
# arithmetic is about 1.1 ms per second of audio; the clone itself gets the whole sample)...
FIRST_WINDOW_SECONDS = 10.0
# ...and up to this much when the first window holds too little speech (a recording that starts with
# silence or hold music): never more, whatever the sample's length.
MAX_ANALYSED_SECONDS = 20.0
# Silero VAD's own default decision threshold (silero-vad `get_speech_timestamps(threshold=0.5)`).
SPEECH_PROBABILITY = 0.5
# One-second segments whose every 32 ms frame is below this are silence: the model is not run on
# them. Far below speech at -50 dBFS (the quietest speech the corpus holds), so it never hides a voice.
SILENCE_DBFS = -70.0
# ...or 50 dB under the loudest frame of the sample: a pause that quiet beside the voice holds no
# speech worth counting (a voice at -20 dBFS peaks near -10 dBFS; its pauses are skipped below -60).
RELATIVE_SILENCE_DB = 50.0
# Refused below this speech level. ElevenLabs advises about -23 to -18 dB RMS; ITU-T P.56's nominal
# telephone speech level is -26 dBov. -40 dBFS is 14 dB under that: a voice so far down is mostly
# codec and line noise once it is made loud enough to clone (the corpus' -50 dBFS speech is refused,
# its -22 dBFS speech accepted).
MIN_SPEECH_LEVEL_DBFS = -40.0
# Refused below this signal-to-noise estimate. The corpus mixes white, pink and brown noise at 20, 10,
# 5 and 0 dB SNR; 10 dB is audible but the voice dominates, 5 dB is where a clone learns the noise.
# The estimate reads 8.9-12.6 dB for the 10 dB files and 4.6-7.1 dB for the 5 dB ones (it leaves out
# speech pauses, so it reads a little above the mixed SNR): the line sits between the two.
MIN_SNR_DB = 8.0
# Refused (`too_noisy`) when more than this much audio is not speech but within 6 dB of the speech
# level: music or a television after or under the voice, which the median noise estimate can miss
# when speech pauses outnumber it. Clean and 10 dB noisy speech in the corpus: at most 0.58 s (weak
# syllables the VAD leaves out); 5 s of music after 6 s of speech (4 s of it in the first 10 s):
# 1.92 s and more. The line sits between the two.
LOUD_OTHER_RATIO = 10 ** (-6 / 10)
MAX_LOUD_OTHER_SECONDS = 1.25
# Refused when more than this share of samples (percent) sits at the ceiling (see `clipped_percent`).
# Clean and noisy speech in the corpus: at most 0.08 %; speech overdriven by 20 dB: 12-16 % (µ-law,
# PCM and MP3 alike). 1 % lies between. Only judged where speech was found (see `_reasons`).
MAX_CLIPPED_PERCENT = 1.0
_CLIP_MARGIN = 10 ** (-1 / 20)  # within 1 dB of the ceiling: the flattened tops, and a lossy codec's ripple on them
_CLIP_MIN_PEAK = 0.25  # a file that never passes -12 dBFS is not clipped, whatever its shape

# DTMF (ITU-T Q.23 frequencies; detection rules of Asterisk's dsp.c and spandsp's dtmf.c).
DTMF_ROWS_HZ = (697.0, 770.0, 852.0, 941.0)
DTMF_COLUMNS_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
# A phone has 12 keys: 1633 Hz (keys A-D) is still measured, so that it can outweigh the others, but
# never counts as a press (a vowel with harmonics near 697 and 1633 Hz matched key A in the corpus).
PHONE_KEYPAD_COLUMNS_HZ = DTMF_COLUMNS_HZ[:3]
_DTMF_WINDOW = 102  # samples at 8 kHz, as both detectors use (12.75 ms; resolves 697 from 770 Hz)
_DTMF_HOP = 51
DTMF_RELATIVE_PEAK = 10 ** (8 / 10)  # the strongest row (column) 8 dB over every other row (column)
DTMF_NORMAL_TWIST = 10 ** (8 / 10)  # the row tone may be up to 8 dB louder than the column tone...
DTMF_REVERSE_TWIST = 10 ** (4 / 10)  # ...and the column tone up to 4 dB louder than the row tone
DTMF_TONE_SHARE = 0.5  # the two tones carry at least half the window's power (the to-total-energy check)
# A key's tones are pure: their second harmonics stay under them (Asterisk's DTMF_2ND_HARMONIC_ROW 2.5
# and _COL 63.1, i.e. 4 and 18 dB). A vowel whose harmonics land on a row and a column has energy at
# twice those frequencies too (in the corpus, a German female voice matched key A for 45 ms).
DTMF_SECOND_HARMONIC_ROW = 10 ** (4 / 10)
DTMF_SECOND_HARMONIC_COLUMN = 10 ** (18 / 10)
DTMF_MIN_DBFS = -45.0  # quieter windows are never a key press
# A press lasts at least 40 ms (ITU-T Q.24's minimum tone duration): 5 windows 51 samples apart.
DTMF_MIN_WINDOWS = 5
# A press survives this many windows (13 ms) drowned by the voice over it, as Asterisk's detector
# needs more than one miss before it ends a digit; a longer silence starts a new press.
DTMF_MAX_GAP_WINDOWS = 2

# Noise is the median power of the frames outside speech: speech edges the VAD left out stay above it.
NOISE_PERCENTILE = 50
# The Goertzel filters of every DTMF tone and its second harmonic as one matrix: cosines, then sines.
_DTMF_FREQS = numpy.array(DTMF_ROWS_HZ + DTMF_COLUMNS_HZ + tuple(2 * f for f in DTMF_ROWS_HZ + DTMF_COLUMNS_HZ))
_DTMF_PHASES = 2 * numpy.pi * numpy.outer(numpy.arange(_DTMF_WINDOW), _DTMF_FREQS) / vad.SAMPLE_RATE
_DTMF_BASIS = numpy.concatenate([numpy.cos(_DTMF_PHASES), numpy.sin(_DTMF_PHASES)], axis=1).astype(numpy.float32)
REASONS = ("too_little_speech", "keypad_tones", "clipped", "too_quiet", "too_noisy")  # most decisive first
_MAX_MAGNITUDE = 16.0  # 24 dB over full scale: more than any real overdriven float WAV
_FLOOR = 1e-12  # power of digital silence, so that logarithms stay finite
_SNR_CEILING_DB = 60.0


@dataclass(frozen=True)
class QualityReport:
    """The measures of one sample and every reason it fails (empty: it may be cloned)."""

    speech_seconds: float
    analysed_seconds: float
    speech_level_dbfs: float | None  # None when no speech was found
    snr_db: float | None  # None when no speech was found
    loud_other_seconds: float  # seconds that are not speech yet nearly as loud as the speech (music, a TV)
    clipped_percent: float
    keypad_tones: int  # key presses heard
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """The measures as they appear in answers and logs (numbers and reason names only)."""
        document = asdict(self)
        document["reasons"] = list(self.reasons)
        return document


def measure(samples: numpy.ndarray, sample_rate: int, min_speech_seconds: float,
            detector: vad.SpeechDetector = vad.speech_detector) -> QualityReport:
    """Measure mono float `samples` (full scale ±1) at `sample_rate`; at most the first 20 s (see `assess`)."""
    return _measured(samples, sample_rate, min_speech_seconds, detector, None)[0]


def _measured(samples: numpy.ndarray, sample_rate: int, min_speech_seconds: float, detector: vad.SpeechDetector,
              known: numpy.ndarray | None) -> tuple[QualityReport, numpy.ndarray]:
    """`measure`, and the speech probability of each frame; `known` holds the probabilities of a
    shorter start of the same samples, whose whole model segments are taken as they are, not run again
    (each segment is run on its own, from the audio before it, so the result is the same)."""
    samples = numpy.asarray(samples, dtype=numpy.float32)[: int(MAX_ANALYSED_SECONDS * sample_rate)]
    # A float WAV may hold NaN, infinities or 1e30: none may reach a logarithm or an answer.
    if not numpy.isfinite(samples).all():
        samples = numpy.nan_to_num(samples, nan=0.0, posinf=_MAX_MAGNITUDE, neginf=-_MAX_MAGNITUDE)
    if samples.size and max(float(samples.max()), -float(samples.min())) > _MAX_MAGNITUDE:
        samples = numpy.clip(samples, -_MAX_MAGNITUDE, _MAX_MAGNITUDE)
    phone = samples if sample_rate == vad.SAMPLE_RATE else soxr.resample(samples, sample_rate, vad.SAMPLE_RATE, quality="LQ")
    phone = numpy.ascontiguousarray(phone, dtype=numpy.float32)
    loud = _loud_segments(frame_powers(phone), detector.segment_frames)
    size = detector.segment_frames
    reused = 0 if known is None else min(len(known), len(phone) // vad.FRAME_SAMPLES) // size * size
    loud[: reused // size] = False
    probabilities = detector.probabilities(phone, loud)
    if known is not None:
        probabilities[:reused] = known[:reused]
    speech = probabilities >= SPEECH_PROBABILITY
    speech_seconds = float(numpy.count_nonzero(speech) * vad.FRAME_SECONDS)
    level = snr = None
    loud_other = 0.0
    if speech.any():
        powers = frame_powers_at(samples, sample_rate, len(speech))  # the whole band: hiss above 4 kHz is noise too
        speech_power = float(numpy.mean(powers[speech]))
        level = _db(speech_power)
        snr = _snr_db(speech_power, powers[~speech], powers)
        loud_other = float(numpy.count_nonzero(powers[~speech] > speech_power * LOUD_OTHER_RATIO) * vad.FRAME_SECONDS)
    presses = keypad_presses(phone)
    clipped = clipped_percent(samples)
    reasons = _reasons(speech_seconds, min_speech_seconds, presses, clipped, level, snr, loud_other)
    report = QualityReport(
        speech_seconds=round(speech_seconds, 2),
        analysed_seconds=round(len(samples) / sample_rate, 2),
        speech_level_dbfs=None if level is None else round(level, 1),
        snr_db=None if snr is None else round(snr, 1),
        loud_other_seconds=round(loud_other, 2),
        clipped_percent=round(clipped, 2),
        keypad_tones=presses,
        reasons=reasons,
    )
    return report, probabilities


def assess(samples: numpy.ndarray, sample_rate: int, min_speech_seconds: float,
           decode_longer: Callable[[], tuple[numpy.ndarray, int]],
           detector: vad.SpeechDetector = vad.speech_detector) -> QualityReport:
    """The gate's verdict on a sample whose first `FIRST_WINDOW_SECONDS` are `samples`: measured on
    them, and on the first `MAX_ANALYSED_SECONDS` (`decode_longer()`) only when they hold too little
    speech and the sample goes on. A good sample costs one window; only a sample whose voice starts
    late (or never) costs two, and the model runs on the first window once."""
    report, probabilities = _measured(samples, sample_rate, min_speech_seconds, detector, None)
    if "too_little_speech" in report.reasons and len(samples) >= FIRST_WINDOW_SECONDS * sample_rate:
        longer, rate = decode_longer()
        report = _measured(longer, rate, min_speech_seconds, detector, probabilities)[0]
    return report


def warm_up(detector: vad.SpeechDetector = vad.speech_detector) -> None:
    """Run every measure once, at start-up: their first calls cost about 30 ms more than the next ones
    (the weights read; soxr and BLAS set up; numpy imports part of itself on the first `percentile`,
    19 ms), which the first caller's sample would otherwise wait for."""
    noise = numpy.random.default_rng(0).standard_normal(44100).astype(numpy.float32) * 0.1
    for rate in (vad.SAMPLE_RATE, 44100):
        measure(noise[:rate], rate, 0.0, detector)
    powers = numpy.square(noise[:100], dtype=numpy.float64)
    _snr_db(1.0, powers, powers)  # measured only where speech was found, which noise is not


def _reasons(speech_seconds: float, min_speech_seconds: float, presses: int, clipped: float,
             level: float | None, snr: float | None, loud_other: float) -> tuple[str, ...]:
    failed = {
        "too_little_speech": speech_seconds < min_speech_seconds,
        "keypad_tones": presses > 0,
        # A steady tone spends a third of its time within 1 dB of its peak: without speech, that is no clipping.
        "clipped": level is not None and clipped > MAX_CLIPPED_PERCENT,
        "too_quiet": level is not None and level < MIN_SPEECH_LEVEL_DBFS,
        "too_noisy": (snr is not None and snr < MIN_SNR_DB) or loud_other > MAX_LOUD_OTHER_SECONDS,
    }
    return tuple(reason for reason in REASONS if failed[reason])


def _db(power: float) -> float:
    return 10 * float(numpy.log10(max(power, _FLOOR)))


def frame_powers(phone: numpy.ndarray) -> numpy.ndarray:
    """Mean square of each whole 32 ms frame of 8 kHz audio."""
    frames = len(phone) // vad.FRAME_SAMPLES
    shaped = phone[: frames * vad.FRAME_SAMPLES].reshape(frames, vad.FRAME_SAMPLES)
    return numpy.einsum("ij,ij->i", shaped, shaped, dtype=numpy.float64) / vad.FRAME_SAMPLES


def frame_powers_at(samples: numpy.ndarray, sample_rate: int, frames: int) -> numpy.ndarray:
    """Mean square of the same 32 ms frames in the original samples, at their own rate."""
    bounds = numpy.round(numpy.arange(frames + 1) * vad.FRAME_SECONDS * sample_rate).astype(numpy.int64)
    bounds[-1] = min(int(bounds[-1]), len(samples))
    sums = numpy.add.reduceat(numpy.square(samples[: bounds[-1]], dtype=numpy.float32), bounds[:-1], dtype=numpy.float64)
    return sums / numpy.maximum(numpy.diff(bounds), 1)


def _loud_segments(powers: numpy.ndarray, size: int) -> numpy.ndarray:
    """Per VAD segment of `size` frames: does any frame rise above silence (else the model need not run)?
    Silence is below `SILENCE_DBFS`, or `RELATIVE_SILENCE_DB` under the loudest frame of the sample."""
    padded = numpy.zeros(-(-len(powers) // size) * size)
    padded[: len(powers)] = powers
    loudest = float(powers.max()) if len(powers) else 0.0
    floor = max(10 ** (SILENCE_DBFS / 10), loudest * 10 ** (-RELATIVE_SILENCE_DB / 10))
    return padded.reshape(-1, size).max(axis=1) > floor


def _snr_db(speech_power: float, other_powers: numpy.ndarray, all_powers: numpy.ndarray) -> float:
    """Speech over noise, both as power. Noise is the median frame outside speech, so that speech
    edges the VAD left out do not count as noise; with under half a second outside speech, the
    quietest tenth of all frames stands in."""
    enough = other_powers.size * vad.FRAME_SECONDS >= 0.5
    noise = float(numpy.percentile(other_powers, NOISE_PERCENTILE)) if enough else float(numpy.percentile(all_powers, 10))
    if noise <= _FLOOR:
        return _SNR_CEILING_DB
    return min(_SNR_CEILING_DB, 10 * float(numpy.log10(max(speech_power - noise, _FLOOR) / noise)))


def clipped_percent(samples: numpy.ndarray) -> float:
    """Percent of samples within 1 dB of the ceiling: the file's own maximum (a µ-law file peaks at
    -0.2 dBFS, an attenuated clipped file lower still), or full scale when a lossy decoder's
    overshoot passes it (an MP3 of clipped audio rings up to +3 dBFS around its flattened tops)."""
    if samples.size == 0:
        return 0.0
    magnitude = numpy.abs(samples)
    ceiling = min(float(magnitude.max()), 1.0)
    if ceiling < _CLIP_MIN_PEAK:
        return 0.0
    return 100.0 * float(numpy.count_nonzero(magnitude >= ceiling * _CLIP_MARGIN)) / samples.size


def keypad_presses(phone: numpy.ndarray) -> int:
    """DTMF key presses in 8 kHz audio: runs of at least 40 ms in which one key's row and column
    tones stand out as Asterisk and spandsp require (relative peak, twist, share of the power)."""
    if len(phone) < _DTMF_WINDOW:
        return 0
    starts = numpy.arange(0, len(phone) - _DTMF_WINDOW + 1, _DTMF_HOP)
    windows = phone[starts[:, None] + numpy.arange(_DTMF_WINDOW)]
    total = numpy.einsum("ij,ij->i", windows, windows) / _DTMF_WINDOW
    loud = total > 10 ** (DTMF_MIN_DBFS / 10)  # quieter windows are never a press: not analysed
    windows, total = windows[loud], total[loud]
    projected = windows @ _DTMF_BASIS  # cosine and sine parts of every tone, in float32 (one sgemm)
    half = _DTMF_BASIS.shape[1] // 2
    tones = (projected[:, :half] ** 2 + projected[:, half:] ** 2) * 2 / _DTMF_WINDOW**2  # each tone's mean power
    rows, cols = tones[:, :4], tones[:, 4:8]
    row, col = rows.argmax(axis=1), cols.argmax(axis=1)
    best_row, best_col = rows.max(axis=1), cols.max(axis=1)
    picked = numpy.arange(len(windows))
    row_harmonic, col_harmonic = tones[:, 8:12][picked, row], tones[:, 12:16][picked, col]
    hit = (
        (best_row < best_col * DTMF_NORMAL_TWIST) & (best_col < best_row * DTMF_REVERSE_TWIST)
        & (numpy.sort(rows, axis=1)[:, -2] * DTMF_RELATIVE_PEAK < best_row)
        & (numpy.sort(cols, axis=1)[:, -2] * DTMF_RELATIVE_PEAK < best_col)
        & (best_row + best_col >= DTMF_TONE_SHARE * total)
        & (row_harmonic * DTMF_SECOND_HARMONIC_ROW < best_row) & (col_harmonic * DTMF_SECOND_HARMONIC_COLUMN < best_col)
        & (col < len(PHONE_KEYPAD_COLUMNS_HZ))
    )
    key = numpy.full(len(starts), -1)
    key[loud] = numpy.where(hit, row * 4 + col, -1)
    presses, current, run, gap = 0, -1, 0, 0
    for value in key.tolist():
        if value >= 0 and value == current:
            run, gap = run + 1, 0
        elif value >= 0:
            current, run, gap = value, 1, 0
        else:
            gap += 1
            if gap > DTMF_MAX_GAP_WINDOWS:  # the key was let go
                current, run = -1, 0
            continue
        if run == DTMF_MIN_WINDOWS:
            presses += 1
    return presses
