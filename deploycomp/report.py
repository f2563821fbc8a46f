"""``report.html``: the manifest, for people. One self-contained file, inline SVG charts.

No plotting library and no JavaScript: the report must open from an artifact store or
a CI page with nothing else around it.
"""

from __future__ import annotations

import html
import json
from typing import Any

__all__ = ["render_report"]

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
.ok{color:#17803d;font-weight:600}.bad{color:#c0262d;font-weight:600}
code{background:#f4f4f4;padding:1px 4px}pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}
"""


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _bars(title: str, items: list[tuple[str, float, float | None]], unit: str, log_note: str = "") -> str:
    """Horizontal bars with an optional budget marker per bar."""
    if not items:
        return ""
    width, label_w, row_h = 760, 230, 26
    top = max([v for _, v, _ in items] + [b for _, _, b in items if b is not None]) or 1.0
    scale = (width - label_w - 90) / top
    parts = [f'<svg width="{width}" height="{row_h * len(items) + 30}" role="img" aria-label="{html.escape(title)}">']
    for i, (label, value, budget) in enumerate(items):
        y = 10 + i * row_h
        ok = budget is None or value <= budget
        color = "#3b7dd8" if ok else "#c0262d"
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">{html.escape(label[:34])}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{max(1, value * scale):.1f}" height="18" fill="{color}"/>')
        parts.append(f'<text x="{label_w + value * scale + 6:.1f}" y="{y + 14}" font-size="12">{value:.4g}{unit}</text>')
        if budget is not None:
            bx = label_w + budget * scale
            parts.append(f'<line x1="{bx:.1f}" x2="{bx:.1f}" y1="{y - 3}" y2="{y + 21}" stroke="#222" stroke-dasharray="3,2"/>')
    parts.append("</svg>")
    return f"<h3>{html.escape(title)}</h3>{''.join(parts)}<p><small>{log_note}</small></p>"


def _error_chart(metrics: dict[str, dict], min_cosine: float) -> str:
    # 1 - cosine, so that the budget is an upper bound like every other bar
    items = [(name, 1.0 - m["cosine"], 1.0 - min_cosine) for name, m in metrics.items()]
    return _bars("Per-output error: 1 - cosine vs fp32 reference (dashed: budget)", items, "")


def _auto_html(auto: dict | None) -> str:
    if not auto:
        return ""
    rows = [[html.escape(c["precision"]), '<span class="ok">yes</span>' if c["ok"] else '<span class="bad">no</span>',
             f"{c['latency_ms']:.3f} ms ({html.escape(c['latency_kind'])})" if "latency_ms" in c else "-",
             f"{c['artifact_mb']:.2f} MB" if "artifact_mb" in c else "-", html.escape(c["reason"])]
            for c in auto["candidates"]]
    return (f"<h2>--precision auto</h2><p>Chosen: <b>{html.escape(auto['why'])}</b></p>"
            + _table(rows, ["precision", "meets budgets", "latency", "size", "why"]))


_LOWERING_KEYS = ("format", "precision", "weights", "typed_as", "io_layout", "int8_io", "transposes", "int8_ops",
                  "executed_precision", "edgetpu_cpu_fallback", "nvidia_parser", "plan")


def _range_text(quant: dict) -> str:
    """The range method, and for ``auto`` what it chose between (all-int8 NMSE of each, and
    on how many samples, as the judge is a race)."""
    text = f"{quant['range_method']} ranges"
    choice = quant.get("range_choice")
    if choice:
        judged = choice["judged_on_samples"]
        tried = ", ".join(f"{c['method']}{' + smoothing' if c['smoothed'] else ''} {c['nmse_all_int8']:.3g}"
                          + (f" (on {c['judged_on_samples']})" if c.get("judged_on_samples", judged) < judged else "")
                          for c in choice["candidates"])
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
        parts.append(f"{len(quant['equalized'])} tensors equalized (widest channel spread "
                     f"{worst['spread_before']:g}x &rarr; {worst['spread_after']:g}x)")
    smoothing = quant.get("smoothing") or {}
    if smoothing.get("sites"):
        shifted = sum(1 for site in smoothing["sites"] if site.get("shift"))
        verdict = "kept" if smoothing.get("kept") else "dropped"
        parts.append(f"{len(smoothing['sites'])} tensors smoothed ({shifted} shifted), {verdict}: all-int8 NMSE "
                     f"{smoothing['nmse_all_int8_without']:.3g} without, {smoothing['nmse_all_int8_with']:.3g} with")
    if quant.get("bias_corrected_layers"):
        parts.append(f"{quant['bias_corrected_layers']} layer biases corrected")
    return " (" + "; ".join(parts) + ")" if parts else ""


def _coverage_html(coverage: dict | None) -> str:
    """Whether the validation inputs stay within what the calibration set reached: where
    they do not, int8 clips them, and only calibration data like them helps."""
    if not coverage:
        return ""
    if not coverage["tensors_beyond"]:
        return (f"<p>The {coverage['samples']} validation inputs stay within the calibration set's ranges "
                f"(no int8 tensor more than {coverage['tolerance']:.0%} of its range past them).</p>")
    rows = [[html.escape(c["tensor"]), f"{c['beyond_range']:.2f}", f"[{c['range'][0]:g}, {c['range'][1]:g}]",
             f"[{c['seen'][0]:g}, {c['seen'][1]:g}]"] for c in coverage["worst"]]
    return (f"<p>The validation inputs go past the calibration set's range in {coverage['tensors_beyond']} of "
            f"{coverage['tensors']} int8 tensors, where int8 clips them; if fidelity suffers, calibrate on inputs "
            "like them. Worst:</p>"
            + _table(rows, ["tensor", "past the range (range widths)", "calibration range", "validation range"]))


def _lowering_html(lowered: dict[str, Any], runtime: dict[str, Any]) -> str:
    """What the backend made: its scalar facts, and the op histogram of a TFLite file."""
    rows = [[k, html.escape(str(lowered[k]))] for k in _LOWERING_KEYS if lowered.get(k) not in (None, "")]
    rows += [[k, html.escape(str(runtime[k]))] for k in ("runtime", "xnnpack_partitions", "device") if k in runtime]
    if "engine" in lowered:
        rows.append(["engine", html.escape(str(lowered["engine"]["engine"])) if lowered["engine"] else
                     "not built here: run <code>deploycomp engine BUNDLE</code> on the device"])
    ops = lowered.get("ops") or {}
    chart = _bars("Operators in the artifact", sorted(((k, float(v), None) for k, v in ops.items()),
                                                       key=lambda t: -t[1]), "") if ops else ""
    return f"<h2>Lowering</h2>{_table(rows, ['', ''])}{chart}" if rows else ""


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
    metric_rows = [
        [html.escape(n), f"{m['cosine']:.6f}", f"{m.get('max_abs_error', 0):.3g}", f"{m.get('max_rel_error', 0):.3g}",
         f"{m['top1_agreement']:.3f}" if "top1_agreement" in m else "-"]
        for n, m in val["outputs"].items()
    ]
    latency = measured.get("latency") or val.get("latency_estimate") or {}
    lat_ms = latency.get("median_ms", latency.get("estimate_ms"))
    lat_items = [("artifact", lat_ms, target["profile"]["budgets"].get("max_latency_ms"))] if lat_ms else []
    if measured.get("reference_latency"):
        lat_items.insert(0, ("ONNX Runtime fp32 (reference)", measured["reference_latency"]["median_ms"], None))
    lat_kind = latency.get("kind", "")
    if measured.get("latency_here"):  # e.g. LiteRT on this x86 machine: informative, not the device's number
        lat_items.append(("here, measured (not the target)", measured["latency_here"]["median_ms"], None))
    passes = _table(
        [[html.escape(p["name"]), p["stage"] if p["stage"] != "loop" else f"loop {p['step']}", p["nodes_before"],
          p["nodes_after"]] for p in manifest["passes"]],
        ["pass", "stage", "nodes before", "nodes after"],
    )
    artifacts = _table(
        [[f"<code>{html.escape(a['path'])}</code>", f"{a['bytes'] / 1e6:.3f} MB", a["sha256"][:16]] for a in manifest["artifacts"]],
        ["file", "size", "sha256"],
    )
    runtime = manifest["backend"].get("runtime", {})
    lowering_html = _lowering_html(manifest["backend"].get("lowered", {}), runtime)
    quant = manifest.get("quantization") or {}
    quant_html = ""
    if quant:
        ranking = quant.get("sensitivity", [])[:15]
        chart = _bars(
            "int8 sensitivity: output NMSE recovered by keeping one layer in float (top 15)",
            [(s["node"], max(s["gain"], 0.0), None) for s in ranking], "",
        ) if ranking else f"<p>{html.escape(quant.get('sensitivity_note', ''))}</p>"
        quant_html = f"""<h2>int8 quantization</h2>
<p>Policy <b>{html.escape(quant['policy'])}</b>: activations {html.escape(quant['activation_dtype'])}
{'symmetric' if quant['activation_symmetric'] else 'asymmetric'} ({html.escape(_range_text(quant))}),
weights {html.escape(quant['weights'])}. Calibration: {html.escape(str(quant.get('calibration_data', '')))};
{quant['held_out_samples']} held-out samples. {quant['int8_layers']} layers int8,
{len(quant['float_layers'])} kept in float{': ' + html.escape(', '.join(quant['float_layers'])) if quant['float_layers'] else ''}.</p>
<p>Boosters: {html.escape(', '.join(quant.get('boosters', [])) or 'none')}{_boosters_text(quant)}.</p>
{_coverage_html(quant.get("range_coverage"))}
{chart}"""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>deploycomp report: {html.escape(manifest['source']['name'])}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(manifest['source']['name'])} &rarr; {html.escape(target['name'])} ({html.escape(manifest['precision'])}) {status}</h1>
<p>Backend <b>{html.escape(manifest['backend']['name'])}</b> on <b>{html.escape(target['profile']['device'])}</b>
({html.escape(target['profile']['description'])}). Executed precision:
<b>{html.escape(str(runtime.get('executed_precision', 'n/a')))}</b>. Validation inputs: {html.escape(val['inputs'])}.
{f"Target <b>host</b> resolved to profile <b>{html.escape(target['resolved_from'])}</b>. " if target.get('resolved_from') else ""}
Built on {html.escape(str(manifest['host'].get('cpu')))} ({manifest['host'].get('cores')} cores).</p>
<h2>Budgets</h2>{budgets}
<h2>Fidelity vs ONNX Runtime fp32 on the original model</h2>
{_table(metric_rows, ["output", "cosine (worst)", "max abs error", "max rel error", "top-1 agreement"])}
{_error_chart(val['outputs'], target['profile']['fidelity'][manifest['precision']]['min_cosine'])}
{_auto_html(manifest.get("auto"))}
{lowering_html}
{quant_html}
<h2>Latency ({html.escape(lat_kind)})</h2>
{_bars("Latency per inference", lat_items, " ms", "Roofline estimates use the profile's datasheet peaks, not a measurement." if lat_kind != "measured" else "Median of repeated runs on this machine.")}
<h2>Passes</h2>{passes}
<h2>Artifacts</h2>{artifacts}
<h2>Manifest</h2><pre>{html.escape(json.dumps(manifest, indent=1, sort_keys=True, default=str)[:20000])}</pre>
</body></html>
"""
