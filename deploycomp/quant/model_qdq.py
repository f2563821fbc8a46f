"""A model that arrives quantized: its own QuantizeLinear/DequantizeLinear, in a backend's encoding.

Models are shipped already int8 (``onnxruntime.quantization`` writes QDQ: u8 asymmetric
activations, s8 per-channel weights, int32 biases; Smart Turn's CPU build is one). Their
encodings are the model: the reference runs them, an int8 build keeps them instead of
calibrating again (there is nothing to calibrate against but the model itself), and a
float build runs them too. What a backend cannot read is re-encoded here:

* **u8 -> s8, exact** (TFLite's int8 spec, TensorRT): ``q8 = q - 128`` with ``zp8 = zp -
  128`` is the same set of real values, step for step.
* **asymmetric -> symmetric** (TensorRT's parser takes zero points of 0 only): the scale
  grows to cover the same range around 0, ``max(|lo|, |hi|) / 127``, a coarser step for a
  one-sided range (up to 2x): not exact, counted, and validation judges it.
* **int32 bias DequantizeLinear -> float constant, exact** (TensorRT's parser rejects it):
  ``(q - zp) * scale`` is what the DequantizeLinear computes.

Each change is recorded (:class:`ConformQDQPass` ``changes``) and reaches the manifest.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from deploycomp.passes.unused_initializers import RemoveUnusedInitializersPass
from deploycomp.quant.constants import add_initializer, constant
from deploycomp.quant.policy import QDQPolicy

__all__ = ["ConformQDQPass", "activation_quantizers", "model_quantization"]

_QDQ = ("QuantizeLinear", "DequantizeLinear")


def activation_quantizers(model: ir.Model) -> list[ir.Node]:
    """The model's QuantizeLinear nodes of computed tensors (its activation encodings)."""
    return [n for n in model.graph if n.op_type == "QuantizeLinear" and n.domain in ("", "ai.onnx")
            and constant(n.inputs[0]) is None]


def model_quantization(model: ir.Model, compute_ops: tuple[str, ...]) -> dict | None:
    """What int8 the model carries of its own (None: none): activation encodings by zero
    point type and whether all are symmetric (s8, zero point 0), dequantized constants
    (weights, biases) by type, and which compute layers read a dequantized input (int8) or
    not (float)."""
    quantizers = activation_quantizers(model)
    if not quantizers:
        return None
    weights = Counter(str(constant(n.inputs[0]).dtype) for n in model.graph
                      if n.op_type == "DequantizeLinear" and constant(n.inputs[0]) is not None)
    zero_points = [constant(n.inputs[2]) if len(n.inputs) > 2 else None for n in quantizers]
    dtypes = Counter(str(zp.dtype) if zp is not None else "uint8" for zp in zero_points)
    int8, floats = [], []
    for node in model.graph:
        if node.op_type in compute_ops:
            source = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
            (int8 if source is not None and source.op_type == "DequantizeLinear" else floats).append(node.name)
    return {"activation_encodings": len(quantizers), "activation_dtypes": dict(dtypes),
            "symmetric": all(zp is not None and zp.dtype == np.int8 and not zp.any() for zp in zero_points),
            "dequantized_constants": dict(weights), "int8_layers": int8, "float_layers": floats}


def _params(node: ir.Node) -> tuple[np.ndarray, np.ndarray] | None:
    scale = constant(node.inputs[1]) if len(node.inputs) > 1 else None
    if scale is None:
        return None
    zp = constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else np.zeros_like(scale, np.uint8)
    return (scale, zp) if zp is not None else None


def _clamp_input(graph: ir.Graph, quant: ir.Node, lo: float, hi: float) -> None:
    """``quant`` reads its input through ``Clip(lo, hi)``: the range its old encoding clamped to."""
    x = quant.inputs[0]
    base = quant.name or x.name
    clip = ir.node("Clip", [x, add_initializer(graph, f"{base}__clip_lo", np.asarray(lo, np.float32)),
                            add_initializer(graph, f"{base}__clip_hi", np.asarray(hi, np.float32))],
                   name=f"{base}__clip")
    clip.outputs[0].name = f"{base}__clipped"
    clip.outputs[0].type, clip.outputs[0].shape = x.type, x.shape
    graph.insert_before(quant, clip)
    quant.replace_input_with(0, clip.outputs[0])


@dataclass
class ConformQDQPass(ir.passes.InPlacePass):
    """Re-encode the model's own QDQ as ``policy`` needs it (see the module docstring)."""

    policy: QDQPolicy
    changes: Counter = field(default_factory=Counter)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        signed = self.policy.activation_dtype == "int8"
        for quant in activation_quantizers(model):
            params = _params(quant)
            if params is None:
                continue
            scale, zp = params
            readers = [use.node for use in quant.outputs[0].uses() if use.node.op_type == "DequantizeLinear"]
            if len(readers) != len(quant.outputs[0].uses()):
                continue  # an integer tensor read by something else: leave it as the model wrote it
            new = None
            if self.policy.activation_symmetric and np.any(zp.astype(np.int64) - (128 if zp.dtype == np.uint8 else 0)):
                info = np.iinfo(zp.dtype)
                lo = (info.min - zp.astype(np.int64)) * scale.astype(np.float64)
                hi = (info.max - zp.astype(np.int64)) * scale.astype(np.float64)
                new = ((np.maximum(np.abs(lo), np.abs(hi)) / 127).astype(np.float32), np.zeros(zp.shape, np.int8))
                self.changes["activation encodings made symmetric (a coarser step)"] += 1
                if zp.size == 1:  # the wider range must not let through what the old one clamped: a ReLU
                    # folded into the conv before it lives on only as a zero point at the bottom of
                    # the range (an ORT-quantized ArcFace ResNet50 on TensorRT: cosine 0.02 without)
                    _clamp_input(graph, quant, float(lo.reshape(-1)[0]), float(hi.reshape(-1)[0]))
                    self.changes["activation clamps kept as a Clip before them (exact)"] += 1
            elif signed and zp.dtype == np.uint8:
                new = (scale, (zp.astype(np.int16) - 128).astype(np.int8))
                self.changes["activation encodings moved from u8 to s8 (exact)"] += 1
            elif self.policy.activation_symmetric and zp.dtype == np.uint8:  # zp 128: symmetric already
                new = (scale, np.zeros(zp.shape, np.int8))
                self.changes["activation encodings moved from u8 to s8 (exact)"] += 1
            if new is None:
                continue
            base = quant.name or quant.outputs[0].name
            sv = add_initializer(graph, f"{base}__scale_{self.policy.name}", np.asarray(new[0], np.float32))
            zv = add_initializer(graph, f"{base}__zp_{self.policy.name}", np.asarray(new[1]))
            for node in (quant, *readers):
                if len(node.inputs) < 3:
                    node.resize_inputs(3)
                node.replace_input_with(1, sv)
                node.replace_input_with(2, zv)
            quant.outputs[0].type = ir.TensorType(ir.DataType.INT8)
        for node in list(graph):
            if node.op_type != "DequantizeLinear" or constant(node.inputs[0]) is None:
                continue
            q = constant(node.inputs[0])
            params = _params(node)
            if params is None:
                continue
            scale, zp = params
            axis = int(node.attributes["axis"].value) if "axis" in node.attributes else 1
            if q.dtype == np.int32 and not self.policy.int32_bias:
                self._fold(graph, node, q, scale, zp, axis)
                self.changes["int32 biases folded to float (exact)"] += 1
            elif q.dtype == np.uint8 and signed:
                shifted = (q.astype(np.int16) - 128).astype(np.int8)
                node.replace_input_with(0, add_initializer(graph, f"{node.name}__s8", shifted))
                node.replace_input_with(2, add_initializer(graph, f"{node.name}__zp_s8",
                                                           (zp.astype(np.int16) - 128).astype(np.int8)))
                self.changes["u8 constants moved to s8 (exact)"] += 1
        if self.changes:
            RemoveUnusedInitializersPass()(model)  # the encodings and constants replaced above
        return ir.passes.PassResult(model, bool(self.changes))

    @staticmethod
    def _fold(graph: ir.Graph, node: ir.Node, q: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int) -> None:
        """The DequantizeLinear's output as a float constant its readers read instead."""
        shape = [1] * q.ndim
        if scale.size > 1 and q.ndim:
            shape[axis % q.ndim] = -1
        value = (q.astype(np.float64) - zp.reshape(shape).astype(np.float64)) * scale.reshape(shape).astype(np.float64)
        folded = add_initializer(graph, f"{node.outputs[0].name}__float", value.astype(np.float32))
        for use in list(node.outputs[0].uses()):
            use.node.replace_input_with(use.idx, folded)
        for i, out in enumerate(graph.outputs):
            if out is node.outputs[0]:
                graph.outputs[i] = folded
        graph.remove(node, safe=True)
