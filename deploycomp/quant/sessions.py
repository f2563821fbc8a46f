"""ONNX Runtime sessions on an in-memory model, its weights handed over in place.

Calibration and the int8 search make many sessions of nearly the same model: the float
model with other extra outputs (each calibration pass), QDQ copies whose weights are
the float model's own arrays. Serialized whole, every session copied every weight three
times (into the protobuf, through its serialization, into ONNX Runtime's buffers): on
paraphrase-MiniLM-L3 (69 MB of weights) that was 1.1 s of a 6.4 s int8 build, spent five
times over. Here the large weights leave the serialized model as external-data
references and reach ONNX Runtime as ``OrtValue`` views of the arrays the model holds
(``SessionOptions.add_external_initializers``): what is serialized is the graph.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np
import onnx_ir as ir

__all__ = ["IN_PLACE_BYTES", "in_place_reference", "session"]

IN_PLACE_BYTES = 1 << 16
"""Initializers of at least this many bytes are handed over in place; smaller ones are
serialized (as the shape arithmetic's constants, which ONNX Runtime folds anyway)."""

_LOCATION = "deploycomp-in-memory"
"""The external-data location the serialized model names: never a file; every tensor
that names it is replaced before ONNX Runtime reads anything."""

_SERIALIZING = threading.Lock()
"""Held while a model's initializers and outputs are swapped for its serialization: two
threads making sessions of one model would otherwise see each other's swaps. Serializing
holds the GIL anyway, so the lock costs nothing measurable."""

_NATIVE = frozenset(np.dtype(t) for t in (np.float32, np.float16, np.float64, np.int8, np.uint8, np.int16,
                                          np.uint16, np.int32, np.uint32, np.int64, np.uint64, np.bool_))


def _in_place(tensor: ir.TensorProtocol | None) -> np.ndarray | None:
    """``tensor``'s values as a C-contiguous array ONNX Runtime can read in place, where it
    is large enough to be worth it (None otherwise)."""
    if tensor is None or tensor.nbytes < IN_PLACE_BYTES:
        return None
    try:
        array = tensor.numpy()
    except Exception:  # noqa: BLE001 - a tensor that cannot be viewed is serialized as before
        return None
    if array.dtype not in _NATIVE or not array.dtype.isnative:
        return None  # bfloat16, float8, int4: serialized
    return np.ascontiguousarray(array)


def in_place_reference(name: str, tensor: ir.TensorProtocol | None) -> tuple[ir.ExternalTensor, np.ndarray] | None:
    """Where ``tensor`` is worth handing over in place: the reference a serialized model
    names it by, and the array :func:`session` registers under ``name``."""
    array = _in_place(tensor)
    if array is None:
        return None
    return ir.ExternalTensor(_LOCATION, 0, array.nbytes, tensor.dtype, shape=tensor.shape, name=name), array


def session(model: ir.Model | bytes, options: Any, outputs: Sequence[str] = (),
            weights: Sequence[tuple[str, np.ndarray]] = ()):
    """An ``onnxruntime.InferenceSession`` (CPU) of ``model``, with the tensors named in
    ``outputs`` as extra graph outputs (those that exist; a copy of the model would cost
    more than adding them for the serialization). ``options``: a ``SessionOptions`` made
    for this session alone (the weights are registered on it). Bytes are taken as they
    are, with ``weights`` (name, array) the in-place tensors they reference
    (:func:`in_place_reference`)."""
    import onnxruntime as ort

    if isinstance(model, (bytes, bytearray)):
        serialized, names, arrays = model, [n for n, _ in weights], [a for _, a in weights]
    else:
        with _SERIALIZING:
            serialized, names, arrays = _serialized(model, outputs)
    ort_values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]
    if names:
        options.add_external_initializers(names, ort_values)
    made = ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])
    made._deploycomp_weights = (ort_values, arrays)  # ONNX Runtime reads them in place: kept alive with it
    return made


def _serialized(model: ir.Model, outputs: Sequence[str]) -> tuple[bytes, list[str], list[np.ndarray]]:
    """``model`` serialized with the extra ``outputs`` and its large weights as in-place
    references (their names and arrays); the model is as it was afterwards."""
    graph = model.graph
    values = {v.name: v for n in graph for v in n.outputs}
    values.update({v.name: v for v in graph.inputs})
    present, original = {v.name for v in graph.outputs}, len(graph.outputs)
    swapped: list[tuple[ir.Value, Any]] = []
    names: list[str] = []
    arrays: list[np.ndarray] = []
    try:
        graph.outputs.extend(values[name] for name in outputs if name not in present and name in values)
        read = {id(v) for v in graph.outputs}
        for value in graph.initializers.values():
            if not value.name or not (value.uses() or id(value) in read):
                continue  # ONNX Runtime drops an unread initializer before it takes the in-place ones
            reference = in_place_reference(value.name, value.const_value)
            if reference is None:
                continue
            swapped.append((value, value.const_value))
            value.const_value, array = reference
            names.append(value.name)
            arrays.append(array)
        serialized = ir.to_proto(model).SerializeToString()
    finally:
        for value, tensor in swapped:
            value.const_value = tensor
        while len(graph.outputs) > original:
            graph.outputs.pop()
    return serialized, names, arrays
