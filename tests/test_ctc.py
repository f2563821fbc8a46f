"""A CTC recognizer's scores are judged by the text they decode to (``--judge-ctc``), on
PP-OCRv4 rec's real outputs for rendered text lines: cosine fails a harmless one-step shift
and passes a character lost on every line; the text judges both as the application reads
them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from deploycomp.ctc import CtcRule, check_ctc, ctc_metrics, decode, describe_ctc, parse_ctc, suggest_ctc, text_limit
from deploycomp.engine import judged_as_built
from deploycomp.targets import Fidelity
from deploycomp.validate import compare_outputs, decided_failures, fidelity_failures, fidelity_met

SCORES = "softmax_11.tmp_0"  # PP-OCRv4 rec: [1, 40, 6625] per-step character probabilities, blank 0
INT8 = Fidelity(min_cosine=0.98)


@pytest.fixture(scope="module")
def rec_refs(real_model):
    """ONNX Runtime fp32's scores of PP-OCRv4 rec on the built-in text lines."""
    import onnxruntime as ort

    from deploycomp.sample_data import ocr_line_samples

    session = ort.InferenceSession(str(real_model("ppocr-rec")), providers=["CPUExecutionProvider"])
    return [{SCORES: session.run(None, {"x": x})[0]} for x in ocr_line_samples((1, 3, 48, 320))]


def _first_character_lost(scores: np.ndarray) -> np.ndarray:
    """The line's first character's step won by the blank, just: one character read less."""
    lost = scores.copy()
    step = int(np.nonzero(lost[0].argmax(-1))[0][0])
    lost[0, step, 0] = lost[0, step].max() + 0.01
    return lost


def test_parse_rules():
    assert parse_ctc([SCORES, "logits,blank=-1", " ids , blank = 3 "]) == {
        SCORES: CtcRule(SCORES), "logits": CtcRule("logits", -1), "ids": CtcRule("ids", 3)}
    assert CtcRule("logits", -1).text() == "logits,blank=-1" and CtcRule(SCORES).text() == SCORES


@pytest.mark.parametrize("text", ["", ",blank=1", "x,blank=one", "x,blank="])
def test_bad_rules_are_named(text):
    with pytest.raises(ValueError, match="--judge-ctc .*write NAME"):
        parse_ctc([text])


def test_a_rule_given_twice_is_refused():
    with pytest.raises(ValueError, match="given twice"):
        parse_ctc(["x", "x,blank=2"])


def test_check_ctc_names_the_problem():
    outputs = {SCORES: ([1, 40, 6625], "float32"), "ids": ([1, 40], "int64"), "prob": ([1, 4], "float32"),
               "map": ([1, 1, 8, 8], "float32")}
    check_ctc(parse_ctc([SCORES, "ids", f"{SCORES[:0]}prob"]), outputs)  # ([T, C] without a batch: read so)
    with pytest.raises(ValueError, match="no output 'nope'"):
        check_ctc(parse_ctc(["nope"]), outputs)
    with pytest.raises(ValueError, match=r"map \(shape \[1, 1, 8, 8\], float32\) is not class scores"):
        check_ctc(parse_ctc(["map"]), outputs)
    with pytest.raises(ValueError, match="6625 classes; blank=6625 is none of them"):
        check_ctc(parse_ctc([f"{SCORES},blank=6625"]), outputs)
    with pytest.raises(ValueError, match="ids holds class ids, not scores: give the blank's own id"):
        check_ctc(parse_ctc(["ids,blank=-1"]), outputs)


def test_decoding_merges_repeats_and_drops_the_blank():
    steps = [0, 3, 3, 0, 3, 2, 2, 0]  # "3 3 2": a repeat kept apart by a blank is two characters
    scores = np.eye(5, dtype=np.float32)[steps][None]
    assert decode(scores, CtcRule("s")) == [(3, 3, 2)]
    assert decode(np.array([steps, steps[::-1]]), CtcRule("ids")) == [(3, 3, 2), (2, 3, 3)]  # ids, a row a line
    assert decode(scores, CtcRule("s", -1)) == [(0, 3, 0, 3, 2, 0)]  # (the last class the blank: none here)


def test_a_time_major_output_is_one_line_of_its_steps(rec_refs):
    """PyTorch's CTC layout is time-major, ``[T, 1, C]`` (a captcha reader's ``[20, 1, 8210]``):
    it had been read as T lines of one step each, repeats never merged, and a line with a
    character inserted judged "100% of 80 lines exactly as fp32". Read as one line of T
    steps it decodes, is judged and is suggested as its batch-major form is."""
    steps = [0, 3, 3, 0, 3, 2, 2, 0]
    scores = np.eye(5, dtype=np.float32)[steps][:, None]  # [T, 1, C]
    assert decode(scores, CtcRule("s")) == [(3, 3, 2)]
    assert decode(np.array(steps)[:, None], CtcRule("ids")) == [(3, 3, 2)]  # [T, 1] ids
    rule = CtcRule(SCORES)
    ref = rec_refs[0][SCORES]  # [1, 40, 6625]
    lost = _first_character_lost(ref)
    major, minor = ctc_metrics([{SCORES: ref}], [{SCORES: lost}], rule), ctc_metrics(
        [{SCORES: ref.transpose(1, 0, 2)}], [{SCORES: lost.transpose(1, 0, 2)}], rule)
    assert minor["text"]["lines"] == major["text"]["lines"] == 1
    assert minor["text_similarity"] == major["text_similarity"] < 1.0
    assert suggest_ctc(SCORES, [r[SCORES].transpose(1, 0, 2) for r in rec_refs]) == suggest_ctc(
        SCORES, [r[SCORES] for r in rec_refs])


def test_cosine_fails_a_harmless_shift_the_text_does_not(rec_refs):
    """Every line's scores one step later (the same text, as an int8 build emitting a
    character a step early reads): cosine far below int8's 0.98, text identical."""
    shifted = [{SCORES: np.roll(r[SCORES], 1, axis=1)} for r in rec_refs]
    assert all(r[SCORES][0, -1].argmax() == 0 for r in rec_refs)  # (the last step is blank: nothing wraps)
    plain = compare_outputs(rec_refs, shifted)
    assert plain[SCORES]["cosine"] < 0.98 and not fidelity_met(plain, INT8)
    judged = compare_outputs(rec_refs, shifted, ctc=parse_ctc([SCORES]))
    assert judged[SCORES]["text_similarity"] == 1.0 and judged[SCORES]["text"]["exact"] == 1.0
    assert fidelity_met(judged, INT8)
    # every line alike says how many lines like them could still read otherwise (8 lines:
    # 31%; a probe's 16 exact lines read 4.6% otherwise through RapidOCR end to end)
    assert judged[SCORES]["text"]["otherwise_share_95"] == pytest.approx(1 - 0.05 ** (1 / 8), abs=1e-4)
    assert "yet up to 31% of lines like them could read otherwise (95%)" in describe_ctc(judged[SCORES])


def test_cosine_passes_a_lost_character_the_text_does_not(rec_refs):
    lost = [{SCORES: _first_character_lost(r[SCORES])} for r in rec_refs]
    plain = compare_outputs(rec_refs, lost)
    assert plain[SCORES]["cosine"] >= 0.98 and fidelity_met(plain, INT8)
    judged = compare_outputs(rec_refs, lost, ctc=parse_ctc([SCORES]))
    m = judged[SCORES]
    characters = sum(len(decode(r[SCORES], CtcRule(SCORES))[0]) for r in rec_refs)
    assert m["text"]["edits"] == len(rec_refs) and m["text"]["characters"] == characters
    assert m["text_similarity"] == pytest.approx(1 - len(rec_refs) / characters) and m["text"]["exact"] == 0
    (failure,) = fidelity_failures(judged, INT8)
    assert failure.name == f"text[{SCORES}]" and failure.limit == 0.98
    first = m["text"]["first_difference"]
    assert first["sample"] == 0 and first["bundle"] == first["reference"][1:]
    assert "8 of" in describe_ctc(m) and "characters read otherwise" in describe_ctc(m)


def test_a_toss_fp32_nearly_lost_is_read_as_fp32s():
    """A step where fp32 scores the space 0.48 and the next character 0.47: the bundle taking
    the character there is fp32's own coin toss, not counted; taking it where fp32 scores
    it 0.2 below is an edit. Class ids carry no scores: every change counts."""
    probs = np.full((1, 6, 10), 0.01, np.float32)
    for t, c in enumerate([0, 3, 0, 5, 5, 0]):
        probs[0, t, c] = 0.91
    probs[0, 2, [0, 7]] = 0.01, 0.01
    probs[0, 2, 0], probs[0, 2, 7] = 0.48, 0.47  # (blank, or "7", nearly alike at step 2)
    probs /= probs.sum(-1, keepdims=True)
    took_seven = probs.copy()
    took_seven[0, 2, 7] = 0.6
    m = ctc_metrics([{"s": probs}], [{"s": took_seven}], CtcRule("s"))
    assert m["text_similarity"] == 1.0 and m["text"]["unsure_steps"] == 1
    assert "1 step(s) fp32 was unsure of" in describe_ctc(m)
    clear = probs.copy()
    clear[0, 2] = 0.01
    clear[0, 2, 0], clear[0, 2, 7] = 0.6, 0.32  # fp32 sure enough: the "7" is an edit
    assert ctc_metrics([{"s": clear}], [{"s": took_seven}], CtcRule("s"))["text"]["edits"] == 1
    logits = np.log(probs)  # (scores that are no probabilities: read through a softmax)
    assert ctc_metrics([{"s": logits}], [{"s": np.log(took_seven)}], CtcRule("s"))["text"]["unsure_steps"] == 1
    ids = probs.argmax(-1)
    assert ctc_metrics([{"s": ids}], [{"s": took_seven.argmax(-1)}], CtcRule("s"))["text"]["edits"] == 1


def test_the_text_is_a_rate_no_part_of_the_samples_decides(rec_refs):
    """A character lost on the first line alone: the first two lines miss the budget, all
    of them meet it; a search's early stop must wait (as for top-1 agreement)."""
    one_lost = [{SCORES: _first_character_lost(rec_refs[0][SCORES])}, *rec_refs[1:]]
    rule = parse_ctc([SCORES])
    part = compare_outputs(rec_refs[:2], one_lost[:2], ctc=rule)
    assert not fidelity_met(part, Fidelity(min_cosine=0.99)) and not decided_failures(part, Fidelity(min_cosine=0.99))
    assert fidelity_met(compare_outputs(rec_refs, one_lost, ctc=rule), Fidelity(min_cosine=0.99))


def test_budget_is_the_cosines_number_unless_set():
    assert [text_limit(Fidelity(min_cosine=c)) for c in (0.9999, 0.999, 0.98)] == [0.9999, 0.999, 0.98]
    assert text_limit(Fidelity(min_cosine=0.98, min_text_similarity=0.9)) == 0.9


def test_lines_fp32_reads_as_nothing_count_for_nothing():
    blank = np.zeros((1, 12, 10), np.float32)
    blank[..., 0] = 1
    m = ctc_metrics([{"s": blank}], [{"s": blank}], CtcRule("s"))
    assert m["text_similarity"] == 1.0 and m["text"]["empty_reference_lines"] == 1
    made_up = blank.copy()
    made_up[0, 3] = np.eye(10)[4]
    assert ctc_metrics([{"s": blank}], [{"s": made_up}], CtcRule("s"))["text_similarity"] == 0.0


def test_the_engine_check_judges_the_text_as_the_build_did(rec_refs):
    manifest = {"validation": {"judge_ctc": {SCORES: SCORES}}}
    ref = rec_refs[0]
    metrics = judged_as_built(manifest, ref, {SCORES: np.roll(ref[SCORES], 1, axis=1)}, {})
    assert metrics[SCORES]["text_similarity"] == 1.0 and metrics[SCORES]["cosine"] < 0.98


def test_a_recognizers_scores_get_a_rule_suggested(rec_refs):
    """PP-OCRv4 rec's scores are named with the rule; a classifier's, a photo's rows and
    steps where the blank never wins are not."""
    from skimage import data

    scores = [r[SCORES] for r in rec_refs]
    assert suggest_ctc(SCORES, scores) == CtcRule(SCORES)
    assert suggest_ctc("last", [s[..., ::-1].copy() for s in scores]) == CtcRule("last", -1)
    assert suggest_ctc("probs", [s[:, 0] for s in scores]) is None  # [1, C]
    photo = (data.camera()[None, ::16, ::16] / 255).astype(np.float32)  # [1, 32, 32]: no blank wins
    assert suggest_ctc("image", [photo]) is None
    all_blank = np.zeros_like(scores[0])
    all_blank[..., 0] = 1
    assert suggest_ctc("silence", [all_blank]) is None  # (nothing to read on any sample)


def test_fleet_specs_take_ctc_rules_and_budgets(tmp_path, real_model):
    from deploycomp.fleet.spec import SpecError, load_spec

    spec = tmp_path / "fleet.yaml"
    spec.write_text(f"models:\n  - name: rec\n    path: {real_model('ppocr-rec')}\n    inputs: {{x: [1, 3, 48, 320]}}\n"
                    f"    budgets: {{min_text_similarity: 0.995}}\n    options: {{judge_ctc: ['{SCORES}']}}\n"
                    "targets: [host]\nprecisions: [fp32]\n")
    _, (job,) = load_spec(spec)
    assert job.min_text_similarity == 0.995 and job.options["judge_ctc"] == [SCORES]
    spec.write_text(spec.read_text().replace(f"['{SCORES}']", "['x,blank=one']"))
    with pytest.raises(SpecError, match="--judge-ctc 'x,blank=one'"):
        load_spec(spec)


@pytest.mark.slow
def test_build_judges_the_text_and_records_the_rule(real_model, tmp_path):
    """The PP-OCR rec example judges its text as RapidOCR decodes it (fp32: every line
    alike); a rule that does not fit is exit 4 and one line; a build without the option
    names the rule that would judge its scores."""
    done = subprocess.run([sys.executable, "-m", "deploycomp", "example", "ppocr-rec", "--precision", "fp32",
                           "--out", str(tmp_path / "ok")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "CTC text similarity 1.0000 (0 of" in done.stdout and "(not judged: its text is)" in done.stdout
    validation = json.loads((tmp_path / "ok" / "manifest.json").read_text())["validation"]
    assert validation["judge_ctc"] == {SCORES: SCORES}
    assert validation["outputs"][SCORES]["text"]["exact"] == 1.0
    assert [b["budget"] for b in validation["budgets"] if b["budget"].endswith(f"[{SCORES}]")] == [f"text[{SCORES}]"]
    bad = subprocess.run([sys.executable, "-m", "deploycomp", "build", str(real_model("ppocr-rec")), "--input",
                          "x:1x3x48x320", "--judge-ctc", f"{SCORES},blank=7000", "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True)
    assert bad.returncode == 4 and "6625 classes; blank=7000" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    plain = subprocess.run([sys.executable, "-m", "deploycomp", "build", str(real_model("ppocr-rec")), "--input",
                            "x:1x3x48x320", "--out", str(tmp_path / "plain"), "--json"], capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["judge_ctc_suggested"] == {SCORES: SCORES}
    suggested = json.loads((tmp_path / "plain" / "manifest.json").read_text())["validation"]
    assert suggested["judge_ctc_suggested"] == {SCORES: SCORES} and "judge_ctc" not in suggested
