"""The int8 step of a build: calibrate on the user's data, then keep the fewest layers
float that meet the fidelity budget as the target's own runtime executes them
(:mod:`deploycomp.trials`), and try again stricter where the validation inputs miss what
the judged inputs met. A model that arrives int8 keeps its own encodings, conformed to the
target's (:func:`own_quantization`). The quantizer itself (observers, QDQ placement, the
float-layer search) is :mod:`deploycomp.quant`; this module ties it to a build's data,
budget and runtime, and words what it found for the build's summary.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import onnx_ir as ir

from deploycomp import datasets, trials as trial
from deploycomp.errors import UnsupportedError
from deploycomp.ir import io_types_kept
from deploycomp.fp16_ranges import MAX_RANGE_SAMPLES, fp32_tensors
from deploycomp.report import ranges_label
from deploycomp.targets import Fidelity, TargetProfile
from deploycomp.trials import SEARCH_MARGIN, backend_options, int8_io, worst_cosine
from deploycomp.validate import budget_shortfall, decided_failures, fidelity_failures, fidelity_met, with_user_limits

if TYPE_CHECKING:
    from deploycomp.backends.onnxruntime import ORTRunner
    from deploycomp.pipeline import BuildOptions, Prepared

__all__ = ["FAIL_FAST_SAMPLES", "STRICTER_ROUNDS", "coverage_hint", "float_layer_count", "int8_hint",
           "own_quantization", "search_int8", "stricter_margin"]

log = logging.getLogger(__name__)

APPLICATION_MEASURES = {"box_iou": "box IoU", "mask_iou": "mask IoU", "mask_regions": "mask regions",
                        "text_similarity": "text similarity"}
"""What a budget may judge beside cosine or in its place, as the application reads the
output (how each is said): a search trial records the worst of each it was judged by as
``min_<metric>`` (a CTC text's had read "min_cosine 0.9988, met: false")."""


FAIL_FAST_SAMPLES = 4
"""The int8 search runs a candidate on this many of the judged samples first (more if the
outputs' hardest samples so far are more), the hardest first, and stops there if an output
already misses by a worst-case criterion (:func:`deploycomp.validate.decided_failures`):
most candidates of a search miss, and they miss on the same few inputs. Each output's own
hardest sample is among them, so that the outputs found missing (which steer the search's
next float layers) are those the whole set would find, not only those hard on the worst
output's samples (the layout detector's 8 outputs: 4-7 samples first). Measured on the
layout detector on host: 20 float layers of 102, as without stopping early (22)."""

FEW_CALIBRATION_SAMPLES = 4
"""Fewer calibration samples than this are warned of: nothing is held out of them for the
layer ranking, and the ranges are those of a handful of inputs."""

FLOAT_FORM_SHARE = 0.25
"""For a model that arrives with ONNX Runtime's integer ops, the int8 search sets aside the
calibration samples on which the model's float form (every layer float: the closest any
mix can come) already spends more than this share of the budget's error, while at least
half remain: they leave the search, and a stricter one after it, no room to tell mixes
apart."""

STRICTER_ROUNDS = 6
"""At most this many stricter searches per build, each only while the one before brought
the validation inputs closer to the budget (PP-OCRv6 tiny rec on TensorRT: one round took
validation from 0.951 to 0.976 with 4 float layers, and stopped there). A character BERT
(g2p-id) on TensorRT needed four: 0.970, 0.974, 0.974, 0.976, then 0.9987 with 8 of 20
layers float; three had refused the build with layers still int8."""

STRICTER_SHARE = 0.9
"""A stricter search aims the judged inputs' error at this share of what the validation
inputs' error ratio allows (:func:`stricter_margin`), so that the next choice is not
again right at the limit."""


def own_quantization(prep: Prepared, target: TargetProfile) -> dict | None:
    """A model that arrives int8 (QuantizeLinear/DequantizeLinear of its own): its
    encodings conformed to the target's (:mod:`deploycomp.quant.model_qdq`), noted under
    assumptions, and the manifest's int8 record for an int8 build (None: a float model)."""
    from deploycomp.quant.model_qdq import ConformQDQPass, model_quantization
    from deploycomp.quant.policy import policy_for

    policy = policy_for(target.backend, target.cpu_features)
    own = model_quantization(prep.model, policy.compute_ops)
    if own is None:
        return None
    conform = ConformQDQPass(policy)
    conform(prep.model)
    after = model_quantization(prep.model, policy.compute_ops) or own  # the encodings as the target gets them
    changed = "; ".join(f"{n} {what}" for what, n in sorted(conform.changes.items()))
    prep.assumed.append(f"the model arrives int8 ({own['activation_encodings']} activation encodings of its own): kept, "
                        f"not calibrated again" + (f"; for {target.backend}: {changed}" if changed else ""))
    return {"source": "the model's own QuantizeLinear/DequantizeLinear", "policy": policy.name,
            "activation_dtype": "/".join(sorted(after["activation_dtypes"])),
            "activation_symmetric": after["symmetric"],
            "weights": ", ".join(f"{n} {t}" for t, n in sorted(after["dequantized_constants"].items())) or "float",
            "range_method": "the model's own", "calibration_data": "not used: the model carries its encodings",
            "held_out_samples": 0, "int8_layers": len(own["int8_layers"]), "float_layers": own["float_layers"],
            "conformed": dict(conform.changes), "calibration_seconds": 0.0}


def search_int8(opts: BuildOptions, prep: Prepared, target: TargetProfile, backend, reference: ORTRunner,
              fidelity: Fidelity, calibration: datasets.DataSet, validation: list):
    """int8 QDQ model: calibrate, rank layers, keep the fewest in float that meet the budget
    as the target's own runtime executes them; say where the real ``validation`` inputs go
    beyond the calibrated ranges."""
    from deploycomp.passes.to_float32 import Float16ToFloat32Pass, Float64ToFloat32Pass
    from deploycomp.quant import quantize
    from deploycomp.quant.dynamic import is_dynamic
    from deploycomp.quant.policy import policy_for
    from deploycomp.quant.sensitivity import Verdict

    # QDQ starts from float32 (ONNX Runtime has no float16 QuantizeLinear, ONNX no float64 one)
    if Float16ToFloat32Pass()(prep.model).modified:
        prep.assumed.append("a float16 model: calibrated and quantized from its float32 form (each float16 weight "
                            f"widened exactly), {io_types_kept(prep.model)}")
    if Float64ToFloat32Pass()(prep.model).modified:
        prep.assumed.append("float64 parts computed in float32 for int8 (each float64 weight rounded), its inputs "
                            "and outputs still as typed")
    opts.progress("int8 calibration")
    samples, label = calibration.samples, calibration.label
    seen = len(datasets.items(samples))  # (inputs, not batches: 16 photos at batch 8 had read "2 samples")
    if seen < FEW_CALIBRATION_SAMPLES:  # (it built without a word on one)
        log.warning("int8: %d calibration sample%s: the ranges, and the search for float layers, see only %s; "
                    "%d or more inputs like those the model will see hold better", seen,
                    "" if seen == 1 else "s", "it" if seen == 1 else "them", 4 * FEW_CALIBRATION_SAMPLES)
    held = samples[-max(1, min(4, len(samples) // 4)):] if len(samples) >= 4 else samples
    calib = samples[: len(samples) - len(held)] if len(samples) >= 4 else samples
    # candidates are judged on every calibration sample, not only the few held out for the
    # ranking: a budget checked on 1-4 inputs did not predict the final validation (measured
    # on PP-OCR det and cls); the samples that set the ranges are still inputs the model has
    # not been fitted to in any other way. A share of the error budget there (SEARCH_MARGIN)
    # leaves the rest for the validation inputs.
    judged, margin = samples, SEARCH_MARGIN
    refs = [reference.run(s) for s in judged]
    # the float form of a model that arrived with ONNX Runtime's dynamic quantization is the
    # closest any int8/float mix can come to its integer ops: where it misses the budget, the
    # search aims at twice its distance instead (all-int8 unsearched ran a TFLite table-edge
    # model into Inf), and the verdict is still the budget's
    def trial_runner(candidate: ir.Model, precision: str):
        return trial.trial_runner(backend, target, candidate, precision, backend_options(opts, target, prep.profiles))

    futile, search_fidelity, set_aside = None, fidelity, 0
    if prep.integer_ops:
        # as the target's runtime computes it at fp32, at the search's margin: what every layer
        # float reaches there (exact on ONNX Runtime; a T5 encoder's TFLite float kernels summed
        # otherwise and reached 0.982 on one sentence, under the margin: the search kept all 485
        # nodes float and wrote no int8 layer)
        with trial_runner(prep.model, "fp32") as floats:
            float_outs = [floats.run(s) for s in judged]
        float_form = prep.compare(refs, float_outs)
        fine = [i for i in range(len(judged))
                if fidelity_met(prep.compare([refs[i]], [float_outs[i]]),
                                fidelity, FLOAT_FORM_SHARE)]
        if len(fine) < len(judged) and len(fine) >= max(2, len(judged) // 2):
            # a few samples on which even the float form spends much of the budget say
            # little of which mix is best, and leave a stricter search no room: the search
            # judges on the others (a T5 encoder's TFLite float form reached 0.9797 and
            # 0.9906 on 2 of 16 sentences, 0.9997 or more on the rest)
            set_aside = len(judged) - len(fine)
            judged, refs = [judged[i] for i in fine], [refs[i] for i in fine]
            log.warning("int8: the model's float form spends over %d%% of the budget against ONNX Runtime's integer "
                        "ops on %d of %d calibration samples (on %s): the search judges on the other %d",
                        round(100 * FLOAT_FORM_SHARE), set_aside, set_aside + len(fine), backend.name, len(fine))
        elif not fidelity_met(float_form, fidelity, SEARCH_MARGIN):
            futile = round(worst_cosine(float_form), 6)
            search_fidelity = fidelity.model_copy(update={"min_cosine": max(0.0, 2 * futile - 1)})
            log.warning("int8: the model's float form already misses the budget against ONNX Runtime's integer ops "
                        "(cosine %.4f on %s): the search aims at %.4f", futile, backend.name, search_fidelity.min_cosine)

    trials: list[dict] = []  # every candidate the target's runtime judged, for the manifest and a missed budget
    scales = prep.scales(refs)
    # each output's cosine on each sample, from the last check that ran it (1: not run yet)
    hardness: dict[str, list[float]] = {k: [1.0] * len(judged) for k in refs[0]}

    def hardest_first() -> tuple[list[int], int]:
        """Each output's hardest sample so far, then the others by their worst output's
        cosine; and how many run before a miss may decide (at least every output's hardest)."""
        worst = [min(col[i] for col in hardness.values()) for i in range(len(judged))]
        first = list(dict.fromkeys(min(range(len(judged)), key=col.__getitem__) for col in hardness.values()))
        rest = sorted((i for i in range(len(judged)) if i not in first), key=worst.__getitem__)
        return first + rest, max(FAIL_FAST_SAMPLES, len(first))

    def meets_budget(candidate: ir.Model) -> Verdict:
        """The target's runtime on the judged samples, hardest first: a candidate that
        misses on the first :data:`FAIL_FAST_SAMPLES` (and every output's hardest) is out
        without running the rest."""
        outs: dict[int, dict] = {}
        missed: frozenset[str] = frozenset()  # outputs a part of the samples already decided
        order, head = hardest_first()
        stages = [order] if opts.int8_accept is not None else [order[:head], order[head:]]
        try:
            with trial_runner(candidate, "int8") as runner:
                for stage in stages:
                    outs.update((i, runner.run(judged[i])) for i in stage)
                    seen = sorted(outs)
                    per_sample: dict[str, list] = {}
                    metrics = prep.compare([refs[i] for i in seen], [outs[i] for i in seen], scales, per_sample)
                    if len(seen) < len(judged) and (missed := decided_failures(metrics, search_fidelity,
                                                                                limit["margin"])):
                        break
        except UnsupportedError as e:
            return trial.refused(trials, e, float_layers=float_layer_count(candidate, policy.compute_ops))
        for k, values in per_sample.items():  # an uninformative sample's cosine says nothing
            for i, value in zip(seen, values):
                hardness[k][i] = 1.0 if value is None else value
        worst = worst_cosine(metrics)
        if opts.int8_accept is not None:
            verdict = Verdict(bool(opts.int8_accept(refs, [outs[i] for i in range(len(judged))])))
        elif missed:
            verdict = Verdict(False, missed, worst)
        else:  # every fidelity check is per output; which outputs missed steers the search's next layers
            # (a judged channel by its own name: the search ranks it as an output of its own)
            failing = frozenset(k for k in metrics
                                if not fidelity_met({k: metrics[k]}, search_fidelity, margin=limit["margin"]))
            verdict = Verdict(not failing, failing, worst)
        dynamic = sum(1 for n in candidate.graph if is_dynamic(n))
        # what a candidate missed by, where not its cosine (a box budget: every trial had read
        # "met: false" at cosine 0.99996 with no word of why)
        measures = {f"min_{key}": round(min(values), 6) for key in APPLICATION_MEASURES
                    if (values := [m[key] for m in metrics.values() if key in m])}
        trials.append({"float_layers": float_layer_count(candidate, policy.compute_ops),
                       **({"dynamic_layers": dynamic} if dynamic else {}),
                       "min_cosine": round(worst, 6), **measures, "met": verdict.met, "samples": len(outs)})
        # -v: a search of a large model runs for minutes; each candidate says how it fared
        floats = trials[-1]["float_layers"]
        # (compute layers, as the summary counts them; the manifest's float_layers also lists
        # the element-wise nodes a search kept float)
        log.info("int8 candidate %d: %d compute layer%s float%s, worst cosine %.4f on %d samples: %s", len(trials),
                 floats, "" if floats == 1 else "s", f", {dynamic} dynamic-range" if dynamic else "", worst, len(outs),
                 "met" if verdict.met else "missed")
        return verdict

    def record(result) -> tuple[ir.Model, dict]:
        """The quantized model and its manifest record (``quantization``) for a search result."""
        held_to = 1 - (1 - fidelity.min_cosine) * limit["margin"]  # the limit the search held to
        info = result.info | {"calibration_data": label, "calibration_sha256": datasets.digest(samples),
                              "min_cosine": fidelity.min_cosine, "search_min_cosine": held_to,
                              # (its first name, which measured nothing held out: kept for its readers)
                              "held_out_min_cosine": held_to,
                              "min_top1_agreement": fidelity.min_top1_agreement,
                              "held_out_is_calibration": len(samples) < 4, "budget_judged_on_samples": len(judged),
                              "acceptance": "user metric (API)" if opts.int8_accept else "cosine"}
        info["search_trials"] = trials
        if not info.get("budget_met", True) or (info["int8_layers"] == 0 and not info.get("dynamic_layers")):
            judged_trials = [tr for tr in trials if "min_cosine" in tr]  # (not those the runtime refused)
            # closest by its application measures first where the budget judges boxes, masks or text (cosine 1.0000
            # had been said of a YOLO build whose every score an int8 output lost: box IoU 0)
            def closeness(tr: dict) -> tuple:
                return min((tr[f"min_{k}"] for k in APPLICATION_MEASURES if f"min_{k}" in tr), default=1.0), tr["min_cosine"]

            info["closest"] = max(judged_trials, key=closeness) if judged_trials else None
            if "fp16" in target.precisions:  # what the user could ship instead, judged on the same samples
                # as an fp16 build makes it: the tensors its range check keeps fp32 kept (all-fp16,
                # a spectrogram's 2.6e7 overflowed and the hint said 0.0443; its fp16 build met 0.999998)
                options = backend_options(opts, target, prep.profiles)
                if getattr(backend, "fp16_compute", None) in ("tensors", "whole"):
                    options["fp32_tensors"] = sorted(fp32_tensors(prep.model, judged[:MAX_RANGE_SAMPLES]))
                with trial.trial_runner(backend, target, prep.model, "fp16", options) as runner:
                    fp16 = prep.compare(refs, [runner.run(s) for s in judged])
                info["fp16_alternative"] = {"min_cosine": round(worst_cosine(fp16), 6),
                                            "meets_budget": fidelity_met(fp16, with_user_limits(target.fidelity["fp16"], opts))}
            if info.get("budget_met", True) and not info["float_layers"]:
                nested = info.get("control_flow_layers")  # (layers in a Loop's or If's body: QDQ enters none)
                exact = info.get("exact_float_layers")  # (a tree ensemble's walk, computed exactly)
                log.warning("int8: the model has no layer to quantize (%s)%s%s: no compute layer runs int8",
                            ", ".join(policy.compute_ops), f" outside control flow ({nested} inside it run float)"
                            if nested else "", f"; {exact} walk a tree ensemble, exactly, and stay float" if exact else "")
            elif info.get("budget_met", True):
                from deploycomp.report import float_count

                log.warning("int8: only every layer float (%s) met the budget", float_count(info))
            else:
                log.warning("int8: even with %d float layers the budget is not met", len(info["float_layers"]))
        return trial.without_outputs(result.model, channel_outputs), info

    limit = {"margin": margin}  # a stricter search (see stricter below) lowers it
    policy = policy_for(target.backend, target.cpu_features)
    if int8_io(opts, target):  # full integer: no float kernel, and a dynamic-range one is float at its ends
        policy = replace(policy, quantize_graph_outputs=True, dynamic_ops=())
    # each judged channel an output of the model the search ranks, so that its layers are
    # ranked by what they cost that channel (a quality map 1/30 of the output's scale is
    # nothing in the output's error), and taken off the model it keeps
    searched, channel_outputs = trial.with_channel_outputs(prep.model, prep.channels)
    result = quantize(searched, policy, calib, held, meets_budget, method=opts.int8_range,
                      keep_float=opts.keep_float, boosters=opts.int8_boosters, progress=opts.progress,
                      coverage=validation, time_limit=opts.int8_time_limit, angles=prep.angles)
    model, info = record(result)
    if set_aside:
        info["judged_without"] = {"samples": set_aside,
                                  "why": f"the model's float form spends over {FLOAT_FORM_SHARE:.0%} of the budget "
                                         f"on them against ONNX Runtime's integer ops (on {backend.name} at fp32)"}
    if futile is not None:
        info["search_relaxed"] = (f"the model's float form already misses the budget against ONNX Runtime's integer "
                                  f"ops (cosine {futile:.4f} on {backend.name} at fp32, against the search's margin): "
                                  f"no mix of int8 and float layers can meet it there; the search aimed at cosine "
                                  f"{search_fidelity.min_cosine:.4f}")

    # ``earlier``: the choice the other range method replaced (result, info, validation
    # cosine, its trials' span, its shortfall and miss); ``trials``: the span of ``trials``
    # the current choice's search made
    state = {"info": info, "stricter": [], "shortfalls": [], "alternated": False, "earlier": None, "trials": (0, None)}

    def stricter(validation_metrics: dict) -> tuple[ir.Model, dict] | None:
        """What to try when the validation inputs missed the budget that the judged inputs
        met (None when nothing is left): first, if the choice has dynamic-range layers,
        fewer of them (the next shorter set that met the budget, then none: what the search
        met before it tried them; their error follows each input's own range, so the judged
        inputs vouch less for them); then, once, the other range method with the same float
        layers, if that meets the budget on the judged inputs (auto ranges were chosen on a
        few samples' mean error: PP-OCRv3 rec on OpenVINO chose percentile + smoothing over
        minmax by 2% of it, met the budget all-int8 with both on the calibration inputs,
        missed validation with it at 0.9731, not with minmax at 0.9938, and float layers
        only made it worse); then the search continued past the float layers of whichever
        validated closer, under a tighter limit: up to :data:`STRICTER_ROUNDS` times, each
        while the round before brought the validation inputs closer.
        The manifest says the validation inputs steered the choice."""
        nonlocal result
        current = state["info"]
        if opts.int8_accept is not None or not current.get("budget_met", True) or futile is not None:
            return None  # (a relaxed search's validation misses the budget by design)
        validation_cos = worst_cosine(validation_metrics)
        # how far it missed, by whichever criterion: a single number's cosine is 1 whatever its error
        shortfall = budget_shortfall(validation_metrics, fidelity)
        why = fidelity_failures(validation_metrics, fidelity)[0].describe()  # (called only on a miss)
        if result.fallback is not None:
            dropped = current.get("dynamic_dropped", []) + [{"validation_min_cosine": round(validation_cos, 6),
                                                             "validation_missed": why,
                                                             "dynamic_layers": len(current.get("dynamic_layers") or [])}]
            result = result.fallback()
            model, again = record(result)
            log.warning("int8: the validation inputs missed the budget (%s) with %d dynamic-range layers; "
                        "trying %d", why, dropped[-1]["dynamic_layers"], len(again["dynamic_layers"]))
            again["dynamic_dropped"] = dropped
            state["info"] = again
            return model, again
        if result.alternative is not None and not state["alternated"]:
            state["alternated"] = True
            opts.progress("int8 search, other ranges")
            start = len(trials)
            earlier = (result, current, validation_cos, (state["trials"][0], start), shortfall, why)
            if (other := result.alternative(meets_budget)) is not None:
                state["earlier"], state["trials"], result = earlier, (start, None), other
                model, again = record(result)
                again["range_alternative"] = {"rejected": ranges_label(current),
                                              "validation_min_cosine": round(validation_cos, 6),
                                              "validation_missed": why, "float_layers_rejected": len(current["float_layers"])}
                if "dynamic_dropped" in current:
                    again["dynamic_dropped"] = current["dynamic_dropped"]
                log.warning("int8: the validation inputs missed the budget with %s ranges (%s), which met it "
                            "on the calibration inputs; trying %s", ranges_label(current), why, ranges_label(again))
                state["info"] = again
                return model, again
        if (earlier := state["earlier"]) is not None and earlier[4] < shortfall:
            # the other ranges validated worse: the stricter search continues the first choice
            other = {"ranges": ranges_label(current), "validation_min_cosine": round(validation_cos, 6),
                     "validation_missed": why}
            result, current, validation_cos, state["trials"], shortfall, why = earlier
            current = current | {"range_alternative_validated_worse": other}
        rounds, shortfalls = state["stricter"], state["shortfalls"]
        if (len(rounds) >= STRICTER_ROUNDS or result.stricter is None
                or (shortfalls and shortfall >= shortfalls[-1])):
            # another round only while each brought the validation inputs closer (compared
            # unrounded: a miss repeated word for word had run six rounds, compared with its
            # shortfall as rounded up in the record)
            return None
        met = [t for t in trials[slice(*state["trials"])]  # the static choice's judged cosine
               if t["met"] and not t.get("dynamic_layers")]
        chosen_trial = min(met, key=lambda t: t["float_layers"]) if met else None
        judged_cos = chosen_trial["min_cosine"] if chosen_trial else None
        # the margin from the criterion validation missed: a text's or a mask's miss at a cosine
        # within the budget had only halved it (PP-OCRv3 rec's text judged 0.994 on the
        # calibration lines, 0.975 on validation; the next choice validated no closer)
        key, validation_value, miss_limit = missed_criterion(validation_metrics, fidelity)
        judged_value = chosen_trial.get(key) if chosen_trial and key else None
        new = stricter_margin(limit["margin"], miss_limit, judged_value, validation_value)
        first = {"validation_min_cosine": round(validation_cos, 6), "validation_missed": why,
                 "validation_shortfall": round(shortfall, 4),
                 "judged_min_cosine": judged_cos,
                 "margin": limit["margin"], "stricter_margin": round(new, 4),
                 "float_layers_before": len(current["float_layers"])}
        limit["margin"] = new
        state["trials"] = (len(trials), None)  # the next round judges this search's choice
        opts.progress("int8 search, stricter")
        log.warning("int8: the validation inputs missed the budget the calibration inputs met (validation: %s; on "
                    "the calibration inputs the choice had cosine %.4f); continuing the float-layer search at a "
                    "tighter limit", why, judged_cos if judged_cos is not None else float("nan"))
        result = result.stricter(meets_budget)
        model, again = record(result)
        rounds.append(first | {"float_layers_after": len(again["float_layers"])})
        shortfalls.append(shortfall)
        again["stricter_search"] = rounds[0] | ({"rounds": list(rounds)} if len(rounds) > 1 else {})
        for key in ("dynamic_dropped", "range_alternative", "range_alternative_validated_worse"):
            if key in current:
                again[key] = current[key]
        state["info"] = again
        return model, again

    return model, info, stricter


CRITERIA = {"cosine": "min_cosine", "box_iou": "min_box_iou", "mask_iou": "min_mask_iou",
            "mask_regions": "min_mask_regions", "text": "min_text_similarity"}
"""A budget check's kind (its name before ``[``) -> what a search trial records of it
(``min_cosine``, and ``min_<metric>`` of :data:`APPLICATION_MEASURES`)."""


def missed_criterion(validation_metrics: dict, fidelity) -> tuple[str | None, float, float]:
    """The fidelity criterion the validation inputs missed by most (its error against its
    allowance), of those a search trial records (:data:`CRITERIA`), as
    :func:`stricter_margin` compares it: (the trials' key for it, the validation's value,
    its limit); ``(None, 0.0, 1.0)`` where it missed by no such criterion (top-1, NaN counts,
    an error bound): the margin is then halved."""
    misses = [c for c in fidelity_failures(validation_metrics, fidelity)
              if c.name.split("[", 1)[0] in CRITERIA and not c.at_most and c.limit < 1]
    if not misses:
        return None, 0.0, 1.0
    worst = max(misses, key=lambda c: (1 - c.value) / (1 - c.limit))
    return CRITERIA[worst.name.split("[", 1)[0]], worst.value, worst.limit


def stricter_margin(margin: float, min_cosine: float, judged_cosine: float | None, validation_cosine: float) -> float:
    """The search margin for a second try, after the chosen candidate met ``margin`` of the
    budget's error on the judged inputs (worst cosine ``judged_cosine``) yet missed on the
    validation inputs (``validation_cosine``): the criterion validation missed, whichever
    it is (:func:`missed_criterion`: a cosine, a text's similarity, a mask's IoU, its
    ``min_cosine`` the limit); assume the validation inputs' error stays
    the same multiple of the judged inputs' and aim under the budget by that multiple;
    the new margin is at most 0.8 of the old one, and at least 0.05. Measured on PP-OCRv3 rec for TensorRT: judged
    0.9872, validation 0.9744 (twice the error) with 12 of 49 layers float at margin 0.75."""
    step = margin * 0.8
    if judged_cosine is None or judged_cosine >= 1.0 or validation_cosine >= min_cosine:
        return margin / 2  # a miss by another criterion (top-1, non-finite values): tighten by half
    ratio = (1.0 - validation_cosine) / (1.0 - judged_cosine)
    return max(0.05, min(step, STRICTER_SHARE / ratio)) if ratio > 1 else step


def float_layer_count(model: ir.Model, compute_ops: tuple[str, ...]) -> int:
    """Compute layers of a QDQ model that run float: their data input is not dequantized
    and they are not dynamic-range layers (:mod:`deploycomp.quant.dynamic`)."""
    from deploycomp.quant.dynamic import is_dynamic

    def dequantized(v) -> bool:
        return v is not None and v.producer() is not None and v.producer().op_type == "DequantizeLinear"

    return sum(1 for n in model.graph
               if n.op_type in compute_ops and not dequantized(n.inputs[0]) and not is_dynamic(n))


def int8_hint(quant_info: dict | None) -> str:
    """When the float-layer search could not meet the budget, or met it only with every layer
    float: how close it came, and what fp16 gives on the same samples (one clause, or "")."""
    if quant_info and quant_info.get("search_relaxed"):
        return quant_info["search_relaxed"] + "; "
    if not quant_info or (quant_info.get("budget_met", True)
                          and (quant_info.get("int8_layers", 1) or quant_info.get("dynamic_layers"))):
        return ""
    layers = quant_info["int8_layers"] + len(quant_info["float_layers"]) + len(quant_info.get("dynamic_layers") or [])
    closest = quant_info.get("closest") or {}
    if quant_info.get("budget_met", True):
        text = f"only every layer float met it ({layers} layers)"
    else:
        overlaps = "".join(f", {said} {closest[f'min_{key}']:.3f}" for key, said in APPLICATION_MEASURES.items()
                           if f"min_{key}" in closest)
        text = (f"no int8/float mix met it (tried up to {len(quant_info['float_layers'])} of {layers} layers float; "
                f"closest cosine {closest.get('min_cosine', float('nan')):.4f}{overlaps} with "
                f"{closest.get('float_layers', '?')} float)")
    alt = quant_info.get("fp16_alternative")
    if alt:
        # (judged on the search's calibration samples: an fp16 build is judged on the validation
        # inputs, where a quoted 0.9979 "before its search" had validated at 0.99998 with none)
        text += (f"; fp16 gives cosine {alt['min_cosine']:.4f} on the calibration samples the search judged"
                 + (" and meets its budget there" if alt["meets_budget"] else
                    " before its search for fp32 layers (--precision fp16 runs it, judged on the validation inputs)"))
    return text + "; "


def coverage_hint(quant_info: dict | None) -> str:
    """Why an int8 build may miss its fidelity budget: the validation inputs take tensors
    well past anything the calibration set did, so int8 clips them (one clause, or "")."""
    coverage = (quant_info or {}).get("range_coverage") or {}
    text = ""
    if coverage.get("tensors_beyond"):
        worst = coverage["worst"][0]
        text = (f"the validation inputs go past the calibration set's range in {coverage['tensors_beyond']} of "
                f"{coverage['tensors']} int8 tensors (worst {worst['tensor']}: {worst['beyond_range']:.1f} range "
                "widths), where int8 clips them: calibrate on inputs like them; ")
    quiet = coverage.get("quiet") or {}
    if quiet.get("samples"):
        from deploycomp.quant.calibrate import QUIET_STEPS

        many = len(quiet["samples"])
        loudest = max(quiet["samples"], key=lambda q: q["tensors"])
        worst = quiet["worst"][0]
        text += (f"{many} of {quiet['checked_samples']} validation inputs {'is' if many == 1 else 'are'} quieter "
                 f"than any calibration input (sample "
                 f"{loudest['sample']}: {loudest['tensors']} int8 tensors within {QUIET_STEPS} steps, {worst['tensor']} "
                 f"{worst['steps']:g} where the calibration set spanned {worst['calibration_steps']:g}), where int8 "
                 "rounds them to a few levels: calibrate on inputs like them; ")
    return text
