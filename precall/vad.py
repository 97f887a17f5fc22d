"""Voice activity: Silero VAD's ONNX model, run by onnxruntime on 8 kHz audio, 32 ms per frame.

Why this model: it was trained to tell speech from music, tones and noise, and in our corpus it
finds no speech in hold music, keypad tones, ring-back or hum (docs/quality-gate.md has the
figures); an energy detector (webrtcvad) counts all of those as speech. No torch: the model file
`data/silero_vad.onnx` (MIT, `data/silero_vad.LICENSE`) is taken as it ships inside the
`silero-vad` 6.2.3 wheel, and onnxruntime runs it.

Why it is run in batches: the model is a recurrent network fed 256 samples at a time, and each
call from Python costs about 50 µs beside the frame's own ~31 µs of arithmetic. The audio is cut into
one-second segments (`SEGMENT_FRAMES`), each preceded by `WARM_UP_FRAMES` of the audio before it (the
network's state settles within a few frames; the batch then finds 1-3 % fewer speech frames than one
long run), and all segments go through the model side by side as one batch: 10 s of audio take 37
calls instead of 312. What remains is the arithmetic, about 11 ms per 10 s on one core, so segments
the caller already decided (silence) are not run at all.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

SAMPLE_RATE = 8000
FRAME_SAMPLES = 256  # the model's step at 8 kHz: 32 ms
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
SEGMENT_FRAMES = 32  # 1 s per batch row
WARM_UP_FRAMES = 5  # frames of the audio before a segment, run and discarded, so its state has settled
_CONTEXT_SAMPLES = 32  # the model reads the last 32 samples of the previous step with each step
_STATE_SHAPE = (2, 128)  # the LSTM's (h, c) per batch row
MODEL_PATH = Path(__file__).with_name("data") / "silero_vad.onnx"


class SpeechDetector:
    """Speech probability (0..1) of each 32 ms frame. Thread-safe: onnxruntime sessions may be run
    from many threads at once; the model is loaded on first use, once."""

    def __init__(self, model_path: Path = MODEL_PATH, segment_frames: int = SEGMENT_FRAMES) -> None:
        self._model_path = model_path
        self.segment_frames = segment_frames
        self._session: InferenceSession | None = None
        self._lock = threading.Lock()

    def load(self) -> InferenceSession:
        """The model, loaded once (about 50 ms, and 150 ms to import onnxruntime): call it at start-up
        rather than on the first sample."""
        if self._session is not None:
            return self._session
        with self._lock:
            if self._session is None:
                import onnxruntime  # imported here: `SAMPLE_QUALITY_GATE=off` never pays for it

                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = 1  # one request, one core: concurrency comes from requests
                options.inter_op_num_threads = 1
                options.log_severity_level = 3
                self._session = onnxruntime.InferenceSession(
                    str(self._model_path), sess_options=options, providers=["CPUExecutionProvider"])
            return self._session

    def probabilities(self, samples: numpy.ndarray, wanted: numpy.ndarray | None = None) -> numpy.ndarray:
        """One probability per whole frame of 8 kHz mono `samples`; segments whose entry in `wanted`
        (one bool per `segment_frames` frames) is False are not run and read 0."""
        size = self.segment_frames
        frames = len(samples) // FRAME_SAMPLES
        segments = -(-frames // size)
        result = numpy.zeros(segments * size, numpy.float32)
        chosen = numpy.flatnonzero(numpy.ones(segments, bool) if wanted is None else wanted[:segments])
        if frames == 0 or len(chosen) == 0:
            return result[:frames]
        session = self.load()
        step = FRAME_SAMPLES
        warm = WARM_UP_FRAMES * step
        padded = numpy.zeros(warm + segments * size * step, numpy.float32)
        padded[warm:warm + frames * step] = samples[:frames * step]
        width = warm + size * step
        batch = numpy.stack([padded[s * size * step: s * size * step + width] for s in chosen])
        rows = len(chosen)
        state = numpy.zeros((_STATE_SHAPE[0], rows, _STATE_SHAPE[1]), numpy.float32)
        context = numpy.zeros((rows, _CONTEXT_SAMPLES), numpy.float32)
        rate = numpy.array(SAMPLE_RATE, dtype=numpy.int64)
        outputs = numpy.empty((rows, size), numpy.float32)
        for index in range(WARM_UP_FRAMES + size):
            window = numpy.concatenate([context, batch[:, index * step:(index + 1) * step]], axis=1)
            probability, state = session.run(None, {"input": window, "state": state, "sr": rate})
            context = window[:, -_CONTEXT_SAMPLES:]
            if index >= WARM_UP_FRAMES:
                outputs[:, index - WARM_UP_FRAMES] = probability[:, 0]
        result.reshape(segments, size)[chosen] = outputs
        return result[:frames]


speech_detector = SpeechDetector()
