"""STFT's defaults written out: the same model to ONNX Runtime, readable by ONNX's shape
inference and by OpenVINO's frontend (an ASR package's log-mel front-ends)."""

from __future__ import annotations

import numpy as np

import deploycomp
import onnx

from tests.passes._harness import model_from_text, optimize_and_compare, speech_like

# a Whisper-style front end: |STFT|^2 (one-sided: 201 bins of a 400-point window) through
# a mel filter bank, log; no onesided attribute, no frame_length input, as exported
TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 4000] x, int64 hop, float[400] window, float[201, 8] mel) => (float[1, 24, 8] y) {
    spectrum = STFT(x, hop, window)
    power = ReduceSumSquare <axes = [-1], keepdims = 0> (spectrum)
    bands = MatMul(power, mel)
    floor = Constant <value = float {1e-10}> ()
    clipped = Max(bands, floor)
    y = Log(clipped)
}
"""


def _model():
    """Not through ONNX's checker: its full check runs the shape inference that fails here."""
    return model_from_text(TEXT, check=False, hop=np.array(160, np.int64), window=np.hanning(400).astype(np.float32),
                           mel=np.random.default_rng(0).random((201, 8)).astype(np.float32))


def _speech_like(seed: int = 0) -> np.ndarray:
    return speech_like(4000, seed)[None]


def test_a_one_sided_stft_keeps_its_shape_through_the_passes(tmp_path):
    """ONNX 1.23's shape inference read the absent ``onesided`` as 0 (400 bins where ONNX
    Runtime computes 201); the MatMul after it failed to type-check and ONNX Runtime
    refused the optimized model."""
    ops = optimize_and_compare(tmp_path, _model(), {"x": _speech_like()}, rtol=1e-4, atol=1e-4)
    assert ops["MatMul"] == 1  # the mel bank, on the 201 bins


def test_an_stft_front_end_builds_for_openvino(tmp_path):
    """OpenVINO's ONNX frontend cannot convert an STFT without ``frame_length`` (the pass
    adds the window's length; with a constant window the STFT becomes a strided Conv,
    :mod:`deploycomp.passes.spectral`): the host build holds at fp32."""
    onnx.save(_model(), tmp_path / "frontend.onnx")
    samples = [{"x": _speech_like(seed=s)} for s in range(3)]
    runner = deploycomp.build(tmp_path / "frontend.onnx", tmp_path / "out", target="host", validation_data=samples)
    assert runner.manifest["validation"]["ok"]
    assert runner.manifest["validation"]["outputs"]["y"]["cosine"] >= 0.9999
