"""``deploycomp.load(DIR).run``: a bundle takes inputs in the original model's names,
dtypes and shapes, and refuses what the original model would refuse."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import deploycomp
from deploycomp.errors import InputDataError


@pytest.mark.parametrize("target", ["host", "android-arm64", "jetson-orin-nano"])
def test_ids_past_a_tables_rows_are_refused_by_every_bundle(tmp_path, target):
    """ONNX Runtime refuses a token id past an embedding's vocabulary; OpenVINO's and
    TFLite's bundles of a Khmer segmenter computed outputs for it (exit 0). The manifest
    records the table's rows for the ids (``index_range``), and the runner checks them."""
    from onnx import TensorProto as T, helper, numpy_helper

    table = numpy_helper.from_array(np.random.default_rng(0).random((10, 4), dtype=np.float32), "table")
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["e"], name="embedding"),
                               helper.make_node("Relu", ["e"], ["y"])], "g",
                              [helper.make_tensor_value_info("ids", T.INT64, [1, 3])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 3, 4])], [table])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "e.onnx")
    runner = deploycomp.build(tmp_path / "e.onnx", tmp_path / "b", target=target,
                              validation_data=[{"ids": np.array([[1, 2, 9]], np.int64)}])
    assert runner.manifest["io"]["inputs"][0]["index_range"] == [-10, 10]
    assert runner.run({"ids": np.array([[0, -10, 9]], np.int64)})["y"].shape == (1, 3, 4)
    with pytest.raises(InputDataError, match=r"input 'ids': values 1\.\.12 given; they index a table of 10 rows "
                                             r"\(node 'embedding'\): -10\.\.9"):
        deploycomp.load(tmp_path / "b").run({"ids": np.array([[1, 12, 3]], np.int64)})


@pytest.mark.parametrize("target", ["host", "android-arm64"])
def test_ids_past_a_tables_rows_after_an_exporters_wrap_are_refused(tmp_path, target):
    """tf2onnx computes a Keras embedding's index as ``ids + rows * (ids < 0)`` before
    the ``Gather``: a Russian morpheme segmenter's OpenVINO and TFLite bundles took ids
    past its vocabulary (exit 0). The ids the wrap maps into the table are recorded and
    checked; the negative ids it wraps still run."""
    from onnx import TensorProto as T, helper, numpy_helper

    table = numpy_helper.from_array(np.random.default_rng(0).random((10, 4), dtype=np.float32), "table")
    rows, zero = numpy_helper.from_array(np.array(10, np.int64), "rows"), numpy_helper.from_array(np.array(0, np.int64), "zero")
    nodes = [helper.make_node("Less", ["ids", "zero"], ["neg"]), helper.make_node("Cast", ["neg"], ["neg_i"], to=T.INT64),
             helper.make_node("Mul", ["neg_i", "rows"], ["shift"]), helper.make_node("Add", ["ids", "shift"], ["index"]),
             helper.make_node("Gather", ["table", "index"], ["e"], name="embedding"),
             helper.make_node("Relu", ["e"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", T.INT64, [1, 3])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 3, 4])], [table, rows, zero])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "e.onnx")
    runner = deploycomp.build(tmp_path / "e.onnx", tmp_path / "b", target=target,
                              validation_data=[{"ids": np.array([[1, 2, 9]], np.int64)}])
    spec = runner.manifest["io"]["inputs"][0]
    assert (spec["index_range"], spec["index_rows"]) == ([-20, 10], 10)
    wrapped = runner.run({"ids": np.array([[-1, 0, 3]], np.int64)})["y"]
    np.testing.assert_allclose(wrapped[0, 0], np.maximum(numpy_helper.to_array(table)[9], 0), rtol=1e-6)
    with pytest.raises(InputDataError, match=r"input 'ids': values 1\.\.12 given; they index a table of 10 rows "
                                             r"\(node 'embedding'\): -20\.\.9"):
        deploycomp.load(tmp_path / "b").run({"ids": np.array([[1, 12, 3]], np.int64)})


def _conv_map(path):
    """A Conv + Relu whose output is a 1x8x16x16 map (TFLite's bundle computes it NHWC)."""
    from onnx import TensorProto as T, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                               helper.make_node("Relu", ["c"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 8, 16, 16])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("target", ["host", "android-arm64"])
def test_one_runner_shared_by_threads_gives_each_caller_its_own_result(tmp_path, target):
    """A service's threads sharing one runner: OpenVINO's request and LiteRT's interpreter
    hold their buffers between a run and reading its outputs, and another thread's run in
    between handed a caller another request's result (16-30 of 600 calls on TFLite, 3 on
    OpenVINO). Calls take turns: every result is its own input's."""
    from concurrent.futures import ThreadPoolExecutor

    runner = deploycomp.build(_conv_map(tmp_path / "m.onnx"), tmp_path / "b", target=target)
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]
    alone = [runner.run(f)["y"] for f in feeds]
    assert all(a.flags.c_contiguous for a in alone)  # (an NHWC bundle's output is transposed back: C order)
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda i: (i % 8, runner.run(feeds[i % 8])["y"]), range(240)))
    wrong = [i for i, got in together if not np.array_equal(got, alone[i])]
    assert not wrong, f"{len(wrong)} of {len(together)} calls got another input's result"


def test_feeds_that_are_not_a_mapping_or_hold_nan_are_refused(tmp_path, tiny_conv):
    """What ``deploycomp run`` refuses, the runner refuses: NaN or Inf in an input the
    model does not test for NaN (an int8 bundle gave ordinary-looking probabilities for a
    NaN image), float64 values past float32's range, and feeds that are not a mapping
    (a raw ``TypeError: unhashable type``)."""
    runner = deploycomp.build(tiny_conv, tmp_path / "b", target="host", inputs={"x": (1, 3, 16, 16)})
    x = np.zeros((1, 3, 16, 16), np.float32)
    with pytest.raises(InputDataError, match="feeds are a mapping of input name to array \\(x\\); ndarray given"):
        runner.run(x)
    with pytest.raises(InputDataError, match="feeds are a mapping .*; list given"):
        runner.run([x])
    nan = x.copy()
    nan[0, 0, 3, 3] = np.nan
    with pytest.raises(InputDataError, match="input 'x': contains NaN; the model does not test this input for NaN"):
        runner.run({"x": nan})
    with pytest.raises(InputDataError, match=r"input 'x': contains Inf \(past float32's range\)"):
        runner.run({"x": np.full((1, 3, 16, 16), 1e300)})
    assert runner.run({"x": x.astype(np.float64)})["probs"].shape == (1, 4)


@pytest.mark.parametrize("target", ["host", "android-arm64"])
def test_int64_values_a_runtime_computes_in_32_bits_are_refused(tmp_path, target):
    """OpenVINO's CPU plugin computes int64 as int32: its bundle of ``t + 1`` gave
    -2147483647 for 2**31 (and validated, on small numbers). Its int64 inputs say the range
    it computes (``value_range``) and the runner refuses values outside; TFLite's bundle
    computes int64 and takes them."""
    from onnx import TensorProto as T, helper, numpy_helper

    one = numpy_helper.from_array(np.array(1, np.int64), "one")
    graph = helper.make_graph([helper.make_node("Add", ["t", "one"], ["t1"])], "g",
                              [helper.make_tensor_value_info("t", T.INT64, [3])],
                              [helper.make_tensor_value_info("t1", T.INT64, [3])], [one])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "i.onnx")
    runner = deploycomp.build(tmp_path / "i.onnx", tmp_path / "b", target=target)
    big = np.array([5, 2**31, 1_700_000_000_123], np.int64)
    if target == "host":
        assert runner.manifest["io"]["inputs"][0]["value_range"] == [-2**31, 2**31 - 1]
        with pytest.raises(InputDataError, match=r"input 't': values 5\.\.1700000000123 given; this bundle takes "
                                                 r"-2147483648\.\.2147483647 \(OpenVINO's CPU plugin computes int64 "
                                                 r"as int32\)"):
            runner.run({"t": big})
        assert runner.run({"t": np.array([5, 2**31 - 2, -2**31], np.int64)})["t1"].tolist() == [6, 2**31 - 1, -2**31 + 1]
    else:
        assert "value_range" not in runner.manifest["io"]["inputs"][0]
        assert runner.run({"t": big})["t1"].tolist() == (big + 1).tolist()


def test_a_load_while_the_bundle_is_replaced_reads_one_version_of_it(tmp_path, tiny_conv, monkeypatch):
    """A service loads a bundle while CI rebuilds it with ``--force`` (two renames): the
    load had verified the old files and then read the new model, a runner whose manifest
    (batch 1) was not its model's (batch 3). A load during which the bundle changed starts
    over and reads the new one whole."""
    from deploycomp.backends import get_backend
    from deploycomp.bundle import replace_folder

    deploycomp.build(tiny_conv, tmp_path / "b", target="android-arm64", inputs={"x": (1, 3, 16, 16)})
    deploycomp.build(tiny_conv, tmp_path / "next", target="android-arm64", inputs={"x": (3, 3, 16, 16)})
    backend = get_backend("tflite")
    real_load, swapped = backend.load, []

    def load_then_swap(folder, lowered):
        runner = real_load(folder, lowered)
        if not swapped:  # the rebuild lands between reading the manifest and using the model
            swapped.append(True)
            replace_folder(tmp_path / "next", tmp_path / "b")
        return runner

    monkeypatch.setattr(backend, "load", load_then_swap)
    runner = deploycomp.load(tmp_path / "b")
    assert swapped and runner.inputs["x"]["shape"] == [3, 3, 16, 16]
    assert runner.run({"x": np.zeros((3, 3, 16, 16), np.float32)})["probs"].shape == (3, 4)


def test_a_damaged_bundle_is_a_verification_error_not_a_raw_one(tmp_path, tiny_conv):
    """A manifest naming no backend deploycomp has (a raw KeyError) and a truncated model
    loaded with ``verify=False`` (LiteRT's raw ValueError) are exit 11, in one line."""
    import json

    from deploycomp.errors import VerificationError

    deploycomp.build(tiny_conv, tmp_path / "b", target="android-arm64", inputs={"x": (1, 3, 16, 16)})
    model = next((tmp_path / "b").glob("*.tflite"))
    model.write_bytes(model.read_bytes()[:200])
    with pytest.raises(VerificationError, match="tflite cannot read the bundle's artifact"):
        deploycomp.load(tmp_path / "b", verify=False)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    manifest["backend"]["name"] = "coreml"
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(VerificationError, match="damaged manifest \\(backend 'coreml' is none of openvino, "):
        deploycomp.load(tmp_path / "b", verify=False)


def test_the_api_checks_its_arguments_as_the_command_line_does(tmp_path, tiny_conv):
    """Shapes, names and data given to ``deploycomp.build`` in Python's own forms: a dim of
    -1 had been a raw IndexError, 0 a raw ValueError and 1.5 silently 1; ``keep_float="fc"``
    was read as layers 'f' and 'c'; an array for calibration failed with an AttributeError
    where an .npy file of the same array works."""
    for dims in [(-1, 3, 16, 16), (0, 3, 16, 16), (1.5, 3, 16, 16), ()]:
        with pytest.raises(InputDataError, match=r"inputs\['x'\]: .*give the shape as positive integers"):
            deploycomp.build(tiny_conv, tmp_path / "b", inputs={"x": dims})
    with pytest.raises(InputDataError, match="every dim must be positive"):
        deploycomp.optimize(tiny_conv, tmp_path / "o.onnx", inputs={"x": "0x3x16x16"})
    assert not (tmp_path / "b").exists() and not (tmp_path / "o.onnx").exists()
    rng = np.random.default_rng(0)
    stacked = rng.random((6, 3, 16, 16), dtype=np.float32)
    runner = deploycomp.build(tiny_conv, tmp_path / "b", inputs={"x": "1x3x16x16"}, precision="int8",
                              calibration=stacked, keep_float="fc")
    assert runner.manifest["quantization"]["float_layers"] == ["fc"]
    with pytest.raises(InputDataError, match="calibration data: a path, .*; int given"):
        deploycomp.build(tiny_conv, tmp_path / "c", inputs={"x": (1, 3, 16, 16)}, precision="int8", calibration=5)
    with pytest.raises(InputDataError, match="calibration data sample 0: ndarray given; each sample is"):
        deploycomp.build(tiny_conv, tmp_path / "c", inputs={"x": (1, 3, 16, 16)}, precision="int8",
                         calibration=[stacked[0]])


def test_the_library_prints_nothing_of_its_own(tmp_path, tiny_conv):
    """Imported into a service that has not configured logging, a build writes nothing to
    stderr (Python's last-resort handler had printed its progress notes there, and
    onnx-ir's "Skipped deduplication of initializer"), and leaves the libraries' levels
    as they were."""
    import subprocess
    import sys

    from onnx import TensorProto as T, helper

    # a constant output: onnx-ir warns that it skipped deduplicating the folded initializer
    k = helper.make_tensor("kv", T.FLOAT, [2, 3], [0, 1, 2, 3, 4, 5])
    graph = helper.make_graph([helper.make_node("Constant", [], ["k"], value=k), helper.make_node("Mul", ["k", "k"], ["sq"])],
                              "g", [], [helper.make_tensor_value_info("sq", T.FLOAT, [2, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "c.onnx")
    code = (f"import deploycomp, numpy as np\n"
            f"deploycomp.build({str(tiny_conv)!r}, {str(tmp_path / 'b')!r}, target='android-arm64', "
            f"inputs={{'x': (1, 3, 16, 16)}}, validation_data=[{{'x': np.ones((1, 3, 16, 16), np.float32)}}] * 2,\n"
            f"                 calibration=[{{'x': np.ones((1, 3, 16, 16), np.float32)}}] * 2)\n"
            f"deploycomp.build({str(tmp_path / 'c.onnx')!r}, {str(tmp_path / 'c')!r})\n"
            f"import logging; logging.getLogger('deploycomp').warning('not silenced')\n"
            f"assert logging.getLogger('onnx_ir').level == logging.NOTSET\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "XNNPACK" not in line]
    assert lines == [], lines


def test_loading_a_manifest_file_names_its_folder(tmp_path, tiny_conv):
    """``load("bundle/manifest.json")`` said "no manifest.json"; it names the folder to give."""
    from deploycomp.errors import DeployError

    deploycomp.build(tiny_conv, tmp_path / "b", inputs={"x": (1, 3, 16, 16)})
    with pytest.raises(DeployError, match=r"manifest.json: a bundle's manifest; give its folder, .*/b$"):
        deploycomp.load(tmp_path / "b" / "manifest.json")


def test_a_bundle_that_executes_otherwise_than_it_was_validated_says_so(tiny_conv, tmp_path, caplog):
    """A 0.1.0 fp16 bundle validated executing bf16 (a CPU without native f16) runs f32
    under a newer deploycomp: its outputs moved by 0.85 on a probability map, unsaid."""
    import json
    import logging

    deploycomp.build(tiny_conv, tmp_path / "b", target="host", precision="fp32")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    with caplog.at_level(logging.WARNING, logger="deploycomp.runner"):
        deploycomp.load(tmp_path / "b")
    assert "was validated executing" not in caplog.text
    manifest["backend"]["runtime"]["executed_precision"] = "bf16"
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="deploycomp.runner"):
        deploycomp.load(tmp_path / "b")
    assert "was validated executing bf16 and executes fp32 here" in caplog.text


def test_a_frozen_input_fed_its_built_value_is_taken_and_another_refused(tmp_path):
    """An application feeds every input it fed the model (Silero's package passes ``sr`` on
    each call): a bundle built with ``--freeze`` takes the built value and drops it (it had
    refused ``unknown input(s) sr``), and refuses another value, naming the one it computes."""
    import onnx
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Mul", ["x", "gain"], ["y"], name="scale")], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4]),
                               helper.make_tensor_value_info("gain", onnx.TensorProto.FLOAT, [])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    deploycomp.build(tmp_path / "m.onnx", tmp_path / "b", freeze={"gain": 2.0})
    loaded = deploycomp.load(tmp_path / "b")
    assert loaded.manifest["io"]["frozen"] == {"gain": {"dtype": "float32", "shape": [], "values": [2.0]}}
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    np.testing.assert_array_equal(loaded.run({"x": x, "gain": np.float32(2.0)})["y"], 2 * x)
    np.testing.assert_array_equal(loaded.run({"x": x})["y"], 2 * x)
    with pytest.raises(InputDataError, match=r"^input 'gain' was built as a constant \(--freeze gain=2\.0\): this "
                                             r"bundle computes only that; given another value, build one for it$"):
        loaded.run({"x": x, "gain": 3.0})
