"""ONNX ops unseen models use, lowered to TFLite (or refused by name), against ONNX Runtime
at fp32, fp16 and int8."""

from __future__ import annotations

import numpy as np
import pytest

from tests.backends.test_tflite_outputs import G, PRECISIONS, check, w
from tests.passes._harness import model_from_text


@pytest.mark.parametrize("precision", PRECISIONS)
def test_clip_with_tensor_bounds(tmp_path, precision):
    """A log-mel spectrogram floored at its own maximum minus 80 dB: Clip's min is a tensor."""
    text = f"""{G} g (float[1, 1, 20, 16] x, float[16, 16] m) => (float[1, 1, 20, 16] y)
    {{ s = MatMul (x, m)
       mx = ReduceMax <keepdims = 0> (s)
       top = Constant <value_float = 8.0> ()
       floor = Sub (mx, top)
       y = Clip (s, floor, ) }}"""
    check(tmp_path, model_from_text(text, m=w(16, 16, scale=2.0)), {"x": (1, 1, 20, 16)}, precision)
