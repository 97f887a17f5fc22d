"""Voice activity: Silero VAD's 8 kHz network, run with numpy on 32 ms frames.

Why this model: it was trained to tell speech from music, tones and noise, and in our corpus it
finds no speech in hold music, keypad tones, ring-back or hum (docs/quality-gate.md has the
figures); an energy detector (webrtcvad) counts all of those as speech. The weights
(`data/silero_vad_8k.npz`) are the 8 kHz branch of the published ONNX model (`data/silero_vad.onnx`,
MIT, `data/silero_vad.LICENSE`), taken out by `scripts/extract_vad_weights.py`; tests/test_vad.py
proves this port gives onnxruntime's probabilities on that file.

Why numpy rather than onnxruntime: the network is a short feature encoder (an STFT as a
convolution, then four small convolutions) under an LSTM. Only the LSTM is sequential; the encoder
of every frame depends on that frame's own 288 samples alone. Run through the ONNX graph, each
32 ms step pays the whole graph (about 30 `If`, `Slice` and `Shape` nodes) and the encoder as a batch
of one; here every frame's encoder is one matrix product for the whole sample, and only the LSTM
steps. 10 s take about 4 ms instead of 14 ms, and the image loses onnxruntime (78 MB) and its
import at start-up.

Why the LSTM runs in one-second rows: stepping 312 frames one after the other from Python costs
about 50 µs each. The frames are cut into one-second segments (`SEGMENT_FRAMES`), each preceded by
`WARM_UP_FRAMES` of the audio before it (the network's state settles within a few frames; the rows
then find 1-3 % fewer speech frames than one long run), and all rows step side by side: 37 steps
for 10 s. Segments the caller already decided (silence) are not run at all.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy
from numpy.lib.stride_tricks import as_strided

SAMPLE_RATE = 8000
FRAME_SAMPLES = 256  # the model's step at 8 kHz: 32 ms
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
SEGMENT_FRAMES = 32  # 1 s per row
WARM_UP_FRAMES = 5  # frames of the audio before a segment, run and discarded, so its state has settled
_CONTEXT_SAMPLES = 32  # each step also reads the last 32 samples of the step before it
_WINDOW = _CONTEXT_SAMPLES + FRAME_SAMPLES
_REFLECTED = 32  # the model pads each window on the right by reflection before its STFT...
_STFT_TAPS, _STFT_HOP, _STFT_STEPS = 128, 64, 4  # ...and takes 4 steps of 128 samples, 64 apart
_BINS = 65
_HIDDEN = 128
WEIGHTS_PATH = Path(__file__).with_name("data") / "silero_vad_8k.npz"


def _sigmoid(values: numpy.ndarray) -> numpy.ndarray:
    """As tanh, which cannot overflow where exp(-x) would for large negative x."""
    return 0.5 + 0.5 * numpy.tanh(0.5 * values)


def _relu(values: numpy.ndarray) -> numpy.ndarray:
    return numpy.maximum(values, 0, out=values)


def _taps(edged: numpy.ndarray, outputs: int, stride: int) -> numpy.ndarray:
    """im2col of a kernel-3 convolution over contiguous (n, steps, channels): each output step's three
    input steps lie side by side in memory, so every row is a strided view, copied once by reshape."""
    n, _, channels = edged.shape
    step = edged.strides[1]
    view = as_strided(edged, shape=(n, outputs, 3 * channels), strides=(edged.strides[0], stride * step, edged.strides[2]))
    return view.reshape(n * outputs, 3 * channels)


@dataclass(frozen=True)
class _Network:
    """The 8 kHz network's weights, laid out for matrix products (convolutions as im2col)."""

    stft: numpy.ndarray  # (128 taps, 65 real + 65 imaginary)
    conv0: numpy.ndarray  # (3 taps x 65 bins, 128)
    bias0: numpy.ndarray
    conv1: numpy.ndarray  # (3 taps x 128, 64), stride 2
    bias1: numpy.ndarray
    conv2: numpy.ndarray  # (2 taps x 64, 64): stride 2 over 2 steps, so its first tap only reads padding
    bias2: numpy.ndarray
    conv3: numpy.ndarray  # (64, 128): one step, so only its middle tap reads anything
    bias3: numpy.ndarray
    input_gates: numpy.ndarray  # (128, 512), gates reordered to input, forget, output, cell
    hidden_gates: numpy.ndarray
    gate_bias: numpy.ndarray
    decoder: numpy.ndarray  # (128,)
    decoder_bias: float

    @classmethod
    def read(cls, path: Path) -> _Network:
        with numpy.load(path) as stored:
            weights = {name: stored[name].astype(numpy.float32) for name in stored.files}

        def taps(name: str, first: int = 0) -> numpy.ndarray:
            kernel = weights[f"encoder.{name}.reparam_conv.weight"][:, :, first:]  # (out, in, taps)
            return numpy.ascontiguousarray(kernel.transpose(2, 1, 0).reshape(-1, kernel.shape[0]))

        def gates(matrix: numpy.ndarray) -> numpy.ndarray:  # PyTorch's i, f, g, o to i, f, o, g
            i, f, g, o = numpy.split(matrix, 4, axis=0)
            return numpy.concatenate([i, f, o, g], axis=0)

        return cls(
            stft=numpy.ascontiguousarray(weights["stft.forward_basis_buffer"][:, 0, :].T),
            conv0=taps("0"), bias0=weights["encoder.0.reparam_conv.bias"],
            conv1=taps("1"), bias1=weights["encoder.1.reparam_conv.bias"],
            conv2=taps("2", first=1), bias2=weights["encoder.2.reparam_conv.bias"],
            conv3=numpy.ascontiguousarray(weights["encoder.3.reparam_conv.weight"][:, :, 1].T),
            bias3=weights["encoder.3.reparam_conv.bias"],
            input_gates=numpy.ascontiguousarray(gates(weights["decoder.rnn.weight_ih"]).T),
            hidden_gates=numpy.ascontiguousarray(gates(weights["decoder.rnn.weight_hh"]).T),
            gate_bias=gates(weights["decoder.rnn.bias_ih"] + weights["decoder.rnn.bias_hh"]),
            decoder=weights["decoder.decoder.2.weight"][0, :, 0].copy(),
            decoder_bias=float(weights["decoder.decoder.2.bias"][0]),
        )

    def encode(self, windows: numpy.ndarray) -> numpy.ndarray:
        """(n, 288) windows (32 samples of context, then the frame) to the LSTM's (n, 128) inputs."""
        n = len(windows)
        padded = numpy.concatenate([windows, windows[:, -2:-2 - _REFLECTED:-1]], axis=1)
        steps = as_strided(padded, shape=(n, _STFT_STEPS, _STFT_TAPS),
                           strides=(padded.strides[0], _STFT_HOP * padded.strides[1], padded.strides[1]))
        spectrum = steps.reshape(-1, _STFT_TAPS) @ self.stft
        magnitude = numpy.sqrt(numpy.square(spectrum[:, :_BINS]) + numpy.square(spectrum[:, _BINS:]))
        edged = numpy.zeros((n, _STFT_STEPS + 2, _BINS), numpy.float32)  # zero padding of one step each side
        edged[:, 1:-1] = magnitude.reshape(n, _STFT_STEPS, _BINS)
        layer0 = _relu(_taps(edged, _STFT_STEPS, 1) @ self.conv0 + self.bias0).reshape(n, _STFT_STEPS, -1)
        edged = numpy.zeros((n, _STFT_STEPS + 1, layer0.shape[2]), numpy.float32)  # steps -1..3
        edged[:, 1:] = layer0
        layer1 = _relu(_taps(edged, 2, 2) @ self.conv1 + self.bias1).reshape(n, -1)  # stride 2: steps -1..1, 1..3
        layer2 = _relu(layer1 @ self.conv2 + self.bias2)
        return _relu(layer2 @ self.conv3 + self.bias3)

    def step_rows(self, inputs: numpy.ndarray) -> numpy.ndarray:
        """(rows, steps, 128) encoder outputs, each row from a zero state, to (rows, steps) probabilities."""
        rows, steps, _ = inputs.shape
        projected = (inputs.reshape(rows * steps, -1) @ self.input_gates + self.gate_bias).reshape(rows, steps, -1)
        hidden = numpy.zeros((rows, _HIDDEN), numpy.float32)
        cell = numpy.zeros((rows, _HIDDEN), numpy.float32)
        outputs = numpy.empty((rows, steps, _HIDDEN), numpy.float32)
        for index in range(steps):
            gates = projected[:, index] + hidden @ self.hidden_gates
            opened = _sigmoid(gates[:, : 3 * _HIDDEN])
            cell = opened[:, _HIDDEN:2 * _HIDDEN] * cell + opened[:, :_HIDDEN] * numpy.tanh(gates[:, 3 * _HIDDEN:])
            hidden = opened[:, 2 * _HIDDEN:] * numpy.tanh(cell)
            outputs[:, index] = hidden
        return _sigmoid(_relu(outputs) @ self.decoder + self.decoder_bias)


class SpeechDetector:
    """Speech probability (0..1) of each 32 ms frame. Thread-safe: the weights are read once and never
    written; every call works on its own arrays."""

    def __init__(self, weights_path: Path = WEIGHTS_PATH, segment_frames: int = SEGMENT_FRAMES) -> None:
        self._weights_path = weights_path
        self.segment_frames = segment_frames
        self._network: _Network | None = None
        self._lock = threading.Lock()

    def load(self) -> _Network:
        """The weights, read once (a few ms): call it at start-up rather than on the first sample.

        It also keeps numpy's BLAS to one thread for the whole process: the products here are small,
        OpenBLAS's threads made them 1.7 times slower on 2 cores, and the service's concurrency comes
        from its requests, each on its own core."""
        if self._network is not None:
            return self._network
        with self._lock:
            if self._network is None:
                from threadpoolctl import threadpool_limits

                threadpool_limits(limits=1, user_api="blas")
                self._network = _Network.read(self._weights_path)
            return self._network

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
        network = self.load()
        # Frames as the rows see them: WARM_UP_FRAMES of silence before the first, the audio, silence after.
        total = WARM_UP_FRAMES + segments * size
        audio = numpy.zeros(_CONTEXT_SAMPLES + total * FRAME_SAMPLES, numpy.float32)
        start = _CONTEXT_SAMPLES + WARM_UP_FRAMES * FRAME_SAMPLES
        audio[start:start + frames * FRAME_SAMPLES] = samples[:frames * FRAME_SAMPLES]
        windows = as_strided(audio, shape=(total, _WINDOW), strides=(FRAME_SAMPLES * audio.strides[0], audio.strides[0]))
        rows = chosen[:, None] * size + numpy.arange(WARM_UP_FRAMES + size)  # frames of each row
        needed = numpy.zeros(total, bool)
        needed[rows.ravel()] = True
        encoded = numpy.zeros((total, _HIDDEN), numpy.float32)
        encoded[needed] = network.encode(windows[needed])
        probabilities = network.step_rows(encoded[rows])
        result.reshape(segments, size)[chosen] = probabilities[:, WARM_UP_FRAMES:]
        return result[:frames]


speech_detector = SpeechDetector()
