"""Build a tiny model from ONNX text, optimize it, and check it both ways.

Structural: the op histogram after the ``default`` pipeline. Numeric: ONNX Runtime
outputs before and after, on the given feeds, must agree.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
from onnx import numpy_helper

from deploycomp.ir import load_model, save_model
from deploycomp.passes import build_pipeline, run_passes


def model_from_text(text: str, check: bool = True, **weights: np.ndarray) -> onnx.ModelProto:
    """ONNX text; names in ``weights`` are declared as inputs there and become initializers.
    ``check``: through ONNX's full check (not where its shape inference is what is wrong)."""
    model = onnx.parser.parse_model(text)
    keep = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in weights.items())
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def speech_like(n: int = 4000, seed: int = 0) -> np.ndarray:
    """A chirp over 200-1100 Hz at 16 kHz with a little noise: a spectrum with something in it."""
    t = np.arange(n) / 16000
    noise = np.random.default_rng(seed).standard_normal(n)
    return (np.sin(2 * np.pi * (200 + 900 * t) * t) + 0.05 * noise).astype(np.float32)


def _run(path: Path, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def optimize_and_compare(tmp_path: Path, model: onnx.ModelProto, feeds: dict, rtol=1e-5, atol=1e-5,
                         pipeline: str = "default") -> Counter:
    src = tmp_path / "before.onnx"
    onnx.save(model, src)
    shapes = {k: v.shape for k, v in feeds.items()}
    optimized, _ = run_passes(load_model(src).model, build_pipeline(pipeline, shapes))
    dst = tmp_path / "after.onnx"
    save_model(optimized, dst)
    for before, after in zip(_run(src, feeds), _run(dst, feeds)):
        np.testing.assert_allclose(after, before, rtol=rtol, atol=atol)
    return Counter(n.op_type for n in optimized.graph)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def ml_rewritten(path, x: np.ndarray) -> tuple[list, list, set[str]]:
    """ONNX Runtime's outputs on an ``ai.onnx.ml`` model and on its core-op rewrite (input
    ``x``), and the rewrite's op types."""
    import onnx_ir as ir

    from deploycomp.passes.ml_ops import MLOpsToCorePass

    proto = onnx.load(path)
    want = ort.InferenceSession(proto.SerializeToString()).run(None, {"x": x})
    model = ir.serde.deserialize_model(proto)
    assert MLOpsToCorePass()(model).modified
    rewritten = ir.serde.serialize_model(model)
    got = ort.InferenceSession(rewritten.SerializeToString()).run(None, {"x": x})
    return want, got, {n.op_type for n in rewritten.graph.node}


def builds_at_fp32_and_int8(tmp_path, path, target: str, spec: str, samples: list[dict]) -> None:
    """A classifier built for ``target`` at fp32 (validated on the first 6 samples, its
    labels ONNX Runtime's) and at int8 (calibrated on the rest) meets its budget both times."""
    import deploycomp

    runner = deploycomp.build(path, tmp_path / "fp32", target=target, inputs=[spec], validation_data=samples[:6])
    assert runner.manifest["validation"]["ok"]
    want = ort.InferenceSession(str(path)).run(None, samples[0])
    np.testing.assert_array_equal(runner.run(samples[0])["label"], want[0])
    int8 = deploycomp.build(path, tmp_path / "int8", target=target, precision="int8", inputs=[spec],
                            calibration=samples[6:], validation_data=samples[:6])
    assert int8.manifest["validation"]["ok"]


def calibration_reader(samples):
    """An ``onnxruntime.quantization`` ``CalibrationDataReader`` over ``samples`` (``{input:
    array}`` dicts), read once."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(samples)

        def get_next(self):
            return next(self.items, None)

    return Reader()
