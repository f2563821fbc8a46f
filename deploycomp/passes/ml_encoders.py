"""scikit-learn's encoders in ``ai.onnx.ml`` as core ops, as ONNX Runtime computes them
(:class:`deploycomp.passes.ml_ops.MLOpsToCorePass` calls them):

* ``Imputer`` (a ``SimpleImputer``): ``Where(missing, imputed, X)``, missing being NaN
  (``IsNaN``) or equal to ``replaced_value``, ``imputed`` one value or one per column;
* ``OneHotEncoder`` (integer categories; a ``ColumnTransformer``'s categorical columns):
  ``float(X[..., None] == cats)``, a float input truncated to an integer first as ONNX
  Runtime does. ONNX Runtime fails on an unknown category where ``zeros`` is 0; here its
  row is all zeros;
* ``LabelEncoder`` (numbers to numbers; an IsolationForest maps its trees' leaves to path
  lengths): the first key equal to the input (``Equal``, ``ArgMax``) indexes the values,
  the default where none is. String keys or values stay as they are.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx_ir as ir

from deploycomp.passes.ml_nodes import Emitter

__all__ = ["imputer", "label_encoder", "one_hot_encoder"]

Const = Callable[[str, np.ndarray], ir.Value]
"""``const(suffix, array)``: an initializer named after the node."""


def imputer(node: ir.Node, const: Const) -> list[ir.Node] | None:
    """``Where(missing, imputed, X)`` (see the module docstring)."""
    x = node.inputs[0]
    if x is None or x.dtype not in (ir.DataType.FLOAT, ir.DataType.INT64):
        return None
    floats = x.dtype == ir.DataType.FLOAT
    imputed = node.attributes.get("imputed_value_floats" if floats else "imputed_value_int64s")
    replaced = node.attributes.get("replaced_value_float" if floats else "replaced_value_int64")
    if imputed is None:
        return None
    imputed = np.asarray(imputed.as_floats() if floats else imputed.as_ints(), np.float32 if floats else np.int64)
    columns = x.shape[-1] if x.shape is not None and x.shape.rank() else None
    if imputed.size != 1 and imputed.size != columns:
        return None  # one value, or one per column (the last axis)
    replaced = (replaced.as_float() if floats else replaced.as_int()) if replaced is not None else 0
    if floats and np.isnan(replaced):
        missing = ir.node("IsNaN", [x], name=f"{node.name}__missing")
    else:
        value = np.asarray(replaced, np.float32 if floats else np.int64)
        missing = ir.node("Equal", [x, const("replaced", value)], name=f"{node.name}__missing")
    fill = const("imputed", imputed if imputed.size > 1 else imputed.reshape(()))
    return [missing, ir.node("Where", [missing.outputs[0], fill, x], name=node.name)]


def one_hot_encoder(node: ir.Node, const: Const) -> list[ir.Node] | None:
    """``float(X[..., None] == cats)`` (see the module docstring)."""
    x = node.inputs[0]
    cats = node.attributes.get("cats_int64s")
    if x is None or cats is None or x.dtype not in (ir.DataType.INT64, ir.DataType.INT32, ir.DataType.FLOAT,
                                                     ir.DataType.DOUBLE):
        return None  # string categories stay
    nodes: list[ir.Node] = []
    if x.dtype != ir.DataType.INT64:  # ONNX Runtime truncates a float to its integer, as Cast does
        nodes.append(ir.node("Cast", [x], attributes={"to": ir.DataType.INT64}, name=f"{node.name}__int"))
        x = nodes[-1].outputs[0]
    nodes.append(ir.node("Unsqueeze", [x, const("last", np.asarray([-1], np.int64))],
                         name=f"{node.name}__column"))
    nodes.append(ir.node("Equal", [nodes[-1].outputs[0], const("cats",
                                                                     np.asarray(cats.as_ints(), np.int64))],
                         name=f"{node.name}__is"))
    nodes.append(ir.node("Cast", [nodes[-1].outputs[0]], attributes={"to": ir.DataType.FLOAT}, name=node.name))
    return nodes


def label_encoder(node: ir.Node, opset: int, const: Const) -> list[ir.Node] | None:
    """The first equal key's value, or the default (see the module docstring)."""
    x = node.inputs[0]
    keys, values, default = _encoding(node)
    if opset < 13 or x is None or keys is None or x.dtype not in (ir.DataType.INT64, ir.DataType.FLOAT) or \
            np.dtype(keys.dtype) != np.dtype(x.dtype.numpy()):
        return None
    name = node.name or node.op_type
    nodes: list[ir.Node] = []
    add = Emitter(name, nodes)
    column = add("Unsqueeze", [x, const("last", np.asarray([-1], np.int64))], "column")
    hits = add("Cast", [add("Equal", [column, const("keys", keys)], "is")], "hits",
               to=ir.DataType.FLOAT)
    first = add("ArgMax", [hits], "first", axis=-1, keepdims=0)
    found = add("Greater", [add("ReduceSum", [hits, const("axis", np.asarray([-1], np.int64))],
                                "matches", keepdims=0), const("zero", np.asarray(0.0, np.float32))],
                "found")
    index = add("Where", [found, first, const("missing", np.asarray(len(keys), np.int64))],
                "index")
    nodes.append(ir.node("Gather", [const("values", np.append(values, default)), index],
                         attributes={"axis": 0}, name=name))
    return nodes


def _encoding(node: ir.Node) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """A numeric LabelEncoder's keys, values and default (None where keys or values are
    strings or missing)."""
    def first(*names):
        for n in names:
            attr = node.attributes.get(n)
            if attr is not None:
                return n, attr
        return None, None

    kname, kattr = first("keys_int64s", "keys_floats", "keys_tensor")
    vname, vattr = first("values_int64s", "values_floats", "values_tensor")
    if kattr is None or vattr is None:
        return None, None, None
    as_array = (lambda a, n: a.as_tensor().numpy().reshape(-1) if n.endswith("tensor")
                else np.asarray(a.as_ints() if n.endswith("int64s") else a.as_floats(),
                                np.int64 if n.endswith("int64s") else np.float32))
    keys, values = as_array(kattr, kname), as_array(vattr, vname)
    if keys.dtype.kind not in "if" or values.dtype.kind not in "if" or len(keys) != len(values) or not len(keys):
        return None, None, None
    dname, dattr = first("default_tensor", "default_int64" if values.dtype.kind == "i" else "default_float")
    if dattr is None:
        default = np.asarray(-1 if values.dtype.kind == "i" else -0.0, values.dtype)
    elif dname == "default_tensor":
        default = dattr.as_tensor().numpy().reshape(-1)[:1].astype(values.dtype)
    else:
        default = np.asarray(dattr.as_int() if values.dtype.kind == "i" else dattr.as_float(), values.dtype)
    return keys, values, default
