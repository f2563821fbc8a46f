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


def model_from_text(text: str, **weights: np.ndarray) -> onnx.ModelProto:
    """ONNX text; names in ``weights`` are declared as inputs there and become initializers."""
    model = onnx.parser.parse_model(text)
    keep = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in weights.items())
    onnx.checker.check_model(model, full_check=True)
    return model


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
