"""Output comparison that does not fail on numerical noise, and does fail on NaN.

The specification: cosine is the test where the reference output carries information;
where it is (nearly) zero or constant the sample is *uninformative*, flagged, and held to
an error bound scaled to the output's range instead. NaN or Inf where fp32 is finite is
its own failure whatever cosine says.
"""

from __future__ import annotations

import numpy as np
import pytest

from deploycomp.targets import Budgets, Fidelity
from deploycomp.validate import (compare_outputs, decided_failures, describe_top1, fidelity_failures, fidelity_met,
                                 noise_allowance, output_scales, summarize, unjudged_outputs)

FP32 = Fidelity(min_cosine=0.9999)
INT8 = Fidelity(min_cosine=0.98)


def _maps(rng, text: bool) -> np.ndarray:
    """A text-probability map: mostly ~0, with a block of ~1 where there is text."""
    m = rng.random((1, 1, 32, 32)).astype(np.float32) * 2e-6
    if text:
        m[0, 0, 8:16, 4:28] = 0.99
    return m


def test_an_empty_map_is_uninformative_not_a_failure():
    """PP-OCR det on a photo without text: the reference peaks at 2e-6, the artifact is off
    by 1e-7 (fp32 rounding), cosine ~0.99 measures noise. The text sample decides."""
    rng = np.random.default_rng(0)
    refs = [{"p": _maps(rng, True)}, {"p": _maps(rng, False)}]
    gots = [{"p": r["p"] + rng.standard_normal(r["p"].shape).astype(np.float32) * 1e-7} for r in refs]
    m = compare_outputs(refs, gots)["p"]
    assert m["uninformative_samples"] == 1 and m["quiet_error"] < 1e-6 and m["scale"] == pytest.approx(0.99, 1e-3)
    assert m["cosine"] > 0.99999  # of the informative sample only
    assert fidelity_met({"p": m}, FP32)
    raw = np.dot(refs[1]["p"].ravel(), gots[1]["p"].ravel()) / (np.linalg.norm(refs[1]["p"]) * np.linalg.norm(gots[1]["p"]))
    assert raw < FP32.min_cosine  # what the old check failed on


def test_a_quiet_sample_still_catches_a_wrong_artifact():
    """An artifact that lights up an empty map is wrong, and the noise bound says so."""
    rng = np.random.default_rng(1)
    refs = [{"p": _maps(rng, True)}, {"p": _maps(rng, False)}]
    gots = [{"p": refs[0]["p"].copy()}, {"p": refs[1]["p"] + np.float32(0.5) * (rng.random((1, 1, 32, 32)) > 0.99)}]
    failed = fidelity_failures(compare_outputs(refs, gots), FP32)
    assert [c.name for c in failed] == ["quiet_error[p]"]
    assert failed[0].value > noise_allowance(FP32.min_cosine)


def test_nan_is_its_own_failure():
    ref = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
    got = ref.copy()
    got[0, 3] = np.nan
    got[0, 5] = np.inf
    m = compare_outputs([{"y": ref}], [{"y": got}])["y"]
    assert m["nonfinite"] == 2 and m["cosine"] > 0.99  # the finite part agrees
    failed = fidelity_failures({"y": m}, Fidelity(min_cosine=0.98))
    assert failed[0].name == "finite[y]" and "NaN/Inf" in failed[0].describe()
    # an -inf the reference has too is agreement, not a failure
    ref2 = ref.copy()
    ref2[0, 0] = -np.inf
    assert "nonfinite" not in compare_outputs([{"y": ref2}], [{"y": ref2.copy()}])["y"]
    # so is a NaN where the reference has NaN (a missing value passed through); an Inf there is not
    ref2[0, 1] = np.nan
    assert "nonfinite" not in compare_outputs([{"y": ref2}], [{"y": ref2.copy()}])["y"]
    got2 = ref2.copy()
    got2[0, 1] = np.inf
    assert compare_outputs([{"y": ref2}], [{"y": got2}])["y"]["nonfinite"] == 1


def test_constant_outputs_and_top1():
    """A constant output (a classifier whose weights are fills, as in ONNX's IR 3 test
    models) has no meaningful argmax: top-1 is not counted on it, the bound is."""
    ref = np.full((1, 10), 0.1, np.float32)
    got = ref + np.float32(1e-9) * np.arange(10, dtype=np.float32)
    m = compare_outputs([{"s": ref}], [{"s": got}])["s"]
    assert m["uninformative_samples"] == 1 and "top1_agreement" not in m
    assert fidelity_met({"s": m}, Fidelity(min_cosine=0.9999, min_top1_agreement=0.99))
    assert not fidelity_met({"s": compare_outputs([{"s": ref}], [{"s": ref * 2}])["s"]}, FP32)


def test_one_class_on_every_sample_is_said():
    """Validation inputs that all give one class (a detector fed unscaled 0..255 images:
    one saturated class everywhere) measure how that one answer survives, not the model's
    others: said with the top-1 agreement; a CTC-like [1, T, C] output is not one answer."""
    rng = np.random.default_rng(0)
    refs = [{"p": np.eye(5, dtype=np.float32)[[2]] + rng.random((1, 5), np.float32) * 0.1} for _ in range(4)]
    m = compare_outputs(refs, refs)["p"]
    assert m["top1_one_class"] == 2 and "class 2 on every sample" in describe_top1(m)
    refs[1] = {"p": np.eye(5, dtype=np.float32)[[3]]}
    m = compare_outputs(refs, refs)["p"]
    assert "top1_one_class" not in m and describe_top1(m) == "top-1 agreement 1.000"
    # too few samples to say so; a sequence of scores is many answers
    assert "top1_one_class" not in compare_outputs(refs[:2], refs[:2])["p"]
    seq = [{"p": np.eye(5, dtype=np.float32)[None, [2, 2, 2]]} for _ in range(4)]
    assert "top1_one_class" not in compare_outputs(seq, seq)["p"]


def test_one_value_per_sample_is_judged_unless_zero_everywhere():
    """A score per sample (3.5-4.4) has no informative sample by cosine's rule, yet its
    error is judged on every one: not an output nothing was judged on; zeros everywhere
    (a ``--judge-where`` nothing passed) still are."""
    scores = [{"mos": np.array([[v]], np.float32)} for v in (3.5, 4.4, 3.9)]
    m = compare_outputs(scores, scores)
    assert m["mos"]["single_value"] and unjudged_outputs(m) == []
    zeros = [{"mos": np.zeros((1, 1), np.float32)} for _ in range(3)]
    assert unjudged_outputs(compare_outputs(zeros, zeros)) == ["mos"]


def test_allowance_follows_the_budget():
    assert noise_allowance(0.9999) == pytest.approx(0.01414, rel=1e-3)
    assert noise_allowance(0.98) == pytest.approx(0.2)
    informative = {"y": {"cosine": 0.97, "samples": 3}}
    assert not fidelity_met(informative, Fidelity(min_cosine=0.98))
    assert fidelity_met(informative, Fidelity(min_cosine=0.96))


def test_one_value_per_sample_is_judged_by_its_error():
    """A speech probability per chunk (Silero VAD): cosine of one number is its sign."""
    refs = [{"p": np.array([[0.9]], np.float32)}, {"p": np.array([[0.02]], np.float32)}]
    near = [{"p": r["p"] + np.float32(1e-4)} for r in refs]
    m = compare_outputs(refs, near)["p"]
    assert m["single_value"] and m["uninformative_samples"] == 2 and fidelity_met({"p": m}, FP32)
    far = [{"p": np.array([[0.5]], np.float32)}, {"p": np.array([[0.02]], np.float32)}]
    assert not fidelity_met(compare_outputs(refs, far), FP32)  # cosine would say 1.0 for both
    # what is recorded is the cosine of the values over the samples: a reference of exactly 0
    # had made it 0.0, which diff read as a regression and fleets as the build's fidelity
    zeros = [{"p": np.array([[v]], np.float32)} for v in (0.0, 0.7, 0.0, 0.3)]
    m = compare_outputs(zeros, [{"p": r["p"] + np.float32(1e-6)} for r in zeros])["p"]
    assert m["cosine_over"] == "samples" and m["cosine"] > 0.999999 and fidelity_met({"p": m}, FP32)


def test_a_floor_widens_only_what_the_model_s_own_runtime_misses():
    """A model that arrives int8: ONNX Runtime's own kernels are 0.32 of a probability's
    scale from its QDQ as written (Smart Turn); a build no further than that is not a miss,
    one further still is, and a criterion the runtime meets keeps its limit."""
    refs = [{"p": np.array([[0.35]], np.float32), "y": np.arange(8, dtype=np.float32)[None]},
            {"p": np.array([[0.01]], np.float32), "y": np.arange(8, dtype=np.float32)[None] + 1}]
    own = compare_outputs(refs, [{"p": r["p"] - np.float32(0.11), "y": r["y"]} for r in refs])
    assert own["p"]["quiet_error"] == pytest.approx(0.314, abs=1e-3) and not fidelity_met(own, INT8)
    close = compare_outputs(refs, [{"p": r["p"] + np.float32(0.08), "y": r["y"]} for r in refs])
    far = compare_outputs(refs, [{"p": r["p"] + np.float32(0.14), "y": r["y"]} for r in refs])
    assert not fidelity_met(close, INT8) and fidelity_met(close, INT8, floor=own)
    assert not fidelity_met(far, INT8, floor=own)
    # y: the runtime is exact there, so its cosine budget is the budget's own
    bent = compare_outputs(refs, [{"p": r["p"], "y": r["y"][:, ::-1]} for r in refs])
    assert not fidelity_met(bent, INT8, floor=own)
    summary = summarize(close, INT8, 1.0, None, None, Budgets(), floor=own)
    (quiet,) = [c for c in summary.to_json() if c["budget"] == "quiet_error[p]"]
    assert summary.ok and quiet["limit"] == pytest.approx(0.314, abs=1e-3) and quiet["budget_limit"] == pytest.approx(0.2)
    assert "widened from 0.2" in next(c for c in summary.checks if c.name == "quiet_error[p]").describe()


def test_a_part_of_the_samples_is_judged_as_the_whole_set_would_judge_it():
    """The int8 search stops a candidate on its hardest samples: the empty map, compared on
    its own, looks informative (its noise is its whole range) and fails cosine; on the
    whole set's scales it is the uninformative sample it is, and passes."""
    rng = np.random.default_rng(2)
    refs = [{"p": _maps(rng, True)}, {"p": _maps(rng, False)}]
    gots = [{"p": r["p"] + rng.standard_normal(r["p"].shape).astype(np.float32) * 1e-7} for r in refs]
    alone = compare_outputs(refs[1:], gots[1:])
    assert decided_failures(alone, FP32) == {"p"}
    within = compare_outputs(refs[1:], gots[1:], output_scales(refs))
    assert within["p"]["uninformative_samples"] == 1 and not decided_failures(within, FP32)


def test_a_worst_case_miss_is_decided_on_a_part_and_a_mean_is_not():
    """Cosine is the worst sample's: one bad sample fails the set, whatever the others.
    Top-1 agreement is a mean over samples: a part cannot decide it."""
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((1, 10)).astype(np.float32)
    bad = {"y": -ref}  # cosine -1
    assert decided_failures(compare_outputs([{"y": ref}], [bad]), Fidelity(min_cosine=0.98)) == {"y"}
    scores = np.tile(np.eye(10, dtype=np.float32)[:1], (8, 1))  # argmax 0 in each of 8 rows
    flipped = scores.copy()
    flipped[:3] = np.roll(flipped[:3], 1, axis=1) * 0.5 + scores[:3] * 0.49  # 3 of 8 rows change their top-1
    metrics = compare_outputs([{"s": scores}], [{"s": flipped}])
    budget = Fidelity(min_cosine=0.5, min_top1_agreement=0.9)
    assert metrics["s"]["top1_agreement"] == pytest.approx(5 / 8)
    assert not fidelity_met(metrics, budget) and not decided_failures(metrics, budget)


class _Clock:
    """A fake ``time.perf_counter``: each timed run advances it by the next duration given."""

    def __init__(self, durations):
        self.now, self.durations = 0.0, iter(durations)

    def __call__(self) -> float:
        return self.now

    def run(self) -> None:
        self.now += next(self.durations)


def test_timing_stops_once_the_median_is_known(monkeypatch):
    """Steady runs stop after ``min_seconds``, not at ``max_seconds``: timing a 9 ms model
    for the whole budget made latency a sixth of an int8 build. Noisy runs go on to the cap."""
    import itertools

    import deploycomp.validate as validate

    steady = _Clock(itertools.cycle([0.010, 0.0101, 0.0099]))
    monkeypatch.setattr(validate.time, "perf_counter", steady)
    timed = validate.measure_latency(steady.run, warmup=0, min_runs=10, max_seconds=1.5, min_seconds=0.3)
    assert 30 <= timed["runs"] <= 31 and timed["median_ms"] == pytest.approx(10.0)  # 0.3 s of 10 ms runs

    noisy = _Clock(itertools.cycle([0.005, 0.015]))  # the IQR is the median: never settles to 2%
    monkeypatch.setattr(validate.time, "perf_counter", noisy)
    assert 150 <= validate.measure_latency(noisy.run, warmup=0, max_seconds=1.5)["runs"] <= 151

    slow = _Clock(itertools.repeat(0.2))  # a 0.2 s model still gets its min_runs
    monkeypatch.setattr(validate.time, "perf_counter", slow)
    assert validate.measure_latency(slow.run, warmup=0, min_runs=10, max_seconds=1.5)["runs"] == 10

    # one of 1.6 s (LORE in ONNX Runtime): stops once 3 runs pass twice max_seconds
    slower = _Clock(itertools.repeat(1.6))
    monkeypatch.setattr(validate.time, "perf_counter", slower)
    assert validate.measure_latency(slower.run, warmup=0, min_runs=10, max_seconds=1.5)["runs"] == 3

    # one of 11 s a run (OpenVINO running an int8 model at f16): 3 runs, not 10 plus 3 warm-ups
    crawling = _Clock(itertools.repeat(11.0))
    monkeypatch.setattr(validate.time, "perf_counter", crawling)
    assert validate.measure_latency(crawling.run, warmup=3, min_runs=10, max_seconds=1.5)["runs"] == 3
    assert crawling.now == 4 * 11.0  # one warm-up


def test_runs_a_build_made_anyway_time_its_latency_where_measuring_would_stop_at_as_many(monkeypatch):
    """The reference and the bundle run every validation input; where those runs (the first
    at a shape a warm-up) are what :func:`measure_latency` would stop at, they are the
    latency; too few or too short, they are not (it is timed again)."""
    import itertools

    import deploycomp.validate as validate

    x, longer = {"x": np.zeros((1, 3))}, {"x": np.zeros((1, 5))}
    slow = _Clock(itertools.chain([5.0], itertools.repeat(1.6)))  # a 5 s first run, then LORE's 1.6 s
    monkeypatch.setattr(validate.time, "perf_counter", slow)
    times = validate.RunTimes()
    assert times.run(lambda feeds: slow.run() or "out", x) == "out"
    for _ in range(2):
        times.run(lambda feeds: slow.run(), x)
    assert times.latency(x, max_seconds=1.5) is None  # 2 warm runs: 3.2 s, but fewer than 3
    times.run(lambda feeds: slow.run(), x)
    timed = times.latency(x, max_seconds=1.5)
    assert timed["runs"] == 3 and timed["median_ms"] == pytest.approx(1600.0)  # the warm-up left out
    assert timed["timed"] == "its runs on the build's inputs"
    assert times.latency(longer, max_seconds=1.5) is None  # no run at that shape

    quick = _Clock(itertools.repeat(0.001))  # 7 runs of 1 ms: measure_latency takes 10 and 0.3 s
    monkeypatch.setattr(validate.time, "perf_counter", quick)
    times = validate.RunTimes()
    for _ in range(8):
        times.run(lambda feeds: quick.run(), x)
    assert times.latency(x, max_seconds=1.5) is None


def test_runs_a_build_made_anyway_count_toward_the_latency_timed_after_them(monkeypatch):
    """Too few to time the latency alone, the warm runs a build made on its validation
    inputs are the timing's first runs: only the ones they lack are made (DNSMOS, 160 ms a
    run, had timed 10 more after 5 warm runs, for the bundle and again for ONNX Runtime)."""
    import itertools

    import deploycomp.validate as validate

    x = {"x": np.zeros((1, 3))}
    slow = _Clock(itertools.repeat(0.16))
    monkeypatch.setattr(validate.time, "perf_counter", slow)
    times = validate.RunTimes()
    for _ in range(6):  # a warm-up and 5 warm runs: fewer than measure_latency's 10
        times.run(lambda feeds: slow.run(), x)
    assert times.latency(x, max_seconds=1.5) is None
    calls = []
    timed = times.latency_or_measured(lambda feeds: calls.append(1) or slow.run(), x, max_seconds=1.5)
    assert timed["runs"] == 10 and timed["median_ms"] == pytest.approx(160.0)
    assert len(calls) == 1 + 5  # one warm-up, and the 5 runs the 5 made lacked


def test_a_latency_timed_beside_other_work_is_said_to_be_unsteady():
    """A p90 several times the median: something else ran while it was timed, and the speedup
    read from it says little (a probe's bundle read 22x slower than ONNX Runtime so)."""
    from deploycomp.validate import unsteady

    steady = {"median_ms": 10.0, "p90_ms": 11.0}
    assert unsteady(steady, None) is None
    note = unsteady(steady, {"median_ms": 10.2, "p90_ms": 40.9})
    assert note.startswith("timing unsteady (a p90 4.0x its median)")


def test_a_latency_timed_while_other_processes_compute_says_so():
    """Two processes spinning on this process's CPUs while it times: the record says what
    share of the CPUs they took, and the note says the machine was busy, however steady the
    timing (a fleet's host cell read 53 ms beside another build, 16-20 ms alone)."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from deploycomp.cpu_load import BUSY_ELSEWHERE
    from deploycomp.validate import measure_latency, unsteady

    if not Path("/proc/stat").exists():
        pytest.skip("reads Linux's /proc/stat")
    spin = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in os.sched_getaffinity(0)]
    try:
        time.sleep(0.3)
        record = measure_latency(lambda: time.sleep(0.002), min_seconds=0.5)
    finally:
        for p in spin:
            p.kill()
            p.wait()
    assert record["busy_elsewhere"] >= BUSY_ELSEWHERE
    steady = {"median_ms": 2.0, "p90_ms": 2.1, "busy_elsewhere": record["busy_elsewhere"]}
    assert unsteady(steady).startswith(f"timed while other processes used {record['busy_elsewhere']:.0%} of this")
    assert unsteady({**steady, "busy_elsewhere": 0.05}) is None


def test_a_span_too_short_to_read_the_machines_load_reads_nothing():
    """A tiny model's validation runs (0.1 ms each) spanned a few ms, where the kernel's
    10 ms ticks went to whoever they sampled: an idle machine read "100% busy". Under
    :data:`deploycomp.cpu_load.MIN_WINDOW_SECONDS` nothing is read."""
    import numpy as np

    from deploycomp.cpu_load import OthersCpu
    from deploycomp.validate import RunTimes

    quick = OthersCpu()
    quick.start()
    quick.stop()
    assert quick.share() is None
    times = RunTimes()
    feeds = {"x": np.zeros(4, np.float32)}
    for _ in range(20):
        times.run(lambda f: f["x"] + 1, feeds)
    assert times.others[times._shapes(feeds)].share() is None


def test_integer_outputs_are_judged_by_the_share_of_ids_equal():
    """Character 5 read as 6 is a wrong read, whatever cosine says of the id vectors (0.99);
    ids are judged as the share equal over all samples (a mean: not decided on a part)."""
    ref = np.arange(1, 21, dtype=np.int64).reshape(1, 20)  # 20 ids, none of them padding
    off = ref.copy()
    off[0, 0] = 6  # one id of 20 flipped
    refs, gots = [{"ids": ref}] * 4, [{"ids": off}] + [{"ids": ref}] * 3
    m = compare_outputs(refs, gots)["ids"]
    assert m["agreement"] == m["cosine"] == pytest.approx(79 / 80) and "padding_value" not in m
    ids_cosine = float(ref.ravel() @ off.ravel() / np.linalg.norm(ref) / np.linalg.norm(off))
    assert ids_cosine > 0.99  # what cosine of the ids would have passed
    int8 = Fidelity(min_cosine=0.98)
    assert fidelity_met({"ids": m}, int8)
    assert not fidelity_met({"ids": compare_outputs(refs[:1], gots[:1])["ids"]}, int8)  # 0.95 on that sample alone
    assert [c.name for c in fidelity_failures({"ids": compare_outputs(refs[:1], gots[:1])["ids"]}, int8)] == ["agreement[ids]"]
    assert decided_failures(compare_outputs(refs[:1], gots[:1]), int8) == frozenset()  # a mean waits for every sample


def test_a_ctc_paths_blanks_are_not_counted_as_agreeing_characters():
    """A recognizer's 20 CTC positions a line, 5 characters among blanks (0): one character
    wrong in 4 lines is 1 of 20 characters, not 1 of 80 positions (0.9875 had met the int8
    budget); a position where the bundle reads a character the reference left blank counts."""
    ref = np.zeros((1, 20), np.int64)
    ref[0, ::4] = 5
    off = ref.copy()
    off[0, 0] = 6
    m = compare_outputs([{"ids": ref}] * 4, [{"ids": off}] + [{"ids": ref}] * 3)["ids"]
    assert m["agreement"] == pytest.approx(19 / 20) and m["padding_value"] == 0 and m["agreement_positions"] == 20
    assert not fidelity_met({"ids": m}, Fidelity(min_cosine=0.98))
    extra = ref.copy()
    extra[0, 1] = 7  # a character read where the reference has a blank
    m = compare_outputs([{"ids": ref}], [{"ids": extra}])["ids"]
    assert m["agreement"] == pytest.approx(5 / 6) and m["agreement_positions"] == 6
    labels = np.zeros(64, np.int64)  # a classifier's labels, one per row: a common class is no padding
    labels[:3] = 1
    assert "padding_value" not in compare_outputs([{"y": labels}], [{"y": labels}])["y"]


def test_per_sample_cosines_are_each_samples_own_judgement():
    """What the int8 search orders samples by: each sample's cosine as that sample alone is
    judged on the same scale, None where it is uninformative, -1 where it has NaN/Inf, the
    share equal for ids."""
    rng = np.random.default_rng(0)
    refs = [{"y": rng.standard_normal((2, 50)).astype(np.float32), "ids": np.arange(10)} for _ in range(4)]
    refs[1]["y"] = np.full((2, 50), 1e-9, np.float32)  # quiet: uninformative on the set's scale
    gots = [{"y": r["y"] + rng.normal(0, 0.1 * (i + 1), r["y"].shape).astype(np.float32), "ids": r["ids"].copy()}
            for i, r in enumerate(refs)]
    gots[2]["y"][0, 3] = np.nan
    gots[3]["ids"][:3] = 0
    scales = output_scales(refs)
    per_sample: dict = {}
    together = compare_outputs(refs, gots, scales, per_sample)
    alone = [compare_outputs([r], [g], scales) for r, g in zip(refs, gots)]
    assert per_sample["y"][1] is None and per_sample["y"][2] == -1.0
    for i in (0, 3):
        assert per_sample["y"][i] == pytest.approx(alone[i]["y"]["cosine"], abs=1e-12)
    assert per_sample["ids"] == [1.0, 1.0, 1.0, 0.8]  # ids 0..9 with the first three set to 0: 1 and 2 differ
    assert together["y"]["cosine"] == min(c for c in per_sample["y"] if c is not None and c >= 0)


def test_outputs_judged_where_a_score_map_passes_a_threshold():
    """A regression map read only where the heatmap finds something: noise elsewhere does
    not count, the region does, and a sample with nothing found has nothing to judge."""
    from deploycomp.validate import check_where, parse_where

    rng = np.random.default_rng(0)
    heat = np.zeros((1, 1, 8, 8), np.float32)
    heat[0, 0, 2:4, 2:4] = 0.9
    offsets = rng.standard_normal((1, 2, 8, 8)).astype(np.float32) * 0.01
    offsets[:, :, 2:4, 2:4] = 0.5
    noisy = offsets + rng.standard_normal(offsets.shape).astype(np.float32) * 0.2 * (heat <= 0.2)
    where = parse_where(["off:heat>0.2"])
    assert where == {"off": ("heat", 0.2)} == parse_where(["off:heat>0.2", "off:heat>0.2"])
    with pytest.raises(ValueError, match=r"--judge-where off: given two rules \(heat>0.2 and heat>0.5\); give one"):
        parse_where(["off:heat>0.2", "off,size:heat>0.5"])  # (the last was taken)
    ref, got = {"heat": heat, "off": offsets}, {"heat": heat, "off": noisy}
    assert compare_outputs([ref], [got])["off"]["cosine"] < 0.9  # the background noise judged
    judged = compare_outputs([ref], [got], where=where)["off"]
    assert judged["cosine"] == pytest.approx(1.0) and judged["judged_where"] == "heat > 0.2"
    empty = {"heat": np.zeros_like(heat), "off": offsets}
    assert fidelity_met(compare_outputs([empty], [{"heat": empty["heat"], "off": noisy}], where=where), Fidelity(min_cosine=0.99))
    check_where(where, {"heat": [1, 1, 8, 8], "off": [1, 2, 8, 8]})
    with pytest.raises(ValueError, match="does not broadcast"):
        check_where(parse_where(["heat:off>0"]), {"heat": [1, 1, 7, 8], "off": [1, 2, 8, 8]})
    # a 2-class heatmap over 8 regression channels: where any class passes
    check_where(parse_where(["sizes:heat2>0.5"]), {"heat2": [1, 2, 8, 8], "sizes": [1, 8, 8, 8]})
    two = np.zeros((1, 2, 8, 8), np.float32)
    two[0, 1, 2:4, 2:4] = 0.9
    sizes = np.ones((1, 8, 8, 8), np.float32)
    noisy_sizes = sizes + 0.5 * (np.arange(64).reshape(1, 1, 8, 8) % 2 == 0) * (two.max(1, keepdims=True) <= 0.5)
    judged = compare_outputs([{"heat2": two, "sizes": sizes}], [{"heat2": two, "sizes": noisy_sizes}],
                             where=parse_where(["sizes:heat2>0.5"]))["sizes"]
    assert judged["cosine"] == pytest.approx(1.0) and judged["max_abs_error"] == 0.0
    with pytest.raises(ValueError, match="no output 'nope'"):
        check_where(parse_where(["nope:heat>0"]), {"heat": [1, 1, 8, 8], "off": [1, 2, 8, 8]})
    with pytest.raises(ValueError, match="OUTPUT"):
        parse_where(["off>0.2"])


def test_a_detection_list_judged_on_the_rows_whose_score_column_passes():
    """An NMS-free detector's top-300 list ([1, 300, 6]: box, score, class) holds a few
    detections, then boxes of score ~0 in whatever order a runtime's TopK leaves ties:
    over the whole list the cosine judges that order; ``output0:output0[4]>0.25`` judges
    the detections, and a detection that moves still counts."""
    from deploycomp.validate import check_where, parse_where

    rng = np.random.default_rng(1)
    ref = np.zeros((1, 300, 6), np.float32)
    ref[0, :, :4] = rng.uniform(0, 640, (300, 4))
    ref[0, :3, 4] = [0.96, 0.8, 0.5]
    ref[0, 3:, 4] = 1e-7
    got = ref.copy()
    got[0, 3:] = ref[0, 3:][rng.permutation(297)]  # the ties in another order
    where = parse_where(["output0:output0[4]>0.25"])
    assert where == {"output0": ("output0[4]", 0.25)}
    check_where(where, {"output0": [1, 300, 6]})
    assert compare_outputs([{"output0": ref}], [{"output0": got}])["output0"]["cosine"] < 0.9
    judged = compare_outputs([{"output0": ref}], [{"output0": got}], where=where)["output0"]
    assert judged["cosine"] == pytest.approx(1.0) and judged["judged_where"] == "output0[4] > 0.25"
    moved = got.copy()
    moved[0, 1, :4] += 50.0  # the second detection's box moves
    assert compare_outputs([{"output0": ref}], [{"output0": moved}], where=where)["output0"]["cosine"] < 0.999
    with pytest.raises(ValueError, match="no entry 6 on its last axis"):
        check_where(parse_where(["output0:output0[6]>0.25"]), {"output0": [1, 300, 6]})


def test_a_detection_only_the_bundle_makes_is_judged_and_said():
    """Rows are judged where the reference's score passes *or* the bundle's: an int8
    detector that raises a row from 0.18 to 0.43 makes a detection the reference does not
    (a probe's ISBN detector, twice in 6 pages), and a rule reading the reference's scores
    alone never looked there. The summary says where the two decide differently."""
    from deploycomp.validate import describe_where, parse_where

    rng = np.random.default_rng(2)
    ref = np.zeros((1, 300, 6), np.float32)
    ref[0, :, :4] = rng.uniform(0, 640, (300, 4))
    ref[0, :2, 4] = [0.9, 0.18]
    got = ref.copy()
    got[0, 1, :4] = rng.uniform(0, 640, 4)  # another box, and now a detection
    got[0, 1, 4] = 0.43
    where = parse_where(["output0:output0[4]>0.25"])
    judged = compare_outputs([{"output0": ref}], [{"output0": got}], where=where)["output0"]
    assert judged["cosine"] < 0.99
    assert judged["where_passing"] == {"reference": 1, "bundle": 2, "both": 1}
    assert describe_where(judged) == "judged where output0[4] > 0.25 (1 passes only in the bundle)"
    same = compare_outputs([{"output0": ref}], [{"output0": ref}], where=where)["output0"]
    assert describe_where(same) == "judged where output0[4] > 0.25" and same["cosine"] == pytest.approx(1.0)
    # a bundle whose list has another length is a shape mismatch, not a crash of the mask
    short = compare_outputs([{"output0": ref}], [{"output0": got[:, :200]}], where=where)["output0"]
    assert short["shape_mismatch"]["samples"] == 1


def test_a_ranked_list_with_a_tail_of_ties_is_recognised_for_the_hint():
    """What a missed budget's hint recognises as a ranked list: a score column in [0, 1]
    that never rises and is ~0 in most rows; not a feature map, not unsorted scores."""
    from deploycomp.validate import ranked_list_column

    rng = np.random.default_rng(2)
    lists = []
    for _ in range(3):
        a = rng.uniform(0, 640, (1, 300, 6)).astype(np.float32)
        a[0, :, 4] = np.concatenate([np.sort(rng.uniform(0.3, 1.0, 5))[::-1], np.full(295, 1e-7)])
        a[0, :, 5] = rng.integers(0, 3, 300)
        lists.append(a)
    assert ranked_list_column(lists) == 4
    unsorted = [a.copy() for a in lists]
    unsorted[1][0, :, 4] = rng.permutation(unsorted[1][0, :, 4])
    assert ranked_list_column(unsorted) is None
    assert ranked_list_column([rng.random((1, 8, 32, 32), dtype=np.float32)]) is None  # a feature map
    assert ranked_list_column([lists[0][:, :10]]) is None  # too short to be a top-k list


def _levels_model(path, last: str):
    """x (8, 64) -> Mul by a 64-value scale -> Clip to 0..255 -> ``last`` -> Transpose:
    a uint8 spectrogram-like output (``last`` Cast from float) or a class map (``last``
    an ArgMax over a class axis, then Cast to uint8)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    scale = np.linspace(0.9, 1.1, 64, dtype=np.float32) * np.float32(1 / 3)  # not float16 values
    nodes = [helper.make_node("Mul", ["x", "scale"], ["scaled"]),
             helper.make_node("Clip", ["scaled", "lo", "hi"], ["clipped"])]
    if last == "cast":
        nodes.append(helper.make_node("Cast", ["clipped"], ["ints"], to=TensorProto.UINT8))
        shape = [64, 8]
    else:
        nodes += [helper.make_node("ArgMax", ["clipped"], ["ids"], axis=1, keepdims=1),
                  helper.make_node("Cast", ["ids"], ["ints"], to=TensorProto.UINT8)]
        shape = [1, 8]
    nodes.append(helper.make_node("Transpose", ["ints"], ["y"], perm=[1, 0]))
    graph = helper.make_graph(nodes, "levels", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, shape)],
                              [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(np.float32(0), "lo"),
                               numpy_helper.from_array(np.float32(255), "hi")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_integer_outputs_cast_from_floats_are_levels_and_ids_are_not(tmp_path):
    from deploycomp.analysis import level_outputs
    from deploycomp.ir import load_model
    from deploycomp.passes import build_pipeline, run_passes

    def optimized(path):  # typed, as the build sees it
        return run_passes(load_model(path).model, build_pipeline("default", {"x": (8, 64)}))[0]

    assert level_outputs(optimized(_levels_model(tmp_path / "cast.onnx", "cast"))) == {"y"}
    assert level_outputs(optimized(_levels_model(tmp_path / "ids.onnx", "argmax"))) == set()


def test_levels_one_off_are_noise_and_ids_one_off_are_wrong():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (64, 8)).astype(np.uint8)
    got = ref.copy()
    flip = rng.random(ref.shape) < 0.1
    got[flip] = np.clip(ref[flip].astype(int) + 1, 0, 255).astype(np.uint8)
    as_ids = compare_outputs([{"y": ref}], [{"y": got}])["y"]
    as_levels = compare_outputs([{"y": ref}], [{"y": got}], levels={"y"})["y"]
    assert as_ids["agreement"] < 0.95
    assert as_levels["cosine"] > 0.9999 and as_levels["judged_as"] == "levels" and "agreement" not in as_levels


def test_an_fp16_build_of_a_levels_output_is_judged_as_numbers(tmp_path):
    """fp16 weights move a few values across a rounding edge: an 8-bit output one level
    off in places, which its cosine (not the share of equal values) judges."""
    import deploycomp

    path = _levels_model(tmp_path / "cast.onnx", "cast")
    x = np.random.default_rng(1).uniform(0, 700, (6, 8, 64)).astype(np.float32)
    np.savez(tmp_path / "val.npz", x=x)
    runner = deploycomp.build(path, tmp_path / "out", target="android-arm64", precision="fp16",
                              validation_data=tmp_path / "val.npz")
    assert runner.manifest["io"]["outputs"][0]["judged_as"] == "levels"
    assert runner.manifest["validation"]["ok"]
    got, want = runner.run({"x": x[0]})["y"], (np.clip(x[0] * np.linspace(0.9, 1.1, 64, dtype=np.float32)
                                                        * np.float32(1 / 3), 0, 255)).astype(np.uint8).T
    assert 0 < np.count_nonzero(got != want) and np.abs(got.astype(int) - want).max() <= 1


def test_shortfall_compares_misses_that_cosine_cannot():
    """A single number's cosine is 1 whatever its error: two misses of a regressor's one
    output differ only in the bound they break, which the shortfall (the worst criterion's
    error as a multiple of its allowance) orders; the int8 search's stricter rounds and
    its choice among missed candidates go by it."""
    from deploycomp.validate import budget_shortfall

    budget = Fidelity(min_cosine=0.98)  # the noise bound: 0.2 of the output's scale
    single = {"cosine": 1.0, "samples": 6, "uninformative_samples": 6, "single_value": True}
    worse, better = ({"y": single | {"quiet_error": e, "scale": 1.0}} for e in (0.3, 0.21))
    assert budget_shortfall(worse, budget) > budget_shortfall(better, budget) > 1.0
    assert budget_shortfall({"y": single | {"quiet_error": 0.1, "scale": 1.0}}, budget) <= 1.0
    assert budget_shortfall({"y": {"cosine": 0.95, "samples": 6}}, budget) == pytest.approx(2.5)
    assert budget_shortfall({"y": {"cosine": 0.99, "samples": 6, "nonfinite": 3}}, budget) == float("inf")


def test_an_output_of_another_length_is_a_failure_of_its_own_not_an_error():
    """A TTS model's audio length follows its predicted durations; a runtime that rounds
    one duration the other way gives 97800 samples where ONNX Runtime gives 98400 (a
    probe's Kokoro on host): that sample fails as such, named with both shapes, and the
    other outputs and samples are measured as usual (it had been an internal error)."""
    rng = np.random.default_rng(0)
    refs = [{"audio": rng.standard_normal(98400).astype(np.float32), "durations": np.array([3, 5], np.int64)},
            {"audio": rng.standard_normal(1200).astype(np.float32), "durations": np.array([1, 2], np.int64)}]
    gots = [{"audio": refs[0]["audio"][:97800], "durations": np.array([3, 4], np.int64)},
            {"audio": refs[1]["audio"].copy(), "durations": np.array([1, 2], np.int64)}]
    per_sample: dict = {}
    metrics = compare_outputs(refs, gots, per_sample=per_sample)
    assert metrics["audio"]["shape_mismatch"] == {"samples": 1, "bundle": [97800], "reference": [98400]}
    assert per_sample["audio"][1] == pytest.approx(1.0) and per_sample["audio"][0] < 0.5
    assert "shape_mismatch" not in metrics["durations"] and metrics["durations"]["agreement"] == 0.75
    failed = fidelity_failures(metrics, INT8)
    assert [c.name for c in failed][:2] == ["shape[audio]", "cosine[audio]"]
    assert "the bundle gives [97800] where ONNX Runtime fp32 gives [98400]" in failed[0].describe()


def test_an_output_that_is_its_input_passed_through_is_also_judged_on_its_own_part():
    """A watermark encoder returns its frame plus a faint mark: the output's cosine
    measures the frame (0.9995 for an int8 bundle whose mark was at 0.88). Such an output
    is found by its closeness to an input of its shape, and its own part compared."""
    from deploycomp.validate import pass_through

    rng = np.random.default_rng(0)
    samples, refs, gots = [], [], []
    for _ in range(3):
        frame = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
        mark = 0.01 * rng.standard_normal(frame.shape).astype(np.float32)
        noise = 0.01 * rng.standard_normal(frame.shape).astype(np.float32)  # as large as the mark
        samples.append({"frame": frame, "bits": rng.random((1, 3, 16, 16)).astype(np.float32)})
        refs.append({"marked": frame + mark, "logits": rng.standard_normal((1, 10)).astype(np.float32)})
        gots.append({"marked": frame + mark + noise, "logits": refs[-1]["logits"]})
    metrics = compare_outputs(refs, gots)
    assert metrics["marked"]["cosine"] > 0.999  # the whole output looks fine
    found = pass_through(samples, refs, gots)
    assert set(found) == {"marked"} and found["marked"]["input"] == "frame"
    assert found["marked"]["input_cosine"] > 0.99 and 0.5 < found["marked"]["residual_cosine"] < 0.8
    exact = pass_through(samples, refs, refs)
    assert exact["marked"]["residual_cosine"] == pytest.approx(1.0)


def test_a_pass_through_whose_own_part_is_rounding_is_not_reported():
    """A denoiser given a clean signal returns it unchanged up to float rounding: its own
    part is noise, and a cosine of it would say nothing."""
    from deploycomp.validate import pass_through

    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 256)).astype(np.float32)
    ref = x + 1e-6 * rng.standard_normal(x.shape).astype(np.float32)
    got = x + 1e-6 * rng.standard_normal(x.shape).astype(np.float32)
    assert pass_through([{"noisy": x}], [{"clean": ref}], [{"clean": got}]) == {}


def test_the_budget_verdict_is_the_searches_verdict_not_the_rounded_figure():
    """A cosine of 0.9999897 is 0.99999 to six places; against a budget of 0.99999 it
    misses, as the int8 search's own check said, while the summary had passed it."""
    rng = np.random.default_rng(4)
    y = rng.standard_normal(20000)
    noise = rng.standard_normal(20000)
    got = y + noise * np.sqrt(2 * (1 - 0.9999897)) * np.linalg.norm(y) / np.linalg.norm(noise)
    metrics = compare_outputs([{"y": y.astype(np.float32)}], [{"y": got.astype(np.float32)}])
    assert round(metrics["y"]["cosine"], 6) == 0.99999 and metrics["y"]["cosine"] < 0.99999
    budget = Fidelity(min_cosine=0.99999)
    assert not fidelity_met(metrics, budget)
    assert not summarize(metrics, budget, 1.0, None, None, Budgets()).ok


def test_channels_are_axis_1_or_the_last_when_fewer_than_every_other_axis():
    """Channels hold 2 to 16 entries and are the smallest axis but the batch: a 16-wide
    map's columns, a detector's 84 rows, a sequence's classes are none."""
    from deploycomp.validate import channel_axis

    assert channel_axis((1, 2, 16, 16)) == 1 and channel_axis((1, 64, 64, 4)) == 3
    assert channel_axis((1, 3, 100)) == 1 and channel_axis((1, 100, 2)) == 2
    assert channel_axis((1, 16, 16, 16)) is None  # (no axis is fewer than the others)
    assert channel_axis((1, 84, 8400)) is None and channel_axis((1, 40, 6625)) is None
    assert channel_axis((1, 1, 640, 640)) is None and channel_axis((1, 4)) is None


def test_a_channel_that_misses_inside_an_output_that_meets_the_budget_is_found():
    """A fingerprint model's angle and quality maps share one output; int8 took its small
    quality channel to cosine 0.81 while the output as a whole was judged 0.996. Judged
    whole the output passes; its weak channel is named; judged by channel it misses."""
    from deploycomp.validate import weak_channels

    rng = np.random.default_rng(0)
    refs = [{"y": np.stack([rng.normal(0, 10, (8, 8)), rng.normal(0, 0.1, (8, 8))], -1)[None].astype(np.float32)}
            for _ in range(4)]
    gots = [{"y": r["y"] + np.stack([np.zeros((8, 8)), rng.normal(0, 0.08, (8, 8))], -1)[None].astype(np.float32)}
            for r in refs]
    whole = compare_outputs(refs, gots)
    assert fidelity_met(whole, INT8)
    assert [(c["axis"], c["channel"]) for c in weak_channels(refs, gots, whole, INT8)["y"]] == [(3, 1)]
    apart = compare_outputs(refs, gots, channels={"y": 3})
    assert set(apart) == {"y", "y[channel 0 of axis 3]", "y[channel 1 of axis 3]"}
    assert apart["y[channel 0 of axis 3]"]["cosine"] > 0.999999 and apart["y[channel 1 of axis 3]"]["cosine"] < 0.9
    assert not fidelity_met(apart, INT8)
    # judged on a part of the samples as on the whole set: the channel has its own scale
    assert "y[channel 1 of axis 3]" in output_scales(refs, {"y": 3})
    # a channel that is ~0 is held to the error bound, not cosine: no weak channel
    quiet = [{"y": np.stack([r["y"][0, ..., 0], np.full((8, 8), 1e-9)], -1)[None]} for r in refs]
    noisy = [{"y": q["y"] + np.stack([np.zeros((8, 8)), rng.normal(0, 1e-9, (8, 8))], -1)[None]} for q in quiet]
    assert weak_channels(quiet, noisy, compare_outputs(quiet, noisy), INT8) == {}


def test_peak_memory_counts_a_load_that_reuses_memory_the_process_freed():
    """An int8 build measured 24 MB for a TFLite bundle that takes 189 MB in a fresh process:
    its search had loaded and freed candidates, and the bundle's load reused those pages
    (freed heap stays resident). The freed memory is handed back first."""
    from deploycomp.validate import peak_rss_growth

    def small_arrays():  # (each under glibc's mmap threshold: from the heap)
        return [np.ones(1000) for _ in range(20000)]  # 160 MB

    garbage = small_arrays()
    del garbage
    kept, grown = peak_rss_growth(small_arrays)
    assert grown is not None and grown > 100


def test_a_speedup_keeps_four_figures_and_is_said_from_them():
    """A bundle 968x slower than ONNX Runtime (8.5192 against 0.0088 ms) was said "1000.00x
    slower": its speedup was kept to three decimals (0.001), and over 2000x slower it
    would have been 0.0 and a division by zero."""
    from deploycomp.validate import describe_speedup, speedup_of

    assert speedup_of(0.0088, 8.5192) == 0.001033
    assert describe_speedup(speedup_of(0.0088, 8.5192)) == "968.05x slower than ONNX Runtime fp32 on this machine"
    assert speedup_of(0.001, 5.0) == 0.0002 and describe_speedup(speedup_of(0.001, 5.0)).startswith("5000.00x slower")
    assert describe_speedup(0.0) == "over 2000x slower than ONNX Runtime fp32 on this machine"
    assert describe_speedup(speedup_of(12.0, 4.5)) == "2.67x faster than ONNX Runtime fp32 on this machine"


def test_an_offset_dominated_output_is_judged_about_its_mean():
    """A saliency map between 0.3 and 0.7 (a real photo's luminance) whose bundle keeps half
    its contrast and a fifth of it scrambled: the plain cosine passes int8's 0.98 on the
    offset; about the reference's mean it is far off, and that is what ``cosine`` says
    (with ``centered_cosine`` and the samples it applied to). A zero-mean output and a
    2-class softmax are judged as before."""
    from skimage import data

    photo = data.camera()[::4, ::4].astype(np.float32) / 255
    ref = (0.3 + 0.4 * photo)[None, None]
    rng = np.random.default_rng(0)
    washed = ref.mean() + 0.5 * (ref - ref.mean()) + 0.08 * rng.standard_normal(ref.shape).astype(np.float32)
    plain = _cosine_of(ref, washed)
    assert plain > 0.98
    m = compare_outputs([{"map": ref}], [{"map": washed.astype(np.float32)}])["map"]
    assert m["cosine"] == m["centered_cosine"] < 0.9 and m["offset_dominated_samples"] == 1
    assert not fidelity_met({"map": m}, Fidelity(min_cosine=0.98))
    # a value both sides leave NaN (a masked pixel) agrees, and the rest is judged the same
    masked_ref, masked_got = ref.copy(), washed.astype(np.float32)
    masked_ref[0, 0, 0, 0] = masked_got[0, 0, 0, 0] = np.nan
    masked = compare_outputs([{"map": masked_ref}], [{"map": masked_got}])["map"]
    assert "nonfinite" not in masked and masked["cosine"] == pytest.approx(m["cosine"], abs=0.01)
    assert masked["offset_dominated_samples"] == 1
    centred = ref - ref.mean()
    m = compare_outputs([{"map": centred}], [{"map": centred * 1.01}])["map"]
    assert "centered_cosine" not in m and m["cosine"] > 0.9999
    two = np.array([[0.52, 0.48]], np.float32)
    assert "centered_cosine" not in compare_outputs([{"p": two}], [{"p": two[:, ::-1].copy()}])["p"]


def test_a_few_scores_of_one_kind_are_judged_about_their_mean():
    """A speech-quality model's SIG/BAK/OVR scores (near 4 on a 1-5 scale), as fp32 and an
    int8 bundle gave them on one real clip: raw cosine 0.9969 passed int8's 0.98 with BAK
    0.69 off; about the mean it misses. A 3-class softmax is judged raw (its mean is 1/3
    whatever the input), and a pair is too few to take about a mean."""
    ref = np.array([[4.131, 3.826, 3.608]], np.float32)
    got = np.array([[4.04, 3.14, 3.08]], np.float32)
    m = compare_outputs([{"mos": ref}], [{"mos": got}])["mos"]
    assert _cosine_of(ref, got) > 0.99 and m["offset_dominated_samples"] == 1 and m["cosine"] < 0.9
    assert not fidelity_met({"mos": m}, Fidelity(min_cosine=0.98))
    assert compare_outputs([{"mos": ref}], [{"mos": ref + np.float32(0.002)}])["mos"]["cosine"] > 0.999
    probs = np.array([[0.5, 0.3, 0.2]], np.float32)
    assert "centered_cosine" not in compare_outputs([{"p": probs}], [{"p": probs[:, ::-1].copy()}])["p"]


def _cosine_of(a, b) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def test_a_per_pixel_softmax_is_judged_about_each_channels_mean():
    """A nucleus segmenter's output: background and nucleus probabilities per pixel
    (``[1, H, W, 2]``, near 1 and near 0 but on the few nuclei: real coins here, 2% of the
    map). A bundle whose nuclei lost two pixels of their rims (IoU 0.73) keeps cosine
    0.994 raw and 0.988 about one mean; about each channel's own mean it is 0.85."""
    from scipy import ndimage
    from skimage import data, filters

    coins = data.coins().astype(np.float32)
    nuclei = np.zeros((384, 384), bool)
    nuclei[100:160, 100:180] = (coins > filters.threshold_otsu(coins))[20:80, 40:120]
    rims = ndimage.binary_erosion(nuclei, iterations=2)

    def softmax_map(fg):
        p = np.where(fg, 0.97, 0.01).astype(np.float32)
        return np.stack([1 - p, p], axis=-1)[None]

    ref, got = softmax_map(nuclei), softmax_map(rims)
    assert _cosine_of(ref, got) > 0.99  # the background channel's offset carries the raw cosine
    m = compare_outputs([{"p": ref}], [{"p": got}])["p"]
    assert m["offset_dominated_samples"] == 1 and m["cosine"] == m["centered_cosine"] < 0.9
    assert not fidelity_met({"p": m}, Fidelity(min_cosine=0.98))
    assert compare_outputs([{"p": ref}], [{"p": ref.copy()}])["p"]["cosine"] == pytest.approx(1.0)
    # a detector head's rows ([1, N, 2]: the same numbers as rows of entries) are no map: judged whole
    rows = ref.reshape(1, -1, 2)
    head = compare_outputs([{"p": rows}], [{"p": got.reshape(1, -1, 2)}])["p"]
    assert head["cosine"] > 0.98


def test_a_rule_names_outputs_whose_names_hold_its_separators():
    """A TensorFlow export's outputs are ``Identity:0``, ``Identity_1:0``: no judging rule
    could name them ("no output 'Identity_1:0:Identity'"), in a fleet spec neither."""
    from deploycomp.boxes import parse_boxes
    from deploycomp.validate import parse_where

    assert parse_where([r"Identity_1\:0:Identity\:0>0.3", r"a\,b,c:s>0.1"]) == {
        "Identity_1:0": ("Identity:0", 0.3), "a,b": ("s", 0.1), "c": ("s", 0.1)}
    rule = parse_boxes([r"Identity_1\:0=xyxy:Identity\:0>0.3"])["Identity_1:0"]
    assert (rule.scores, rule.threshold, rule.fmt) == ("Identity:0", 0.3, "xyxy")
