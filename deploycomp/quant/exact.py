"""ONNX Runtime session options that compute a QDQ graph's arithmetic as written.

ORT's own int8 kernels (QLinearConv and friends, which its QDQ fusions substitute for
DequantizeLinear -> op -> QuantizeLinear) are not the arithmetic the runtimes we target
implement: measured here (AVX2, no VNNI) they put 70x more error on PP-OCR cls's s8 QDQ
graph than the arithmetic itself, which LiteRT's int8 kernels reproduce to 1e-16. So the
QDQ fusions are switched off (``session.disable_quant_qdq``), while every *float*
optimization stays on: level "all" (NCHWc convolutions, Conv+activation fusion) runs the
float parts of a quantize-one copy 1.6x faster than the basic level that used to stand
in for "no fusions" (PP-OCRv3 det, 640x640, one thread: 0.107 s per sample instead of
0.174 s). The float optimizations change the float summation order, which int8 rounding
can amplify: det's all-int8 error moved by 3e-4 of itself, PP-OCRv3 rec's TensorRT QDQ
model went from cosine 0.9778 to 0.9749 on its validation lines. Neither order is the
device's: its kernels sum in their own.
"""

from __future__ import annotations

__all__ = ["ARENA_ROOM_BYTES", "exact_qdq_options", "written_options"]

ARENA_ROOM_BYTES = 4 << 30
"""Below this much memory free (:func:`deploycomp.memory.available_bytes`: the machine's,
a container's limit, ``ulimit -v``) when a session is made, it allocates without ONNX
Runtime's CPU arena, which keeps each session's peak and rounds its growth up. The
arithmetic is the same; the int8 search of U^2-Net-p (320x320, 2 sessions at a time)
peaked at 2.7 GB instead of 3.9 and took 9% longer (110 against 101 s): in a 3.5 GB
container it had been killed by the kernel at 3.7 GB."""


def _arena(options) -> None:
    from deploycomp.memory import available_bytes

    free = available_bytes()
    options.enable_cpu_mem_arena = free is None or free >= ARENA_ROOM_BYTES


def exact_qdq_options(threads: int | None = None):
    """``onnxruntime.SessionOptions`` for exact QDQ arithmetic; ``threads`` intra-op threads
    (ORT's default when None), quiet logging."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # errors are raised (and said in one line), not printed too
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    _arena(options)
    if threads:
        options.intra_op_num_threads = threads
    return options


def written_options(threads: int | None = None):
    """``onnxruntime.SessionOptions`` that run every node on its own, as ONNX defines it:
    no fusion at all, float or int8. What a model that arrives int8 is judged against
    (its QDQ as written). :func:`exact_qdq_options` keeps ORT's float fusions for speed;
    on a model whose outputs amplify int8 roundings they are a runtime of their own: Smart
    Turn's Whisper encoder (LayerNorm, GELU and attention fused) gave an end-of-turn
    probability 0.14 of its scale away from the unfused graph, more than LiteRT's
    XNNPACK kernels were from the unfused one (0.22 against ONNX Runtime's own 0.31)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # errors are raised (and said in one line), not printed too
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    _arena(options)
    if threads:
        options.intra_op_num_threads = threads
    return options
