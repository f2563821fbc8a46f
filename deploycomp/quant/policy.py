"""Where QuantizeLinear/DequantizeLinear go, and in which encoding, per backend: data.

The backends disagree, and getting it wrong is silent (measured for this project):

* **openvino**: reads QDQ ONNX and folds each pair into a FakeQuantize; its
  low-precision transformations then run int8 kernels for Conv/MatMul whose inputs are
  quantized. It mis-executes signed int8 *activations* from some tools while u8
  activations run correctly, so activations are u8 asymmetric, weights s8 symmetric
  per output channel, biases float.
* **tensorrt**: NVIDIA's ONNX parser rejects non-zero zero points and int32-bias
  DequantizeLinear: s8 symmetric activations, s8 per-channel weights, float biases;
  residual Adds get QDQ on their inputs so the builder can fuse them into the conv.
* **tflite**: the TFLite int8 spec: s8 asymmetric activations, s8 symmetric per-axis
  weights, int32 biases with ``scale = input_scale * weight_scale`` and zero point 0,
  so the TFLite lowering maps each QDQ 1:1 onto int8 tensors.

Boosters: ``equalize`` (into depthwise readers), ``smooth`` (a shift and scale searched
per tensor read by pointwise layers, kept only if the whole model's error falls) and
``bias-correction`` are on for openvino and tensorrt. Measured all-int8 output NMSE in
each backend's QDQ arithmetic, equalize + bias-correction -> all three: PP-OCR rec
0.027 -> 0.017 (OpenVINO) and 0.066 -> 0.015 (TensorRT), det 0.015 -> 0.014 and
0.025 -> 0.014; cls rose (0.0053 -> 0.037 in TensorRT), which the check catches. For
tflite only ``equalize``: with bias-correction PP-OCR cls's error rose (0.002 -> 0.11)
and smoothing did not lower rec's or det's; equalize alone, side by side on Android with
the corpus's data (2026-12-06), took the face detector from 46 to 63 of 63 layers int8
(validation 0.9825 -> 0.9949, build 45 -> 17 s), PP-OCRv6 tiny rec from 29 to 30 static
and 0 to 7 dynamic-range layers of 39 (cosine 0.9877 -> 0.9861), PP-OCRv3 det 64 -> 66,
PP-OCR cls (the showcase, built-in samples) 0.917 -> 0.965; PP-OCRv5 det and PP-OCRv6
tiny det lost 1-4 layers, and PP-OCRv5 rec's search (the same static choice either way)
missed its last dynamic-range check by 0.0005 (85% -> 14% of the MACs int8). Adding
bias-correction undid the face detector's gain.
``--int8-boosters`` overrides.

The *inputs* of the listed ops are quantized (and, for TFLite, their outputs); a tensor
read by several quantized consumers gets one QDQ pair. Graph outputs are never quantized.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable

__all__ = ["INT8_DOT_PRODUCT_FLAGS", "POLICIES", "QDQPolicy", "policy_for", "weight_axis"]


@dataclass(frozen=True)
class QDQPolicy:
    name: str
    compute_ops: tuple[str, ...]
    """Ops whose activation inputs and constant weights are quantized."""
    elementwise_ops: tuple[str, ...] = ()
    """Ops whose non-constant inputs are all quantized (e.g. residual Add)."""
    activation_dtype: str = "uint8"
    activation_symmetric: bool = False
    range_method: str = "auto"
    """A range method of :mod:`deploycomp.quant.observers`, or ``auto``: the one of
    :data:`deploycomp.quant.RANGE_CHOICES` with the lowest whole-model int8 error."""
    int32_bias: bool = False
    """Store Conv/Gemm biases as int32 with scale = input_scale * weight_scale (TFLite)."""
    quantize_outputs: bool = False
    """Also quantize the outputs of quantized ops (after a Relu/Relu6 that follows them),
    so a runtime with integer kernels (TFLite) knows each op's int8 output scale."""
    elementwise_with_constants: bool = False
    """Quantize element-wise ops with a constant operand too (an affine ``x * a + b`` after
    an activation); the runtime quantizes the constant itself (TFLite int8 MUL/ADD)."""
    quantize_graph_outputs: bool = False
    """Quantize the model's outputs too (set for a full-integer build, ``--int8-io``): the
    last DequantizeLinear then tells the runtime the int8 encoding of each output."""
    shared_scale_ops: tuple[str, ...] = ()
    """Ops whose output must carry its input's scale and zero point (TFLite's int8 spec for
    pooling, resize, reshape, split, slice, pad): their quantized outputs reuse the range
    of the tensor they read, so no requantize is needed between them and the next op."""
    weight_qmax: int = 127
    """Weights use [-weight_qmax, weight_qmax] (63 where the CPU's int8 kernel saturates,
    see :func:`policy_for`)."""
    boosters: tuple[str, ...] = ("equalize", "smooth", "bias-correction")
    """Training-free boosters run by default (see :data:`deploycomp.quant.BOOSTERS`)."""
    @property
    def per_tensor_constant_ops(self) -> tuple[str, ...]:
        """Ops whose constant operand the runtime itself quantizes, one scale per tensor
        (TFLite's int8 MUL/ADD): a per-channel constant there loses its small channels,
        so equalization and smoothing leave such producers alone."""
        return self.elementwise_ops if self.elementwise_with_constants else ()

    dynamic_ops: tuple[str, ...] = ()
    """Compute ops the runtime also has a dynamic-range (hybrid) kernel for: float
    activations, int8 weights, the input quantized per sample as it arrives. A layer the
    search keeps out of the static encoding is tried that way (:mod:`deploycomp.quant.dynamic`)."""

    fixed_output_params: tuple[tuple[str, float, int], ...] = ()
    """(op type, scale, zero point) the runtime's int8 kernel requires of that op's output,
    e.g. TFLite's LOGISTIC writes int8 with scale 1/256 and zero point -128."""

    explicit_equalization: bool = False
    """``equalize`` also scales the channels of depthwise inputs whose producer cannot take
    the scale, through a ``Mul`` of their own
    (:func:`deploycomp.quant.equalization.explicit_sites`), and ``smooth`` the inputs of
    channel-mixing layers likewise (:func:`deploycomp.quant.smoothing.searchable_sites`).
    Measured on the corpus in TensorRT's encoding (smoothing's Muls added): PP-OCRv5 rec
    49% -> 65% of heavy layers int8, the layout detector 91% -> 95% (validation cosine
    0.983 -> 0.990), PP-OCRv3 rec 96% -> 98%; MiniLM 96% -> 92%."""

    requant_bound: float | None = None
    """The largest input scale x weight scale / output scale the runtime's int8 compute
    kernels take (XNNPACK: below 256, else it refuses to create the runtime). An output
    range that would give a finer step is widened to meet it
    (:func:`deploycomp.quant.qdq.within_requant_bound`)."""

    shift_one_sided: bool = False
    """With symmetric activations, encode a one-sided input of a Conv, Gemm or MatMul (a
    ReLU's output, an image in 0..255) shifted to two-sided, the shift folded into the layer's bias
    (:func:`deploycomp.quant.qdq.shift_one_sided`): the step an asymmetric encoding has,
    in a runtime that takes zero point 0 only (TensorRT)."""

    per_channel_depthwise_inputs: bool = False
    """Encode a tensor read only by depthwise convolutions with a scale per channel
    (QuantizeLinear ``axis=1``). A depthwise output channel reads one input channel, so
    the runtime moves each channel's scale past the convolution and still runs it in
    int8 (OpenVINO 2026.4 CPU: ``u8`` GroupConvolution, checked by the test suite). The
    channels of such a tensor differ by orders of magnitude after HardSwish (PP-OCRv3
    rec: per-channel maxima 0.07 to 118), and one scale rounds most of them to zero:
    all-int8 output NMSE 0.50 with one scale per tensor, 0.003 with one per channel.
    TFLite's and TensorRT's int8 kernels take one activation scale per tensor only."""

    int8_tables: bool = False
    """Store a large constant table that only ``Gather`` reads (a transformer's word
    embeddings) as int8 rows, each with its own scale, dequantized before the gather
    (:data:`deploycomp.quant.qdq.TABLE_BYTES`): MiniLM's 30522 x 384 embedding had stayed
    fp32 in every int8 bundle, 47 of its 52 MB, larger than the fp16 bundle (35 MB). The
    runtime keeps the rows int8 (OpenVINO: a compressed constant; TFLite: a DEQUANTIZE of
    a constant, done once). Not TensorRT's: its ONNX parser takes the pattern, but what its
    engine builder makes of it needs a GPU to see."""


POLICIES: dict[str, QDQPolicy] = {
    "openvino": QDQPolicy("openvino", ("Conv", "ConvTranspose", "MatMul", "Gemm"), per_channel_depthwise_inputs=True,
                          int8_tables=True),
    "tensorrt": QDQPolicy(
        "tensorrt", ("Conv", "ConvTranspose", "MatMul", "Gemm"), ("Add",), "int8", True, explicit_equalization=True,
        shift_one_sided=True),
    "tflite": QDQPolicy("tflite", ("Conv", "ConvTranspose", "MatMul", "Gemm"), ("Add", "Mul"), "int8", False,
                        int32_bias=True, quantize_outputs=True, elementwise_with_constants=True,
                        shared_scale_ops=("MaxPool", "Resize", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Split",
                                          "Slice", "Pad", "Transpose"),
                        fixed_output_params=(("Sigmoid", 1 / 256, -128), ("Softmax", 1 / 256, -128)),
                        dynamic_ops=("Conv", "MatMul", "Gemm"), requant_bound=255.0, int8_tables=True,
                        # equalize only (see above)
                        boosters=("equalize",)),
    "onnxruntime": QDQPolicy("onnxruntime", ("Conv", "ConvTranspose", "MatMul", "Gemm"), (), "uint8", False),
}


INT8_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
"""x86 flags whose int8 dot product accumulates u8 x s8 straight into int32."""


def policy_for(backend: str, cpu_features: Iterable[str] = ()) -> QDQPolicy:
    """The backend's policy, fitted to the target's CPU.

    Without VNNI or AMX, x86 int8 kernels (OpenVINO's oneDNN, ORT's MLAS) multiply u8
    activations by s8 weights with ``vpmaddubsw``, which adds each pair of products into
    a *saturating int16*: 255 * 127 * 2 > 32767. Measured here (AVX2): with 8-bit weights
    OpenVINO's output drifts from the QDQ arithmetic (output NMSE against it: YOLOv8n
    0.0032, PP-OCR rec 0.106); with weights in [-63, 63] no pair can saturate and it
    matches (0.00001, 0.0014). So CPU targets without VNNI/AMX get 7-bit weights (NNCF's
    "overflow fix" does the same, by default on the first layer only).
    """
    policy = POLICIES[backend]
    features = set(cpu_features)
    if backend in ("openvino", "onnxruntime") and features and not features & INT8_DOT_PRODUCT_FLAGS:
        return replace(policy, weight_qmax=63)
    return policy


def weight_axis(op_type: str, attrs: dict, rank: int) -> int:
    """The output-channel axis of a compute op's weight (per-channel scales run along it)."""
    if op_type == "ConvTranspose":
        return 1  # (C_in, C_out / group, k...)
    if op_type == "Gemm":
        return 0 if attrs.get("transB", 0) else 1
    if op_type == "MatMul":
        return rank - 1  # (..., K, N)
    return 0  # Conv: (C_out, C_in / group, k...)
