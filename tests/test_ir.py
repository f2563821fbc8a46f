"""Loading: what a user's ONNX file may be, and the one-line error for each bad case."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from deploycomp.errors import ModelError
from deploycomp.ir import MAX_OPSET, MIN_OPSET, load_model, save_model
from tests.conftest import write_text_model

RELU = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4] x) => (float[N, 4] y) { y = Relu(x) }
"""


def test_loads_real_model_and_upgrades_old_opset(real_model):
    loaded = load_model(real_model("ppocr-cls"))
    assert loaded.source_opset == 11
    assert loaded.model.opset_imports[""] == MIN_OPSET
    assert len(loaded.sha256) == 64


def test_opset_upgrade_preserves_outputs(real_model, tmp_path):
    path = real_model("ppocr-rec")
    loaded = load_model(path)
    save_model(loaded.model, tmp_path / "up.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, 48, 320)).astype(np.float32)
    ref = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(tmp_path / "up.onnx")).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_the_opset_upgrade_leaves_the_weights_out_of_the_converter(real_model, monkeypatch):
    """ONNX's version converter copies the whole model through C++ several times: a 97 MB
    opset-14 ViT peaked at 843 MB to load (263 MB without the conversion). Its weights are
    held out and put back by name; the converted model is byte for byte the converter's
    own."""
    import onnx
    import onnx.version_converter

    from deploycomp.ir import HELD_WEIGHT_BYTES, MIN_OPSET, _converted_without_weights

    proto = onnx.load(real_model("ppocr-rec"))
    expected = onnx.version_converter.convert_version(proto, MIN_OPSET).SerializeToString(deterministic=True)
    real, seen = onnx.version_converter.convert_version, []

    def watched(model, target):  # (PP-OCR rec holds its weights in Constant nodes)
        seen.append(max(len(a.t.raw_data) for n in model.graph.node for a in n.attribute if a.HasField("t")))
        return real(model, target)

    monkeypatch.setattr(onnx.version_converter, "convert_version", watched)
    before = proto.SerializeToString(deterministic=True)
    got = _converted_without_weights(proto, MIN_OPSET)
    assert len(seen) == 1 and seen[0] <= HELD_WEIGHT_BYTES
    assert got.SerializeToString(deterministic=True) == expected
    assert proto.SerializeToString(deterministic=True) == before  # (the caller's model whole again)


def test_an_op_onnx_runtime_saved_before_its_opset_upgrades_with_the_model(real_model, tmp_path):
    """PP-OCRv4 rec (opset 12) as ONNX Runtime's optimizer saves it: its layer norms one
    ``LayerNormalization`` each, an op ONNX defines from opset 17, which ONNX Runtime runs
    at 12; the version converter had refused the file ("No Adapter From Version $16")."""
    from deploycomp.sample_data import ocr_line_samples

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "saved.onnx")
    ort.InferenceSession(str(real_model("ppocr-rec")), options, providers=["CPUExecutionProvider"])
    saved = onnx.load(tmp_path / "saved.onnx")
    assert any(n.op_type == "LayerNormalization" and n.domain == "" for n in saved.graph.node)
    assert {o.domain: o.version for o in saved.opset_import}[""] == 12
    loaded = load_model(tmp_path / "saved.onnx")
    assert loaded.model.opset_imports[""] == MIN_OPSET and "deploycomp.held" not in loaded.model.opset_imports
    assert any(n.op_type == "LayerNormalization" and n.domain == "" for n in loaded.model.graph)
    save_model(loaded.model, tmp_path / "up.onnx")
    x = ocr_line_samples((1, 3, 48, 320))[0]
    want = ort.InferenceSession(str(tmp_path / "saved.onnx")).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(tmp_path / "up.onnx")).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        load_model(tmp_path / "absent.onnx")


def test_non_onnx_file(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n" * 10)
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        load_model(path)


def test_truncated_model(real_model, tmp_path):
    data = real_model("ppocr-cls").read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        load_model(path)


def test_unknown_op_names_the_node(tmp_path):
    path = tmp_path / "m.onnx"
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"], name="mystery")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ModelError, match=r"node 'mystery': unknown op 'Frobnicate'"):
        load_model(path)


def test_an_op_of_a_frameworks_own_domain_is_said_so(tmp_path):
    """Brevitas' ``Quant`` (qonnx's models): the node is in its domain, which ONNX does not
    define; the error had read "unknown op 'Quant' (not in domain 'onnx.brevitas')"."""
    path = tmp_path / "m.onnx"
    graph = helper.make_graph(
        [helper.make_node("Quant", ["x"], ["y"], name="Quant_4", domain="onnx.brevitas")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("onnx.brevitas", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)
    with pytest.raises(ModelError, match=r"node 'Quant_4': op 'Quant' of domain 'onnx.brevitas', which ONNX does not "
                                         r"define and no backend runs"):
        load_model(path)


def test_unimported_domain(tmp_path):
    path = tmp_path / "m.onnx"
    graph = helper.make_graph(
        [helper.make_node("Thing", ["x"], ["y"], name="n", domain="com.example")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ModelError, match="domain 'com.example'"):
        load_model(path)


def test_opset_out_of_range(tmp_path):
    path = write_text_model(tmp_path / "m.onnx", RELU)
    model = onnx.load(path)
    model.opset_import[0].version = 99
    onnx.save(model, path)
    with pytest.raises(ModelError, match="opset 99 is outside the range ONNX"):
        load_model(path)


def test_newer_opset_is_converted_down(tmp_path):
    path = write_text_model(tmp_path / "m.onnx", RELU.replace('"" : 13', '"" : 24'))
    assert load_model(path).model.opset_imports[""] == MAX_OPSET


def _external_model(folder, location: str):
    tensor = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    tensor.ClearField("raw_data")
    tensor.external_data.add(key="location", value=location)
    tensor.external_data.add(key="offset", value="0")
    tensor.external_data.add(key="length", value="16")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])], [tensor],
    )
    path = folder / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_outside_model_folder_is_rejected(tmp_path, location):
    (tmp_path / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(ModelError, match="external data path"):
        load_model(_external_model(folder, location))


def test_external_data_symlink_escaping_folder_is_rejected(tmp_path):
    (tmp_path / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").symlink_to(tmp_path / "secret.bin")
    with pytest.raises(ModelError, match="outside the model's folder"):
        load_model(_external_model(folder, "w.bin"))


def test_external_data_inside_folder_loads(tmp_path):
    (tmp_path / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    loaded = load_model(_external_model(tmp_path, "w.bin"))
    w = loaded.model.graph.initializers["w"].const_value.numpy()
    np.testing.assert_array_equal(w, np.arange(4, dtype=np.float32))


@pytest.mark.parametrize("target", ["host", "android-arm64", "jetson-orin-nano"])
def test_a_model_with_its_weights_beside_it_builds_from_anywhere(tmp_path, monkeypatch, target):
    """``model.onnx`` + ``w.bin``: every step that serializes the model (ONNX Runtime's
    reference and calibration sessions, OpenVINO's and NVIDIA's parsers) reads the weights
    from memory, not from a path relative to wherever it runs (OpenVINO failed with
    "Invalid usage of method for externally stored data", calibration with "External data
    path does not exist", TensorRT's check named it an unsupported op)."""
    import deploycomp

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    path = _external_model(folder, "w.bin")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    calibration = tmp_path / "calib.npz"
    np.savez(calibration, x=np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32))
    runner = deploycomp.build(path, tmp_path / "out", target=target, precision="int8", calibration=calibration)
    np.testing.assert_allclose(runner.run({"x": np.zeros(4, np.float32)})["y"], np.arange(4), atol=0.05)


def _external_constant_model(folder, location: str):
    """y = x + w, ``w`` a ``Constant`` node's value stored in ``location`` (as
    ``onnx.save(..., save_as_external_data=True)`` writes a model whose weights are nodes)."""
    tensor = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        tensor.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["w"], value=tensor), helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])],
    )
    path = folder / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("target", ["host", "android-arm64"])
def test_constant_node_values_stored_beside_the_model_are_read_checked_and_recorded(tmp_path, target):
    """A ``Constant`` node's external value is data of the model like an initializer's: read
    into memory (OpenVINO had failed on a path relative to nowhere: an internal error),
    kept inside the model's folder, and in the manifest's ``source.external_data``."""
    import deploycomp

    (tmp_path / "c.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    path = _external_constant_model(tmp_path, "c.bin")
    runner = deploycomp.build(path, tmp_path / "out", target=target)
    np.testing.assert_allclose(runner.run({"x": np.ones(4, np.float32)})["y"], np.arange(4) + 1)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert list(manifest["source"]["external_data"]) == ["c.bin"]
    from deploycomp.fleet.cache import external_locations

    assert external_locations(path) == ["c.bin"]  # a fleet's cache key reads it too (an edit was a hit)
    (tmp_path / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    inner = tmp_path / "inner"
    inner.mkdir()
    with pytest.raises(ModelError, match="Constant 'w': external data path '../secret.bin' points outside"):
        load_model(_external_constant_model(inner, "../secret.bin"))


def test_missing_external_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(_external_model(tmp_path, "gone.bin"))


def test_save_large_model_uses_external_data(tmp_path):
    path = write_text_model(tmp_path / "m.onnx", RELU)
    files = save_model(load_model(path).model, tmp_path / "out.onnx", external_data=True)
    assert [f.name for f in files] == ["out.onnx", "out.onnx.data"]
    assert load_model(files[0]).model.graph.outputs[0].name == "y"


IR3_LIGHT = ["light_resnet50", "light_squeezenet", "light_shufflenet", "light_inception_v2"]


def _light(name: str):
    from pathlib import Path

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"{name}.onnx"


def test_ir3_initializer_inputs_are_constants(tmp_path):
    """IR 3 had to list every initializer in graph.input; like ONNX Runtime, deploycomp
    treats them as constants (one real input), unless asked to keep them."""
    loaded = load_model(_light("light_resnet50"))
    assert [v.name for v in loaded.model.graph.inputs] == ["gpu_0/data_0"]
    assert len(loaded.initializer_inputs) == 269 and loaded.ir_version == 3
    assert loaded.model.ir_version >= 8  # raised with the opset, or runtimes refuse the saved model
    kept = load_model(_light("light_resnet50"), keep_initializer_inputs=True)
    assert len(kept.model.graph.inputs) == 270 and kept.initializer_inputs == []


@pytest.mark.parametrize("name", IR3_LIGHT)
def test_ir3_models_optimize_to_the_same_outputs(name, tmp_path):
    """Their weights are ConstantOfShape fills: they fold (a computed weight always does)
    and the optimized model computes what ONNX Runtime computes from the original."""
    from deploycomp import optimize

    src = _light(name)
    summary = optimize(src, tmp_path / "opt.onnx")
    assert any("treated as constants" in a for a in summary["assumptions"])
    opt = onnx.load(tmp_path / "opt.onnx")
    assert not [n for n in opt.graph.node if n.op_type in ("ConstantOfShape", "Sum")]
    sess = ort.InferenceSession(str(src))
    feed = sess.get_inputs()[0]
    x = np.random.default_rng(0).random(feed.shape, dtype=np.float32)
    np.testing.assert_allclose(ort.InferenceSession(str(tmp_path / "opt.onnx")).run(None, {feed.name: x})[0],
                               sess.run(None, {feed.name: x})[0], rtol=1e-4, atol=1e-6)


def test_a_zipmap_output_is_refused_in_one_line_naming_it(tmp_path):
    """scikit-learn's default export: probabilities as one label -> score map per row
    (onnx-ir cannot hold a map: this was an internal error naming a hash)."""
    from deploycomp.errors import UnsupportedError

    ml = helper.make_opsetid("ai.onnx.ml", 1)
    maps = helper.make_sequence_type_proto(helper.make_map_type_proto(onnx.TensorProto.INT64,
                                                                      helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, [])))
    nodes = [helper.make_node("LinearClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml",
                              classlabels_ints=[0, 1, 2], coefficients=[0.1] * 6, intercepts=[0.0] * 3),
             helper.make_node("ZipMap", ["scores"], ["probabilities"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2])]
    graph = helper.make_graph(nodes, "sk", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("label", onnx.TensorProto.INT64, [1]),
                               helper.make_value_info("probabilities", maps)])
    path = tmp_path / "zipmap.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[ml, helper.make_opsetid("", 17)], ir_version=8), path)
    ort.InferenceSession(str(path))  # a valid model
    with pytest.raises(UnsupportedError, match="output 'probabilities' holds maps .*zipmap") as e:
        load_model(path)
    assert "\n" not in str(e.value)


def test_external_data_shorter_than_the_model_says_is_a_model_error(tmp_path):
    """A truncated ``.data`` file (a download cut short): exit 3 with what is wrong, not an
    internal error from the IR's reader."""
    (tmp_path / "w.bin").write_bytes(np.ones(2, np.float32).tobytes())  # 8 of the 16 bytes
    with pytest.raises(ModelError, match="external data .* cannot be read"):
        load_model(_external_model(tmp_path, "w.bin"))


def test_an_ir3_file_with_an_unlisted_initializer_loads_as_onnx_runtime_runs_it():
    """ONNX Runtime's own ``mul_1.onnx`` (IR 3, opset 7) keeps its weight as an initializer
    it does not list as an input; ONNX Runtime runs it, and so it loads (the version
    converter had called the weight undefined: exit 3)."""
    import os

    import onnxruntime

    loaded = load_model(os.path.join(os.path.dirname(onnxruntime.__file__), "datasets", "mul_1.onnx"))
    assert [v.name for v in loaded.model.graph.inputs] == ["X"] and "W" in loaded.model.graph.initializers
    assert loaded.model.opset_imports[""] >= MIN_OPSET


@pytest.mark.parametrize("io,said", [(onnx.TensorProto.FLOAT16, "still float16"),
                                     (onnx.TensorProto.FLOAT, "float32 as the file types them")])
def test_a_float16_models_io_types_are_said_as_the_file_has_them(tmp_path, io, said):
    """onnxconverter-common's ``keep_io_types`` leaves a float16 model's inputs and outputs
    float32: "still float16" had been said of those too."""
    from onnx import helper

    from deploycomp.ir import io_types_kept, load_model

    inner = [helper.make_node("Cast", ["x"], ["h"], to=onnx.TensorProto.FLOAT16),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Cast", ["r"], ["y"], to=onnx.TensorProto.FLOAT)]
    nodes = [helper.make_node("Relu", ["x"], ["y"])] if io == onnx.TensorProto.FLOAT16 else inner
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", io, [2])],
                              [helper.make_tensor_value_info("y", io, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    assert said in io_types_kept(load_model(tmp_path / "m.onnx").model)


def _function_constant(tmp_path, location: str):
    """A model whose local function holds a ``Constant`` of external data at ``location``."""
    from onnx import TensorProto as T, helper, numpy_helper

    tensor = numpy_helper.from_array(np.zeros(4, np.float32), "k")
    tensor.ClearField("raw_data")
    tensor.data_location = T.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    body = [helper.make_node("Constant", [], ["k"], value=tensor), helper.make_node("Add", ["a", "k"], ["b"])]
    function = helper.make_function("local", "AddK", ["a"], ["b"], body, [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("AddK", ["x"], ["y"], domain="local")], "g",
                              [helper.make_tensor_value_info("x", T.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                              functions=[function])
    (tmp_path / "m").mkdir(exist_ok=True)
    onnx.save(model, tmp_path / "m" / "model.onnx")
    return tmp_path / "m" / "model.onnx"


@pytest.mark.parametrize("location", ["/etc/passwd", "../secret.bin"])
def test_external_data_in_a_local_function_is_checked_like_any_other(tmp_path, location):
    """A ``Constant`` naming ``/etc/passwd`` inside a local function had been read by
    constant folding and its bytes written into the optimized model."""
    (tmp_path / "secret.bin").write_bytes(b"secret!!" * 2)
    with pytest.raises(ModelError, match="external data path .* (is absolute|points outside)"):
        load_model(_function_constant(tmp_path, location))


def test_external_data_in_a_local_function_is_read_from_the_models_folder(tmp_path, monkeypatch):
    path = _function_constant(tmp_path, "k.bin")
    (path.parent / "k.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    monkeypatch.chdir(tmp_path)  # (not the model's folder: a relative path had been read from here)
    from deploycomp.passes import build_pipeline, run_passes

    model, _ = run_passes(load_model(path).model, build_pipeline("default", {"x": (4,)}))
    save_model(model, tmp_path / "out.onnx")
    got = ort.InferenceSession(str(tmp_path / "out.onnx")).run(None, {"x": np.ones(4, np.float32)})[0]
    np.testing.assert_array_equal(got, np.arange(4) + 1)


def _graph_of(nodes, outputs=("y",), inputs=(("x", onnx.TensorProto.FLOAT),)):
    from onnx import helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, [2]) for n, t in inputs],
                              [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [2]) for n in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _node(op, ins, outs, name):
    from onnx import helper

    return helper.make_node(op, ins, outs, name=name)


@pytest.mark.parametrize("nodes,outputs,error", [
    ([_node("Relu", ["x", ], ["a"], "r1"), _node("Add", ["a", "b"], ["b"], "loop")], ["b"],
     r"node 'loop' \(Add\) (is on a cycle|writes 'b')"),
    ([_node("Relu", ["a"], ["b"], "r1"), _node("Relu", ["b"], ["a"], "r2"), _node("Relu", ["x"], ["y"], "r3")], ["y"],
     r"node 'r1' \(Relu\) is on a cycle: it depends on its own output"),
    ([_node("Relu", ["nothing"], ["y"], "r")], ["y"], r"node 'r' \(Relu\) reads 'nothing', which nothing in the model"),
    ([_node("Relu", ["x"], ["y"], "r")], ["y", "z"], r"graph output 'z' is produced by no node"),
    ([_node("Relu", ["x"], ["y"], "r"), _node("Abs", ["x"], ["y"], "a")], ["y"], r"node 'a' \(Abs\) writes 'y'"),
    ([_node("Relu", ["x"], ["y"], "r")], ["y", "y"], r"graph output 'y' is listed twice"),
])
def test_a_model_that_is_no_graph_is_a_one_line_model_error(tmp_path, nodes, outputs, error):
    """A cycle had hung the optimizer for ever (``optimize``, ``build``); a dangling input or
    output was an internal error on host."""
    onnx.save(_graph_of(nodes, outputs), tmp_path / "m.onnx")
    with pytest.raises(ModelError, match=error):
        load_model(tmp_path / "m.onnx")


def test_a_graph_out_of_order_is_sorted_and_complex_inputs_are_refused(tmp_path):
    """ONNX Runtime runs a graph whose nodes are not in topological order (it sorts them):
    so does the loader. A complex input had been an internal error on every target."""
    from deploycomp.errors import UnsupportedError

    onnx.save(_graph_of([_node("Abs", ["a"], ["y"], "second"), _node("Neg", ["x"], ["a"], "first")]), tmp_path / "m.onnx")
    assert [n.name for n in load_model(tmp_path / "m.onnx").model.graph] == ["first", "second"]
    onnx.save(_graph_of([_node("Abs", ["x"], ["y"], "a")], inputs=(("x", onnx.TensorProto.COMPLEX64),)),
              tmp_path / "c.onnx")
    with pytest.raises(UnsupportedError, match="input 'x' is complex64: no backend takes complex tensors"):
        load_model(tmp_path / "c.onnx")


def test_a_tensor_whose_bytes_do_not_fit_its_shape_is_named(tmp_path):
    """An initializer 20 bytes short had failed deep in the optimizer ("cannot reshape array
    of size 211 into shape (8,3,3,3)") without a name; a negative external-data offset read
    "TypeError: <lambda>() missing 1 required positional argument"."""
    from onnx import TensorProto as T, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    w.raw_data = w.raw_data[:-4]
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", T.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [2, 3])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="initializer 'w': its data holds 20 bytes where its 2x3 needs 24"):
        load_model(tmp_path / "m.onnx")
    w = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = T.EXTERNAL
    for key, value in (("location", "w.bin"), ("offset", "-50")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    (tmp_path / "w.bin").write_bytes(bytes(24))
    graph.ClearField("initializer")
    graph.initializer.append(w)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "e.onnx")
    with pytest.raises(ModelError, match="initializer 'w': external data offset '-50' is not a byte count"):
        load_model(tmp_path / "e.onnx")
