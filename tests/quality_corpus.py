"""A labelled corpus for the sample quality gate, generated (never hand-picked) with real encoders.

Speech comes from espeak-ng (several voices and languages) and the bundled `samples/sample.wav`;
signals that are not speech (hold music, keypad tones, ring-back, busy tone, hum, test tone) are
synthesised with numpy from their published definitions; libsndfile's encoders (its µ-law and PCM
writers, LAME for MP3) encode every file the way it reaches the service: 8 kHz µ-law band-limited
to 300-3400 Hz (a phone line), 16 kHz PCM WAV and 44.1 kHz MP3.

Each file's name says what the gate must answer: `good-ok-...` is accepted, `bad-REASON-...` is
refused with REASON among its reasons. Noisy speech: mixed at 20 and 10 dB SNR (speech power over
noise power) it is good, at 5 and 0 dB it is bad (`too_noisy`): at 10 dB the noise is plainly
audible but the voice dominates; at 5 dB and below a clone learns the noise (docs/quality-gate.md).

`build_corpus(directory)` writes the files and returns them; `python tests/quality_corpus.py DIR`
writes them to DIR to listen to.
"""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy
import soundfile
import soxr

ROOT = Path(__file__).resolve().parent.parent
BUNDLED_SAMPLE = ROOT / "samples" / "sample.wav"
RATE = 16000  # the rate signals are made at, before each rendering resamples them
GOOD_SNR_DB = (20, 10)
BAD_SNR_DB = (5, 0)
# espeak-ng voice, text; the texts are long enough for 6-9 s of speech.
VOICES = (
    ("nl", "Hallo, met Ivan. Ik bel over mijn afspraak van volgende week. Kunt u mij later vandaag terugbellen?"),
    ("en-us", "Hello, this is Maria. I am calling about the parcel that was delivered to the wrong address yesterday."),
    ("de+f3", "Guten Tag, hier spricht Anna. Ich rufe wegen meiner Rechnung an, die noch nicht bezahlt wurde."),
    ("fr+m3", "Bonjour, c'est Pierre. Je vous appelle au sujet de mon rendez-vous de jeudi prochain, merci."),
    ("en-gb+f2", "Good morning. I would like to change my booking to a later date, if that is still possible."),
)
RENDERINGS = ("tel", "wb16", "mp3")  # 8 kHz µ-law phone line, 16 kHz PCM, 44.1 kHz MP3
# DTMF (ITU-T Q.23): row and column frequencies of each key.
DTMF_ROWS, DTMF_COLS = (697, 770, 852, 941), (1209, 1336, 1477, 1633)
KEYS = "123A456B789C*0#D"


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    good: bool
    reason: str  # "ok" for a good file, else the reason the gate must give

    @property
    def name(self) -> str:
        return self.path.name


def _espeak(voice: str, text: str) -> numpy.ndarray:
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "--stdout", text], check=True, capture_output=True).stdout
    return _read(io.BytesIO(wav))


def _read(source: Path | io.BytesIO) -> numpy.ndarray:
    """A file as mono float samples at RATE."""
    samples, rate = soundfile.read(source, dtype="float32", always_2d=True)
    return soxr.resample(samples.mean(axis=1), rate, RATE).astype(numpy.float32)


def _rms_db(x: numpy.ndarray) -> float:
    return float(10 * numpy.log10(numpy.mean(numpy.square(x, dtype=numpy.float64)) + 1e-20))


def _at_level(x: numpy.ndarray, dbfs: float) -> numpy.ndarray:
    """Scaled so that the RMS over the whole signal is `dbfs`."""
    return (x * 10 ** ((dbfs - _rms_db(x)) / 20)).astype(numpy.float32)


def _noise(seconds: float, colour: str, rng: numpy.random.Generator) -> numpy.ndarray:
    """White, pink (1/f) or brown (1/f², like traffic rumble) noise."""
    n = int(seconds * RATE)
    white = rng.standard_normal(n)
    if colour == "white":
        return white.astype(numpy.float32)
    spectrum = numpy.fft.rfft(white)
    f = numpy.maximum(numpy.fft.rfftfreq(n, 1 / RATE), 20.0)
    spectrum /= f ** (0.5 if colour == "pink" else 1.0)
    return numpy.fft.irfft(spectrum, n).astype(numpy.float32)


def _phone_band(x: numpy.ndarray) -> numpy.ndarray:
    """What survives a phone line's 300-3400 Hz."""
    spectrum = numpy.fft.rfft(x)
    f = numpy.fft.rfftfreq(len(x), 1 / RATE)
    spectrum[(f < 300) | (f > 3400)] = 0
    return numpy.fft.irfft(spectrum, len(x)).astype(numpy.float32)


def _with_noise(speech: numpy.ndarray, snr_db: float, colour: str, rng: numpy.random.Generator,
                rendering: str) -> numpy.ndarray:
    """Speech plus noise at `snr_db`, measured in the band the rendering delivers (a phone line drops
    most brown noise: its SNR is set on what is left)."""
    noise = _noise(len(speech) / RATE, colour, rng)
    heard = _phone_band if rendering == "tel" else (lambda x: x)
    noise = noise * 10 ** ((_rms_db(heard(speech)) - snr_db - _rms_db(heard(noise))) / 20)
    return speech + noise


def _tone(freqs: tuple[float, ...], seconds: float, dbfs: float) -> numpy.ndarray:
    t = numpy.arange(int(seconds * RATE)) / RATE
    x = sum(numpy.sin(2 * numpy.pi * f * t) for f in freqs)
    return _at_level(numpy.asarray(x, dtype=numpy.float32), dbfs)


def _cadence(freqs: tuple[float, ...], on: float, off: float, seconds: float, dbfs: float) -> numpy.ndarray:
    """A tone at `dbfs` switched on and off: ring-back (ETSI 425 Hz 1 s / 4 s; US 440+480 Hz 2 s / 4 s), busy."""
    tone = _tone(freqs, seconds, dbfs)
    t = numpy.arange(len(tone)) / RATE
    return tone * ((t % (on + off)) < on)


def _dtmf(digits: str, on: float = 0.1, off: float = 0.1, dbfs: float = -10) -> numpy.ndarray:
    parts = []
    for key in digits:
        index = KEYS.index(key)
        pair = (DTMF_ROWS[index // 4], DTMF_COLS[index % 4])
        parts += [_tone(pair, on, dbfs), numpy.zeros(int(off * RATE), numpy.float32)]
    return numpy.concatenate(parts)


def hold_music(seconds: float, bpm: float, seed: int) -> numpy.ndarray:
    """Chords with rhythm: a I-V-vi-IV progression of harmonic-rich notes, a bass line and hi-hat
    noise bursts on the beat, like a synthesised on-hold loop."""
    rng = numpy.random.default_rng(seed)
    beat = 60 / bpm
    root = 220 * 2 ** (rng.integers(0, 12) / 12)
    progression = ((0, 4, 7), (7, 11, 14), (9, 12, 16), (5, 9, 12))
    n = int(seconds * RATE)
    out = numpy.zeros(n, numpy.float32)
    t_beat = numpy.arange(int(beat * RATE)) / RATE
    envelope = numpy.exp(-3 * t_beat / beat)
    for b in range(int(seconds / beat)):
        start = int(b * beat * RATE)
        chord = progression[(b // 4) % 4]
        note = numpy.zeros_like(t_beat)
        for semis in chord:
            f = root * 2 ** (semis / 12)
            note += sum(numpy.sin(2 * numpy.pi * f * h * t_beat) / h for h in (1, 2, 3, 4))
        bass = numpy.sin(2 * numpy.pi * root / 2 * 2 ** (chord[0] / 12) * t_beat)
        hat = rng.standard_normal(len(t_beat)) * numpy.exp(-60 * t_beat)
        piece = (note * envelope + 1.5 * bass * envelope + 0.6 * hat).astype(numpy.float32)
        end = min(n, start + len(piece))
        out[start:end] += piece[: end - start]
    return _at_level(out, -18)


def _render(x: numpy.ndarray, path: Path, rendering: str, gain_db: float = 0.0) -> Path:
    """Encode as it would arrive: a phone line (300-3400 Hz, 8 kHz µ-law), a 16 kHz PCM WAV, or a
    44.1 kHz MP3 (LAME), with libsndfile's encoders. `gain_db` overdrives the recorder: samples past
    full scale are clipped before the encoder, as an ADC or a µ-law encoder saturates."""
    if rendering == "tel":
        x = soxr.resample(_phone_band(x), RATE, 8000)
        rate, suffix, subtype = 8000, ".wav", "ULAW"
    elif rendering == "wb16":
        rate, suffix, subtype = RATE, ".wav", "PCM_16"
    else:
        x = soxr.resample(x, RATE, 44100)
        rate, suffix, subtype = 44100, ".mp3", "MPEG_LAYER_III"
    out = path.with_suffix(suffix)
    soundfile.write(out, numpy.clip(x * 10 ** (gain_db / 20), -1, 1), rate, subtype=subtype)
    return out


def _speech_sources(voices: tuple[tuple[str, str], ...]) -> list[tuple[str, numpy.ndarray]]:
    sources = [(voice.replace("+", "-"), _espeak(voice, text)) for voice, text in voices]
    sources.append(("bundled", _read(BUNDLED_SAMPLE)))
    return [(name, _at_level(x, -22)) for name, x in sources]


def build_corpus(directory: Path, voices: tuple[tuple[str, str], ...] = VOICES) -> list[CorpusFile]:
    """Every file, for the speech of `voices` and the bundled sample (the test suite takes two voices,
    `bench/quality_corpus_report.py` all five)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    rng = numpy.random.default_rng(20)
    files: list[CorpusFile] = []

    def add(x: numpy.ndarray, good: bool, reason: str, label: str, rendering: str, gain_db: float = 0.0) -> None:
        stem = f"{'good' if good else 'bad'}-{reason}-{label}-{rendering}"
        files.append(CorpusFile(_render(x, d / stem, rendering, gain_db), good, reason))

    speech = _speech_sources(voices)
    colours = ("white", "pink", "brown")
    for i, (voice, x) in enumerate(speech):
        for j, rendering in enumerate(RENDERINGS):
            add(x, True, "ok", f"{voice}-clean", rendering)
            colour = colours[(i + j) % 3]
            for snr in GOOD_SNR_DB:
                add(_with_noise(x, snr, colour, rng, rendering), True, "ok", f"{voice}-{colour}-snr{snr}", rendering)
            for snr in BAD_SNR_DB:
                add(_with_noise(x, snr, colour, rng, rendering), False, "too_noisy", f"{voice}-{colour}-snr{snr}", rendering)

    for rendering in RENDERINGS:
        voice, x = speech[RENDERINGS.index(rendering) % len(speech)]
        add(x, False, "clipped", f"{voice}-plus20db", rendering, gain_db=20)
        add(_at_level(x, -50), False, "too_quiet", f"{voice}-minus50dbfs", rendering)
        music = hold_music(5, 100, seed=3)
        add(numpy.concatenate([x[: 6 * RATE], _at_level(music, _rms_db(x))]), False, "too_noisy",
            f"{voice}-then-5s-music", rendering)
        # A voice that starts late: the gate's first 10 s hold none of it, so it measures 20 s.
        quiet_line = _at_level(_noise(11, "white", rng), -70)
        add(numpy.concatenate([quiet_line, x]), True, "ok", f"{voice}-after-11s-of-line-silence", rendering)
        add(numpy.concatenate([_at_level(hold_music(11, 100, seed=4), _rms_db(x)), x]), False, "too_noisy",
            f"{voice}-after-11s-of-music", rendering)
        presses = x.copy()
        for at, key in ((1.0, "5"), (2.5, "1"), (4.0, "#")):
            tone = _dtmf(key, on=0.15, off=0, dbfs=_rms_db(x) + 3)
            presses[int(at * RATE): int(at * RATE) + len(tone)] += tone
        add(presses, False, "keypad_tones", f"{voice}-with-keypad", rendering)
        for seed, bpm in ((1, 96), (2, 128)):
            add(hold_music(10, bpm, seed), False, "too_little_speech", f"hold-music-{bpm}bpm", rendering)
        add(_dtmf("0612345678#", on=0.12, off=0.2), False, "keypad_tones", "dtmf-sequence", rendering)
        add(numpy.zeros(8 * RATE, numpy.float32), False, "too_little_speech", "digital-silence", rendering)
        add(_at_level(_noise(8, "white", rng), -70), False, "too_little_speech", "line-silence", rendering)
        hum = _tone((50, 100, 150), 8, -40) if rendering != "tel" else _tone((350, 450), 8, -45)
        add(hum, False, "too_little_speech", "low-hum", rendering)
        add(_cadence((425,), 1, 4, 10, -16), False, "too_little_speech", "ringback-425hz", rendering)
        add(_cadence((440, 480), 2, 4, 10, -16), False, "too_little_speech", "ringback-440-480hz", rendering)
        add(_cadence((425,), 0.5, 0.5, 8, -16), False, "too_little_speech", "busy-425hz", rendering)
        add(_cadence((480, 620), 0.5, 0.5, 8, -16), False, "too_little_speech", "busy-480-620hz", rendering)
        add(_tone((1000,), 8, -10), False, "too_little_speech", "tone-1khz", rendering)
        add(_at_level(_noise(8, "pink", rng), -25), False, "too_little_speech", "pink-noise", rendering)
    return files


if __name__ == "__main__":
    for item in build_corpus(Path(sys.argv[1] if len(sys.argv) > 1 else "quality-corpus")):
        print(item.path)
