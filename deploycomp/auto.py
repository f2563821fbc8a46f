"""``--precision auto``: the fastest precision that meets every budget of the target.

Every precision the target offers is built for real (int8 only when calibration data
is given), validated against the target's budgets, and timed (measured on ``host``,
roofline-estimated otherwise). Among those that pass, the fastest wins; latencies
within :data:`AUTO_TIE` of it are a tie, broken by the smaller artifact. The chosen
bundle is moved into place and its manifest and report list every candidate and why.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Callable

from deploycomp.bundle import MANIFEST, check_output, replace_folder, write_json
from deploycomp.errors import BudgetError, UnsupportedError
from deploycomp.report import render_report
from deploycomp.targets import load_target

__all__ = ["AUTO_ORDER", "AUTO_TIE", "build_auto"]

AUTO_ORDER = ("int8", "fp16", "bf16", "fp32")
AUTO_TIE = 0.05
"""Latencies within 5% of the fastest count as a tie, broken by the smaller artifact."""


def build_auto(opts, build_one: Callable) -> Any:
    """Build each candidate with ``build_one`` (the pipeline's single-precision build)."""
    target = load_target(opts.target)
    out = check_output(opts.out, opts.force)
    has_calibration = opts.calibration is not None or opts.sample_kind is not None
    candidates = [p for p in AUTO_ORDER if p in target.precisions and (p != "int8" or has_calibration)]
    tried = []
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.auto-") as tmp:
        results = {}
        for precision in candidates:
            opts.progress(f"auto: {precision}")
            trial = dataclasses.replace(opts, precision=precision, out=Path(tmp) / precision, force=True, no_fail=True)
            try:
                result = build_one(trial)
            except UnsupportedError as e:
                tried.append({"precision": precision, "ok": False, "reason": str(e)})
                continue
            m = result.manifest
            latency = (m["measured"].get("latency") or {}).get("median_ms") or m["validation"]["latency_estimate"]["estimate_ms"]
            size = sum(a["bytes"] for a in m["artifacts"]) / 1e6
            failed = [c["budget"] for c in m["validation"]["budgets"] + m["measured"].get("budgets", []) if not c["ok"]]
            tried.append({"precision": precision, "ok": not failed, "latency_ms": latency, "artifact_mb": round(size, 3),
                          "latency_kind": "measured" if m["measured"].get("latency") else "roofline estimate",
                          "min_cosine": min(o["cosine"] for o in m["validation"]["outputs"].values()),
                          "reason": "meets every budget" if not failed else f"misses {', '.join(failed)}"})
            results[precision] = result
        ok = [t for t in tried if t["ok"]]
        if not ok:
            raise BudgetError(f"--precision auto: no precision meets the budgets of {target.name} "
                              f"({'; '.join(t['precision'] + ': ' + t['reason'] for t in tried)})")
        fastest = min(t["latency_ms"] for t in ok)
        chosen = min((t for t in ok if t["latency_ms"] <= fastest * (1 + AUTO_TIE)), key=lambda t: t["artifact_mb"])
        why = (f"{chosen['precision']}: fastest of the precisions meeting every budget "
               f"({chosen['latency_ms']:.2f} ms, {chosen['latency_kind']}; ties within {AUTO_TIE:.0%} go to the smaller artifact)")
        result = results[chosen["precision"]]
        result.manifest["auto"] = {"requested": "auto", "chosen": chosen["precision"], "why": why, "candidates": tried}
        write_json(result.bundle / MANIFEST, result.manifest)
        (result.bundle / "report.html").write_text(render_report(result.manifest))
        check_output(out, opts.force)
        replace_folder(result.bundle, out)
    result.bundle = out
    return result
