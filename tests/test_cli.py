"""The ``deploycomp`` command as CI scripts call it: exit codes, one-line errors, JSON."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import numpy as np
import pytest


def cli(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "deploycomp.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def _one_line_error(stderr: str, *needles: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deploycomp: error: "), stderr
    for needle in needles:
        assert needle in lines[0], stderr


def test_build_json_run_and_inspect(tiny_conv, tmp_path):
    out = tmp_path / "bundle"
    code, stdout, stderr = cli("build", tiny_conv, "--out", out, "--precision", "fp16", "--input", "x:1x3x16x16", "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["ok"] and summary["backend"] == "openvino" and summary["precision"] == "fp16"
    assert summary["outputs"]["probs"]["cosine"] > 0.999
    assert summary["fp16"]["fp32_tensors"] == {}  # the fp16 record: nothing left fp16's range here
    if "executes_fp32" in summary["fp16"]:  # said why, and did so
        assert summary["executed_precision"] == "fp32"
    assert "int8" not in summary
    # an int8 build says its layers, the share of MACs that runs int8 and its ranges (only
    # the manifest had: a CI job reading --json saw none of it)
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).random((8, 3, 16, 16), dtype=np.float32))
    code, stdout, stderr = cli("build", tiny_conv, "--out", tmp_path / "i8", "--precision", "int8", "--input",
                               "x:1x3x16x16", "--calibration", tmp_path / "c.npz", "--json")
    assert code == 0, stderr
    int8 = json.loads(stdout)["int8"]
    assert int8["int8_layers"] >= 1 and 0 < int8["int8_mac_share"] <= 1 and int8["range_method"] and int8["budget_met"]

    x = np.random.default_rng(1).random((1, 3, 16, 16), dtype=np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    code, stdout, stderr = cli("run", out, "--inputs", tmp_path / "in.npz", "--outputs", tmp_path / "out.npz")
    assert code == 0, stderr
    with np.load(tmp_path / "out.npz") as got:
        assert got["probs"].shape == (1, 4)
        np.testing.assert_allclose(got["probs"].sum(), 1.0, rtol=1e-3)
    # --outputs a pipe (or /dev/null, /dev/stdout): written into, not renamed over (as root,
    # /dev/null had become a regular file)
    import threading

    os.mkfifo(tmp_path / "pipe")
    read = {}
    reader = threading.Thread(target=lambda: read.setdefault("bytes", (tmp_path / "pipe").read_bytes()), daemon=True)
    reader.start()
    code, _, stderr = cli("run", out, "--inputs", tmp_path / "in.npz", "--outputs", tmp_path / "pipe")
    reader.join(60)
    assert code == 0, stderr
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe").st_mode) and read["bytes"][:2] == b"PK"  # an npz came through

    code, stdout, _ = cli("inspect", tiny_conv, "--input", "x:1x3x16x16", "--json")
    info = json.loads(stdout)
    assert info["dynamic_inputs"] == {} and info["macs"] == 16 * 16 * 8 * 27 + 32
    assert info["op_histogram"]["Conv"] == 1 and info["parameters"] == 8 * 27 + 8 + 32
    code, stdout, _ = cli("inspect", tiny_conv)
    assert code == 0 and "dynamic dims [0]" in stdout


def _per_channel_at_opset_11(path):
    """What onnxruntime.quantization writes for an opset-11 model with ``per_channel``: a
    DequantizeLinear with ``axis``, which that opset does not have (ONNX Runtime refuses it)."""
    from onnx import TensorProto as T, helper, numpy_helper

    w = np.ones((4, 3, 3, 3), np.int8)
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0, name="weights"),
         helper.make_node("Conv", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 16, 16])], [helper.make_tensor_value_info("y", T.FLOAT, None)],
        [numpy_helper.from_array(w, "wq"), numpy_helper.from_array(np.full(4, 0.1, np.float32), "ws"),
         numpy_helper.from_array(np.zeros(4, np.int8), "wz")])
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]).SerializeToString())


@pytest.mark.parametrize(
    "make, args, code, needles",
    [
        (_per_channel_at_opset_11, [], 3, ["ONNX Runtime cannot load it: node 'weights' (DequantizeLinear): "
                                           "Unrecognized attribute: axis"]),
        (lambda p: p.write_bytes(b"\x00garbage" * 9), [], 3, ["not a valid ONNX model"]),
        (lambda p: p.write_text("hello"), [], 3, ["not a valid ONNX model"]),
        (None, ["--target", "no-such-board"], 5, ["unknown target 'no-such-board'"]),
        (None, ["--input", "images:1x3x16x16"], 4, ["no input named 'images'"]),
        (None, ["--input", "x:1x3x16"], 4, ["rank 3 given"]),
        (None, ["--calibration", "missing.npz"], 4, ["calibration file not found"]),
        (None, ["--validation-data", "missing.npz"], 4, ["validation data file not found"]),
        (None, ["--target", "coral-edgetpu", "--precision", "fp32"], 6, ["coral-edgetpu", "does not support precision fp32"]),
        (None, ["--target", "coral-edgetpu"], 4, ["precision int8 needs calibration data"]),  # its own precision
        (None, ["--io-layout", "nchw"], 6, ["--io-layout applies to TFLite targets"]),
        (None, ["--precision", "int8"], 4, ["precision int8 needs calibration data"]),
        (None, ["--int8-boosters", "equalize,adaround"], 2, ["unknown int8 booster(s) adaround"]),
        (None, ["--min-top1", "1.5"], 2, ["--min-top1 must be in (0, 1], got 1.5"]),
        (None, ["--judge-where", "probs"], 4, ["--judge-where 'probs'", "OUTPUT[,OUTPUT...]:SCORES>THRESHOLD"]),
        (None, ["--judge-where", "probs:heat>0.2"], 4, ["no output 'heat'"]),
        (None, ["--judge-boxes", "y[0:4]=ltrb:y[4]>0.2"], 4, ["--judge-boxes", "format 'ltrb' is not one of"]),
        (None, ["--judge-boxes", "probs:probs[4]>0.2"], 4, ["--judge-boxes probs[0:4]:probs[4]>0.2: probs (shape"]),
        (None, ["--min-box-iou", "1.5"], 2, ["--min-box-iou must be in (0, 1], got 1.5"]),
    ],
)
def test_bad_input_one_line_and_exit_code(tiny_conv, tmp_path, make, args, code, needles):
    model = tiny_conv
    if make is not None:
        model = tmp_path / "broken.onnx"
        make(model)
    rc, _, stderr = cli("build", model, "--out", tmp_path / "out", *args, cwd=tmp_path)
    assert rc == code
    _one_line_error(stderr, *needles)
    assert not (tmp_path / "out").exists()


def test_nan_in_run_inputs(tiny_conv, tmp_path):
    assert cli("build", tiny_conv, "--out", tmp_path / "b")[0] == 0
    x = np.full((1, 3, 16, 16), np.inf, np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    rc, _, stderr = cli("run", tmp_path / "b", "--inputs", tmp_path / "in.npz")
    assert rc == 4
    _one_line_error(stderr, "contains Inf")


def test_existing_output_and_force(tiny_conv, tmp_path):
    (tmp_path / "out").mkdir()
    rc, _, stderr = cli("build", tiny_conv, "--out", tmp_path / "out")
    assert rc == 9
    _one_line_error(stderr, "--force")
    assert cli("build", tiny_conv, "--out", tmp_path / "out", "--force")[0] == 0


def test_bad_profile_file(tiny_conv, tmp_path):
    profile = tmp_path / "board.yaml"
    profile.write_text("extends: intel-core-avx2\ncompute:\n  memory_bandwidth_gbps: lots\n")
    rc, _, stderr = cli("build", tiny_conv, "--out", tmp_path / "out", "--target", profile)
    assert rc == 5
    _one_line_error(stderr, "board.yaml", "compute.memory_bandwidth_gbps")


def test_verbose_shows_traceback(tmp_path):
    (tmp_path / "m.onnx").write_text("nope")
    rc, _, stderr = cli("-v", "build", tmp_path / "m.onnx", "--out", tmp_path / "o")
    # the documented exit code still (a refusal is not an internal error because of -v)
    assert rc == 3 and "Traceback" in stderr
    assert stderr.rstrip().splitlines()[-1].startswith("deploycomp: error: ")


def test_library_warnings_stay_quiet_without_verbose(tmp_path):
    """A file whose declared shapes contradict its weights (a value_info of rank 0 for a
    [4] initializer): onnx-ir's shape inference logs a warning with a whole traceback and
    leaves the model as it was; the build goes on and validates. Only ``-v`` shows it."""
    import onnx
    from onnx import helper, numpy_helper

    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["a"]), helper.make_node("Relu", ["a"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", 1, [1, 4])],
                              [helper.make_tensor_value_info("y", 1, [1, 4])],
                              [numpy_helper.from_array(np.ones(4, np.float32), "w")],
                              value_info=[helper.make_tensor_value_info("w", 1, [])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    rc, _, stderr = cli("build", tmp_path / "m.onnx", "--out", tmp_path / "o")
    assert rc == 0 and "Traceback" not in stderr and "onnx_ir" not in stderr, stderr
    rc, _, stderr = cli("-v", "build", tmp_path / "m.onnx", "--out", tmp_path / "v")
    assert rc == 0 and "Shape inference failed" in stderr


def test_the_optimizer_libraries_per_node_logs_only_at_vv(tmp_path):
    """``-v`` is for deploycomp's stages and passes; onnxscript logs a line for every
    constant it folds (79 of 150 lines on PP-OCRv6 tiny rec), which only ``-vv`` shows."""
    import onnx
    from onnx import helper, numpy_helper

    graph = helper.make_graph([helper.make_node("Transpose", ["w"], ["wt"]), helper.make_node("MatMul", ["x", "wt"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", 1, [1, 4])],
                              [helper.make_tensor_value_info("y", 1, [1, 4])],
                              [numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")])  # a weight computed
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    rc, _, stderr = cli("-v", "build", tmp_path / "m.onnx", "--out", tmp_path / "v")
    assert rc == 0 and "stage: load + optimize" in stderr and "onnxscript" not in stderr, stderr
    rc, _, stderr = cli("-vv", "build", tmp_path / "m.onnx", "--out", tmp_path / "vv")
    assert rc == 0 and "INFO onnxscript" in stderr, stderr


def test_verbose_int8_builds_say_how_each_candidate_fared(tiny_conv, tmp_path):
    """A large model's int8 search runs for minutes; ``-v`` logs each candidate it judged."""
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((12, 1, 3, 16, 16), dtype=np.float32))
    rc, _, stderr = cli("-v", "build", tiny_conv, "--out", tmp_path / "o", "--precision", "int8",
                        "--calibration", tmp_path / "calib.npz")
    assert rc == 0, stderr
    assert re.search(r"int8 candidate 1: \d+ compute layers? float, worst cosine [0-9.]+ on \d+ samples: (met|missed)", stderr)


def test_targets_listing_and_show():
    rc, stdout, _ = cli("targets")
    assert rc == 0
    assert stdout.splitlines()[0].startswith("host -> intel-")
    assert "jetson-orin-nano" in stdout and "[ONNX + build plan here; engine on the device]" in stdout
    rc, stdout, _ = cli("targets", "show", "jetson-orin-nano")
    assert rc == 0 and "backend: tensorrt" in stdout and "memory_bandwidth_gbps" in stdout
    rc, _, stderr = cli("targets", "show", "nope")
    assert rc == 5


def test_optimize_writes_a_smaller_equivalent_model(real_model, tmp_path):
    import onnxruntime as ort

    src = real_model("yolov8n")
    out = tmp_path / "opt.onnx"
    rc, stdout, stderr = cli("optimize", src, "-o", out, "--input", "images:1x3x320x320", "--json")
    assert rc == 0, stderr
    summary = json.loads(stdout)
    assert summary["nodes_after"] < summary["nodes_before"]
    x = np.random.default_rng(0).random((1, 3, 320, 320), dtype=np.float32)
    ref = ort.InferenceSession(str(src)).run(None, {"images": x})[0]
    got = ort.InferenceSession(str(out)).run(None, {"images": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3)


def test_optimize_makes_the_folders_of_its_output(tiny_conv, tmp_path):
    """As ``build`` makes ``--out``'s: a missing folder had been an internal error
    (FileNotFoundError)."""
    out = tmp_path / "not" / "yet" / "opt.onnx"
    rc, _, stderr = cli("optimize", tiny_conv, "-o", out)
    assert rc == 0, stderr
    assert out.is_file() and sorted(p.name for p in out.parent.iterdir()) == ["opt.onnx"]


def test_optimize_will_not_write_over_the_model_it_reads(tiny_conv, tmp_path):
    """`optimize m.onnx -o m.onnx` replaced the model, and left its external data (named
    otherwise) orphaned."""
    import shutil

    model = tmp_path / "m.onnx"
    shutil.copy(tiny_conv, model)
    before = model.read_bytes()
    rc, _, stderr = cli("optimize", model, "-o", tmp_path / "." / "m.onnx")
    assert rc == 9 and model.read_bytes() == before
    _one_line_error(stderr, "-o names the model being optimized; write the optimized model elsewhere")
    # nor over the weights it reads from beside it, nor rename a file over a device
    from deploycomp.ir import load_model, save_model

    (tmp_path / "ext").mkdir()
    save_model(load_model(model).model, tmp_path / "ext" / "m.onnx", external_data=True)
    data = tmp_path / "ext" / "m.onnx.data"
    weights = data.read_bytes()
    rc, _, stderr = cli("optimize", tmp_path / "ext" / "m.onnx", "-o", data)
    assert rc == 9 and data.read_bytes() == weights
    _one_line_error(stderr, "would replace m.onnx.data, the model's external data")
    os.mkfifo(tmp_path / "fifo")
    rc, _, stderr = cli("optimize", model, "-o", tmp_path / "fifo")
    assert rc == 9 and stat.S_ISFIFO(os.stat(tmp_path / "fifo").st_mode)
    _one_line_error(stderr, "not a regular file (a device or a pipe)")



@pytest.mark.parametrize("role", ["model", "--calibration", "--validation-data", "--preprocess"])
def test_a_pipe_named_for_a_file_is_refused_unread_and_said_so(tiny_conv, tmp_path, role):
    """A FIFO named as the model, the data or the preprocessing spec is refused before it
    is opened, in the words every such refusal uses. It had been "no such file" for an .npz,
    "preprocessing spec not found", "must be .npz, .npy or a folder of images" for
    /dev/zero, "not a file" for the model: each naming something that was not the case."""
    fifo = tmp_path / ("p.onnx" if role == "model" else "p.yaml" if role == "--preprocess" else "p.npz")
    os.mkfifo(fifo)
    args = [fifo if role == "model" else tiny_conv, "--target", "host", "--out", tmp_path / "b"]
    if role != "model":
        args += [role, fifo] + (["--precision", "int8"] if role == "--calibration" else [])
    rc, _, stderr = cli("build", *args)
    assert rc == (3 if role == "model" else 4) and not (tmp_path / "b").exists()
    what = {"model": "", "--calibration": "the calibration data is ", "--validation-data": "the validation data is ",
            "--preprocess": "preprocessing spec is "}[role]
    _one_line_error(stderr, f"{fifo.name}: {what}not a regular file (a device or a pipe)")


def test_optimize_writes_through_a_folder_of_its_own_and_removes_a_killed_runs(tiny_conv, tmp_path):
    """The model is written in a hidden folder next to it and moved into place (an
    external-data file keeps the name the model refers to); what a killed run left
    there is removed by the next one."""
    import socket
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    out = tmp_path / "optimized"
    left = out / f".opt.onnx.tmp-{socket.gethostname()}-{gone.pid}"
    left.mkdir(parents=True)
    (left / "opt.onnx").write_text("half")
    rc, _, stderr = cli("optimize", tiny_conv, "-o", out / "opt.onnx")
    assert rc == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["opt.onnx"]
    import onnx

    onnx.checker.check_model(str(out / "opt.onnx"))

def test_inspect_explains_which_rules_fired_and_why_others_did_not(tmp_path):
    from tests.passes._harness import model_from_text

    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 3, 8, 8] x, float[4, 3, 3, 3] w, float[4, 1, 1] s, float[1, 1, 8, 8] t) => (float[1, 4, 6, 6] y) {
        c = Conv(x, w)
        m = Mul(c, s)
        y = Relu(m)
    }
    """
    import onnx

    weights = {"w": np.ones((4, 3, 3, 3), np.float32), "s": np.full((4, 1, 1), 2, np.float32)}
    text = text.replace(", float[1, 1, 8, 8] t", "")
    model = model_from_text(text, **weights)
    onnx.save(model, tmp_path / "m.onnx")
    rc, stdout, stderr = cli("inspect", tmp_path / "m.onnx", "--explain-passes", "--json")
    assert rc == 0, stderr
    rules = {r["rule"]: r for r in json.loads(stdout)["rules"]}
    assert rules["ConvMulFusion"]["fired"] == 1
    assert rules["ConvAddFusion"]["fired"] == 0
    rc, stdout, _ = cli("inspect", tmp_path / "m.onnx", "--explain-passes")
    assert "rule ConvMulFusion: fired 1x" in stdout

    spatial = model_from_text(text.replace("float[4, 1, 1] s", "float[1, 1, 6, 6] s"),
                              w=weights["w"], s=np.full((1, 1, 6, 6), 2, np.float32))
    onnx.save(spatial, tmp_path / "spatial.onnx")
    rc, stdout, _ = cli("inspect", tmp_path / "spatial.onnx", "--explain-passes", "--json")
    miss = {r["rule"]: r for r in json.loads(stdout)["rules"]}["ConvMulFusion"]
    assert miss["fired"] == 0 and "is not per-output-channel" in miss["reason"]
    # a pipeline nobody has, and --pipeline without --explain-passes: usage errors (an
    # internal error, KeyError, and an option accepted and ignored)
    rc, _, stderr = cli("inspect", tmp_path / "m.onnx", "--explain-passes", "--pipeline", "nosuch")
    assert rc == 2 and "unknown pipeline 'nosuch'; known: " in stderr and "internal" not in stderr
    rc, _, stderr = cli("inspect", tmp_path / "m.onnx", "--pipeline", "tflite")
    assert rc == 2 and "give --explain-passes too" in stderr


def test_validation_inputs_of_one_class_are_said(real_model, tmp_path):
    """PP-OCR's text-direction classifier validated on upright lines only: every sample
    gives class 0, so its top-1 agreement says nothing of the turned lines it is for. The
    summary and the report say so; the built-in samples (half turned) do not."""
    from deploycomp.sample_data import ocr_line_samples

    lines = np.concatenate(ocr_line_samples((1, 3, 48, 192))[1:])  # (the first, upright, reads 0.69 turned)
    np.savez(tmp_path / "upright.npz", x=lines)
    model = real_model("ppocr-cls")
    code, stdout, stderr = cli("build", model, "--input", "x:1x3x48x192", "--validation-data",
                               tmp_path / "upright.npz", "--out", tmp_path / "b")
    assert code == 0, stderr
    said = [line for line in stdout.splitlines() if "top-1 agreement" in line]
    assert said and "(class 0 on every sample: it says little of the model's other answers" in said[0]
    assert "class 0 on every sample" in (tmp_path / "b" / "report.html").read_text()
    turned = np.concatenate([lines, lines[:, :, ::-1, ::-1]])
    np.savez(tmp_path / "both.npz", x=turned)
    code, stdout, stderr = cli("build", model, "--input", "x:1x3x48x192", "--validation-data",
                               tmp_path / "both.npz", "--out", tmp_path / "c")
    assert code == 0 and "top-1 agreement 1.000" in stdout and "on every sample" not in stdout


def test_a_gpu_estimate_says_how_much_of_it_is_its_kernels_fixed_time(tiny_conv, tmp_path):
    """On a GPU profile the roofline adds a fixed time per kernel, most of a small model's
    estimate: the summary line says how much, and a CPU profile's line has none."""
    code, stdout, stderr = cli("build", tiny_conv, "--target", "nvidia-t4", "--precision", "fp16", "--input",
                               "x:1x3x16x16", "--out", tmp_path / "t4")
    assert code == 0, stderr
    line = next(x for x in stdout.splitlines() if "roofline estimate" in x)
    assert re.search(r"ms of it the fixed time of \d+ kernels", line), line
    code, stdout, stderr = cli("build", tiny_conv, "--target", "raspberry-pi-5", "--input", "x:1x3x16x16",
                               "--out", tmp_path / "pi")
    assert code == 0, stderr
    assert "kernels" not in next(x for x in stdout.splitlines() if "roofline estimate" in x)


def test_an_output_no_sample_says_anything_of_is_said_not_judged(tiny_conv, tmp_path):
    """A ``--judge-boxes`` rule no row passed on any validation photo had read "[ok]" with
    cosine 1.000000 over nothing: the status line and the report say nothing was judged
    there (here: a ``--judge-where`` threshold a softmax never passes)."""
    code, stdout, stderr = cli("build", tiny_conv, "--judge-where", "probs:probs>2", "--out", tmp_path / "b")
    assert code == 0, stderr
    assert "NOTHING judged on probs: no validation sample is informative there" in stdout.splitlines()[0]
    assert "<b>Nothing judged</b> on probs" in (tmp_path / "b" / "report.html").read_text()
    code, stdout, _ = cli("build", tiny_conv, "--out", tmp_path / "c")
    assert code == 0 and "NOTHING judged" not in stdout
    # a classifier's top-1 agreement is said beside its cosine (it had been in the manifest only)
    assert any(line.startswith("  probs: cosine ") and "; top-1 agreement 1.000" in line for line in stdout.splitlines())


def test_reader_leaving_the_pipe_is_not_an_internal_error():
    proc = subprocess.Popen([sys.executable, "-m", "deploycomp.cli", "targets"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # like `| head` exiting before deploycomp writes
    _, stderr = proc.communicate(timeout=120)
    assert "internal error" not in stderr
    assert proc.returncode == 141


def test_diff_gates_a_worse_precision(tiny_conv, tmp_path):
    """The CI regression gate: a branch's int8 bundle against main's fp32 one exits 12 past
    the threshold, 0 within it; the table names the metric."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "c.npz", x=rng.random((8, 3, 16, 16), dtype=np.float32))
    np.savez(tmp_path / "v.npz", x=rng.random((3, 3, 16, 16), dtype=np.float32))
    same = ["--input", "x:1x3x16x16", "--validation-data", tmp_path / "v.npz"]  # both judged on the same inputs
    assert cli("build", tiny_conv, "--out", tmp_path / "main", *same)[0] == 0
    assert cli("build", tiny_conv, "--out", tmp_path / "branch", *same, "--precision", "int8",
               "--calibration", tmp_path / "c.npz")[0] == 0
    rc, stdout, stderr = cli("diff", tmp_path / "main", tmp_path / "branch", "--max-regression", "cosine=0")
    assert rc == 12 and "cosine[probs]" in stdout
    _one_line_error(stderr, "regression", "cosine[probs]")
    rc, _, _ = cli("diff", tmp_path / "main", tmp_path / "branch", "--max-regression", "cosine=0.5")
    assert rc == 0


def test_a_native_library_s_multi_line_error_is_told_by_its_reason():
    """OpenVINO's messages start with source locations and headers; the one-line error
    showed only "Exception from src/inference/src/cpp/core.cpp:117:"."""
    from deploycomp.cli import one_line

    assert one_line("Exception from src/inference/src/cpp/core.cpp:117:\nException from src/inference/src/dev/"
                    "plugin.cpp:54:\nCheck 'm_element_type.is_static()' failed at src/inference/src/dev/make_tensor"
                    ".cpp:58\n\n") == "Check 'm_element_type.is_static()' failed at src/inference/src/dev/make_tensor.cpp:58"
    assert one_line("Check 'false' failed at src/frontends/common/src/frontend.cpp:47:\nFrontEnd API failed with "
                    "GeneralFailure:\nInput tensor isn't found for node \"w\"") == "Input tensor isn't found for node \"w\""
    assert one_line("model.onnx: not a valid ONNX model\ndetails") == "model.onnx: not a valid ONNX model"
    assert one_line("only a header:") == "only a header:"


def test_run_takes_several_samples_as_build_does(tiny_conv, tmp_path):
    """``run`` on the stacked .npz ``build --validation-data`` takes (it refused anything but
    one sample): outputs joined as the inputs were, each row what one sample gives."""
    out = tmp_path / "bundle"
    assert cli("build", tiny_conv, "--out", out, "--input", "x:1x3x16x16")[0] == 0
    x = np.random.default_rng(2).random((3, 3, 16, 16), dtype=np.float32)
    for name, arr, shape in (("cat.npz", x, [3, 4]), ("stack.npz", x[:, None], [3, 1, 4])):
        np.savez(tmp_path / name, x=arr)
        code, _, stderr = cli("run", out, "--inputs", tmp_path / name, "--outputs", tmp_path / f"out-{name}")
        assert code == 0, stderr
        with np.load(tmp_path / f"out-{name}") as got:
            assert list(got["probs"].shape) == shape
            code, _, _ = cli("run", out, "--inputs", _one(tmp_path, x[1:2]), "--outputs", tmp_path / "one.npz")
            with np.load(tmp_path / "one.npz") as one:
                np.testing.assert_allclose(got["probs"].reshape(3, 4)[1], one["probs"][0], rtol=1e-5)


def _one(tmp_path, x):
    np.savez(tmp_path / "single.npz", x=x)
    return tmp_path / "single.npz"


def test_nan_in_an_input_the_model_tests_for_nan_reaches_build_run_and_inspect(tmp_path):
    """An input the model tests for NaN (here ``Where(IsNaN(x), 0, x)``, a missing value
    filled) takes NaN through every command; the bundle's outputs match ONNX Runtime's."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("IsNaN", ["x"], ["missing"]), helper.make_node("Where", ["missing", "zero", "x"], ["filled"]),
             helper.make_node("MatMul", ["filled", "w"], ["y"])]
    graph = helper.make_graph(nodes, "fill", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                              [numpy_helper.from_array(np.zeros((), np.float32), "zero"),
                               numpy_helper.from_array(np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32), "w")])
    model = tmp_path / "fill.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    x = np.random.default_rng(1).normal(size=(4, 2, 6)).astype(np.float32)
    x[:, 0, 2] = np.nan
    np.savez(tmp_path / "val.npz", x=x)
    code, stdout, stderr = cli("inspect", model, "--json")
    assert code == 0 and json.loads(stdout)["accepts_nan"] == ["x"], stderr
    code, _, stderr = cli("build", model, "--out", tmp_path / "b", "--validation-data", tmp_path / "val.npz")
    assert code == 0, stderr
    np.savez(tmp_path / "in.npz", x=x[0])
    code, _, stderr = cli("run", tmp_path / "b", "--inputs", tmp_path / "in.npz", "--outputs", tmp_path / "out.npz")
    assert code == 0, stderr
    want = ort.InferenceSession(str(model)).run(None, {"x": x[0]})[0]
    with np.load(tmp_path / "out.npz") as got:
        np.testing.assert_allclose(got["y"], want, rtol=1e-5, atol=1e-5)


def test_an_optimized_model_with_external_data_points_at_its_data_file(tiny_conv, tmp_path, monkeypatch):
    """Past 2 GB the weights go to OUT.data; the model had been written at a temporary
    name and referred to the data by that name, which the rename then broke."""
    import onnx
    import onnxruntime as ort

    from deploycomp import pipeline

    def external(model, path, **_):
        return save_model(model, path, external_data=True)

    save_model = pipeline.save_model
    monkeypatch.setattr(pipeline, "save_model", external)
    out = tmp_path / "opt.onnx"
    pipeline.optimize(tiny_conv, out)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("opt")) == ["opt.onnx", "opt.onnx.data"]
    locations = {entry.value for t in onnx.load(str(out), load_external_data=False).graph.initializer
                 for entry in t.external_data if entry.key == "location"}
    assert locations == {"opt.onnx.data"}
    ort.InferenceSession(str(out))  # loads its weights


def test_an_output_that_passes_its_input_through_is_reported_on_its_own_part(tmp_path):
    """``y = x + 0.02 tanh(conv(x))`` (a watermark encoder's shape): the whole output's
    cosine measures ``x``; the summary, a warning and the manifest also give the model's
    own part, ``y - x``, which int8 moves far more."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((3, 3, 3, 3)) * 0.3).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Tanh", ["c"], ["t"]),
             helper.make_node("Mul", ["t", "k"], ["m"]), helper.make_node("Add", ["x", "m"], ["y"])]
    graph = helper.make_graph(nodes, "mark", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(0.02, np.float32), "k")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "mark.onnx")
    x = rng.standard_normal((16, 1, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "cal.npz", x=x[:10])
    np.savez(tmp_path / "val.npz", x=x[10:])
    rc, stdout, stderr = cli("build", tmp_path / "mark.onnx", "--target", "android-arm64", "--precision", "int8",
                             "--calibration", tmp_path / "cal.npz", "--validation-data", tmp_path / "val.npz",
                             "--out", tmp_path / "b")
    assert rc == 0, stderr
    through = json.loads((tmp_path / "b" / "manifest.json").read_text())["validation"]["outputs"]["y"]["passes_through"]
    assert through["input"] == "x" and through["input_cosine"] > 0.99 and through["residual_cosine"] < 0.98
    assert "y is input x passed through" in stdout and "its own part, y - x: cosine" in stdout
    assert "output 'y' is input 'x' passed through" in stderr


def test_run_joins_a_time_major_output_on_its_batch_axis(tmp_path):
    """An output ``[time, batch, classes]`` (an EEG detector's LSTM head) of samples
    concatenated on the input's batch axis: joined along its batch axis, as the model gives
    the same batch at once ([79, 2, 4], not 79 steps twice over)."""
    from onnx import TensorProto, helper

    import onnx

    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[2, 0, 1]),  # [batch, 4, time] -> [time, batch, 4]
             helper.make_node("Sigmoid", ["t"], ["y"])]
    graph = helper.make_graph(nodes, "time_major", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 79])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [79, 1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "tm.onnx")
    assert cli("build", tmp_path / "tm.onnx", "--out", tmp_path / "b")[0] == 0
    x = np.random.default_rng(3).standard_normal((2, 4, 79)).astype(np.float32)
    np.savez(tmp_path / "two.npz", x=x)
    code, _, stderr = cli("run", tmp_path / "b", "--inputs", tmp_path / "two.npz", "--outputs", tmp_path / "o.npz")
    assert code == 0, stderr
    with np.load(tmp_path / "o.npz") as got:
        np.testing.assert_allclose(got["y"], 1 / (1 + np.exp(-x.transpose(2, 0, 1))), rtol=1e-5, atol=1e-6)


def test_run_says_what_is_wrong_with_its_files_in_one_line(tiny_conv, tmp_path):
    """An empty .npz, an array of Python objects, a file that is no .npz, and an --outputs
    folder that does not exist: one line each and a documented code, not an internal error."""
    out = tmp_path / "bundle"
    assert cli("build", tiny_conv, "--out", out, "--input", "x:1x3x16x16")[0] == 0
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 3, 16, 16), np.float32))
    np.savez(tmp_path / "objects.npz", x=np.array([np.zeros(3), np.zeros(4)], dtype=object))
    (tmp_path / "text.npz").write_text("hello")
    for name, needle in (("empty.npz", "holds no samples"), ("objects.npz", "an array of Python objects"),
                         ("text.npz", "neither a .npz nor a .npy")):
        code, _, stderr = cli("run", out, "--inputs", tmp_path / name)
        assert code == 4, stderr
        _one_line_error(stderr, needle)
    np.savez(tmp_path / "one.npz", x=np.zeros((1, 3, 16, 16), np.float32))
    code, _, stderr = cli("run", out, "--inputs", tmp_path / "one.npz", "--outputs", tmp_path / "no" / "such" / "o.npz")
    assert code == 2 and "does not exist" in stderr and "internal error" not in stderr


def test_values_the_model_rejects_are_a_data_error(tmp_path):
    """Token ids past an embedding's vocabulary: ONNX Runtime, the reference, fails on them;
    the build says so in one line (exit 4), not as an internal error with ONNX Runtime's
    own log line before it."""
    from onnx import TensorProto, helper, numpy_helper

    import onnx

    table = numpy_helper.from_array(np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32), "table")
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["y"], name="lookup")], "embed",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4])], [table])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "embed.onnx")
    np.savez(tmp_path / "oov.npz", ids=np.array([[1, 2, 12]], np.int64))
    code, _, stderr = cli("build", tmp_path / "embed.onnx", "--validation-data", tmp_path / "oov.npz",
                          "--out", tmp_path / "b")
    assert code == 4
    _one_line_error(stderr, "ONNX Runtime fails on these inputs", "Gather node 'lookup'", "out of data bounds")
    assert not (tmp_path / "b").exists()


def test_optimize_for_a_target_asks_for_shapes_in_its_own_terms(dynamic_hw_relu, tmp_path):
    """``optimize --target`` on a model with dynamic dims: the error names --input and says
    what optimize does without a target, not validation or --profile (optimize has neither)."""
    code, _, stderr = cli("optimize", dynamic_hw_relu, "--target", "jetson-orin-nano", "-o", tmp_path / "o.onnx")
    assert code == 4
    _one_line_error(stderr, "--input x:1x3xNxN", "optimize without --target keeps them dynamic",
                    "each N is a size your application feeds")
    assert "--profile" not in stderr and "validation" not in stderr


def test_a_data_file_speaks_for_itself_before_the_dynamic_dims_do(dynamic_hw_relu, tmp_path):
    """A model with dynamic dims and no --input: a .npy's array gives them as an .npz's
    does; a file that is no archive says so (the dynamic dims' error had hidden it)."""
    x = np.random.default_rng(0).random((4, 1, 3, 10, 12), dtype=np.float32)
    np.save(tmp_path / "val.npy", x)
    code, stdout, stderr = cli("build", dynamic_hw_relu, "--validation-data", tmp_path / "val.npy",
                               "--out", tmp_path / "b", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["ok"] and any("1x3x10x12 taken from val.npy" in a
                                            for a in json.loads((tmp_path / "b" / "manifest.json").read_text())["assumptions"])
    (tmp_path / "text.npz").write_text("hello")
    code, _, stderr = cli("build", dynamic_hw_relu, "--validation-data", tmp_path / "text.npz", "--out", tmp_path / "c")
    assert code == 4
    _one_line_error(stderr, "text.npz: not a readable .npz file")


def test_inspect_describes_a_model_no_build_takes(tmp_path):
    """ONNX Runtime's own scikit-learn classifier ends in a ZipMap (a label -> score map per
    row): builds refuse it by name, inspect still describes the file and says why."""
    import os

    import onnxruntime

    path = os.path.join(os.path.dirname(onnxruntime.__file__), "datasets", "logreg_iris.onnx")
    code, stdout, stderr = cli("inspect", path, "--json")
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["compiles"] is False and "ZipMap" in data["refusal"] and data["op_histogram"]["ai.onnx.ml::ZipMap"] == 1
    assert data["outputs"]["probabilities"] == "sequence"
    code, _, stderr = cli("build", path, "--out", tmp_path / "b")
    assert code == 6 and "zipmap" in stderr.lower()


def test_a_frozen_input_given_two_values_is_refused_naming_both(tiny_conv, tmp_path):
    """`--freeze sr=16000 --freeze sr=8000` took the last value silently."""
    rc, _, stderr = cli("build", tiny_conv, "--out", tmp_path / "b", "--freeze", "x=1", "--freeze", "x=2")
    assert rc == 4 and not (tmp_path / "b").exists()
    _one_line_error(stderr, "--freeze x: given twice, as 1 and 2; give one")


def test_run_cuts_samples_only_out_of_a_batch_axis(tmp_path):
    """A key detector's frames in, one key out: `run` cut 110 frames into two runs of the
    55 it was built for and joined two keys (exit 0). Its first axis is the model's own
    (no output follows it): such data is refused, as the Python runner refuses it."""
    from onnx import TensorProto as T, helper

    import onnx

    graph = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["key"], axes=[0], keepdims=0)], "g",
                              [helper.make_tensor_value_info("x", T.FLOAT, ["frames", 4])],
                              [helper.make_tensor_value_info("key", T.FLOAT, [4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "key.onnx")
    rc, _, stderr = cli("build", tmp_path / "key.onnx", "--input", "x:6x4", "--out", tmp_path / "b")
    assert rc == 0, stderr
    np.savez(tmp_path / "twelve.npz", x=np.random.default_rng(0).random((12, 4), dtype=np.float32))
    rc, _, stderr = cli("run", tmp_path / "b", "--inputs", tmp_path / "twelve.npz")
    assert rc == 4
    _one_line_error(stderr, "input 'x' has shape [12, 4], expected [6, 4] or N x [6, 4] (its first axis is the "
                            "model's own, not a batch")
    np.savez(tmp_path / "two.npz", x=np.random.default_rng(0).random((2, 6, 4), dtype=np.float32))
    rc, stdout, stderr = cli("run", tmp_path / "b", "--inputs", tmp_path / "two.npz")
    assert rc == 0 and stdout.startswith("key: float32 [2, 4]"), stderr  # two samples stacked: two keys
    rc, _, stderr = cli("run", tmp_path / "b", "--inputs", tmp_path / "two.npz", "--outputs", tmp_path)
    assert rc == 2 and "is a folder; name the .npz file to write" in stderr  # (an internal error before)
    rc, _, stderr = cli("run", tmp_path / "b", "--inputs", tmp_path)
    assert rc == 4 and "a folder, not an .npz or .npy file" in stderr  # ("no such file" before)


def test_inspect_with_input_given_does_not_ask_for_it_again(tmp_path):
    """A fingerprint CNN's `inspect --input ...` still said "4 node(s) need static shapes
    (--input)": what is left are shapes the graph computes from values."""
    from onnx import TensorProto as T, helper, numpy_helper

    import onnx

    w = numpy_helper.from_array(np.ones((3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", T.FLOAT, ["n", 6]),
                                    helper.make_tensor_value_info("s", T.INT64, [2])],
                              [helper.make_tensor_value_info("y", T.FLOAT, None)], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    rc, stdout, _ = cli("inspect", tmp_path / "m.onnx")  # (x's batch alone is dynamic: counted at 1)
    assert rc == 0 and "1 node(s) have shapes computed inside the graph, which inspect does not fold" in stdout
    rc, stdout, _ = cli("inspect", tmp_path / "m.onnx", "--input", "x:2x6", "--input", "s:2")
    assert rc == 0 and "1 node(s) have shapes computed inside the graph, which inspect does not fold" in stdout


def test_inspect_sizes_the_inputs_that_name_the_dims_an_input_was_given():
    """As build does: `--input a:1x16` sizes the other [batch, sequence] inputs (inspect
    still listed them as dynamic)."""
    import tempfile
    from pathlib import Path

    import onnx
    from onnx import TensorProto as T, helper

    with tempfile.TemporaryDirectory() as tmp:
        graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g",
                                  [helper.make_tensor_value_info(n, T.INT64, ["batch", "sequence"]) for n in "ab"],
                                  [helper.make_tensor_value_info("y", T.INT64, ["batch", "sequence"])])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), Path(tmp) / "m.onnx")
        rc, stdout, _ = cli("inspect", Path(tmp) / "m.onnx", "--input", "a:1x16")
    assert rc == 0 and "input  b: int64 [1, 16]" in stdout and "dynamic" not in stdout
    assert "output y: int64 [1, 16]" in stdout  # (dtypes: a bool mask, an int64 length were shapes alone)


@pytest.mark.slow
def test_one_input_given_to_an_example_keeps_its_other_shapes(real_model, tmp_path):
    """``example silero-vad --input state:2x1x128``: the audio input keeps the example's
    shape (it had been dropped: exit 4, "input 'input' has dynamic dim(s)")."""
    real_model("silero-vad")
    rc, _, stderr = cli("example", "silero-vad", "--input", "state:2x1x128", "--out", tmp_path / "sv", cwd=tmp_path)
    assert rc == 0, stderr
    manifest = json.loads((tmp_path / "sv" / "manifest.json").read_text())
    inputs = {i["name"]: i["shape"] for i in manifest["io"]["inputs"]}
    # 64 samples of the chunk before and 512 new, as silero_vad.OnnxWrapper feeds it (1x512
    # had been built, which the package never feeds), judged as a stream, its state fed back
    assert inputs == {"input": [1, 576], "state": [2, 1, 128]}
    assert manifest["validation"]["feedback"] == {"stateN": "state"}


def test_a_box_format_the_detections_contradict_is_said_as_the_cause(real_model, tmp_path):
    """YOLOv8n's boxes are centre and size; given as corners, every IoU is 0 on both sides,
    and the miss had been blamed on the runtimes ("the runtimes disagree"): the format is
    named as the cause, and the build passes given as it is or inferred."""
    real_model("yolov8n")
    rc, _, stderr = cli("example", "yolov8n", "--judge-boxes", "output0[0:4]=xyxy:output0[4:22]>0.25",
                        "--out", tmp_path / "wrong", cwd=tmp_path)
    assert rc == 8 and "given as xyxy, yet 100% of the reference's detections end left of or above" in stderr
    assert "runtimes disagree" not in stderr
    rc, _, stderr = cli("example", "yolov8n", "--judge-boxes", "output0[0:4]:output0[4:22]>0.25",
                        "--out", tmp_path / "inferred", cwd=tmp_path)
    assert rc == 0 and "given as xyxy" not in stderr, stderr


def test_one_value_per_sample_is_judged_not_said_unjudged(real_model, tmp_path):
    """Silero VAD's speech probability is one value per sample, judged by its error on every
    sample: the status line had said "NOTHING judged on output" beside "judged by its
    error" (a quality scorer's 3.5-4.4 too)."""
    real_model("silero-vad")
    rc, stdout, stderr = cli("example", "silero-vad", "--out", tmp_path / "sv", cwd=tmp_path)
    assert rc == 0, stderr
    assert "NOTHING judged" not in stdout and "one value per sample (cosine over the samples), judged by its error" in stdout
    assert "Nothing judged" not in (tmp_path / "sv" / "report.html").read_text()


@pytest.mark.parametrize("args, needle", [
    (["build", "m.onnx"], "Missing option '--out' / '-o' (see deploycomp build --help)"),
    (["build", "m.onnx", "--out", "o", "--precision", "fp8"], "'fp8' is not one of"),
    (["run", "b", "--inputs", "in.npz", "--outputs", "nodir/out.npz"], "folder"),
    (["nosuch"], "No such command 'nosuch' (see deploycomp --help)"),
])
def test_usage_errors_are_one_line_too(tmp_path, args, needle):
    """Click's own reports of a wrong command line had been three lines (usage, a hint,
    ``Error: ...``): now the documented one line, exit 2."""
    rc, _, stderr = cli(*args, cwd=tmp_path)
    assert rc == 2
    _one_line_error(stderr, needle)


def test_the_summary_says_what_the_build_assumed(tiny_conv, tmp_path):
    """A dynamic batch fixed to 1 makes a bundle that refuses batch 3: the summary says so
    (it had been only in the manifest's assumptions)."""
    rc, stdout, stderr = cli("build", tiny_conv, "--out", tmp_path / "b", cwd=tmp_path)
    assert rc == 0, stderr
    assert ("  assumed: x: batch dim set to 1; the bundle takes that batch only (--input x:Nx3x16x16 for another)"
            in stdout.splitlines())


def test_inspect_counts_a_dynamic_batch_at_one(tiny_conv, tmp_path):
    """An input dynamic in its batch alone is counted at batch 1 (as a build assumes) and
    still shown dynamic; FLOPs had read "0.000 G counted; ... need static shapes"."""
    rc, stdout, stderr = cli("inspect", tiny_conv, cwd=tmp_path)
    assert rc == 0, stderr
    assert "input  x: float32 ['N', 3, 16, 16]  dynamic dims [0]" in stdout
    flops = next(line for line in stdout.splitlines() if "FLOPs" in line)
    assert "counted;" not in flops and flops.endswith(", at batch 1 for x)")
    data = json.loads(cli("inspect", tiny_conv, "--json", cwd=tmp_path)[1])
    assert data["counted_at_batch_1"] == ["x"] and data["macs"] > 50_000 and not data["uncounted_nodes"]


def test_inspect_of_a_bundle_says_the_shapes_it_takes(dynamic_hw_relu, tmp_path):
    """``inspect`` on a bundle's folder had said "not a file": it reads the manifest, and
    says which shapes the bundle takes (a TensorRT profile's range) and what was assumed."""
    out = tmp_path / "j"
    code, _, stderr = cli("build", dynamic_hw_relu, "--target", "jetson-orin-nano", "--profile",
                          "x:1x3x8x8:1x3x16x16:1x3x32x32", "--out", out)
    assert code == 0, stderr
    code, stdout, stderr = cli("inspect", out)
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].startswith(f"{out}: bundle of dyn.onnx for jetson-orin-nano (fp32, tensorrt") and "ok" in lines[0]
    assert "  input  x: float32 [1, 3, 8, 8] to [1, 3, 32, 32] (--profile, OPT [1, 3, 16, 16])" in lines
    assert any(line.startswith("  assumed: x: validated at 1x3x16x16") for line in lines)
    code, stdout, _ = cli("inspect", out, "--json")
    data = json.loads(stdout)
    assert data["inputs"]["x"]["profile"]["max"] == [1, 3, 32, 32] and data["ok"] is True
    code, _, stderr = cli("inspect", tmp_path)  # a folder that is no bundle: said as run/verify/diff say it
    assert code == 2 and "not a deploycomp bundle (no manifest.json)" in stderr  # (exit 3, "not an .onnx file")


def test_inspect_counts_onnx_runtimes_fused_ops_as_the_layers_they_stand_for(tiny_conv, tmp_path):
    """No shape inference reads ``FusedConv``, so nothing after one was counted (an
    ORT-optimized PP-OCR cls read 0.001 G FLOPs of its 0.033): counted on its core form,
    its op shown as the file has it."""
    import onnxruntime as ort

    import onnx

    proto = onnx.load(tiny_conv)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(proto, tmp_path / "float.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "fused.onnx")
    ort.InferenceSession(str(tmp_path / "float.onnx"), options, providers=["CPUExecutionProvider"])
    counted = {}
    for name in ("float", "fused"):
        code, out, err = cli("inspect", tmp_path / f"{name}.onnx", "--json")
        assert code == 0, err
        counted[name] = json.loads(out)
    assert "com.microsoft::FusedConv" in counted["fused"]["op_histogram"]
    assert counted["fused"]["macs"] == counted["float"]["macs"] > 0


def test_names_a_file_system_or_onnx_runtime_will_not_take_are_said(tmp_path):
    """A model path with a name past 255 bytes was an internal error (ENAMETOOLONG); a
    model with two nodes of one name (legal ONNX) was refused by ONNX Runtime, the
    reference, with no word of what to do."""
    from onnx import TensorProto as T, helper

    rc, _, stderr = cli("build", tmp_path / ("m" * 300 + ".onnx"), "--out", tmp_path / "o")
    assert rc == 2
    _one_line_error(stderr, "a name in the path is longer than the file system takes")
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["a"], name="n"),
                               helper.make_node("Abs", ["a"], ["y"], name="n")], "g",
                              [helper.make_tensor_value_info("x", T.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 4])])
    import onnx

    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "dup.onnx")
    rc, _, stderr = cli("build", tmp_path / "dup.onnx", "--out", tmp_path / "o")
    assert rc == 3
    _one_line_error(stderr, "two nodes with same node name", "deploycomp optimize MODEL -o OUT")


def test_freeze_names_an_input_whose_name_holds_an_equals_sign():
    """``--freeze a=b=2.5`` had been refused: the values hold no '=', so the last one splits."""
    from deploycomp.cli import _freeze
    from deploycomp.errors import InputDataError

    assert _freeze(("a=b=2.5", "sr=16000")) == {"a=b": [2.5], "sr": [16000.0]}
    with pytest.raises(InputDataError, match="expected NAME=VALUE"):
        _freeze(("=2.5",))


def test_a_name_with_control_characters_stays_on_its_line():
    """An output named with a newline had split its summary line (and a terminal escape in a
    name could rewrite the screen)."""
    from deploycomp.cli import _short

    assert _short("prob\nmap\x1b[2J") == "prob\\nmap\\x1b[2J" and "\n" not in _short("a\nb")
    assert _short("Identity:0") == "Identity:0" and _short("中文é") == "中文é"


def test_json_says_a_failure_on_stdout_once(tiny_conv, tmp_path):
    """``build --json`` that missed its budget (exit 8) had printed nothing on stdout: a CI
    script reading it got no JSON. Every command's ``--json`` now says a failure as
    ``{"ok": false, "error", "exit_code"}`` (verify's names its bundle, as it did), and
    ``diff``'s own JSON of a regression is not followed by a second one."""
    (tmp_path / "tiny.yaml").write_text("extends: intel-core-avx2\nname: tiny\nbudgets: {max_artifact_mb: 0.000001}\n")
    rc, stdout, stderr = cli("build", tiny_conv, "--out", tmp_path / "b", "--target", tmp_path / "tiny.yaml",
                             "--input", "x:1x3x16x16", "--json")
    assert rc == 8 and not (tmp_path / "b").exists()
    said = json.loads(stdout)
    assert said["ok"] is False and said["exit_code"] == 8 and said["error"] in stderr
    rc, stdout, _ = cli("verify", tmp_path / "none", "--json")
    assert rc == 2 and json.loads(stdout) == {"bundle": str(tmp_path / "none"), "ok": False,
                                              "error": f"{tmp_path / 'none'}: no such bundle folder", "exit_code": 2}
    rc, stdout, _ = cli("inspect", tmp_path / "none.onnx", "--json")
    assert rc == 3 and json.loads(stdout)["exit_code"] == 3


def test_an_auto_build_names_its_bundle_as_the_user_did(tiny_conv, tmp_path):
    """``--precision auto --out rel/auto`` had printed the bundle's absolute path, every
    other build the path as given."""
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).random((8, 3, 16, 16), dtype=np.float32))
    rc, stdout, stderr = cli("build", tiny_conv, "--out", "rel/auto", "--precision", "auto", "--calibration", "c.npz",
                             "--input", "x:1x3x16x16", "--json", cwd=tmp_path)
    assert rc == 0, stderr
    assert json.loads(stdout)["bundle"] == "rel/auto"


def test_a_batched_build_says_its_latency_per_batch_and_per_input(tiny_conv, tmp_path):
    """A latency budget at batch 8 had read "1.0578 ms misses the budget 1 ms", the batch
    unsaid, and nothing said what one input costs (a server build's throughput)."""
    code, stdout, stderr = cli("build", tiny_conv, "--input", "x:8x3x16x16", "--out", tmp_path / "b8")
    assert code == 0, stderr
    line = next(l for l in stdout.splitlines() if l.strip().startswith("latency"))
    ms = float(re.search(r"latency ([\d.]+) ms", line).group(1))
    each = float(re.search(r"per batch of 8 \(([\d.]+) ms an input\)", line).group(1))
    assert abs(each - ms / 8) < 0.01
    code, stdout, stderr = cli("build", tiny_conv, "--out", tmp_path / "b1")  # batch 1: nothing more said
    assert code == 0, stderr and "per batch" not in stdout
    code, stdout, stderr = cli("build", tiny_conv, "--target", "jetson-orin-nano", "--input", "x:8x3x16x16",
                               "--out", tmp_path / "j8")  # (an estimate, not a measure: the same words)
    assert code == 0, stderr
    assert re.search(r"latency ~[\d.]+ ms per batch of 8 \([\d.]+ ms an input\) \(roofline", stdout), stdout
    code, stdout, stderr = cli("build", tiny_conv, "--target", "jetson-orin-nano", "--profile",
                               "x:1x3x16x16:8x3x16x16:32x3x16x16", "--out", tmp_path / "p")
    assert code == 0, stderr
    assert re.search(r"latency ~[\d.]+ ms per batch of 8 \([\d.]+ ms an input\) at its --profile's OPT "
                     r"\(not timed at MIN or MAX\) \(roofline", stdout), stdout


def test_a_profile_whose_max_input_outgrows_the_targets_memory_is_said(tiny_conv, tmp_path):
    """A 2 GB Orin Nano took a profile whose MAX input alone was 2.5 GB without a word (the
    bundle is validated and timed at OPT); said, in the assumptions and on stderr."""
    code, stdout, stderr = cli("build", tiny_conv, "--target", "jetson-orin-nano", "--profile",
                               "x:1x3x16x16:2x3x16x16:700000x3x16x16", "--out", tmp_path / "p", "--json")
    assert code == 0, stderr
    said = [a for a in json.loads(stdout)["assumptions"] if "MAX" in a]
    assert said == ["x: at its --profile's MAX 700000x3x16x16 the input alone takes 2051 MB, more than "
                    "jetson-orin-nano's memory budget of 2048 MB (the bundle is checked at OPT only)"]
    assert said[0] in stderr
    code, stdout, stderr = cli("build", tiny_conv, "--target", "jetson-orin-nano", "--profile",
                               "x:1x3x16x16:2x3x16x16:32x3x16x16", "--out", tmp_path / "q", "--json")
    assert code == 0 and not [a for a in json.loads(stdout)["assumptions"] if "MAX" in a]
