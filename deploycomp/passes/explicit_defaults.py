"""Defaults written out where a reader of the model takes another one.

Both are the same model to every runtime that follows the ONNX schema; written out, the
readers that do not follow it read it right:

* ``STFT``'s ``onesided`` (schema default 1): ONNX 1.23's shape inference takes an absent
  one as 0 and annotated a Whisper log-mel front-end's one-sided spectrum (``n_fft / 2 +
  1`` bins, ``[1, 3001, 201, 2]`` in ONNX Runtime) as ``[1, 3001, 400, 2]``; the mel filter
  bank's MatMul after it no longer type-checked, and ONNX Runtime refused the optimized
  model (fixed upstream in onnx/onnx#7731). Runs before the first shape inference.
* ``STFT``'s ``frame_length`` (default: the window's length): OpenVINO 2026.4's ONNX
  frontend cannot convert an STFT without it (three ASR front-ends of one package were
  refused on ``host``); added where the window's length is known. (An STFT with a
  constant window becomes a strided Conv later, :mod:`deploycomp.passes.spectral`; one
  whose window is computed stays an STFT.)
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from deploycomp.ir import add_initializer
from deploycomp.passes.op_rewrite import OpRewritePass

__all__ = ["ExplicitDefaultsPass"]


def _stft(node: ir.Node) -> bool:
    modified = False
    if "onesided" not in node.attributes:
        node.attributes["onesided"] = ir.AttrInt64("onesided", 1)
        modified = True
    inputs = list(node.inputs)
    window = inputs[2] if len(inputs) > 2 else None
    if (len(inputs) < 4 or inputs[3] is None) and window is not None and window.shape is not None \
            and len(window.shape) == 1 and isinstance(window.shape[0], int):
        length = add_initializer(node.graph, f"{node.name or 'stft'}_frame_length",
                                 np.array(window.shape[0], np.int64))
        node.resize_inputs(4)
        node.replace_input_with(3, length)
        modified = True
    return modified


class ExplicitDefaultsPass(OpRewritePass):
    op_types = frozenset({"STFT"})

    def rewrite(self, node: ir.Node, model: ir.Model) -> bool:
        return _stft(node)
