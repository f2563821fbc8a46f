"""A real signal's DFT as a MatMul with its Fourier basis, an STFT as a strided Conv:
the same spectra as ONNX Runtime's Fourier ops, on every backend."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import deploycomp
from deploycomp.passes.spectral import fourier_basis
from tests.passes._harness import model_from_text, optimize_and_compare, speech_like

# Kaldi-style framing, as an ASR package's wespeaker front-end writes it: frames [1, T, 400, 1],
# a 512-point one-sided DFT (zero-padded), power, mel bank, log
DFT_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 24, 400, 1] frames, int64 n_fft, float[257, 8] mel) => (float[1, 24, 8] y) {
    spectrum = DFT <axis = -2, onesided = 1> (frames, n_fft)
    power = ReduceSumSquare <axes = [-1], keepdims = 0> (spectrum)
    bands = MatMul(power, mel)
    floor = Constant <value = float {1e-10}> ()
    clipped = Max(bands, floor)
    y = Log(clipped)
}
"""

# Whisper-style: STFT of the waveform (hop 160, a 400-sample Hann window, one-sided)
STFT_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 4000] x, int64 hop, float[400] window, int64 frame_length, float[201, 8] mel) => (float[1, 24, 8] y) {
    spectrum = STFT <onesided = 1> (x, hop, window, frame_length)
    power = ReduceSumSquare <axes = [-1], keepdims = 0> (spectrum)
    bands = MatMul(power, mel)
    floor = Constant <value = float {1e-10}> ()
    clipped = Max(bands, floor)
    y = Log(clipped)
}
"""


def _dft_model() -> onnx.ModelProto:
    mel = np.random.default_rng(0).random((257, 8)).astype(np.float32)
    return model_from_text(DFT_TEXT, check=False, n_fft=np.array(512, np.int64), mel=mel)


def _stft_model() -> onnx.ModelProto:
    mel = np.random.default_rng(0).random((201, 8)).astype(np.float32)
    window = np.hanning(400).astype(np.float32)
    return model_from_text(STFT_TEXT, check=False, hop=np.array(160, np.int64), window=window,
                           frame_length=np.array(400, np.int64), mel=mel)


def _frames(seed: int = 0) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(speech_like(4080, seed), 400)[::160][None, :24, :, None].copy()


@pytest.mark.parametrize("length, onesided", [(400, True), (512, True), (256, False)])
def test_the_basis_is_numpys_fft(length, onesided):
    """Zero-padded past the signal (512), truncated before its end (256), one- or two-sided."""
    x = np.random.default_rng(1).standard_normal((3, 400))
    got = (x @ fourier_basis(400, length, onesided)).reshape(3, -1, 2)
    want = np.fft.rfft(x, n=length) if onesided else np.fft.fft(x, n=length)
    np.testing.assert_allclose(got[..., 0] + 1j * got[..., 1], want, atol=1e-9)


@pytest.mark.parametrize("length", [16, 12, 20])
@pytest.mark.parametrize("inverse", [False, True])
def test_the_complex_basis_is_numpys_fft(length, inverse):
    """A complex signal [n, 2] flattened (real and imaginary interleaved), forward and
    inverse (scaled by 1 / L), zero-padded past the signal and truncated before its end."""
    from deploycomp.passes.spectral import complex_basis

    z = np.random.default_rng(2).standard_normal((3, 16)) + 1j * np.random.default_rng(3).standard_normal((3, 16))
    flat = np.stack([z.real, z.imag], -1).reshape(3, -1)
    got = (flat @ complex_basis(16, length, inverse)).reshape(3, -1, 2)
    want = np.fft.ifft(z, n=length) if inverse else np.fft.fft(z, n=length)
    np.testing.assert_allclose(got[..., 0] + 1j * got[..., 1], want, atol=1e-9)


@pytest.mark.parametrize("channels, inverse", [(2, False), (2, True), (1, True)])
def test_a_complex_or_inverse_dft_becomes_a_matmul_and_builds_on_host(tmp_path, channels, inverse):
    """OpenVINO 2026.4 reads an opset-20 DFT's axis input as 1 whatever it holds: a probe's
    inverse transform over axis -2 validated to cosine -0.07 (and only a real forward one
    had been rewritten). A complex or inverse transform over the last signal axis is the
    same product with a 2N x 2L basis."""
    text = f"""
    <ir_version: 10, opset_import: ["" : 20]>
    g (float[2, 8, 64, {channels}] x) => (float[2, 8, 64, 2] y) {{
        axis = Constant <value = int64 {{-2}}> ()
        y = DFT <inverse = {int(inverse)}> (x, , axis)
    }}
    """
    model = model_from_text(text)
    x = np.random.default_rng(4).standard_normal((2, 8, 64, channels)).astype(np.float32)
    ops = optimize_and_compare(tmp_path, model, {"x": x}, rtol=1e-4, atol=1e-5)
    assert "DFT" not in ops and ops["MatMul"] == 1
    onnx.save(model, tmp_path / "dft.onnx")
    runner = deploycomp.build(tmp_path / "dft.onnx", tmp_path / "out", target="host", precision="fp32",
                              validation_data=[{"x": x}])
    assert runner.manifest["validation"]["outputs"]["y"]["cosine"] >= 0.99999


def test_a_real_dft_becomes_a_matmul_with_the_same_outputs(tmp_path):
    ops = optimize_and_compare(tmp_path, _dft_model(), {"frames": _frames()}, rtol=1e-4, atol=1e-4)
    assert "DFT" not in ops and ops["MatMul"] == 2


@pytest.mark.parametrize("target", ["host", "jetson-orin-nano", "android-arm64"])
def test_a_framed_dft_front_end_builds_on_every_backend(tmp_path, target):
    """OpenVINO's frontend kept the real input's trailing 1 (and crashed converting the
    model), TensorRT's parser has no DFT, TFLite no Fourier op at all."""
    onnx.save(_dft_model(), tmp_path / "frontend.onnx")
    runner = deploycomp.build(tmp_path / "frontend.onnx", tmp_path / "out", target=target,
                              validation_data=[{"frames": _frames(s)} for s in range(3)])
    assert runner.manifest["validation"]["outputs"]["y"]["cosine"] >= 0.9999


@pytest.mark.parametrize("target", ["host", "android-arm64"])
def test_an_stft_becomes_a_strided_conv_and_builds(tmp_path, target):
    """A Conv of the windowed basis with the hop as its stride: TFLite has no Fourier op,
    and OpenVINO's CPU plugin ran a 30 s Whisper STFT 28x slower than ONNX Runtime."""
    ops = optimize_and_compare(tmp_path, _stft_model(), {"x": speech_like(4000)[None]}, rtol=1e-4, atol=1e-4)
    assert "STFT" not in ops and ops["Conv"] == 1
    onnx.save(_stft_model(), tmp_path / "frontend.onnx")
    runner = deploycomp.build(tmp_path / "frontend.onnx", tmp_path / "out", target=target,
                              validation_data=[{"x": speech_like(4000, s)[None]} for s in range(3)])
    assert runner.manifest["validation"]["outputs"]["y"]["cosine"] >= 0.9999


def test_a_kaldi_pre_emphasis_pad_builds_for_tflite(tmp_path):
    """``Pad(frames, [0, 0, 1, 0, 0, -1], mode=edge)`` shifts each frame by one sample:
    TFLite has neither negative pads nor an edge mode; a crop and the first sample
    concatenated in front are the same tensor."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 24, 400] frames, int64[6] pads, float k) => (float[1, 24, 400] y) {
        shifted = Pad <mode = "edge"> (frames, pads)
        scaled = Mul(shifted, k)
        y = Sub(frames, scaled)
    }
    """
    model = model_from_text(text, pads=np.array([0, 0, 1, 0, 0, -1], np.int64), k=np.array(0.97, np.float32))
    frames = _frames()[..., 0]
    ops = optimize_and_compare(tmp_path, model, {"frames": frames}, pipeline="tflite")
    assert "Pad" not in ops and ops["Concat"] == 1
    onnx.save(model, tmp_path / "emphasis.onnx")
    runner = deploycomp.build(tmp_path / "emphasis.onnx", tmp_path / "out", target="android-arm64",
                              validation_data=[{"frames": _frames(s)[..., 0]} for s in range(3)])
    assert runner.manifest["validation"]["outputs"]["y"]["cosine"] >= 0.9999
