"""A few nodes of a graph run on numbers with ONNX's reference evaluator: how an analysis
or a pass learns what a part of a graph computes without a session for the whole model
(the ids a lookup's arithmetic maps into its table, the trip count a loop's counters
decide)."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import onnx

__all__ = ["node_function"]


def node_function(nodes: Sequence[onnx.NodeProto], inputs: Mapping[str, np.ndarray], outputs: Sequence[str],
                  constants: Mapping[str, np.ndarray], opset: int) -> Callable[..., list[np.ndarray]]:
    """``nodes`` (in graph order) as a function from the named ``inputs`` (typed as the
    example arrays given for them) to the named ``outputs``, reading ``constants``; called
    with an array for each input by name. Raises what the evaluator raises for an op or a
    type it does not take."""
    from onnx.reference import ReferenceEvaluator

    graph = onnx.helper.make_graph(
        list(nodes), "part",
        [onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype),
                                            np.shape(a)) for name, a in inputs.items()],
        [onnx.ValueInfoProto(name=name) for name in outputs],  # (their types the evaluator's to find)
        [onnx.numpy_helper.from_array(np.asarray(c), name) for name, c in constants.items()])
    evaluator = ReferenceEvaluator(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)]))
    return lambda **feeds: evaluator.run(None, feeds)
