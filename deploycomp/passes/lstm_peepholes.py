"""An LSTM with peephole weights as a ``Scan`` over its cell, for OpenVINO.

OpenVINO 2026.4 converts an ONNX LSTM's peephole weights (input ``P``) but computes as if
they were not there (cosine 0.125 on madmom's beat tracker), so the host check refused
such a layer by name. The cell written out in ONNX ops is exact, and ``Scan`` keeps it
one loop (OpenVINO runs it as a TensorIterator) rather than thousands of unrolled nodes:

- outside the loop, the input projection of every step at once: ``X W^T + Wb + Rb``;
- the body, per step: gates ``g = x_t + h R^T`` split i, o, f, c~;
  ``i = s(g_i + p_i c)``, ``f = s(g_f + p_f c)``, ``c' = f c + i tanh(c~)``,
  ``o = s(g_o + p_o c')``, ``h' = o tanh(c')``;
- a reverse direction scans backwards and writes its outputs backwards, as ONNX defines.

Only what the rewrite reproduces exactly: constant W, R, B and P, the default
activations, no ``clip``, no ``input_forget``, ``layout=0``, no ``sequence_lens`` shorter
than the sequence, static shapes. An LSTM without peepholes (or with all-zero ones)
stays an LSTM: OpenVINO's own LSTMSequence computes it, faster.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from deploycomp.ir import add_initializer, replace_value

__all__ = ["PeepholeLSTMToScanPass"]

_DEFAULT = ["Sigmoid", "Tanh", "Tanh"]


def _const(v: ir.Value | None) -> np.ndarray | None:
    if v is None or v.const_value is None:
        return None
    return v.const_value.numpy()


def _geometry(node: ir.Node) -> dict | None:
    """What the rewrite needs, or None where it does not apply."""
    if node.op_type != "LSTM" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 8:
        return None
    P = _const(node.inputs[7])
    if P is None or not np.any(P):
        return None
    attrs = node.attributes
    direction = attrs.get_string("direction", "forward")
    dirs = 2 if direction == "bidirectional" else 1
    if (attrs.get_int("layout", 0) or attrs.get_int("input_forget", 0) or attrs.get_float("clip", None) is not None
            or list(attrs.get_strings("activations", _DEFAULT * dirs)) != _DEFAULT * dirs):
        return None
    x = node.inputs[0]
    if x is None or x.shape is None or not x.shape.is_static() or len(x.shape) != 3:
        return None
    seq, batch, _ = x.shape.numpy()
    W, R = _const(node.inputs[1]), _const(node.inputs[2])
    B = _const(node.inputs[3]) if node.inputs[3] is not None else None
    if W is None or R is None or (node.inputs[3] is not None and B is None):
        return None
    lens = node.inputs[4]
    if lens is not None and ((given := _const(lens)) is None or not np.all(given == seq)):
        return None
    hidden = attrs.get_int("hidden_size")
    if B is None:
        B = np.zeros((dirs, 8 * hidden), np.float32)
    return dict(seq=seq, batch=batch, hidden=hidden, dirs=dirs, direction=direction, W=W.astype(np.float32),
                R=R.astype(np.float32), B=B.astype(np.float32), P=P.astype(np.float32))


class _Builder:
    """Appends nodes before ``anchor`` in its graph, each output named after the LSTM."""

    def __init__(self, graph: ir.Graph, anchor: ir.Node, base: str):
        self.graph, self.anchor, self.base, self.count = graph, anchor, base, 0

    def __call__(self, op: str, inputs: list, **attributes) -> ir.Value:
        return self.node(op, inputs, 1, **attributes)[0]

    def node(self, op: str, inputs: list, outputs: int, **attributes) -> list[ir.Value]:
        self.count += 1
        node = ir.node(op, inputs, attributes=attributes, num_outputs=outputs, name=f"{self.base}/{op}{self.count}")
        for k, value in enumerate(node.outputs):
            value.name = f"{self.base}/{op}{self.count}" + (f":{k}" if k else "")
        self.graph.insert_before(self.anchor, node)
        return list(node.outputs)

    def const(self, array: np.ndarray, label: str) -> ir.Value:
        return add_initializer(self.graph, f"{self.base}/{label}", array)


def _body(name: str, batch: int, hidden: int, R: np.ndarray, P: np.ndarray) -> ir.Graph:
    """One step of the cell: (h, c, x_t W + b) -> (h', c', h')."""
    f32 = ir.TensorType(ir.DataType.FLOAT)
    h = ir.Value(name=f"{name}/h", type=f32, shape=ir.Shape([batch, hidden]))
    c = ir.Value(name=f"{name}/c", type=f32, shape=ir.Shape([batch, hidden]))
    xt = ir.Value(name=f"{name}/x_t", type=f32, shape=ir.Shape([batch, 4 * hidden]))
    nodes: list[ir.Node] = []

    def op(kind: str, inputs: list, outputs: int = 1, **attributes) -> list[ir.Value]:
        node = ir.node(kind, inputs, attributes=attributes, num_outputs=outputs, name=f"{name}/{kind}{len(nodes)}")
        for k, value in enumerate(node.outputs):
            value.name = f"{name}/{kind}{len(nodes)}" + (f":{k}" if k else "")
        nodes.append(node)
        return list(node.outputs)

    def const(array: np.ndarray) -> ir.Value:
        return op("Constant", [], value=ir.tensor(np.ascontiguousarray(array)))[0]

    gates = op("Add", [xt, op("MatMul", [h, const(R.T)])[0]])[0]
    # sizes as an input: what opsets 17 (every model's floor on load) to 23 all take
    i, o, f, cand = op("Split", [gates, const(np.full(4, hidden, np.int64))], 4, axis=1)
    p_i, p_o, p_f = (const(P[k * hidden:(k + 1) * hidden]) for k in range(3))
    i = op("Sigmoid", [op("Add", [i, op("Mul", [c, p_i])[0]])[0]])[0]
    f = op("Sigmoid", [op("Add", [f, op("Mul", [c, p_f])[0]])[0]])[0]
    c2 = op("Add", [op("Mul", [f, c])[0], op("Mul", [i, op("Tanh", [cand])[0]])[0]])[0]
    o = op("Sigmoid", [op("Add", [o, op("Mul", [c2, p_o])[0]])[0]])[0]
    h2 = op("Mul", [o, op("Tanh", [c2])[0]])[0]
    h_out = op("Identity", [h2])[0]  # the state and the scan output are two graph outputs
    return ir.Graph([h, c, xt], [h2, c2, h_out], nodes=nodes, name=f"{name}/body")


class PeepholeLSTMToScanPass(ir.passes.InPlacePass):
    """Each LSTM with non-zero constant peepholes (see the module docstring) becomes a
    ``Scan`` per direction, its outputs as the LSTM's."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        for node in list(graph):
            g = _geometry(node)
            if g is None:
                continue
            self._rewrite(graph, node, g)
            modified = True
        return ir.passes.PassResult(model, modified)

    @staticmethod
    def _rewrite(graph: ir.Graph, node: ir.Node, g: dict) -> None:
        base = node.name or node.outputs[0].name
        b = _Builder(graph, node, base)
        seq, batch, H, dirs = g["seq"], g["batch"], g["hidden"], g["dirs"]

        def initial(index: int, d: int) -> ir.Value:
            value = node.inputs[index] if len(node.inputs) > index else None
            if value is None:
                return b.const(np.zeros((batch, H), np.float32), "zeros")
            return b("Squeeze", [b("Slice", [value, b.const(np.array([d]), "start"), b.const(np.array([d + 1]), "end")]),
                                 b.const(np.array([0]), "axis")])

        ys, hs, cs = [], [], []
        for d in range(dirs):
            reverse = g["direction"] == "reverse" or d == 1
            projected = b("Add", [b("MatMul", [node.inputs[0], b.const(g["W"][d].T, "w")]),
                                  b.const(g["B"][d][:4 * H] + g["B"][d][4 * H:], "b")])
            body = _body(f"{base}/dir{d}", batch, H, g["R"][d], g["P"][d])
            h, c, y = b.node("Scan", [initial(5, d), initial(6, d), projected], 3, body=body, num_scan_inputs=1,
                             scan_input_directions=[int(reverse)], scan_output_directions=[int(reverse)])
            ys.append(b("Unsqueeze", [y, b.const(np.array([1]), "axis")]))
            hs.append(b("Unsqueeze", [h, b.const(np.array([0]), "axis")]))
            cs.append(b("Unsqueeze", [c, b.const(np.array([0]), "axis")]))
        shapes = ([seq, dirs, batch, H], [dirs, batch, H], [dirs, batch, H])
        for out, parts, shape in zip(node.outputs, (ys, hs, cs), shapes):
            if out is None:
                continue
            new = parts[0] if dirs == 1 else b("Concat", parts, axis=1 if out is node.outputs[0] else 0)
            new.type, new.shape = ir.TensorType(ir.DataType.FLOAT), ir.Shape(shape)
            replace_value(out, new, "__lstm")
        graph.remove(node, safe=True)
