"""ONNX Runtime's fused ``com.microsoft`` ops, as the core ops they fuse.

A transformer exported and then run through ONNX Runtime's optimizer (``optimum``'s
``-O2``, ``onnxruntime.transformers.optimizer``) arrives with ops only ONNX Runtime
defines. OpenVINO reads several; TFLite and TensorRT refused a model for its
``BiasGelu`` and ``SkipLayerNormalization``. Each of those below is a few core ops,
exactly as ONNX Runtime's contrib-op spec defines it:

* ``Gelu``: ``0.5 x (1 + erf(x / sqrt 2))``; ``BiasGelu(a, b)``: ``Gelu(a + b)``;
* ``FastGelu(x[, bias])``: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, ``x`` with the bias added;
* ``QuickGelu(x)``: ``x sigmoid(alpha x)`` (``alpha`` 1.702 unless given);
* ``BiasAdd(x, bias, skip)``: ``x + bias + skip``;
* ``SkipLayerNormalization(x, skip, gamma[, beta[, bias]])``: ``s = x + skip (+ bias)``,
  then ``LayerNormalization(s, gamma, beta)`` over the last axis (its fourth output is
  ``s``; the mean and inverse deviation outputs, training-only, stay unsupported);
* ``SkipSimplifiedLayerNormalization``: the same ``s`` then ``s / sqrt(mean(s^2) + eps) gamma``;
* ``SimplifiedLayerNormalization(x, gamma)`` (ONNX Runtime's RMS norm, which its optimizer
  writes in the *default* domain, ``SimplifiedLayerNormFusion``; the loader reads it as a
  ``com.microsoft`` op: :data:`deploycomp.ir.ORT_DEFAULT_DOMAIN_OPS`): ``x / sqrt(mean(x^2)
  + eps) gamma`` over the axes from ``axis`` on, in float32 for a float16 ``x``
  (``stash_type`` 1). Rewritten on every backend (no runtime reads it in that domain);
* ``FusedMatMul(a, b)``: ``alpha (a or a^T) @ (b or b^T)``, transposing the last two axes;
* ``FusedConv(x, w[, b[, z]])`` (ONNX Runtime's extended optimization level saves it):
  ``Conv``, plus ``z`` where given, then its ``activation`` (``Relu``, ``Tanh``,
  ``Sigmoid``, ``LeakyRelu``, ``Clip``, ``HardSigmoid``, their ``activation_params``);
* ``Attention(x, W, b[, mask])``: ``q, k, v = x W + b`` split, per head
  ``softmax(q k^T scale + mask) v``, the heads joined; the mask a 0/1 one (masked keys
  get ``mask_filter_value``) or each sequence's length, ``unidirectional`` causal.
  Without past state, relative position bias or rotary embedding;
* ``EmbedLayerNormalization``: word + position (+ segment) embeddings, then
  ``LayerNormalization``; its ``mask_index`` the count of attended tokens per sequence
  (what the Attention after it reads as lengths).
* ``DynamicQuantizeLSTM`` (``quantize_dynamic`` of an LSTM): the ``LSTM`` on its int8
  weights' float values, which is not exact: ONNX Runtime also rounds the input and the
  hidden state to u8 at each step (a diacritizer's characters agree with it as often as
  OpenVINO's own kernel does, 99.4%).

The GELU forms are written out with ``Erf`` / ``Tanh``, as exporters write them, so the
optimizer's activation rules fuse them back into ``Gelu`` where the opset has it. What
this leaves (past state, other fused subgraphs) a backend that cannot run says so by
name. TFLite's and TensorRT's pipelines run this pass; OpenVINO runs these ops itself
(:mod:`deploycomp.passes.pipelines`).
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from deploycomp.ir import add_initializer, replace_value
from deploycomp.passes.replacement import Replacement
from deploycomp.passes.rules._util import const as constant

__all__ = ["ContribOpsToCorePass"]

MS_DOMAIN = "com.microsoft"


class _Emit(Replacement):
    """Core nodes for one contrib node, in the float ``dtype`` it reads."""

    def __init__(self, graph: ir.Graph, node: ir.Node, opset: int):
        super().__init__(graph, node)
        self.opset = opset
        x = next((v for v in node.inputs if v is not None), None)
        self.dtype = x.dtype.numpy() if x is not None and x.dtype is not None else np.dtype(np.float32)

    def const(self, value, dtype=None) -> ir.Value:
        return add_initializer(self.graph, f"{self.base}__c", np.asarray(value, dtype=dtype or self.dtype))

    def gelu(self, x: ir.Value) -> ir.Value:
        erf = self("Erf", self("Div", x, self.const(math.sqrt(2.0))))
        return self("Mul", self("Mul", x, self.const(0.5)), self("Add", erf, self.const(1.0)))


def _inputs(node: ir.Node) -> list[ir.Value | None]:
    return list(node.inputs) + [None] * 12


def _gelu(e: _Emit, node: ir.Node) -> list[ir.Value]:
    return [e.gelu(node.inputs[0])]


def _biasgelu(e: _Emit, node: ir.Node) -> list[ir.Value]:
    return [e.gelu(e("Add", node.inputs[0], node.inputs[1]))]


def _fastgelu(e: _Emit, node: ir.Node) -> list[ir.Value]:
    x, bias = _inputs(node)[:2]
    if bias is not None:
        x = e("Add", x, bias)
    cube = e("Mul", e("Mul", x, x), x)
    inner = e("Mul", e("Add", x, e("Mul", cube, e.const(0.044715))), e.const(math.sqrt(2.0 / math.pi)))
    return [e("Mul", e("Mul", x, e.const(0.5)), e("Add", e("Tanh", inner), e.const(1.0)))]


def _quickgelu(e: _Emit, node: ir.Node) -> list[ir.Value]:
    x = node.inputs[0]
    alpha = node.attributes.get_float("alpha", 1.702)
    return [e("Mul", x, e("Sigmoid", e("Mul", x, e.const(alpha))))]


def _biasadd(e: _Emit, node: ir.Node) -> list[ir.Value]:
    x, bias, skip = node.inputs[:3]
    return [e("Add", e("Add", x, bias), skip)]


def _skip_sum(e: _Emit, node: ir.Node, bias_index: int) -> ir.Value:
    ins = _inputs(node)
    s = e("Add", ins[0], ins[1])
    return e("Add", s, ins[bias_index]) if ins[bias_index] is not None else s


def _skiplayernormalization(e: _Emit, node: ir.Node) -> list[ir.Value] | None:
    outs = list(node.outputs) + [None] * 4
    if any(v is not None and (v.uses() or v.is_graph_output()) for v in outs[1:3]):
        return None  # mean / inverse std-dev: training outputs, no core op gives them
    ins = _inputs(node)
    s = _skip_sum(e, node, 4)
    eps = node.attributes.get_float("epsilon", 1e-12)
    norm = (s, ins[2]) if ins[3] is None else (s, ins[2], ins[3])
    return [e("LayerNormalization", *norm, axis=-1, epsilon=eps), None, None, s]


def _skipsimplifiedlayernormalization(e: _Emit, node: ir.Node) -> list[ir.Value] | None:
    outs = list(node.outputs) + [None] * 4
    if any(v is not None and (v.uses() or v.is_graph_output()) for v in outs[1:3]):
        return None
    ins = _inputs(node)
    s = _skip_sum(e, node, 3)
    eps = node.attributes.get_float("epsilon", 1e-12)
    mean_square = _mean_over(e, e("Mul", s, s), [-1])
    y = e("Mul", e("Div", s, e("Sqrt", e("Add", mean_square, e.const(eps)))), ins[2])
    return [y, None, None, s]


def _mean_over(e: _Emit, x: ir.Value, axes: list[int]) -> ir.Value:
    return (e("ReduceMean", x, e.const(np.array(axes, np.int64), np.int64), keepdims=1)
            if e.opset >= 18 else e("ReduceMean", x, axes=axes, keepdims=1))  # axes an input from 18


def _simplifiedlayernormalization(e: _Emit, node: ir.Node) -> list[ir.Value] | None:
    if len(node.outputs) > 1 and node.outputs[1] is not None and (node.outputs[1].uses()
                                                                  or node.outputs[1].is_graph_output()):
        return None  # inverse std-dev: a training output
    x, gamma = node.inputs[:2]
    axis = node.attributes.get_int("axis", -1)
    rank = x.shape.rank() if x.shape is not None else None
    if axis != -1 and rank is None:
        return None
    axes = [-1] if axis == -1 else list(range(axis % rank, rank))
    eps = node.attributes.get_float("epsilon", 1e-5)
    wide = e.dtype != np.float32 and node.attributes.get_int("stash_type", 1) == 1
    if wide:  # computed in float32, as ONNX Runtime does for a float16 input
        x = e("Cast", x, to=ir.DataType.FLOAT)
    y = e("Div", x, e("Sqrt", e("Add", _mean_over(e, e("Mul", x, x), axes),
                                e.const(eps, np.float32 if wide else None))))
    if wide:
        y = e("Cast", y, to=ir.DataType.from_numpy(e.dtype))
    return [e("Mul", y, gamma)]


def _fusedmatmul(e: _Emit, node: ir.Node) -> list[ir.Value] | None:
    a, b = node.inputs[:2]
    attrs = node.attributes
    if attrs.get_int("transBatchA", 0) or attrs.get_int("transBatchB", 0):
        return None
    if any(attrs.get_int(f, 0) and v.shape is None for v, f in ((a, "transA"), (b, "transB"))):
        return None
    operands = []
    for value, flag in ((a, "transA"), (b, "transB")):
        if attrs.get_int(flag, 0):
            rank = len(value.shape)
            value = e("Transpose", value, perm=list(range(rank - 2)) + [rank - 1, rank - 2])
        operands.append(value)
    y = e("MatMul", *operands)
    alpha = attrs.get_float("alpha", 1.0)
    return [e("Mul", y, e.const(alpha)) if alpha != 1.0 else y]


_CONV_ATTRIBUTES = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


def _fusedconv(e: _Emit, node: ir.Node) -> list[ir.Value] | None:
    ins = _inputs(node)
    activation = node.attributes.get_string("activation", "")
    params = list(node.attributes.get_floats("activation_params", ()) or ())
    needed = {"": 0, "Relu": 0, "Tanh": 0, "Sigmoid": 0, "LeakyRelu": 1, "Clip": 2, "HardSigmoid": 2}
    if activation not in needed or len(params) < needed[activation]:
        return None  # (an activation ONNX Runtime added later: left, and named by a backend that cannot run it)
    attrs = {a.name: a for a in node.attributes.values() if a.name in _CONV_ATTRIBUTES}
    y = e("Conv", *[v for v in ins[:3] if v is not None], **attrs)
    if ins[3] is not None:
        y = e("Add", y, ins[3])
    if activation in ("Relu", "Tanh", "Sigmoid"):
        y = e(activation, y)
    elif activation == "LeakyRelu":
        y = e("LeakyRelu", y, alpha=params[0])
    elif activation == "HardSigmoid":
        y = e("HardSigmoid", y, alpha=params[0], beta=params[1])
    elif activation == "Clip":
        y = e("Clip", y, e.const(params[0]), e.const(params[1]))
    return [y]


def _int64(e: _Emit, values) -> ir.Value:
    return e.const(np.asarray(values, np.int64), np.int64)


def _attention(e: _Emit, node: ir.Node) -> list[ir.Value] | None:
    """Self-attention of one fused QKV projection: ``softmax(q k^T scale + mask) v`` per
    head. Without past state, relative position bias or rotary embedding (those stay)."""
    ins, attrs = _inputs(node), node.attributes
    x, w, b, mask = ins[:4]
    if any(v is not None for v in ins[4:8]) or any(v is not None and v.uses() for v in list(node.outputs)[1:]):
        return None
    if attrs.get_int("do_rotary", 0) or attrs.get_int("past_present_share_buffer", 0):
        return None
    sizes = list(attrs.get_ints("qkv_hidden_sizes", ()) or ())
    if w is None or w.shape is None or len(w.shape) != 2 or not isinstance(w.shape[1], int):
        return None
    hidden = w.shape[1] // 3
    if (sizes and len(set(sizes)) != 1) or w.shape[1] != 3 * hidden:
        return None
    if mask is not None and (mask.shape is None or len(mask.shape) not in (1, 2)):
        return None
    heads = attrs.get_int("num_heads")
    head = hidden // heads
    filter_value = attrs.get_float("mask_filter_value", -10000.0)
    scale = attrs.get_float("scale", 1.0 / math.sqrt(head))
    qkv = e("MatMul", x, w)
    if b is not None:
        qkv = e("Add", qkv, b)
    q, k, v = (e("Slice", qkv, _int64(e, [i * hidden]), _int64(e, [(i + 1) * hidden]), _int64(e, [-1]))
               for i in range(3))
    split = _int64(e, [0, 0, heads, head])
    q = e("Transpose", e("Reshape", q, split), perm=[0, 2, 1, 3])
    k = e("Transpose", e("Reshape", k, split), perm=[0, 2, 3, 1])
    v = e("Transpose", e("Reshape", v, split), perm=[0, 2, 1, 3])
    scores = e("Mul", e("MatMul", q, k), e.const(scale))
    # the sequence length as computed (the input's shape may be known only after this
    # rewrite's neighbours are; constant folding makes these constants once it is)
    seq = e("Slice", e("Shape", x), _int64(e, [1]), _int64(e, [2]))
    if mask is not None:
        if len(mask.shape) == 1:  # each sequence's length: the positions past it are padding
            positions = e("Range", _int64(e, 0), e("Squeeze", seq, _int64(e, [0])), _int64(e, 1))
            keep = e("Less", e("Unsqueeze", positions, _int64(e, [0])),
                     e("Unsqueeze", e("Cast", mask, to=7), _int64(e, [1])))
        else:  # 1 where a key is attended, 0 where it is masked
            keep = mask
        keep = e("Cast", keep, to=ir.DataType.from_numpy(np.dtype(e.dtype)).value)
        additive = e("Mul", e("Sub", e.const(1.0), keep), e.const(filter_value))
        scores = e("Add", scores, e("Unsqueeze", additive, _int64(e, [1, 2])))
    if attrs.get_int("unidirectional", 0):  # the keys after each query masked
        ones = e("ConstantOfShape", e("Concat", seq, seq, axis=0), value=ir.tensor(np.ones(1, e.dtype)))
        scores = e("Add", scores, e("Mul", e("Trilu", ones, _int64(e, 1), upper=1), e.const(filter_value)))
    context = e("MatMul", e("Softmax", scores, axis=-1), v)
    out = e("Reshape", e("Transpose", context, perm=[0, 2, 1, 3]), _int64(e, [0, 0, hidden]))
    if x.shape is not None and len(x.shape) == 3:  # what shape inference cannot say of the fused op
        out.shape, out.type = ir.Shape([x.shape[0], x.shape[1], hidden]), x.type
    return [out]


def _embedlayernormalization(e: _Emit, node: ir.Node) -> list[ir.Value] | None:
    """Word + position (+ segment) embeddings, then LayerNormalization; the mask's count of
    attended tokens per sequence as ``mask_index``; and the sum before normalization."""
    ins, attrs = _inputs(node), node.attributes
    ids, segments, words, positions, segment_table, gamma, beta, mask = ins[:8]
    position_ids = ins[8] if len(node.inputs) > 8 else None
    if ids.shape is None or len(ids.shape) != 2 or not isinstance(ids.shape[1], int):
        return None
    used = [v is not None and (v.uses() or v.is_graph_output()) for v in (list(node.outputs) + [None] * 3)[:3]]
    if attrs.get_int("mask_index_type", 1) != 1 or (used[1] and mask is None):
        return None
    e.dtype = words.dtype.numpy() if words.dtype is not None else e.dtype
    total = e("Gather", words, ids)
    if position_ids is not None:
        where = position_ids
    else:
        where = _int64(e, np.arange(ids.shape[1])[None, :])
    total = e("Add", total, e("Gather", positions, where))
    if segments is not None and segment_table is not None:
        total = e("Add", total, e("Gather", segment_table, segments))
    norm = (total, gamma) if beta is None else (total, gamma, beta)
    out = e("LayerNormalization", *norm, axis=-1, epsilon=attrs.get_float("epsilon", 1e-12))
    if words.shape is not None and isinstance(words.shape[1], int):  # what shape inference cannot say of the fused op
        out.shape = total.shape = ir.Shape([*ids.shape, words.shape[1]])
        out.type = total.type = words.type
    index = e("ReduceSum", e("Cast", mask, to=6), _int64(e, [1]), keepdims=0) if used[1] else None  # int32
    if index is not None:
        index.shape, index.type = ir.Shape([ids.shape[0]]), ir.TensorType(ir.DataType.INT32)
    return [out, index, total]


def _dynamicquantizelstm(e: _Emit, node: ir.Node) -> list[ir.Value] | None:
    """An LSTM on the int8 weights' float values: ``W = (W_q - W_zp) W_scale`` (per
    direction, or per direction and gate row), transposed back to ONNX's LSTM layout
    (``onnxruntime.quantization`` stores them ``[directions, input, 4 hidden]``). ONNX
    Runtime's kernel also rounds the input and the hidden state to u8 at each step; this
    form keeps them float, as close to it as a float LSTM can be, and the build judges it
    with the int8 budget (the model arrives int8)."""
    x, w, r, b, lens, h0, c0, p, ws, wz, rs, rz = _inputs(node)[:12]
    weights = []
    for q, scale, zero in ((w, ws, wz), (r, rs, rz)):
        q, scale = constant(q), constant(scale)
        zero = constant(zero) if zero is not None else np.zeros_like(scale)
        if q is None or scale is None or zero is None or q.ndim != 3 or scale.shape != zero.shape:
            return None
        column = (lambda a: a.reshape(a.shape[0], 1, -1)) if scale.ndim == 2 else (lambda a: a.reshape(-1, 1, 1))
        values = (q.astype(np.float32) - column(zero.astype(np.float32))) * column(scale.astype(np.float32))
        weights.append(e.const(values.transpose(0, 2, 1), np.float32))
    attrs = {a.name: a for a in node.attributes.values()}
    lstm = e.node("LSTM", x, *weights, b, lens, h0, c0, p, num_outputs=len(node.outputs), **attrs)
    return list(lstm.outputs)


_SHAPE_OF_INPUT = frozenset({"Gelu", "BiasGelu", "FastGelu", "QuickGelu", "BiasAdd", "SkipLayerNormalization",
                             "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization"})
"""Ops whose (first) output has their first input's shape."""

_REWRITES = {"Gelu": _gelu, "BiasGelu": _biasgelu, "FastGelu": _fastgelu, "QuickGelu": _quickgelu,
             "BiasAdd": _biasadd, "SkipLayerNormalization": _skiplayernormalization,
             "SkipSimplifiedLayerNormalization": _skipsimplifiedlayernormalization, "FusedMatMul": _fusedmatmul,
             "FusedConv": _fusedconv,
             "Attention": _attention, "EmbedLayerNormalization": _embedlayernormalization,
             "DynamicQuantizeLSTM": _dynamicquantizelstm,
             "SimplifiedLayerNormalization": _simplifiedlayernormalization}


class ContribOpsToCorePass(ir.passes.InPlacePass):
    """Rewrite the main graph's ONNX Runtime ops listed in the module docstring as core ops,
    each output keeping its name; others are left as they are. ``only``: those op types
    alone (a backend that runs the rest itself)."""

    def __init__(self, only: frozenset[str] | None = None):
        super().__init__()
        self.only = only

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        if "" not in model.opset_imports:
            return ir.passes.PassResult(model, False)
        for node in list(graph):
            rewrite = _REWRITES.get(node.op_type) if node.domain == MS_DOMAIN else None
            if rewrite is None or (self.only is not None and node.op_type not in self.only):
                continue
            e = _Emit(graph, node, model.opset_imports[""])
            news = rewrite(e, node)
            if news is None:  # (checked before any constant was made)
                continue
            graph.insert_before(node, e.nodes)
            for out, new in zip(node.outputs, news):
                if out is None or new is None:
                    continue
                if out.shape is not None or new.shape is None:
                    new.shape, new.type = out.shape, out.type
                if new.shape is None and node.op_type in _SHAPE_OF_INPUT:  # shape inference knows no contrib op:
                    new.shape, new.type = node.inputs[0].shape, node.inputs[0].type  # say what the next rewrite needs
                replace_value(out, new, "__contrib")
            graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)
