"""Convolution, pooling, resize, matmul, softmax and normalization -> TFLite.

Padding is reproduced exactly: TFLite knows only SAME (extra pixel at the end) and
VALID, so ONNX pads that are neither (e.g. 3x3 stride-2 with pads 1 on even inputs,
which pads at the start) get an explicit PAD before a VALID op. XNNPACK fuses that PAD
into the convolution, so it costs nothing at run time.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from deploycomp.backends.tflite.layout import NCHW_TO_NHWC, identity
from deploycomp.backends.tflite import quantized
from deploycomp.backends.tflite.lowering import Lowering, lowers
from deploycomp.errors import UnsupportedError
from deploycomp.quant.dynamic import is_dynamic

SAME, VALID = 0, 1


def _spatial_pads(node: ir.Node, in_hw, kernel, strides, dilations) -> list[tuple[int, int]]:
    """Per spatial dim (begin, end) padding, from ``pads`` or ``auto_pad``."""
    auto = node.attributes.get_string("auto_pad", "NOTSET")
    n = len(in_hw)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for d, k, s, dl in zip(in_hw, kernel, strides, dilations):
            total = max((math.ceil(d / s) - 1) * s + (k - 1) * dl + 1 - d, 0)
            small = total // 2
            out.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
        return out
    if auto == "VALID":
        return [(0, 0)] * n
    pads = node.attributes.get_ints("pads", [0] * 2 * n)
    return [(pads[i], pads[i + n]) for i in range(n)]


def _padding(in_hw, kernel, strides, dilations, pads) -> int | None:
    """SAME or VALID when TFLite's rule gives exactly ``pads``; None if a PAD op is needed."""
    if all(p == (0, 0) for p in pads):
        return VALID
    for d, k, s, dl, (b, e) in zip(in_hw, kernel, strides, dilations, pads):
        total = max((math.ceil(d / s) - 1) * s + (k - 1) * dl + 1 - d, 0)
        if (b, e) != (total // 2, total - total // 2):
            return None
        if (d + b + e - (k - 1) * dl - 1) // s + 1 != math.ceil(d / s):
            return None
    return SAME


def _explicit_pad(lo: Lowering, source: int, pads, name: str, value: float = 0.0) -> int:
    """PAD in NHWC; int8 tensors pad with their zero point, i.e. with a real 0."""
    n, h, w, c = lo.w.shape(source)
    (pt, pb), (pl, pr) = pads
    out = lo.w.tensor(f"{name}/pad", (n, h + pt + pb, w + pl + pr, c), lo.w.dtype(source), lo.w.quantization(source))
    paddings = lo.constant("pad/paddings", np.asarray([[0, 0], [pt, pb], [pl, pr], [0, 0]], np.int32))
    if value == 0.0:
        lo.emit("PAD", [source, paddings], [out])
    elif lo.w.dtype(source) == "int8":  # max-pool padding: the lowest int8 value
        lo.emit("PADV2", [source, paddings, lo.w.constant("pad/min", np.asarray(-128, np.int8),
                                                           lo.w.quantization(source))], [out])
    else:
        lo.emit("PADV2", [source, paddings, lo.scalar(value)], [out])
    return out


def _conv_geometry(lo: Lowering, node: ir.Node, kernel):
    """(in_hw, strides, dilations, pads) in 2-D; a 1-D op's are those of the 2-D op over a
    unit height, a 3-D op's with a kernel 1 deep (stride 1, no padding in depth) those of
    the 2-D op over each frame (see :meth:`Lowering.nhwc_input`)."""
    x = node.inputs[0]
    in_hw = lo.shape(x)[2:]
    n = len(in_hw)
    if n not in (1, 2, 3) or len(kernel) != n:
        raise UnsupportedError(f"tflite: {node.op_type} on a rank-{n + 2} input (1-D and 2-D only, 3-D 1 deep)")
    strides = node.attributes.get_ints("strides", [1] * n)
    dilations = node.attributes.get_ints("dilations", [1] * n)
    pads = _spatial_pads(node, in_hw, kernel, strides, dilations)
    if n == 1:
        return (1, *in_hw), [1, *strides], [1, *dilations], [(0, 0), *pads]
    if n == 3:
        if kernel[0] != 1 or strides[0] != 1 or pads[0] != (0, 0):
            raise UnsupportedError(f"tflite: 3-D {node.op_type} with a kernel {kernel[0]} deep, stride {strides[0]}, "
                                   f"depth pads {pads[0]} (only 1 deep, stride 1, unpadded: a 2-D op over each frame)")
        return in_hw[1:], strides[1:], dilations[1:], pads[1:]
    return in_hw, strides, dilations, pads


def _as_2d(weight: np.ndarray) -> np.ndarray:
    """A 1-D op's (O, I, K) weight as the 2-D op's (O, I, 1, K); a 3-D op's (O, I, 1, KH, KW),
    1 deep, as (O, I, KH, KW)."""
    if weight.ndim == 3:
        return weight[:, :, None, :]
    return weight[:, :, 0] if weight.ndim == 5 else weight


def _bias(lo: Lowering, node: ir.Node, index: int, channels: int) -> int:
    if len(node.inputs) > index and node.inputs[index] is not None:
        bias = lo.const(node.inputs[index])
        if bias is None:
            raise UnsupportedError(f"tflite: {node.op_type} with a non-constant bias")
        return lo.constant(node.inputs[index].name, bias.astype(np.float32))
    return lo.constant("zero_bias", np.zeros(channels, np.float32))


def _hybrid_weight(lo: Lowering, node: ir.Node, axis: int):
    """(int8 data, per-channel scales) of ``node``'s weight when it runs as a TFLite hybrid
    (dynamic-range) op: float activations in and out, int8 weights, the input quantized
    per sample at run time. That is how a compute layer the int8 search keeps out of the
    static encoding still multiplies in int8 (:mod:`deploycomp.quant.dynamic`): the QDQ
    graph marks it by a DequantizeLinear on its weight and none on its input."""
    if lo.precision != "int8" or not is_dynamic(node):
        return None
    weight = quantized.quantized_weight(lo, node.inputs[1])
    if weight is None or weight[0].dtype != np.int8 or weight[2] != axis:
        return None
    return weight[0], weight[1]


def _int8_plan(lo: Lowering, node: ir.Node):
    """(int8 input value, quantized weight, output Quantize) when ``node`` can run int8."""
    if lo.precision != "int8" or is_dynamic(node):
        return None
    xq = quantized.int8_source(lo, node.inputs[0])
    weight = quantized.quantized_weight(lo, node.inputs[1])
    if xq is None or weight is None or weight[0].dtype != np.int8:
        return None
    qout = quantized.int8_output(lo, node)
    return None if qout is None else (xq, weight, qout)


@lowers("Conv")
def lower_conv(lo: Lowering, node: ir.Node) -> None:
    """CONV_2D or DEPTHWISE_CONV_2D, fp32 or int8 (per-channel weights); a 1-D Conv is the
    2-D one over a unit height, a 3-D one 1 deep the 2-D one over each frame."""
    x, w_value = node.inputs[:2]
    weight = lo.const(w_value)
    if weight is None:
        raise UnsupportedError("tflite: Conv with non-constant weights")
    if weight.ndim not in (3, 4, 5):
        raise UnsupportedError(f"tflite: Conv{weight.ndim - 2}D (1-D, 2-D and 3-D 1 deep only)")
    rank = weight.ndim
    kernel = weight.shape[2:]
    weight = _as_2d(weight)
    cout, cin_g, kh, kw = weight.shape
    in_hw, strides, dilations, pads = _conv_geometry(lo, node, kernel)
    group = node.attributes.get_int("group", 1)
    cin = lo.shape(x)[1]
    out_value = node.outputs[0]

    pointwise = (kh, kw) == (1, 1) and tuple(strides) == (1, 1) and all(p == (0, 0) for p in pads) and group == 1
    perm = lo.perm(x)
    int8 = _int8_plan(lo, node)
    if rank == 4 and pointwise and len(perm) == 4 and perm[-1] == 1:
        source = lo.input(int8[0] if int8 else x, perm)  # a 1x1 conv works on any layout with channels last
    else:
        perm = lo.channels_last(rank)
        source = lo.nhwc_input(int8[0] if int8 else x)
    padding = _padding(in_hw, (kh, kw), strides, dilations, pads)
    if padding is None:
        source = _explicit_pad(lo, source, pads, out_value.name)
        padding = VALID
    # depthwise: filter 1HWO, output channels on axis 3; otherwise OHWI (grouped convs too:
    # their filter input depth is C_in / group)
    depthwise = group != 1 and group == cin and cin_g == 1
    layout, channel_axis = ((1, 2, 3, 0), 3) if depthwise else ((0, 2, 3, 1), 0)
    if int8:
        _, (data, scales, _), qout = int8
        filt = quantized.weight_tensor(lo, w_value.name, _as_2d(data).transpose(layout), scales, channel_axis)
        in_scale = lo.w.quantization(source).scale[0]
        bias = quantized.bias_int32(lo, node.inputs[2] if len(node.inputs) > 2 else None, in_scale, scales, cout)
        out, activation = quantized.write_int8(lo, node, qout, perm), quantized.fused(qout.activation)
    elif (hybrid := _hybrid_weight(lo, node, 0)) is not None:
        data, scales = hybrid
        filt = quantized.weight_tensor(lo, w_value.name, _as_2d(data).transpose(layout), scales, channel_axis)
        bias, out, activation = _bias(lo, node, 2, cout), lo.output(out_value, perm), 0
    else:
        filt = lo.constant(w_value.name, weight.transpose(layout))
        bias, out, activation = _bias(lo, node, 2, cout), lo.output(out_value, perm), 0
    geometry = dict(padding=padding, strideH=strides[0], strideW=strides[1], dilationHFactor=dilations[0],
                    dilationWFactor=dilations[1], fusedActivationFunction=activation)
    if depthwise:
        builtin, options = "DEPTHWISE_CONV_2D", lo.w.options("DepthwiseConv2D", depthMultiplier=cout // cin, **geometry)
    else:
        builtin, options = "CONV_2D", lo.w.options("Conv2D", **geometry)
    lo.emit_2d(builtin, [source, filt, bias], out, options)


def _ungrouped(weight: np.ndarray, group: int) -> np.ndarray:
    """A grouped ConvTranspose's (C_in, C_out / g, k...) weight as the equivalent dense
    (C_in, C_out, k...) one, zero outside each group's block: TFLite's TRANSPOSE_CONV has
    no groups (a depthwise upsampling does g times the multiplies, still exact)."""
    if group == 1:
        return weight
    cin, cout_g = weight.shape[:2]
    dense = np.zeros((cin, cout_g * group, *weight.shape[2:]), weight.dtype)
    cin_g = cin // group
    for g in range(group):
        dense[g * cin_g:(g + 1) * cin_g, g * cout_g:(g + 1) * cout_g] = weight[g * cin_g:(g + 1) * cin_g]
    return dense


def _conv_transpose_crop(node: ir.Node, in_dims, kernel, strides) -> list[int]:
    """ONNX ``pads`` of a ConvTranspose ([begins..., ends...]): given, or derived as ONNX
    does from ``output_shape`` or SAME auto_pad (the odd pixel at the end for SAME_UPPER,
    at the start otherwise)."""
    n = len(in_dims)
    auto = node.attributes.get_string("auto_pad", "NOTSET")
    wanted = node.attributes.get_ints("output_shape", None)
    if wanted is None and auto not in ("SAME_UPPER", "SAME_LOWER"):
        return list(node.attributes.get_ints("pads", [0] * 2 * n))
    wanted = list(wanted)[-n:] if wanted is not None else [d * s for d, s in zip(in_dims, strides)]
    extra = node.attributes.get_ints("output_padding", [0] * n)
    total = [s * (d - 1) + e + k - o for d, s, e, k, o in zip(in_dims, strides, extra, kernel, wanted)]
    begins = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
    return begins + [t - b for t, b in zip(total, begins)]


def _dilated(weight: np.ndarray, dilations: tuple[int, ...]) -> np.ndarray:
    """A (in, out, k...) kernel with its taps ``dilations`` apart and zeros between: the
    kernel a dilated convolution applies, for a runtime op without dilation."""
    if all(d == 1 for d in dilations):
        return weight
    size = [(k - 1) * d + 1 for k, d in zip(weight.shape[2:], dilations)]
    out = np.zeros((*weight.shape[:2], *size), weight.dtype)
    out[(slice(None), slice(None), *(slice(None, None, d) for d in dilations))] = weight
    return out


@lowers("ConvTranspose")
def lower_conv_transpose(lo: Lowering, node: ir.Node) -> None:
    """TRANSPOSE_CONV (VALID) then a SLICE cropping the pads, fp32 or int8 (per-channel
    weights, int32 bias, Relu fused); 1-D over a unit height; dilations as the kernel with
    zeros between its taps (TRANSPOSE_CONV has none)."""
    x, w_value = node.inputs[:2]
    weight = lo.const(w_value)
    if weight is None or weight.ndim not in (3, 4):
        raise UnsupportedError("tflite: ConvTranspose needs constant 1-D or 2-D weights")
    group = node.attributes.get_int("group", 1)
    weight = _ungrouped(weight, group)
    rank = weight.ndim
    unit = [1] if rank == 3 else []
    dilations = tuple(node.attributes.get_ints("dilations", [1] * (rank - 2)))
    weight = _as_2d(_dilated(weight, dilations))
    cin, cout, kh, kw = weight.shape
    sh, sw = unit + list(node.attributes.get_ints("strides", [1] * (rank - 2)))
    in_hw = tuple(unit) + tuple(lo.shape(x)[2:])
    n, h, w = lo.shape(x)[0], *in_hw
    full = (n, (h - 1) * sh + kh, (w - 1) * sw + kw, cout)  # VALID output, before pads are cropped
    out_value = node.outputs[0]
    oh, ow = tuple(unit) + tuple(lo.shape(out_value)[2:])
    pads = _conv_transpose_crop(node, in_hw[len(unit):], [kh, kw][len(unit):], [sh, sw][len(unit):])
    if rank == 3:
        pads = [0, pads[0], 0, pads[1]]
    if pads[0] + oh > full[1] or pads[1] + ow > full[2]:
        raise UnsupportedError("tflite: ConvTranspose output_padding beyond the kernel footprint")
    perm = lo.channels_last(rank)
    exact = (oh, ow) == full[1:3]
    int8 = _int8_plan(lo, node)
    if int8 is not None and int8[1][2] == 1:  # per output channel (ONNX axis 1): TFLite's filter axis 0
        _, (data, scales, _), qout = int8
        source = lo.nhwc_input(int8[0])
        scales = np.tile(np.broadcast_to(scales.reshape(-1), (data.shape[1],)), group)  # per group's channel
        data = _dilated(_ungrouped(data, group), dilations)
        filt = quantized.weight_tensor(lo, w_value.name, _as_2d(data).transpose(1, 2, 3, 0), scales, 0)
        bias = quantized.bias_int32(lo, node.inputs[2] if len(node.inputs) > 2 else None,
                                    lo.w.quantization(source).scale[0], scales, cout)
        out = quantized.write_int8(lo, node, qout, perm)
        target = out if exact else lo.w.tensor(f"{out_value.name}/full", full, np.int8, lo.w.quantization(out))
        activation = quantized.fused(qout.activation)
    else:
        source, filt = lo.nhwc_input(x), lo.constant(w_value.name, weight.transpose(1, 2, 3, 0))
        bias, activation = _bias(lo, node, 2, cout), 0
        out = lo.output(out_value, perm)
        target = out if exact else lo.temp(f"{out_value.name}/full", full)
    options = lo.w.options("TransposeConv", padding=VALID, strideH=sh, strideW=sw, fusedActivationFunction=activation)
    inputs = [lo.int32(full), filt, source, bias]
    if exact:
        lo.emit_2d("TRANSPOSE_CONV", inputs, target, options)
        return
    op = lo.emit("TRANSPOSE_CONV", inputs, [target], options)
    begin, size = [0, pads[0], pads[1], 0], [n, oh, ow, cout]
    lo.emit_2d("SLICE", [target, lo.int32(begin), lo.int32(size)], out)
    lo.activation_of_op[out] = op  # a Relu after the crop is the TRANSPOSE_CONV's


def _pool_divisor(in_hw, out_hw, kernel, strides, pads, include_pad: bool) -> np.ndarray:
    """(OH, OW) element counts ONNX Runtime divides each average window's sum by: the window
    within the padded input (``count_include_pad``, the ceil-mode overhang never counted) or
    within the input itself."""
    counts = []
    for d, o, k, s, (b, e) in zip(in_hw, out_hw, kernel, strides, pads):
        start = np.arange(o) * s - b
        end = np.minimum(start + k, d + e)
        if not include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, d)
        counts.append(end - start)
    return np.outer(counts[0], counts[1]).astype(np.float64)


@lowers("MaxPool", "AveragePool")
def lower_pool(lo: Lowering, node: ir.Node) -> None:
    """MAX_POOL_2D / AVERAGE_POOL_2D with exact padding; 1-D over a unit height.

    Pads TFLite's SAME/VALID cannot express: a max pool pads with zeros (a PAD, which
    XNNPACK fuses) when its input is >= 0 by construction (after a Relu), else with the
    lowest value (PADV2, which XNNPACK does not take); an average pool is a VALID average
    of the zero-padded input times k*k / (the count ONNX divides that window by), exact
    whatever ``count_include_pad`` and ceil_mode say."""
    x = node.inputs[0]
    kernel = node.attributes.get_ints("kernel_shape")
    if len(kernel) not in (1, 2):
        raise UnsupportedError(f"tflite: {node.op_type} over {len(kernel)} spatial dims (1-D and 2-D only)")
    if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
        raise UnsupportedError("tflite: MaxPool indices output")
    rank = len(kernel) + 2
    in_hw, strides, dilations, given_pads = _conv_geometry(lo, node, kernel)
    kernel = [1] * (4 - rank) + list(kernel)
    if tuple(dilations) != (1, 1):
        raise UnsupportedError(f"tflite: dilated {node.op_type}")
    out_hw = (1,) * (4 - rank) + tuple(lo.shape(node.outputs[0])[2:])
    pads = [(b, e + max(0, (o - 1) * s + k - (d + b + e)))  # ceil_mode: the last window may overhang
            for (b, e), o, s, k, d in zip(given_pads, out_hw, strides, kernel, in_hw)]
    is_max = node.op_type == "MaxPool"
    include_pad = bool(node.attributes.get_int("count_include_pad", 0))
    padding = _padding(in_hw, kernel, strides, [1, 1], pads)
    out = lo.output(node.outputs[0], lo.channels_last(rank))
    name = node.outputs[0].name
    source = lo.nhwc_input(x)
    valid = lo.w.options("Pool2D", padding=VALID, strideH=strides[0], strideW=strides[1],
                         filterHeight=kernel[0], filterWidth=kernel[1], fusedActivationFunction=0)
    if is_max:
        if padding is None:
            source = _explicit_pad(lo, source, pads, name, 0.0 if lo.non_negative(source) else -3.4e38)
            padding = VALID
        valid.padding = padding
        lo.emit_2d("MAX_POOL_2D", [source], out, valid)
        return
    if padding == VALID or (padding == SAME and not include_pad):  # TFLite's SAME average excludes the pad
        valid.padding = padding
        lo.emit_2d("AVERAGE_POOL_2D", [source], out, valid)
        return
    divisor = _pool_divisor(in_hw, out_hw, kernel, strides, given_pads, include_pad)
    source = _explicit_pad(lo, source, pads, name)
    correction = kernel[0] * kernel[1] / divisor
    if np.allclose(correction, 1.0):
        lo.emit_2d("AVERAGE_POOL_2D", [source], out, valid)
        return
    n, c = lo.w.shape(source)[0], lo.w.shape(source)[3]
    pooled = lo.temp(f"{name}/sum_over_k", (n, *out_hw, c))
    lo.emit("AVERAGE_POOL_2D", [source], [pooled], valid)
    factor = lo.constant(f"{name}/count", correction.astype(np.float32).reshape(1, *out_hw, 1))
    lo.emit_2d("MUL", [pooled, factor], out, lo.w.options("Mul", fusedActivationFunction=0))


_LINEAR_MODES = {
    "half_pixel": (False, True),
    "pytorch_half_pixel": (False, True),
    "align_corners": (True, False),
    "asymmetric": (False, False),
}
"""ONNX linear coordinate transformation -> RESIZE_BILINEAR's (align_corners, half_pixel_centers)."""


def _resize_scales(lo: Lowering, node: ir.Node, in_dims, out_dims) -> list[float]:
    """The spatial scales ONNX's coordinate transformations divide by: the ``scales`` input
    when given (the output size is its floor, the transformation uses the scale itself),
    else output / input."""
    index = 1 if node.op_type == "Upsample" or len(node.inputs) == 2 else 2
    given = lo.const(node.inputs[index]) if len(node.inputs) > index and node.inputs[index] is not None else None
    if given is not None and given.size:
        return [float(v) for v in np.asarray(given, np.float32).reshape(-1)[2:]]
    return [float(np.float32(o) / np.float32(i)) for i, o in zip(in_dims, out_dims)]


def _onnx_nearest(node: ir.Node, size_in: int, size_out: int, scale: float) -> np.ndarray:
    """Source index of every output position along one axis, as ONNX's nearest Resize
    defines it (float32 arithmetic, as runtimes compute it)."""
    transform = node.attributes.get_string("coordinate_transformation_mode", "half_pixel")
    rounding = node.attributes.get_string("nearest_mode", "round_prefer_floor")
    if scale == 1.0 and size_in == size_out:  # an axis not resized is copied (ONNX Runtime, ONNX's reference)
        return np.arange(size_out)
    x = np.arange(size_out, dtype=np.float32)
    s = np.float32(scale)
    half = np.float32(0.5)
    if transform == "half_pixel":
        orig = (x + half) / s - half
    elif transform == "pytorch_half_pixel":
        orig = (x + half) / s - half if size_out > 1 else np.zeros_like(x)
    elif transform == "align_corners":
        orig = x * np.float32(size_in - 1) / np.float32(size_out - 1) if size_out > 1 else np.zeros_like(x)
    elif transform == "asymmetric":
        orig = x / s
    elif transform == "tf_half_pixel_for_nn":
        orig = (x + half) / s
    elif transform == "half_pixel_symmetric":
        adjustment = np.float32(size_out) / (s * np.float32(size_in))
        offset = np.float32(size_in) / 2 * (1 - adjustment)
        orig = offset + (x + half) / s - half
    else:
        raise UnsupportedError(f"tflite: Resize nearest with coordinate_transformation_mode={transform}")
    index = {"round_prefer_floor": lambda v: np.ceil(v - half), "round_prefer_ceil": lambda v: np.floor(v + half),
             "floor": np.floor, "ceil": np.ceil}[rounding](orig)
    return np.clip(index, 0, size_in - 1).astype(np.int64)


def _tflite_nearest(size_in: int, size_out: int, align: bool, half: bool) -> np.ndarray:
    """RESIZE_NEAREST_NEIGHBOR's source indices (LiteRT's kernels: the reference one for
    align_corners / half_pixel_centers, the 16.16 fixed-point one otherwise)."""
    y = np.arange(size_out, dtype=np.int64)
    if not align and not half:
        return np.minimum((y * ((size_in << 16) // size_out + 1)) >> 16, size_in - 1)
    scale = np.float32(size_in - 1) / np.float32(size_out - 1) if align and size_out > 1 else \
        np.float32(size_in) / np.float32(size_out)
    position = (y.astype(np.float32) + np.float32(0.5 if half else 0.0)) * scale
    index = np.floor(position + np.float32(0.5)) if align else np.floor(position)  # TfLiteRound: half away from 0
    index = np.minimum(index.astype(np.int64), size_in - 1)
    return np.maximum(index, 0) if half else index


@lowers("Resize", "Upsample")
def lower_resize(lo: Lowering, node: ir.Node) -> None:
    """Resize of H and W (or of W of a 1-D (N, C, W) tensor, over a unit height).

    nearest: the source index of every output row and column is computed as ONNX defines
    it; where doubling (x2, x4, ...) both axes it is copies and DEPTH_TO_SPACE (which
    XNNPACK runs), where RESIZE_NEAREST_NEIGHBOR picks the same indices that op, and
    otherwise a GATHER of those rows and columns: exact in every mode. linear: one
    RESIZE_BILINEAR whose settings match the transformation."""
    x, y = node.inputs[0], node.outputs[0]
    in_shape, out_shape = lo.shape(x), lo.shape(y)
    if len(in_shape) not in (3, 4) or in_shape[:2] != out_shape[:2]:
        raise UnsupportedError("tflite: Resize other than of the spatial dims of a 3-D or 4-D tensor")
    mode = node.attributes.get_string("mode", "nearest")
    transform = node.attributes.get_string("coordinate_transformation_mode", "half_pixel")
    unit = (1,) * (4 - len(in_shape))
    in_hw, out_hw = unit + tuple(in_shape[2:]), unit + tuple(out_shape[2:])
    scales = [1.0] * len(unit) + _resize_scales(lo, node, in_shape[2:], out_shape[2:])
    downscale = any(o < i for i, o in zip(in_hw, out_hw))
    if node.attributes.get_int("antialias", 0) and downscale:
        raise UnsupportedError("tflite: Resize with antialias when downscaling")
    perm = lo.channels_last(len(in_shape))
    if mode == "nearest":
        maps = [_onnx_nearest(node, i, o, sc) for i, o, sc in zip(in_hw, out_hw, scales)]
        factor = out_hw[0] // in_hw[0]
        doubling = factor > 1 and factor & (factor - 1) == 0 and all(
            o == i * factor and np.array_equal(m, np.arange(o) // factor) for i, o, m in zip(in_hw, out_hw, maps))
        if doubling:
            _nearest_by_depth_to_space(lo, x, y, factor)
            return
        for align, half in ((False, False), (False, True), (True, False)):
            if all(np.array_equal(m, _tflite_nearest(i, o, align, half)) for i, o, m in zip(in_hw, out_hw, maps)):
                lo.emit_2d("RESIZE_NEAREST_NEIGHBOR", [lo.nhwc_input(x), lo.int32(out_hw)], lo.output(y, perm),
                           lo.w.options("ResizeNearestNeighbor", alignCorners=align, halfPixelCenters=half))
                return
        source = lo.nhwc_input(x)
        if all(np.array_equal(m, np.arange(i)) for m, i in zip(maps, in_hw)):
            lo.alias(y, lo.input(x), lo.perm(x))
            return
        for axis, (m, i) in enumerate(zip(maps, in_hw), 1):
            if np.array_equal(m, np.arange(i)):
                continue
            last = all(np.array_equal(mm, np.arange(ii)) for mm, ii in zip(maps[axis:], in_hw[axis:]))
            shape = list(lo.w.shape(source))
            shape[axis] = len(m)
            options = lo.w.options("Gather", axis=axis, batchDims=0)
            if last:
                lo.emit_2d("GATHER", [source, lo.constant("resize/rows", m.astype(np.int32))], lo.output(y, perm), options)
                return
            gathered = lo.w.tensor(f"{y.name}/axis{axis}", shape, lo.w.dtype(source), lo.w.quantization(source))
            lo.emit("GATHER", [source, lo.constant("resize/rows", m.astype(np.int32))], [gathered], options)
            source = gathered
        return
    if mode != "linear" or transform not in _LINEAR_MODES:
        raise UnsupportedError(f"tflite: Resize mode={mode} coordinate_transformation_mode={transform}")
    if any(abs(sc - o / i) > 1e-6 * sc for i, o, sc in zip(in_hw, out_hw, scales)):
        raise UnsupportedError("tflite: Resize linear with scales that are not output / input sizes")
    align, half = _LINEAR_MODES[transform]
    lo.emit_2d("RESIZE_BILINEAR", [lo.nhwc_input(x), lo.int32(out_hw)], lo.output(y, perm),
               lo.w.options("ResizeBilinear", alignCorners=align, halfPixelCenters=half))


def _nearest_by_depth_to_space(lo: Lowering, x: ir.Value, y: ir.Value, factor: int) -> None:
    """Nearest upsampling by 2, 4, 8...: per doubling, CONCATENATION of 4 copies along the
    channels and DEPTH_TO_SPACE(2). The same values, and both ops run in XNNPACK
    (RESIZE_NEAREST_NEIGHBOR does not, and would split the graph into separate delegate
    partitions; XNNPACK's concatenation takes at most 4 inputs, hence the doublings)."""
    source = lo.input(x, NCHW_TO_NHWC)
    dtype, quant = lo.w.dtype(source), lo.w.quantization(source)
    step = 0
    while factor > 1:
        n, h, w, c = lo.w.shape(source)
        copies = lo.w.tensor(f"{y.name}/copies{step}", (n, h, w, 4 * c), dtype, quant)
        lo.emit("CONCATENATION", [source] * 4, [copies], lo.w.options("Concatenation", axis=3, fusedActivationFunction=0))
        factor //= 2
        out = lo.output(y, NCHW_TO_NHWC) if factor == 1 else lo.w.tensor(f"{y.name}/x{2 ** (step + 1)}",
                                                                          (n, 2 * h, 2 * w, c), dtype, quant)
        lo.emit("DEPTH_TO_SPACE", [copies], [out], lo.w.options("DepthToSpace", blockSize=2))
        source, step = out, step + 1


@lowers("Softmax", "LogSoftmax")
def lower_softmax(lo: Lowering, node: ir.Node) -> None:
    x = node.inputs[0]
    rank = len(lo.shape(x))
    axis = node.attributes.get_int("axis", -1)
    axis = axis + rank if axis < 0 else axis
    perm = lo.perm(x)
    if perm[-1] != axis:  # TFLite normalizes over the last stored axis
        perm = tuple(a for a in perm if a != axis) + (axis,)
    if node.op_type == "Softmax":
        lo.emit("SOFTMAX", [lo.input(x, perm)], [lo.output(node.outputs[0], perm)], lo.w.options("Softmax", beta=1.0))
    else:
        lo.emit("LOG_SOFTMAX", [lo.input(x, perm)], [lo.output(node.outputs[0], perm)])


def _fully_connected(lo: Lowering, node: ir.Node, source: int, perm: tuple[int, ...], weight_nk: np.ndarray,
                     bias: np.ndarray | None, hybrid: tuple[np.ndarray, np.ndarray] | None = None,
                     out: int | None = None) -> None:
    """``x @ weight_nk.T + bias`` over the last stored axis (which must be the ONNX last axis);
    ``hybrid``: the (N, K) int8 weight and its per-row scales, for a dynamic-range op (each
    input row quantized asymmetrically at run time); ``out``: the tensor written (the
    node's output, stored in ``perm``, by default)."""
    n = weight_nk.shape[0]
    bias_index = lo.constant("fc/bias", (bias if bias is not None else np.zeros(n)).astype(np.float32))
    options = lo.w.options("FullyConnected", fusedActivationFunction=0, keepNumDims=len(perm) > 2,
                           asymmetricQuantizeInputs=hybrid is not None)
    if hybrid is not None:
        filt = quantized.weight_tensor(lo, f"{node.inputs[1].name}/hybrid", hybrid[0], hybrid[1], 0)
    else:
        filt = lo.constant("fc/weights", weight_nk.astype(np.float32))
    lo.emit("FULLY_CONNECTED", [source, filt, bias_index], [lo.output(node.outputs[0], perm) if out is None else out],
            options)


def _last_axis_last(lo: Lowering, a: ir.Value) -> tuple[int, tuple[int, ...]]:
    """``a`` in its stored layout if that keeps the ONNX last axis last, else in ONNX order."""
    rank = len(lo.shape(a))
    perm = lo.perm(a)
    if perm[-1] != rank - 1:
        perm = identity(rank)
    return lo.input(a, perm), perm


def _int8_fully_connected(lo: Lowering, node: ir.Node, weight_axis_n: int, scale_by: float = 1.0,
                          bias: ir.Value | None = None) -> bool:
    """FULLY_CONNECTED in int8 when input, weight and output are quantized; weight data
    is (K, N) with ``weight_axis_n`` = 1, or (N, K) with 0."""
    plan = _int8_plan(lo, node)
    if plan is None or scale_by != 1.0:
        return False
    xq, (data, scales, axis), qout = plan
    if axis != weight_axis_n or data.ndim != 2:
        return False
    rank = len(lo.shape(xq))
    perm = lo.perm(xq) if lo.perm(xq)[-1] == rank - 1 else identity(rank)
    source = lo.input(xq, perm)
    weight_nk = data if weight_axis_n == 0 else data.T
    filt = quantized.weight_tensor(lo, node.inputs[1].name, weight_nk, scales, 0)
    in_scale = lo.w.quantization(source).scale[0]
    bias_index = quantized.bias_int32(lo, bias, in_scale, scales, weight_nk.shape[0])
    options = lo.w.options("FullyConnected", fusedActivationFunction=quantized.fused(qout.activation),
                           keepNumDims=rank > 2)
    lo.emit("FULLY_CONNECTED", [source, filt, bias_index], [quantized.write_int8(lo, node, qout, perm)], options)
    return True


@lowers("MatMul")
def lower_matmul(lo: Lowering, node: ir.Node) -> None:
    a, b = node.inputs
    weight = lo.const(b)
    if weight is not None and weight.ndim == 2 and _int8_fully_connected(lo, node, 1):
        return
    if weight is not None and weight.ndim == 2 and lo.const(a) is None and len(lo.shape(a)) >= 2:
        hybrid = _hybrid_weight(lo, node, 1)
        _fully_connected(lo, node, *_last_axis_last(lo, a), weight.T, None,
                         None if hybrid is None else (hybrid[0].T, hybrid[1]))
        return
    ins, adjoint = [], []
    for v in (a, b):
        rank = len(lo.shape(v))
        perm = lo.perm(v)
        swapped = identity(rank - 2) + (rank - 1, rank - 2)
        if rank >= 2 and tuple(perm) == swapped:
            ins.append(lo.input(v))
            adjoint.append(True)
        else:
            ins.append(lo.input(v, identity(rank)))
            adjoint.append(False)
    out_rank = len(lo.shape(node.outputs[0]))
    lo.emit("BATCH_MATMUL", ins, [lo.output(node.outputs[0], identity(out_rank))],
            lo.w.options("BatchMatMul", adjX=adjoint[0], adjY=adjoint[1], asymmetricQuantizeInputs=False))


@lowers("Gemm")
def lower_gemm(lo: Lowering, node: ir.Node) -> None:
    a, b = node.inputs[:2]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    weight = lo.const(b)
    if weight is None:
        raise UnsupportedError("tflite: Gemm with a non-constant B")
    alpha = node.attributes.get_float("alpha", 1.0)
    beta = node.attributes.get_float("beta", 1.0)
    weight_nk = (weight if node.attributes.get_int("transB", 0) else weight.T) * alpha
    n = weight_nk.shape[0]
    bias = None
    if c is not None and lo.const(c) is None:
        _gemm_plus_tensor(lo, node, weight_nk, c, beta)
        return
    if c is not None:
        bias = lo.const(c)
        rows = lo.shape(node.outputs[0])[0]
        if bias.size not in (1, n) and bias.shape[-1] == n and bias.size == n * rows:
            _gemm_plus_tensor(lo, node, weight_nk, c, beta)  # a C of whole rows: added as a tensor
            return
        if bias.size not in (1, n) or (bias.ndim == 2 and bias.shape[0] != 1):
            raise UnsupportedError("tflite: Gemm with a C that is not a per-column constant")
        bias = np.broadcast_to(bias.reshape(-1), (n,)) * beta
    if not node.attributes.get_int("transA", 0) and (beta == 1.0 or c is None) and _int8_fully_connected(
            lo, node, 0 if node.attributes.get_int("transB", 0) else 1, alpha, c):
        return
    trans_b = node.attributes.get_int("transB", 0)
    hybrid = _hybrid_weight(lo, node, 0 if trans_b else 1) if alpha == 1.0 else None
    if hybrid is not None:
        hybrid = (hybrid[0] if trans_b else hybrid[0].T, hybrid[1])
    if node.attributes.get_int("transA", 0):
        _fully_connected(lo, node, lo.input(a, (1, 0)), (0, 1), weight_nk, bias, hybrid)  # A^T in ONNX order
    else:
        _fully_connected(lo, node, *_last_axis_last(lo, a), weight_nk, bias, hybrid)


def _gemm_plus_tensor(lo: Lowering, node: ir.Node, weight_nk: np.ndarray, c: ir.Value, beta: float) -> None:
    """A Gemm whose C is a tensor (a MatMul plus another product, fused into one Gemm):
    FULLY_CONNECTED without a bias, then ADD of ``beta * C`` (broadcast as ONNX does), in
    ONNX order."""
    a = node.inputs[0]
    source = lo.input(a, (1, 0)) if node.attributes.get_int("transA", 0) else lo.input(a, identity(2))
    shape = tuple(lo.shape(node.outputs[0]))
    product = lo.temp(f"{node.name}/product", shape)
    _fully_connected(lo, node, source, (0, 1), weight_nk, None, out=product)
    addend = lo.input(c, identity(len(lo.shape(c))))
    if beta != 1.0:
        scaled = lo.temp(f"{node.name}/beta_c", tuple(lo.shape(c)))
        lo.emit("MUL", [addend, lo.scalar(beta)], [scaled], lo.w.options("Mul", fusedActivationFunction=0))
        addend = scaled
    lo.emit("ADD", [product, addend], [lo.output(node.outputs[0], identity(2))],
            lo.w.options("Add", fusedActivationFunction=0))


def _standardize(lo: Lowering, name: str, source: int, stored_axes: list[int], eps: float,
                 out: int | None = None) -> int:
    """(x - mean) * rsqrt(mean((x - mean)^2) + eps) over ``stored_axes`` of the stored tensor:
    MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL (into ``out`` if given)."""
    shape = lo.w.shape(source)
    reduced = tuple(1 if i in stored_axes else d for i, d in enumerate(shape))
    axes = lo.int32(sorted(stored_axes))
    none = {"fusedActivationFunction": 0}
    mean, centred = lo.temp(f"{name}/mean", reduced), lo.temp(f"{name}/centred", shape)
    square, var = lo.temp(f"{name}/square", shape), lo.temp(f"{name}/var", reduced)
    var_eps, inv = lo.temp(f"{name}/var_eps", reduced), lo.temp(f"{name}/rstd", reduced)
    lo.emit("MEAN", [source, axes], [mean], lo.w.options("Reducer", keepDims=True))
    lo.emit("SUB", [source, mean], [centred], lo.w.options("Sub", **none))
    lo.emit("MUL", [centred, centred], [square], lo.w.options("Mul", **none))
    lo.emit("MEAN", [square, axes], [var], lo.w.options("Reducer", keepDims=True))
    lo.emit("ADD", [var, lo.scalar(eps)], [var_eps], lo.w.options("Add", **none))
    lo.emit("RSQRT", [var_eps], [inv])
    normalized = out if out is not None else lo.temp(f"{name}/normalized", shape)
    lo.emit("MUL", [centred, inv], [normalized], lo.w.options("Mul", **none))
    return normalized


def _scale_shift(lo: Lowering, node: ir.Node, current: int, scale: int | None, bias: int | None, perm) -> None:
    """``current * scale + bias`` (either may be None) into the node's output, stored in ``perm``."""
    steps = [(b, operand, k) for b, operand, k in (("MUL", scale, "Mul"), ("ADD", bias, "Add")) if operand is not None]
    for i, (builtin, operand, kind) in enumerate(steps):
        out = lo.output(node.outputs[0], perm) if i == len(steps) - 1 else \
            lo.temp(f"{node.outputs[0].name}/scaled", lo.w.shape(current))
        lo.emit(builtin, [current, operand], [out], lo.w.options(kind, fusedActivationFunction=0))
        current = out


def _per_channel(lo: Lowering, node: ir.Node, index: int, rank: int, perm, channels: int,
                 groups: int | None = None) -> int | None:
    """A (C,) scale or bias as a constant broadcasting along ONNX axis 1 in the stored
    layout; a (G,) one (GroupNormalization before opset 21) repeated over each group's channels."""
    if len(node.inputs) <= index or node.inputs[index] is None:
        return None
    data = lo.const(node.inputs[index])
    if data is None:
        raise UnsupportedError(f"tflite: {node.op_type} with a non-constant scale or bias")
    data = data.reshape(-1)
    if groups is not None and data.size == groups != channels:
        data = np.repeat(data, channels // groups)
    data = np.broadcast_to(data, (channels,)).astype(np.float32)
    return lo.constant(f"{node.op_type}/per_channel", np.transpose(data.reshape((1, -1) + (1,) * (rank - 2)), perm))


@lowers("LayerNormalization")
def lower_layer_norm(lo: Lowering, node: ir.Node) -> None:
    """Decomposed: mean, centre, mean of squares, RSQRT, scale, shift, in the stored layout."""
    x = node.inputs[0]
    rank = len(lo.shape(x))
    axis = node.attributes.get_int("axis", -1)
    axis = axis + rank if axis < 0 else axis
    perm = lo.perm(x)
    scale = node.inputs[1] if len(node.inputs) > 1 else None
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    last = scale is None and bias is None
    normalized = _standardize(lo, node.outputs[0].name, lo.input(x), [perm.index(a) for a in range(axis, rank)],
                              node.attributes.get_float("epsilon", 1e-5), lo.output(node.outputs[0], perm) if last else None)
    if not last:
        _scale_shift(lo, node, normalized, lo.broadcast_input(scale, rank, perm) if scale is not None else None,
                     lo.broadcast_input(bias, rank, perm) if bias is not None else None, perm)


@lowers("RMSNormalization")
def lower_rms_norm(lo: Lowering, node: ir.Node) -> None:
    """x * rsqrt(mean(x^2 over axis..) + eps) * scale, in the stored layout."""
    x = node.inputs[0]
    rank, perm = len(lo.shape(x)), lo.perm(x)
    axis = node.attributes.get_int("axis", -1) % rank
    source = lo.input(x)
    shape = lo.w.shape(source)
    stored_axes = [perm.index(a) for a in range(axis, rank)]
    reduced = tuple(1 if i in stored_axes else d for i, d in enumerate(shape))
    name, none = node.outputs[0].name, {"fusedActivationFunction": 0}
    square, mean = lo.temp(f"{name}/square", shape), lo.temp(f"{name}/mean", reduced)
    mean_eps, inv = lo.temp(f"{name}/mean_eps", reduced), lo.temp(f"{name}/rrms", reduced)
    lo.emit("MUL", [source, source], [square], lo.w.options("Mul", **none))
    lo.emit("MEAN", [square, lo.int32(sorted(stored_axes))], [mean], lo.w.options("Reducer", keepDims=True))
    lo.emit("ADD", [mean, lo.scalar(node.attributes.get_float("epsilon", 1e-5))], [mean_eps], lo.w.options("Add", **none))
    lo.emit("RSQRT", [mean_eps], [inv])
    normalized = lo.temp(f"{name}/normalized", shape)
    lo.emit("MUL", [source, inv], [normalized], lo.w.options("Mul", **none))
    _scale_shift(lo, node, normalized, lo.broadcast_input(node.inputs[1], rank, perm), None, perm)


@lowers("InstanceNormalization")
def lower_instance_norm(lo: Lowering, node: ir.Node) -> None:
    """Standardized over the spatial axes per sample and channel, then the per-channel
    scale and bias, in the stored layout (any rank: 1-D audio features too)."""
    x = node.inputs[0]
    dims = lo.shape(x)
    rank, perm = len(dims), lo.perm(x)
    normalized = _standardize(lo, node.outputs[0].name, lo.input(x), [perm.index(a) for a in range(2, rank)],
                              node.attributes.get_float("epsilon", 1e-5))
    _scale_shift(lo, node, normalized, _per_channel(lo, node, 1, rank, perm, dims[1]),
                 _per_channel(lo, node, 2, rank, perm, dims[1]), perm)


@lowers("GroupNormalization")
def lower_group_norm(lo: Lowering, node: ir.Node) -> None:
    """Channels last, (N, S..., C) RESHAPEd to (N, S, G, C/G) (the same bytes) and
    standardized over S and C/G, reshaped back, then per-channel scale and bias (opset 18's
    per-group ones repeated over their channels)."""
    x = node.inputs[0]
    dims = lo.shape(x)
    rank, channels = len(dims), dims[1]
    groups = node.attributes.get_int("num_groups")
    perm = lo.channels_last(rank) if rank > 2 else identity(rank)
    source = lo.input(x, perm)
    stored = lo.w.shape(source)
    spatial = int(np.prod(dims[2:], dtype=np.int64))
    grouped_shape = (dims[0], spatial, groups, channels // groups)
    name = node.outputs[0].name
    grouped = lo.temp(f"{name}/grouped", grouped_shape)
    lo.emit("RESHAPE", [source, lo.int32(grouped_shape)], [grouped], lo.w.options("Reshape", newShape=list(grouped_shape)))
    normalized = _standardize(lo, name, grouped, [1, 3], node.attributes.get_float("epsilon", 1e-5))
    back = lo.temp(f"{name}/ungrouped", stored)
    lo.emit("RESHAPE", [normalized, lo.int32(stored)], [back], lo.w.options("Reshape", newShape=list(stored)))
    scale, bias = (_per_channel(lo, node, i, rank, perm, channels, groups) for i in (1, 2))
    _scale_shift(lo, node, back, scale, bias, perm)


@lowers("MeanVarianceNormalization")
def lower_mvn(lo: Lowering, node: ir.Node) -> None:
    """(x - mean) / (sqrt(mean(x^2) - mean^2) + 1e-9) over ``axes``, as ONNX defines it."""
    x = node.inputs[0]
    rank, perm = len(lo.shape(x)), lo.perm(x)
    stored_axes = sorted(perm.index(a % rank) for a in node.attributes.get_ints("axes", [0, 2, 3]))
    axes = lo.int32(stored_axes)
    source = lo.input(x)
    shape = lo.w.shape(source)
    name, none = node.outputs[0].name, {"fusedActivationFunction": 0}
    reduced = tuple(1 if i in stored_axes else d for i, d in enumerate(shape))
    mean, square = lo.temp(f"{name}/mean", reduced), lo.temp(f"{name}/square", shape)
    mean_sq, sq_mean = lo.temp(f"{name}/mean_sq", reduced), lo.temp(f"{name}/sq_mean", reduced)
    var, std, std_eps = (lo.temp(f"{name}/{n}", reduced) for n in ("var", "std", "std_eps"))
    centred = lo.temp(f"{name}/centred", shape)
    lo.emit("MEAN", [source, axes], [mean], lo.w.options("Reducer", keepDims=True))
    lo.emit("MUL", [source, source], [square], lo.w.options("Mul", **none))
    lo.emit("MEAN", [square, axes], [mean_sq], lo.w.options("Reducer", keepDims=True))
    lo.emit("MUL", [mean, mean], [sq_mean], lo.w.options("Mul", **none))
    lo.emit("SUB", [mean_sq, sq_mean], [var], lo.w.options("Sub", **none))
    lo.emit("SQRT", [var], [std])
    lo.emit("ADD", [std, lo.scalar(1e-9)], [std_eps], lo.w.options("Add", **none))
    lo.emit("SUB", [source, mean], [centred], lo.w.options("Sub", **none))
    lo.emit("DIV", [centred, std_eps], [lo.output(node.outputs[0], perm)], lo.w.options("Div", **none))


@lowers("LpNormalization")
def lower_lp_norm(lo: Lowering, node: ir.Node) -> None:
    """x / ||x||_p along ``axis`` (p 1 or 2), no epsilon, as ONNX defines it."""
    x = node.inputs[0]
    rank, perm = len(lo.shape(x)), lo.perm(x)
    axis = node.attributes.get_int("axis", -1) % rank
    p = node.attributes.get_int("p", 2)
    if p not in (1, 2):
        raise UnsupportedError(f"tflite: LpNormalization with p={p}")
    source = lo.input(x)
    shape = lo.w.shape(source)
    stored_axis = perm.index(axis)
    reduced = tuple(1 if i == stored_axis else d for i, d in enumerate(shape))
    name = node.outputs[0].name
    magnitude = lo.temp(f"{name}/magnitude", shape)
    if p == 1:
        lo.emit("ABS", [source], [magnitude])
    else:
        lo.emit("MUL", [source, source], [magnitude], lo.w.options("Mul", fusedActivationFunction=0))
    norm = lo.temp(f"{name}/norm", reduced)
    lo.emit("SUM", [magnitude, lo.int32([stored_axis])], [norm], lo.w.options("Reducer", keepDims=True))
    if p == 2:
        root = lo.temp(f"{name}/root", reduced)
        lo.emit("SQRT", [norm], [root])
        norm = root
    lo.emit("DIV", [source, norm], [lo.output(node.outputs[0], perm)], lo.w.options("Div", fusedActivationFunction=0))


@lowers("LRN")
def lower_lrn(lo: Lowering, node: ir.Node) -> None:
    """LOCAL_RESPONSE_NORMALIZATION over the channels (last in NHWC): ONNX's window of
    ``size`` channels centred on each one is TFLite's radius (size - 1) / 2, and its
    alpha / size is TFLite's alpha. An even size (a window one wider on one side) is refused."""
    x = node.inputs[0]
    size = node.attributes.get_int("size")
    if size % 2 == 0:
        raise UnsupportedError(f"tflite: LRN with an even size ({size})")
    if len(lo.shape(x)) != 4:
        raise UnsupportedError("tflite: LRN on other than a 4-D input")
    options = lo.w.options("LocalResponseNormalization", radius=(size - 1) // 2,
                           bias=node.attributes.get_float("bias", 1.0),
                           alpha=node.attributes.get_float("alpha", 1e-4) / size,
                           beta=node.attributes.get_float("beta", 0.75))
    lo.emit("LOCAL_RESPONSE_NORMALIZATION", [lo.input(x, NCHW_TO_NHWC)], [lo.output(node.outputs[0], NCHW_TO_NHWC)],
            options)


def _einsum_terms(lo: Lowering, node: ir.Node) -> tuple[list[str], str]:
    """The equation's operand and output letters, ``...`` spelled out as letters of its own."""
    equation = node.attributes.get_string("equation").replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in equation]
    widths = [len(lo.shape(v)) - (len(t) - 3) for t, v in zip(terms, node.inputs) if "..." in t]
    ellipsis = "".join(spare[:max(widths, default=0)])
    terms = [t.replace("...", ellipsis[len(ellipsis) - (len(lo.shape(v)) - (len(t) - 3)):]) if "..." in t else t
             for t, v in zip(terms, node.inputs)]
    if arrow:
        output = rhs.replace("...", ellipsis)
    else:
        counts = "".join(terms)
        output = ellipsis + "".join(sorted(c for c in set(counts) if counts.count(c) == 1 and c not in ellipsis))
    return terms, output


@lowers("Einsum")
def lower_einsum(lo: Lowering, node: ir.Node) -> None:
    """One or two operands without repeated letters (no diagonals). Letters only one operand
    has and the output lacks are summed away first; two operands are then one BATCH_MATMUL of
    (batch, left, contracted) by (batch, contracted, right) (adjX/adjY where an operand is
    stored the other way round, a TRANSPOSE only if neither), and the result is stored as
    (batch, left, right): the output's own order is a relabelling of that layout."""
    terms, output = _einsum_terms(lo, node)
    if len(terms) not in (1, 2) or any(len(set(t)) != len(t) for t in terms + [output]):
        raise UnsupportedError(f"tflite: Einsum '{node.attributes.get_string('equation')}' "
                               f"(one or two operands, no repeated letters)")
    size: dict[str, int] = {}
    for term, value in zip(terms, node.inputs):
        for c, d in zip(term, lo.shape(value)):
            if size.setdefault(c, d) != d:
                raise UnsupportedError(f"tflite: Einsum broadcasting '{c}' ({size[c]} vs {d})")
    operands = []
    for i, (term, value) in enumerate(zip(terms, node.inputs)):
        others = "".join(t for j, t in enumerate(terms) if j != i)
        summed = [c for c in term if c not in output and c not in others]
        operands.append(_einsum_operand(lo, node, value, term, summed))
    out = node.outputs[0]
    if len(operands) == 1:
        index, letters = operands[0]
        lo.alias(out, index, tuple(output.index(c) for c in letters))
        return
    (a, la), (b, lb) = operands
    batch = [c for c in output if c in la and c in lb]
    contracted = [c for c in la if c in lb and c not in output]
    left, right = [c for c in la if c not in lb], [c for c in lb if c not in la]
    a, adj_x = _einsum_arrange(lo, a, la, batch, left, contracted, size)
    b, adj_y = _einsum_arrange(lo, b, lb, batch, contracted, right, size)
    n = lambda letters: int(np.prod([size[c] for c in letters], dtype=np.int64))  # noqa: E731
    stored = batch + left + right
    product = lo.temp(f"{out.name}/bmm", (n(batch), n(left), n(right)))
    lo.emit("BATCH_MATMUL", [a, b], [product], lo.w.options("BatchMatMul", adjX=adj_x, adjY=adj_y,
                                                            asymmetricQuantizeInputs=False))
    dims = [size[c] for c in stored]
    lo.emit("RESHAPE", [product, lo.int32(dims)], [lo.output(out, tuple(output.index(c) for c in stored))],
            lo.w.options("Reshape", newShape=dims))


def _einsum_operand(lo: Lowering, node: ir.Node, value: ir.Value, term: str, summed: list[str]) -> tuple[int, list[str]]:
    """(tensor, its stored letters) of an operand with ``summed`` letters reduced away; a
    constant is summed and kept in ONNX order at conversion time."""
    data = lo.const(value)
    if data is not None:
        kept = [c for c in term if c not in summed]
        if summed:
            data = data.sum(axis=tuple(term.index(c) for c in summed))
        return lo.constant(f"{value.name}/einsum", data), kept
    perm = lo.perm(value)
    index, letters = lo.input(value), [term[p] for p in perm]
    if summed:
        axes = sorted(letters.index(c) for c in summed)
        letters = [c for c in letters if c not in summed]
        reduced = lo.temp(f"{node.outputs[0].name}/{value.name}/sum", tuple(lo.shape(value)[term.index(c)] for c in letters),
                          lo.dtype(value))
        lo.emit("SUM", [index, lo.int32(axes)], [reduced], lo.w.options("Reducer", keepDims=False))
        index = reduced
    return index, letters


def _einsum_arrange(lo: Lowering, index: int, letters: list[str], batch, rows, cols, size) -> tuple[int, bool]:
    """The operand as a 3-D (batch, rows, cols) tensor, or (batch, cols, rows) with adjoint
    True if that is how it is stored; a TRANSPOSE only if it is stored in neither order."""
    n = lambda group: int(np.prod([size[c] for c in group], dtype=np.int64))  # noqa: E731
    adjoint = letters == batch + cols + rows
    if not adjoint and letters != batch + rows + cols:
        wanted = batch + rows + cols
        moved = lo.temp(f"{lo.w.tensors[index].name}/einsum", tuple(size[c] for c in wanted), lo.w.dtype(index))
        lo.emit("TRANSPOSE", [index, lo.int32([letters.index(c) for c in wanted])], [moved])
        index = moved
    shape = (n(batch), n(cols), n(rows)) if adjoint else (n(batch), n(rows), n(cols))
    if lo.w.shape(index) == shape:
        return index, adjoint
    flat = lo.temp(f"{lo.w.tensors[index].name}/3d", shape, lo.w.dtype(index))
    lo.emit("RESHAPE", [index, lo.int32(shape)], [flat], lo.w.options("Reshape", newShape=list(shape)))
    return flat, adjoint
