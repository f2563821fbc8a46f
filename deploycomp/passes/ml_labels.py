"""A classifier's string class labels as their positions, the strings kept beside the model.

scikit-learn classifiers fitted on string targets (``"setosa"``, ``"spam"``) export
``classlabels_strings``, and the label output is a string tensor: no backend has string
tensors (OpenVINO, TFLite and TensorRT refused the model by name). The label is only ever
one of the listed strings, so the classifier writes its position in the list instead
(``classlabels_int64s``/``classlabels_ints`` = 0..n-1, the output typed int64), and the
list is kept in the model's metadata under :data:`KEY` + the output's name. The bundle
records it in ``io.outputs[].labels``; ``deploycomp.load(...).run`` turns positions back
into the strings, and the reference's strings are turned into positions where outputs
are compared, so every backend, check and search sees an int64 output.

Only a label output that is a graph output and read by nothing else changes: a string
label that feeds other nodes (a ``LabelEncoder`` after it) stays a string, and the
target's check still names the op it cannot run.
"""

from __future__ import annotations

import json
from typing import Mapping

import numpy as np
import onnx_ir as ir

__all__ = ["KEY", "StringClassLabelsPass", "class_labels", "label_positions"]

KEY = "deploycomp.class_labels."
"""Model metadata key prefix; the rest is the label output's name, the value a JSON list."""

ML_DOMAIN = "ai.onnx.ml"

INT_ATTRIBUTE = {"TreeEnsembleClassifier": "classlabels_int64s", "SVMClassifier": "classlabels_ints",
                 "LinearClassifier": "classlabels_ints"}
"""Each classifier's integer-labels attribute, which takes the strings' place."""


class StringClassLabelsPass(ir.passes.InPlacePass):
    """``classlabels_strings`` of classifiers whose label is a graph output read by nothing
    else -> their positions, the strings in the model's metadata (see the module docstring)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        outputs = {id(v) for v in model.graph.outputs}
        for node in model.graph:
            attribute = INT_ATTRIBUTE.get(node.op_type)
            strings = node.attributes.get("classlabels_strings")
            if node.domain != ML_DOMAIN or attribute is None or strings is None or not node.outputs:
                continue
            label = node.outputs[0]
            if id(label) not in outputs or list(label.uses()) or attribute in node.attributes:
                continue
            names = [s.decode() if isinstance(s, bytes) else str(s) for s in strings.as_strings()]
            node.attributes.pop("classlabels_strings")
            node.attributes[attribute] = ir.AttrInt64s(attribute, list(range(len(names))))
            label.type = ir.TensorType(ir.DataType.INT64)
            model.metadata_props[KEY + label.name] = json.dumps(names)
            modified = True
        return ir.passes.PassResult(model, modified)


def class_labels(model: ir.Model) -> dict[str, list[str]]:
    """Output name -> its class labels, for the outputs :class:`StringClassLabelsPass` changed."""
    return {key[len(KEY):]: json.loads(value) for key, value in model.metadata_props.items() if key.startswith(KEY)}


def label_positions(outputs: Mapping[str, np.ndarray], labels: Mapping[str, list[str]]) -> dict[str, np.ndarray]:
    """``outputs`` with each labelled output's strings as their positions in its labels
    (int64; -1 for a string not among them, which then matches nothing)."""
    out = dict(outputs)
    for name, names in labels.items():
        if name in out:
            index = {label: i for i, label in enumerate(names)}
            values = np.asarray(out[name])
            out[name] = np.array([index.get(v.decode() if isinstance(v, bytes) else str(v), -1)
                                  for v in values.ravel()], np.int64).reshape(values.shape)
    return out
