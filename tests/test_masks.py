"""A dense map is judged by the mask an application cuts from it (``--judge-mask``), on
PP-OCRv4 det's real probability maps of rendered text: cosine does not see a map that
shrinks across the threshold; the mask's IoU does."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from deploycomp.engine import judged_as_built
from deploycomp.masks import (MaskRule, check_masks, class_axis, describe_mask, mask_iou_limit, mask_metrics,
                              parse_masks)
from deploycomp.targets import Fidelity
from deploycomp.validate import compare_outputs, fidelity_failures

MAP = "sigmoid_0.tmp_0"  # PP-OCRv4 det: [1, 1, H, W], text probability; RapidOCR cuts it at 0.3
RULE = f"{MAP}>0.3"


@pytest.fixture(scope="module")
def det_refs(real_model):
    """ONNX Runtime fp32's text maps of PP-OCRv4 det on the built-in text pages."""
    import onnxruntime as ort

    from deploycomp.sample_data import ocr_det_samples

    session = ort.InferenceSession(str(real_model("ppocr-det")), providers=["CPUExecutionProvider"])
    return [{MAP: session.run(None, {"x": x})[0]} for x in ocr_det_samples((1, 3, 320, 320))]


def test_a_mask_dilated_as_the_application_does_joins_what_it_joins():
    """RapidOCR dilates its text mask by a 2 x 2 square before it cuts boxes: two words a
    pixel apart are one box then, and an int8 map that closes a one-pixel gap fp32 left
    open merges two lines only after the dilation (a probe's page lost both lines). The
    dilation is OpenCV's, its anchor the square's centre."""
    from deploycomp.masks import dilated

    ref = np.zeros((1, 1, 64, 96), np.float32)
    ref[0, 0, 20:30, 10:40] = ref[0, 0, 20:30, 42:80] = 0.9  # two words, a 2-pixel gap
    got = ref.copy()
    got[0, 0, 20:30, 40] = 0.9  # the bundle closes one column of it
    plain = mask_metrics([{"m": ref}], [{"m": got}], MaskRule("m", 0.3))
    assert plain["mask_regions"] == 1.0  # (raw, both keep a gap: two words each)
    rule = parse_masks(["m>0.3,dilate=2"])["m"]
    assert rule == MaskRule("m", 0.3, 2) and rule.text() == "m>0.3,dilate=2"
    merged = mask_metrics([{"m": ref}], [{"m": got}], rule)
    # (2 words against 1 line: the longer word matches it, the other is lost: F1 2/3)
    assert merged["mask_regions"] == pytest.approx(2 / 3) and merged["mask"]["rule"] == "m>0.3,dilate=2"
    spot = np.zeros((5, 5), bool)
    spot[2, 2] = True
    assert np.argwhere(dilated(spot, 2)).tolist() == [[2, 2], [2, 3], [3, 2], [3, 3]]  # (cv2.dilate's anchor)
    assert np.argwhere(dilated(spot, 3)).min(0).tolist() == [1, 1]


def test_parse_rules():
    rules = parse_masks([RULE, "logits", " alpha > 0.5 "])
    assert rules == {MAP: MaskRule(MAP, 0.3), "logits": MaskRule("logits"), "alpha": MaskRule("alpha", 0.5)}
    assert rules[MAP].text() == RULE and rules["logits"].text() == "logits"
    assert parse_masks(["out:0>0.5"]) == {"out:0": MaskRule("out:0", 0.5)}  # (a TensorFlow export's name)


@pytest.mark.parametrize("text", [">0.5", "mask>", "mask>half", "mask>nan", "mask>0.5,dilate=x", "mask,dilate=2"])
def test_bad_rules_are_named(text):
    with pytest.raises(ValueError, match=r"--judge-mask .*write NAME>THRESHOLD"):
        parse_masks([text])
    with pytest.raises(ValueError, match="given twice"):
        parse_masks(["mask>0.5", "mask>0.4"])


def test_check_masks_names_the_problem():
    outputs = {MAP: ([1, 1, 320, 320], "float32"), "logits": ([1, 21, 64, 64], "float32"),
               "labels": ([1, 64, 64], "int64")}
    check_masks(parse_masks([RULE, "logits", "labels"]), outputs)
    with pytest.raises(ValueError, match="no output 'mask'"):
        check_masks(parse_masks(["mask>0.5"]), outputs)
    with pytest.raises(ValueError, match=r"no axis of class scores .* is judged as sigmoid_0.tmp_0>THRESHOLD"):
        check_masks(parse_masks([MAP]), outputs)  # one channel: a probability map, not classes


def test_class_axis():
    assert class_axis((1, 21, 64, 64)) == 1 and class_axis((1, 64, 64, 21)) == 3
    assert class_axis((1, 1, 64, 64)) is None and class_axis((64, 64)) is None


def test_cosine_does_not_see_a_map_fade_across_the_threshold_iou_does(det_refs):
    """The bundle's map at 0.4 of fp32's: its cosine is 1 (cosine does not see a scale),
    and every text pixel under 0.75 leaves the mask: the edges of every word. fp16's
    budget (cosine 0.999, so IoU 0.978) is missed by the mask alone."""
    rule = parse_masks([RULE])
    same = compare_outputs(det_refs, det_refs, masks=rule)[MAP]
    assert same["mask_iou"] == 1.0 and same["mask"]["flipped"] == 0.0
    assert same["mask"]["samples_judged"] >= 2  # (pages with text)
    faint = [{MAP: r[MAP] * 0.4} for r in det_refs]
    m = compare_outputs(det_refs, faint, masks=rule)[MAP]
    assert m["cosine"] > 0.999999
    assert m["mask_iou"] < 0.97 and m["mask"]["flipped"] > 0.001
    fp16 = Fidelity(min_cosine=0.999)
    assert [c.name for c in fidelity_failures({MAP: m}, fp16)] == [f"mask_iou[{MAP}]", f"mask_regions[{MAP}]"]
    lowest = min(m["mask_iou"], m["mask_regions"])
    assert not fidelity_failures({MAP: m}, Fidelity(min_cosine=0.999, min_mask_iou=lowest))


def test_words_merged_by_a_thin_bridge_are_judged_by_the_regions():
    """Ten words of a text map, two of them joined by a 2-pixel bridge in the bundle's map:
    its pixels barely move (IoU 0.99), but an application cutting boxes from the regions
    reads one word where fp32 reads two (PP-OCRv4 det's int8 bundles kept mask IoU
    0.95-0.97 while RapidOCR read other lines on half the pages): region F1 16/19."""
    ref = np.zeros((1, 1, 96, 160), np.float32)
    for k in range(10):
        y, x = 8 + 18 * (k // 5), 6 + 30 * (k % 5)
        ref[0, 0, y:y + 10, x:x + 24] = 0.9
    got = ref.copy()
    got[0, 0, 12:14, 30:36] = 0.9  # words 0 and 1 of the first line touch
    m = mask_metrics([{"m": ref}], [{"m": got}], MaskRule("m", 0.3))
    assert m["mask_iou"] > 0.99 and m["mask_regions"] == pytest.approx(16 / 19)
    assert [c.name for c in fidelity_failures({"m": m | {"cosine": 1.0, "samples": 1}},
                                              Fidelity(min_cosine=0.98))] == ["mask_regions[m]"]
    split = ref.copy()
    split[0, 0, 8:18, 17:19] = 0.0  # one word split in two: a region lost, two made up
    assert mask_metrics([{"m": ref}], [{"m": split}], MaskRule("m", 0.3))["mask_regions"] == pytest.approx(18 / 21)
    assert "regions matched one to one at F1 0.842" in describe_mask(m)


def test_a_speck_is_not_judged():
    """A page without text: fp32 finds nothing, the bundle 3 pixels; no mask either side to judge."""
    ref = np.zeros((1, 1, 64, 64), np.float32)
    got = ref.copy()
    got[0, 0, 10, 10:13] = 0.9
    m = mask_metrics([{"m": ref}], [{"m": got}], MaskRule("m", 0.5))
    assert "mask_iou" not in m and m["mask"]["samples_judged"] == 0 and m["mask"]["flipped"] == pytest.approx(3 / 4096, abs=1e-6)
    got[0, 0, 10:30, 10:30] = 0.9  # one made up where fp32 has none is judged: IoU 0
    assert mask_metrics([{"m": ref}], [{"m": got}], MaskRule("m", 0.5))["mask_iou"] == 0.0


def test_a_class_map_is_judged_by_its_classes_mean_iou():
    """A segmentation head's logits (``[1, C, H, W]``, from a real photo's grey levels) and
    its ``ArgMax`` in the graph (integers): each judged by the mean IoU over the classes
    either side covers; 10% of one class's pixels taken by another costs that class and
    the other, where cosine over the logits barely moves."""
    from skimage import data

    grey = data.camera()[::8, ::8].astype(np.float32) / 255  # 64 x 64
    centres = np.array([0.1, 0.4, 0.7, 0.95], np.float32)
    logits = -np.abs(grey[None, :, :] - centres[:, None, None])[None] * 10  # [1, 4, 64, 64]
    labels = logits.argmax(1)
    rule = MaskRule("logits")
    assert mask_metrics([{"logits": logits}], [{"logits": logits}], rule)["mask_iou"] == 1.0
    moved = logits.copy()
    ones = np.argwhere(labels[0] == 1)
    take = ones[: len(ones) // 10]
    moved[0, 2, take[:, 0], take[:, 1]] = moved[0, 1, take[:, 0], take[:, 1]] + 0.01
    m = compare_outputs([{"logits": logits}], [{"logits": moved}], masks={"logits": rule})["logits"]
    assert m["cosine"] > 0.99 and m["mask"]["read_as"] == "classes"
    assert 0.85 < m["mask_iou"] < 0.98 and m["mask"]["flipped"] == pytest.approx(len(take) / labels.size, abs=1e-6)
    as_ids = mask_metrics([{"l": labels}], [{"l": moved.argmax(1)}], MaskRule("l"))
    assert as_ids["mask_iou"] == pytest.approx(m["mask_iou"])


def test_budget_implied_by_cosine():
    assert [mask_iou_limit(Fidelity(min_cosine=c)) for c in (0.9999, 0.999, 0.98)] == [0.992929, 0.977639, 0.9]
    assert mask_iou_limit(Fidelity(min_cosine=0.98, min_mask_iou=0.8)) == 0.8


def test_the_engine_check_judges_the_mask_as_the_build_did(det_refs):
    manifest = {"validation": {"judge_masks": {MAP: RULE}}}
    ref = min(det_refs, key=lambda r: compare_outputs([r], [{MAP: r[MAP] * 0.4}], masks=parse_masks([RULE]))[MAP]["mask_iou"])
    metrics = judged_as_built(manifest, ref, {MAP: ref[MAP] * 0.4}, {})
    assert metrics[MAP]["mask_iou"] < 0.97 < 0.999 < metrics[MAP]["cosine"]


def test_fleet_specs_take_mask_rules_and_budgets(tmp_path, real_model):
    from deploycomp.fleet.spec import SpecError, load_spec

    model = real_model("ppocr-det")
    spec = tmp_path / "fleet.yaml"
    spec.write_text(f"models:\n  - name: det\n    path: {model}\n    inputs: {{x: [1, 3, 320, 320]}}\n"
                    f"    budgets: {{min_mask_iou: 0.95}}\n    options: {{judge_masks: ['{RULE}']}}\n"
                    "targets: [host]\nprecisions: [fp32]\n")
    _, (job,) = load_spec(spec)
    assert job.min_mask_iou == 0.95 and job.options["judge_masks"] == [RULE]
    spec.write_text(spec.read_text().replace(RULE, "mask>"))
    with pytest.raises(SpecError, match="--judge-mask 'mask>'"):
        load_spec(spec)


@pytest.mark.slow
def test_build_judges_the_mask_and_records_the_rule(real_model, tmp_path):
    """The PP-OCR det example judges its text mask at RapidOCR's 0.3 (fp32: IoU ~1); a rule
    that does not fit is exit 4 and one line; a build without the option names the rule
    that would judge its map."""
    done = subprocess.run([sys.executable, "-m", "deploycomp", "example", "ppocr-det", "--precision", "fp32",
                           "--input", "x:1x3x320x320", "--out", str(tmp_path / "ok")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "mask IoU" in done.stdout
    validation = json.loads((tmp_path / "ok" / "manifest.json").read_text())["validation"]
    assert validation["judge_masks"] == {MAP: f"{RULE},dilate=2"}  # (as RapidOCR dilates its mask)
    assert validation["outputs"][MAP]["mask_iou"] > 0.99
    assert any(b["budget"] == f"mask_iou[{MAP}]" and b["ok"] for b in validation["budgets"])
    bad = subprocess.run([sys.executable, "-m", "deploycomp", "build", str(real_model("ppocr-det")), "--input",
                          "x:1x3x320x320", "--judge-mask", MAP, "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True)
    assert bad.returncode == 4 and "no axis of class scores" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    plain = subprocess.run([sys.executable, "-m", "deploycomp", "build", str(real_model("ppocr-det")), "--input",
                            "x:1x3x320x320", "--out", str(tmp_path / "plain")], capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr
    assert f'--judge-mask "{MAP}>0.5"' in plain.stdout  # (judged by cosine alone: the rule is named)
    suggested = json.loads((tmp_path / "plain" / "manifest.json").read_text())["validation"]
    assert suggested["judge_masks_suggested"] == {MAP: f"{MAP}>0.5"} and "judge_masks" not in suggested


def test_a_probability_map_gets_a_rule_suggested(det_refs):
    """PP-OCR det's text map is named with the rule that would judge it; a grey or colour
    photo in [0, 1], or a map never over 0.5, is not."""
    from skimage import data

    from deploycomp.masks import suggest_mask

    maps = [r[MAP] for r in det_refs]
    assert suggest_mask(MAP, maps) == MaskRule(MAP, 0.5)
    grey = (data.camera()[None, None, ::4, ::4] / 255).astype(np.float32)
    assert suggest_mask("image", [grey]) is None
    assert suggest_mask("rgb", [np.repeat(grey, 3, axis=1)]) is None  # (a photo's channels)
    assert suggest_mask("empty", [np.zeros_like(maps[0])]) is None
    assert suggest_mask("small", [m[..., :16, :16] for m in maps]) is None


def test_a_per_pixel_softmax_gets_a_class_rule_suggested():
    """A segmenter's ``[1, H, W, 2]`` softmax (real coins as the foreground) is named with
    the class-map rule; channels that do not sum to 1 (an image's RGB) are not."""
    from skimage import data, filters

    from deploycomp.masks import suggest_mask

    coins = data.coins().astype(np.float32)
    fg = coins > filters.threshold_otsu(coins)
    p = np.where(fg, 0.97, 0.01).astype(np.float32)
    softmax = np.stack([1 - p, p], axis=-1)[None]
    assert suggest_mask("seg", [softmax]) == MaskRule("seg")
    assert suggest_mask("seg", [softmax.transpose(0, 3, 1, 2).copy()]) == MaskRule("seg")  # channels first too
    rgb = np.repeat((coins / 255)[None, None], 3, axis=1).astype(np.float32)
    assert suggest_mask("image", [rgb]) is None
    assert suggest_mask("empty", [np.stack([np.ones_like(p), np.zeros_like(p)], axis=-1)[None]]) is None


def test_a_suggestion_is_said_for_what_the_map_is():
    from deploycomp.masks import describe_suggestion

    assert "probability map" in describe_suggestion(RULE) and "threshold" in describe_suggestion(RULE)
    assert describe_suggestion("seg").startswith("looks like a per-pixel softmax")


def test_a_class_maps_background_is_not_averaged_in():
    """A 2-class softmax whose few foreground pixels lost their rims: the foreground's IoU
    is what is judged; averaged with the background's (near 1 whatever happens), it had
    been about halfway to 1."""
    from scipy import ndimage
    from skimage import data, filters

    coins = data.coins().astype(np.float32)
    fg = np.zeros((384, 384), bool)
    fg[100:160, 100:180] = (coins > filters.threshold_otsu(coins))[20:80, 40:120]
    rims = ndimage.binary_erosion(fg, iterations=2)
    as_map = lambda m: np.stack([~m, m], axis=-1)[None].astype(np.float32)  # noqa: E731
    m = mask_metrics([{"seg": as_map(fg)}], [{"seg": as_map(rims)}], MaskRule("seg"))
    want = (fg & rims).sum() / (fg | rims).sum()
    assert m["mask_iou"] == pytest.approx(want) and want < 0.8


def test_maps_of_a_few_channels_that_are_no_softmax_get_the_threshold_rule():
    """CRAFT's text and link maps (``[1, 2, H, W]``, regressed heatmaps a little past [0, 1]:
    -0.065 to 1.06) are probability maps judged together, not classes."""
    from skimage import data, filters

    from deploycomp.masks import suggest_mask

    coins = data.coins().astype(np.float32)
    fg = (coins > filters.threshold_otsu(coins)).astype(np.float32)
    heat = np.stack([fg * 1.06 - 0.03, np.roll(fg, 5, axis=1) * 0.9])[None]  # two maps, not summing to 1
    assert suggest_mask("y", [heat]) == MaskRule("y", 0.5)
    assert suggest_mask("y", [heat * 3]) is None  # (not a probability's range)
