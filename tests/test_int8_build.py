"""``build --precision int8``: calibration in, QDQ ONNX lowered, int8 kernels executing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import deploycomp
from deploycomp.errors import BudgetError, DeployError, InputDataError


def _calibration(tmp_path, n=12, seed=0):
    rng = np.random.default_rng(seed)
    path = tmp_path / "calib.npz"
    np.savez(path, x=rng.random((n, 3, 16, 16), dtype=np.float32))
    return path


def test_int8_host_build_executes_int8(tiny_conv, tmp_path):
    runner = deploycomp.build(tiny_conv, tmp_path / "b", precision="int8", calibration=_calibration(tmp_path))
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    q = manifest["quantization"]
    assert q["policy"] == "openvino" and q["activation_dtype"] == "uint8"
    # a quarter of the user's 12 samples validate the build; of the other 9, 2 rank the layers
    assert manifest["validation"]["data"] | {"label": None, "sha256": None, "notes": None} == {
        "source": "held-out", "samples": 3, "guessed": False, "said": "held out of your calibration data", "label": None,
        "sha256": None, "notes": None, "miss_share_95": 0.632}  # (3 samples: up to 63% could miss unseen)
    assert q["calibration_samples"] + q["held_out_samples"] == 9 and q["held_out_samples"] == 2
    assert manifest["backend"]["runtime"]["executed_precision"].startswith("int8")
    assert manifest["backend"]["runtime"]["int8_compute_layers"] >= 1
    assert manifest["validation"]["ok"]
    x = np.random.default_rng(7).random((1, 3, 16, 16), dtype=np.float32)
    assert runner.run({"x": x})["probs"].shape == (1, 4)


def test_an_int8_host_build_is_timed_against_the_models_fp32_bundle_and_says_when_it_is_not_faster(
        tiny_conv, tmp_path, capsys):
    """Layers kept float, and the conversions around them, can cost more than int8 saves:
    the int8 bundle is measured beside this model's fp32 one in the same runtime, and the
    summary says so where int8 is not faster (it had been said against ONNX Runtime only)."""
    from deploycomp.cli import _print_summary

    result = deploycomp.build(tiny_conv, tmp_path / "b", precision="int8", calibration=_calibration(tmp_path))
    measured = result.manifest["measured"]
    assert measured["fp32_latency"]["median_ms"] > 0 and measured["speedup_vs_fp32"] > 0
    assert "this model&#x27;s fp32 bundle" in (tmp_path / "b" / "report.html").read_text()
    manifest = json.loads(json.dumps(result.manifest))
    manifest["measured"]["speedup_vs_fp32"] = 0.8
    manifest["measured"]["fp32_latency"]["median_ms"] = manifest["measured"]["latency"]["median_ms"] * 0.8
    for record in ("latency", "reference_latency", "fp32_latency"):  # (timed steadily on an idle machine)
        manifest["measured"][record] |= {"busy_elsewhere": 0.0, "p90_ms": manifest["measured"][record]["median_ms"]}
    _print_summary(manifest, tmp_path / "b", as_json=False)
    assert "int8 is SLOWER than this model's fp32 bundle here" in capsys.readouterr().out
    # timed on a busy machine, the comparison says nothing: followed, auto had found int8 1.4x faster
    manifest["measured"]["fp32_latency"]["busy_elsewhere"] = 0.5
    _print_summary(manifest, tmp_path / "b", as_json=False)
    said = capsys.readouterr().out
    assert "fp32 bundle here" not in said and "timed while other processes used 50%" in said
    manifest["measured"]["fp32_latency"]["busy_elsewhere"] = 0.0
    manifest["measured"]["speedup_vs_fp32"] = 2.0
    _print_summary(manifest, tmp_path / "b", as_json=False)
    assert "fp32 bundle here" not in capsys.readouterr().out
    fp32 = deploycomp.build(tiny_conv, tmp_path / "f", precision="fp32")
    assert "fp32_latency" not in fp32.manifest["measured"]


def test_int8_keep_float_and_min_cosine_from_cli_options(tiny_conv, tmp_path):
    runner = deploycomp.build(tiny_conv, tmp_path / "b", precision="int8", calibration=_calibration(tmp_path))
    assert runner.manifest["quantization"]["float_layers"] == []
    from deploycomp.pipeline import BuildOptions, build

    result = build(BuildOptions(model=tiny_conv, out=tmp_path / "c", precision="int8",
                                calibration=_calibration(tmp_path), keep_float=["conv"], min_cosine=0.95))
    q = result.manifest["quantization"]
    assert q["pinned_float"] == ["conv"] and q["min_cosine"] == 0.95
    assert result.manifest["backend"]["runtime"]["int8_compute_layers"] == 1
    # a pattern that names no layer is a typo, said before any calibration (it was ignored)
    with pytest.raises(DeployError, match=r"--keep-float 'Conv_9' matches no layer .* they are: conv, fc"):
        build(BuildOptions(model=tiny_conv, out=tmp_path / "d", precision="int8", calibration=_calibration(tmp_path),
                           keep_float=["conv", "Conv_9"]))


def test_range_method_from_the_command_line_and_the_auto_choice_in_the_report(tiny_conv, tmp_path):
    from click.testing import CliRunner

    from deploycomp.cli import main

    calib = _calibration(tmp_path)
    default = deploycomp.build(tiny_conv, tmp_path / "a", precision="int8", calibration=calib).manifest["quantization"]
    assert default["range_method"] in ("percentile", "minmax")
    candidates = default["range_choice"]["candidates"]
    assert {c["method"] for c in candidates} == {"percentile", "minmax"}
    assert candidates[0]["method"] == default["range_method"]  # least error first, and chosen
    assert "chosen by all-int8 NMSE" in (tmp_path / "a" / "report.html").read_text()
    res = CliRunner().invoke(main, ["build", str(tiny_conv), "--out", str(tmp_path / "b"), "--precision", "int8",
                                    "--calibration", str(calib), "--int8-range", "mse"])
    assert res.exit_code == 0, res.output
    q = json.loads((tmp_path / "b" / "manifest.json").read_text())["quantization"]
    assert q["range_method"] == "mse" and "range_choice" not in q
    assert f"int8: {q['int8_layers']} layers int8, 0 float; mse ranges\n" in res.output
    res = CliRunner().invoke(main, ["build", str(tiny_conv), "--out", str(tmp_path / "c"), "--precision", "int8",
                                    "--int8-range", "median"])
    assert res.exit_code == 2 and "median" in res.output and not (tmp_path / "c").exists()


def test_int8_from_an_image_folder(tiny_conv, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "calibration.yaml").write_text("resize: resize\nscale: 0.00392156862\n")
    runner = deploycomp.build(tiny_conv, tmp_path / "b", precision="int8", calibration=folder)
    assert runner.manifest["quantization"]["calibration_data"] == "imgs (5 samples), 1 held out for validation"


def test_bad_calibration_data_writes_nothing(tiny_conv, tmp_path):
    bad = np.random.default_rng(0).random((4, 3, 16, 16), dtype=np.float32)
    bad[2, 1] = np.inf
    np.savez(tmp_path / "c.npz", x=bad)
    with pytest.raises(InputDataError, match="sample 2 contains Inf"):
        deploycomp.build(tiny_conv, tmp_path / "b", precision="int8", calibration=tmp_path / "c.npz")
    assert not (tmp_path / "b").exists()


def test_int8_from_a_python_iterable(tiny_conv, tmp_path):
    rng = np.random.default_rng(5)
    samples = ({"x": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(6))
    runner = deploycomp.build(tiny_conv, tmp_path / "b", precision="int8", calibration=samples)
    assert runner.manifest["quantization"]["calibration_data"] == "Python iterable (6 samples), 2 held out for validation"


def test_int8_builds_are_reproducible(tiny_conv, tmp_path):
    calib = _calibration(tmp_path)
    a = deploycomp.build(tiny_conv, tmp_path / "a", precision="int8", calibration=calib).manifest
    b = deploycomp.build(tiny_conv, tmp_path / "b", precision="int8", calibration=calib).manifest
    assert a["artifacts"] == b["artifacts"]
    for m in (a, b):
        m.pop("created"), m.pop("measured"), m.pop("report")  # (the report renders both)
    assert a == b


def test_a_user_metric_decides_which_layers_stay_float(tiny_conv, tmp_path):
    """An int8_accept that rejects every candidate keeps every layer float (the search has no
    cap) and reports the budget missed, with the closest candidate and what fp16 gives; one
    that accepts everything keeps none. It sees references and candidates on every
    calibration sample."""
    seen = []

    def never(refs, outs):
        seen.append((len(refs), sorted(outs[0])))
        return False

    strict = deploycomp.build(tiny_conv, tmp_path / "a", precision="int8", calibration=_calibration(tmp_path),
                              int8_accept=never, no_fail=True).manifest["quantization"]
    assert strict["acceptance"] == "user metric (API)" and strict["budget_met"] is False
    assert len(strict["float_layers"]) == 2 and seen[0] == (9, ["probs"]) == (strict["budget_judged_on_samples"], ["probs"])
    # each range method of 'auto' all-int8 first (which comes closer is searched first), then
    # 1 and 2 float layers for each (the second searched when the first misses)
    assert [t["float_layers"] for t in strict["search_trials"]] == [0, 0, 1, 2, 1, 2] and strict["int8_mac_share"] == 0.0
    assert strict["closest"]["min_cosine"] == max(t["min_cosine"] for t in strict["search_trials"])
    assert strict["fp16_alternative"]["min_cosine"] > 0.999
    lenient = deploycomp.build(tiny_conv, tmp_path / "b", precision="int8", calibration=_calibration(tmp_path),
                               int8_accept=lambda refs, outs: True).manifest["quantization"]
    assert lenient["float_layers"] == [] and lenient["budget_met"] is True


def test_a_budget_no_mix_can_meet_says_how_close_and_what_fp16_gives():
    from deploycomp.int8_build import int8_hint

    info = {"budget_met": False, "int8_layers": 0, "float_layers": ["a", "b", "c"],
            "closest": {"float_layers": 2, "min_cosine": 0.9713}, "fp16_alternative": {"min_cosine": 0.9996,
                                                                                      "meets_budget": True}}
    assert int8_hint(info) == ("no int8/float mix met it (tried up to 3 of 3 layers float; closest cosine 0.9713 "
                                "with 2 float); fp16 gives cosine 0.9996 on the calibration samples the search judged and meets "
                                "its budget there; ")
    assert int8_hint({"budget_met": True}) == ""
    # where the budget judges boxes, the closest is said with its overlap (cosine 1.0000
    # had been said of a YOLO build whose int8 output lost every score: box IoU 0)
    info["closest"] = {"float_layers": 54, "min_cosine": 1.0, "min_box_iou": 0.0}
    assert "closest cosine 1.0000, box IoU 0.000 with 54 float" in int8_hint(info)


def test_openvino_trial_lowering_runs_the_same_as_the_shipped_ir(tiny_conv, tmp_path):
    """int8 candidates are lowered as trials (read by OpenVINO's ONNX frontend alone); the
    shipped IR goes through convert_model, which folds each QDQ pair into a FakeQuantize.
    Both must compute the same outputs, or the search would judge another model."""
    import onnx_ir as ir

    from deploycomp.backends import get_backend
    from deploycomp.quant import POLICIES, quantize
    from deploycomp.targets import load_target

    rng = np.random.default_rng(0)
    samples = [{"x": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(6)]
    qmodel = quantize(ir.load(tiny_conv), POLICIES["openvino"], samples, []).model
    backend, target = get_backend("openvino"), load_target("host")
    outs, ops = {}, {}
    for trial in (False, True):
        out = tmp_path / str(trial)
        out.mkdir()
        lowered = backend.lower(qmodel, target, "int8", out, {"trial": trial})
        ops[trial] = (out / lowered.info["xml"]).read_text().count('type="FakeQuantize"')
        outs[trial] = backend.load(out, lowered.info).run(samples[0])
    assert ops[False] > 0  # the shipped IR has its QDQ folded
    for name, value in outs[False].items():
        np.testing.assert_array_equal(outs[True][name], value)


def test_validation_inputs_past_the_calibration_ranges_are_reported(tiny_conv, tmp_path, capsys):
    """Inputs five times louder than the calibration set clip in int8: the manifest and the
    report name the tensors, and the budget error says so; inputs like the calibration
    set raise nothing."""
    rng = np.random.default_rng(3)
    loud = tmp_path / "loud.npz"
    np.savez(loud, x=rng.random((2, 3, 16, 16), dtype=np.float32) * 5)
    runner = deploycomp.build(tiny_conv, tmp_path / "b", precision="int8", calibration=_calibration(tmp_path),
                              validation_data=loud, no_fail=True)
    coverage = runner.manifest["quantization"]["range_coverage"]
    assert coverage["samples"] == 2 and coverage["tensors_beyond"] >= 1
    assert "x" in {c["tensor"] for c in coverage["worst"]} and coverage["worst"][0]["beyond_range"] > 2
    assert "where int8 clips them" in (tmp_path / "b" / "report.html").read_text()
    from deploycomp.cli import _print_summary

    passed = deploycomp.build(tiny_conv, tmp_path / "p", precision="int8", calibration=_calibration(tmp_path),
                              validation_data=loud, min_cosine=0.5)  # a pass says it in the summary too
    _print_summary(passed.manifest, tmp_path / "p", as_json=False)  # (it had been in the report only)
    assert "  int8: the validation inputs go past the calibration set's range in" in capsys.readouterr().out
    with pytest.raises(BudgetError, match="past the calibration set's range in .* calibrate on inputs like them"):
        deploycomp.build(tiny_conv, tmp_path / "c", precision="int8", calibration=_calibration(tmp_path),
                         validation_data=loud, min_cosine=0.99999999999)

    alike = tmp_path / "alike.npz"
    np.savez(alike, x=rng.random((2, 3, 16, 16), dtype=np.float32))
    quiet = deploycomp.build(tiny_conv, tmp_path / "d", precision="int8", calibration=_calibration(tmp_path),
                             validation_data=alike)
    assert quiet.manifest["quantization"]["range_coverage"]["tensors_beyond"] == 0


def test_validation_inputs_quieter_than_the_calibration_set_are_reported(tiny_conv, tmp_path):
    """Inputs a thousand times quieter lie inside every range yet round to a few int8
    levels: the manifest names the sample, the report says so, and a missed budget's error
    says to calibrate on inputs like them."""
    rng = np.random.default_rng(4)
    hushed = tmp_path / "hushed.npz"
    np.savez(hushed, x=rng.random((3, 3, 16, 16), dtype=np.float32) * np.float32(1e-3) ** np.arange(3)[:, None, None, None])
    runner = deploycomp.build(tiny_conv, tmp_path / "b", precision="int8", calibration=_calibration(tmp_path),
                              validation_data=hushed, no_fail=True)
    quiet = runner.manifest["quantization"]["range_coverage"]["quiet"]
    assert [q["sample"] for q in quiet["samples"]] == [1, 2] and quiet["checked_samples"] == 3
    assert "x" in {q["tensor"] for q in quiet["worst"]}
    assert "quieter than any calibration input" in (tmp_path / "b" / "report.html").read_text()
    # what a missed budget's error adds (this model's softmax output stays within any budget
    # that its int8 layers meet on the calibration set)
    from deploycomp.int8_build import coverage_hint

    assert re.search("2 of 3 validation inputs are quieter than any calibration input .* calibrate on inputs like "
                     "them", coverage_hint(runner.manifest["quantization"]))


def test_every_fidelity_criterion_of_the_budget_judges_int8_candidates():
    """The int8 search checks what validation checks (cosine, top-1, relative error), each
    with three quarters of its allowance: a cosine-only search kept layers int8 that then
    failed a top-1 budget."""
    from deploycomp.targets import Fidelity
    from deploycomp.validate import fidelity_met

    good = {"probs": {"cosine": 0.999, "top1_agreement": 0.99, "max_rel_error": 0.01}}
    assert fidelity_met(good, Fidelity(min_cosine=0.98))
    assert fidelity_met(good, Fidelity(min_cosine=0.98, min_top1_agreement=0.98), margin=0.75)
    assert not fidelity_met(good, Fidelity(min_cosine=0.98, min_top1_agreement=0.995), margin=0.75)
    assert not fidelity_met(good, Fidelity(min_cosine=0.9995), margin=0.75)
    assert not fidelity_met(good, Fidelity(min_cosine=0.98, max_rel_error=0.012), margin=0.75)
    assert fidelity_met({"y": {"cosine": 1.0}}, Fidelity(min_cosine=0.98, min_top1_agreement=0.99))  # no scores


def test_min_top1_reaches_the_search_and_the_validation(tiny_conv, tmp_path):
    runner = deploycomp.build(tiny_conv, tmp_path / "b", precision="int8", calibration=_calibration(tmp_path),
                              min_top1=0.9)
    assert runner.manifest["quantization"]["min_top1_agreement"] == 0.9
    budgets = {b["budget"]: b for b in runner.manifest["validation"]["budgets"]}
    assert budgets["top1[probs]"]["limit"] == 0.9 and budgets["top1[probs]"]["ok"]


def test_an_int8_build_with_every_layer_float_is_not_an_int8_build(tiny_conv, tmp_path):
    """A budget that only all-float meets: the search keeps every layer float, and the build
    says that no layer stays int8 (a missed budget, exit 8) instead of shipping fp32 as int8."""
    with pytest.raises(BudgetError, match=r"int8_layers: 0 misses the budget 1 \(no layer stays int8.*only every "
                                          r"layer float met it \(2 layers\); fp16 gives cosine"):
        deploycomp.build(tiny_conv, tmp_path / "a", precision="int8", calibration=_calibration(tmp_path),
                         min_cosine=0.99999999999)  # 1e-11: past what one int8 layer of the two keeps
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("target", ["host", "android-arm64"])
def test_an_int8_bundle_with_every_layer_float_says_its_weights_and_execution_are_float(tiny_conv, tmp_path, target):
    """Kept with --no-fail, such a bundle had said "weights i8 (QDQ)" (OpenVINO) or "i8
    per-channel" and "executes int8 (0 of 3 TFLite ops) + fp32" of files holding no int8
    tensor."""
    result = deploycomp.build(tiny_conv, tmp_path / "a", target=target, precision="int8",
                              calibration=_calibration(tmp_path), min_cosine=0.99999999999, no_fail=True)
    assert result.manifest["quantization"]["int8_layers"] == 0
    assert result.manifest["quantization"]["float_compute_layer_count"] == 2  # its two convs
    backend = result.manifest["backend"]
    assert backend["lowered"]["weights"] == "f32"
    assert backend["runtime"]["executed_precision"] == "fp32"


def test_the_fp16_alternative_is_judged_by_the_limits_the_user_gave(tiny_conv, tmp_path):
    """An int8 miss at ``--min-cosine 0.99999999999`` had said fp16 "meets its budget",
    judged at the profile's fp16 limit (0.999): an fp16 build at the user's limit misses."""
    result = deploycomp.build(tiny_conv, tmp_path / "a", target="jetson-orin-nano", precision="int8",
                              calibration=_calibration(tmp_path), min_cosine=0.99999999999, no_fail=True)
    alt = result.manifest["quantization"]["fp16_alternative"]
    assert not alt["meets_budget"]


def test_the_fp16_alternative_is_judged_as_an_fp16_build_keeps_its_ranges(tmp_path):
    """An int8 miss quotes what fp16 gives on the samples the search judged; a tensor past fp16's range
    (a magnitude past 65504) stays fp32 in an fp16 build, so the quote keeps it fp32 too
    (all-fp16 it overflowed: a spectrogram model's hint said 0.0443 where its fp16 build met)."""
    from onnx import TensorProto, helper, numpy_helper

    import onnx

    rng = np.random.default_rng(4)
    w = numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "w")
    big, small = (numpy_helper.from_array(np.array(v, np.float32), n) for v, n in ((3e4, "big"), (1 / 3e4, "small")))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="fc"), helper.make_node("Mul", ["m", "big"], ["p"]),
             helper.make_node("Relu", ["p"], ["r"]), helper.make_node("Mul", ["r", "small"], ["y"])]
    graph = helper.make_graph(nodes, "spectral", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])], [w, big, small])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "power.onnx")
    data = [{"x": rng.standard_normal((4, 16)).astype(np.float32)} for _ in range(12)]
    result = deploycomp.build(tmp_path / "power.onnx", tmp_path / "b", target="jetson-orin-nano", precision="int8",
                              calibration=data, min_cosine=0.99999999999, no_fail=True)
    # (all-fp16 it overflowed: 0.0443; it misses only the 1e-11 this test asks of int8)
    assert result.manifest["quantization"]["fp16_alternative"]["min_cosine"] > 0.9999


def test_every_layer_float_is_not_an_int8_build_however_far_the_search_got(tiny_conv, tmp_path):
    """The same with the time limit already passed (no ranking: the doubling's last size is
    every layer): still no int8 layer, still a missed budget, whatever the search recorded;
    layers the user pinned float are the user's choice."""
    with pytest.raises(BudgetError, match=r"int8_layers: 0 misses the budget 1"):
        deploycomp.build(tiny_conv, tmp_path / "a", precision="int8", calibration=_calibration(tmp_path),
                         min_cosine=0.99999999999, int8_time_limit=0)
    pinned = deploycomp.build(tiny_conv, tmp_path / "p", precision="int8", calibration=_calibration(tmp_path),
                              keep_float=["*"])
    assert pinned.manifest["quantization"]["int8_layers"] == 0 and pinned.manifest["validation"]["ok"]


def test_the_search_drops_a_candidate_that_misses_on_its_hardest_samples(tiny_conv, tmp_path):
    """A candidate that already misses on the first few samples (the hardest so far) is not
    run on the rest; one that meets the budget is judged on every sample."""
    from deploycomp.int8_build import FAIL_FAST_SAMPLES
    from deploycomp.pipeline import BuildOptions, build

    result = build(BuildOptions(model=tiny_conv, out=tmp_path / "b", precision="int8", no_fail=True,
                                calibration=_calibration(tmp_path, n=16), min_cosine=0.9999999))
    q = result.manifest["quantization"]
    judged, trials = q["budget_judged_on_samples"], q["search_trials"]
    assert judged > FAIL_FAST_SAMPLES
    assert all(t["samples"] == judged for t in trials if t["met"])
    assert [t["samples"] for t in trials if not t["met"]].count(FAIL_FAST_SAMPLES) >= 1
    assert all(t["samples"] in (FAIL_FAST_SAMPLES, judged) for t in trials)


def test_validation_that_misses_what_calibration_met_tightens_the_search_once(tiny_conv, tmp_path):
    """Inputs a little louder than the calibration set miss a tight budget that every layer
    int8 met on the calibration inputs: the float-layer search continues once at a stricter
    limit, the build passes on the validation inputs, and the manifest and the summary say
    that those inputs steered the choice."""
    from click.testing import CliRunner

    from deploycomp.cli import main

    louder = tmp_path / "louder.npz"
    np.savez(louder, x=np.random.default_rng(11).random((3, 3, 16, 16), dtype=np.float32) * 1.3)
    res = CliRunner().invoke(main, ["build", str(tiny_conv), "--out", str(tmp_path / "b"), "--precision", "int8",
                                    "--calibration", str(_calibration(tmp_path)), "--validation-data", str(louder),
                                    "--min-cosine", "0.9999"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    q = manifest["quantization"]
    again = q["stricter_search"]
    assert again["float_layers_before"] == 0 and again["float_layers_after"] == len(q["float_layers"]) >= 1
    assert again["validation_min_cosine"] < 0.9999 <= again["judged_min_cosine"]
    assert again["stricter_margin"] < again["margin"] == 0.75
    assert q["search_min_cosine"] > 1 - 0.0001 * 0.75  # the limit the second search held to
    assert q["held_out_min_cosine"] == q["search_min_cosine"]  # (its first name, kept for its readers)
    assert manifest["validation"]["ok"] and manifest["validation"]["outputs"]["probs"]["cosine"] >= 0.9999
    assert "int8 search tightened once" in res.output and "steered this choice" in res.output
    assert f"{len(q['float_layers'])} float ({q['int8_mac_share']:.0%} of MACs int8)" in res.output
    assert "The search continued once at" in (tmp_path / "b" / "report.html").read_text()


def test_a_stricter_search_runs_without_the_time_limit(tiny_conv, tmp_path, monkeypatch):
    """``--int8-time-limit`` bounds the search that only keeps more layers int8; a stricter
    search is for the budget the validation inputs missed. Hurried, it had kept a coarse
    choice that validated worse, and a PP-OCRv4 det build that passes unlimited failed
    (exit 8) with nothing naming the limit."""
    import deploycomp.quant as quant

    real, hurried = quant._float_layers, []

    def recorded(*args, **kwargs):
        if kwargs.get("after") is not None:
            hurried.append(kwargs.get("hurry"))
        return real(*args, **kwargs)

    monkeypatch.setattr(quant, "_float_layers", recorded)
    louder = tmp_path / "louder.npz"
    np.savez(louder, x=np.random.default_rng(11).random((3, 3, 16, 16), dtype=np.float32) * 1.3)
    result = deploycomp.build(tiny_conv, tmp_path / "b", precision="int8", calibration=_calibration(tmp_path),
                              validation_data=louder, min_cosine=0.9999, int8_time_limit=0)
    assert hurried == [None] and "stricter_search" in result.manifest["quantization"]
    assert result.manifest["validation"]["ok"]


def test_validation_that_rejects_the_auto_range_choice_tries_the_other_range_method_first(tmp_path):
    """Two calibration images of twelve have one bright pixel: percentile ranges clip it and
    minmax ranges keep it; both meet the budget on the calibration inputs, percentile with
    less judged error. Validation images full of such pixels miss with percentile ranges;
    before keeping any layer float, the build tries minmax, which met the budget too, and it
    holds with every layer int8. The summary and the report say the validation inputs
    steered the range choice."""
    from click.testing import CliRunner
    from onnx import helper

    from deploycomp.cli import main

    rng = np.random.default_rng(0)
    # (the output flattened: judged whole, not about each channel's mean, which alone
    # would rule percentile ranges out on the calibration inputs already)
    path = _onnx(tmp_path, [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                            helper.make_node("Relu", ["c"], ["r"], name="relu"),
                            helper.make_node("Conv", ["r", "w2"], ["c2"], name="conv2"),
                            helper.make_node("Reshape", ["c2", "flat"], ["y"], name="flatten")],
                 {"x": [1, 3, 32, 32]}, {"y": [1, 8 * 32 * 32]},
                 {"w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
                  "w2": rng.standard_normal((8, 8, 1, 1)).astype(np.float32), "flat": np.array([1, -1], np.int64)})
    x = np.random.default_rng(1).random((12, 3, 32, 32), dtype=np.float32)
    x[0, 0, 10, 12] = x[5, 0, 20, 7] = 5.0
    np.savez(tmp_path / "calib.npz", x=x)
    v = np.random.default_rng(2).random((4, 3, 32, 32), dtype=np.float32)
    v[:, 0, 2:30:4, 2:30:4] = 5.0  # each as bright as calibration's, and as isolated
    np.savez(tmp_path / "val.npz", x=v)
    res = CliRunner().invoke(main, ["build", str(path), "--out", str(tmp_path / "b"), "--precision", "int8",
                                    "--calibration", str(tmp_path / "calib.npz"), "--validation-data",
                                    str(tmp_path / "val.npz"), "--min-cosine", "0.98"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    q = manifest["quantization"]
    assert q["range_method"] == "minmax" and q["range_alternative"]["rejected"].startswith("percentile")
    assert q["range_alternative"]["validation_min_cosine"] < 0.98
    assert "stricter_search" not in q and q["float_layers"] == [] and q["int8_layers"] == 2
    assert [t["met"] for t in q["search_trials"]] == [True, True]  # each range method all-int8, no layer ranked
    assert manifest["validation"]["ok"] and manifest["validation"]["outputs"]["y"]["cosine"] >= 0.98
    assert re.search(r"minmax( \+ smoothing)? ranges, which met it there too, were tried next: the validation inputs "
                     r"steered this choice", res.output)
    page = (tmp_path / "b" / "report.html").read_text()
    assert "ranges, which met it there too, were tried next" in page
    # not "chosen by all-int8 NMSE" of ranges the validation inputs replaced
    assert "kept where the validation inputs missed with percentile" in page and "ranges, chosen by" not in page


def test_when_the_other_range_method_validates_worse_the_stricter_search_continues_the_first(tiny_conv, tmp_path,
                                                                                               monkeypatch):
    """The validation inputs miss with the first range choice; the other range method,
    tried next, misses by more: the float-layer search then continues from the first
    choice (not from the worse one), meets the budget, and the manifest says what the
    other ranges gave."""
    from dataclasses import replace

    import deploycomp.quant as quant
    from deploycomp.quant.qdq import quantizable_tensors
    from deploycomp.quant.sensitivity import quantized_copy

    real = quant.quantize

    def with_a_worse_alternative(model, policy, *args, **kwargs):
        first = real(model, policy, *args, **kwargs)
        clipped = {name: (0.0, 1e-3) for name in quantizable_tensors(model, policy)}  # everything saturates
        worse = quant.QuantResult(quantized_copy(model, policy, clipped, set()), first.info | {"range_method": "other"})
        return replace(first, alternative=lambda check: worse)

    monkeypatch.setattr(quant, "quantize", with_a_worse_alternative)
    louder = tmp_path / "louder.npz"  # as in the test above: int8 misses a tight budget on them
    np.savez(louder, x=np.random.default_rng(11).random((3, 3, 16, 16), dtype=np.float32) * 1.3)
    result = deploycomp.build(tiny_conv, tmp_path / "b", precision="int8", calibration=_calibration(tmp_path),
                              validation_data=louder, min_cosine=0.9999)
    q = result.manifest["quantization"]
    worse = q["range_alternative_validated_worse"]
    assert worse["ranges"] == "other" and worse["validation_min_cosine"] < q["stricter_search"]["validation_min_cosine"]
    assert q["range_method"] != "other" and "range_alternative" not in q
    assert q["stricter_search"]["float_layers_after"] == len(q["float_layers"]) >= 1
    assert result.manifest["validation"]["ok"]
    assert "which met it on the calibration inputs too, validated worse" in (tmp_path / "b" / "report.html").read_text()


@pytest.mark.parametrize("target", ["host", "android-arm64", "jetson-orin-nano"])
def test_a_float16_model_quantizes_from_its_float32_form(tmp_path, target):
    """An fp16 export built for int8 (ONNX Runtime has no float16 QuantizeLinear: every
    target failed with an internal error): calibrated and quantized in float32, the
    bundle still takes and gives float16, and the manifest says so."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
                               helper.make_node("Relu", ["c"], ["y"], name="relu")], "g",
                              [helper.make_tensor_value_info("x", 10, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", 10, [1, 4, 6, 6])],
                              [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float16), "w")])
    path = tmp_path / "half.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    np.savez(tmp_path / "calib.npz", x=rng.random((8, 1, 3, 8, 8)).astype(np.float16))
    np.savez(tmp_path / "val.npz", x=rng.random((4, 1, 3, 8, 8)).astype(np.float16))
    runner = deploycomp.build(path, tmp_path / "b", target=target, precision="int8",
                              calibration=tmp_path / "calib.npz", validation_data=tmp_path / "val.npz")
    assert runner.manifest["validation"]["ok"] and runner.manifest["quantization"]["int8_layers"] == 1
    assert any("a float16 model" in a for a in runner.manifest["assumptions"])
    assert runner.run({"x": np.ones((1, 3, 8, 8), np.float16)})["y"].dtype == np.float16


def _scale_varying(tmp_path, name, n, seed, **shapes):
    """Normal inputs each scaled by its own 10^U(-2, 2): no fixed int8 range holds them all."""
    r = np.random.default_rng(seed)
    arrays = {k: (r.standard_normal((n, *shape)) * 10 ** r.uniform(-2, 2, (n,) + (1,) * len(shape))).astype(np.float32)
              for k, shape in shapes.items()}
    np.savez(tmp_path / name, **arrays)
    return tmp_path / name


def _onnx(tmp_path, nodes, inputs, outputs, weights):
    from onnx import helper, numpy_helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(k, 1, v) for k, v in inputs.items()],
                              [helper.make_tensor_value_info(k, 1, v) for k, v in outputs.items()],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    path = tmp_path / "model.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    return path


def test_layers_the_static_encoding_cannot_hold_run_dynamic_range_on_tflite(tmp_path):
    """Inputs whose scale varies 10^4-fold from sample to sample: no fixed int8 range holds
    the small ones, so the search keeps both layers out of the static encoding; TFLite's
    dynamic-range kernels (int8 weights, each input quantized to its own range) then meet
    the budget, and the build is an int8 build that says so."""
    from onnx import helper

    rng = np.random.default_rng(0)
    path = _onnx(tmp_path, [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                            helper.make_node("Relu", ["c"], ["r"], name="relu"),
                            helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
                            helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
                            helper.make_node("Gemm", ["f", "w2"], ["y"], transB=1, name="fc")],
                 {"x": [1, 3, 16, 16]}, {"y": [1, 6]},
                 {"w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
                  "w2": rng.standard_normal((6, 8)).astype(np.float32)})
    result = deploycomp.build(path, tmp_path / "out", target="android-arm64", precision="int8",
                              calibration=_scale_varying(tmp_path, "calib.npz", 12, 1, x=(3, 16, 16)),
                              validation_data=_scale_varying(tmp_path, "val.npz", 6, 2, x=(3, 16, 16)))
    quant = result.manifest["quantization"]
    assert quant["dynamic_layers"] == ["conv", "fc"] and quant["int8_layers"] == 0
    assert quant["dynamic_range"]["chosen"] == 2 and quant["int8_mac_share"] == 1.0
    assert quant["static_int8_mac_share"] == 0.0 and quant["budget_met"] is True
    assert "dynamic-range" in result.manifest["backend"]["lowered"]["executed_precision"]
    assert min(m["cosine"] for m in result.manifest["validation"]["outputs"].values()) >= 0.98
    # a full-integer build (--int8-io, Coral's default) has no float kernel to offer them
    whole = deploycomp.build(path, tmp_path / "io", target="android-arm64", precision="int8", int8_io=True,
                             calibration=tmp_path / "calib.npz", validation_data=tmp_path / "val.npz",
                             no_fail=True).manifest["quantization"]
    assert "dynamic_layers" not in whole and {"conv", "fc"} <= set(whole["float_layers"])


@pytest.mark.parametrize("target", ["android-arm64", "host", "jetson-orin-nano"])
def test_a_relu_that_never_fires_on_the_calibration_data_still_builds(tmp_path, target):
    """A branch whose ReLU is zero on every calibration sample (its conv's bias is far
    below what its inputs reach), added to a live branch. The dead tensor has no range of
    its own; encoded at the floor scale (4e-11), XNNPACK refused to create the runtime
    (the conv's accumulator step was 2.7e7 output steps). It takes its producer's input
    range instead, runs int8, and the build holds."""
    from onnx import helper

    rng = np.random.default_rng(0)
    path = _onnx(tmp_path, [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="dead_conv"),
                            helper.make_node("Relu", ["a"], ["dead"], name="relu"),
                            helper.make_node("Conv", ["x", "w2"], ["live"], pads=[1, 1, 1, 1], name="live_conv"),
                            helper.make_node("Add", ["dead", "live"], ["y"], name="add")],
                 {"x": [1, 8, 16, 16]}, {"y": [1, 8, 16, 16]},
                 {"w1": (rng.standard_normal((8, 8, 1, 1)) * 0.1).astype(np.float32),
                  "b1": np.full(8, -10.0, np.float32),
                  "w2": (rng.standard_normal((8, 8, 3, 3)) * 0.1).astype(np.float32)})
    np.savez(tmp_path / "data.npz", x=rng.standard_normal((8, 1, 8, 16, 16)).astype(np.float32))
    result = deploycomp.build(path, tmp_path / "out", target=target, precision="int8",
                              calibration=tmp_path / "data.npz", validation_data=tmp_path / "data.npz")
    quant = result.manifest["quantization"]
    assert quant["int8_layers"] == 2 and quant["budget_met"] is True
    assert result.manifest["validation"]["outputs"]["y"]["cosine"] >= 0.99


def _android_int8(tmp_path, path, x: np.ndarray):
    """An android-arm64 int8 build of ``path`` calibrated on the first 14 of the samples
    ``x`` (input ``x``) and validated on the rest."""
    np.savez(tmp_path / "calib.npz", x=x[:14])
    np.savez(tmp_path / "val.npz", x=x[14:])
    return deploycomp.build(path, tmp_path / "out", target="android-arm64", precision="int8",
                            calibration=tmp_path / "calib.npz", validation_data=tmp_path / "val.npz")


def test_a_pruned_channel_keeps_its_int32_bias_on_tflite(tmp_path):
    """An output channel whose weights are 1e-13 (pruned) and whose bias is 3: its bias at
    the input's step times a weight step of 1e-15 was 1e14 int32 steps, clipped, and the
    channel gave 0 instead of 3 (all-int8 cosine 0.18). The weight scale now has a floor
    at which the bias fits, and every layer stays int8."""
    from onnx import helper

    rng = np.random.default_rng(0)
    w2 = rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32)
    w2[2] = rng.normal(0, 1e-13, (8, 1, 1))
    path = _onnx(tmp_path, [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
                            helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
                            helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2")],
                 {"x": [1, 3, 16, 16]}, {"y": [1, 4, 16, 16]},
                 {"w1": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "b1": np.zeros(8, np.float32),
                  "w2": w2, "b2": np.array([0.1, -0.2, 3.0, 0.0], np.float32)})
    quant = _android_int8(tmp_path, path, rng.uniform(0, 1, (20, 1, 3, 16, 16)).astype(np.float32)).manifest["quantization"]
    assert quant["search_trials"][0]["float_layers"] == 0 and quant["search_trials"][0]["min_cosine"] > 0.999
    assert quant["int8_layers"] == 2 and not quant["float_layers"]


def test_a_layer_whose_output_step_xnnpack_cannot_reach_gets_a_coarser_one(tmp_path):
    """A Keras BatchNorm after a ReLU, before a MaxPool: factors of 100 on the channels the
    ReLU never opens, 1e-3 on the others, which reach 2e4. As a depthwise conv (TFLite's
    pipeline) its accumulator step (input step x weight step) was over 256 of its
    output's steps, and XNNPACK refused to create the runtime; the output range is now
    widened to the step the kernel can give, and the build holds."""
    from onnx import helper

    rng = np.random.default_rng(0)
    c = 8
    w1 = rng.normal(0, 1, (c, 3, 3, 3)).astype(np.float32) * 300
    b1 = np.full(c, 100.0, np.float32)
    dead = [1, 3, 4, 6]
    w1[dead], b1[dead] = -np.abs(w1[dead]), -1e4
    scale = np.full((1, c, 1, 1), 1e-3, np.float32)
    scale[0, dead] = 100.0
    path = _onnx(tmp_path, [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
                            helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
                            helper.make_node("Mul", ["r1", "s"], ["m"], name="bn_mul"),
                            helper.make_node("Add", ["m", "t"], ["a"], name="bn_add"),
                            helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
                            helper.make_node("Conv", ["p", "w2"], ["y"], name="head")],
                 {"x": [1, 3, 32, 32]}, {"y": [1, 1, 16, 16]},
                 {"w1": w1, "b1": b1, "s": scale, "t": rng.normal(0, 0.5, (1, c, 1, 1)).astype(np.float32),
                  "w2": rng.normal(0, 0.2, (1, c, 1, 1)).astype(np.float32)})
    result = _android_int8(tmp_path, path, rng.uniform(0, 1, (20, 1, 3, 32, 32)).astype(np.float32))
    quant = result.manifest["quantization"]
    assert quant["budget_met"] and quant["int8_layers"] >= 2  # (the norm is a third layer, a depthwise conv)
    assert {"conv1", "head"}.isdisjoint(quant["float_layers"])
    assert result.manifest["validation"]["outputs"]["y"]["cosine"] >= 0.98


def test_dynamic_range_is_not_worth_the_budget_for_a_sliver_of_the_macs(tmp_path):
    """The same scale-varying input feeding only a small side layer (a 2x2 Gemm beside a
    conv that holds int8): that layer stays float, since running it dynamic would spend
    fidelity on under 5% of the MACs."""
    from onnx import helper

    rng = np.random.default_rng(0)
    path = _onnx(tmp_path, [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                            helper.make_node("Relu", ["c"], ["y"], name="relu"),
                            helper.make_node("Gemm", ["s", "w2"], ["z"], transB=1, name="side")],
                 {"x": [1, 3, 16, 16], "s": [1, 2]}, {"y": [1, 16, 16, 16], "z": [1, 2]},
                 {"w": rng.standard_normal((16, 3, 3, 3)).astype(np.float32),
                  "w2": rng.standard_normal((2, 2)).astype(np.float32)})

    def data(name, n, seed):
        varying = np.load(_scale_varying(tmp_path, name, n, seed, s=(2,)))["s"]
        x = np.random.default_rng(seed).random((n, 3, 16, 16), dtype=np.float32)
        np.savez(tmp_path / name, x=x, s=varying)
        return tmp_path / name

    result = deploycomp.build(path, tmp_path / "out", target="android-arm64", precision="int8",
                              calibration=data("calib.npz", 12, 1), validation_data=data("val.npz", 6, 2))
    quant = result.manifest["quantization"]
    assert quant["int8_layers"] == 1 and "side" in quant["float_layers"] and quant["dynamic_layers"] == []
    assert "of the MACs" in quant["dynamic_range"]["skipped"] and quant["budget_met"] is True


def test_dynamic_range_layers_the_validation_inputs_reject_run_float_again(tmp_path):
    """A layer whose calibration inputs vary in scale runs dynamic-range on the judged
    inputs; a validation input with a spike (in a column the layer's weights ignore) sets
    that input's range, and the values that matter round to zero. The build goes back to
    the search's own choice, that layer float, which holds, and says the validation inputs
    steered it; the conv beside it stays int8 and no stricter search is needed."""
    from onnx import helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((256, 512)).astype(np.float32)
    w[:, 0] = 0.0  # the spike's column
    path = _onnx(tmp_path, [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1, name="fc"),
                            helper.make_node("Conv", ["z", "k"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                            helper.make_node("Relu", ["c"], ["r"], name="relu")],
                 {"x": [1, 512], "z": [1, 3, 16, 16]}, {"y": [1, 256], "r": [1, 8, 16, 16]},
                 {"w": w, "k": rng.standard_normal((8, 3, 3, 3)).astype(np.float32)})

    def data(name, n, seed, spike):
        r = np.random.default_rng(seed)
        x = (r.standard_normal((n, 512)) * 10 ** r.uniform(-2, 2, (n, 1))).astype(np.float32)
        if spike:
            x[:, 0] = 1e4 * np.abs(x).max(axis=1)
        np.savez(tmp_path / name, x=x, z=r.random((n, 3, 16, 16), dtype=np.float32))
        return tmp_path / name

    result = deploycomp.build(path, tmp_path / "out", target="android-arm64", precision="int8",
                              calibration=data("calib.npz", 12, 1, False), validation_data=data("val.npz", 4, 2, True))
    quant = result.manifest["quantization"]
    (dropped,) = quant["dynamic_dropped"]  # one choice (one layer): the fallback is none
    assert dropped["dynamic_layers"] == 1 and dropped["validation_min_cosine"] < 0.98
    assert quant["dynamic_layers"] == [] and "fc" in quant["float_layers"] and quant["int8_layers"] == 1
    assert "stricter_search" not in quant and quant["budget_met"] is True
    assert [t.get("dynamic_layers", 0) for t in quant["search_trials"]].count(1) >= 1  # it was judged, and met
    assert "with 1 (cosine" in (tmp_path / "out" / "report.html").read_text()  # the report says what was given up
    assert min(m["cosine"] for m in result.manifest["validation"]["outputs"].values()) >= 0.98


def test_when_every_choice_misses_the_one_closest_to_the_budget_is_kept(tiny_conv, tmp_path, monkeypatch):
    """A later choice that the validation inputs judge worse than an earlier one (the
    judged inputs had nothing of what failed: PP-OCR cls on TFLite went 0.917 -> 0.756)
    does not replace it: the bundle holds the closer one and says what came after."""
    import deploycomp.pipeline as pipeline
    from deploycomp.quant.sensitivity import quantized_copy

    real = pipeline.search_int8

    def quantize_then_worse(opts, prep, target, backend, reference, fidelity, calibration, validation):
        model, info, stricter = real(opts, prep, target, backend, reference, fidelity, calibration, validation)
        from deploycomp.quant.policy import policy_for
        from deploycomp.quant.qdq import quantizable_tensors

        policy = policy_for(target.backend, target.cpu_features)
        clipped = {name: (0.0, 1e-3) for name in quantizable_tensors(prep.model, policy)}  # everything saturates
        worse_ranges = {"ranges": "minmax", "validation_min_cosine": 0.5, "validation_missed": "cosine[probs]: 0.5"}
        later = iter([(quantized_copy(prep.model, policy, clipped, set()),
                       info | {"float_layers": [], "range_alternative_validated_worse": worse_ranges})])
        return model, info, lambda metrics: next(later, None)

    monkeypatch.setattr(pipeline, "search_int8", quantize_then_worse)
    # every layer int8 is accepted on the judged inputs and misses a budget no int8 model meets
    louder = tmp_path / "louder.npz"  # past the calibrated ranges: int8 misses a tight budget on them
    np.savez(louder, x=np.random.default_rng(11).random((3, 3, 16, 16), dtype=np.float32) * 1.3)
    result = deploycomp.build(tiny_conv, tmp_path / "b", precision="int8", calibration=_calibration(tmp_path),
                              validation_data=louder, int8_accept=lambda refs, outs: True, min_cosine=0.99999,
                              no_fail=True)
    quant = result.manifest["quantization"]
    worse = quant["later_choice_validated_worse"]
    kept = result.manifest["validation"]["outputs"]["probs"]["cosine"]
    assert worse["validation_min_cosine"] < kept < 0.99999 and not result.manifest["validation"]["ok"]
    assert quant["int8_layers"] == 2 and kept > 0.99  # the first, all-int8 choice
    assert "closest to the budget" in (tmp_path / "b" / "report.html").read_text()
    # what was tried after it stays said (the other ranges' verdict had gone with the later record)
    assert quant["range_alternative_validated_worse"]["ranges"] == "minmax"


def test_a_time_limit_keeps_the_first_choice_that_meets_the_budget(real_model, tmp_path):
    """``--int8-time-limit 0``: the search still grows its float layers until the budget is
    met, but measures no layer alone (groups of sixteen neighbours, taken whole), does not bisect
    past the first size with an int8 layer that meets the budget, and gives nothing back;
    the manifest, the summary and the report say what the limit cut. (PP-OCR cls on host,
    a budget tight enough to need a search.)"""
    from click.testing import CliRunner

    from deploycomp.cli import main
    from deploycomp.quant.sensitivity import GROUP_SIZE

    model = real_model("ppocr-cls")
    calib = Path(__file__).resolve().parents[1] / "calibration_data" / "text-lines"
    res = CliRunner().invoke(main, ["build", str(model), "--out", str(tmp_path / "b"), "--precision", "int8",
                                    "--input", "x:1x3x48x192", "--calibration", str(calib), "--min-cosine", "0.9995",
                                    "--int8-time-limit", "0"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    q = manifest["quantization"]
    assert q["budget_met"] and q["int8_layers"] >= 1 and manifest["validation"]["ok"]
    assert q["time_limit"]["seconds"] == 0.0 and q["time_limit"]["reached"]
    assert {f"the ranking's groups at their size (the rest measured in groups {GROUP_SIZE} times larger)",
            "the ranking's later nodes measured alone (their groups taken whole)",
            "giving float layers back"} <= set(q["time_limit"]["cut"])
    runs = q["sensitivity_runs"]  # (groups of sixteen from the first: the limit had passed)
    assert runs["measured_alone"] == 0 and runs["units"] == -(-runs["searchable"] // GROUP_SIZE ** 2)
    met = [t for t in q["search_trials"] if t["met"]]
    assert met[-1] is q["search_trials"][-1] and met[-1]["float_layers"] < runs["searchable"]  # stopped at it
    assert "the 0 s time limit passed" in res.output
    assert "time limit passed" in (tmp_path / "b" / "report.html").read_text()


def _conv_chain(path, layers: int = 8):
    """``layers`` 1x1 convs of 8 channels with Relus between: layers to keep float one by one."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(5)
    nodes, inits, x = [helper.make_node("Conv", ["x", "w_in"], ["h0"], name="conv_in")], [
        numpy_helper.from_array(rng.standard_normal((8, 3, 1, 1)).astype(np.float32), "w_in")], "h0"
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.standard_normal((8, 8, 1, 1)) / 2).astype(np.float32), f"w{i}"))
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"h{i + 1}"], name=f"relu{i}")]
        x = f"h{i + 1}"
    graph = helper.make_graph(nodes, "chain", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                                                  [1, 3, 16, 16])],
                              [onnx.helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_stricter_searches_go_on_while_each_brings_the_validation_inputs_closer(tmp_path, monkeypatch):
    """A stricter search that tightens little (here forced: 0.9 of the margin each time)
    leaves the validation inputs short: another round follows while the round before
    brought them closer, at most STRICTER_ROUNDS, each continuing from the last one's float
    layers (PP-OCRv6 tiny rec on TensorRT: 0.951 -> 0.976 with 4 float layers, then 0.994)."""
    from deploycomp import int8_build

    monkeypatch.setattr(int8_build, "stricter_margin", lambda margin, *args: margin * 0.9)
    rng = np.random.default_rng(6)
    calib, louder = tmp_path / "calib.npz", tmp_path / "louder.npz"
    np.savez(calib, x=rng.random((12, 1, 3, 16, 16), dtype=np.float32))
    np.savez(louder, x=rng.random((3, 1, 3, 16, 16), dtype=np.float32) * 1.6)
    runner = deploycomp.build(_conv_chain(tmp_path / "chain.onnx"), tmp_path / "b", precision="int8",
                              calibration=calib, validation_data=louder, min_cosine=0.99995, no_fail=True)
    rounds = runner.manifest["quantization"]["stricter_search"].get("rounds")
    assert rounds and 2 <= len(rounds) <= int8_build.STRICTER_ROUNDS
    for before, after in zip(rounds, rounds[1:]):
        assert after["validation_min_cosine"] > before["validation_min_cosine"]
        assert after["float_layers_before"] == before["float_layers_after"]


@pytest.mark.parametrize("target", ["host", "jetson-orin-nano"])
def test_compute_layers_inside_control_flow_run_float_and_are_counted_so(tmp_path, target, capsys):
    """A second head in an ``If`` branch (openWakeWord's hey-jarvis runs a 3-Gemm verifier
    only when its score passes a threshold). No QDQ enters a branch, so its Gemm runs float:
    the main Gemm is the one int8 layer, the manifest counts the branch's layer, and the
    share of MACs int8 is a half (it had said all of them)."""
    from onnx import helper, numpy_helper

    from deploycomp.cli import _print_summary

    rng = np.random.default_rng(0)
    then = helper.make_graph([helper.make_node("Gemm", ["h", "w2"], ["t"], name="verifier")], "then", [],
                             [helper.make_tensor_value_info("t", 1, [1, 16])],
                             [numpy_helper.from_array((rng.standard_normal((16, 16)) * 0.3).astype(np.float32), "w2")])
    other = helper.make_graph([helper.make_node("Identity", ["h"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", 1, [1, 16])])
    path = _onnx(tmp_path, [helper.make_node("Gemm", ["x", "w1"], ["g"], name="head"),
                            helper.make_node("Relu", ["g"], ["h"]),
                            helper.make_node("ReduceMax", ["h"], ["top"], keepdims=0),
                            helper.make_node("Greater", ["top", "threshold"], ["cond"]),
                            helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)],
                 {"x": [1, 16]}, {"y": [1, 16]},
                 {"w1": (rng.standard_normal((16, 16)) * 0.3).astype(np.float32), "threshold": np.float32(0.5)})
    np.savez(tmp_path / "data.npz", x=rng.standard_normal((12, 1, 16)).astype(np.float32))
    result = deploycomp.build(path, tmp_path / "out", target=target, precision="int8",
                              calibration=tmp_path / "data.npz", validation_data=tmp_path / "data.npz")
    quant = result.manifest["quantization"]
    assert (quant["int8_layers"], quant["float_layers"], quant["control_flow_layers"]) == (1, [], 1)
    assert quant["int8_mac_share"] == 0.5 and quant["budget_met"] is True
    _print_summary(result.manifest, tmp_path / "out", as_json=False)
    assert "(50% of MACs int8); 1 compute layer inside control flow runs float" in capsys.readouterr().out


def test_a_candidate_the_runtime_refuses_is_a_miss_and_the_search_goes_on(tiny_conv, tmp_path, monkeypatch):
    """OpenVINO's plugin can throw compiling one mix of precisions and not another: the
    searches take such a candidate as missed, say why in their trial record, and go on to
    the next (an internal error before)."""
    import contextlib

    from deploycomp import trials
    from deploycomp.errors import UnsupportedError

    real, calls = trials.trial_runner, []

    @contextlib.contextmanager
    def first_int8_refused(backend, target, model, precision, options):
        calls.append(precision)
        if precision == "int8" and calls.count("int8") == 1:
            raise UnsupportedError("openvino cannot compile it: Multiply (node 'm') in its X: out of range")
        with real(backend, target, model, precision, options) as runner:
            yield runner

    monkeypatch.setattr(trials, "trial_runner", first_int8_refused)
    q = deploycomp.build(tiny_conv, tmp_path / "b", precision="int8",
                         calibration=_calibration(tmp_path)).manifest["quantization"]
    first, *rest = q["search_trials"]
    assert first["met"] is False and first["refused"].endswith("in its X: out of range") and "min_cosine" not in first
    assert rest and rest[0]["met"] and q["budget_met"] is True


def test_one_calibration_sample_or_validation_on_the_calibration_data_is_warned_of(tiny_conv, tmp_path, caplog):
    """Both built without a word: a single calibration input, and the same file given as
    --calibration and --validation-data (the budget then checked on the fitted inputs)."""
    import logging

    one, data = tmp_path / "one.npz", _calibration(tmp_path)
    np.savez(one, x=np.random.default_rng(3).random((1, 3, 16, 16), dtype=np.float32))
    with caplog.at_level(logging.WARNING, logger="deploycomp"):
        deploycomp.build(tiny_conv, tmp_path / "a", precision="int8", calibration=one)
        deploycomp.build(tiny_conv, tmp_path / "b", precision="int8", calibration=data, validation_data=data)
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("int8: 1 calibration sample: the ranges") for m in said)
    assert any(m.startswith("validation data: 12 of 12 samples are calibration samples too") for m in said)
    notes = json.loads((tmp_path / "b" / "manifest.json").read_text())["validation"]["data"]["notes"]
    assert notes[-1] == ("validation data: 12 of 12 samples are calibration samples too: the budget is checked on "
                         "inputs the build was fitted to, not on unseen ones (--calibration alone holds a part of it "
                         "out)")
    assert notes[:-1] == ["validation data: 12 samples: even where each meets the budget, up to 22% of inputs like "
                          "them could miss it (95% confidence; 30 samples bound it at 10%)"]


def test_data_that_says_nothing_is_refused_or_said(tiny_conv, tmp_path, capsys, caplog):
    """All-zero calibration data built ok at cosine 0.99999 on itself and made a bundle
    that found nothing in a photo: refused (exit 4). A copy of the calibration data under
    another name, one sample repeated, constant validation inputs and raw 0..255 pixels
    for a float input are said in the summary, the manifest (``validation.data.notes``)
    and ``--json``."""
    import logging

    from deploycomp.cli import _print_summary
    from deploycomp.errors import InputDataError

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "zeros.npz", x=np.zeros((12, 3, 16, 16), np.float32))
    with pytest.raises(InputDataError, match=r"calibration data zeros.npz .*input\(s\) x constant in every sample"):
        deploycomp.build(tiny_conv, tmp_path / "z", precision="int8", calibration=tmp_path / "zeros.npz")
    assert not (tmp_path / "z").exists()
    one = rng.random((1, 3, 16, 16), dtype=np.float32)
    np.savez(tmp_path / "same.npz", x=np.repeat(one, 12, axis=0))
    np.savez(tmp_path / "grey.npz", x=np.full((4, 3, 16, 16), 0.5, np.float32))
    result = deploycomp.build(tiny_conv, tmp_path / "s", precision="int8", calibration=tmp_path / "same.npz",
                              validation_data=tmp_path / "grey.npz", no_fail=True)
    notes = result.manifest["validation"]["data"]["notes"]
    assert notes[0].startswith("validation data: 1 sample: even where each meets the budget")  # (repeats: one)
    assert notes[1] == "calibration data: 1 distinct of 12 samples (the same inputs repeated)"
    assert any(n.startswith("validation data: input(s) x constant in every sample") for n in notes)
    _print_summary(result.manifest, tmp_path / "s", as_json=False)
    assert "  data: calibration data: 1 distinct of 12 samples" in capsys.readouterr().out
    _print_summary(result.manifest, tmp_path / "s", as_json=True)
    assert json.loads(capsys.readouterr().out)["validation_data"]["notes"] == notes
    with open(tmp_path / "raw.NPZ", "wb") as f:  # (np.savez would add .npz)
        np.savez(f, x=(rng.random((12, 3, 16, 16)) * 255).astype(np.uint8))
    with caplog.at_level(logging.WARNING, logger="deploycomp"):
        deploycomp.build(tiny_conv, tmp_path / "r", precision="fp32", validation_data=tmp_path / "raw.NPZ")
    assert "given as uint8 (0..254) for a float32 input: taken as those numbers, unscaled" in caplog.text


@pytest.mark.parametrize("target", ["host", "android-arm64"])
def test_a_small_channel_an_int8_output_loses_is_named_and_judged_apart_on_request(tmp_path, target):
    """Two branches concatenated share one int8 scale: the branch 1000x smaller rounds away,
    and the output it becomes after a 1x1 conv (channels 2 and 3, 1/30 of the others)
    barely moves the output's cosine. The build meets the budget and names the channels
    that miss it; with ``judge_channels`` every channel is judged and the search keeps
    what it needs float."""
    from onnx import helper

    rng = np.random.default_rng(0)
    weights = {"wa": rng.normal(0, 1, (2, 3, 3, 3)).astype(np.float32),
               "wb": (rng.normal(0, 1, (2, 3, 3, 3)) * 1e-3).astype(np.float32),
               "wc": np.diag([1.0, 1.0, 30.0, 30.0]).reshape(4, 4, 1, 1).astype(np.float32)}
    model = _onnx(tmp_path, [helper.make_node("Conv", ["x", "wa"], ["a"], pads=[1] * 4),
                             helper.make_node("Conv", ["x", "wb"], ["b"], pads=[1] * 4),
                             helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
                             helper.make_node("Conv", ["c", "wc"], ["y"])],
                  {"x": [1, 3, 16, 16]}, {"y": [1, 4, 16, 16]}, weights)
    cal = [{"x": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(16)]
    val = [{"x": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(8)]
    whole = deploycomp.build(model, tmp_path / "whole", target=target, precision="int8", calibration=cal,
                             validation_data=val).manifest
    y = whole["validation"]["outputs"]["y"]
    assert whole["validation"]["ok"] and y["cosine"] > 0.998  # (about each channel's mean: 0.9988 on TFLite)
    assert {c["channel"] for c in y["weak_channels"]} == {2, 3} and all(c["cosine"] < 0.9 for c in y["weak_channels"])
    apart = deploycomp.build(model, tmp_path / "apart", target=target, precision="int8", calibration=cal,
                             validation_data=val, judge_channels=True).manifest
    outputs = apart["validation"]["outputs"]
    assert set(outputs) == {"y"} | {f"y[channel {c} of axis 1]" for c in range(4)}
    assert apart["validation"]["ok"] and min(m["cosine"] for m in outputs.values()) >= 0.98
    assert apart["quantization"]["float_layers"] and "weak_channels" not in outputs["y"]
    # an output of no channels: the flag says, in the manifest too, that it judged nothing apart
    flat = _onnx(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], {"x": [4, 4]}, {"y": [4, 4]}, {})
    manifest = deploycomp.build(flat, tmp_path / "flat", target=target, judge_channels=True).manifest
    assert any(a.startswith("--judge-channels: no output has channels to judge") for a in manifest["assumptions"])


def test_a_model_whose_layers_are_all_in_a_loop_says_so(tmp_path, caplog):
    """A Keras LSTM exported as a ``Loop`` (chars2vec): its MatMuls are in the body, where
    no QDQ enters. The warning had said "the model has no layer to quantize" above a
    summary counting 4 layers inside control flow."""
    from onnx import TensorProto as T, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("MatMul", ["h_in", "w"], ["mm"]), helper.make_node("Tanh", ["mm"], ["h_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", T.INT64, []), helper.make_tensor_value_info("cond_in", T.BOOL, []),
         helper.make_tensor_value_info("h_in", T.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("cond_out", T.BOOL, []), helper.make_tensor_value_info("h_out", T.FLOAT, [1, 8])],
        [numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.3, (8, 8)).astype(np.float32), "w")])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "go", "x"], ["h"], body=body)], "g",
        [helper.make_tensor_value_info("x", T.FLOAT, [1, 8])], [helper.make_tensor_value_info("h", T.FLOAT, [1, 8])],
        [numpy_helper.from_array(np.array(3, np.int64), "trips"), numpy_helper.from_array(np.array(True), "go")])
    path = tmp_path / "loop.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    rng = np.random.default_rng(1)
    with caplog.at_level("WARNING", logger="deploycomp"):
        deploycomp.build(path, tmp_path / "b", precision="int8", no_fail=True,
                         calibration=[{"x": rng.normal(size=(1, 8)).astype(np.float32)} for _ in range(8)])
    assert "no layer to quantize (Conv, ConvTranspose, MatMul, Gemm) outside control flow (1 inside it run float)" \
        in caplog.text


@pytest.mark.parametrize("target", ["host", "jetson-orin-nano"])
def test_a_weight_several_layers_share_is_stored_once(tmp_path, target):
    """A reaction-mapping transformer reads each of its weights in 7-8 layers: its TensorRT
    int8 bundle grew from 85 to 229 MB, the int8 weight encoded once per reader and the
    boosters' rescaled float copies one per reader. Here three MatMuls read one 64x64
    weight: the bundle stores it once, as int8."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.2, (64, 64)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"]), helper.make_node("Relu", ["a"], ["ra"]),
             helper.make_node("MatMul", ["ra", "w"], ["b"]), helper.make_node("Relu", ["b"], ["rb"]),
             helper.make_node("MatMul", ["rb", "w"], ["y"])]
    model = _onnx(tmp_path, nodes, {"x": [1, 16, 64]}, {"y": [1, 16, 64]}, {"w": weight})
    cal = [{"x": rng.normal(size=(1, 16, 64)).astype(np.float32)} for _ in range(16)]
    runner = deploycomp.build(model, tmp_path / "b", target=target, precision="int8", calibration=cal)
    assert runner.manifest["quantization"]["int8_layers"] == 3
    files = [tmp_path / "b" / a["path"] for a in runner.manifest["artifacts"]]
    stored = next(f for f in files if f.suffix in (".onnx", ".bin"))
    if stored.suffix == ".onnx":
        tensors = [numpy_helper.to_array(t) for t in onnx.load(stored).graph.initializer]
        assert [t.dtype for t in tensors if t.size == weight.size] == [np.int8]
    else:  # OpenVINO's weights file: the int8 weight once, no float copy
        assert stored.stat().st_size < 2 * weight.size


def test_a_search_whose_every_candidate_the_runtime_refuses_ends_with_a_clear_miss(tiny_conv, tmp_path, monkeypatch):
    """Every int8 candidate refused by the target's runtime (as OpenVINO's plugin refuses a
    mix of precisions it mishandles): the record of the closest candidate had read a cosine
    no refused candidate has (an internal error, KeyError). Now the budget is missed, and
    said so."""
    import contextlib

    import deploycomp.trials
    from deploycomp.errors import UnsupportedError

    real = deploycomp.trials.trial_runner

    @contextlib.contextmanager
    def refusing(backend, target, model, precision, options):
        if precision == "int8":
            raise UnsupportedError("the runtime refuses this mix")
        with real(backend, target, model, precision, options) as runner:
            yield runner

    monkeypatch.setattr(deploycomp.trials, "trial_runner", refusing)
    with pytest.raises(BudgetError):
        deploycomp.build(tiny_conv, tmp_path / "b", precision="int8", calibration=_calibration(tmp_path))


def test_an_example_with_no_built_in_calibration_for_its_inputs_asks_for_data(real_model, tmp_path):
    """``deploycomp example silero-vad --precision int8``: no built-in set fills its three
    inputs, and the build ended in an internal error (AttributeError) instead of asking for
    ``--calibration`` as any other int8 build without data does."""
    from deploycomp.pipeline import BuildOptions, build

    opts = BuildOptions(model=real_model("silero-vad"), out=tmp_path / "b", precision="int8", sample_kind="vad",
                        inputs=[("input", (1, 512)), ("state", (2, 1, 128))], freeze={"sr": 16000})
    with pytest.raises(InputDataError, match=r"int8 needs calibration data: pass --calibration .*; the built-in vad "
                                             r"samples have no calibration set for this model's inputs"):
        build(opts)
    assert not (tmp_path / "b").exists()


def test_a_bundle_that_runs_almost_nothing_int8_says_so(tiny_conv, tmp_path, capsys):
    """A TFLite rec bundle with 1 layer int8 of 51 (0% of the MACs) passed without a word,
    its latency estimate fp32's; where no layer is int8 the int8_layers budget says it."""
    from deploycomp.cli import _print_summary

    result = deploycomp.build(tiny_conv, tmp_path / "b", precision="int8", calibration=_calibration(tmp_path))
    manifest = json.loads(json.dumps(result.manifest))
    manifest["quantization"] |= {"int8_layers": 1, "float_layers": ["fc"], "int8_mac_share": 0.01}
    manifest["quantization"].pop("executed_int8_mac_share", None)
    _print_summary(manifest, tmp_path / "b", as_json=False)
    assert "int8: almost nothing runs int8 (1% of MACs): the budget needs float here" in capsys.readouterr().out
    manifest["quantization"]["int8_mac_share"] = 0.6
    _print_summary(manifest, tmp_path / "b", as_json=False)
    assert "almost nothing runs int8" not in capsys.readouterr().out
    # an fp16 bundle whose search kept 15 of 16 segments fp32 (a Jetson det at --min-mask-iou 0.9995)
    manifest.pop("quantization")
    manifest["fp16"] = {"search": {"segments": 16, "fp32_segments": [str(i) for i in range(15)], "met": True,
                                   "fp16_mac_share": 0.0}}
    _print_summary(manifest, tmp_path / "b", as_json=False)
    assert "fp16: almost nothing runs fp16 (0% of MACs): the budget needs fp32 here" in capsys.readouterr().out


def test_calibration_at_a_batch_counts_its_inputs_not_its_batches(tiny_conv, tmp_path, caplog):
    """16 photos at batch 8 are 2 samples of the build: they had been warned of as "2
    calibration samples: ... 16 or more inputs hold better"."""
    import logging

    with caplog.at_level(logging.WARNING, logger="deploycomp"):
        deploycomp.build(tiny_conv, tmp_path / "b", precision="int8", inputs={"x": (8, 3, 16, 16)},
                         calibration=_calibration(tmp_path, n=16))
    assert not [r for r in caplog.records if "calibration sample" in r.getMessage()]
    with caplog.at_level(logging.WARNING, logger="deploycomp"):
        deploycomp.build(tiny_conv, tmp_path / "c", precision="int8", inputs={"x": (1, 3, 16, 16)},
                         calibration=_calibration(tmp_path, n=2))
    assert [r for r in caplog.records if r.getMessage().startswith("int8: 1 calibration sample:")]  # (1 held out)


def test_a_stricter_search_aims_by_the_criterion_validation_missed():
    """PP-OCRv3 rec judged by its text: the choice read the calibration lines at 0.994 and
    the validation lines at 0.975, its cosine within the budget throughout. The next margin
    follows the text's error ratio (4x: 0.9 / 3.9 of the allowance), where a miss at a
    passing cosine had only halved it (the next choice, at 0.997, validated no closer)."""
    from deploycomp.int8_build import missed_criterion, stricter_margin
    from deploycomp.targets import Fidelity

    validation = {"scores": {"cosine": 0.9928, "samples": 8, "text": {"rule": "scores"}, "text_similarity": 0.9748}}
    key, value, limit = missed_criterion(validation, Fidelity(min_cosine=0.98))
    assert (key, value, limit) == ("min_text_similarity", 0.9748, 0.98)
    margin = stricter_margin(0.75, limit, 0.99361, value)
    assert margin == pytest.approx(0.9 * (1 - 0.99361) / (1 - 0.9748))  # (0.228: a limit of 0.99543)
    assert stricter_margin(0.75, 1.0, None, 0.0) == 0.375  # (no such criterion: halved)
    by_cosine = {"y": {"cosine": 0.97, "samples": 8}}
    assert missed_criterion(by_cosine, Fidelity(min_cosine=0.98)) == ("min_cosine", 0.97, 0.98)
    by_top1 = {"y": {"cosine": 0.999, "samples": 8, "top1_agreement": 0.5}}
    assert missed_criterion(by_top1, Fidelity(min_cosine=0.98, min_top1_agreement=0.9)) == (None, 0.0, 1.0)
