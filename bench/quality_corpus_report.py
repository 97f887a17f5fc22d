"""The quality gate on the whole generated corpus (tests/quality_corpus.py, five espeak-ng voices and
the bundled sample, three renderings): the share of good samples accepted and of bad samples refused
with the right reason, per kind of file, and the range of each measure. Prints numbers, asserts nothing.

With webrtcvad installed (`pip install webrtcvad-wheels`, not a requirement), it also prints the speech
that WebRTC's VAD finds in the files that hold none, to compare detectors.

Run: `.venv/bin/python bench/quality_corpus_report.py [--keep DIR]` (part of `make bench`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from precall import audio, quality, vad  # noqa: E402
from tests.quality_corpus import CorpusFile, build_corpus  # noqa: E402


def kind(item: CorpusFile) -> str:
    """What a file stands for, without voice and rendering: `good snr10`, `bad hold-music`, ..."""
    label = item.path.stem.split("-", 2)[2].rsplit("-", 1)[0]
    for pattern in ("clean", r"snr\d+", "plus20db", "minus50dbfs", "then-5s-music", r"after-11s-of-[a-z-]+", "with-keypad"):
        found = re.search(pattern, label)
        if found:
            return f"{'good' if item.good else 'bad'} {found.group(0)}"
    plain = re.sub(r"-?\d+bpm", "", label)
    return f"{'good' if item.good else 'bad'} {plain}"


def webrtc_speech_seconds(samples: numpy.ndarray, rate: int) -> float | None:
    try:
        import soxr
        import webrtcvad  # type: ignore[import-not-found]
    except ImportError:
        return None
    detector = webrtcvad.Vad(3)  # its most aggressive mode
    phone = samples if rate == 8000 else soxr.resample(samples, rate, 8000)
    pcm = (numpy.clip(phone, -1, 1) * 32767).astype("<i2").tobytes()
    frame = 240 * 2  # 30 ms
    return sum(0.03 for i in range(0, len(pcm) - frame, frame) if detector.is_speech(pcm[i:i + frame], 8000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="write the corpus here and keep it (default: a temporary directory)")
    args = parser.parse_args()
    directory = args.keep or Path(tempfile.mkdtemp(prefix="quality-corpus-"))
    try:
        corpus = build_corpus(directory)
        vad.speech_detector.load()
        rows: dict[str, list[tuple[CorpusFile, quality.QualityReport, float | None]]] = defaultdict(list)
        costs = []
        for item in corpus:
            data = item.path.read_bytes()
            fmt = audio.sniff_format(data)
            probe = audio.probe(data, fmt, 3.0, keep_seconds=quality.FIRST_WINDOW_SECONDS)
            started = time.perf_counter()
            report = quality.assess(probe.samples, probe.sample_rate, 2.0,
                                    lambda: (audio.continued(data, fmt, probe, quality.MAX_ANALYSED_SECONDS), probe.sample_rate))  # noqa: B023
            costs.append((time.perf_counter() - started) * 1000 / max(report.analysed_seconds, 0.1) * 10)
            webrtc = None if item.good else webrtc_speech_seconds(probe.samples, probe.sample_rate)
            rows[kind(item)].append((item, report, webrtc))
        print(f"{'kind':32} {'files':>5} {'right':>6}  speech s      level dBFS     SNR dB        loud s    clip %   "
              f"keys  reasons given")
        good = bad = good_right = bad_right = 0
        for name in sorted(rows, key=lambda k: (not k.startswith("good"), k)):
            group = rows[name]
            right = [(not r.reasons) if i.good else (i.reason in r.reasons) for i, r, _ in group]
            good += len(group) if name.startswith("good") else 0
            bad += 0 if name.startswith("good") else len(group)
            good_right += sum(right) if name.startswith("good") else 0
            bad_right += 0 if name.startswith("good") else sum(right)
            reasons = sorted({",".join(r.reasons) or "accepted" for _, r, _ in group})
            print(f"{name:32} {len(group):5} {sum(right):6}  {_range([r.speech_seconds for _, r, _ in group]):13} "
                  f"{_range([r.speech_level_dbfs for _, r, _ in group]):14} {_range([r.snr_db for _, r, _ in group]):13} "
                  f"{_range([r.loud_other_seconds for _, r, _ in group]):9} {_range([r.clipped_percent for _, r, _ in group]):10} "
                  f"{_range([r.keypad_tones for _, r, _ in group]):5} {' | '.join(reasons)}")
            for item, report, _ in (g for g, ok in zip(group, right) if not ok):
                print(f"    wrong: {item.name}: {report}")
        print(f"\ngood samples accepted: {good_right}/{good} = {100 * good_right / good:.1f} %   "
              f"bad samples refused with the right reason: {bad_right}/{bad} = {100 * bad_right / bad:.1f} %")
        print(f"measure cost (decode excluded), ms per 10 s of audio: p50 {statistics.median(costs):.1f}, "
              f"max {max(costs):.1f}")
        webrtc_rows = [(name, [w for _, _, w in group]) for name, group in sorted(rows.items()) if name.startswith("bad")]
        if any(w is not None for _, ws in webrtc_rows for w in ws):
            print("\nspeech found by webrtcvad (mode 3) in the bad files (seconds; the gate refuses under 2 s):")
            for name, ws in webrtc_rows:
                print(f"  {name:32} {_range([w for w in ws if w is not None])}")
    finally:
        if args.keep is None:
            shutil.rmtree(directory, ignore_errors=True)


def _range(values: list) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    low, high = min(present), max(present)
    return f"{low:g}" if low == high else f"{low:g}..{high:g}"


if __name__ == "__main__":
    main()
