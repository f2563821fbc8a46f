"""``--precision auto``: the fastest precision that meets every budget of the target.

Every precision the target offers is built for real (int8 only when calibration data
is given), validated against the target's budgets, and timed (measured on ``host``,
roofline-estimated otherwise). Those measured are timed again side by side, a run of
each in turn (:func:`timed_in_turns`), so that a machine whose load changes while they
build does not decide. Among those that pass, the fastest wins; latencies within
:data:`AUTO_TIE` of it are a tie, broken by the smaller artifact. The chosen bundle is
moved into place and its manifest and report list every candidate and why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from deploycomp.bundle import check_output, process_tag, remove_abandoned, replace_folder, signals_deferred
from deploycomp.errors import BudgetError, UnsupportedError
from deploycomp.pipeline import without_int8_options
from deploycomp.report import write_manifest_and_report
from deploycomp.targets import load_target

__all__ = ["AUTO_ORDER", "AUTO_TIE", "build_auto", "timed_in_turns"]

AUTO_ORDER = ("int8", "fp16", "bf16", "fp32")
AUTO_TIE = 0.05
"""Latencies within 5% of the fastest count as a tie, broken by the smaller artifact."""

TURNS_SECONDS, MIN_TURNS, MAX_TURNS = 2.0, 5, 200
""":func:`timed_in_turns` runs rounds (a run of each bundle) for about this long, at
least and at most this many."""


def timed_in_turns(bundles: dict[str, Path], sample: dict | None = None,
                   seconds: float = TURNS_SECONDS) -> dict[str, float]:
    """Each bundle's median latency in ms, timed in rounds of one run of each, on
    ``sample`` (a validation sample: a transformer's outputs on zeros, all padding to it,
    were NaN and its runs twice as fast), else zeros of its inputs' shapes. Timed one after
    another, each as it was built, OriNet's int8 bundle measured 32 ms in one of four
    ``auto`` builds on a loaded machine (14-16 ms in the others) and bf16 (26 ms) won;
    in turns, a change of load falls on every candidate alike."""
    import numpy as np

    from deploycomp.runner import BundleRunner

    runners = {name: BundleRunner(path, verify=False) for name, path in bundles.items()}
    feeds = {name: sample or {i: np.full(spec["shape"], max(0, (spec.get("index_range") or [0])[0]), spec["dtype"])
                              for i, spec in runner.inputs.items()} for name, runner in runners.items()}
    for name, runner in runners.items():  # (a first run of each warms it up)
        runner.run(feeds[name])
    times: dict[str, list[float]] = {name: [] for name in runners}
    end = time.perf_counter() + seconds
    while len(times[next(iter(times))]) < MIN_TURNS or (time.perf_counter() < end
                                                          and len(times[next(iter(times))]) < MAX_TURNS):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner.run(feeds[name])
            times[name].append(time.perf_counter() - start)
    return {name: round(1000 * statistics.median(t), 4) for name, t in times.items()}


@contextlib.contextmanager
def _candidates_folder(out: Path) -> Iterator[Path]:
    """The folder the candidates are built in, beside ``out``, named for this host and
    process so that the next build into ``out`` removes it where this process was killed
    (:func:`deploycomp.bundle.remove_abandoned`; a ``mkdtemp`` name had stayed for good), and
    removed whole, a signal held until it is gone (one during the removal had left it)."""
    remove_abandoned(out)
    folder = out.parent / f".{out.name}.auto-{process_tag()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    try:
        yield folder
    finally:
        with signals_deferred():
            shutil.rmtree(folder, ignore_errors=True)


class _SaidOnce(logging.Filter):
    """Drops a warning already said: every candidate of ``auto`` builds the same model, and
    a warning of the model (its inputs, its outputs) had been printed once per candidate."""

    def __init__(self):
        super().__init__()
        self.said: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.levelno, record.getMessage())
        if key in self.said:
            return False
        self.said.add(key)
        return True


@contextlib.contextmanager
def _warnings_said_once() -> Iterator[None]:
    """:class:`_SaidOnce` on every handler the warnings reach (the root logger's, the
    application's or the command's), for the candidates' builds."""
    # (one filter a handler: a record reaches each handler in turn, and a filter shared by
    # two had taken the second for a repeat)
    filters = {h: _SaidOnce() for h in {*logging.getLogger().handlers, *logging.getLogger("deploycomp").handlers}}
    for h, once in filters.items():
        h.addFilter(once)
    try:
        yield
    finally:
        for h, once in filters.items():
            h.removeFilter(once)


def build_auto(opts, build_one: Callable) -> Any:
    """Build each candidate with ``build_one`` (the pipeline's single-precision build)."""
    started = time.perf_counter()
    target = load_target(opts.target)
    out = check_output(opts.out, opts.force)
    has_calibration = opts.calibration is not None or opts.sample_kind is not None
    candidates = [p for p in AUTO_ORDER if p in target.precisions and (p != "int8" or has_calibration)]
    # (int8 left out without a word had read as int8 tried and beaten: 4x faster by estimate)
    tried = [] if has_calibration or "int8" not in target.precisions else [
        {"precision": "int8", "ok": False, "skipped": True,
         "reason": "not tried: int8 needs --calibration (inputs like those the model will see, to fit its ranges)"}]
    out.parent.mkdir(parents=True, exist_ok=True)
    with _candidates_folder(out) as tmp, _warnings_said_once():
        results = {}
        for precision in candidates:
            opts.progress(f"auto: {precision}")
            trial = dataclasses.replace(opts, precision=precision, out=Path(tmp) / precision, force=True, no_fail=True,
                                        auto_candidate=True)
            if precision != "int8":
                trial = without_int8_options(trial)
            try:
                result = build_one(trial)
            except UnsupportedError as e:
                tried.append({"precision": precision, "ok": False, "reason": str(e)})
                continue
            m = result.manifest
            latency = (m["measured"].get("latency") or {}).get("median_ms") or m["validation"]["latency_estimate"]["estimate_ms"]
            size = sum(a["bytes"] for a in m["artifacts"]) / 1e6
            checks = m["validation"]["budgets"] + m["measured"].get("budgets", [])
            failed = [c["budget"] for c in checks if not c["ok"]]
            tried.append({"precision": precision, "ok": not failed, "latency_ms": latency, "artifact_mb": round(size, 3),
                          "build_seconds": m["measured"].get("build_seconds"),
                          "latency_kind": "measured" if m["measured"].get("latency") else "roofline estimate",
                          "min_cosine": min(o["cosine"] for o in m["validation"]["outputs"].values()),
                          "reason": "meets every budget" if not failed else "misses " + "; ".join(
                              missed_by(c, precision) for c in checks if not c["ok"]),
                          **({"missed": failed} if failed else {})})
            results[precision] = result
        ok = [t for t in tried if t["ok"]]
        missed = "; ".join(t["precision"] + ": " + t["reason"] for t in tried)
        if not results:  # every precision refused for what the target cannot run: not a budget (exit 6, not 8)
            raise UnsupportedError(f"--precision auto: {target.name} cannot run the model at any precision "
                                   f"({missed})")
        if not ok and not opts.no_fail:
            raise BudgetError(f"--precision auto: no precision meets the budgets of {target.name} ({missed})")
        if not ok:  # --no-fail: the closest candidate is kept, as a single precision's miss is
            # (it had exited 8 and written nothing)
            closest = min((t for t in tried if t["precision"] in results),
                          key=lambda t: (len(t.get("missed", ())), -t["min_cosine"], t["latency_ms"]))
            result = results[closest["precision"]]
            result.manifest["auto"] = {"requested": "auto", "chosen": closest["precision"], "candidates": tried,
                                       "why": f"{closest['precision']}: no precision meets every budget ({missed}); "
                                              "the one that misses the fewest, the closest at that, kept (--no-fail)"}
            return _placed(result, out, opts, started)
        if len(ok) > 1 and all(t["latency_kind"] == "measured" for t in ok):
            opts.progress("auto: timing side by side")
            turns = timed_in_turns({t["precision"]: results[t["precision"]].bundle for t in ok},
                                   results[ok[0]["precision"]].sample)
            for t in ok:
                t |= {"latency_ms_at_build": t["latency_ms"], "latency_ms": turns[t["precision"]],
                      "latency_kind": "measured side by side"}
            for t in tried:  # (the report's table had set them beside the others' as if alike: 4.8 ms against 11)
                if not t["ok"] and t.get("latency_kind") == "measured":
                    t["latency_kind"] = "measured alone as built, not side by side (it missed a budget)"
        top = min(ok, key=lambda t: t["latency_ms"])
        tied = [t for t in ok if t["latency_ms"] <= top["latency_ms"] * (1 + AUTO_TIE)]
        chosen = min(tied, key=lambda t: t["artifact_mb"])
        others = [t for t in tied if t is not chosen]
        if not others:
            why = (f"{chosen['precision']}: fastest of the precisions meeting every budget "
                   f"({chosen['latency_ms']:.2f} ms, {chosen['latency_kind']})")
        else:  # the size decided: said with the sizes ("fastest" had been said of an exact tie, and
            # of a pick 3% slower)
            why = (f"{chosen['precision']}: {'fastest' if chosen is top else f'within {AUTO_TIE:.0%} of the fastest'} "
                   f"of the precisions meeting every budget ({chosen['latency_ms']:.2f} ms, {chosen['latency_kind']}), "
                   f"tied within {AUTO_TIE:.0%} with "
                   + ", ".join(f"{t['precision']} ({t['latency_ms']:.2f} ms, {t['artifact_mb']:g} MB)" for t in others)
                   + f": the smallest artifact ({chosen['artifact_mb']:g} MB)")
        result = results[chosen["precision"]]
        result.manifest["auto"] = {"requested": "auto", "chosen": chosen["precision"], "why": why, "candidates": tried}
        return _placed(result, out, opts, started)


def missed_by(check: dict, precision: str) -> str:
    """A budget check a candidate missed, with its value and the limit of the candidate's
    own precision (each precision has its budget: a bf16 candidate at cosine 0.992 had
    read "misses cosine[...]" beside an int8 one chosen at 0.988, whose budget is 0.98)."""
    if not isinstance(check.get("value"), (int, float)) or not isinstance(check.get("limit"), (int, float)):
        return check["budget"]
    unit = check.get("unit", "")
    if check.get("at_most"):
        return f"{check['budget']} {check['value']:.6g}{unit} (limit {check['limit']:.6g}{unit})"
    # as many decimals as tell the value from the limit (a cosine of 0.9999997 at .6g had read
    # "1 (fp16 budget 1)")
    gap = abs(check["limit"] - check["value"])
    digits = min(12, max(6, 1 - math.floor(math.log10(gap)))) if gap > 0 else 6
    return f"{check['budget']} {check['value']:.{digits}f}{unit} ({precision} budget {check['limit']:.6g}{unit})"


def _placed(result, out: Path, opts, started: float) -> Any:
    """The chosen candidate's bundle (its manifest's ``auto`` record set) placed at ``out``,
    with the whole choice's time: every candidate's build included (only the chosen one's
    had been said: 15 s of a 137 s build), its stages with the others' as one."""
    measured = result.manifest["measured"]
    own = measured.get("build_seconds") or 0.0
    measured["build_seconds"] = round(time.perf_counter() - started, 3)
    if measured.get("stage_seconds") is not None:
        measured["stage_seconds"]["auto: the other candidates"] = round(max(measured["build_seconds"] - own, 0.0), 3)
    write_manifest_and_report(result.bundle, result.manifest)
    check_output(out, opts.force)
    replace_folder(result.bundle, out)
    result.bundle = Path(opts.out)  # as the user named it (an absolute path had been printed)
    return result
