"""Writing a TFLite flatbuffer: tensors, constant buffers, operators, one signature.

Uses the TFLite schema's generated object API that ships with ``ai-edge-litert``
(``ai_edge_litert.schema_py_generated``) and the ``flatbuffers`` package; no
TensorFlow. :class:`FlatbufferWriter` knows nothing about ONNX: the lowering asks it
for tensors and operators by TFLite's own names (``"CONV_2D"``, ``Conv2DOptionsT``)
and it serializes them.

Constant data is written 16-byte aligned (XNNPACK and the NEON kernels read weights
in place from the mapped file; misaligned buffers would be copied first), and equal
constants share one buffer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["FlatbufferWriter", "Quantization", "schema"]

_ALIGN = 16


def schema():
    """The TFLite schema module (imported lazily: ai-edge-litert is an optional extra)."""
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


MIN_VERSION = {"BROADCAST_TO": 2}
"""Builtins whose first version is not 1 (BROADCAST_TO began at 2 when it left the flex ops)."""

_NUMPY_TO_TFLITE = {
    "float32": "FLOAT32", "float16": "FLOAT16", "int32": "INT32", "uint8": "UINT8", "int64": "INT64",
    "bool": "BOOL", "int16": "INT16", "int8": "INT8", "float64": "FLOAT64",
}


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of a tensor: real = scale * (q - zero_point), per tensor or per axis."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0


def _aligned_buffer_type(s):
    class AlignedBufferT(s.BufferT):
        """A buffer whose bytes start on a 16-byte boundary of the file."""

        def Pack(self, builder):
            data = 0
            if self.data is not None:
                raw = np.ascontiguousarray(self.data).view(np.uint8).reshape(-1)
                builder.StartVector(1, raw.size, _ALIGN)
                builder.head -= raw.size
                builder.Bytes[builder.head:builder.head + raw.size] = raw.data  # no intermediate copy
                builder.vectorNumElems = raw.size
                data = builder.EndVector()
            s.BufferStart(builder)
            if self.data is not None:
                s.BufferAddData(builder, data)
            return s.BufferEnd(builder)

    return AlignedBufferT


class FlatbufferWriter:
    def __init__(self, description: str = "deploycomp"):
        self.s = schema()
        self._buffer_type = _aligned_buffer_type(self.s)
        self.buffers: list[Any] = [self.s.BufferT()]  # buffer 0: the empty sentinel
        self._buffer_by_digest: dict[bytes, int] = {}
        self.tensors: list[Any] = []
        self._dtypes: list[str] = []
        self._quant: list[Quantization | None] = []
        self.operators: list[Any] = []
        self.opcodes: list[Any] = []
        self._opcode_index: dict[str, int] = {}
        self.consumers: dict[int, int] = {}
        self.producer: dict[int, int] = {}
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.description = description
        self._names: set[str] = set()

    # tensors ---------------------------------------------------------------------------

    def _unique(self, name: str) -> str:
        base, n = name, 1
        while name in self._names:
            name, n = f"{base}_{n}", n + 1
        self._names.add(name)
        return name

    def tensor(self, name: str, shape: Sequence[int], dtype: str | np.dtype,
               quant: Quantization | None = None, data: np.ndarray | None = None) -> int:
        t = self.s.TensorT()
        t.name = self._unique(name)
        t.shape = np.asarray(list(shape), dtype=np.int32)
        t.type = getattr(self.s.TensorType, _NUMPY_TO_TFLITE[str(np.dtype(dtype))])
        t.hasRank = True
        if quant is not None:
            q = self.s.QuantizationParametersT()
            q.scale = np.asarray(quant.scale, dtype=np.float32)
            q.zeroPoint = np.asarray(quant.zero_point, dtype=np.int64)
            q.quantizedDimension = quant.axis
            t.quantization = q
        if data is not None:
            t.buffer = self._buffer(np.asarray(data, dtype=dtype))
        else:
            t.buffer = 0
        self.tensors.append(t)
        self._dtypes.append(str(np.dtype(dtype)))
        self._quant.append(quant)
        return len(self.tensors) - 1

    def constant(self, name: str, data: np.ndarray, quant: Quantization | None = None) -> int:
        data = np.asarray(data)
        return self.tensor(name, data.shape, data.dtype, quant, data)

    def _buffer(self, data: np.ndarray) -> int:
        data = np.ascontiguousarray(data)
        # hashed in place (a large embedding table was copied once per lowering for its digest)
        digest = hashlib.blake2b(data.reshape(-1).view(np.uint8).data, digest_size=20).digest() + str(data.dtype).encode()
        if digest in self._buffer_by_digest:
            return self._buffer_by_digest[digest]
        b = self._buffer_type()
        b.data = data
        self.buffers.append(b)
        self._buffer_by_digest[digest] = len(self.buffers) - 1
        return len(self.buffers) - 1

    def shape(self, index: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self.tensors[index].shape)

    def dtype(self, index: int) -> str:
        return self._dtypes[index]

    def quantization(self, index: int) -> Quantization | None:
        return self._quant[index]

    def is_constant(self, index: int) -> bool:
        return self.tensors[index].buffer != 0

    # operators ---------------------------------------------------------------------------

    def op(self, builtin: str, inputs: Sequence[int], outputs: Sequence[int], options: Any = None) -> int:
        """Append operator ``builtin`` (a ``BuiltinOperator`` name); ``-1`` marks an omitted input."""
        code = getattr(self.s.BuiltinOperator, builtin)
        if builtin not in self._opcode_index:
            oc = self.s.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)  # 127: "look at builtinCode"
            oc.version = MIN_VERSION.get(builtin, 1)
            self.opcodes.append(oc)
            self._opcode_index[builtin] = len(self.opcodes) - 1
        o = self.s.OperatorT()
        o.opcodeIndex = self._opcode_index[builtin]
        o.inputs = np.asarray(list(inputs), dtype=np.int32)
        o.outputs = np.asarray(list(outputs), dtype=np.int32)
        if options is not None:
            o.builtinOptionsType = getattr(self.s.BuiltinOptions, type(options).__name__[:-1])
            o.builtinOptions = options
        self.operators.append(o)
        index = len(self.operators) - 1
        for i in inputs:
            if i >= 0:
                self.consumers[i] = self.consumers.get(i, 0) + 1
        for i in outputs:
            self.producer[i] = index
        return index

    def builtin(self, op_index: int) -> str:
        """The ``BuiltinOperator`` name of operator ``op_index``."""
        code = self.opcodes[self.operators[op_index].opcodeIndex].builtinCode
        return next(k for k, v in vars(self.s.BuiltinOperator).items() if v == code and not k.startswith("_"))

    def options(self, kind: str, **fields: Any) -> Any:
        """``options("Conv2D", strideH=2)`` -> a filled ``Conv2DOptionsT``."""
        obj = getattr(self.s, f"{kind}OptionsT")()
        for key, value in fields.items():
            if not hasattr(obj, key):
                raise AttributeError(f"{kind}Options has no field {key}")
            setattr(obj, key, value)
        return obj

    def op_counts(self, output_dtype: str | None = None) -> dict[str, int]:
        """Operators by type (only those writing ``output_dtype`` tensors, if given)."""
        return self._counts(lambda name, o: output_dtype is None or self._dtypes[int(o.outputs[0])] == output_dtype)

    def hybrid_op_counts(self) -> dict[str, int]:
        """Dynamic-range (hybrid) operators by type: a float output computed from int8
        weights (the input quantized per sample at run time)."""
        return self._counts(lambda name, o: name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
                            and len(o.inputs) > 1 and self._dtypes[int(o.inputs[1])] == "int8"
                            and self._dtypes[int(o.outputs[0])] == "float32")

    def _counts(self, keep: Callable[[str, Any], bool]) -> dict[str, int]:
        names = {v: k for k, v in vars(self.s.BuiltinOperator).items() if not k.startswith("_")}
        counts: dict[str, int] = {}
        for o in self.operators:
            name = names[self.opcodes[o.opcodeIndex].builtinCode]
            if keep(name, o):
                counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items()))

    def share_repeated_weights(self, limit_bytes: int) -> int:
        """Give float32 weights that several ``FULLY_CONNECTED`` read one runtime copy each
        (a ``RESHAPE`` to its own shape) that they read instead, those with the most copies
        first, until the copies XNNPACK would pack of the rest, one per reader, come to at
        most ``limit_bytes``; how many weights. XNNPACK packs
        a static weight for each operator reading it: a recurrent layer written out step by
        step reads one weight at every step (a speaker embedder's three 80-step LSTMs took
        2.2 GB in LiteRT, 48 MB of them weights). Read as a runtime tensor it is packed as
        each step runs, in memory that is reused (the embedder: 103 MB, and 55 ms here
        instead of 78); with small weights the copies run faster, hence the limit. Only
        readers of one row (a recurrent step's state) count: a transformer's products of
        44 rows ran 2.8x slower on a shared runtime weight (449 against 161 ms here, in
        208 MB instead of 620), a price its memory budget is left to weigh."""
        fc = self._opcode_index.get("FULLY_CONNECTED")
        if fc is None:
            return 0
        readers: dict[int, list[int]] = {}
        for k, op in enumerate(self.operators):  # (row vectors only: see the docstring)
            if (op.opcodeIndex == fc and len(op.inputs) > 1 and self._static_float(int(op.inputs[1]))
                    and int(np.prod(self.shape(int(op.inputs[0]))[:-1])) == 1):
                readers.setdefault(int(op.inputs[1]), []).append(k)
        copies = {w: (len(ops) - 1) * 4 * int(np.prod(self.shape(w))) for w, ops in readers.items() if len(ops) > 1}
        left, shared = sum(copies.values()), 0
        for weight in sorted(copies, key=copies.get, reverse=True):
            if left <= limit_bytes:
                break
            left -= copies[weight]
            ops = readers[weight]
            copy = self.tensor(f"{self.tensors[weight].name}/runtime", self.shape(weight), np.float32)
            shape = self.constant(f"{self.tensors[weight].name}/shape", np.asarray(self.shape(weight), np.int32))
            self.op("RESHAPE", [weight, shape], [copy], self.options("Reshape", newShape=list(self.shape(weight))))
            self.operators.insert(ops[0], self.operators.pop())  # before its first reader
            for k in ops:
                self.operators[k + 1].inputs[1] = copy
            shared += 1
            readers = {w: [k + 1 if k >= ops[0] else k for k in o] for w, o in readers.items()}
        if shared:
            self.producer = {int(o): k for k, op in enumerate(self.operators) for o in op.outputs}
        return shared

    def _static_float(self, index: int) -> bool:
        """A float32 weight XNNPACK holds as static data: a constant, or float16 constant
        dequantized (an fp16 build's weights)."""
        if self._dtypes[index] != "float32":
            return False
        if self.is_constant(index):
            return True
        k = self.producer.get(index)
        return (k is not None and self.operators[k].opcodeIndex == self._opcode_index.get("DEQUANTIZE")
                and self.is_constant(int(self.operators[k].inputs[0])))

    # serialization ------------------------------------------------------------------------

    def serialize(self) -> bytes:
        import flatbuffers

        s = self.s
        sub = s.SubGraphT()
        sub.tensors, sub.operators = self.tensors, self.operators
        sub.inputs = np.asarray(self.inputs, dtype=np.int32)
        sub.outputs = np.asarray(self.outputs, dtype=np.int32)
        sub.name = "main"
        sig = s.SignatureDefT()
        sig.signatureKey = "serving_default"
        sig.subgraphIndex = 0
        sig.inputs = [self._tensor_map(i) for i in self.inputs]
        sig.outputs = [self._tensor_map(i) for i in self.outputs]
        model = s.ModelT()
        model.version = 3
        model.description = self.description
        model.operatorCodes, model.subgraphs, model.buffers = self.opcodes, [sub], self.buffers
        model.signatureDefs = [sig]
        size = sum(b.data.nbytes for b in self.buffers if b.data is not None)
        builder = flatbuffers.Builder(size + (1 << 20))
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(memoryview(builder.Bytes)[builder.Head():])  # one copy (Output() makes a second)

    def _tensor_map(self, index: int):
        m = self.s.TensorMapT()
        m.name = self.tensors[index].name
        m.tensorIndex = index
        return m
