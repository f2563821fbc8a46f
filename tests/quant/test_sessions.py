"""A session on an in-memory model computes what the whole serialized model computes, with
its large weights handed over in place, and leaves the model as it was."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from deploycomp.quant import sessions


def _model() -> ir.Model:
    rng = np.random.default_rng(0)
    big = rng.standard_normal((256, 256)).astype(np.float32)  # 256 KB: handed over in place
    small = rng.standard_normal(256).astype(np.float32)  # 1 KB: serialized
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 256])],
        [numpy_helper.from_array(big, "w"), numpy_helper.from_array(small, "b")])
    return ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_the_session_computes_what_the_serialized_model_does_with_extra_outputs():
    model = _model()
    x = np.random.default_rng(1).standard_normal((2, 256)).astype(np.float32)
    want = ort.InferenceSession(ir.to_proto(model).SerializeToString()).run(None, {"x": x})[0]
    made = sessions.session(model, ort.SessionOptions(), outputs=["h", "absent"])
    assert [o.name for o in made.get_outputs()] == ["y", "h"]
    y, h = made.run(None, {"x": x})
    np.testing.assert_array_equal(y, want)
    np.testing.assert_allclose(h, x @ model.graph.initializers["w"].const_value.numpy(), rtol=1e-5, atol=1e-5)


def test_an_unread_large_weight_is_left_to_onnx_runtime_to_drop():
    """A QDQ copy can leave a float weight no node reads (its int8 form replaced it):
    handed over in place, ONNX Runtime failed to find it after dropping it."""
    model = _model()
    spare = ir.Value(name="spare", const_value=ir.tensor(np.ones((128, 128), np.float32), name="spare"))
    model.graph.register_initializer(spare)
    x = np.ones((2, 256), np.float32)
    assert sessions.session(model, ort.SessionOptions()).run(None, {"x": x})[0].shape == (2, 256)


def test_large_weights_are_not_serialized_and_the_model_is_left_as_it_was(monkeypatch):
    model = _model()
    weights = model.graph.initializers["w"].const_value
    seen: list[bytes] = []
    real = ort.InferenceSession

    def spy(serialized, *args, **kwargs):
        seen.append(serialized)
        return real(serialized, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    sessions.session(model, ort.SessionOptions(), outputs=["h"])
    proto = onnx.load_from_string(seen[0])
    w, b = (next(t for t in proto.graph.initializer if t.name == n) for n in ("w", "b"))
    assert w.data_location == TensorProto.EXTERNAL and not w.raw_data  # in place, not copied
    assert b.data_location != TensorProto.EXTERNAL  # small: serialized
    assert len(seen[0]) < 8 * 1024
    assert model.graph.initializers["w"].const_value is weights  # the model's own tensor, back
    assert [v.name for v in model.graph.outputs] == ["y"]


def test_sessions_of_one_model_made_side_by_side_each_get_their_own_outputs():
    """Making a session swaps the model's large weights and extra outputs in for its
    serialization and back: threads doing it on one model at once must not see each
    other's swaps (each session has exactly the outputs it asked for, and the model is
    left as it was)."""
    from concurrent.futures import ThreadPoolExecutor

    model = _model()
    before = ir.to_proto(model).SerializeToString()
    inner = [v.name for n in model.graph for v in n.outputs if not v.is_graph_output()]
    wanted = [[], *[[name] for name in inner]] * 40

    def outputs_of(extra):
        made = sessions.session(model, ort.SessionOptions(), extra)
        return [o.name for o in made.get_outputs()]

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: a swap seen by another thread shows
    try:
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(outputs_of, wanted))
    finally:
        sys.setswitchinterval(switch)
    base = [v.name for v in model.graph.outputs]
    assert got == [base + extra for extra in wanted]
    assert ir.to_proto(model).SerializeToString() == before


def test_without_room_the_qdq_sessions_go_without_their_arena(monkeypatch):
    """ONNX Runtime's CPU arena keeps each session's peak: the int8 search of U^2-Net-p
    peaked at 3.9 GB with it, 2.7 GB without, and a 3.5 GB container had killed it. Under
    ARENA_ROOM_BYTES free the QDQ sessions allocate without it; the same arithmetic."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    import deploycomp.memory as memory
    from deploycomp.quant import exact

    gb = 1 << 30
    for free, arena in ((16 * gb, True), (None, True), (2 * gb, False)):
        monkeypatch.setattr(memory, "available_bytes", lambda free=free: free)
        assert exact.exact_qdq_options().enable_cpu_mem_arena is arena
        assert exact.written_options().enable_cpu_mem_arena is arena
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    x = np.array([-1, 2, -3, 4], np.float32)
    got = ort.InferenceSession(model, exact.exact_qdq_options()).run(None, {"x": x})[0]  # (arena off: still runs)
    assert got.tolist() == [0, 2, 0, 4]
