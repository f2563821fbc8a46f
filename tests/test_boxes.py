"""A detector's boxes are judged by their overlap with fp32's (``--judge-boxes``), on
YOLOv8n's real outputs for real photos: cosine does not see a box move; IoU does."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from deploycomp.boxes import BoxRule, box_iou_limit, box_metrics, check_boxes, infer_format, parse_boxes
from deploycomp.engine import judged_as_built
from deploycomp.targets import Fidelity
from deploycomp.validate import compare_outputs, fidelity_failures, parse_where

RULE = "output0:output0[4:22]>0.25"  # nudenet's YOLOv8n: [1, 22, 2100], boxes then 18 class scores


@pytest.fixture(scope="module")
def yolo_refs(real_model):
    """ONNX Runtime fp32's outputs of YOLOv8n on the built-in photos (at least one
    detection on most of them)."""
    import onnxruntime as ort

    from deploycomp.sample_data import yolo_calibration, yolo_samples

    session = ort.InferenceSession(str(real_model("yolov8n")), providers=["CPUExecutionProvider"])
    samples = yolo_samples((1, 3, 320, 320)) + yolo_calibration((1, 3, 320, 320))
    return [{"output0": session.run(None, {"images": x})[0]} for x in samples]


def _moved(refs, dx):
    out = []
    for ref in refs:
        got = ref["output0"].copy()
        got[0, 0:2] += dx  # every box's centre, x and y
        out.append({"output0": got})
    return out


def test_parse_rules():
    rules = parse_boxes([RULE, "dets[1:5]=xyxy:scores>0.5"])
    assert rules["output0"] == BoxRule("output0", 0, "output0[4:22]", 0.25)
    assert rules["dets"] == BoxRule("dets", 1, "scores", 0.5, "xyxy")
    assert rules["dets"].text() == "dets[1:5]=xyxy:scores>0.5"


@pytest.mark.parametrize("text, needle", [
    ("output0", "write BOXES[=FORMAT]:SCORES>THRESHOLD"),
    ("output0:output0[4]>zero", "write BOXES"),
    ("output0:output0[4]>0", "write BOXES"),
    ("output0=ltrb:output0[4]>0.2", "format 'ltrb' is not one of xyxy, cxcywh, xywh"),
    ("output0[0:3]:output0[4]>0.2", "four entries"),
    ("output0[2]:output0[4]>0.2", "four entries"),
])
def test_bad_rules_are_named(text, needle):
    with pytest.raises(ValueError, match=r"--judge-boxes .*" + needle.replace("[", r"\[").replace("]", r"\]")):
        parse_boxes([text])


def test_a_score_slice_is_one_rule_for_judge_where_too():
    """The slice's colon is not the rule's (split at the last colon outside brackets);
    before, ``output0:output0[4:22]>0.25`` was read as outputs 'output0:output0[4'."""
    assert parse_where(["output0:output0[4:22]>0.25"]) == {"output0": ("output0[4:22]", 0.25)}


def test_check_boxes_names_the_problem():
    shapes = {"output0": [1, 22, 2100], "scores": [1, 300]}
    check_boxes(parse_boxes([RULE]), shapes)
    with pytest.raises(ValueError, match="no output 'boxes'"):
        check_boxes(parse_boxes(["boxes:output0[4]>0.2"]), shapes)
    with pytest.raises(ValueError, match=r"scores gives 300 score\(s\) for the 2100 rows"):
        check_boxes(parse_boxes(["output0:scores>0.2"]), shapes)
    with pytest.raises(ValueError, match="no entry 22 on its second-to-last axis"):
        check_boxes(parse_boxes(["output0[19:23]:output0[4]>0.2"]), shapes)


def test_the_format_is_inferred_from_the_reference(yolo_refs):
    rule = parse_boxes([RULE])["output0"]
    assert infer_format(yolo_refs, rule).fmt == "cxcywh"  # a YOLO head's centres and sizes
    corners = []
    for ref in yolo_refs:
        out = ref["output0"].copy()
        cx, cy, w, h = out[0, :4]
        out[0, :4] = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        corners.append({"output0": out})
    assert infer_format(corners, rule) == BoxRule("output0", 0, "output0[4:22]", 0.25, "xyxy", True)
    assert infer_format(yolo_refs, parse_boxes(["output0=xywh:output0[4:22]>0.25"])["output0"]).fmt == "xywh"


def test_cosine_does_not_see_boxes_move_iou_does(yolo_refs):
    """Every box moved 8 px right and down: cosine over the detections stays 0.999, the
    worst sample's boxes overlap fp32's by under half."""
    rule = infer_format(yolo_refs, parse_boxes([RULE])["output0"])
    where = {"output0": (rule.scores, rule.threshold)}
    same = compare_outputs(yolo_refs, yolo_refs, where=where, boxes={"output0": rule})["output0"]
    assert same["box_iou"] == 1.0 and same["boxes"]["missed"] == same["boxes"]["extra"] == 0
    assert same["boxes"]["reference"] == same["boxes"]["bundle"] >= 10
    moved = compare_outputs(yolo_refs, _moved(yolo_refs, 8.0), where=where, boxes={"output0": rule})["output0"]
    assert moved["cosine"] > 0.998
    assert moved["box_iou"] < 0.5 and moved["boxes"]["missed"] > 0
    fidelity = Fidelity(min_cosine=0.98)
    assert [c.name for c in fidelity_failures({"output0": moved}, fidelity)] == ["box_iou[output0]"]
    small = compare_outputs(yolo_refs, _moved(yolo_refs, 0.2), where=where, boxes={"output0": rule})["output0"]
    assert 0.9 < small["box_iou"] < 1.0 and not fidelity_failures({"output0": small}, fidelity)
    assert fidelity_failures({"output0": small}, Fidelity(min_cosine=0.98, min_box_iou=0.999))


def _busiest(refs):
    return refs[max(range(len(refs)), key=lambda k: int((refs[k]["output0"][0, 4:].max(0) > 0.25).sum()))]


def test_lost_detections_count_near_threshold_ones_do_not(yolo_refs):
    rule = infer_format(yolo_refs, parse_boxes([RULE])["output0"])
    ref = _busiest(yolo_refs)
    lost = ref["output0"].copy()
    lost[0, 4:] = 0  # the bundle finds nothing
    m = box_metrics([ref], [{"output0": lost}], rule)
    assert m["box_iou"] == 0.0 and m["boxes"]["missed"] == m["boxes"]["reference"] > 0
    # a detection at 0.26 that comes out 0.24 is the same one, judged by its box: the
    # reference's detections all scoring 0.26 to 0.30, the bundle's 0.1 less
    scores = ref["output0"][0, 4:]
    low = ref["output0"].copy()
    low[0, 4:] = np.where(scores > 0.25, 0.26 + 0.04 * (scores - 0.25) / 0.75, scores)
    near = low.copy()
    near[0, 4:] -= 0.1  # (every score of every row: no row changes class or rank)
    m = box_metrics([{"output0": low}], [{"output0": near}], rule)
    assert m["box_iou"] == 1.0 and m["boxes"]["missed"] == 0 and m["boxes"]["bundle"] == 0
    # one that falls further (0.6 to 0.2) is lost
    far = ref["output0"].copy()
    far[0, 4:] = np.where(scores > 0.25, 0.2, scores)
    m = box_metrics([ref], [{"output0": far}], rule)
    strong = int(np.count_nonzero(scores.max(0) > 0.45))
    assert strong and m["boxes"]["missed"] > 0 and m["box_iou"] < 1.0


def test_detections_are_reduced_by_nms_as_an_application_does(yolo_refs):
    """A dense head passes the threshold on many anchors per object. Matched row by row,
    an object whose top anchor changed class still finds a neighbouring anchor of its old
    class and costs one row in dozens; after NMS it is one box the bundle made up among
    the few an application shows."""
    rule = infer_format(yolo_refs, parse_boxes([RULE])["output0"])
    ref = _busiest(yolo_refs)
    out = ref["output0"]
    rows = int(np.count_nonzero(out[0, 4:].max(0) > 0.25))
    same = box_metrics([ref], [ref], rule)["boxes"]
    assert 0 < same["reference"] < rows  # boxes, not anchors
    top = int(out[0, 4:].max(0).argmax())
    flipped = out.copy()
    c = int(out[0, 4:, top].argmax())
    flipped[0, 4 + c, top], flipped[0, 4 + (c + 1) % 18, top] = out[0, 4 + (c + 1) % 18, top], out[0, 4 + c, top]
    m = box_metrics([ref], [{"output0": flipped}], rule)
    n = m["boxes"]["reference"]
    assert m["boxes"]["extra"] == 1 and m["box_iou"] <= 2 * n / (2 * n + 1) + 1e-9


def test_classes_are_matched(yolo_refs):
    """With class scores as the score slice, a box of another class is no match."""
    rule = infer_format(yolo_refs, parse_boxes([RULE])["output0"])
    ref = _busiest(yolo_refs)
    swapped = ref["output0"].copy()
    swapped[0, 4:] = np.roll(swapped[0, 4:], 1, axis=0)  # every row's scores one class on
    assert box_metrics([ref], [{"output0": swapped}], rule)["box_iou"] == 0.0
    unclassed = BoxRule("output0", 0, "output0[4]", 1e-9, "cxcywh")  # one column: no classes, every row
    assert box_metrics([ref], [{"output0": ref["output0"]}], unclassed)["box_iou"] == 1.0


def test_no_detection_is_not_judged(yolo_refs):
    rule = parse_boxes(["output0=cxcywh:output0[4:22]>0.99"])["output0"]
    m = compare_outputs(yolo_refs, yolo_refs, boxes={"output0": rule})["output0"]
    assert "box_iou" not in m and m["boxes"]["samples_with_detections"] == 0


def test_budget_implied_by_cosine():
    assert [box_iou_limit(Fidelity(min_cosine=c)) for c in (0.9999, 0.999, 0.98)] == [0.992929, 0.977639, 0.9]
    assert box_iou_limit(Fidelity(min_cosine=0.98, min_box_iou=0.75)) == 0.75


def test_the_engine_check_judges_boxes_as_the_build_did(yolo_refs):
    rule = infer_format(yolo_refs, parse_boxes([RULE])["output0"])
    manifest = {"validation": {"judge_where": {"output0": [rule.scores, rule.threshold]},
                               "judge_boxes": {"output0": rule.to_json()}}}
    i = max(range(len(yolo_refs)), key=lambda k: int((yolo_refs[k]["output0"][0, 4:].max(0) > 0.25).sum()))
    got = _moved(yolo_refs[i:i + 1], 8.0)[0]
    metrics = judged_as_built(manifest, yolo_refs[i], got, {})
    assert metrics["output0"]["box_iou"] < 0.9 < metrics["output0"]["cosine"]


@pytest.mark.slow
def test_build_judges_boxes_and_records_the_rule(real_model, tmp_path):
    """An fp32 build meets the box budget; a box budget of 1 is missed with a one-line
    error naming it (exit 8), and nothing is written; a rule that does not fit is exit 4;
    without the option, the summary and the manifest name the rule that would judge it."""
    model = real_model("yolov8n")
    base = [sys.executable, "-m", "deploycomp", "build", str(model), "--target", "host", "--precision", "fp32",
            "--input", "images:1x3x320x320", "--judge-boxes", RULE]
    done = subprocess.run(base + ["--out", str(tmp_path / "ok")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "box IoU" in done.stdout
    manifest = json.loads((tmp_path / "ok" / "manifest.json").read_text())
    validation = manifest["validation"]
    assert validation["judge_boxes"]["output0"] == {"rule": "output0[0:4]=cxcywh:output0[4:22]>0.25",
                                                    "format": "cxcywh", "format_inferred": True}
    assert validation["outputs"]["output0"]["box_iou"] > 0.99
    assert any(b["budget"] == "box_iou[output0]" and b["ok"] for b in validation["budgets"])
    missed = subprocess.run(base + ["--min-box-iou", "1", "--out", str(tmp_path / "strict")],
                            capture_output=True, text=True)
    assert missed.returncode == 8 and "box_iou[output0]" in missed.stderr
    assert "unmodified model misses too (box_iou[output0]" in missed.stderr  # (it had said "cosine 1.000000")
    assert len(missed.stderr.strip().splitlines()) == 1 and not (tmp_path / "strict").exists()
    whole = subprocess.run(base[:-2] + ["--min-cosine", "1", "--out", str(tmp_path / "whole")],
                           capture_output=True, text=True)  # a miss judged whole names the rule
    assert whole.returncode == 8 and '--judge-boxes "output0[0:4]=cxcywh:output0[4:22]>0.25"' in whole.stderr
    bad = subprocess.run(base[:-1] + ["output0:scores>0.2", "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True)
    assert bad.returncode == 4 and "no output 'scores'" in bad.stderr
    plain = subprocess.run(base[:-2] + ["--out", str(tmp_path / "plain")], capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr
    suggested = json.loads((tmp_path / "plain" / "manifest.json").read_text())["validation"]["judge_boxes_suggested"]
    assert suggested == {"output0": "output0[0:4]=cxcywh:output0[4:22]>0.25"}
    assert '--judge-boxes "output0[0:4]=cxcywh:output0[4:22]>0.25"' in plain.stdout
    as_json = subprocess.run(base[:-2] + ["--out", str(tmp_path / "plain"), "--force", "--json"],
                             capture_output=True, text=True)
    assert json.loads(as_json.stdout)["judge_boxes_suggested"] == suggested


def test_a_detector_head_gets_a_rule_suggested(yolo_refs, real_model):
    """YOLOv8n's head is named with the rule that would judge it; an OCR line's
    probabilities ([1, 40, 6625], first entries within [0, 1] too) and a class list are no
    detector."""
    import onnxruntime as ort

    from deploycomp.boxes import suggest_rule
    from deploycomp.sample_data import ocr_line_samples

    rule = suggest_rule("output0", [r["output0"] for r in yolo_refs])
    assert rule is not None and rule.text() == "output0[0:4]=cxcywh:output0[4:22]>0.25" and rule.inferred
    rec = ort.InferenceSession(str(real_model("ppocr-rec")), providers=["CPUExecutionProvider"])
    lines = [rec.run(None, {"x": x})[0] for x in ocr_line_samples((1, 3, 48, 320))[:2]]
    assert lines[0].ndim == 3 and suggest_rule("probs", lines) is None
    assert suggest_rule("logits", [np.random.default_rng(0).random((1, 1000), np.float32)]) is None


@pytest.mark.slow
def test_the_detector_example_judges_its_boxes(real_model, tmp_path):
    """``deploycomp example yolov8n`` knows its model: a detector, judged by its boxes."""
    real_model("yolov8n")  # (fetched once, as the example would)
    done = subprocess.run([sys.executable, "-m", "deploycomp", "example", "yolov8n", "--precision", "fp32",
                           "--out", str(tmp_path / "ex")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    validation = json.loads((tmp_path / "ex" / "manifest.json").read_text())["validation"]
    assert validation["judge_boxes"]["output0"]["rule"] == "output0[0:4]=cxcywh:output0[4:22]>0.25"
    assert validation["outputs"]["output0"]["box_iou"] > 0.99 and "box IoU" in done.stdout


def test_a_detector_with_its_nms_in_the_graph_is_matched_row_by_row(yolo_refs):
    """Outputs of as many rows as the detector found (``[K, 6]``: xyxy, score, class) differ
    in K when the bundle finds one more or one less: that is a detection made up or lost,
    judged by the boxes and, with the rows matched to the reference's, by cosine; not a
    shape mismatch (which fails whatever the boxes say)."""
    rule = parse_boxes(["dets=xyxy:dets[4]>0.25"])["dets"]
    ref = np.array([[10, 10, 50, 60, 0.9, 1], [100, 100, 150, 180, 0.8, 2], [200, 20, 260, 90, 0.3, 1]], np.float32)
    same_order = compare_outputs([{"dets": ref}], [{"dets": ref[::-1].copy()}], boxes={"dets": rule})["dets"]
    assert same_order["box_iou"] == 1.0 and "shape_mismatch" not in same_order
    extra = np.concatenate([ref[[1, 0]], [[300, 300, 320, 330, 0.5, 0], [5, 200, 40, 240, 0.4, 3]]]
                           ).astype(np.float32)  # lost one, made two: 4 rows for 3
    m = compare_outputs([{"dets": ref}], [{"dets": extra}], boxes={"dets": rule})["dets"]
    assert "shape_mismatch" not in m and m["rows_aligned"] == 1
    assert m["boxes"]["missed"] == 1 and m["boxes"]["extra"] == 2 and m["box_iou"] == pytest.approx(4 / 7)
    assert m["cosine"] < 0.99  # the lost detection's row is zeros against fp32's
    assert compare_outputs([{"dets": ref}], [{"dets": extra}])["dets"]["shape_mismatch"]["samples"] == 1


def test_a_suggestion_takes_objectness_alone_where_class_scores_crowd(yolo_refs):
    """A YOLOX/YOLOv5 head: box, objectness, then class scores conditional on it, which pass
    the threshold on most background anchors (a barcode detector's passed on up to 5,524 of
    8,400): the suggestion names the objectness entry, not entries 4 on as classes. A list
    whose last entry is a class id of 0 or 1 does not take it for a score."""
    from deploycomp.boxes import suggest_rule

    heads = []
    for ref in yolo_refs:
        rows = ref["output0"][0].T  # (2100, 22): cx, cy, w, h, 18 class scores
        objectness = rows[:, 4:].max(axis=1, keepdims=True)
        conditional = rows[:, 4:] / np.maximum(objectness, 1e-6)  # each row's best class at 1.0
        heads.append(np.concatenate([rows[:, :4], objectness, conditional], axis=1)[None].astype(np.float32))
    assert suggest_rule("output", heads).text() == "output[0:4]=cxcywh:output[4]>0.25"
    listed = []
    for ref in yolo_refs:
        rows = ref["output0"][0].T
        order = np.argsort(-rows[:, 4:].max(axis=1))[:300]
        cx, cy, w, h = rows[order, :4].T
        listed.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, rows[order, 4:].max(axis=1),
                                rows[order, 4:].argmax(axis=1) % 2], axis=1)[None].astype(np.float32))
    assert suggest_rule("output0", listed).text() == "output0[0:4]=xyxy:output0[4]>0.25"


@pytest.mark.slow
def test_the_int8_search_holds_the_box_budget_and_says_so(real_model, tmp_path):
    """A box budget the all-int8 model misses: the search keeps layers float for it, and
    each trial records its boxes' IoU (trials had read "met: false" at cosine 0.99996 with
    no word of why); the estimate counts the MACs left float."""
    import deploycomp
    from pathlib import Path

    photos = Path(__file__).resolve().parents[1] / "calibration_data" / "photos"
    runner = deploycomp.build(real_model("yolov8n"), tmp_path / "b", target="jetson-orin-nano", precision="int8",
                              inputs={"images": (1, 3, 320, 320)}, calibration=photos, judge_boxes=RULE,
                              min_box_iou=0.99, no_fail=True)
    quant, validation = runner.manifest["quantization"], runner.manifest["validation"]
    trials = quant["search_trials"]
    assert trials and all("min_box_iou" in t for t in trials)
    assert any(not t["met"] and t["min_cosine"] > 0.999 and t["min_box_iou"] < 0.99 for t in trials)
    assert quant["float_layers"] and validation["outputs"]["output0"]["box_iou"] > 0.98
    assert 0 < validation["latency_estimate"]["int8_mac_share"] < 1


def test_the_applications_nms_can_be_given():
    """``,nms=X`` and ``,agnostic`` after the threshold: a layout detector's package keeps
    one box per place whatever its class (NMS across classes at 0.45), and a class-6 box
    under a class-9 one it removes is no detection there. Two overlapping boxes of two
    classes are two detections per class, one across classes."""
    rule = parse_boxes(["dets=xyxy:dets[4:6]>0.25,nms=0.45,agnostic"])["dets"]
    assert (rule.nms_iou, rule.agnostic) == (0.45, True)
    assert rule.text() == "dets[0:4]=xyxy:dets[4:6]>0.25,nms=0.45,agnostic"
    assert parse_boxes([rule.text()])["dets"] == rule
    with pytest.raises(ValueError, match="option 'nms=2'"):
        parse_boxes(["dets:dets[4]>0.25,nms=2"])
    dets = np.zeros((1, 20, 6), np.float32)  # (20 rows: entries on the last axis)
    dets[0, :2] = [[10, 10, 50, 50, 0.9, 0.1], [14, 10, 54, 50, 0.2, 0.55]]  # IoU 0.82, two classes
    per_class = box_metrics([{"dets": dets}], [{"dets": dets}], parse_boxes(["dets=xyxy:dets[4:6]>0.25"])["dets"])
    across = box_metrics([{"dets": dets}], [{"dets": dets}], rule)
    assert per_class["boxes"]["reference"] == 2 and across["boxes"]["reference"] == 1
    assert across["boxes"]["nms"] == "class-agnostic" and across["boxes"]["nms_iou"] == 0.45
