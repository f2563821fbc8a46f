"""QDQ ONNX -> TFLite int8, per the TFLite int8 quantization spec.

The int8 graph arrives as standard QuantizeLinear/DequantizeLinear ONNX placed by the
``tflite`` policy (:mod:`deploycomp.quant.policy`): s8 asymmetric activations on the
inputs *and outputs* of Conv/Gemm/MatMul/Add, s8 symmetric per-channel weights, int32
biases with ``scale = input_scale * weight_scale``. Here each pair maps onto tensors:

* a DequantizeLinear of a constant is folded: the consumer reads the int8 (or int32)
  data with its scales as a quantized TFLite tensor; float consumers get the values;
* a Conv/Gemm/MatMul/Add whose activation inputs are int8 and whose output (or the
  output of a Relu/Relu6 after it) goes only into a QuantizeLinear runs as an int8 op
  writing that Quantize's tensor, with the Relu fused;
* any other QuantizeLinear becomes a QUANTIZE op and any other use of a dequantized
  activation a DEQUANTIZE op (emitted lazily, only if a float op reads it), so float
  islands (SiLU, Sigmoid, Resize, layers kept float by the sensitivity analysis) stay
  exact and XNNPACK runs the whole graph as one mixed-precision subgraph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from deploycomp.backends.tflite.flatbuffer import Quantization
from deploycomp.backends.tflite.lowering import ACTIVATION, Lowering, lowers
from deploycomp.errors import UnsupportedError

__all__ = ["QuantizedOutput", "activation_quantization", "int8_output", "int8_source", "quantized_weight"]


def _params(lo: Lowering, node: ir.Node) -> tuple[np.ndarray, np.ndarray]:
    scale = lo.const(node.inputs[1])
    zero = lo.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    if scale is None:
        raise UnsupportedError(f"tflite: {node.op_type} with a non-constant scale")
    if zero is None:
        zero = np.zeros(scale.shape, np.uint8 if node.op_type == "QuantizeLinear" else np.int8)
    return scale.astype(np.float32), zero


def _per_tensor(scale: np.ndarray, zero: np.ndarray) -> Quantization:
    return Quantization((float(scale.reshape(-1)[0]),), (int(zero.reshape(-1)[0]),))


def activation_quantization(lo: Lowering, node: ir.Node) -> Quantization:
    scale, zero = _params(lo, node)
    if scale.size != 1:
        raise UnsupportedError("tflite: per-channel activation quantization")
    if zero.dtype != np.int8:
        raise UnsupportedError(f"tflite: {zero.dtype} activations (the TFLite int8 spec wants int8)")
    return _per_tensor(scale, zero)


@lowers("QuantizeLinear")
def lower_quantize(lo: Lowering, node: ir.Node) -> None:
    if node.outputs[0].name in lo.values:  # written by the int8 op before it
        return
    x = node.inputs[0]
    quant = activation_quantization(lo, node)
    perm = lo.perm(x)
    int8 = int8_source(lo, x)
    if int8 is not None:  # int8 -> int8: alias if the scale is the same, else requantize
        stored = lo.values[int8.name]
        if lo.w.quantization(stored.index) == quant:
            lo.alias(node.outputs[0], stored.index, stored.perm)
        else:
            lo.emit("QUANTIZE", [stored.index], [lo.output(node.outputs[0], stored.perm, np.int8, quant)])
        return
    source = lo.input(x)
    lo.emit("QUANTIZE", [source], [lo.output(node.outputs[0], perm, np.int8, quant)])


@lowers("DequantizeLinear")
def lower_dequantize(lo: Lowering, node: ir.Node) -> None:
    q = node.inputs[0]
    data = lo.const(q)
    if data is not None:  # a weight or a bias: fold to float for float readers
        scale, zero = _params(lo, node)
        axis = node.attributes.get_int("axis", 1)
        if scale.size > 1:
            shape = [1] * data.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        lo.folded[node.outputs[0].name] = ((data.astype(np.float64) - zero) * scale).astype(np.float32)
        lo.folded_quant[node.outputs[0].name] = (data, scale.reshape(-1), axis)
        return
    stored = lo.values.get(q.name)
    scale, zero = _params(lo, node)
    if (stored is not None and scale.size == 1 and lo.w.dtype(stored.index) == "int8"
            and lo.w.quantization(stored.index) == _per_tensor(scale, zero)):
        lo.dequantized[node.outputs[0].name] = q  # DEQUANTIZE only if a float op reads it
        return
    _dequantize_in_float(lo, node, scale, zero)


def _dequantize_in_float(lo: Lowering, node: ir.Node, scale: np.ndarray, zero: np.ndarray) -> None:
    """``(float(q) - zero) * scale`` as float ops, for integer data whose tensor does not carry
    this encoding (a u8 input, a u8 table's rows moved by a Transpose): a DEQUANTIZE reads the
    encoding stored with its input tensor, and an unencoded one gave zeros (a French
    spelling model's every output). Per tensor only."""
    if scale.size != 1 or zero.size != 1:
        raise UnsupportedError(f"tflite: DequantizeLinear '{node.name}' of a computed tensor with a scale per channel")
    q = node.inputs[0]
    perm = lo.perm(q)
    data = lo.input(q)
    floats = lo.temp(f"{node.outputs[0].name}/float", lo.w.shape(data), np.float32)
    lo.emit("CAST", [data], [floats])
    shifted = lo.temp(f"{node.outputs[0].name}/shifted", lo.w.shape(data), np.float32)
    encoding = _per_tensor(scale, zero)
    lo.emit("SUB", [floats, lo.scalar(float(encoding.zero_point[0]))], [shifted],
            lo.w.options("Sub", fusedActivationFunction=0))
    lo.emit("MUL", [shifted, lo.scalar(encoding.scale[0])], [lo.output(node.outputs[0], perm, np.float32)],
            lo.w.options("Mul", fusedActivationFunction=0))


def int8_source(lo: Lowering, value: ir.Value | None) -> ir.Value | None:
    """The int8 value behind ``value`` if it is a dequantized activation, else None."""
    if value is None or value.name not in lo.dequantized:
        return None
    return lo.dequantized[value.name]


def quantized_weight(lo: Lowering, value: ir.Value | None):
    """(int8 data in ONNX layout, per-channel scales, ONNX axis) of a dequantized weight."""
    if value is None:
        return None
    return lo.folded_quant.get(value.name)


@dataclass
class QuantizedOutput:
    quantize: ir.Node
    activation: str
    skipped: list[ir.Node]
    value: ir.Value
    """The float tensor the int8 result stands for (read by other, float, consumers too)."""


def int8_output(lo: Lowering, node: ir.Node) -> QuantizedOutput | None:
    """The QuantizeLinear that an int8 version of ``node`` would write, with a fusable Relu.

    Other consumers of the (post-Relu) output may read it in float: they get a DEQUANTIZE.
    """
    value = node.outputs[0]
    activation, skipped = "NONE", []
    for _ in range(2):
        if value.name in lo.graph_outputs:
            return None
        uses = list(value.uses())
        quantizers = [c for c, _ in uses if c.op_type == "QuantizeLinear"]
        if len(quantizers) == 1:
            return QuantizedOutput(quantizers[0], activation, skipped, value)
        if len(uses) != 1:
            return None
        consumer = uses[0][0]
        fused = lo.activation_of(consumer)
        if fused is None or activation != "NONE":
            return None
        activation = fused
        skipped.append(consumer)
        value = consumer.outputs[0]
    return None


def write_int8(lo: Lowering, node: ir.Node, out: QuantizedOutput, perm) -> int:
    """Create the int8 output tensor (the QuantizeLinear's value) and mark the fused nodes done."""
    quant = activation_quantization(lo, out.quantize)
    value = out.quantize.outputs[0]
    index = lo.output(value, perm, np.int8, quant)
    for skipped in out.skipped:
        lo.skip.add(id(skipped))
    lo.dequantized[out.value.name] = value  # float readers of the result, if any, dequantize it
    return index


def bias_int32(lo: Lowering, bias: ir.Value | None, input_scale: float, weight_scales: np.ndarray, n: int) -> int:
    scales = (np.float64(input_scale) * weight_scales.astype(np.float64)).reshape(-1)
    scales = np.broadcast_to(scales, (n,))
    folded = lo.folded_quant.get(bias.name) if bias is not None else None
    if folded is not None and folded[0].dtype == np.int32:
        data = folded[0].reshape(-1)
    else:
        values = lo.const(bias) if bias is not None else np.zeros(n, np.float32)
        if values is None:
            raise UnsupportedError("tflite: a non-constant bias")
        data = np.clip(np.round(values.reshape(-1) / scales), -(2**31), 2**31 - 1).astype(np.int32)
    return lo.w.constant("bias/i32", data, Quantization(tuple(float(s) for s in scales), (0,) * n, 0))


def constant_int8(lo: Lowering, value: ir.Value, rank: int, perm, partner_scale: float | None = None) -> int:
    """A float constant operand of an int8 ADD/MUL (an affine scale or shift), quantized
    symmetrically per tensor and broadcast into the stored layout. An addend is given at
    least its partner's scale: XNNPACK's int8 ADD refuses operands whose scales are orders
    of magnitude apart, and a shift smaller than one step of the other input is noise."""
    data = lo.const(value).astype(np.float32)
    data = np.transpose(data.reshape((1,) * (rank - data.ndim) + data.shape), perm)
    scale = max(float(np.abs(data).max()) / 127, partner_scale or 0.0, 1e-8)
    q = np.clip(np.round(data / scale), -127, 127).astype(np.int8)
    return lo.w.constant(f"{value.name}/i8", q, Quantization((scale,), (0,)))


def weight_tensor(lo: Lowering, name: str, data: np.ndarray, scales: np.ndarray, tflite_axis: int) -> int:
    n = data.shape[tflite_axis]
    scales = np.broadcast_to(scales.reshape(-1), (n,))
    return lo.w.constant(f"{name}/i8", data.astype(np.int8),
                         Quantization(tuple(float(s) for s in scales), (0,) * n, tflite_axis))


def fused(activation: str) -> int:
    return ACTIVATION[activation]
