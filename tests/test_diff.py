"""``deploycomp diff``: the regression gate a CI job runs between main's builds and a branch's.

Every bundle here is a real build of one small conv net (its second output is the last
feature map, where int8's rounding shows: cosine ~0.9995 against fp32's ~1.0); the fleet
indexes are hand-written, as the fleet command will write them, pointing at those bundles.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import deploycomp
from deploycomp.diff import REGRESSION_EXIT, Limit, RegressionError, diff, diff_bundles, diff_indexes, parse_thresholds
from deploycomp.errors import DeployError
from deploycomp.ir import sha256_file


def _two_convs(path: Path) -> Path:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype("float32"), "w0"),
             numpy_helper.from_array(rng.standard_normal(8).astype("float32"), "b0"),
             numpy_helper.from_array((rng.standard_normal((8, 8, 3, 3)) / 8).astype("float32"), "w1"),
             numpy_helper.from_array(rng.standard_normal(8).astype("float32"), "b1"),
             numpy_helper.from_array(rng.standard_normal((4, 8)).astype("float32"), "w2")]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1], name="conv0"),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["features"], name="relu1"),
        helper.make_node("GlobalAveragePool", ["features"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w2"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "two_convs", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, ["N", 8, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """The same model built the ways a CI job sees it change."""
    root = tmp_path_factory.mktemp("diff")
    model = _two_convs(root / "two_convs.onnx")
    np.savez(root / "calib.npz", x=np.random.default_rng(1).standard_normal((16, 3, 16, 16)).astype("float32"))
    tight = root / "pi-tight.yaml"  # a board with almost no flash: every bundle misses its size budget
    tight.write_text("extends: raspberry-pi-5\nname: pi-tight\nbudgets: {max_artifact_mb: 0.001}\n")
    common = {"inputs": {"x": [1, 3, 16, 16]}, "calibration": root / "calib.npz"}
    builds = {
        "fp32": {"target": "host", "precision": "fp32"},
        "fp32-again": {"target": "host", "precision": "fp32"},
        "int8": {"target": "host", "precision": "int8"},
        "int8-conv1-float": {"target": "host", "precision": "int8", "keep_float": ["conv1"]},
        "rpi-fp32": {"target": "raspberry-pi-5", "precision": "fp32"},
        "pi-tight-fp32": {"target": str(tight), "precision": "fp32", "no_fail": True},
    }
    out = {}
    for name, options in builds.items():
        out[name] = root / name
        deploycomp.build(model, out[name], **common, **options)
        # how busy this test machine was while timing is not what these tests are about (a
        # latency timed busy is not compared: test_a_latency_timed_on_a_busy_machine_...)
        manifest = json.loads((out[name] / "manifest.json").read_text())
        for record in manifest["measured"].values():
            if isinstance(record, dict):
                record.pop("busy_elsewhere", None)
        (out[name] / "manifest.json").write_text(json.dumps(manifest))
    return out


def metrics(d) -> list[str]:
    return [r.metric for r in d.rows]


def row(d, metric, scope=""):
    (found,) = [r for r in d.rows if r.metric == metric and r.scope == scope]
    return found


# ------------------------------------------------------------------------------ bundles

def test_identical_bundles_diff_to_nothing(bundles, tmp_path):
    copy = shutil.copytree(bundles["fp32"], tmp_path / "copy")
    d = diff(bundles["fp32"], copy, "cosine=0,latency=0%,size=0%,memory=0%,nodes=0")
    assert d.rows == [] and d.ok and d.exit_code == 0
    assert d.table().splitlines()[-1].startswith("no differences")
    assert d.to_json()["changes"] == [] and d.to_json()["regressions"] == []


def test_a_gate_fails_when_an_output_is_gone_and_says_when_the_models_differ(bundles, tmp_path):
    """NEW without one of OLD's outputs (a model that lost a head, or the wrong folder
    compared) fails a gate: it had been 'not comparable' and passed; a different model file
    is said in its own row."""
    copy = shutil.copytree(bundles["fp32"], tmp_path / "lost")
    manifest = json.loads((copy / "manifest.json").read_text())
    output = next(iter(manifest["validation"]["outputs"]))
    del manifest["validation"]["outputs"][output]
    manifest["source"]["sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    gated = diff(bundles["fp32"], copy, "cosine=0.001")
    assert not gated.ok and row(gated, f"output[{output}]").regression == "gone from NEW"
    assert "different model files" in row(gated, "model").note
    assert diff(bundles["fp32"], copy).ok  # without a gate: reported, not judged


def test_the_same_model_file_over_other_weights_is_another_model(real_model, tmp_path):
    """A model saved with its weights in an external-data file, and the same .onnx over a
    fine-tuned weights file: the manifests record each data file's sha256 beside the
    .onnx file's (equal), and diff names the weights that differ (it had shown no model
    row and passed a cosine gate between two different models)."""
    model = onnx.load(real_model("yolov8n"))
    for name, factor in (("a", 1.0), ("b", 1.5)):
        tuned = onnx.ModelProto()
        tuned.CopyFrom(model)
        weight = max(tuned.graph.initializer, key=lambda t: numpy_helper.to_array(t).size)
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * factor, weight.name))
        (tmp_path / name).mkdir()
        onnx.save(tuned, tmp_path / name / "det.onnx", save_as_external_data=True, location="det.data",
                  size_threshold=1024)
    assert sha256_file(tmp_path / "a" / "det.onnx") == sha256_file(tmp_path / "b" / "det.onnx")
    for name in "ab":
        deploycomp.build(tmp_path / name / "det.onnx", tmp_path / f"out-{name}", inputs=["images:1x3x320x320"],
                         precision="fp32")
    manifests = [json.loads((tmp_path / f"out-{n}" / "manifest.json").read_text()) for n in "ab"]
    assert manifests[0]["source"]["sha256"] == manifests[1]["source"]["sha256"]
    datas = [m["source"]["external_data"] for m in manifests]
    assert list(datas[0]) == ["det.data"] and datas[0]["det.data"] == sha256_file(tmp_path / "a" / "det.data")
    assert datas[0] != datas[1]
    d = diff(tmp_path / "out-a", tmp_path / "out-b")
    assert "different weights: external data det.data" in row(d, "model").note


def test_a_rebuild_differs_only_in_what_is_measured(bundles):
    """Same inputs give the same artifacts and validation numbers: only timing and memory,
    which vary run to run, can differ, and the verdict says the artifacts are the same
    bytes. Gate those loosely in CI."""
    d = diff(bundles["fp32"], bundles["fp32-again"])
    assert set(metrics(d)) <= {"latency", "peak_memory", "budget:peak_memory"}, d.table()
    assert d.ok and d.same_artifacts and d.summary().endswith("; the artifacts are byte-identical")
    assert not diff(bundles["fp32"], bundles["int8"]).same_artifacts


def test_measurements_of_the_same_files_on_the_same_runtimes_are_not_gated(bundles, tmp_path):
    """Byte-identical artifacts, runtime versions and machine: a latency or memory gate does
    not fail on the measurement's noise (a fleet worker that had loaded the runtime before
    measured 2 MB where a fresh one measured 14: +604%, exit 12); another runtime version is
    gated as before."""
    def slower(m):
        m["measured"]["peak_memory_mb"] = m["measured"]["peak_memory_mb"] * 7 + 10
        m["measured"]["latency"]["median_ms"] *= 3

    noisy = _edited(bundles["fp32"], tmp_path / "noisy", slower)
    d = diff(bundles["fp32"], noisy, "latency=10%,memory=5%")
    assert d.ok and d.same_artifacts, d.table()
    assert "measurement noise, not gated" in row(d, "peak_memory").note and row(d, "latency").regression is None

    def upgraded(m):
        slower(m)
        m["versions"]["openvino"] = "9999.0"

    d = diff(bundles["fp32"], _edited(bundles["fp32"], tmp_path / "upgraded", upgraded), "latency=10%,memory=5%")
    assert sorted(r.metric for r in d.regressions) == ["latency", "peak_memory"]

    # another deploycomp (its version stays 0.1.0: its code's digest tells), or the same
    # files executed otherwise (an old fp16 bundle ran bf16, the new runner f32): gated
    def other_code(m):
        slower(m)
        m["versions"]["deploycomp-code"] = "0" * 64

    def executed_otherwise(m):
        slower(m)
        m["backend"]["runtime"]["executed_precision"] = "bf16"

    for edit in (other_code, executed_otherwise):
        d = diff(bundles["fp32"], _edited(bundles["fp32"], tmp_path / edit.__name__, edit), "latency=10%,memory=5%")
        assert sorted(r.metric for r in d.regressions) == ["latency", "peak_memory"], edit.__name__

    # a TensorRT bundle's memory, measured without a GPU, is this CPU's simulation of it
    def simulated(m):
        slower(m)
        m["versions"]["openvino"] = "9999.0"
        m["backend"]["runtime"]["functional_reference"] = True

    d = diff(bundles["fp32"], _edited(bundles["fp32"], tmp_path / "simulated", simulated), "latency=10%,memory=5%")
    assert row(d, "peak_memory").regression is None and "not the device's" in row(d, "peak_memory").note


def test_a_profiles_peak_memory_at_max_is_gated_as_memory(bundles, tmp_path):
    """A ``--profile`` bundle's peak memory at MAX (held to the memory budget at build time)
    is compared and gated like its peak memory at OPT; the same files on the same runtimes
    and machine are not gated on it."""
    def at_max(mb):
        def edit(m):
            m["measured"]["peak_memory_at_profile_max"] = {"shapes": {"x": [1, 3, 64, 64]}, "mb": mb}
        return edit

    def upgraded(m):
        at_max(300.0)(m)
        m["versions"]["openvino"] = "9999.0"

    old = _edited(bundles["fp32"], tmp_path / "old", at_max(100.0))
    d = diff(old, _edited(bundles["fp32"], tmp_path / "new", upgraded), "memory=5%")
    assert [r.metric for r in d.regressions] == ["peak_memory_at_profile_max"], d.table()
    d = diff(old, _edited(bundles["fp32"], tmp_path / "noisy", at_max(300.0)), "memory=5%")
    assert d.ok and "measurement noise" in row(d, "peak_memory_at_profile_max").note


def _edited(bundle: Path, to: Path, edit) -> Path:
    copy = shutil.copytree(bundle, to)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_what_went_into_a_build_is_named_where_it_differs(bundles, tmp_path):
    """A CI gate passing because its budget was loosened, a target profile edited in place,
    other calibration or validation samples, a renamed model file: each its own row (diff
    had shown only what they moved, or nothing)."""
    def loosened(m):
        m["target"]["profile"]["fidelity"]["fp32"]["min_cosine"] = 0.99
        m["target"]["profile"]["description"] = "edited"
        for check in m["validation"]["budgets"]:
            if check["budget"].startswith("cosine["):
                check["limit"] = 0.99
        m["source"]["name"] = "renamed.onnx"
        m["validation"]["data"]["sha256"] = "1" * 64

    def loosened_before_chains(m):  # (a bundle from before ``extended_from``: not an edit)
        loosened(m)
        del m["target"]["profile"]["extended_from"]

    d = diff(bundles["fp32"], _edited(bundles["fp32"], tmp_path / "loose", loosened_before_chains))
    profile = row(d, "profile:fidelity.fp32.min_cosine")
    assert (profile.old, profile.new) == (0.9999, 0.99) and "profile:description" not in metrics(d)
    assert "profile:extended_from" not in metrics(d)

    def older_profile(m):  # (a bundle from before ``family`` was recorded; ``runs_here`` is the loader's)
        m["target"]["profile"]["family"] = "intel"
        m["target"]["profile"]["runs_here"] = not m["target"]["profile"].get("runs_here")

    d2 = diff(_edited(bundles["fp32"], tmp_path / "older", lambda m: m["target"]["profile"].pop("family", None)),
              _edited(bundles["fp32"], tmp_path / "newer", older_profile))
    family = row(d2, "profile:family")
    assert not family.comparable and "recorded by one side's deploycomp only" in family.note
    assert "profile:runs_here" not in metrics(d2)
    limit = row(d, "limit:cosine[logits]")
    assert (limit.old, limit.new, limit.note) == (0.9999, 0.99, "the budget is looser")

    def stricter(m):
        for check in m["validation"]["budgets"]:
            if check["budget"].startswith("cosine["):
                check["limit"] = 0.99999

    # shown as written: 0.99999 had printed as "1"
    assert row(diff(bundles["fp32"], _edited(bundles["fp32"], tmp_path / "strict", stricter)),
               "limit:cosine[logits]").shown == ("0.9999", "0.99999")
    assert row(d, "model").note == "the same model bytes under another file name"
    assert row(d, "validation_data").note == "different samples (sha256)"
    assert d.same_artifacts

    def smaller(m):
        for check in m["validation"]["budgets"]:
            if check["budget"] == "artifact_size":
                check["limit"] = check["limit"] / 2
        m["quantization"]["calibration_sha256"] = "2" * 64

    d = diff(bundles["int8"], _edited(bundles["int8"], tmp_path / "small", smaller))
    assert row(d, "limit:artifact_size").note == "the budget is stricter"
    assert row(d, "calibration_data").new.startswith("calib.npz") and "22222222" in row(d, "calibration_data").new


def test_int8_against_an_fp32_baseline_passes_a_loose_cosine_threshold(bundles):
    d = diff_bundles(bundles["fp32"], bundles["int8"], "cosine=0.01")
    assert d.ok and d.exit_code == 0, d.table()
    cos = row(d, "cosine[features]")
    assert cos.old > 0.99999 and 0.99 < cos.new < 0.9999 and cos.regression is None
    # what changed in execution: requested and executed precision, every compute layer u8
    assert (row(d, "precision").old, row(d, "precision").new) == ("fp32", "int8")
    assert row(d, "executed_precision").new == "int8"
    assert row(d, "layers:Convolution").old == {"fp32": 2} and row(d, "layers:Convolution").new == {"u8": 2}
    assert (row(d, "int8_layers").old, row(d, "int8_layers").new) == (0, 3)
    assert "no regressions" in d.table().splitlines()[-1]


def test_int8_against_an_fp32_baseline_fails_a_tight_threshold_naming_the_metric(bundles):
    d = diff_bundles(bundles["fp32"], bundles["int8"], "cosine=0.0001")
    assert not d.ok and d.exit_code == REGRESSION_EXIT == 12
    assert [r.metric for r in d.regressions] == ["cosine[features]"]  # logits lose ~1e-5 only
    assert "cosine=0.0001" in d.regressions[0].regression
    lines = d.table().splitlines()
    assert any(ln.startswith("cosine[features]") and "REGRESSION" in ln for ln in lines)
    assert lines[-1] == "1 regression: cosine[features] (--max-regression cosine=0.0001)"
    data = json.loads(json.dumps(d.to_json()))
    assert data["ok"] is False and data["exit_code"] == 12 and data["regressions"][0].startswith("cosine[features]:")
    with pytest.raises(RegressionError, match=r"cosine\[features\]") as e:
        d.raise_if_regressed()
    assert e.value.exit_code == 12


def test_a_box_or_mask_iou_is_a_row_an_iou_limit_gates(bundles, tmp_path):
    """A detector's box IoU and a segmenter's mask IoU (``--judge-boxes``, ``--judge-mask``)
    had no row: a mask IoU 1.000 -> 0.981 went by unsaid. ``iou=`` gates them."""
    sides = {}
    for side, iou in (("old", 1.0), ("new", 0.981)):
        sides[side] = shutil.copytree(bundles["fp32"], tmp_path / side)
        manifest = json.loads((sides[side] / "manifest.json").read_text())
        manifest["validation"]["outputs"]["features"]["mask_iou"] = iou
        (sides[side] / "manifest.json").write_text(json.dumps(manifest))
    d = diff(sides["old"], sides["new"])
    assert d.ok and row(d, "mask_iou[features]").change == "-0.019"
    assert [r.metric for r in diff(sides["old"], sides["new"], "iou=0.01").regressions] == ["mask_iou[features]"]
    assert diff(sides["old"], sides["new"], "iou=0.05").ok


def test_metrics_without_a_threshold_are_reported_not_gated(bundles):
    """On a model this small the int8 IR is larger (QDQ nodes outweigh 1.3 KB of weights):
    a size limit catches it, no limit lets it through."""
    assert diff(bundles["fp32"], bundles["int8"]).ok
    d = diff(bundles["fp32"], bundles["int8"], "size=5%")
    assert [r.metric for r in d.regressions] == ["size"]
    assert row(d, "size").new > row(d, "size").old * 1.05


def test_layers_that_move_between_int8_and_float_are_named(bundles):
    d = diff(bundles["int8"], bundles["int8-conv1-float"])
    assert (row(d, "layer:conv1").old, row(d, "layer:conv1").new) == ("int8", "float")
    assert (row(d, "int8_layers").old, row(d, "int8_layers").new) == (3, 2)
    assert row(d, "layers:Convolution").new == {"fp32": 1, "u8": 1}
    assert row(d, "executed_precision").new.startswith("int8 (")
    assert row(d, "cosine[features]").new > row(d, "cosine[features]").old  # what the float layer bought


def test_measured_latency_against_an_estimate_is_flagged_not_compared(bundles):
    d = diff(bundles["fp32"], bundles["rpi-fp32"], "latency=0%")
    lat = row(d, "latency")
    assert not lat.comparable and lat.regression is None
    assert "measured on" in lat.note and "roofline estimate for raspberry-pi-5" in lat.note
    assert d.ok and d.not_comparable == [lat]
    assert "1 not comparable" in d.summary()
    # a different backend: its layers and lowered ops are its own vocabulary, not compared
    assert row(d, "backend").new == "tflite" and not [m for m in metrics(d) if m.startswith(("layers:", "lowered_ops:"))]


def test_a_latency_timed_on_a_busy_machine_is_flagged_not_compared(bundles, tmp_path):
    """A fleet's host cell timed while its other worker built read 53 ms against 16-20 ms
    alone, as steady as an idle run: such a number is no measure of the bundle, so a
    latency gate neither passes nor fails on it (:mod:`deploycomp.cpu_load`)."""
    def slower_and_busy(m):
        m["measured"]["latency"]["median_ms"] *= 3
        m["measured"]["latency"]["busy_elsewhere"] = 0.5
        m["versions"]["openvino"] = "9999.0"  # (not the same files' noise: that is never gated)

    busy = _edited(bundles["fp32"], tmp_path / "busy", slower_and_busy)
    for old, new in ((bundles["fp32"], busy), (busy, bundles["fp32"])):
        lat = row(diff(old, new, "latency=10%"), "latency")
        assert not lat.comparable and lat.regression is None
        assert "busy (50% of its CPUs used by other processes)" in lat.note
    calm = _edited(busy, tmp_path / "calm", lambda m: m["measured"]["latency"].update(busy_elsewhere=0.1))
    assert row(diff(bundles["fp32"], calm, "latency=10%"), "latency").regression  # (below BUSY_ELSEWHERE)


def test_two_estimates_are_compared(bundles, tmp_path):
    d = diff(bundles["rpi-fp32"], bundles["pi-tight-fp32"], "latency=0%")
    assert "latency" not in metrics(d)  # same graph, same datasheet: the same estimate
    # another device's estimate is no change of the bundle's (a Pi's against a phone's had
    # been compared as +55.8%)
    phone = shutil.copytree(bundles["rpi-fp32"], tmp_path / "phone")
    manifest = json.loads((phone / "manifest.json").read_text())
    manifest["target"]["profile"]["compute"]["memory_bandwidth_gbps"] *= 4
    manifest["validation"]["latency_estimate"]["estimate_ms"] /= 2
    (phone / "manifest.json").write_text(json.dumps(manifest))
    latency = row(diff(bundles["rpi-fp32"], phone, "latency=0%"), "latency")
    assert not latency.comparable and latency.regression is None


def test_a_new_bundle_that_misses_its_own_budget_is_a_regression(bundles):
    d = diff(bundles["rpi-fp32"], bundles["pi-tight-fp32"])  # no thresholds at all
    budget = row(d, "budget:artifact_size")
    assert (budget.old, budget.new) == (True, False) and budget.regression.startswith("now missed")
    assert d.exit_code == 12
    # the same files under a tighter budget: the budget moved, not a measurement
    assert d.same_artifacts and "(the artifacts are byte-identical: budgets moved)" in d.summary()
    # and it stays one while it is not fixed
    assert row(diff(bundles["pi-tight-fp32"], bundles["pi-tight-fp32"]), "budget:artifact_size").regression \
        .startswith("still missed")


# ------------------------------------------------------------------------------ thresholds

def test_threshold_syntax():
    limits = parse_thresholds("cosine=0.001, latency=10%,size=1.5MB,memory=20%,nodes=0,top1=0.01")
    assert limits["cosine"] == Limit("cosine", 0.001, False, "0.001")
    assert limits["latency"].relative and limits["latency"].value == pytest.approx(0.1)
    assert limits["size"].value == 1.5e6 and not limits["size"].relative
    assert parse_thresholds(["cosine=0.001", "latency=2ms"])["latency"] == Limit("latency", 2.0, False, "2ms")
    assert parse_thresholds(None) == {} and parse_thresholds("") == {}


@pytest.mark.parametrize("spec, says", [
    ("cosine", "expected KEY=LIMIT"),
    ("speed=10%", "unknown metric 'speed'"),
    ("latency=10", "give a unit, N% or Nms"),
    ("size=5", "give a unit"),
    ("cosine=1%", "absolute drop"),
    ("latency=10parsecs", "unit 'parsecs' not understood"),
    ("latency=-5%", "not a non-negative number"),
    ("cosine=0.1,cosine=0.2", "cosine given twice"),
    (",", "nothing given"),
])
def test_bad_thresholds_are_one_line_errors(spec, says):
    with pytest.raises(DeployError, match=says) as e:
        parse_thresholds(spec)
    assert "\n" not in str(e.value) and str(e.value).startswith("--max-regression")


def test_paths_that_are_neither_are_one_line_errors(bundles, tmp_path):
    with pytest.raises(DeployError, match="no such bundle or fleet index"):
        diff(tmp_path / "nope", bundles["fp32"])
    with pytest.raises(DeployError, match="neither a bundle"):
        diff(tmp_path, bundles["fp32"])
    (tmp_path / "index.json").write_text(json.dumps({"entries": []}))
    with pytest.raises(DeployError, match="cannot diff a bundle .* against a fleet index"):
        diff(bundles["fp32"], tmp_path)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DeployError, match="not a readable fleet index"):
        diff(tmp_path / "bad.json", tmp_path)


# ------------------------------------------------------------------------------ fleets

def _entry(model, target, precision, built=None, index_dir=None, **fields):
    """An index entry as the fleet command writes it; ``built`` is a real bundle folder."""
    e = {"model": model, "target": target, "precision": precision, "ok": True, "error": None, "exit_code": 0}
    if built is not None:
        e["bundle"] = os.path.relpath(built, index_dir)
        e["manifest_sha256"] = sha256_file(Path(built) / "manifest.json")
    return e | fields


@pytest.fixture
def fleets(bundles, tmp_path) -> tuple[Path, Path]:
    """main's fleet and a branch's: one entry cached (same bundle), one rebuilt with a
    layer kept float, one that now fails to build, one known only by the index's numbers,
    one removed, one added that builds and one added that fails."""
    old, new = tmp_path / "main", tmp_path / "branch"
    old.mkdir(), new.mkdir()
    failed = {"ok": False, "exit_code": 6, "error": "raspberry-pi-5: op 'Conv' has no lowering (tflite)", "bundle": None}
    no_bundle = {"bundle": "gone/android-arm64-fp16", "size_mb": 0.01}  # built elsewhere, not copied here
    (old / "index.json").write_text(json.dumps({"entries": [
        _entry("two_convs", "host", "fp32", bundles["fp32"], old),
        _entry("two_convs", "host", "int8", bundles["int8"], old),
        _entry("two_convs", "raspberry-pi-5", "fp32", bundles["rpi-fp32"], old),
        _entry("two_convs", "android-arm64", "fp16", **no_bundle, manifest_sha256="1" * 64, fidelity=0.99995,
               latency_ms=1.2, latency_kind="estimated"),
        _entry("two_convs", "jetson-orin-nano", "fp16", bundles["fp32"], old),
    ]}))
    (new / "index.json").write_text(json.dumps({"entries": [
        _entry("two_convs", "host", "fp32", bundles["fp32"], new),
        _entry("two_convs", "host", "int8", bundles["int8-conv1-float"], new),
        _entry("two_convs", "raspberry-pi-5", "fp32", **failed),
        _entry("two_convs", "android-arm64", "fp16", **no_bundle, manifest_sha256="2" * 64, fidelity=0.9990,
               latency_ms=1.1, latency_kind="measured"),
        _entry("two_convs", "host", "fp16", bundles["fp32"], new),
        _entry("two_convs", "coral-edgetpu", "int8", **failed),
    ]}))
    return old, new


def test_fleet_entries_added_removed_and_failed(fleets):
    old, new = fleets
    d = diff(old, new, "cosine=0.01")
    assert d.kind == "indexes"
    scopes = {r.scope for r in d.rows}
    assert "two_convs/host/fp32" not in scopes  # same manifest sha256: a cached bundle, nothing to diff
    removed = row(d, "entry", "two_convs/jetson-orin-nano/fp16")
    assert (removed.change, removed.regression) == ("removed", None)  # a spec change, not a regression
    added = row(d, "entry", "two_convs/host/fp16")
    assert (added.change, added.new, added.regression) == ("added", "ok", None)
    assert sorted((r.scope, r.metric) for r in d.regressions) == [
        ("two_convs/coral-edgetpu/int8", "entry"),  # added, and failed to build
        ("two_convs/raspberry-pi-5/fp32", "build"),  # built on main, fails on the branch
    ]
    failed = row(d, "build", "two_convs/raspberry-pi-5/fp32")
    assert failed.old == "ok" and failed.new.startswith("failed (exit 6): raspberry-pi-5: op 'Conv'")
    assert d.exit_code == 12 and "2 regressions" in d.summary()
    # the rebuilt entry's bundles are diffed in full
    assert (row(d, "layer:conv1", "two_convs/host/int8").old, row(d, "layer:conv1", "two_convs/host/int8").new) \
        == ("int8", "float")
    table = d.table()
    assert table.splitlines()[2].split()[:2] == ["entry", "metric"]


def test_fleet_entries_without_bundles_compare_the_index_numbers(fleets):
    old, new = fleets
    d = diff_indexes(old / "index.json", new / "index.json", "cosine=0.0001,latency=0%")
    scope = "two_convs/android-arm64/fp16"
    cos = row(d, "cosine[min]", scope)
    assert cos.regression and "index numbers (bundle not here)" in cos.note
    lat = row(d, "latency", scope)  # an estimate then, a measurement now
    assert not lat.comparable and lat.regression is None
    assert ("two_convs/host/int8", "cosine[features]") not in {(r.scope, r.metric) for r in d.regressions}


def test_fleet_entries_timed_on_a_busy_machine_are_not_compared(tmp_path):
    """A fleet's host cell timed beside its other workers' builds says so in the index
    (``latency_busy``, from the manifest): its number is not gated against another run's."""
    entries = {}
    for side, ms, busy in (("main", 16.0, None), ("branch", 53.0, 0.48), ("calm", 53.0, 0.02)):
        (tmp_path / side).mkdir()
        busy_field = {} if busy is None else {"latency_busy": busy}
        entries[side] = tmp_path / side / "index.json"
        entries[side].write_text(json.dumps({"entries": [_entry(
            "m", "host", "fp16", bundle="gone", manifest_sha256=side * 8, latency_ms=ms, latency_kind="measured",
            **busy_field)]}))
    lat = row(diff_indexes(entries["main"], entries["branch"], "latency=10%"), "latency", "m/host/fp16")
    assert not lat.comparable and lat.regression is None and "busy (48% of its CPUs" in lat.note
    assert row(diff_indexes(entries["main"], entries["calm"], "latency=10%"), "latency", "m/host/fp16").regression


def test_dynamic_range_layers_are_a_row(bundles, tmp_path):
    """A TFLite rebuild that runs a layer as a dynamic-range one instead of float says so."""
    import shutil

    new = tmp_path / "dynamic"
    shutil.copytree(bundles["int8-conv1-float"], new)
    manifest = json.loads((new / "manifest.json").read_text())
    manifest["quantization"] |= {"dynamic_layers": ["conv1"], "float_layers": [],
                                 "int8_mac_share": 1.0, "static_int8_mac_share": manifest["quantization"]["int8_mac_share"]}
    (new / "manifest.json").write_text(json.dumps(manifest))
    d = diff(bundles["int8-conv1-float"], new)
    assert (row(d, "dynamic_layers").old, row(d, "dynamic_layers").new) == (0, 1)
    assert row(d, "int8_mac_share").new == 1.0


def test_a_fleet_cell_that_built_and_missed_its_budget_is_said_so():
    """A fleet records a missed budget as the cell's error (exit 8) with its bundle built:
    ``diff`` had called it "fails to build"."""
    from deploycomp.diff import _entry_state, _what_failed

    missed = {"ok": False, "ok_built": True, "exit_code": 8, "error": "missed int8_layers (3 < 4)"}
    assert _entry_state(missed) == "budgets missed: missed int8_layers (3 < 4)"
    assert _what_failed(missed) == "misses its budgets"
    failed = {"ok": False, "ok_built": False, "exit_code": 6, "error": "op 'Conv' has no lowering"}
    assert _what_failed(failed) == "fails to build"
    assert _entry_state({"ok": False, "ok_built": True}) == "budgets missed"


def test_an_absolute_regression_says_its_unit():
    """``rose by 25.3, more than latency=2ms allows`` had no unit on the rise."""
    from deploycomp.diff import _Rows

    rows = _Rows(parse_thresholds("latency=2ms,memory=5MB,size=1MB,nodes=0"))
    rows.add("latency_ms", 10.0, 35.3, gate="latency")
    rows.add("peak_memory_mb", 90.0, 120.0, gate="memory")
    rows.add("artifact_bytes", 1_000_000, 3_000_000, gate="size")
    rows.add("nodes", 10, 12, gate="nodes")
    assert [r.regression for r in rows.rows] == [
        "rose by 25.3 ms, more than latency=2ms allows", "rose by 30 MB, more than memory=5MB allows",
        "rose by 2 MB, more than size=1MB allows", "rose by 2, more than nodes=0 allows"]


def test_a_bundle_whose_files_changed_is_not_compared(bundles, tmp_path):
    """One byte of a bundle's weights changed: ``diff`` had called it "byte-identical" to the
    original and exited 0 (``run`` and ``verify`` exit 11); now it does as they do."""
    import shutil

    from deploycomp.errors import VerificationError

    copy = shutil.copytree(bundles["fp32"], tmp_path / "tampered")
    weights = copy / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="model.bin"):
        diff(bundles["fp32"], copy)


def test_a_bundle_that_takes_fewer_shapes_is_a_regression(bundles, tmp_path):
    """A bundle whose input range became one shape refuses what applications fed the old
    one (``diff`` had said "no regressions" between a --profile build and a static one);
    a wider range is a change, not a regression."""
    ranged = shutil.copytree(bundles["fp32"], tmp_path / "ranged")
    manifest = json.loads((ranged / "manifest.json").read_text())
    manifest["io"]["profiles"] = {"x": {"min": [1, 3, 16, 16], "opt": [1, 3, 16, 16], "max": [4, 3, 16, 16]}}
    (ranged / "manifest.json").write_text(json.dumps(manifest))
    narrowed = diff(ranged, bundles["fp32"])
    assert not narrowed.ok and narrowed.exit_code == REGRESSION_EXIT
    assert row(narrowed, "input:x").regression.startswith("takes fewer shapes than before")
    assert "1x3x16x16 to 4x3x16x16" in narrowed.table()
    widened = diff(bundles["fp32"], ranged)
    assert widened.ok and row(widened, "input:x").regression is None
