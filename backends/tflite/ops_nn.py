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
    unit height (see :meth:`Lowering.nhwc_input`)."""
    x = node.inputs[0]
    in_hw = lo.shape(x)[2:]
    n = len(in_hw)
    if n not in (1, 2) or len(kernel) != n:
        raise UnsupportedError(f"tflite: {node.op_type} on a rank-{n + 2} input (1-D and 2-D only)")
    strides = node.attributes.get_ints("strides", [1] * n)
    dilations = node.attributes.get_ints("dilations", [1] * n)
    pads = _spatial_pads(node, in_hw, kernel, strides, dilations)
    if n == 1:
        return (1, *in_hw), [1, *strides], [1, *dilations], [(0, 0), *pads]
    return in_hw, strides, dilations, pads


def _unit_height(weight: np.ndarray) -> np.ndarray:
    """A 1-D op's (O, I, K) weight as the 2-D op's (O, I, 1, K)."""
    return weight[:, :, None, :] if weight.ndim == 3 else weight


def _bias(lo: Lowering, node: ir.Node, index: int, channels: int) -> int:
    if len(node.inputs) > index and node.inputs[index] is not None:
        bias = lo.const(node.inputs[index])
        if bias is None:
            raise UnsupportedError(f"tflite: {node.op_type} with a non-constant bias")
        return lo.constant(node.inputs[index].name, bias.astype(np.float32))
    return lo.constant("zero_bias", np.zeros(channels, np.float32))


def _int8_plan(lo: Lowering, node: ir.Node):
    """(int8 input value, quantized weight, output Quantize) when ``node`` can run int8."""
    if lo.precision != "int8":
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
    2-D one over a unit height."""
    x, w_value = node.inputs[:2]
    weight = lo.const(w_value)
    if weight is None:
        raise UnsupportedError("tflite: Conv with non-constant weights")
    if weight.ndim not in (3, 4):
        raise UnsupportedError(f"tflite: Conv{weight.ndim - 2}D (1-D and 2-D only)")
    rank = weight.ndim
    weight = _unit_height(weight)
    cout, cin_g, kh, kw = weight.shape
    in_hw, strides, dilations, pads = _conv_geometry(lo, node, (kw,) if rank == 3 else (kh, kw))
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
        filt = quantized.weight_tensor(lo, w_value.name, _unit_height(data).transpose(layout), scales, channel_axis)
        in_scale = lo.w.quantization(source).scale[0]
        bias = quantized.bias_int32(lo, node.inputs[2] if len(node.inputs) > 2 else None, in_scale, scales, cout)
        out, activation = quantized.write_int8(lo, node, qout, perm), quantized.fused(qout.activation)
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


@lowers("ConvTranspose")
def lower_conv_transpose(lo: Lowering, node: ir.Node) -> None:
    """TRANSPOSE_CONV (VALID) then a SLICE cropping the pads; 1-D over a unit height."""
    x, w_value = node.inputs[:2]
    weight = lo.const(w_value)
    if weight is None or weight.ndim not in (3, 4):
        raise UnsupportedError("tflite: ConvTranspose needs constant 1-D or 2-D weights")
    if node.attributes.get_int("group", 1) != 1:
        raise UnsupportedError("tflite: grouped ConvTranspose")
    rank = weight.ndim
    unit = [1] if rank == 3 else []
    if tuple(node.attributes.get_ints("dilations", [1] * (rank - 2))) != (1,) * (rank - 2):
        raise UnsupportedError("tflite: dilated ConvTranspose")
    weight = _unit_height(weight)
    cin, cout, kh, kw = weight.shape
    sh, sw = unit + list(node.attributes.get_ints("strides", [1] * (rank - 2)))
    in_hw = tuple(unit) + tuple(lo.shape(x)[2:])
    n, h, w = lo.shape(x)[0], *in_hw
    full = (n, (h - 1) * sh + kh, (w - 1) * sw + kw, cout)  # VALID output, before pads are cropped
    out_value = node.outputs[0]
    oh, ow = tuple(unit) + tuple(lo.shape(out_value)[2:])
    pads = list(node.attributes.get_ints("pads", [0] * 2 * (rank - 2)))
    if rank == 3:
        pads = [0, pads[0], 0, pads[1]]
    if node.attributes.get_string("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedError("tflite: ConvTranspose with auto_pad SAME")
    if pads[0] + oh > full[1] or pads[1] + ow > full[2]:
        raise UnsupportedError("tflite: ConvTranspose output_padding beyond the kernel footprint")
    perm = lo.channels_last(rank)
    exact = (oh, ow) == full[1:3]
    target = lo.output(out_value, perm) if exact else lo.temp(f"{out_value.name}/full", full)
    options = lo.w.options("TransposeConv", padding=VALID, strideH=sh, strideW=sw, fusedActivationFunction=0)
    inputs = [lo.int32(full), lo.constant(w_value.name, weight.transpose(1, 2, 3, 0)), lo.nhwc_input(x),
              _bias(lo, node, 2, cout)]
    if exact:
        lo.emit_2d("TRANSPOSE_CONV", inputs, target, options)
        return
    lo.emit("TRANSPOSE_CONV", inputs, [target], options)
    begin, size = [0, pads[0], pads[1], 0], [n, oh, ow, cout]
    lo.emit_2d("SLICE", [target, lo.int32(begin), lo.int32(size)], lo.output(out_value, perm))


@lowers("MaxPool", "AveragePool")
def lower_pool(lo: Lowering, node: ir.Node) -> None:
    """MAX_POOL_2D / AVERAGE_POOL_2D with exact padding; 1-D over a unit height."""
    x = node.inputs[0]
    kernel = node.attributes.get_ints("kernel_shape")
    if len(kernel) not in (1, 2):
        raise UnsupportedError(f"tflite: {node.op_type} over {len(kernel)} spatial dims (1-D and 2-D only)")
    if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
        raise UnsupportedError("tflite: MaxPool indices output")
    rank = len(kernel) + 2
    in_hw, strides, dilations, pads = _conv_geometry(lo, node, kernel)
    kernel = [1] * (4 - rank) + list(kernel)
    if tuple(dilations) != (1, 1):
        raise UnsupportedError(f"tflite: dilated {node.op_type}")
    out_hw = (1,) * (4 - rank) + tuple(lo.shape(node.outputs[0])[2:])
    pads = [(b, e + max(0, (o - 1) * s + k - (d + b + e)))  # ceil_mode: the last window may overhang
            for (b, e), o, s, k, d in zip(pads, out_hw, strides, kernel, in_hw)]
    is_max = node.op_type == "MaxPool"
    include_pad = node.attributes.get_int("count_include_pad", 0)
    padding = _padding(in_hw, kernel, strides, [1, 1], pads)
    if padding == SAME and not is_max and include_pad:
        padding = None  # TFLite's SAME average excludes the padding
    source = lo.nhwc_input(x)
    if padding is None:
        if not is_max and not include_pad:
            raise UnsupportedError("tflite: AveragePool with asymmetric padding that excludes the pad")
        source = _explicit_pad(lo, source, pads, node.outputs[0].name, -3.4e38 if is_max else 0.0)
        padding = VALID
    options = lo.w.options("Pool2D", padding=padding, strideH=strides[0], strideW=strides[1],
                           filterHeight=kernel[0], filterWidth=kernel[1], fusedActivationFunction=0)
    lo.emit_2d("MAX_POOL_2D" if is_max else "AVERAGE_POOL_2D", [source],
               lo.output(node.outputs[0], lo.channels_last(rank)), options)


_RESIZE_MODES = {
    ("nearest", "asymmetric", "floor"): ("RESIZE_NEAREST_NEIGHBOR", False, False),
    ("nearest", "half_pixel", "round_prefer_ceil"): ("RESIZE_NEAREST_NEIGHBOR", False, True),
    ("nearest", "align_corners", "round_prefer_ceil"): ("RESIZE_NEAREST_NEIGHBOR", True, False),
    ("linear", "half_pixel", None): ("RESIZE_BILINEAR", False, True),
    ("linear", "pytorch_half_pixel", None): ("RESIZE_BILINEAR", False, True),
    ("linear", "align_corners", None): ("RESIZE_BILINEAR", True, False),
    ("linear", "asymmetric", None): ("RESIZE_BILINEAR", False, False),
}


@lowers("Resize", "Upsample")
def lower_resize(lo: Lowering, node: ir.Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    in_shape, out_shape = lo.shape(x), lo.shape(y)
    if len(in_shape) != 4 or in_shape[:2] != out_shape[:2]:
        raise UnsupportedError("tflite: Resize other than of H and W of a 4-D tensor")
    mode = node.attributes.get_string("mode", "nearest")
    transform = node.attributes.get_string("coordinate_transformation_mode", "half_pixel")
    nearest = node.attributes.get_string("nearest_mode", "round_prefer_floor") if mode == "nearest" else None
    if transform == "pytorch_half_pixel" and mode == "nearest":
        transform = "half_pixel"
    exact_multiple = all(o % i == 0 for i, o in zip(in_shape[2:], out_shape[2:]))
    if mode == "nearest" and exact_multiple and transform in ("asymmetric", "half_pixel"):
        # integer upscaling: every source index is floor(out / factor) under these modes
        key = ("nearest", "asymmetric", "floor")
    else:
        key = (mode, transform, nearest)
    if key not in _RESIZE_MODES:
        raise UnsupportedError(f"tflite: Resize mode={mode} coordinate_transformation_mode={transform}"
                               f"{f' nearest_mode={nearest}' if nearest else ''}")
    builtin, align, half = _RESIZE_MODES[key]
    factor = out_shape[2] // in_shape[2]
    power_of_two = factor > 1 and factor & (factor - 1) == 0
    if key == ("nearest", "asymmetric", "floor") and exact_multiple and out_shape[3] // in_shape[3] == factor \
            and power_of_two:
        _nearest_by_depth_to_space(lo, x, y, factor)
        return
    kind = "ResizeNearestNeighbor" if builtin.endswith("NEIGHBOR") else "ResizeBilinear"
    lo.emit(builtin, [lo.input(x, NCHW_TO_NHWC), lo.int32(out_shape[2:])], [lo.output(y, NCHW_TO_NHWC)],
            lo.w.options(kind, alignCorners=align, halfPixelCenters=half))


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
                     bias: np.ndarray | None) -> None:
    """``x @ weight_nk.T + bias`` over the last stored axis (which must be the ONNX last axis)."""
    n = weight_nk.shape[0]
    bias_index = lo.constant("fc/bias", (bias if bias is not None else np.zeros(n)).astype(np.float32))
    options = lo.w.options("FullyConnected", fusedActivationFunction=0, keepNumDims=len(perm) > 2)
    lo.emit("FULLY_CONNECTED", [source, lo.constant("fc/weights", weight_nk.astype(np.float32)), bias_index],
            [lo.output(node.outputs[0], perm)], options)


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
        _fully_connected(lo, node, *_last_axis_last(lo, a), weight.T, None)
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
    if c is not None:
        bias = lo.const(c)
        if bias is None or bias.size not in (1, n) or (bias.ndim == 2 and bias.shape[0] != 1):
            raise UnsupportedError("tflite: Gemm with a C that is not a per-column constant")
        bias = np.broadcast_to(bias.reshape(-1), (n,)) * beta
    if not node.attributes.get_int("transA", 0) and (beta == 1.0 or c is None) and _int8_fully_connected(
            lo, node, 0 if node.attributes.get_int("transB", 0) else 1, alpha, c):
        return
    if node.attributes.get_int("transA", 0):
        _fully_connected(lo, node, lo.input(a, (1, 0)), (0, 1), weight_nk, bias)  # A^T in ONNX order
    else:
        _fully_connected(lo, node, *_last_axis_last(lo, a), weight_nk, bias)


@lowers("LayerNormalization")
def lower_layer_norm(lo: Lowering, node: ir.Node) -> None:
    """Decomposed: mean, centre, mean of squares, RSQRT, scale, shift, in the stored layout."""
    x = node.inputs[0]
    rank = len(lo.shape(x))
    axis = node.attributes.get_int("axis", -1)
    axis = axis + rank if axis < 0 else axis
    eps = node.attributes.get_float("epsilon", 1e-5)
    perm = lo.perm(x)
    axes = lo.int32(sorted(perm.index(a) for a in range(axis, rank)))
    src = lo.input(x)
    shape = lo.w.shape(src)
    reduced = tuple(1 if perm[i] >= axis else d for i, d in enumerate(shape))
    name = node.outputs[0].name
    mean, centred = lo.temp(f"{name}/mean", reduced), lo.temp(f"{name}/centred", shape)
    square, var = lo.temp(f"{name}/square", shape), lo.temp(f"{name}/var", reduced)
    var_eps, inv = lo.temp(f"{name}/var_eps", reduced), lo.temp(f"{name}/rstd", reduced)
    reducer = lo.w.options("Reducer", keepDims=True)
    none = {"fusedActivationFunction": 0}
    lo.emit("MEAN", [src, axes], [mean], reducer)
    lo.emit("SUB", [src, mean], [centred], lo.w.options("Sub", **none))
    lo.emit("MUL", [centred, centred], [square], lo.w.options("Mul", **none))
    lo.emit("MEAN", [square, axes], [var], lo.w.options("Reducer", keepDims=True))
    lo.emit("ADD", [var, lo.scalar(eps)], [var_eps], lo.w.options("Add", **none))
    lo.emit("RSQRT", [var_eps], [inv])
    scale = node.inputs[1] if len(node.inputs) > 1 else None
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    steps = [("MUL", inv, "Mul")]
    if scale is not None:
        steps.append(("MUL", lo.broadcast_input(scale, rank, perm), "Mul"))
    if bias is not None:
        steps.append(("ADD", lo.broadcast_input(bias, rank, perm), "Add"))
    current = centred
    for i, (builtin, operand, kind) in enumerate(steps):
        out = lo.output(node.outputs[0], perm) if i == len(steps) - 1 else lo.temp(f"{name}/{i}", shape)
        lo.emit(builtin, [current, operand], [out], lo.w.options(kind, **none))
        current = out
