"""A real signal's ``DFT`` as a ``MatMul`` with its Fourier basis, an ``STFT`` as a
strided ``Conv`` with the windowed basis, on every backend.

Audio front-ends compute spectra in the graph (an ASR package's feature extractors:
Kaldi-style framing, then ``DFT``; Whisper's and NeMo's log-mel, ``STFT``). TFLite has no
Fourier op, TensorRT's parser has no ``DFT``, and OpenVINO 2026.4's ONNX frontend keeps
the real input's trailing 1 in the output of a ``DFT`` (``[..., bins, 1, 2]``): the mel
filter bank's MatMul after it no longer type-checked, and converting the model crashed
the process (a segmentation fault); its CPU plugin runs an ``STFT`` of 30 s of audio in
7.8 s a call, 28x ONNX Runtime's time (as a Conv: 28 ms, 10x faster than ONNX Runtime).
Written as products with constant matrices, every backend runs them as the layers it
knows best.

For a real signal ``x`` of ``N`` samples along the transformed axis, ``dft_length`` ``L``
and ``K`` bins (``L // 2 + 1`` one-sided, else ``L``), bin ``k`` is
``sum_n x[n] cos(2 pi k n / L) - i sum_n x[n] sin(2 pi k n / L)`` over ``n < min(N, L)``
(a longer ``L`` pads with zeros, a shorter one truncates, as ONNX defines it). The basis
is one matrix of ``N x 2K`` columns, real and imaginary parts interleaved, so the
product reshapes to ONNX's ``[..., K, 2]`` directly; it is computed in float64 and stored
in the signal's type. An ``STFT`` is the same basis times the window, applied every
``frame_step`` samples: a ``Conv`` of ``2K`` filters of the window's length.

A complex signal (``[..., N, 2]``) and the inverse transform are the same product with a
``2N x 2L`` basis (:func:`complex_basis`): OpenVINO 2026.4 reads an opset-20 ``DFT``'s
axis input as 1 whatever it holds (a probe's inverse transform validated to cosine
-0.07). Only what is exact this way is rewritten: constant lengths and steps, the
transformed axis the last before the complex one (DFT), a signal of static rank. The
rest stays as it is (and a backend that cannot run it says so by name).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from deploycomp.ir import add_initializer, replace_node
from deploycomp.passes.op_rewrite import OpRewritePass
from deploycomp.passes.rules._util import const

__all__ = ["DFTToMatMulPass", "STFTToConvPass", "fourier_basis"]


def fourier_basis(n: int, length: int, onesided: bool, window: np.ndarray | None = None) -> np.ndarray:
    """``[n, 2K]`` float64: column ``2k`` the cosine of bin ``k``, ``2k + 1`` minus its sine,
    over the first ``min(n, length)`` samples (rows past ``length`` zero), each row scaled
    by ``window`` where given."""
    bins = length // 2 + 1 if onesided else length
    rows = np.arange(min(n, length), dtype=np.float64)[:, None]
    angle = 2 * np.pi * rows * np.arange(bins, dtype=np.float64)[None, :] / length
    basis = np.zeros((n, 2 * bins))
    basis[: rows.shape[0], 0::2] = np.cos(angle)
    basis[: rows.shape[0], 1::2] = -np.sin(angle)
    if window is not None:
        basis[: len(window)] *= np.asarray(window, np.float64)[: n, None]
    return basis


def complex_basis(n: int, length: int, inverse: bool) -> np.ndarray:
    """``[2n, 2L]`` float64 for a complex signal of ``n`` samples stored ``[..., n, 2]``
    (real, imaginary) and flattened: row ``2j`` the real part of sample ``j``, ``2j + 1`` its
    imaginary part; columns as :func:`fourier_basis`'s. ``(a + ib) e^(s i t)`` is
    ``a cos t - s b sin t + i (s a sin t + b cos t)`` with ``s`` -1 forward, +1 inverse (and
    the inverse scaled by ``1 / L``, as ONNX defines it)."""
    sign = 1.0 if inverse else -1.0
    rows = np.arange(min(n, length), dtype=np.float64)[:, None]
    angle = 2 * np.pi * rows * np.arange(length, dtype=np.float64)[None, :] / length
    cos, sin = np.cos(angle), np.sin(angle)
    basis = np.zeros((2 * n, 2 * length))
    m = rows.shape[0]
    basis[0:2 * m:2, 0::2], basis[0:2 * m:2, 1::2] = cos, sign * sin
    basis[1:2 * m:2, 0::2], basis[1:2 * m:2, 1::2] = -sign * sin, cos
    return basis / length if inverse else basis


def _int(value: ir.Value | None) -> int | None:
    array = const(value)
    return int(array.reshape(-1)[0]) if array is not None and array.size == 1 else None


def _reshape_to_bins(graph: ir.Graph, node: ir.Node, flat: ir.Value, rank: int, bins: int) -> ir.Node:
    """``flat`` (``[..., 2K]``, rank ``rank``) as ``[..., K, 2]``: 0 keeps a dim as it is."""
    shape = add_initializer(graph, f"{node.name}_bins_shape", np.array([0] * (rank - 1) + [bins, 2], np.int64))
    return ir.node("Reshape", [flat, shape], name=f"{node.name}_bins")


def _dft(node: ir.Node) -> bool:
    graph, inputs = node.graph, list(node.inputs) + [None] * 3
    x = inputs[0]
    if x is None or x.shape is None or x.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE):
        return False
    rank = len(x.shape)
    if rank < 2 or x.shape[-1] not in (1, 2) or not isinstance(x.shape[-2], int):
        return False  # a length the basis cannot be made for
    attrs = node.attributes
    inverse = attrs.get("inverse") is not None and bool(attrs["inverse"].as_int())
    real = x.shape[-1] == 1
    if len(node.inputs) > 2 and node.inputs[2] is not None:  # opset 20: the axis as an input
        axis = _int(node.inputs[2])
    else:
        axis = attrs["axis"].as_int() if "axis" in attrs else 1
    if axis is None or axis % rank != rank - 2:
        return False  # only the last signal axis (the one before the complex axis)
    n = x.shape[-2]
    length = n if inputs[1] is None else _int(inputs[1])
    if length is None or length < 1:
        return False
    onesided = bool(attrs["onesided"].as_int()) if "onesided" in attrs else False
    if onesided and (inverse or not real):
        return False  # (ONNX takes a one-sided transform of a real signal only)
    if real and not inverse:
        basis = fourier_basis(n, length, onesided)
    else:
        basis = complex_basis(n, length, inverse)
        if real:  # a real signal's inverse: the real parts' rows alone
            basis = basis[0::2]
    weights = add_initializer(graph, f"{node.name}_fourier_basis", basis.astype(x.dtype.numpy()))
    if real:
        flat_axes = add_initializer(graph, f"{node.name}_squeeze_axes", np.array([-1], np.int64))
        flat = ir.node("Squeeze", [x, flat_axes], name=f"{node.name}_real")
    else:  # [..., n, 2] -> [..., 2n], real and imaginary parts interleaved as the basis reads them
        flat_shape = add_initializer(graph, f"{node.name}_flat_shape", np.array([0] * (rank - 2) + [2 * n], np.int64))
        flat = ir.node("Reshape", [x, flat_shape], name=f"{node.name}_flat")
    product = ir.node("MatMul", [flat.outputs[0], weights], name=f"{node.name}_matmul")
    bins = _reshape_to_bins(graph, node, product.outputs[0], rank - 1, basis.shape[1] // 2)
    replace_node(node, [flat, product, bins], "__spectral")
    return True


def _stft(node: ir.Node) -> bool:
    graph, inputs = node.graph, list(node.inputs) + [None] * 4
    signal, step, window, frame_length = inputs[:4]
    if signal is None or signal.shape is None or signal.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16):
        return False
    rank = len(signal.shape)
    if rank not in (2, 3) or (rank == 3 and signal.shape[-1] != 1):
        return False  # complex signal
    hop = _int(step)
    taper = const(window) if window is not None else None
    if hop is None or hop < 1 or (window is not None and taper is None):
        return False
    length = _int(frame_length) if frame_length is not None else (len(taper) if taper is not None else None)
    if length is None or length < 1 or (taper is not None and len(taper) != length):
        return False
    onesided = bool(node.attributes["onesided"].as_int()) if "onesided" in node.attributes else True
    basis = fourier_basis(length, length, onesided, taper)  # [length, 2K]
    weights = add_initializer(graph, f"{node.name}_fourier_filters",
                              basis.T[:, None, :].astype(signal.dtype.numpy()))  # [2K, 1, length]
    new = []
    if rank == 2:
        axes = add_initializer(graph, f"{node.name}_channel_axis", np.array([1], np.int64))
        new.append(ir.node("Unsqueeze", [signal, axes], name=f"{node.name}_channels"))  # [B, 1, T]
    else:
        new.append(ir.node("Transpose", [signal], attributes={"perm": [0, 2, 1]}, name=f"{node.name}_channels"))
    new.append(ir.node("Conv", [new[-1].outputs[0], weights], attributes={"strides": [hop]},
                       name=f"{node.name}_conv"))  # [B, 2K, frames]
    new.append(ir.node("Transpose", [new[-1].outputs[0]], attributes={"perm": [0, 2, 1]},
                       name=f"{node.name}_frames"))  # [B, frames, 2K]
    new.append(_reshape_to_bins(graph, node, new[-1].outputs[0], 3, basis.shape[1] // 2))
    replace_node(node, new, "__spectral")
    return True


class DFTToMatMulPass(OpRewritePass):
    """Every backend: a ``DFT`` over its last signal axis as a ``MatMul``."""

    op_types = frozenset({"DFT"})

    def rewrite(self, node: ir.Node, model: ir.Model) -> bool:
        return _dft(node)


class STFTToConvPass(OpRewritePass):
    """Every backend: a real ``STFT`` with constant step, window and length as a strided ``Conv``."""

    op_types = frozenset({"STFT"})

    def rewrite(self, node: ir.Node, model: ir.Model) -> bool:
        return _stft(node)
