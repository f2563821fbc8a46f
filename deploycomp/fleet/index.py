"""``OUT/index.json`` and ``OUT/fleet.html``: the fleet at a glance, for scripts and people.

``index.json`` has one entry per (model, target, precision): the bundle's path (relative to
the index), its manifest's sha256, whether it held (built and met every budget), fidelity
(the worst output's cosine against ONNX Runtime fp32), latency and its kind (measured on
this machine / roofline estimate for the device), artifact size, whether it came from the
cache, the device step and signature, and for a failed build its one-line error and exit
code. ``deploycomp diff`` compares two of them.

``fleet.html`` is one self-contained page (no script, inline SVG): a matrix of models by
target and precision, each cell coloured by whether it held, with its fidelity, latency
and size, and a latency chart per model.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from deploycomp.bundle import replaced_file
from deploycomp.cpu_load import is_busy

__all__ = ["FORMAT", "INDEX", "HTML", "render_html", "write_index"]

FORMAT = "deploycomp-fleet/1"
INDEX = "index.json"
HTML = "fleet.html"


def write_index(out: Path, index: dict[str, Any]) -> None:
    """Both files, each written to a temp name and renamed (readers see old or new, whole)."""
    for name, text in ((INDEX, json.dumps(index, indent=2, sort_keys=True, default=str) + "\n"),
                       (HTML, render_html(index))):
        with replaced_file(out / name) as tmp:
            tmp.write_bytes(text.encode("utf-8", "surrogateescape"))  # (a path as its bytes: UTF-8 in any locale)


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222;padding:0 1em}
h1{font-size:1.45em}h2{font-size:1.1em;margin-top:1.5em;border-bottom:1px solid #ddd}
table{border-collapse:collapse}th,td{padding:6px 10px;border:1px solid #e3e3e3;vertical-align:top;text-align:left}
td.ok{background:#e7f6ec}td.miss{background:#fff4d6}td.fail{background:#fde8e8}td.none{background:#f6f6f6;color:#999}
.big{font-weight:600}.muted{color:#777;font-size:12px}code{background:#f4f4f4;padding:1px 4px}
"""


def _cell(e: dict | None) -> str:
    if e is None:
        return '<td class="none">-</td>'
    if not e.get("ok_built"):
        return (f'<td class="fail"><span class="big">failed</span> (exit {e.get("exit_code")})<br>'
                f'<span class="muted">{html.escape(str(e.get("error", "")))[:160]}</span></td>')
    cls = "ok" if e["ok"] else "miss"
    status = "held" if e["ok"] else "budget missed"
    lat = f"{e['latency_ms']:.3g} ms {'measured' if e['latency_kind'] == 'measured' else 'est.'}"
    if is_busy(e.get("latency_busy")):  # (beside other builds: not the bundle's own figure)
        lat += f" (busy: {e['latency_busy']:.0%} of the CPUs used by other processes)"
    extra = []
    if e.get("cached"):
        extra.append("cached")
    if e.get("int8_layers") is not None:
        dynamic = e.get("dynamic_layers", 0)  # int8 weights, inputs quantized per sample (TFLite)
        extra.append(f"{e['int8_layers']}/{e['int8_layers'] + e['float_layers'] + dynamic} layers int8"
                     + (f" + {dynamic} dynamic-range" if dynamic else ""))
    if e.get("auto_chose"):
        extra.append(f"auto chose {e['auto_chose']}")
    device = e.get("device_step") or {}
    if device:
        extra.append(f"engine: {device.get('status')}")
    if e.get("signed"):
        extra.append("signed")
    link = html.escape(e["bundle"]) + "/report.html"
    return (f'<td class="{cls}"><a href="{link}"><span class="big">{status}</span></a><br>cosine {e["fidelity"]:.5f}'
            f'<br>{lat}<br>{e["size_mb"]:.3g} MB<br><span class="muted">{html.escape(", ".join(extra))}</span>'
            + (f'<br><span class="muted">{html.escape(str(e["error"]))}</span>' if e.get("error") else "") + "</td>")


def _latency_chart(model: str, entries: list[dict]) -> str:
    """One model's latency per build, measured and estimated kept apart (two groups)."""
    rows = [e for e in entries if e.get("ok_built")]
    if not rows:
        return ""
    parts = []
    for kind in ("measured", "roofline estimate"):
        items = [(f"{e['target']} {e['precision']}", e["latency_ms"]) for e in rows if e["latency_kind"] == kind]
        if not items:
            continue
        top = max(v for _, v in items) or 1.0
        w, label_w, row_h = 700, 230, 22
        svg = [f'<svg width="{w}" height="{row_h * len(items) + 8}" role="img" aria-label="{model} latency {kind}">']
        for i, (label, v) in enumerate(items):
            y = 2 + i * row_h
            bar = (w - label_w - 90) * v / top
            svg.append(f'<text x="0" y="{y + 14}" font-size="12">{html.escape(label)}</text>'
                       f'<rect x="{label_w}" y="{y}" width="{max(bar, 1):.1f}" height="16" fill="#3b7dd8"/>'
                       f'<text x="{label_w + bar + 6:.1f}" y="{y + 13}" font-size="12">{v:.3g} ms</text>')
        svg.append("</svg>")
        title = "measured on the build machine" if kind == "measured" else "roofline estimate for each device"
        parts.append(f"<h3>{html.escape(model)}: latency, {title}</h3>{''.join(svg)}")
    return "".join(parts)


def render_html(index: dict[str, Any]) -> str:
    entries = index["entries"]
    models = list(dict.fromkeys(e["model"] for e in entries))
    columns = list(dict.fromkeys((e["target"], e["precision"]) for e in entries))
    by = {(e["model"], e["target"], e["precision"]): e for e in entries}
    head = "".join(f"<th>{html.escape(t)}<br>{html.escape(p)}</th>" for t, p in columns)
    rows = "".join(f"<tr><th>{html.escape(m)}</th>" + "".join(_cell(by.get((m, t, p))) for t, p in columns) + "</tr>"
                   for m in models)
    held = sum(1 for e in entries if e.get("ok"))
    charts = "".join(_latency_chart(m, [e for e in entries if e["model"] == m]) for m in models)
    summary = index.get("summary", {})
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>deploycomp fleet</title><style>{_CSS}</style></head>
<body><h1>Fleet: {held} of {len(entries)} builds held</h1>
<p>Spec <code>{html.escape(str(index.get('spec')))}</code>, {html.escape(str(index.get('created')))}; executor
{html.escape(str(index.get('executor')))}; {summary.get('cached', 0)} from the cache, {summary.get('built', 0)} built in
{summary.get('seconds', 0):.1f} s. Green: built and every budget met; yellow: built, a budget missed (kept); red: failed.
Each cell links to its bundle's report; everything is in <a href="index.json">index.json</a>.</p>
<table><tr><th>model</th>{head}</tr>{rows}</table>
<h2>Latency</h2><p class="muted">Measurements (on the build machine) and roofline estimates (for the device) are
charted apart: they answer different questions.</p>{charts}
</body></html>
"""
