"""Write `precall/data/silero_vad_8k.npz`: the weights of the 8 kHz branch of Silero VAD's published
ONNX model (`precall/data/silero_vad.onnx`, MIT, as it ships in the `silero-vad` 6.2.3 wheel), which
`precall/vad.py` runs with numpy.

Run once, by a maintainer, when the model changes; it needs the `onnx` package, which neither the
service nor its tests install (`.venv/bin/pip install onnx==1.17.0`):

    .venv/bin/python scripts/extract_vad_weights.py

tests/test_vad.py then proves the numpy port gives the published model's probabilities (onnxruntime
runs the .onnx file there).
"""

from __future__ import annotations

from pathlib import Path

import numpy
import onnx
from onnx import numpy_helper

DATA = Path(__file__).resolve().parent.parent / "precall" / "data"
# The model's graph: `If(sr == 16000)`; its else branch is the 8 kHz network, whose weights are the
# Constant nodes named after the PyTorch module they came from.
WANTED = ("stft.forward_basis_buffer", "encoder.0.reparam_conv.weight", "encoder.0.reparam_conv.bias",
          "encoder.1.reparam_conv.weight", "encoder.1.reparam_conv.bias", "encoder.2.reparam_conv.weight",
          "encoder.2.reparam_conv.bias", "encoder.3.reparam_conv.weight", "encoder.3.reparam_conv.bias",
          "decoder.rnn.weight_ih", "decoder.rnn.weight_hh", "decoder.rnn.bias_ih", "decoder.rnn.bias_hh",
          "decoder.decoder.2.weight", "decoder.decoder.2.bias")


def eight_khz_branch(model: onnx.ModelProto) -> onnx.GraphProto:
    (switch,) = [node for node in model.graph.node if node.op_type == "If"]
    return next(attribute.g for attribute in switch.attribute if attribute.name == "else_branch")


def weights(branch: onnx.GraphProto) -> dict[str, numpy.ndarray]:
    found = {}
    for node in branch.node:
        name = node.output[0].rsplit("__", 1)[-1]
        if node.op_type == "Constant" and name in WANTED:
            found[name] = numpy_helper.to_array(node.attribute[0].t)
    missing = set(WANTED) - set(found)
    if missing:
        raise SystemExit(f"not in the model's 8 kHz branch: {sorted(missing)}")
    return found


def main() -> None:
    model = onnx.load(str(DATA / "silero_vad.onnx"))
    numpy.savez(DATA / "silero_vad_8k.npz", **weights(eight_khz_branch(model)))
    print(f"wrote {DATA / 'silero_vad_8k.npz'}")


if __name__ == "__main__":
    main()
