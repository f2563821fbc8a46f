"""``report.html``: the manifest, for people. One self-contained file, inline SVG charts.

No plotting library and no JavaScript: the report must open from an artifact store or
a CI page with nothing else around it. Every chart carries its own scale and says what
its marks mean: fidelity is error against the budget on a log scale (errors span 1e-9
to 1), a roofline estimate for the device and a measurement on this machine never share
an axis, and a metric appears with what it means for its output (budgeted or not). The
manifest is linked, not repeated.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Mapping

from deploycomp.bundle import MANIFEST, REPORT, artifact_entries, replaced_file, write_json

__all__ = ["render_report", "source_sides", "write_manifest_and_report"]

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}h3{font-size:1em;margin-bottom:.2em}
table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
.ok{color:#17803d;font-weight:600}.bad{color:#c0262d;font-weight:600}.muted{color:#777}
.warn{background:#fff4d6;border-left:4px solid #e0a800;padding:6px 10px}
code{background:#f4f4f4;padding:1px 4px}svg text{font-family:system-ui,sans-serif}
"""


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _bars(title: str, items: list[tuple[str, float]], unit: str, note: str = "") -> str:
    """Horizontal bars on a linear axis from 0, each labelled with its value."""
    if not items:
        return ""
    width, label_w, row_h = 760, 250, 24
    top = max(v for _, v in items) or 1.0
    scale = (width - label_w - 110) / top
    parts = [f'<svg width="{width}" height="{row_h * len(items) + 12}" role="img" aria-label="{html.escape(title)}">']
    for i, (label, value) in enumerate(items):
        y = 4 + i * row_h
        parts.append(f'<text x="0" y="{y + 14}" font-size="12">{html.escape(_clip(label))}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{max(1, value * scale):.1f}" height="17" fill="#3b7dd8"/>')
        parts.append(f'<text x="{label_w + value * scale + 6:.1f}" y="{y + 13}" font-size="12">{value:.4g}{unit}</text>')
    parts.append("</svg>")
    return f"<h3>{html.escape(title)}</h3>{''.join(parts)}" + (f"<p><small>{note}</small></p>" if note else "")


def _clip(label: str, n: int = 38) -> str:
    return label if len(label) <= n else label[: n // 2 - 1] + "..." + label[-(n // 2 - 2):]


_LOG_LO, _LOG_HI = -9, 0


def _log_x(value: float, x0: float, span: float) -> float:
    v = min(max(value, 10.0**_LOG_LO), 10.0**_LOG_HI)
    return x0 + (math.log10(v) - _LOG_LO) / (_LOG_HI - _LOG_LO) * span


def _error_chart(checks: list[dict], outputs: dict[str, dict]) -> str:
    """Each fidelity criterion of each output as its error against its allowance, on one
    log axis from 1e-9 to 1: the bar is the error, the tick its budget; red where missed.
    Cosine comes from the outputs' metrics (the budget table shows it rounded)."""
    rows = [c for c in checks if c["budget"].startswith(("cosine[", "quiet_error[", "top1["))]
    if not rows:
        return ""
    width, label_w, row_h, right = 940, 300, 26, 190
    span = width - label_w - right
    parts = [f'<svg width="{width}" height="{row_h * len(rows) + 40}" role="img" aria-label="error per output">']
    for k in range(_LOG_LO, _LOG_HI + 1, 3):
        x = _log_x(10.0**k, label_w, span)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{row_h * len(rows)}" stroke="#ddd"/>')
        parts.append(f'<text x="{x:.1f}" y="{row_h * len(rows) + 14}" font-size="11" text-anchor="middle">1e{k}</text>')
    for i, c in enumerate(rows):
        y = 4 + i * row_h
        kind, name = c["budget"].split("[", 1)
        name = name[:-1]
        if kind == "quiet_error":
            err, allow, what = c["value"], c["limit"], "|error| / scale, ~0 samples"
        elif kind == "cosine":
            err, allow, what = 1 - outputs.get(name, {}).get("cosine", c["value"]), 1 - c["limit"], "1 - cosine"
        else:  # at-least criteria as 1 - value
            err, allow, what = 1 - c["value"], 1 - c["limit"], "1 - top-1"
        color = "#3b7dd8" if c["ok"] else "#c0262d"
        x_err, x_allow = _log_x(err, label_w, span), _log_x(allow, label_w, span)
        parts.append(f'<text x="0" y="{y + 14}" font-size="12">{html.escape(_clip(name, 26))} '
                     f'<tspan fill="#777">{what}</tspan></text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{max(1.0, x_err - label_w):.1f}" height="17" fill="{color}"/>')
        parts.append(f'<line x1="{x_allow:.1f}" x2="{x_allow:.1f}" y1="{y - 3}" y2="{y + 20}" stroke="#222" stroke-width="2"/>')
        share = ("no allowance" if not allow else f"{err / allow:.0%} of budget" if err >= 0.01 * allow
                 else "<1% of budget")
        parts.append(f'<text x="{width - right + 6}" y="{y + 13}" font-size="12">{err:.2g} ({share})</text>')
    parts.append("</svg>")
    return ("<h3>Error per output against its budget (log scale; bar: error, black tick: the budget)</h3>"
            + "".join(parts))


def _auto_html(auto: dict | None) -> str:
    if not auto:
        return ""
    rows = [[html.escape(c["precision"]), '<span class="ok">yes</span>' if c["ok"] else '<span class="bad">no</span>',
             f"{c['min_cosine']:.6f}" if "min_cosine" in c else "-",
             f"{c['latency_ms']:.3f} ms ({html.escape(c['latency_kind'])})" if "latency_ms" in c else "-",
             f"{c['artifact_mb']:.2f} MB" if "artifact_mb" in c else "-", html.escape(c["reason"])]
            for c in auto["candidates"]]
    return (f"<h2>--precision auto</h2><p>Chosen: <b>{html.escape(auto['why'])}</b> Each candidate is held to "
            "its own precision's budget.</p>"
            + _table(rows, ["precision", "meets budgets", "worst cosine", "latency", "size", "why"]))


_LOWERING_KEYS = ("format", "precision", "weights", "typed_as", "io_layout", "int8_io", "transposes", "int8_ops",
                  "executed_precision", "edgetpu_cpu_fallback", "nvidia_parser", "plan")


def _range_text(quant: dict) -> str:
    """The range method, and for ``auto`` what it chose between (all-int8 NMSE of each, and
    on how many samples, as the judge is a race)."""
    text = f"{ranges_label(quant)} ranges"
    choice = quant.get("range_choice")
    if choice:
        judged = choice["judged_on_samples"]
        tried = ", ".join(f"{c['method']}{' + smoothing' if c['smoothed'] else ''} {c['nmse_all_int8']:.3g}"
                          + (f" (on {c['judged_on_samples']})" if c.get("judged_on_samples", judged) < judged else "")
                          for c in choice["candidates"])
        # (where the validation inputs then chose the other ranges, "chosen by NMSE" had been
        # said of ranges the build did not keep: the steps below say what replaced them)
        if alt := quant.get("range_alternative"):
            text += (f", kept where the validation inputs missed with {alt['rejected']}, which all-int8 NMSE on "
                     f"{judged} samples had chosen: {tried}")
        else:
            text += f", chosen by all-int8 NMSE on {judged} samples: {tried}"
        if "race_factor" in choice:
            text += (f"; raced: candidates over {choice['race_factor']:g}x the least error on the first half stop"
                     " there, as does a lone survivor")
        if choice.get("budget_fallback"):
            text += f" ({choice['budget_fallback']})"
    return text


def _boosters_text(quant: dict) -> str:
    parts = []
    if quant.get("equalized"):
        worst = max(quant["equalized"], key=lambda e: e["spread_before"])
        explicit = sum(1 for e in quant["equalized"] if e.get("explicit_mul"))
        parts.append(f"{len(quant['equalized'])} tensors equalized (widest channel spread "
                     f"{worst['spread_before']:g}x &rarr; {worst['spread_after']:g}x"
                     + (f"; {explicit} through a per-channel Mul of their own" if explicit else "") + ")")
    if quant.get("per_channel_activations"):
        parts.append(f"{quant['per_channel_activations']} depthwise inputs with a scale per channel")
    smoothing = quant.get("smoothing") or {}
    if smoothing.get("sites"):
        judged_better = smoothing["nmse_all_int8_with"] < smoothing["nmse_all_int8_without"]
        shifted = sum(1 for site in smoothing["sites"] if site.get("shift"))
        explicit = sum(1 for site in smoothing["sites"] if site.get("explicit_mul"))
        verdict = "kept" if smoothing.get("kept") else "dropped"
        parts.append(f"{len(smoothing['sites'])} tensors smoothed ({shifted} shifted"
                     + (f", {explicit} through a per-channel Mul of their own" if explicit else "")
                     + f"), {verdict}: all-int8 NMSE "
                     f"{smoothing['nmse_all_int8_without']:.3g} without, {smoothing['nmse_all_int8_with']:.3g} with"
                     + (f" ({smoothing['budget_fallback']})" if smoothing.get("budget_fallback")
                        else " (the budget's all-int8 check preferred the plain model)"
                        if not smoothing.get("kept") and judged_better else ""))
    if quant.get("bias_corrected_layers"):
        parts.append(f"{quant['bias_corrected_layers']} layer biases corrected")
    return " (" + "; ".join(parts) + ")" if parts else ""


def _coverage_html(coverage: dict | None) -> str:
    """Whether the validation inputs stay within what the calibration set reached: where
    they do not, int8 clips them, and only calibration data like them helps."""
    if not coverage:
        return ""
    quiet = _quiet_html(coverage.get("quiet"))
    if not coverage["tensors_beyond"]:
        return (f"<p>The {coverage['samples']} validation inputs stay within the calibration set's ranges "
                f"(no int8 tensor more than {coverage['tolerance']:.0%} of its range past them).</p>" + quiet)
    rows = [[html.escape(c["tensor"]), f"{c['beyond_range']:.2f}", f"[{c['range'][0]:g}, {c['range'][1]:g}]",
             f"[{c['seen'][0]:g}, {c['seen'][1]:g}]"] for c in coverage["worst"]]
    return (f"<p>The validation inputs go past the calibration set's range in {coverage['tensors_beyond']} of "
            f"{coverage['tensors']} int8 tensors, where int8 clips them; if fidelity suffers, calibrate on inputs "
            "like them. Worst:</p>"
            + _table(rows, ["tensor", "past the range (range widths)", "calibration range", "validation range"])
            + quiet)


def _quiet_html(quiet: dict | None) -> str:
    """The validation inputs quieter than any calibration input: inside the ranges, yet on
    a few int8 levels (:data:`deploycomp.quant.calibrate.QUIET_STEPS`)."""
    if not quiet or not quiet.get("samples"):
        return ""
    samples = ", ".join(f"{q['sample']} ({q['tensors']} tensors)" for q in quiet["samples"])
    rows = [[html.escape(q["tensor"]), str(q["sample"]), f"{q['steps']:g}", f"{q['calibration_steps']:g}"]
            for q in quiet["worst"]]
    return (f"<p>{len(quiet['samples'])} of {quiet['checked_samples']} validation inputs are quieter than any "
            f"calibration input: their values span a few int8 steps where every calibration input spanned ten "
            f"times more, and round to a few levels (samples {html.escape(samples)}). If fidelity suffers, calibrate "
            "on inputs like them. Quietest:</p>"
            + _table(rows, ["tensor", "sample", "int8 steps spanned", "quietest calibration input's steps"]))


def _lowering_html(lowered: dict[str, Any], runtime: dict[str, Any]) -> str:
    """What the backend made: its scalar facts, and the op histogram of a TFLite file."""
    rows = [[k, html.escape(str(lowered[k]))] for k in _LOWERING_KEYS if lowered.get(k) not in (None, "")]
    rows += [[k, html.escape(str(runtime[k]))] for k in ("runtime", "xnnpack_partitions", "device") if k in runtime]
    if "engine" in lowered:
        rows.append(["engine", html.escape(str(lowered["engine"]["engine"])) if lowered["engine"] else
                     "not built here: run <code>deploycomp engine BUNDLE</code> on the device"])
    ops = lowered.get("ops") or {}
    chart = _bars("Operators in the artifact", sorted(((k, float(v)) for k, v in ops.items()),
                                                       key=lambda t: -t[1]), "") if ops else ""
    return f"<h2>Lowering</h2>{_table(rows, ['', ''])}{chart}" if rows else ""


def _passes_html(records: list[dict]) -> str:
    """The passes that changed the graph, and every pass behind a disclosure (no script)."""
    if not records:
        return ""
    changed = [p for p in records if p["nodes_after"] != p["nodes_before"]]
    rows = lambda ps: [[html.escape(p["name"]), p["stage"] if p["stage"] != "loop" else f"loop {p['step']}",
                        p["nodes_before"], p["nodes_after"]] for p in ps]
    header = ["pass", "stage", "nodes before", "nodes after"]
    return (f"<h2>Passes: {records[0]['nodes_before']} &rarr; {records[-1]['nodes_after']} nodes</h2>"
            f"<p>{len(changed)} of {len(records)} pass runs changed the node count:</p>{_table(rows(changed), header)}"
            f"<details><summary>every pass run</summary>{_table(rows(records), header)}</details>")


def _target_note(target: dict) -> str:
    family = target.get("family")
    if family:
        return (f"Family <b>{html.escape(family['name'])}</b>: one bundle for {html.escape(', '.join(family['members']))}"
                f" (budgets of the tightest member; estimates for {html.escape(family['estimates_for'])}); "
                f"{html.escape(family['device_step'])}. ")
    if target.get("resolved_from"):
        return f"Target <b>{html.escape(target['name'])}</b> resolved to profile <b>{html.escape(target['resolved_from'])}</b>. "
    return ""


def _mac_share(quant: dict) -> str:
    share = quant.get("executed_int8_mac_share", quant.get("int8_mac_share"))
    return "" if share is None else f" ({share:.0%} of the compute layers' MACs run int8)"


def float_count(quant: dict) -> str:
    """The float compute layers, counted as ``int8_layers`` counts the int8 ones, then the
    element-wise nodes the search kept float (TFLite's Add and Mul), e.g. ``1 float + 16
    element-wise nodes``; older manifests counted both as one."""
    floats = len(quant.get("float_layers") or [])
    compute = quant.get("float_compute_layer_count")
    if compute is None or compute == floats:
        return f"{floats} float"
    other = floats - compute
    return f"{compute} float + {other} element-wise node{'s' if other != 1 else ''}"


def ranges_label(quant: dict) -> str:
    """An int8 choice's ranges as the manifest names them, e.g. ``percentile + smoothing``."""
    return quant["range_method"] + (" + smoothing" if (quant.get("smoothing") or {}).get("kept") else "")


def validation_miss(record: dict) -> str:
    """How the validation inputs missed, as an int8 record has it: the failing criterion
    (a single number's error, which its cosine of 1.0 hides), else the worst cosine."""
    return record.get("validation_missed") or f"cosine {record['validation_min_cosine']:.4f}"


def range_steps(quant: dict) -> list[str]:
    """Plain-text lines (for the summary and the report) on how the validation inputs
    changed an int8 build's range method, if they did."""
    lines = []
    if alt := quant.get("range_alternative"):
        lines.append(f"the validation inputs missed the budget with {alt['rejected']} ranges "
                     f"({validation_miss(alt)}), which met it on the calibration inputs; "
                     f"{ranges_label(quant)} ranges, which met it there too, were tried next: the validation "
                     f"inputs steered this choice")
    if worse := quant.get("range_alternative_validated_worse"):
        lines.append(f"the validation inputs missed the budget with this choice's ranges; {worse['ranges']} ranges, "
                     f"which met it on the calibration inputs too, validated worse ({validation_miss(worse)})")
    return lines


def time_limit_steps(quant: dict) -> list[str]:
    """Plain-text lines on what ``--int8-time-limit`` cut from the search, if it cut anything."""
    limit = quant.get("time_limit") or {}
    if not limit.get("reached"):
        return []
    return [f"the {limit['seconds']:g} s time limit passed: this is the first choice that met the budget, without "
            f"{', '.join(limit['cut'])} (a longer search may keep more layers int8)"]


def _steered_html(quant: dict) -> str:
    """What the validation inputs changed in the int8 choice, before any stricter search:
    dynamic-range layers given up, and an earlier choice kept over a worse later one."""
    parts = []
    if dropped := quant.get("dynamic_dropped"):
        tries = ", then ".join(f"{d['dynamic_layers']} ({validation_miss(d)})" for d in dropped)
        parts.append(f"The validation inputs missed the budget with {tries} dynamic-range layers; the bundle holds "
                     f"the next shorter choice that met it on the judged inputs (none: the search's own choice). "
                     f"The validation inputs steered this choice.")
    parts += [html.escape(f"{line[0].upper()}{line[1:]}.") for line in range_steps(quant) + time_limit_steps(quant)]
    if worse := quant.get("later_choice_validated_worse"):
        parts.append(f"Every choice missed the budget on the validation inputs; a later one "
                     f"({worse['float_layers']} float layers) by more ({validation_miss(worse)}): "
                     f"this bundle holds the one closest to the budget.")
    return "".join(f"<p>{p}</p>" for p in parts)


def _dynamic_html(quant: dict) -> str:
    dynamic = quant.get("dynamic_layers")
    if not dynamic:
        return ""
    static = quant.get("static_int8_mac_share")
    return (f"<p>{len(dynamic)} layers the static encoding could not hold run the runtime's dynamic-range "
            f"kernels instead of float (int8 weights, each input quantized to its own range as it arrives, "
            f"float output){'' if static is None else f'; static int8 alone: {static:.0%} of MACs'}: "
            f"{html.escape(', '.join(dynamic))}.</p>")


def _fp16_html(fp16: dict | None) -> str:
    if not fp16:
        return ""
    why = fp16.get("executes_fp32")
    return (_fp16_ranges_html(fp16) + _fp16_search_html(fp16.get("search"), why)
            + (f'<p class="warn">Executes fp32: {html.escape(why)}.</p>' if why else ""))


def _fp16_ranges_html(fp16: dict) -> str:
    hot = fp16.get("fp32_tensors") or {}
    if "judged_on_samples" not in fp16:  # weights only (TFLite): no tensor's range to check
        return f"<p>fp16: {html.escape(fp16['rule'])}.</p>"
    if not hot:
        return (f"<p>fp16 ranges: no tensor leaves fp16's range on the {fp16['judged_on_samples']} real inputs "
                "(everything float runs fp16 but the numerically sensitive op types).</p>")
    rows = [[html.escape(n), f"{v:.3g}"] for n, v in sorted(hot.items(), key=lambda kv: -kv[1])[:15]]
    return (f"<h3>fp16: {len(hot)} tensors kept fp32 by magnitude</h3><p>{html.escape(fp16['rule'])} "
            f"({fp16['judged_on_samples']} samples). Largest:</p>" + _table(rows, ["tensor", "largest magnitude seen"]))


def _fp16_search_html(search: dict | None, executes_fp32: str | None = None) -> str:
    """The fp16 precision search (:mod:`deploycomp.fp16_search`), when fp16 missed with
    nothing out of range; no share of MACs "runs fp16" where the bundle executes f32."""
    if not search:
        return ""
    share = None if executes_fp32 else search.get("fp16_mac_share")
    verdict = ("met the budget on them" if search["met"]
               else '<span class="bad">: none met the budget on them, even every segment fp32, so the bundle is '
                    'the plain fp16 one</span>')
    kept = set(search["fp32_segments"]) if search["met"] else set()
    rows = [[html.escape(r["segment"]), f"{r['nmse_gain']:.3g}", "fp32" if r["segment"] in kept else "fp16"]
            for r in search.get("ranking", [])]
    return (f"<h3>fp16: {len(kept)} of {search['segments']} segments kept fp32 for precision</h3>"
            f"<p>fp16 missed the budget with nothing out of its range; the fewest segments of the graph kept fp32 "
            f"{verdict} ({html.escape(search['judged_on'])})"
            + (f"; {share:.0%} of the compute layers' MACs run fp16" if share is not None else "") + ".</p>"
            + (f"<p>{html.escape(search['note'])}</p>" if search.get("note") else "")
            + (f"<p>Kept fp32 first, where the fp16 build computed NaN or Inf: "
               f"{html.escape(', '.join(search['nonfinite_kept_fp32']))}.</p>" if search.get("nonfinite_kept_fp32") else "")
            + (_table(rows, ["segment (graph order)", "NMSE gain kept fp32", "runs"]) if rows else ""))


def _validation_html(val: dict, fidelity: dict) -> str:
    """Where the inputs came from (a warning when not the user's), and per output what each
    number means: the budgeted criteria first; top-1 only with whether it is budgeted."""
    from deploycomp.boxes import describe_boxes
    from deploycomp.ctc import describe_ctc
    from deploycomp.masks import describe_mask
    from deploycomp.validate import describe_one_class, describe_where, unjudged_outputs

    data = val.get("data") or {}
    note = ""
    if data.get("guessed"):
        note = ('<p class="warn">The budget was checked on <b>guessed inputs</b> '
                f"({html.escape(val['inputs'])}): pass <code>--validation-data</code> (or "
                "<code>--calibration</code>) with inputs preprocessed as your model expects, or "
                "<code>--preprocess</code>.</p>")
    elif data.get("source") == "built-in":
        note = f'<p class="warn">Validated on built-in samples, not your data ({html.escape(val["inputs"])}).</p>'
    for said in data.get("notes") or []:  # what the data says of the check (few samples, repeats, ...)
        note += f'<p class="warn">{html.escape(said)}</p>'
    if unjudged := unjudged_outputs(val["outputs"]):
        note += (f'<p class="warn"><b>Nothing judged</b> on {html.escape(", ".join(unjudged))}: no validation sample '
                 "is informative there (a rule nothing passes, an output ~0 on every input); validate on inputs "
                 "where the model finds something.</p>")
    # the budget each output's top-1 was held to: the profile's, or --min-top1's (which the
    # profile's fidelity does not hold: "not budgeted" had been said of a checked --min-top1)
    limits = {c.get("budget"): c.get("limit") for c in val.get("budgets") or []}
    rows = []
    for name, m in val["outputs"].items():
        quiet = m.get("uninformative_samples")
        top1_budget = limits.get(f"top1[{name}]", fidelity.get("min_top1_agreement"))
        if "top1_agreement" in m:
            top1 = (f"{m['top1_agreement']:.3f} (budget {top1_budget:g})" if top1_budget else
                    f'<span class="muted">{m["top1_agreement"]:.3f}, not budgeted: only a profile or --min-top1 '
                    "makes argmax agreement a criterion</span>")
        else:
            top1 = '<span class="muted">-</span>'
        if (one := describe_one_class(m)) is not None:
            top1 += f'<br><span class="muted">{html.escape(one)}</span>'
        if m.get("single_value"):
            samples = f'{m["samples"]} <span class="muted">(one value each: held to the error bound, not cosine)</span>'
        else:
            samples = f"{m['samples']}" + (f' <span class="muted">({quiet} uninformative: output ~0 or constant; held '
                                            "to the error bound, not cosine)</span>" if quiet else "")
        bad = f'<br><span class="bad">{m["nonfinite"]} NaN/Inf values</span>' if m.get("nonfinite") else ""
        if (boxes := describe_boxes(m)) is not None:
            bad += f'<br><span class="muted">{html.escape(boxes)}</span>'
        if (mask := describe_mask(m)) is not None:
            bad += f'<br><span class="muted">{html.escape(mask)}</span>'
        if (text := describe_ctc(m)) is not None:
            bad += f'<br><span class="muted">{html.escape(text)} (judged in place of cosine)</span>'
        if (rule := (val.get("judge_boxes_suggested") or {}).get(name)) is not None:
            bad += (f'<br><span class="muted">looks like a detector\'s boxes and scores, and cosine barely sees a box '
                    f'move: <code>--judge-boxes "{html.escape(rule)}"</code> judges them by overlap</span>')
        if (rule := (val.get("judge_masks_suggested") or {}).get(name)) is not None:
            from deploycomp.masks import describe_suggestion

            bad += f'<br><span class="muted">{html.escape(describe_suggestion(rule))}</span>'
        if (rule := (val.get("judge_ctc_suggested") or {}).get(name)) is not None:
            from deploycomp.ctc import describe_suggestion as describe_ctc_suggestion

            bad += f'<br><span class="muted">{html.escape(describe_ctc_suggestion(rule))}</span>'
        if (judged := describe_where(m)) is not None:
            bad += f'<br><span class="muted">{html.escape(judged)}</span>'
        if m.get("passes_through"):
            through = m["passes_through"]
            bad += (f'<br><span class="muted">input {html.escape(through["input"])} passed through (cosine '
                    f'{through["input_cosine"]:.4f}); its own part, output - input: cosine '
                    f'{through["residual_cosine"]:.6f}</span>')
        for c in m.get("weak_channels") or []:
            bad += (f'<br><span class="bad">channel {c["channel"]} of axis {c["axis"]} alone: cosine '
                    f'{c["cosine"]:.4f}, misses the budget (the output as a whole meets it)</span>')
        value = (f'{m["cosine"]:.6f} <span class="muted">(integer output: share of elements equal)</span>'
                 if "agreement" in m else f"{m['cosine']:.6f}")
        rows.append([html.escape(name), f"{value}{bad}", f"{m.get('max_abs_error', 0):.3g}",
                     f"{m.get('max_rel_error', 0):.3g}", top1, samples])
    return (note + f"<p>Inputs: {html.escape(val['inputs'])}.</p>"
            + _table(rows, ["output", "cosine (worst informative sample)", "max abs error",
                            "max error / output scale", "top-1 agreement", "samples"])
            + _source_html(val.get("runtime_on_source")))


def source_sides(source: dict) -> tuple[str, str]:
    """How the target's runtime on the unmodified model fared against ONNX Runtime and
    against the bundle: the criterion each missed where one did, else the worst cosine (an
    output judged by its error on flat samples had read "cosine -1.000000")."""
    return (source.get("vs_onnxruntime_missed") or f"cosine {source['vs_onnxruntime_min_cosine']:.6f}",
            source.get("bundle_vs_it_missed") or f"cosine {source['bundle_vs_it_min_cosine']:.6f}")


def _source_html(source: dict | None) -> str:
    """A float miss's second opinion: the target's runtime on the unmodified model."""
    if not source:
        return ""
    if source["meets_budget_vs_onnxruntime"]:
        verdict = "meets the budget there, so <b>the build changed the outputs</b>"
    else:
        verdict = ("misses as well, and the bundle " + ("matches it" if source["bundle_meets_budget_vs_it"] else
                                                         "differs from it too")
                   + ": <b>the two runtimes compute this model differently</b>")
    against_ort, against_bundle = source_sides(source)
    return (f'<p class="warn">{html.escape(source["runtime"])} at fp32 on the unmodified model (none of deploycomp\'s '
            f"passes): {html.escape(against_ort)} against ONNX Runtime, {html.escape(against_bundle)} against this "
            f"bundle. It {verdict}.</p>")


def _stricter_html(again: dict | None) -> str:
    """The int8 search's stricter rounds, steered by the validation inputs."""
    if not again:
        return ""
    rounds = again.get("rounds", [again])
    more = "".join(f" It missed again ({validation_miss(r)}) and continued at "
                   f"{r['stricter_margin']:g}: {r['float_layers_after']} float layers." for r in rounds[1:])
    return (f'<p class="warn">The validation inputs missed the budget ({validation_miss(again)}) '
            f"with {again['float_layers_before']} float layers that met it on the calibration inputs (cosine "
            f"{again['judged_min_cosine']:.4f} at {again['margin']:g} of the error budget). The search continued once at "
            f"{again['stricter_margin']:g} of it: {again['float_layers_after']} float layers.{more} The validation "
            "inputs steered this choice, so they are not wholly held out.</p>")


def _latency_html(manifest: dict, target: dict) -> str:
    """A measurement on this machine and a roofline estimate for the device, each on its
    own chart (they answer different questions and must not share an axis)."""
    from deploycomp.validate import describe_speedup, reference_label, unsteady

    measured = manifest.get("measured", {})
    est = manifest["validation"].get("latency_estimate") or {}
    out = []
    if measured.get("latency"):
        against = reference_label(measured)
        items = [(against, measured["reference_latency"]["median_ms"]),
                 *([("this model's fp32 bundle", measured["fp32_latency"]["median_ms"])]
                   if measured.get("fp32_latency") else []),
                 ("this bundle", measured["latency"]["median_ms"])]
        vs = measured.get("speedup_vs_fp32")
        busy = unsteady(measured["latency"], measured.get("reference_latency"), measured.get("fp32_latency"))
        slower = (" Not faster than this model's fp32 bundle in the same runtime: <code>--precision fp32</code> (or "
                  "<code>auto</code>) may serve better on this target." if vs is not None and vs < 1.05 and not busy
                  else "")
        out.append(_bars("Measured on this machine (median of repeated runs)", items, " ms",
                         html.escape(describe_speedup(measured["speedup_vs_onnxruntime"], against)) + "." + slower
                         + (f" <b>{html.escape(busy[0].upper() + busy[1:])}.</b>" if busy else "")))
        if ends := measured.get("latency_at_profile_ends"):  # (the report had said OPT's alone)
            said = "; ".join(f"{end.upper()} ({', '.join('x'.join(map(str, v)) for v in e['shapes'].values())}) "
                             f"{e['median_ms']:.3g} ms" for end, e in ends.items())
            out.append(f"<p>Across its --profile: {html.escape(said)}; the bars are at the validated shape.</p>")
    elif measured.get("latency_here"):
        here = measured["latency_here"]
        out.append(f"<p>Measured here: {here['median_ms']:.3g} ms on {html.escape(here['where'])} "
                   "(the artifact runs on this machine too; the device will differ).</p>")
    if est and not measured.get("latency"):
        # (both at the profile's efficiency: "at the device's peak" had been said of 35% of it)
        share = f"{(target.get('profile') or {}).get('compute', {}).get('efficiency', 1.0):.0%} of"
        items = [(f"compute at {share} peak", est["compute_ms"]), (f"memory at {share} bandwidth", est["memory_ms"])]
        if est.get("kernel_overhead_ms"):
            items.append((f"{est['kernels']} kernels' fixed time", est["kernel_overhead_ms"]))
        # (the engine command measures TensorRT engines only: it had been named for a Pi 5's bundle)
        on_device = ("<code>deploycomp engine</code> on the device measures" if manifest["backend"]["name"] == "tensorrt"
                     else "timing the bundle on the device measures")
        out.append(_bars(f"Roofline estimate for {target['name']}: {est['estimate_ms']:.3g} ms "
                         f"({est['bound']}-bound" + (", plus a fixed time per kernel" if est.get("kernel_overhead_ms")
                                                     else "") + ")", items, " ms",
                         "From the profile's datasheet peaks and the graph's MACs and bytes (the element-wise ops a "
                         f"runtime fuses into their producers counted with them): an estimate, not a measurement; "
                         f"{on_device}."))
    return "<h2>Latency</h2>" + "".join(out) + _build_time_html(measured)


def _build_time_html(measured: dict) -> str:
    """Where the build's own time went, stage by stage (from its progress labels)."""
    stages = measured.get("stage_seconds")
    if not stages:
        return ""
    return _bars(f"Build time: {measured['build_seconds']:.3g} s", list(stages.items()), " s",
                 "Wall time per stage of this build (imports excluded).")


def _judged_against(validation: Mapping[str, Any]) -> str:
    """What the bundle's outputs were compared with (a model that arrives int8 is judged
    against its QDQ as ONNX defines it; one with ONNX Runtime's integer ops against them)."""
    if "onnxruntime_own_int8_vs_written" in validation:
        return "ONNX Runtime on the original int8 model (its QDQ as ONNX defines it, every node unfused)"
    if "float_form_vs_onnxruntime_integer" in validation:
        return "ONNX Runtime on the original model (its integer ops)"
    return "ONNX Runtime fp32 on the original model"


def _io_html(manifest: dict[str, Any]) -> str:
    """The shapes the bundle takes (a --profile's range where it has one) and what the
    build assumed to get them (a batch set, a shape read from the data): the manifest had
    been the only place a reader of the report could learn either."""
    io = manifest.get("io") or {}
    profiles = io.get("profiles") or {}

    def takes(spec: dict) -> str:
        p = profiles.get(spec["name"])
        return (f"{p['min']} to {p['max']} (--profile, OPT {p['opt']}; validated at {spec['shape']})" if p
                else str(spec["shape"]))

    rows = [[f"<code>{html.escape(i['name'])}</code>", html.escape(i["dtype"]), html.escape(takes(i))]
            for i in io.get("inputs", [])]
    assumed = "".join(f"<li>{html.escape(a)}</li>" for a in manifest.get("assumptions") or [])
    return ("<h2>Inputs</h2>" + (_table(rows, ["input", "dtype", "shape the bundle takes"]) if rows else "")
            + (f"<p>Assumed:</p><ul>{assumed}</ul>" if assumed else ""))


def render_report(manifest: dict[str, Any]) -> str:
    target = manifest["target"]
    val = manifest["validation"]
    measured = manifest.get("measured", {})
    ok = val["ok"]
    status = '<span class="ok">PASS</span>' if ok else '<span class="bad">FAIL</span>'
    budgets = _table(
        [
            [html.escape(c["budget"]), f"{c['value']:.6g}{c['unit']}", f"{c['limit']:g}{c['unit']}",
             '<span class="ok">ok</span>' if c["ok"] else '<span class="bad">missed</span>']
            for c in val["budgets"] + measured.get("budgets", [])
        ],
        ["budget", "value", "limit", ""],
    )
    passes = _passes_html(manifest["passes"])
    artifacts = _table(
        [[f"<code>{html.escape(a['path'])}</code>", f"{a['bytes'] / 1e6:.3f} MB", a["sha256"][:16]] for a in manifest["artifacts"]],
        ["file", "size", "sha256"],
    )
    runtime = manifest["backend"].get("runtime", {})
    fidelity = target["profile"]["fidelity"][manifest["precision"]]
    lowering_html = _lowering_html(manifest["backend"].get("lowered", {}), runtime)
    quant = manifest.get("quantization") or {}
    quant_html = ""
    if quant:
        ranking = quant.get("sensitivity", [])[:15]
        chart = _bars(
            "int8 sensitivity: output NMSE each layer adds when it alone is int8 (top 15, in the order kept float)",
            [(s["node"], max(s.get("nmse_alone", s.get("gain", 0.0)), 0.0)) for s in ranking], "",
        ) if ranking else f"<p>{html.escape(quant.get('sensitivity_note', ''))}</p>"
        quant_html = f"""<h2>int8 quantization</h2>
<p>Policy <b>{html.escape(quant['policy'])}</b>: activations {html.escape(quant['activation_dtype'])}
{'symmetric' if quant['activation_symmetric'] else 'asymmetric'} ({html.escape(_range_text(quant))}),
weights {html.escape(quant['weights'])}. Calibration: {html.escape(str(quant.get('calibration_data', '')))};
{quant['held_out_samples']} held-out samples. {quant['int8_layers']} layers int8,
{float_count(quant)} kept in float{': ' + html.escape(', '.join(quant['float_layers'])) if quant['float_layers'] else ''}{_mac_share(quant)}.</p>
{_dynamic_html(quant)}
<p>Boosters: {html.escape(', '.join(quant.get('boosters', [])) or 'none')}{_boosters_text(quant)}.</p>
{_steered_html(quant)}{_stricter_html(quant.get("stricter_search"))}
{_coverage_html(quant.get("range_coverage"))}
{chart}"""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>deploycomp report: {html.escape(manifest['source']['name'])}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(manifest['source']['name'])} &rarr; {html.escape(target['name'])} ({html.escape(manifest['precision'])}) {status}</h1>
<p>Backend <b>{html.escape(manifest['backend']['name'])}</b> on <b>{html.escape(target['profile']['device'])}</b>
({html.escape(target['profile']['description'])}). Executed precision:
<b>{html.escape(str(runtime.get('executed_precision', 'n/a')))}</b>.{_compile_note(runtime)} Validation inputs: {html.escape(val['inputs'])}.
{_target_note(target)}
Built on {html.escape(str(manifest['host'].get('cpu')))} ({manifest['host'].get('cores')} cores).</p>
{_io_html(manifest)}
<h2>Budgets</h2>{budgets}
<h2>Fidelity vs {html.escape(_judged_against(val))}</h2>
{_validation_html(val, fidelity)}
{_error_chart(val['budgets'], val['outputs'])}
{_fp16_html(manifest.get("fp16"))}
{_auto_html(manifest.get("auto"))}
{lowering_html}
{quant_html}
{_latency_html(manifest, target)}
{passes}
<h2>Artifacts</h2>{artifacts}
<p>Everything above and more (versions, the resolved target profile, every pass and search step) is in
<a href="manifest.json">manifest.json</a>, next to this report.</p>
</body></html>
"""


def _compile_note(runtime: dict) -> str:
    """What a program that runs the artifact with the runtime's own API passes to run what
    was validated: OpenVINO's CPU plugin runs bf16 by default where the CPU has it, so an
    fp32 bundle loaded with stock settings missed its own budget (PP-OCRv3 det 0.9969 on an
    AMD EPYC) with only the manifest saying how to load it."""
    config = runtime.get("compile_config")
    if not config:
        return ""
    shown = ", ".join(f"{k}={v}" for k, v in config.items())
    why = (" (the CPU plugin's default precision is bf16 on CPUs that have it)"
           if "INFERENCE_PRECISION_HINT" in config else "")
    return f" Loaded without deploycomp, compile it with <code>{html.escape(shown)}</code> to run what was validated{why}."


def write_manifest_and_report(folder: Path, manifest: dict[str, Any]) -> None:
    """Write ``report.html`` from ``manifest``, then the manifest itself naming the
    report's size and digest (``manifest["report"]``), each replaced in one rename.

    So ``deploycomp verify`` checks the report of an unsigned bundle as it checks the
    artifacts: a changed report had verified (only a signature covered it), and a report
    is what a reviewer reads. Rewritten wherever the manifest is (``deploycomp engine``'s
    report had kept saying no engine was built)."""
    manifest.pop("report", None)  # (the report renders the manifest without its own digest)
    text = render_report(manifest)
    with replaced_file(folder / REPORT) as tmp:
        tmp.write_bytes(text.encode("utf-8", "surrogateescape"))  # (a path as its bytes: UTF-8 in any locale)
    manifest["report"] = artifact_entries(folder, [folder / REPORT])[0]
    with replaced_file(folder / MANIFEST) as tmp:
        write_json(tmp, manifest)
