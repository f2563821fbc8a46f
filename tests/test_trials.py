"""What a search judges and ranks (:mod:`deploycomp.trials`)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import TensorProto as T, helper

from deploycomp.trials import with_channel_outputs, without_outputs
from deploycomp.validate import channel_name


def test_judged_channels_are_outputs_of_the_model_a_search_ranks_and_nothing_of_the_model_it_keeps():
    """``--judge-channels``: each channel of a judged output becomes an output of its own
    (named as the comparison names it, holding that channel), so that the searches rank
    layers by what they cost it; the model kept has exactly the original outputs and
    nodes again."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["z"])], "g",
                              [helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 4, 5])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 3, 4, 5]),
                               helper.make_tensor_value_info("z", T.FLOAT, [1, 3, 4, 5])])
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    searched, added = with_channel_outputs(model, {"y": 1})
    assert added == [channel_name("y", 1, c) for c in range(3)]
    assert [v.name for v in model.graph.outputs] == ["y", "z"]  # (a copy: the caller's model is left alone)
    x = np.random.default_rng(0).normal(size=(1, 3, 4, 5)).astype(np.float32)
    session = ort.InferenceSession(ir.serde.serialize_model(searched).SerializeToString())
    outs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x})))
    for c in range(3):
        np.testing.assert_array_equal(outs[channel_name("y", 1, c)], np.maximum(x, 0)[:, c])
    kept = without_outputs(searched, added)
    assert [v.name for v in kept.graph.outputs] == ["y", "z"]
    assert sorted(n.op_type for n in kept.graph) == ["Neg", "Relu"] and not kept.graph.initializers
    assert with_channel_outputs(model, {}) == (model, [])
    onnx.checker.check_model(ir.serde.serialize_model(kept))
